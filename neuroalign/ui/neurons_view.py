"""The Neurons page's parts: which neurons drive a finished run's alignment, against their repeat
reliability and (simulated subjects) the simulator's true SNR. The numbers come from
`neuroalign.evaluation.importance` through the cached `loaders.run_importance`."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd
import streamlit as st

from neuroalign.evaluation.importance import TOP_FRACTION, compare_with, summary_line
from neuroalign.ui import nav

PAGE = nav.PageSpec("pages/neurons.py", "Neurons", ":material/hub:")
RUN_KEY = "neurons.run"
TABLE_KEY = "neurons.table"
TOP_ROWS = 20

BLOCK_LABELS = {"linear": "linear", "reference": "reference attention", "transformer": "transformer",
                "latent": "latent attention"}
IMPORTANCE_HELP = ("Expected-gradients attribution of the contrastive log-probability that a neural response "
                   "retrieves its own image among the test images, averaged in absolute value over the test images "
                   "(eval mode, best checkpoint); shares sum to 100 %, so runs with different blocks compare.")


def concentration(share: np.ndarray, fraction: float = TOP_FRACTION) -> tuple[int, float]:
    """(how many neurons are the top `fraction`, the share of importance they carry)."""
    s = np.sort(np.asarray(share, dtype=np.float64))[::-1]
    n = max(1, int(round(fraction * len(s))))
    return n, float(s[:n].sum() / max(float(s.sum()), 1e-300))


def neuron_table(share: np.ndarray, native: np.ndarray | None, reliability: np.ndarray | None,
                 snr: np.ndarray | None) -> pd.DataFrame:
    """One row per neuron, most important first: rank, neuron (0-based column), share and the qualities present."""
    share = np.asarray(share, dtype=np.float64)
    order = np.argsort(-share, kind="stable")
    cols: dict[str, Any] = {"rank": np.arange(1, len(share) + 1), "neuron": order, "share": share[order]}
    if native is not None:
        cols["block's own"] = np.asarray(native, dtype=np.float64)[order]
    if reliability is not None:
        cols["reliability"] = np.asarray(reliability, dtype=np.float64)[order]
    if snr is not None:
        cols["true SNR"] = np.asarray(snr, dtype=np.float64)[order]
    return pd.DataFrame(cols)


TABLE_COLUMNS = {
    "rank": st.column_config.NumberColumn("rank", format="%d", width=50),
    "neuron": st.column_config.NumberColumn("neuron", format="%d", width=60,
                                            help="column of the responses (0-based)"),
    "share": st.column_config.ProgressColumn("share of importance", format="%.2f%%", min_value=0.0,
                                             help=IMPORTANCE_HELP),
    "block's own": st.column_config.NumberColumn("block's own", format="%.4f",
                                                 help="the block's own measure, as a share"),
    "reliability": st.column_config.NumberColumn("reliability", format="%.3f",
                                                 help="split-half reliability of the neuron's repeats"),
    "true SNR": st.column_config.NumberColumn("true SNR", format="%.3g",
                                              help="simulator: variance of the noiseless rates over images / "
                                                   "trial-noise variance of the recorded mean"),
}


def _verdict(text: str, stats: Mapping[str, Any]) -> None:
    rho = stats.get("spearman", math.nan)
    box = st.success if math.isfinite(rho) and rho > 0.1 else st.warning
    box(text, icon=":material/insights:")


def render_comparisons(share: np.ndarray, reliability: np.ndarray | None, snr: np.ndarray | None,
                       has_repeats: bool, simulated: bool) -> dict[str, dict[str, Any]]:
    """The one-line summaries against reliability and ground truth (or why they are missing)."""
    out: dict[str, dict[str, Any]] = {}
    if reliability is not None:
        out["reliability"] = compare_with(share, reliability)
        _verdict(summary_line(out["reliability"], "repeat reliability"), out["reliability"])
    elif has_repeats:
        st.info("This subject has fewer than two repeats per image, so repeat reliability cannot be computed.")
    else:
        st.info("This subject has no repeats, so the neurons' repeat reliability is unknown: importance is shown "
                "ranked only. Import single-trial repeats (`responses_repeats`) to compare with reliability.")
    if snr is not None:
        out["true SNR"] = compare_with(share, snr)
        _verdict(summary_line(out["true SNR"], "true SNR"), out["true SNR"])
    elif simulated:
        st.info("This simulated subject has no ground truth file (ground_truth.npz) to compare with.")
    return out
