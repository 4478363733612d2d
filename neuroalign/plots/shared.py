"""Figures of shared runs (one model over several subjects): cross-subject retrieval with intervals,
and one test image's two embeddings in the shared space (what a shared run has instead of maps)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from neuroalign.plots.style import LAYOUT, PALETTE

KIND_COLOURS = {"across subjects": PALETTE[0], "across subjects, single trials": PALETTE[2],
                "same subject, repeat 1 → repeat 2": PALETTE[3]}  # ui.shared_view's row kinds


def cross_subject_bars(rows: Sequence[Mapping]) -> go.Figure:
    """Top-1 with 95 % intervals, one horizontal bar per row of `rows` (dicts with `label`, `kind`,
    `top1`, `lo`, `hi`, `chance`), coloured by kind; each row's chance level as a dark tick."""
    fig = go.Figure()
    labels = [str(r["label"]) for r in rows]
    for kind, colour in KIND_COLOURS.items():
        ys, xs, plus, minus = [], [], [], []
        for r in rows:
            if r["kind"] != kind or r.get("top1") is None:
                continue
            ys.append(str(r["label"]))
            xs.append(float(r["top1"]))
            plus.append(0.0 if r.get("hi") is None else float(r["hi"]) - float(r["top1"]))
            minus.append(0.0 if r.get("lo") is None else float(r["top1"]) - float(r["lo"]))
        if ys:
            fig.add_trace(go.Bar(y=ys, x=xs, name=kind, orientation="h", marker_color=colour,
                                 error_x=dict(type="data", array=plus, arrayminus=minus, visible=True, thickness=1.2),
                                 hovertemplate="%{y}: top-1 %{x:.3f}<extra>" + kind + "</extra>"))
    chance = [(str(r["label"]), float(r["chance"])) for r in rows
              if isinstance(r.get("chance"), (int, float)) and math.isfinite(r["chance"])]
    if chance:
        fig.add_trace(go.Scatter(y=[c[0] for c in chance], x=[c[1] for c in chance], mode="markers",
                                 name="chance", marker=dict(symbol="line-ns-open", size=18, color="#1c2330",
                                                            line=dict(width=2)),
                                 hovertemplate="chance %{x:.3f}<extra></extra>"))
    fig.update_layout(title="Cross-subject top-1 (95 % intervals)",
                      xaxis=dict(title="top-1", rangemode="tozero"),
                      yaxis=dict(autorange="reversed", automargin=True, categoryorder="array", categoryarray=labels),
                      barmode="overlay", bargap=0.3, height=150 + 34 * len(labels),
                      legend=dict(orientation="h", y=-0.25), **LAYOUT)
    return fig


def embedding_lines(image_embedding: np.ndarray, neural_embedding: np.ndarray, title: str = "") -> go.Figure:
    """One test image's embedding by the shared image side and its neural response's embedding by
    the subject's read-in, dimension by dimension (each scaled to unit length: cosine compares them)."""
    fig = go.Figure()
    for i, (name, v) in enumerate((("image side", image_embedding), ("neural read-in", neural_embedding))):
        v = np.asarray(v, dtype=np.float64).ravel()
        norm = float(np.linalg.norm(v)) or 1.0
        fig.add_trace(go.Scatter(x=np.arange(1, len(v) + 1), y=v / norm, mode="lines+markers", name=name,
                                 line=dict(color=PALETTE[i], width=2), marker=dict(size=5),
                                 hovertemplate="dimension %{x}: %{y:.3f}<extra>" + name + "</extra>"))
    fig.add_hline(y=0, line_color="#adb5bd", line_width=1)
    fig.update_layout(title=title, xaxis=dict(title="shared-space dimension", dtick=max(1, len(np.ravel(
        image_embedding)) // 8)), yaxis=dict(title="value (unit length)"), height=360,
        legend=dict(orientation="h", y=-0.25), **LAYOUT)
    return fig


def embedding_heatmaps(image_embedding: np.ndarray, neural_embedding: np.ndarray,
                       labels: Sequence | None = None) -> go.Figure:
    """Both embeddings of every test image side by side (rows: test images, columns: dimensions,
    each row scaled to unit length), so the eye can match the two sides row by row."""
    from plotly.subplots import make_subplots

    from neuroalign.plots.style import DIFF_COLORSCALE

    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    a, b = unit(image_embedding), unit(neural_embedding)
    lim = float(max(np.abs(a).max(initial=0), np.abs(b).max(initial=0))) or 1.0
    ticks = [str(v) for v in labels] if labels is not None else [str(i) for i in range(len(a))]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("image side", "neural read-in"), horizontal_spacing=0.08)
    for col, z in ((1, a), (2, b)):
        fig.add_trace(go.Heatmap(z=z, y=ticks, x=np.arange(1, z.shape[1] + 1), zmin=-lim, zmax=lim,
                                 colorscale=DIFF_COLORSCALE, showscale=col == 2, colorbar=dict(thickness=12),
                                 hovertemplate="test image %{y}, dimension %{x}: %{z:.3f}<extra></extra>"),
                      row=1, col=col)
    fig.update_yaxes(type="category", autorange="reversed", title_text="test image", row=1, col=1)
    fig.update_yaxes(type="category", autorange="reversed", showticklabels=False, row=1, col=2)
    fig.update_xaxes(title_text="dimension")
    # room above the panels' own titles for the figure's
    fig.update_layout(title="Every test image in the shared space", height=min(900, 240 + 10 * len(a)),
                      **{**LAYOUT, "margin": dict(l=50, r=20, t=80, b=40)})
    return fig
