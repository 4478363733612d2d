"""The layer-by-layer alignment profile (`neuroalign.training.profile`): score vs depth, one line per
image model, with the reference lines and the best layer marked; median FEVE per layer.

Both charts take a `Profile` (`training.profile_file`) or the profile.json dict (read into one), so a
damaged or partial file is read by the same rules as the page's table: a missing score draws no point."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from neuroalign.config import IMAGE_MODEL_DEPTHS
from neuroalign.plots.style import LAYOUT, PALETTE
from neuroalign.training.profile_file import Profile, ProfileRow

DIRECTIONS = {"image_to_neural": "image → neural", "neural_to_image": "neural → image"}
X_AXES = {"block": "block of the model (forward order)", "relative": "relative depth (block / the model's blocks)"}
# reference lines: key in profile["reference"], legend name, dash, colour
REFERENCE_LINES = (("oracle", "oracle (noiseless rates)", "solid", "#2e7d32"),
                   ("repeat", "repeat decoder", "dash", "#8e44ad"),
                   ("ridge_random", "ridge on random features", "dashdot", "#6c757d"),
                   ("ridge", "ridge on pixels", "dot", "#6c757d"))
BEST_COLOUR = "#111111"
DODGE = 0.08  # blocks between the FEVE points of neighbouring models at the same place


def _rows(rows: Sequence[ProfileRow | Mapping[str, Any]]) -> list[ProfileRow]:
    return [r if isinstance(r, ProfileRow) else ProfileRow.from_json(r) for r in rows]


def models_in(rows: Sequence[ProfileRow | Mapping[str, Any]]) -> list[str | None]:
    """The models of the rows in their first-seen order."""
    return list(dict.fromkeys(r.model for r in _rows(rows)))


def layer_positions(rows: Sequence[ProfileRow | Mapping[str, Any]], x: str = "block") -> list[float]:
    """The x of every row: the block's place in the model's forward order (1 = first block), or
    `x="relative"` that place divided by the model's blocks (1 = its last). A model the registry
    does not list (a user's own) is placed by the order of its rows."""
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    rows = _rows(rows)
    counts: dict[str | None, int] = {}
    for r in rows:
        counts[r.model] = counts.get(r.model, 0) + 1
    seen: dict[str | None, int] = {}
    out = []
    for r in rows:
        seen[r.model] = seen.get(r.model, 0) + 1
        depths = IMAGE_MODEL_DEPTHS.get(r.model or "")
        if depths and r.stage is not None and r.block is not None and 1 <= r.stage <= len(depths):
            place, total = sum(depths[:r.stage - 1]) + r.block, sum(depths)
        else:
            place, total = seen[r.model], counts[r.model]
        out.append(place / total if x == "relative" else float(place))
    return out


def _dtick(xs: list[float], x: str) -> float | None:
    """A tick per block while there are few blocks; plotly's own ticks otherwise."""
    return 1 if x == "block" and max(xs, default=1.0) <= 12 else None


def _x_range(xs: list[float], x: str) -> list[float]:
    if x == "relative":
        return [0.0, 1.05]
    return [0.5, max(xs, default=1.0) + 0.5]


def _hover(r: ProfileRow, split: str, direction: str) -> str:
    scores = r.scores(split)
    ci = scores.top1_ci(direction)
    ci_text = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    mrr = "" if r.val_mrr is None else f"<br>val MRR {r.val_mrr:.3f}"
    return f"{r.name}<br>{split} top-1 {scores.top1(direction):.3f}{ci_text}{mrr}"


def profile_chart(profile: Profile | Mapping[str, Any], split: str = "test", x: str = "block") -> go.Figure:
    """Top-1 per layer on `split` ("val" or "test"), one panel per direction, one line per model; the
    reference lines (test top-1: pixel and random-feature ridge, repeat decoder, oracle) and chance
    as horizontal lines; ★ the best layer overall (highest val MRR), ◯ the best of each model."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    profile = Profile.from_json(profile)
    rows = list(profile.rows)
    xs = layer_positions(rows, x)
    overall, per_model = profile.best_overall, set(profile.best_per_model.values())
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=tuple(DIRECTIONS.values()))
    colour = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models_in(rows))}
    top = 0.0
    for col, direction in enumerate(DIRECTIONS, start=1):
        first = col == 1
        for model in colour:
            pts = [(xv, r) for xv, r in zip(xs, rows) if r.model == model and r.scores(split).top1(direction) is not None]
            if not pts:
                continue
            ys = [r.scores(split).top1(direction) for _, r in pts]
            top = max(top, *ys)
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=ys, mode="lines+markers", name=model,
                                     legendgroup=model, showlegend=first, line=dict(color=colour[model], width=2),
                                     marker=dict(size=7), text=[_hover(r, split, direction) for _, r in pts],
                                     hovertemplate="%{text}<extra></extra>"),
                          row=1, col=col)
        for marks, name, symbol, size in (([overall] if overall is not None else [], "best layer (highest val MRR)",
                                           "star", 17),
                                          (sorted(per_model - {overall}), "best layer of its model",
                                           "circle-open", 15)):
            pts = [(xs[i], rows[i]) for i in marks
                   if 0 <= i < len(rows) and rows[i].scores(split).top1(direction) is not None]
            if not pts:
                continue
            fig.add_trace(go.Scatter(
                x=[p[0] for p in pts], y=[p[1].scores(split).top1(direction) for p in pts], mode="markers", name=name,
                legendgroup=name, showlegend=first,
                marker=dict(symbol=symbol, size=size, color=[colour.get(p[1].model, BEST_COLOUR) for p in pts]
                            if symbol == "star" else BEST_COLOUR, line=dict(color=BEST_COLOUR, width=1.5)),
                text=[p[1].name for p in pts], hovertemplate=f"{name}: %{{text}}<extra></extra>"),
                row=1, col=col)
        lo, hi = _x_range(xs, x)
        for key, name, dash, line_colour in REFERENCE_LINES:
            value = profile.reference_top1(key, direction)
            if value is None:
                continue
            top = max(top, value)
            fig.add_trace(go.Scatter(x=[lo, hi], y=[value, value], mode="lines", name=f"{name} (test)",
                                     legendgroup=key, showlegend=first,
                                     line=dict(color=line_colour, dash=dash, width=1.5),
                                     hovertemplate=f"{name}: test top-1 {value:.3f}<extra></extra>"), row=1, col=col)
        n = profile.split.get(split)
        if n is not None and n > 0:
            fig.add_trace(go.Scatter(x=[lo, hi], y=[1 / n, 1 / n], mode="lines", name="chance",
                                     legendgroup="chance", showlegend=first,
                                     line=dict(color="#adb5bd", dash="dot", width=1),
                                     hovertemplate=f"chance: {1 / n:.3f}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text=X_AXES[x], range=[lo, hi], row=1, col=col, dtick=_dtick(xs, x))
    fig.update_yaxes(title_text=f"{split} top-1", range=[0, min(1.0, top * 1.08 + 0.02) if top else 1.0],
                     row=1, col=1)
    fig.update_layout(title=f"Top-1 identification by layer ({'validation' if split == 'val' else 'test'} images)",
                      height=490, legend=dict(orientation="h", y=-0.2, x=0), hovermode="closest",
                      **{**LAYOUT, "margin": dict(l=50, r=20, t=85, b=40)})
    return fig


def _faded(colour: str, alpha: float = 0.45) -> str:
    """A '#rrggbb' colour as rgba with `alpha` (the quartile bars stay behind the medians)."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


def has_feve(profile: Profile | Mapping[str, Any]) -> bool:
    """Whether any row has a median FEVE (the subject has repeats)."""
    return Profile.from_json(profile).has_feve


def _q(v: float | None, default: float) -> float:
    return default if v is None else v


def profile_feve_chart(profile: Profile | Mapping[str, Any], x: str = "block") -> go.Figure:
    """Median FEVE per layer (q25-q75 as error bars) over the neurons with enough explainable
    variance, one line per model (the models' points a little apart, `DODGE`), ★ the best layer (by
    val MRR)."""
    profile = Profile.from_json(profile)
    rows = list(profile.rows)
    xs = layer_positions(rows, x)
    lo, hi = _x_range(xs, x)
    models = models_in(rows)
    step = DODGE * (1.0 if x == "block" else 1.0 / 20)  # models side by side, so their quartile bars do not hide
    xs = [xv + step * (models.index(r.model) - (len(models) - 1) / 2) for xv, r in zip(xs, rows)]
    overall = profile.best_overall
    fig = go.Figure()
    for i, model in enumerate(models):
        pts = [(xv, r) for xv, r in zip(xs, rows) if r.model == model and r.feve is not None
               and r.feve.median is not None]
        if not pts:
            continue
        med = [r.feve.median for _, r in pts]
        up = [_q(r.feve.q75, m) - m for (_, r), m in zip(pts, med)]
        down = [m - _q(r.feve.q25, m) for (_, r), m in zip(pts, med)]
        text = [f"{r.name}<br>median FEVE {r.feve.median:.3f} (q25–q75 {_q(r.feve.q25, 0):.2f}–"
                f"{_q(r.feve.q75, 0):.2f})<br>{'?' if r.feve.n_included is None else r.feve.n_included} of "
                f"{'?' if r.feve.n_neurons is None else r.feve.n_neurons} neurons included" for _, r in pts]
        c = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=med, mode="lines+markers", name=model, legendgroup=model,
                                 line=dict(color=c, width=2), marker=dict(size=7),
                                 error_y=dict(type="data", array=up, arrayminus=down, thickness=1, width=3,
                                              color=_faded(c)),
                                 text=text, hovertemplate="%{text}<extra></extra>"))
    best = profile.best_row
    if best is not None and best.feve is not None and best.feve.median is not None:
        fig.add_trace(go.Scatter(x=[xs[overall]], y=[best.feve.median], mode="markers",
                                 name="best layer (highest val MRR)",
                                 marker=dict(symbol="star", size=17, color=PALETTE[models.index(best.model)
                                                                                   % len(PALETTE)],
                                             line=dict(color=BEST_COLOUR, width=1.5)),
                                 hovertemplate=f"best layer: {best.name}<extra></extra>"))
    fig.add_hline(y=0, line_color="#adb5bd", line_width=1)
    fig.update_layout(title="Median FEVE by layer (test repeats)", height=400,
                      xaxis=dict(title=X_AXES[x], range=[lo, hi], dtick=_dtick(xs, x)),
                      yaxis=dict(title="median FEVE (q25–q75)"), legend=dict(orientation="h", y=-0.25, x=0),
                      **LAYOUT)
    return fig
