"""Training curves: loss (train solid, validation dashed) and learning rate per history."""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from neuroalign.plots.style import LAYOUT, PALETTE
from neuroalign.plots.summaries import ema_smooth


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
                      legend=dict(orientation="h", y=-0.2), **LAYOUT)
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
    fig.update_layout(title="Learning rate", xaxis_title=x_key, yaxis_title="lr", **LAYOUT)
    fig.update_yaxes(type="log")
    return fig
