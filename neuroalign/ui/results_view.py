"""What the Retrieval and Home pages say about a run's test results: the model next to chance and
every baseline present, 95 % intervals of top-1, and whether the model beats the best linear readout.

Reads `results.json` through `result_files.RunResults` (the functions take it or the plain dict) and
copes with old runs: any baseline may be missing, and `top1_ci` may be absent (then a Wilson
interval is computed from top-1 and the test size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd

from neuroalign.evaluation import retrieval
from neuroalign.training.profile_file import finite
from neuroalign.ui.result_files import Encoding, MetricsBlock, RunResults  # noqa: F401 (Encoding lived here)

DIRECTIONS = {"image_to_neural": "image → neural", "neural_to_image": "neural → image"}
SHORT_DIRECTIONS = {"image_to_neural": "img→neu", "neural_to_image": "neu→img"}
RETRIEVAL_METRICS = ("top1", "top5", "top10", "mean_rank", "median_rank", "mrr")
SMALL_TEST = 100  # below this many test images, top-1 differences of several points are noise


@dataclass(frozen=True)
class Reference:
    """A baseline or ceiling of `results["baselines"]`."""

    key: str  # key in results["baselines"]
    label: str  # column name on screen
    help: str
    linear: bool = False  # a linear readout: the model should beat the best of these


REFERENCES: tuple[Reference, ...] = (
    Reference("ridge", "ridge pixels", "baseline: ridge regression from the pixels to the responses, "
              "identification by correlation", linear=True),
    Reference("ridge_random", "ridge random", "baseline: ridge regression from random rectified "
              "convolution features (fixed random filters) to the responses", linear=True),
    Reference("ridge_backbone", "ridge backbone", "baseline: ridge regression from the frozen backbone features "
              "this run uses to the responses (the linear encoding model on the same features)", linear=True),
    Reference("repeat", "repeat", "baseline: one recorded repeat identifies the other (single trials, so a harder "
              "task than the model's, not a ceiling)"),
    Reference("oracle", "oracle", "ceiling: the simulator's noiseless rates (simulated subjects only)"),
)
CHANCE_HELP = "expected value for a random ranking"
MODEL_HELP = "the trained model on the untouched test split"


_num = finite  # the name home_view imports


def _results(results: Mapping[str, Any] | RunResults | None) -> RunResults:
    return RunResults.from_json(results)


def shown_interval(p: float, n: int) -> tuple[float, float]:
    """`evaluation.retrieval.wilson_interval` (the one formula) for display: `(0, 1)` when there are
    no items rather than an error (a page never raises on an odd results.json)."""
    if n <= 0:
        return (0.0, 1.0)
    lo, hi = retrieval.wilson_interval(p, n)
    return (lo, hi)


def present_references(results: Mapping[str, Any] | RunResults) -> list[Reference]:
    """The baselines of `results` that have metrics (in display order)."""
    res = _results(results)
    return [r for r in REFERENCES if res.baseline(r.key) is not None]


def test_size(results: Mapping[str, Any] | RunResults) -> int | None:
    return _results(results).test_size


def top1_with_interval(block: MetricsBlock | Mapping[str, Any] | None, direction: str,
                       n: int | None) -> tuple[float | None, float | None, float | None]:
    """(top1, lo, hi) of one direction of a metrics block: `top1_ci` when recorded (in the direction's
    dict or as `top1_ci[direction]` on the block), else a Wilson interval from top-1 and n."""
    if not isinstance(block, MetricsBlock):
        block = MetricsBlock.from_json(block)
    top1 = block.top1(direction)
    if top1 is None:
        return None, None, None
    ci = block.recorded_top1_ci(direction)
    if ci is not None and ci[0] is not None and ci[1] is not None:
        return top1, ci[0], ci[1]
    size = block.n or n
    if not size:
        return top1, None, None
    lo, hi = shown_interval(top1, int(size))
    return top1, lo, hi


def format_interval(top1: float | None, lo: float | None, hi: float | None) -> str:
    if top1 is None:
        return "—"
    if lo is None or hi is None:
        return f"{top1:.3f}"
    return f"{top1:.3f} [{lo:.3f}, {hi:.3f}]"


def metrics_table(results: Mapping[str, Any] | RunResults, direction: str) -> pd.DataFrame:
    """One direction's rows: each metric (plus the two top-1 interval bounds after top-1); columns:
    model, chance and every baseline present, numbers only."""
    res = _results(results)
    test, n = res.test, res.test_size
    refs = present_references(res)
    rows = []
    for metric in RETRIEVAL_METRICS:
        row: dict[str, Any] = {"metric": metric, "model": test.metric(direction, metric)}
        if metric.startswith("top"):
            k = int(metric[3:])
            row["chance"] = test.chance[f"chance_{metric}"] or ((min(k, n) / n) if n else None)
        elif metric == "mrr":
            row["chance"] = (sum(1.0 / r for r in range(1, n + 1)) / n) if n else None
        else:
            row["chance"] = test.chance["chance_mean_rank"] or ((n + 1) / 2 if n else None)
        for ref in refs:
            row[ref.label] = res.baselines[ref.key].metric(direction, metric)
        rows.append(row)
        if metric == "top1":
            # chance's interval: where a random ranking's top-1 on these n images falls 95 % of the time
            chance_ci = shown_interval(row["chance"], n) if row["chance"] is not None and n else (None, None)
            for bound, idx in (("lo", 1), ("hi", 2)):
                brow = {"metric": f"top1 95% {bound}", "model": top1_with_interval(test, direction, n)[idx],
                        "chance": chance_ci[idx - 1]}
                for ref in refs:
                    brow[ref.label] = top1_with_interval(res.baselines[ref.key], direction, n)[idx]
                rows.append(brow)
    return pd.DataFrame(rows).astype({c: float for c in ["model", "chance", *(r.label for r in refs)]})


def column_help(results: Mapping[str, Any] | RunResults) -> dict[str, str]:
    """Column name -> help text (with the baseline's own `rows` description when recorded)."""
    res = _results(results)
    out = {"model": MODEL_HELP, "chance": CHANCE_HELP}
    for ref in present_references(res):
        rows = res.baselines[ref.key].rows
        out[ref.label] = ref.help + (f" — rows: {rows}" if rows else "")
    return out


@dataclass(frozen=True)
class Verdict:
    direction: str
    beats: bool | None  # None: no linear baseline in this run
    text: str


def best_linear(results: Mapping[str, Any] | RunResults, direction: str) -> tuple[Reference | None, float | None]:
    """The linear readout (ridge_*) with the highest top-1 in `direction`, and that top-1."""
    res = _results(results)
    best: tuple[Reference | None, float | None] = (None, None)
    for ref in present_references(res):
        if not ref.linear:
            continue
        v = res.baselines[ref.key].top1(direction)
        if v is not None and (best[1] is None or v > best[1]):
            best = (ref, v)
    return best


def linear_verdicts(results: Mapping[str, Any] | RunResults) -> list[Verdict]:
    """One line per direction: does the model's test top-1 beat the best linear readout?"""
    res = _results(results)
    n = res.test_size
    out = []
    for direction, dlabel in DIRECTIONS.items():
        top1, lo, hi = top1_with_interval(res.test, direction, n)
        ref, best = best_linear(res, direction)
        if top1 is None:
            out.append(Verdict(direction, None, f"{dlabel}: no test top-1 recorded."))
            continue
        if ref is None:
            out.append(Verdict(direction, None, f"{dlabel}: model top-1 {format_interval(top1, lo, hi)}; this run "
                                                f"has no linear baseline to compare with."))
            continue
        _, blo, bhi = top1_with_interval(res.baselines[ref.key], direction, n)
        beats = top1 > best
        note = _paired_note(res, direction, ref.key)
        if note is None:  # runs from before the paired comparison: only the separate intervals
            overlap = None not in (lo, hi, blo, bhi) and (lo <= bhi if beats else blo <= hi)
            note = " (the 95 % intervals overlap)" if overlap else ""
        word = "beats" if beats else "does not beat"
        out.append(Verdict(direction, beats,
                           f"{dlabel}: the model {word} the best linear readout{note} — model top-1 "
                           f"{format_interval(top1, lo, hi)} vs {ref.label} {format_interval(best, blo, bhi)}."))
    return out


def _paired_note(results: RunResults, direction: str, key: str) -> str | None:
    """" (paired on the same test images: difference d, 95 % interval lo to hi, p = x: within noise)" from
    results.json's `comparison`, when it was computed for this baseline; else None."""
    row = results.comparison.get(direction)
    if row is None or row.best_name != key:
        return None
    diff, p, ci = row.difference, row.p_value, row.difference_ci
    if diff is None or p is None or ci is None:
        return None
    lo, hi = ci
    if lo is None or hi is None:
        return None
    verdict = "significant" if p < 0.05 else "within noise"
    return (f" (paired on the same test images: difference {diff:+.3f}, 95 % interval {lo:+.3f} to {hi:+.3f}, "
            f"p = {p:.2g}: {verdict})")


def small_test_warning(results: Mapping[str, Any] | RunResults) -> str | None:
    """A warning for test sets under `SMALL_TEST` images (None otherwise)."""
    res = _results(results)
    n = res.test_size
    if n is None or n >= SMALL_TEST:
        return None
    top1 = res.test.top1("image_to_neural")
    width = ""
    if top1 is not None:
        lo, hi = shown_interval(top1, n)
        width = f" (top-1 image → neural {top1:.3f}, 95 % interval {lo:.3f}–{hi:.3f})"
    return (f"Only {n} test images{width}: with fewer than {SMALL_TEST}, differences of several points between "
            f"the model and a baseline can be noise. More images per subject give firmer numbers.")


def top1_bar_rows(results: Mapping[str, Any] | RunResults
                  ) -> dict[str, dict[str, tuple[float | None, float | None, float | None]]]:
    """{name: {direction: (top1, lo, hi)}} for the model and every baseline present (bar chart)."""
    res = _results(results)
    n = res.test_size
    out = {"model": {d: top1_with_interval(res.test, d, n) for d in DIRECTIONS}}
    for ref in present_references(res):
        out[ref.label] = {d: top1_with_interval(res.baselines[ref.key], d, n) for d in DIRECTIONS}
    return out


def chance_top1(results: Mapping[str, Any] | RunResults) -> float | None:
    res = _results(results)
    n = res.test_size
    return res.test.chance["chance_top1"] or ((1.0 / n) if n else None)


def best_linear_columns(results: Mapping[str, Any] | RunResults) -> dict[str, Any]:
    """Home's columns: the best linear readout's top-1 per direction and which baseline it is."""
    res = _results(results)
    out: dict[str, Any] = {}
    names = []
    for direction, short in SHORT_DIRECTIONS.items():
        ref, v = best_linear(res, direction)
        out[f"best linear {short}"] = v
        if ref is not None and ref.label not in names:
            names.append(ref.label)
    out["best linear"] = ", ".join(names)
    return out


# ---- encoding (FEVE) beside retrieval ----------------------------------------------------------------

FEVE_HELP = ("FEVE, fraction of explainable variance explained (Cadena et al. 2019, Sensorium): the repeats say how "
             "much of each neuron's response varies with the image rather than from trial to trial (FEV); FEVE is the "
             "share of that explainable variance a ridge from the model's image embedding predicts on the test images. "
             "1 = it predicts everything the repeats say is predictable, 0 = no better than the neuron's mean. "
             "Median over the neurons with FEV ≥ 0.15 (the others are mostly noise); q25–q75 are the quartiles.")


def encoding_summary(results: Mapping[str, Any] | RunResults) -> dict[str, Encoding] | None:
    """{"model": Encoding, "ridge_backbone": Encoding (when present)} from `results["encoding"]`; None
    for runs without one (older runs, subjects without repeats)."""
    encoding = _results(results).encoding
    return dict(encoding) if "model" in encoding else None


def feve_per_neuron(results: Mapping[str, Any] | RunResults) -> list[float | None] | None:
    """The model's FEVE per neuron (None entries: no variance), or None without `encoding`."""
    values = _results(results).feve_per_neuron
    return None if values is None else list(values)
