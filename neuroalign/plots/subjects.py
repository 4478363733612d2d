"""Subject figures: per-neuron mean vs variance, histograms, the response raster."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from neuroalign.plots.style import LAYOUT, MAP_COLORSCALE, PALETTE, RASTER_COLORSCALE


def neuron_stats(mean: np.ndarray, variance: np.ndarray, reliability: np.ndarray | None = None) -> go.Figure:
    """Per-neuron mean vs variance (log-log), coloured by reliability when given."""
    mean = np.asarray(mean, dtype=np.float64)
    variance = np.asarray(variance, dtype=np.float64)
    marker = dict(size=4, opacity=0.6, color=PALETTE[0])
    if reliability is not None:
        marker.update(color=np.nan_to_num(np.asarray(reliability, dtype=np.float64), nan=0.0),
                      colorscale=MAP_COLORSCALE, cmin=0, cmax=1,  # colour bar below: beside it squeezed the plot
                      colorbar=dict(title=dict(text="reliability", side="top"), orientation="h", y=-0.25,
                                    yanchor="top", thickness=10, len=0.8))
    fig = go.Figure(go.Scattergl(x=mean, y=variance, mode="markers", marker=marker,
                                 text=[f"neuron {i}" for i in range(mean.size)],
                                 hovertemplate="%{text}<br>mean %{x:.3g}<br>var %{y:.3g}<extra></extra>"))
    # a short title (the long one was cut in a half-width column at 1,024 px); the count in the hover
    fig.update_layout(title=f"Mean vs variance, {mean.size} neurons", xaxis_title="mean response",
                      yaxis_title="variance", height=480 if reliability is not None else 420,
                      **{**LAYOUT, "margin": dict(l=50, r=20, t=40, b=110 if reliability is not None else 40)})
    if np.all(mean > 0) and np.all(variance > 0):
        # one label per decade (10⁻², 10⁻¹, 1): plotly's labels of 2 and 5 in each decade collided
        fig.update_xaxes(type="log", dtick=1, exponentformat="power")
        fig.update_yaxes(type="log", dtick=1, exponentformat="power")
    return fig


def histogram(values: np.ndarray, title: str, x_title: str, nbins: int = 40,
              vline: float | None = None, vline_label: str = "") -> go.Figure:
    """A plain histogram of finite values, with an optional labelled vertical line."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    fig = go.Figure(go.Histogram(x=v, nbinsx=nbins, marker_color=PALETTE[0]))
    if vline is not None and math.isfinite(vline):
        fig.add_vline(x=vline, line_dash="dash", line_color=PALETTE[1], annotation_text=vline_label)
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title="count", bargap=0.05, **LAYOUT)
    return fig


def response_raster(responses: np.ndarray, image_idx: np.ndarray, neuron_idx: np.ndarray,
                    image_labels: Sequence | None = None, neuron_labels: Sequence | None = None,
                    title: str = "Responses (neurons sorted by preferred image, images by population mean)",
                    height: int = 420) -> go.Figure:
    """Heatmap of z-scored responses, images × neurons in the given display order (hover labels:
    `image_labels` / `neuron_labels`, default the indices)."""
    x = np.asarray(responses)[np.ix_(image_idx, neuron_idx)].astype(np.float64)
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    xl = [str(i) for i in (image_labels if image_labels is not None else image_idx)]
    yl = [str(j) for j in (neuron_labels if neuron_labels is not None else neuron_idx)]
    fig = go.Figure(go.Heatmap(z=z.T, x=xl, y=yl, colorscale=RASTER_COLORSCALE, zmin=-1, zmax=3,
                               colorbar=dict(title="z"),
                               hovertemplate="image %{x}<br>neuron %{y}<br>z %{z:.2f}<extra></extra>"))
    fig.update_layout(title=title,
                      xaxis=dict(title="image", showticklabels=False, type="category"),
                      yaxis=dict(title="neuron", showticklabels=False, type="category"),
                      height=height, **LAYOUT)
    return fig
