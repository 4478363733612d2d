"""Neuron figures: per-neuron importance of a trained run, ranked and against a per-neuron quality
(repeat reliability, the simulator's true SNR, the block's own measure)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from neuroalign.plots.style import LAYOUT, MAP_COLORSCALE, PALETTE

MAX_POINTS = 20_000  # scatter points drawn (WebGL); more neurons are drawn as an even subsample


def _subsample(n: int, limit: int = MAX_POINTS) -> np.ndarray:
    return np.arange(n) if n <= limit else np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def importance_ranked(share: np.ndarray, neuron_ids: np.ndarray | None = None, log_y: bool = True,
                      y_title: str = "share of importance", title: str = "Neurons ranked by importance") -> go.Figure:
    """Per-neuron shares ranked (bars, or a line for many neurons; log scale unless `log_y` is off, e.g.
    for signed shares), with the cumulative share on a second axis, so the concentration shows at a
    glance."""
    s = np.asarray(share, dtype=np.float64)
    ids = np.arange(len(s)) if neuron_ids is None else np.asarray(neuron_ids)
    order = np.argsort(-s, kind="stable")
    ranked = s[order]
    cumulative = np.cumsum(ranked) / max(float(ranked.sum()), 1e-300)
    rank = np.arange(1, len(s) + 1)
    keep = _subsample(len(s))
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    text = [f"neuron {int(ids[i])}" for i in order[keep]]
    shown = np.where(ranked[keep] > 0, ranked[keep], np.nan) if log_y else ranked[keep]  # log: no zeros
    trace = go.Bar if len(s) <= 200 else go.Scattergl
    style = (dict(marker_color=PALETTE[0], textposition="none") if trace is go.Bar  # text: hover only
             else dict(mode="lines", line=dict(color=PALETTE[0])))
    fig.add_trace(trace(x=rank[keep], y=shown, name=y_title, text=text,
                        hovertemplate="rank %{x} · %{text}<br>%{y:.3%}<extra></extra>", **style),
                  secondary_y=False)
    fig.add_trace(go.Scattergl(x=rank[keep], y=cumulative[keep], mode="lines", name="cumulative share",
                               line=dict(color=PALETTE[1], dash="dash"),
                               hovertemplate="top %{x} neurons: %{y:.1%}<extra></extra>"), secondary_y=True)
    fig.update_xaxes(title_text="neuron rank (1 = most important)")
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear", tickformat=".2%" if log_y else ".1%",
                     secondary_y=False)
    low = min(0.0, float(np.nanmin(cumulative))) if len(s) else 0.0
    fig.update_yaxes(title_text="cumulative share", range=[low, max(1.02, float(np.nanmax(cumulative, initial=1)))],
                     tickmode="linear", tick0=0, dtick=0.25, tickformat=".0%", secondary_y=True, showgrid=False)
    fig.update_layout(title=title, legend=dict(orientation="h", y=-0.25), **LAYOUT)
    return fig


def importance_scatter(share: np.ndarray, quality: np.ndarray, quality_title: str, title: str,
                       log_x: bool = False, color: np.ndarray | None = None, color_title: str = "",
                       neuron_ids: np.ndarray | None = None, log_y: bool = True,
                       y_title: str = "share of importance", x_format: str = "") -> go.Figure:
    """Per-neuron share (y, log scale unless `log_y` is off) against a per-neuron quality (x); neurons
    without a finite quality (or, on log axes, with values <= 0) are left out. Optional marker colour."""
    s = np.asarray(share, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    ids = np.arange(len(s)) if neuron_ids is None else np.asarray(neuron_ids)
    ok = np.isfinite(q) & np.isfinite(s)
    if log_y:
        ok &= s > 0
    if log_x:
        ok &= q > 0
    idx = np.flatnonzero(ok)
    idx = idx[_subsample(len(idx))]
    marker = dict(size=5, opacity=0.6, color=PALETTE[0])
    if color is not None:
        c = np.asarray(color, dtype=np.float64)[idx]
        marker.update(color=c, colorscale=MAP_COLORSCALE, colorbar=dict(title=color_title, thickness=12))
    fig = go.Figure(go.Scattergl(x=q[idx], y=s[idx], mode="markers", marker=marker, name="neurons",
                                 text=[f"neuron {int(i)}" for i in ids[idx]],
                                 hovertemplate="%{text}<br>" + quality_title + " %{x:.3g}<br>" + y_title +
                                               " %{y:.3%}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=quality_title, yaxis_title=y_title, **LAYOUT)
    fig.update_yaxes(type="log" if log_y else "linear", tickformat=".2%" if log_y else ".1%")
    if x_format:
        fig.update_xaxes(tickformat=x_format)
    if log_x:
        fig.update_xaxes(type="log")
        shown = q[idx]
        if len(shown) and np.log10(shown.max() / shown.min()) >= 1.5:
            fig.update_xaxes(dtick=1)  # one label per decade (plotly's minor labels read as "5 0.1 2 5 1")
    return fig
