"""Retrieval figures: the test similarity matrix, the rank histogram, top-1 bars with intervals."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from neuroalign.plots.style import LAYOUT, MAP_COLORSCALE, PALETTE


FRAMED_PAIRS = 30  # up to this many test images the true pairs are framed; above, flanked by two lines


def similarity_heatmap(similarity: np.ndarray, labels: Sequence | None = None) -> go.Figure:
    """Test similarity matrix: rows are test images, columns the neural responses to the same test
    images in the same order (tick labels: image ids), so the true pairs are the diagonal, marked
    without being covered (`FRAMED_PAIRS`). Cells are not forced square, so the matrix fills a
    narrow column instead of shrinking to a thumbnail."""
    s = np.asarray(similarity, dtype=np.float64)
    n = len(s)
    ticks = [str(v) for v in labels] if labels is not None else [str(i) for i in range(n)]
    fig = go.Figure(go.Heatmap(z=s, x=ticks, y=ticks, colorscale=MAP_COLORSCALE, colorbar=dict(title="sim", thickness=12),
                               name="similarity",
                               hovertemplate="image %{y} × neural %{x}<br>sim %{z:.3f}<extra></extra>"))
    if n:
        # The true pairs are marked without covering them: hollow frames around the diagonal cells of a
        # small set; for a large one, two dotted lines a little off the diagonal, on either side of it.
        fig.add_trace(go.Scatter(x=ticks, y=ticks, mode="markers", name="true pairs", hoverinfo="skip",
                                 showlegend=False, visible=True if n <= FRAMED_PAIRS else "legendonly",
                                 marker=dict(symbol="square-open", size=max(6, 220 // max(n, 1)), color="#e4572e",
                                             line=dict(width=1.5))))
        if n > FRAMED_PAIRS:
            d = max(1.5, n / 50)
            for sign in (1, -1):
                fig.add_shape(type="line", x0=-0.5 + max(sign * d, 0), y0=-0.5 + max(-sign * d, 0),
                              x1=n - 0.5 - max(-sign * d, 0), y1=n - 0.5 - max(sign * d, 0),
                              line=dict(color="#e4572e", width=1.2, dash="dot"))
    tick_every = max(1, int(math.ceil(n / 8)))  # few enough to stay apart in a half-width column
    shown = ticks[::tick_every]
    fig.update_layout(
        title="Test similarity",
        xaxis=dict(title="neural response to test image", type="category", tickmode="array", tickvals=shown,
                   ticktext=shown, tickangle=-45),
        yaxis=dict(title="test image", type="category", autorange="reversed", tickmode="array",
                   tickvals=shown, ticktext=shown),
        height=520, **LAYOUT)
    return fig


_DIRECTION_LABELS = {"image_to_neural": "image → neural", "neural_to_image": "neural → image"}


def rank_histogram(ranks: Mapping[str, np.ndarray]) -> go.Figure:
    """Overlaid histograms of the true match's rank for each direction (1 = best), with the count a
    random ranking would give per bin (ranks uniform on 1..n) as a dashed line."""
    fig = go.Figure()
    n_max = 1
    n_queries = 0
    for r in ranks.values():
        r = np.asarray(r)
        n_max = max(n_max, len(r))
        n_queries = max(n_queries, len(r))
    size = max(1, n_max // 40)
    for i, (name, r) in enumerate(ranks.items()):
        r = np.asarray(r)
        fig.add_trace(go.Histogram(x=r, name=_DIRECTION_LABELS.get(name, name),
                                   opacity=0.6, marker_color=PALETTE[i % len(PALETTE)],
                                   xbins=dict(start=0.5, end=n_max + 0.5, size=size)))
    if n_queries:
        edges = np.arange(0.5, n_max + 0.5 + size, size)
        edges = np.minimum(edges, n_max + 0.5)
        x, y = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            expected = n_queries * (hi - lo) / n_max  # uniform ranks: queries per bin
            x += [float(lo), float(hi)]
            y += [expected, expected]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="chance (uniform ranks)",
                                 line=dict(color="#1c2330", dash="dash", width=1.5), hoverinfo="skip"))
    fig.update_layout(title="Rank of the true match", barmode="overlay",
                      xaxis_title="rank", yaxis_title="queries", legend=dict(orientation="h", y=-0.2), **LAYOUT)
    return fig


def top1_bars(rows: Mapping[str, Mapping[str, tuple]], chance: float | None = None) -> go.Figure:
    """Top-1 of the model and each reference, both directions, with 95 % intervals as error bars:
    horizontal bars, one row per name (top to bottom in the order of `rows`), so the names stay
    readable in a narrow window.

    `rows` maps a name to {direction: (top1, lo, hi)} (lo/hi may be None); chance is a dashed line.
    """
    names = list(rows)
    fig = go.Figure()
    for i, (direction, label) in enumerate(_DIRECTION_LABELS.items()):
        vals, plus, minus = [], [], []
        for name in names:
            top1, lo, hi = (tuple(rows[name].get(direction) or ()) + (None, None, None))[:3]
            vals.append(np.nan if top1 is None else float(top1))
            plus.append(0.0 if top1 is None or hi is None else float(hi) - float(top1))
            minus.append(0.0 if top1 is None or lo is None else float(top1) - float(lo))
        fig.add_trace(go.Bar(y=names, x=vals, name=label, orientation="h", marker_color=PALETTE[i],
                             error_x=dict(type="data", array=plus, arrayminus=minus, visible=True, thickness=1.2),
                             hovertemplate="%{y}: %{x:.3f}<extra>" + label + "</extra>"))
    if chance is not None and math.isfinite(chance):
        # named in the legend, not by an annotation on the plot (one would sit on the model's bar)
        fig.add_vline(x=chance, line_dash="dash", line_color=PALETTE[5])
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"chance ({chance:.3f})",
                                 line=dict(color=PALETTE[5], dash="dash")))
    fig.update_layout(title="Test top-1 with 95 % intervals", xaxis=dict(title="top-1", rangemode="tozero"),
                      yaxis=dict(autorange="reversed", automargin=True), barmode="group", bargap=0.25,
                      height=140 + 48 * len(names), legend=dict(orientation="h", y=-0.3), **LAYOUT)
    return fig
