"""The Neurons page's parts: which neurons drive a finished run's alignment, against their repeat
reliability and (simulated subjects) the simulator's true SNR. The numbers come from
`neuroalign.evaluation.importance` through the cached `loaders.run_importance` (`training.run_eval`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
import streamlit as st

from neuroalign.evaluation.importance import TOP_FRACTION, compare_with, summary_line, verdict_of
from neuroalign import plots
from neuroalign.ui import nav

PAGE = nav.NEURONS
RUN_KEY = "neurons.run"
MEASURE_KEY = "neurons.measure"
TABLE_KEY = "neurons.table"
TOP_ROWS = 20

KIND_LABELS = {"read-in": "read-in", "linear": "linear", "reference": "reference attention", "transformer": "transformer",
               "latent": "latent attention"}
IMPORTANCE_HELP = ("Each neuron's attribution (expected gradients) of the contrastive log-probability that a neural "
                   "response retrieves its own image among the test images rather than another test image's, in eval "
                   "mode with the best checkpoint. Importance: the mean absolute attribution over the test images; "
                   "net contribution: the mean signed attribution (negative: the neuron misleads more than it helps). "
                   "Both are shown as shares summing to 100\u00a0%, so runs with different neural towers compare.")


@dataclass(frozen=True)
class Measure:
    key: str  # "importance" | "net"
    noun: str  # on screen: "importance", "net contribution"
    log: bool  # positive shares: log axes

    @property
    def label(self) -> str:
        return f"share of {self.noun}"


MEASURES = {"importance": Measure("importance", "importance", True),
            "net": Measure("net", "net contribution", False)}
MEASURE_OPTIONS = {"importance": "Importance (mean |attribution|)", "net": "Net contribution (mean signed attribution)"}


def measure_values(result: Mapping[str, Any], key: str) -> np.ndarray:
    """The shares `(K,)` of one measure: importance / total, or net contribution / its (signed) total."""
    if key == "importance":
        return np.asarray(result["share"], dtype=np.float64)
    net = np.asarray(result["net"], dtype=np.float64)
    total = float(net.sum())
    return net / total if total != 0 else np.zeros_like(net)


def concentration(share: np.ndarray, fraction: float = TOP_FRACTION) -> tuple[int, float]:
    """(how many neurons are the top `fraction`, the share of importance they carry)."""
    s = np.sort(np.asarray(share, dtype=np.float64))[::-1]
    n = max(1, int(round(fraction * len(s))))
    return n, float(s[:n].sum() / max(float(s.sum()), 1e-300))


def neuron_table(share: np.ndarray, net: np.ndarray, native: np.ndarray | None, reliability: np.ndarray | None,
                 snr: np.ndarray | None, by: str = "importance", feve: np.ndarray | None = None) -> pd.DataFrame:
    """One row per neuron ranked by `by` ("importance" or "net"): rank, neuron (0-based column), the
    importance and net shares in percent and the qualities present (`feve`: the run's FEVE per neuron)."""
    share = 100.0 * np.asarray(share, dtype=np.float64)
    net = 100.0 * np.asarray(net, dtype=np.float64)
    order = np.argsort(-(share if by == "importance" else net), kind="stable")
    # net to the shown precision, +0.0: a tiny negative share read "-0.00%"
    cols: dict[str, Any] = {"rank": np.arange(1, len(share) + 1), "neuron": order, "share": share[order],
                            "net": np.round(net[order], 2) + 0.0}
    if native is not None:
        cols["tower's own"] = np.asarray(native, dtype=np.float64)[order]
    if reliability is not None:
        cols["reliability"] = np.asarray(reliability, dtype=np.float64)[order]
    if snr is not None:
        cols["true SNR"] = np.asarray(snr, dtype=np.float64)[order]
    if feve is not None and len(feve) == len(share):
        cols["FEVE"] = np.asarray(feve, dtype=np.float64)[order]
    return pd.DataFrame(cols)


def table_columns(max_share: float) -> dict[str, Any]:
    """Column configs of `neuron_table` (the importance bars run up to the largest share shown)."""
    return {**TABLE_COLUMNS, "share": st.column_config.ProgressColumn(
        "importance", format="%.2f%%", min_value=0.0, max_value=max(float(max_share), 1e-9), width=130,
        help="share of importance (mean |attribution|), in percent")}


TABLE_COLUMNS = {
    "rank": st.column_config.NumberColumn("rank", format="%d", width=50),
    "neuron": st.column_config.NumberColumn("neuron", format="%d", width=60,
                                            help="column of the responses (0-based)"),
    "net": st.column_config.NumberColumn("net contribution", format="%.2f%%",
                                         help="share of the net contribution (mean signed attribution), in percent"),
    "tower's own": st.column_config.NumberColumn("tower's own", format="%.4f",
                                                 help="the neural tower's own measure, as a share"),
    "reliability": st.column_config.NumberColumn("reliability", format="%.3f",
                                                 help="split-half reliability of the neuron's repeats"),
    "true SNR": st.column_config.NumberColumn("true SNR", format="%.3g",
                                              help="simulator: variance of the noiseless rates over images / "
                                                   "trial-noise variance of the recorded mean"),
    "FEVE": st.column_config.NumberColumn("FEVE", format="%.3f",
                                          help="fraction of the neuron's explainable variance (from the repeats) that "
                                               "a ridge from the model's image embedding predicts on the test images; "
                                               "1 = all of it, 0 = no better than its mean; unstable for neurons with "
                                               "little explainable variance"),
}


def _verdict(text: str, stats: Mapping[str, Any]) -> None:
    box = st.info if verdict_of(dict(stats)) == "does not clearly favour" else st.success
    box(text, icon=":material/insights:")


def render_comparisons(share: np.ndarray, reliability: np.ndarray | None, snr: np.ndarray | None,
                       has_repeats: bool, simulated: bool, measure: str = "importance") -> dict[str, dict[str, Any]]:
    """The one-line summaries against reliability and ground truth (or why they are missing)."""
    out: dict[str, dict[str, Any]] = {}
    if reliability is not None:
        out["reliability"] = compare_with(share, reliability)
        _verdict(summary_line(out["reliability"], "repeat reliability", measure), out["reliability"])
    elif has_repeats:
        st.info("This subject has fewer than two repeats per image, so repeat reliability cannot be computed.")
    else:
        st.info("This subject has no repeats, so the neurons' repeat reliability is unknown: importance is shown "
                "ranked only. Import single-trial repeats (`responses_repeats`) to compare with reliability.")
    if snr is not None:
        out["true SNR"] = compare_with(share, snr)
        _verdict(summary_line(out["true SNR"], "true SNR", measure), out["true SNR"])
    elif simulated:
        st.info("This simulated subject has no ground truth file (ground_truth.npz) to compare with.")
    return out


SMALL_SAMPLE = 100  # below this many test images the per-neuron averages are noisy


def small_sample_warnings(result: Mapping[str, Any]) -> list[str]:
    """A warning when the importance averages over fewer than `SMALL_SAMPLE` test images."""
    n = int(result["n_used"])
    if n >= SMALL_SAMPLE:
        return []
    return [f"Importance here averages over only {n} test images: per-neuron values and their correlation with "
            f"reliability are noisy below {SMALL_SAMPLE}. More images per subject give firmer answers."]


def render_metrics(result: Mapping[str, Any]) -> None:
    """The row of metrics above the page: neural tower, neurons, test images used, concentration."""
    top_n, top_share = concentration(result["share"])
    m = st.columns(4)
    m[0].metric("Neural tower", KIND_LABELS.get(result["kind"], result["kind"]))
    m[1].metric("Neurons", f"{len(result['share']):,}")
    m[2].metric("Test images", f"{result['n_used']:,}" if result["n_used"] == result["n_test"]
                else f"{result['n_used']:,} of {result['n_test']:,}",
                help="the held-out test images the importance averages over" + (
                    "" if result["n_used"] == result["n_test"] else
                    f" (a random {result['n_used']:,} of {result['n_test']:,}: this tower is slow to differentiate, "
                    "so the average stopped at the dashboard's time budget; the library call "
                    "`neuroalign.training.run_eval.run_importance(run_dir)` uses all of them)"))
    m[3].metric("Top-10 % share", f"{top_share:.0%}",
                help=f"the {top_n:,} most important neurons (10 %) carry this share of the importance; 10 % if "
                     "every neuron counted the same")


def charts(values: np.ndarray, measure: Measure, reliability: np.ndarray | None, snr: np.ndarray | None,
           result: Mapping[str, Any]) -> list[tuple[Any, str, str]]:
    """(figure, key, caption) of the page's charts: ranked, against reliability / true SNR when known,
    against the tower's own measure."""
    noun = measure.noun.capitalize()
    out: list[tuple[Any, str, str]] = [(
        plots.importance_ranked(values, log_y=measure.log, y_title=measure.label,
                                title=f"Neurons ranked by {measure.noun}"), "neurons.ranked",
        "Each neuron's share, largest first" + (" (log scale)" if measure.log else "") + ", and the cumulative "
        "share (dashed): a steep start means a few neurons carry the alignment.")]
    if reliability is not None:
        out.append((plots.importance_scatter(values, reliability, "split-half reliability", f"{noun} vs reliability",
                                             log_y=measure.log, y_title=measure.label), "neurons.reliability",
                    "One dot per neuron. A model that relies on reliable neurons puts its weight on the right."))
    if snr is not None:
        out.append((plots.importance_scatter(values, snr, "true SNR (simulator)", f"{noun} vs true SNR", log_x=True,
                                             log_y=measure.log, y_title=measure.label), "neurons.truth",
                    "True SNR: the variance of the simulator's noiseless rates over images divided by the trial-noise "
                    "variance of the recorded mean response."))
    if result["native"] is not None:
        out.append((plots.importance_scatter(values, np.asarray(result["native"]), result["native_label"],
                                             f"{noun} vs the tower's measure", log_y=measure.log,
                                             y_title=measure.label, x_format=".2%"), "neurons.native",
                    f"The tower's own per-neuron measure ({result['native_label']}, over {result['native_n']:,} test "
                    "images) reads only the tower's weights or attention; the attribution measures what each neuron "
                    "does to the retrieval, and is the one that compares across neural towers."))
    return out


# ---- encoding (FEVE) per neuron ---------------------------------------------------------------------

def feve_values(results: Mapping[str, Any], n_neurons: int) -> np.ndarray | None:
    """The run's FEVE per neuron `(K,)` (NaN where undefined) from results.json, None when the run has
    none (older runs, subjects without repeats) or it does not match the subject's neurons."""
    from neuroalign.ui.results_view import feve_per_neuron

    values = feve_per_neuron(results)
    if values is None or len(values) != n_neurons:
        return None
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def fev_values(repeats: np.ndarray | None, test_idx: Any) -> np.ndarray | None:
    """Each neuron's explainable fraction (FEV) on the run's test images, from the subject's repeats."""
    from neuroalign.evaluation.feve import fev_feve

    if repeats is None or test_idx is None or np.asarray(repeats).ndim != 3 or np.asarray(repeats).shape[0] < 2:
        return None
    trials = np.asarray(repeats)[:, np.asarray(test_idx, dtype=np.int64)]
    return fev_feve(np.zeros(trials.shape[1:]), trials)[0]


def feve_chart(feve: np.ndarray, fev: np.ndarray | None, results: Mapping[str, Any]) -> tuple[Any, str, str]:
    """(figure, key, caption): the histogram of FEVE over the neurons with FEV >= the run's threshold."""
    from neuroalign.evaluation.feve import MIN_FEV

    min_fev = float((((results.get("encoding") or {}).get("model")) or {}).get("min_fev") or MIN_FEV)
    use = np.isfinite(feve) & (np.ones_like(feve, dtype=bool) if fev is None else (np.nan_to_num(fev) >= min_fev))
    values = feve[use]
    median = float(np.median(values)) if len(values) else None
    fig = plots.histogram(values, "FEVE per neuron (test repeats)", "FEVE", nbins=30, vline=median,
                          vline_label=f"median {median:.2f}" if median is not None else "")
    left_out = int(np.isfinite(feve).sum() - use.sum())
    caption = (f"{int(use.sum()):,} of {len(feve):,} neurons"
               + (f" with FEV ≥ {min_fev:g}" if fev is not None else "")
               + ": FEVE is the share of the variance the repeats say is explainable that the model predicts "
                 "(1 = all of it, 0 = no better than the neuron's mean)."
               + (f" {left_out:,} neurons with less explainable variance are left out (their FEVE is mostly noise; "
                  "the table has every value)." if left_out else ""))
    return fig, "neurons.feve", caption
