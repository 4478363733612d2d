"""Feature-map figures (stimulus | image map | neural map | difference, mean maps) and the stimulus
pictures the pages show with st.image."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from neuroalign.plots.style import DIFF_COLORSCALE, GRAY_COLORSCALE, MAP_COLORSCALE


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
    """Two rows of two, in reading order: stimulus | image-tower map, neural-tower map | difference
    (four in one row left each map ~120 px wide in a 1,024 px window).

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
    cells = ((1, 1), (1, 2), (2, 1), (2, 2))  # stimulus, image map, neural map, difference
    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.03, vertical_spacing=0.14, subplot_titles=PANEL_TITLES)
    fig.add_trace(go.Heatmap(z=stim, colorscale=GRAY_COLORSCALE, showscale=False, hoverinfo="skip",
                             name="stimulus"), *cells[0])
    left, right = fig.layout.xaxis.domain, fig.layout.xaxis2.domain
    for cell, m, name in ((cells[1], im, "image"), (cells[2], nm, "neural")):
        if overlay:
            fig.add_trace(go.Heatmap(z=_resize_nearest(stim, m.shape), colorscale=GRAY_COLORSCALE, showscale=False,
                                     hoverinfo="skip", name="stimulus"), *cell)
        fig.add_trace(go.Heatmap(z=m, colorscale=MAP_COLORSCALE, zmin=lo, zmax=hi, showscale=name == "neural",
                                 opacity=0.55 if overlay else 1.0, name=name,
                                 colorbar=dict(orientation="h", x=sum(left) / 2, xanchor="center", y=-0.06,
                                               yanchor="top", len=0.4, thickness=10,
                                               title=dict(text="map", side="top")),
                                 hovertemplate=f"{name} %{{z:.3f}}<extra></extra>"), *cell)
    lim = float(np.abs(diff[np.isfinite(diff)]).max(initial=1e-6))
    fig.add_trace(go.Heatmap(z=diff, colorscale=DIFF_COLORSCALE, zmid=0, zmin=-lim, zmax=lim, name="difference",
                             colorbar=dict(orientation="h", x=sum(right) / 2, xanchor="center", y=-0.06,
                                           yanchor="top", len=0.4, thickness=10, title=dict(text="diff", side="top")),
                             hovertemplate="diff %{z:.3f}<extra></extra>"), *cells[3])
    stim_ratio = (im.shape[0] / im.shape[1]) * (stim.shape[1] / stim.shape[0])  # stimulus drawn at the maps' aspect
    for k, (row, col) in enumerate(cells):
        h, w = (stim.shape if k == 0 else im.shape)
        fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, range=[-0.5, w - 0.5],
                         constrain="domain", row=row, col=col)
        fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, range=[h - 0.5, -0.5],
                         scaleanchor=f"x{'' if k == 0 else k + 1}", scaleratio=stim_ratio if k == 0 else 1.0,
                         constrain="domain", row=row, col=col)
    fig.update_layout(title=title, height=460, template="plotly_white", margin=dict(l=10, r=10, t=70, b=80))
    return fig


def mean_maps(image_maps: np.ndarray, neural_maps: np.ndarray) -> go.Figure:
    """Mean image-tower and neural-tower maps over the test set, one above the other (side by side in
    a half-width column they were ~85 px wide at 1,024 px), one colour bar below."""
    a = np.asarray(image_maps, dtype=np.float64).reshape(-1, *np.asarray(image_maps).shape[-2:]).mean(axis=0)
    b = np.asarray(neural_maps, dtype=np.float64).reshape(-1, *np.asarray(neural_maps).shape[-2:]).mean(axis=0)
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.18, subplot_titles=("image tower", "neural tower"))
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    fig.add_trace(go.Heatmap(z=a, colorscale=MAP_COLORSCALE, zmin=lo, zmax=hi, showscale=False), 1, 1)
    fig.add_trace(go.Heatmap(z=b, colorscale=MAP_COLORSCALE, zmin=lo, zmax=hi,
                             colorbar=dict(orientation="h", y=-0.08, yanchor="top", len=0.6, thickness=10)), 2, 1)
    for r in (1, 2):
        fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor=f"x{'' if r == 1 else r}",
                         constrain="domain", row=r, col=1)
        fig.update_xaxes(showticklabels=False, constrain="domain", row=r, col=1)
    fig.update_layout(title="Mean maps over the test set", height=360, template="plotly_white",
                      margin=dict(l=10, r=10, t=70, b=60))
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
