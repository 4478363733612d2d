"""Training curves on an epoch axis: loss (training and validation in two panels) and learning rate."""

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


def step_epochs(history: Sequence[Mapping], records: Sequence[Mapping]) -> np.ndarray:
    """The (fractional) epoch of each of `records` (step records with `step` = global step): epoch e
    ends at the `step` of its "epoch" record, so a step halfway through epoch 3 is at 2.5; past the
    last ended epoch, steps go on at that epoch's length; with no epoch ended yet, each step is placed
    by its rank among the steps logged for its `epoch` (1-based)."""
    ends = sorted({int(r["epoch"]): float(r["step"]) for r in history
                   if r.get("event") == "epoch" and r.get("epoch") is not None and r.get("step") is not None}.items())
    if ends:
        epochs = np.array([0.0] + [float(e) for e, _ in ends])
        steps = np.array([0.0] + [s for _, s in ends])
        length = (steps[-1] - steps[-2]) / max(epochs[-1] - epochs[-2], 1.0) if len(steps) > 1 else 1.0
        out = []
        for rec in records:
            s = float(rec.get("step") or 0.0)
            out.append(float(np.interp(s, steps, epochs)) if s <= steps[-1]
                       else epochs[-1] + (s - steps[-1]) / max(length, 1e-9))
        return np.asarray(out)
    by_epoch: dict[int, list[int]] = {}
    for i, rec in enumerate(records):
        by_epoch.setdefault(int(rec.get("epoch") or 1), []).append(i)
    x = np.zeros(len(records))
    for epoch, idx in by_epoch.items():
        for rank, i in enumerate(idx):
            x[i] = epoch - 1 + (rank + 1) / len(idx)
    return x


def _finite(records: Sequence[Mapping], key: str) -> tuple[list[Mapping], np.ndarray]:
    """The records with a finite `key`, and those values."""
    kept, ys = [], []
    for rec in records:
        try:
            v = float(rec.get(key))
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            kept.append(rec)
            ys.append(v)
    return kept, np.asarray(ys)


FEW_POINTS = 30  # a curve with fewer points also gets markers (a 3-epoch run is not one invisible point)
VAL_NOTE = ("Validation loss is computed over the whole validation split (many more candidates to tell apart "
            "than in one training batch), so it sits above the training loss: compare each curve with itself.")


def _draw_order(histories: Mapping[str, Sequence[Mapping]], live: Iterable[str]) -> list[tuple[int, str, bool]]:
    """(colour index, label, is_live) with the live histories last, so they are drawn on top."""
    live = set(live)
    items = [(i, label, label in live) for i, label in enumerate(histories)]
    return [x for x in items if not x[2]] + [x for x in items if x[2]]


def loss_curves(histories: Mapping[str, Sequence[Mapping]], smoothing: float = 0.0,
                log_y: bool = False, x_key: str = "epoch", title: str = "Loss",
                live: Iterable[str] = ()) -> go.Figure:
    """Training loss (top, solid) and validation loss (bottom, dashed with markers) per labelled history,
    on one epoch axis: two panels, because the two are on different scales (`VAL_NOTE`).

    `histories` maps a label (subject or run) to a list of logged records: "step" records (`train_loss`,
    global `step`) placed at their fractional epoch (`step_epochs`), "epoch" records (`val_loss`) at
    their epoch and the "start" record (epoch 0: the starting weights, e.g. the closed-form start) as
    the first validation point. `x_key="step"` plots against the global step instead. Smoothing
    applies to the training loss only. Histories named in `live` (running jobs) are drawn last (on
    top), thicker, and named "<label> · running", so a live curve never hides under a finished one.
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=("training loss (per batch)", "validation loss (whole validation split)"))
    for i, label, is_live in _draw_order(histories, live):
        history = histories[label]
        color = PALETTE[i % len(PALETTE)]
        name = f"{label} · running" if is_live else label
        width = 3.5 if is_live else 2
        records, y = _finite(_train_records(history), "train_loss")
        if y.size:
            x = step_epochs(history, records) if x_key == "epoch" else _series(records, "train_loss", x_key)[0]
            if smoothing > 0:
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=color, width=1),
                                         opacity=0.25, showlegend=False, hoverinfo="skip",
                                         name=f"{name} train (raw)"), row=1, col=1)
            fig.add_trace(go.Scatter(x=x, y=ema_smooth(y, smoothing), mode="lines+markers" if y.size < FEW_POINTS
                                     else "lines", line=dict(color=color, width=width), marker=dict(size=6),
                                     name=f"{name} train", legendgroup=label), row=1, col=1)
        val = [r for r in history if r.get("event") in ("start", "epoch")] or list(history)
        x, y = _series(val, "val_loss", x_key)
        if y.size:
            start = [r.get("event") == "start" for r in val if r.get("val_loss") is not None
                     and math.isfinite(float(r["val_loss"]))]
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", line=dict(color=color, dash="dash",
                                                                               width=width - 0.5),
                                     marker=dict(size=[10 if s else (7 if is_live else 6) for s in start],
                                                 symbol=["diamond" if s else "circle" for s in start]),
                                     name=f"{name} val", legendgroup=label,
                                     hovertemplate="%{y:.4g}" + (" (epoch 0 = the start)" if any(start) else "")),
                          row=2, col=1)
    fig.update_layout(title=title, hovermode="x unified", height=520, legend=dict(orientation="h", y=-0.15),
                      **LAYOUT)
    fig.update_xaxes(title_text=x_key, row=2, col=1)
    _epoch_ticks(fig, x_key)
    fig.update_yaxes(title_text="loss")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def lr_curves(histories: Mapping[str, Sequence[Mapping]], x_key: str = "epoch", live: Iterable[str] = ()) -> go.Figure:
    """Learning rate of the image side (solid) and neural side (dotted) per history on a log axis with
    readable ticks (1e-4, not "100µ"), padded so a constant rate is not a line on the frame; when both
    sides share one schedule they are one line ("image = neural lr"). Live histories on top, thicker."""
    fig = go.Figure()
    values = []
    for i, label, is_live in _draw_order(histories, live):
        history = histories[label]
        color = PALETTE[i % len(PALETTE)]
        name = f"{label} · running" if is_live else label
        sides = {}
        for key in ("lr_image", "lr_neural"):
            records, y = _finite(_train_records(history), key)
            if y.size:
                x = step_epochs(history, records) if x_key == "epoch" else _series(records, key, x_key)[0]
                sides[key] = (x, y)
        same = len(sides) == 2 and np.array_equal(sides["lr_image"][1], sides["lr_neural"][1])
        for key, dash, side in (("lr_image", "solid", "image = neural" if same else "image"),
                                ("lr_neural", "dot", "neural")):
            if key not in sides or (same and key == "lr_neural"):
                continue
            x, y = sides[key]
            values.append(y)
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers" if y.size < FEW_POINTS else "lines",
                                     line=dict(color=color, dash=dash, width=3 if is_live else 2),
                                     marker=dict(size=5), name=f"{name} {side} lr"))
    fig.update_layout(title="Learning rate", xaxis_title=x_key, yaxis_title="learning rate", height=320,
                      showlegend=True, legend=dict(orientation="h", y=-0.3), **LAYOUT)  # the legend names the sides
    fig.update_yaxes(type="log", exponentformat="e", showexponent="all")
    if values:
        lo, hi = float(min(v.min() for v in values)), float(max(v.max() for v in values))
        if lo > 0:
            fig.update_yaxes(range=[math.log10(lo) - 0.5, math.log10(hi) + 0.5], dtick=1)
    _epoch_ticks(fig, x_key)
    return fig


def _epoch_ticks(fig: go.Figure, x_key: str) -> None:
    """Whole epochs on the x axis from 0 (at most about 10 ticks), whatever the fractional steps."""
    if x_key != "epoch":
        return
    last = max((float(np.nanmax(np.asarray(tr.x, dtype=float))) for tr in fig.data if tr.x is not None
                and len(tr.x)), default=1.0)
    pad = 0.04 * max(last, 1.0)  # the epoch-0 marker is not cut in half by the frame
    fig.update_xaxes(range=[-pad, last + pad], tick0=0, dtick=max(1, math.ceil(last / 10)))
