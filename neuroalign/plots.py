"""Plotly figure builders for the dashboard (no streamlit here).

Every builder takes plain numpy arrays / lists of dicts and returns a `plotly.graph_objects.Figure`,
so pages only pick data and draw. A few small, vectorised summaries that exist only to be drawn
(EMA smoothing, ranks of the true match, per-neuron reliability, a display ordering for response
rasters) live here too.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

logger = logging.getLogger(__name__)

PALETTE = ("#2f6fdf", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#6c757d", "#c2185b", "#2e7d32")

# Streamlit's plotly theme sends the colours #000001-#000040 as placeholders and the browser
# replaces every occurrence in the figure JSON with a theme colour; plotly's Magma and Inferno
# start at exactly #000004, so their darkest values would be drawn in a theme colour (pink).
THEME_PLACEHOLDER = re.compile(r"#0000(?:0[1-9]|[1-3][0-9]|40)(?![0-9a-f])", re.IGNORECASE)


def explicit_colorscale(name: str) -> list[list]:
    """Plotly's named colour scale as explicit [position, colour] stops, with any colour that
    Streamlit's theme would replace (#000001-#000040) written as the same colour in rgb() form."""
    import plotly.colors

    stops = []
    for pos, colour in plotly.colors.get_colorscale(name):
        if THEME_PLACEHOLDER.fullmatch(colour.strip()):
            r, g, b = plotly.colors.hex_to_rgb(colour.strip())
            colour = f"rgb({r}, {g}, {b})"
        stops.append([float(pos), colour])
    return stops


MAP_COLORSCALE = explicit_colorscale("Viridis")  # feature maps, similarity, reliability
DIFF_COLORSCALE = explicit_colorscale("RdBu_r")  # signed differences, centred at 0
RASTER_COLORSCALE = explicit_colorscale("Magma")  # responses (z-scores)
GRAY_COLORSCALE = explicit_colorscale("gray")  # stimuli
_LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=40, b=40))


# --------------------------------------------------------------------------------------------
# small summaries drawn by the figures
# --------------------------------------------------------------------------------------------
def ema_smooth(values: Sequence[float], weight: float) -> np.ndarray:
    """Exponential moving average with debiasing (TensorBoard-style); `weight` in [0, 1).

    NaNs are skipped (they keep the running average) and stay NaN in the output.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    x = np.asarray(values, dtype=np.float64)
    if weight == 0.0 or x.size == 0:
        return x.copy()
    out = np.full_like(x, np.nan)
    avg, norm = 0.0, 0.0
    for i, v in enumerate(x):  # one pass over logged points (hundreds), not over neurons
        if not np.isfinite(v):
            continue
        avg = weight * avg + (1.0 - weight) * v
        norm = weight * norm + (1.0 - weight)
        out[i] = avg / norm
    return out


def true_match_ranks(similarity: np.ndarray) -> dict[str, np.ndarray]:
    """Rank (1 = best) of the true match for every query, both directions.

    `similarity` is (n, n) with image rows × neural columns and the true pairs on the diagonal.
    Ties are split evenly (rank = 1 + #better + #tied / 2), as in `evaluation.retrieval`, so the
    mean of these ranks is the reported mean rank.
    """
    s = np.asarray(similarity, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"similarity must be a square (n, n) matrix, got shape {s.shape}")
    diag = np.diag(s)
    others = ~np.eye(len(s), dtype=bool)
    i2n = 1 + (s > diag[:, None]).sum(axis=1) + ((s == diag[:, None]) & others).sum(axis=1) / 2
    n2i = 1 + (s > diag[None, :]).sum(axis=0) + ((s == diag[None, :]) & others).sum(axis=0) / 2
    return {"image_to_neural": i2n.astype(np.float64), "neural_to_image": n2i.astype(np.float64)}


def top_k(similarity: np.ndarray, query: int, k: int, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best candidates for one query.

    direction "image_to_neural": query is an image row, candidates are neural columns;
    "neural_to_image": query is a neural column, candidates are image rows.
    """
    s = np.asarray(similarity)
    if direction == "image_to_neural":
        scores = s[query, :]
    elif direction == "neural_to_image":
        scores = s[:, query]
    else:
        raise ValueError(f"direction must be image_to_neural or neural_to_image, got {direction!r}")
    k = max(1, min(int(k), scores.size))
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]


def neuron_reliability(repeats: np.ndarray) -> np.ndarray:
    """Per-neuron split-half reliability: correlation over images between the mean of even and
    odd repeats, Spearman-Brown corrected (2r / (1 + r), clipped to [-1, 1]). `repeats` is
    (R, N, K) with R >= 2; returns (K,) (NaN for neurons constant over images)."""
    r = np.asarray(repeats)
    if r.ndim != 3 or r.shape[0] < 2:
        raise ValueError(f"repeats must be (R>=2, N, K), got shape {r.shape}")
    work = np.float32 if r.dtype in (np.float16, np.float32) else np.float64  # (N, K) halves stay small
    a = r[0::2].mean(axis=0, dtype=work)
    b = r[1::2].mean(axis=0, dtype=work)
    a -= a.mean(axis=0, dtype=np.float64).astype(work)
    b -= b.mean(axis=0, dtype=np.float64).astype(work)
    denom = np.sqrt((a * a).sum(axis=0, dtype=np.float64) * (b * b).sum(axis=0, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (a * b).sum(axis=0, dtype=np.float64) / denom
        corr = np.where(denom > 0, corr, np.nan)
        return np.clip(2 * corr / (1 + corr), -1.0, 1.0)


def raster_order(responses: np.ndarray, max_images: int = 300, max_neurons: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """A display ordering for a response raster: (image_idx, neuron_idx).

    Keeps at most `max_images` images (even spread) and the `max_neurons` most variable neurons;
    images sorted by mean population response, neurons sorted by the position of their
    preferred image in that order, so tuning shows up as a diagonal band.
    """
    x = np.asarray(responses)
    n, k = x.shape
    img = np.unique(np.linspace(0, n - 1, num=min(n, max_images)).round().astype(np.int64))
    var = x[img].var(axis=0, dtype=np.float64)
    neu = np.argsort(-var, kind="stable")[: min(k, max_neurons)]
    sub = x[np.ix_(img, neu)].astype(np.float64)
    img_sort = np.argsort(-sub.mean(axis=1), kind="stable")
    sub = sub[img_sort]
    pref = np.argmax(sub, axis=0)
    neu_sort = np.argsort(pref, kind="stable")
    return img[img_sort], neu[neu_sort]


# --------------------------------------------------------------------------------------------
# training curves
# --------------------------------------------------------------------------------------------
def _series(history: Iterable[Mapping], key: str, x_key: str = "step") -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for rec in history:
        v = rec.get(key)
        if v is None:
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(v):
            continue
        x = rec.get(x_key)
        xs.append(float(x) if x is not None else float(len(xs)))
        ys.append(v)
    return np.asarray(xs), np.asarray(ys)


def _train_records(history: Sequence[Mapping]) -> list[Mapping]:
    """Per-step records when the history has any (finest grain), else all records."""
    steps = [r for r in history if r.get("event") == "step" and r.get("train_loss") is not None]
    return steps or list(history)


def _draw_order(histories: Mapping[str, Sequence[Mapping]], live: Iterable[str]) -> list[tuple[int, str, bool]]:
    """(colour index, label, is_live) with the live histories last, so they are drawn on top."""
    live = set(live)
    items = [(i, label, label in live) for i, label in enumerate(histories)]
    return [x for x in items if not x[2]] + [x for x in items if x[2]]


def loss_curves(histories: Mapping[str, Sequence[Mapping]], smoothing: float = 0.0,
                log_y: bool = False, x_key: str = "step", title: str = "Loss",
                live: Iterable[str] = ()) -> go.Figure:
    """Train (solid) and validation (dashed, markers) loss per labelled history.

    `histories` maps a label (subject or run) to a list of logged records with `train_loss`
    and/or `val_loss` and the x key (`step` by default). Smoothing applies to train loss only.
    Histories named in `live` (running jobs) are drawn last (on top), thicker, and named
    "<label> · running", so a live curve never hides under a finished one.
    """
    fig = go.Figure()
    for i, label, is_live in _draw_order(histories, live):
        history = histories[label]
        color = PALETTE[i % len(PALETTE)]
        name = f"{label} · running" if is_live else label
        width = 3.5 if is_live else 2
        x, y = _series(_train_records(history), "train_loss", x_key)
        if y.size:
            if smoothing > 0:
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=color, width=1),
                                         opacity=0.25, showlegend=False, hoverinfo="skip",
                                         name=f"{name} train (raw)"))
            fig.add_trace(go.Scatter(x=x, y=ema_smooth(y, smoothing), mode="lines",
                                     line=dict(color=color, width=width), name=f"{name} train"))
        x, y = _series(history, "val_loss", x_key)
        if y.size:
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", line=dict(color=color, dash="dash",
                                                                               width=width - 0.5),
                                     marker=dict(size=7 if is_live else 5), name=f"{name} val"))
    fig.update_layout(title=title, xaxis_title=x_key, yaxis_title="loss", hovermode="x unified",
                      legend=dict(orientation="h", y=-0.2), **_LAYOUT)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def lr_curves(histories: Mapping[str, Sequence[Mapping]], x_key: str = "step", live: Iterable[str] = ()) -> go.Figure:
    """Learning rate of the image side (solid) and neural side (dotted) per history, log scale
    (live histories on top, thicker)."""
    fig = go.Figure()
    for i, label, is_live in _draw_order(histories, live):
        history = histories[label]
        color = PALETTE[i % len(PALETTE)]
        name = f"{label} · running" if is_live else label
        for key, dash, side in (("lr_image", "solid", "image"), ("lr_neural", "dot", "neural")):
            x, y = _series(_train_records(history), key, x_key)
            if y.size:
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=color, dash=dash,
                                                                           width=3 if is_live else 2),
                                         name=f"{name} {side} lr"))
    fig.update_layout(title="Learning rate", xaxis_title=x_key, yaxis_title="lr", **_LAYOUT)
    fig.update_yaxes(type="log")
    return fig


# --------------------------------------------------------------------------------------------
# subjects
# --------------------------------------------------------------------------------------------
def neuron_stats(mean: np.ndarray, variance: np.ndarray, reliability: np.ndarray | None = None) -> go.Figure:
    """Per-neuron mean vs variance (log-log), coloured by reliability when given."""
    mean = np.asarray(mean, dtype=np.float64)
    variance = np.asarray(variance, dtype=np.float64)
    marker = dict(size=4, opacity=0.6, color=PALETTE[0])
    if reliability is not None:
        marker.update(color=np.nan_to_num(np.asarray(reliability, dtype=np.float64), nan=0.0),
                      colorscale=MAP_COLORSCALE, colorbar=dict(title="reliability"), cmin=0, cmax=1)
    fig = go.Figure(go.Scattergl(x=mean, y=variance, mode="markers", marker=marker,
                                 text=[f"neuron {i}" for i in range(mean.size)],
                                 hovertemplate="%{text}<br>mean %{x:.3g}<br>var %{y:.3g}<extra></extra>"))
    fig.update_layout(title=f"Per-neuron mean and variance ({mean.size} neurons)",
                      xaxis_title="mean response", yaxis_title="variance", **_LAYOUT)
    if np.all(mean > 0) and np.all(variance > 0):
        fig.update_xaxes(type="log")
        fig.update_yaxes(type="log")
    return fig


def histogram(values: np.ndarray, title: str, x_title: str, nbins: int = 40,
              vline: float | None = None, vline_label: str = "") -> go.Figure:
    """A plain histogram of finite values, with an optional labelled vertical line."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    fig = go.Figure(go.Histogram(x=v, nbinsx=nbins, marker_color=PALETTE[0]))
    if vline is not None and math.isfinite(vline):
        fig.add_vline(x=vline, line_dash="dash", line_color=PALETTE[1], annotation_text=vline_label)
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title="count", bargap=0.05, **_LAYOUT)
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
                      height=height, **_LAYOUT)
    return fig


# --------------------------------------------------------------------------------------------
# retrieval
# --------------------------------------------------------------------------------------------
def similarity_heatmap(similarity: np.ndarray, labels: Sequence | None = None) -> go.Figure:
    """Test similarity matrix: rows are test images, columns the neural responses to the same test
    images in the same order (tick labels: image ids), so the true pairs are the diagonal, which is
    marked by a dashed line."""
    s = np.asarray(similarity, dtype=np.float64)
    n = len(s)
    ticks = [str(v) for v in labels] if labels is not None else [str(i) for i in range(n)]
    fig = go.Figure(go.Heatmap(z=s, x=ticks, y=ticks, colorscale=MAP_COLORSCALE, colorbar=dict(title="sim"),
                               name="similarity",
                               hovertemplate="image %{y} × neural %{x}<br>sim %{z:.3f}<extra></extra>"))
    if n:
        fig.add_trace(go.Scatter(x=ticks, y=ticks, mode="lines" if n > 30 else "lines+markers", name="true pairs",
                                 hoverinfo="skip", showlegend=False,
                                 marker=dict(symbol="square-open", size=9, color="#e4572e"),
                                 line=dict(color="#e4572e", width=1.5, dash="dot")))
    tick_every = max(1, int(math.ceil(n / 12)))
    shown = ticks[::tick_every]
    fig.update_layout(
        title="Test similarity (image × neural; true pairs on the dotted diagonal)",
        xaxis=dict(title="neural response to test image", type="category", tickmode="array", tickvals=shown,
                   ticktext=shown, tickangle=-45, constrain="domain"),
        yaxis=dict(title="test image", type="category", autorange="reversed", scaleanchor="x", tickmode="array",
                   tickvals=shown, ticktext=shown, constrain="domain"),
        height=520, **_LAYOUT)
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
    fig.update_layout(title="Rank of the true match (1 = retrieved first)", barmode="overlay",
                      xaxis_title="rank", yaxis_title="queries", legend=dict(orientation="h", y=-0.2), **_LAYOUT)
    return fig


def top1_bars(rows: Mapping[str, Mapping[str, tuple]], chance: float | None = None) -> go.Figure:
    """Top-1 of the model and each reference, both directions, with 95 % intervals as error bars.

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
        fig.add_trace(go.Bar(x=names, y=vals, name=label, marker_color=PALETTE[i],
                             error_y=dict(type="data", array=plus, arrayminus=minus, visible=True, thickness=1.2),
                             hovertemplate="%{x}: %{y:.3f}<extra>" + label + "</extra>"))
    if chance is not None and math.isfinite(chance):
        fig.add_hline(y=chance, line_dash="dash", line_color=PALETTE[5], annotation_text="chance",
                      annotation_position="top left")
    fig.update_layout(title="Test top-1 with 95 % intervals", yaxis=dict(title="top-1", rangemode="tozero"),
                      barmode="group", legend=dict(orientation="h", y=-0.25), **_LAYOUT)
    return fig


def metrics_bars(rows: Mapping[str, Mapping[str, float]], metric: str = "top1") -> go.Figure:
    """Bar chart of one metric for the model and its reference points (chance, baselines, oracle)."""
    names = list(rows)
    values = [rows[n].get(metric, np.nan) for n in names]
    colors = [PALETTE[0] if n == "model" else PALETTE[5] for n in names]
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=colors, text=[f"{v:.3f}" if v == v else "" for v in values],
                           textposition="outside"))
    fig.update_layout(title=f"{metric} (image → neural)", yaxis_title=metric, **_LAYOUT)
    return fig


# --------------------------------------------------------------------------------------------
# feature maps
# --------------------------------------------------------------------------------------------
def _resize_nearest(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows = np.minimum((np.arange(shape[0]) * m.shape[0] / shape[0]).astype(np.int64), m.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) * m.shape[1] / shape[1]).astype(np.int64), m.shape[1] - 1)
    return m[np.ix_(rows, cols)]


def map_range(*maps: np.ndarray) -> tuple[float, float]:
    """One (lo, hi) colour range shared by all the given maps (finite values; (0, 1) when empty)."""
    vals = np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in maps]) if maps else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = float(vals.min()), float(vals.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


PANEL_TITLES = ("stimulus", "image-tower map", "neural-tower map", "image − neural")


def feature_map_panel(stimulus: np.ndarray, image_map: np.ndarray, neural_map: np.ndarray,
                      overlay: bool = False, title: str = "", zrange: tuple[float, float] | None = None) -> go.Figure:
    """One row, left to right: stimulus | image-tower map | neural-tower map | difference.

    All four panels have the same size (the stimulus aspect, which the 16×64 maps share); the two
    maps share one colour scale and one colour bar (`zrange`, default: the joint range of both
    maps), the difference has a diverging scale centred at 0. With `overlay`, the maps are drawn
    semi-transparently on top of the stimulus (resampled to the map grid).
    """
    stim = np.asarray(stimulus, dtype=np.float64).squeeze()
    im = np.asarray(image_map, dtype=np.float64).squeeze()
    nm = np.asarray(neural_map, dtype=np.float64).squeeze()
    if im.shape != nm.shape or im.ndim != 2:
        raise ValueError(f"image and neural maps must be two (h, w) arrays of one shape, got {im.shape} and {nm.shape}")
    lo, hi = zrange if zrange is not None else map_range(im, nm)
    diff = im - nm
    fig = make_subplots(rows=1, cols=4, horizontal_spacing=0.02, subplot_titles=PANEL_TITLES)
    fig.add_trace(go.Heatmap(z=stim, colorscale=GRAY_COLORSCALE, showscale=False, hoverinfo="skip",
                             name="stimulus"), 1, 1)
    domains = [fig.layout[f"xaxis{'' if c == 1 else c}"].domain for c in range(1, 5)]
    for col, m, name in ((2, im, "image"), (3, nm, "neural")):
        if overlay:
            fig.add_trace(go.Heatmap(z=_resize_nearest(stim, m.shape), colorscale=GRAY_COLORSCALE, showscale=False,
                                     hoverinfo="skip", name="stimulus"), 1, col)
        fig.add_trace(go.Heatmap(z=m, colorscale=MAP_COLORSCALE, zmin=lo, zmax=hi, showscale=col == 3,
                                 opacity=0.55 if overlay else 1.0, name=name,
                                 colorbar=dict(orientation="h", x=domains[1][1], xanchor="center", y=-0.08,
                                               yanchor="top", len=0.4, thickness=10,
                                               title=dict(text="map", side="top")),
                                 hovertemplate=f"{name} %{{z:.3f}}<extra></extra>"), 1, col)
    lim = float(np.abs(diff[np.isfinite(diff)]).max(initial=1e-6))
    fig.add_trace(go.Heatmap(z=diff, colorscale=DIFF_COLORSCALE, zmid=0, zmin=-lim, zmax=lim, name="difference",
                             colorbar=dict(orientation="h", x=sum(domains[3]) / 2, xanchor="center", y=-0.08,
                                           yanchor="top", len=0.2, thickness=10, title=dict(text="diff", side="top")),
                             hovertemplate="diff %{z:.3f}<extra></extra>"), 1, 4)
    stim_ratio = (im.shape[0] / im.shape[1]) * (stim.shape[1] / stim.shape[0])  # stimulus drawn at the maps' aspect
    for c in range(1, 5):
        h, w = (stim.shape if c == 1 else im.shape)
        fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, range=[-0.5, w - 0.5],
                         constrain="domain", row=1, col=c)
        fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, range=[h - 0.5, -0.5],
                         scaleanchor=f"x{'' if c == 1 else c}", scaleratio=stim_ratio if c == 1 else 1.0,
                         constrain="domain", row=1, col=c)
    fig.update_layout(title=title, height=260, template="plotly_white", margin=dict(l=10, r=10, t=70, b=70))
    return fig


def mean_maps(image_maps: np.ndarray, neural_maps: np.ndarray) -> go.Figure:
    """Mean image-tower and neural-tower maps over the test set, side by side."""
    a = np.asarray(image_maps, dtype=np.float64).reshape(-1, *np.asarray(image_maps).shape[-2:]).mean(axis=0)
    b = np.asarray(neural_maps, dtype=np.float64).reshape(-1, *np.asarray(neural_maps).shape[-2:]).mean(axis=0)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.05,
                        subplot_titles=("mean image-tower map", "mean neural-tower map"))
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    fig.add_trace(go.Heatmap(z=a, colorscale=MAP_COLORSCALE, zmin=lo, zmax=hi, showscale=False), 1, 1)
    fig.add_trace(go.Heatmap(z=b, colorscale=MAP_COLORSCALE, zmin=lo, zmax=hi), 1, 2)
    for c in (1, 2):
        fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor=f"x{'' if c == 1 else c}",
                         row=1, col=c)
        fig.update_xaxes(showticklabels=False, row=1, col=c)
    fig.update_layout(height=230, template="plotly_white", margin=dict(l=10, r=10, t=50, b=10))
    return fig


def as_display_image(image: np.ndarray) -> np.ndarray:
    """A stimulus (1, H, W) or (H, W) as a uint8 (H, W) grayscale picture for st.image."""
    x = np.asarray(image, dtype=np.float64).squeeze()
    if x.ndim != 2:
        raise ValueError(f"expected a single grayscale image (H, W), got shape {x.shape}")
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    if 0.0 <= lo and hi <= 1.0:
        scaled = x
    else:
        scaled = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def framed(picture: np.ndarray, color: tuple[int, int, int] = (23, 163, 152), width: int = 6) -> np.ndarray:
    """A uint8 grayscale picture (H, W) as RGB (H, W, 3) with a coloured frame (marks the correct match)."""
    g = np.asarray(picture, dtype=np.uint8)
    rgb = np.repeat(g[..., None], 3, axis=2).copy()
    w = max(1, min(width, g.shape[0] // 4, g.shape[1] // 4))
    for edge in (np.s_[:w, :], np.s_[-w:, :], np.s_[:, :w], np.s_[:, -w:]):
        rgb[edge] = color
    return rgb
