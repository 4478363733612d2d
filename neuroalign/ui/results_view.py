"""What the Retrieval and Home pages say about a run's test results: the model next to chance and
every baseline present, 95 % intervals of top-1, and whether the model beats the best linear readout.

Reads `results.json` as plain dicts and copes with old runs: any baseline may be missing, and
`top1_ci` may be absent (then a Wilson interval is computed from top-1 and the test size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd

from neuroalign.evaluation import retrieval

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


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def _num(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def shown_interval(p: float, n: int) -> tuple[float, float]:
    """`evaluation.retrieval.wilson_interval` (the one formula) for display: `(0, 1)` when there are
    no items rather than an error (a page never raises on an odd results.json)."""
    if n <= 0:
        return (0.0, 1.0)
    lo, hi = retrieval.wilson_interval(p, n)
    return (lo, hi)


def present_references(results: Mapping[str, Any]) -> list[Reference]:
    """The baselines of `results` that have metrics (in display order)."""
    baselines = results.get("baselines") or {}
    return [r for r in REFERENCES if isinstance(baselines.get(r.key), Mapping)
            and isinstance(baselines[r.key].get("image_to_neural"), Mapping)]


def test_size(results: Mapping[str, Any]) -> int | None:
    n = _num(_get(results, "test", "n"))
    return int(n) if n else None


def top1_with_interval(block: Mapping[str, Any] | None, direction: str,
                       n: int | None) -> tuple[float | None, float | None, float | None]:
    """(top1, lo, hi) of one direction of a metrics block: `top1_ci` when recorded (in the direction's
    dict or as `top1_ci[direction]` on the block), else a Wilson interval from top-1 and n."""
    top1 = _num(_get(block, direction, "top1"))
    if top1 is None:
        return None, None, None
    ci = _get(block, direction, "top1_ci")
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2):
        ci = _get(block, "top1_ci", direction)
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and _num(ci[0]) is not None and _num(ci[1]) is not None:
        return top1, float(ci[0]), float(ci[1])
    size = _num(_get(block, "n")) or n
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


def metrics_table(results: Mapping[str, Any], direction: str) -> pd.DataFrame:
    """One direction's rows: each metric (plus the two top-1 interval bounds after top-1); columns:
    model, chance and every baseline present, numbers only."""
    test = results.get("test") or {}
    n = test_size(results)
    refs = present_references(results)
    baselines = results.get("baselines") or {}
    rows = []
    for metric in RETRIEVAL_METRICS:
        row: dict[str, Any] = {"metric": metric, "model": _num(_get(test, direction, metric))}
        if metric.startswith("top"):
            k = int(metric[3:])
            row["chance"] = _num(test.get(f"chance_{metric}")) or ((min(k, n) / n) if n else None)
        elif metric == "mrr":
            row["chance"] = (sum(1.0 / r for r in range(1, n + 1)) / n) if n else None
        else:
            row["chance"] = _num(test.get("chance_mean_rank")) or ((n + 1) / 2 if n else None)
        for ref in refs:
            row[ref.label] = _num(_get(baselines[ref.key], direction, metric))
        rows.append(row)
        if metric == "top1":
            # chance's interval: where a random ranking's top-1 on these n images falls 95 % of the time
            chance_ci = shown_interval(row["chance"], n) if row["chance"] is not None and n else (None, None)
            for bound, idx in (("lo", 1), ("hi", 2)):
                brow = {"metric": f"top1 95% {bound}", "model": top1_with_interval(test, direction, n)[idx],
                        "chance": chance_ci[idx - 1]}
                for ref in refs:
                    brow[ref.label] = top1_with_interval(baselines[ref.key], direction, n)[idx]
                rows.append(brow)
    return pd.DataFrame(rows).astype({c: float for c in ["model", "chance", *(r.label for r in refs)]})


def column_help(results: Mapping[str, Any]) -> dict[str, str]:
    """Column name -> help text (with the baseline's own `rows` description when recorded)."""
    out = {"model": MODEL_HELP, "chance": CHANCE_HELP}
    baselines = results.get("baselines") or {}
    for ref in present_references(results):
        rows = _get(baselines, ref.key, "rows")
        out[ref.label] = ref.help + (f" — rows: {rows}" if isinstance(rows, str) and rows else "")
    return out


@dataclass(frozen=True)
class Verdict:
    direction: str
    beats: bool | None  # None: no linear baseline in this run
    text: str


def best_linear(results: Mapping[str, Any], direction: str) -> tuple[Reference | None, float | None]:
    """The linear readout (ridge_*) with the highest top-1 in `direction`, and that top-1."""
    baselines = results.get("baselines") or {}
    best: tuple[Reference | None, float | None] = (None, None)
    for ref in present_references(results):
        if not ref.linear:
            continue
        v = _num(_get(baselines[ref.key], direction, "top1"))
        if v is not None and (best[1] is None or v > best[1]):
            best = (ref, v)
    return best


def linear_verdicts(results: Mapping[str, Any]) -> list[Verdict]:
    """One line per direction: does the model's test top-1 beat the best linear readout?"""
    test = results.get("test") or {}
    n = test_size(results)
    baselines = results.get("baselines") or {}
    out = []
    for direction, dlabel in DIRECTIONS.items():
        top1, lo, hi = top1_with_interval(test, direction, n)
        ref, best = best_linear(results, direction)
        if top1 is None:
            out.append(Verdict(direction, None, f"{dlabel}: no test top-1 recorded."))
            continue
        if ref is None:
            out.append(Verdict(direction, None, f"{dlabel}: model top-1 {format_interval(top1, lo, hi)}; this run "
                                                f"has no linear baseline to compare with."))
            continue
        _, blo, bhi = top1_with_interval(baselines[ref.key], direction, n)
        beats = top1 > best
        note = _paired_note(results, direction, ref.key)
        if note is None:  # runs from before the paired comparison: only the separate intervals
            overlap = None not in (lo, hi, blo, bhi) and (lo <= bhi if beats else blo <= hi)
            note = " (the 95 % intervals overlap)" if overlap else ""
        word = "beats" if beats else "does not beat"
        out.append(Verdict(direction, beats,
                           f"{dlabel}: the model {word} the best linear readout{note} — model top-1 "
                           f"{format_interval(top1, lo, hi)} vs {ref.label} {format_interval(best, blo, bhi)}."))
    return out


def _paired_note(results: Mapping[str, Any], direction: str, key: str) -> str | None:
    """" (paired on the same test images: difference d, 95 % interval lo to hi, p = x: within noise)" from
    results.json's `comparison`, when it was computed for this baseline; else None."""
    row = _get(results, "comparison", direction)
    if not isinstance(row, Mapping) or row.get("best_name") != key:
        return None
    diff, p = _num(row.get("difference")), _num(row.get("p_value"))
    ci = row.get("difference_ci")
    if diff is None or p is None or not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return None
    lo, hi = _num(ci[0]), _num(ci[1])
    if lo is None or hi is None:
        return None
    verdict = "significant" if p < 0.05 else "within noise"
    return (f" (paired on the same test images: difference {diff:+.3f}, 95 % interval {lo:+.3f} to {hi:+.3f}, "
            f"p = {p:.2g}: {verdict})")


def small_test_warning(results: Mapping[str, Any]) -> str | None:
    """A warning for test sets under `SMALL_TEST` images (None otherwise)."""
    n = test_size(results)
    if n is None or n >= SMALL_TEST:
        return None
    top1 = _num(_get(results, "test", "image_to_neural", "top1"))
    width = ""
    if top1 is not None:
        lo, hi = shown_interval(top1, n)
        width = f" (top-1 image → neural {top1:.3f}, 95 % interval {lo:.3f}–{hi:.3f})"
    return (f"Only {n} test images{width}: with fewer than {SMALL_TEST}, differences of several points between "
            f"the model and a baseline can be noise. More images per subject give firmer numbers.")


def top1_bar_rows(results: Mapping[str, Any]) -> dict[str, dict[str, tuple[float | None, float | None, float | None]]]:
    """{name: {direction: (top1, lo, hi)}} for the model and every baseline present (bar chart)."""
    n = test_size(results)
    baselines = results.get("baselines") or {}
    out = {"model": {d: top1_with_interval(results.get("test") or {}, d, n) for d in DIRECTIONS}}
    for ref in present_references(results):
        out[ref.label] = {d: top1_with_interval(baselines[ref.key], d, n) for d in DIRECTIONS}
    return out


def chance_top1(results: Mapping[str, Any]) -> float | None:
    n = test_size(results)
    return _num(_get(results, "test", "chance_top1")) or ((1.0 / n) if n else None)


def best_linear_columns(results: Mapping[str, Any]) -> dict[str, Any]:
    """Home's columns: the best linear readout's top-1 per direction and which baseline it is."""
    out: dict[str, Any] = {}
    names = []
    for direction, short in SHORT_DIRECTIONS.items():
        ref, v = best_linear(results, direction)
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


@dataclass(frozen=True)
class Encoding:
    """A median-FEVE summary of `results["encoding"]` (model, or ridge on the run's backbone features)."""

    median: float | None
    q25: float | None
    q75: float | None
    n_included: int | None
    n_neurons: int | None
    min_fev: float

    def detail(self) -> str:
        """'q25–q75 0.31–0.55 · 180 of 200 neurons (FEV ≥ 0.15)'."""
        parts = []
        if self.q25 is not None and self.q75 is not None:
            parts.append(f"q25–q75 {self.q25:.2f}–{self.q75:.2f}")
        if self.n_included is not None and self.n_neurons is not None:
            parts.append(f"{self.n_included:,} of {self.n_neurons:,} neurons (FEV ≥ {self.min_fev:g})")
        return " · ".join(parts)


def _encoding(block: Any) -> Encoding | None:
    if not isinstance(block, Mapping):
        return None
    n_inc, n_all = block.get("n_included"), block.get("n_neurons")
    return Encoding(_num(block.get("median")), _num(block.get("q25")), _num(block.get("q75")),
                    int(n_inc) if isinstance(n_inc, int) else None, int(n_all) if isinstance(n_all, int) else None,
                    _num(block.get("min_fev")) or 0.15)


def encoding_summary(results: Mapping[str, Any]) -> dict[str, Encoding] | None:
    """{"model": Encoding, "ridge_backbone": Encoding (when present)} from `results["encoding"]`; None
    for runs without one (older runs, subjects without repeats)."""
    enc = results.get("encoding") if isinstance(results, Mapping) else None
    model = _encoding(enc.get("model")) if isinstance(enc, Mapping) else None
    if model is None:
        return None
    out = {"model": model}
    backbone = _encoding(enc.get("ridge_backbone"))
    if backbone is not None:
        out["ridge_backbone"] = backbone
    return out


def feve_per_neuron(results: Mapping[str, Any]) -> list[float | None] | None:
    """The model's FEVE per neuron (None entries: no variance), or None without `encoding`."""
    values = _get(results, "encoding", "model", "per_neuron")
    if not isinstance(values, list):
        return None
    return [_num(v) for v in values]
