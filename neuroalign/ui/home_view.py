"""Home's "best result per subject": one card per subject (narrow enough for any window width): its
best run's test top-1 both ways, each with the gap to the best linear readout of that run."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd
import streamlit as st

from neuroalign.text import markdown_code, markdown_literal as md
from neuroalign.ui.results_view import _num

DIRECTIONS = (("image_to_neural", "top1 img→neu", "best linear img→neu", "image → neural"),
              ("neural_to_image", "top1 neu→img", "best linear neu→img", "neural → image"))


def card_metrics(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """(label, value, delta vs the best linear readout, help) of the two directions of one table row."""
    out = []
    chance, n = _num(row.get("chance top1")), _num(row.get("test n"))
    for _, col, linear_col, label in DIRECTIONS:
        top1, linear = _num(row.get(col)), _num(row.get(linear_col))
        context = [f"chance {chance:.3f}" if chance is not None else "", f"{int(n)} test images" if n else ""]
        out.append({
            "label": label, "value": "—" if top1 is None else f"{top1:.3f}",
            "delta": None if top1 is None or linear is None else f"{top1 - linear:+.3f} vs linear",
            "help": "test top-1 of the subject's best run; the delta is the gap to the best linear readout of that "
                    "run (the best of its ridge baselines, "
                    f"{linear:.3f})" if linear is not None else "test top-1 of the subject's best run",
            "context": " · ".join(c for c in context if c),
        })
    return out


def render_best(best: pd.DataFrame) -> None:
    """One card per row of `tables.best_per_subject(...)`: the subject, test top-1 both ways, the context."""
    for row in best.to_dict("records"):
        with st.container(border=True):
            metrics = card_metrics(row)
            left, middle, right = st.columns([1, 1, 1.4])
            for box, m in zip((left, middle), metrics):
                box.metric(m["label"], m["value"], delta=m["delta"], help=m["help"])
            linear = row.get("best linear") or "no linear baseline"
            right.markdown(f"**{md(row['subject'])}** · test top-1")
            right.caption(f"{metrics[0]['context']} · best linear: {md(linear)} · run {markdown_code(row['run'])}")
