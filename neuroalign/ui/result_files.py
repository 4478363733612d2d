"""Typed, read-only views of the result files the pages show: a run's `results.json` (`RunResults`)
and a shared run's `shared_results.json` (`SharedResults`).

Each reader is a frozen dataclass built once by `from_json(d)`, which checks every field's type and
falls back to what the pages showed for a missing or old field, so the views ask plain questions
(`results.test.top1("image_to_neural")`) instead of chaining `.get(...) or {}`. A field of the wrong
type reads as missing: a damaged file gives the pages' fallback, never a traceback. Fields are read
with the profile reader's `finite`, `integer` and `mapping` (`training.profile_file`): a number must be
a finite JSON number (a string or a bool reads as missing), as in profile.json.

No streamlit here: the readers are plain data, testable without a page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from neuroalign.training.profile_file import finite, integer, mapping  # one set of JSON field readers
from neuroalign.training.runs import LINEAR_READOUTS

DIRECTION_KEYS = ("image_to_neural", "neural_to_image")
RETRIEVAL_METRICS = ("top1", "top5", "top10", "mean_rank", "median_rank", "mrr")
CHANCE_KEYS = ("chance_top1", "chance_top5", "chance_top10", "chance_mean_rank")
DEFAULT_MIN_FEV = 0.15  # the FEV threshold of the median when results.json does not record it


def _pair(v: Any) -> tuple[float | None, float | None] | None:
    """A recorded `[lo, hi]` as numbers (None where a bound is not one); None unless a 2-list."""
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return finite(v[0]), finite(v[1])
    return None


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


# ---- results.json ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DirectionMetrics:
    """One direction of a metrics block (`test`, or a baseline): the retrieval metrics and top-1's
    recorded 95 % interval (None when absent or not a pair)."""

    top1: float | None = None
    top5: float | None = None
    top10: float | None = None
    mean_rank: float | None = None
    median_rank: float | None = None
    mrr: float | None = None
    top1_ci: tuple[float | None, float | None] | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DirectionMetrics:
        return cls(**{m: finite(d.get(m)) for m in RETRIEVAL_METRICS}, top1_ci=_pair(d.get("top1_ci")))

    def metric(self, name: str) -> float | None:
        return getattr(self, name) if name in RETRIEVAL_METRICS else None


@dataclass(frozen=True)
class MetricsBlock:
    """`results["test"]` or one `results["baselines"][name]`: the directions recorded as objects, the
    test size, the chance levels, old runs' block-level `top1_ci[direction]`, a baseline's `rows`."""

    directions: Mapping[str, DirectionMetrics] = field(default_factory=dict)
    n: float | None = None
    chance: Mapping[str, float | None] = field(default_factory=lambda: dict.fromkeys(CHANCE_KEYS))  # every key
    block_top1_ci: Mapping[str, tuple[float | None, float | None] | None] = field(
        default_factory=lambda: dict.fromkeys(DIRECTION_KEYS))
    rows: str | None = None

    @classmethod
    def from_json(cls, d: Any) -> MetricsBlock:
        """An empty block for anything but a JSON object."""
        d = mapping(d)
        cis = mapping(d.get("top1_ci"))
        return cls(directions={k: DirectionMetrics.from_json(d[k]) for k in DIRECTION_KEYS
                               if isinstance(d.get(k), Mapping)},
                   n=finite(d.get("n")), chance={k: finite(d.get(k)) for k in CHANCE_KEYS},
                   block_top1_ci={k: _pair(cis.get(k)) for k in DIRECTION_KEYS}, rows=_text(d.get("rows")))

    def metric(self, direction: str, name: str) -> float | None:
        m = self.directions.get(direction)
        return None if m is None else m.metric(name)

    def top1(self, direction: str) -> float | None:
        return self.metric(direction, "top1")

    def recorded_top1_ci(self, direction: str) -> tuple[float | None, float | None] | None:
        """The direction's own `top1_ci` when it is a pair, else the block-level one of old runs."""
        m = self.directions.get(direction)
        own = None if m is None else m.top1_ci
        return own if own is not None else self.block_top1_ci.get(direction)


@dataclass(frozen=True)
class Comparison:
    """One direction of `results["comparison"]`: the model against the best linear readout, paired on
    the same test images."""

    best_name: str | None = None
    difference: float | None = None
    p_value: float | None = None
    difference_ci: tuple[float | None, float | None] | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Comparison:
        return cls(_text(d.get("best_name")), finite(d.get("difference")), finite(d.get("p_value")),
                   _pair(d.get("difference_ci")))


@dataclass(frozen=True)
class Encoding:
    """A median-FEVE summary of `results["encoding"]` (model, or ridge on the run's backbone features)."""

    median: float | None
    q25: float | None
    q75: float | None
    n_included: int | None
    n_neurons: int | None
    min_fev: float

    @classmethod
    def from_json(cls, d: Any) -> Encoding | None:
        """None for anything but a JSON object; `min_fev` 0.15 when not recorded."""
        if not isinstance(d, Mapping):
            return None
        return cls(finite(d.get("median")), finite(d.get("q25")), finite(d.get("q75")), integer(d.get("n_included")),
                   integer(d.get("n_neurons")), finite(d.get("min_fev")) or DEFAULT_MIN_FEV)

    def detail(self) -> str:
        """'q25–q75 0.31–0.55 · 180 of 200 neurons (FEV ≥ 0.15)'."""
        parts = []
        if self.q25 is not None and self.q75 is not None:
            parts.append(f"q25–q75 {self.q25:.2f}–{self.q75:.2f}")
        if self.n_included is not None and self.n_neurons is not None:
            parts.append(f"{self.n_included:,} of {self.n_neurons:,} neurons (FEV ≥ {self.min_fev:g})")
        return " · ".join(parts)


@dataclass(frozen=True)
class RunResults:
    """The parts of a run's `results.json` the pages read (written by `evaluation.evaluate`, and per
    subject by `evaluation.shared_eval.subject_results`). Every part is optional: old runs lack
    `comparison`, `encoding`, most baselines and `top1_ci`."""

    test: MetricsBlock = field(default_factory=MetricsBlock)
    has_test: bool = False  # results.json holds a non-empty "test"
    baselines: Mapping[str, MetricsBlock] = field(default_factory=dict)  # the entries that are objects
    comparison: Mapping[str, Comparison] = field(default_factory=dict)  # direction -> paired comparison
    encoding: Mapping[str, Encoding] = field(default_factory=dict)  # "model", "ridge_backbone"
    feve_per_neuron: tuple[float | None, ...] | None = None  # the model's FEVE per neuron

    @classmethod
    def from_json(cls, d: Any) -> RunResults:
        """An empty `RunResults` for None (no results yet) or anything but a JSON object."""
        if isinstance(d, RunResults):
            return d
        d = mapping(d)
        baselines = mapping(d.get("baselines"))
        comparison = mapping(d.get("comparison"))
        encoding = mapping(d.get("encoding"))
        per_neuron = mapping(encoding.get("model")).get("per_neuron")
        return cls(test=MetricsBlock.from_json(d.get("test")), has_test=bool(d.get("test")),
                   baselines={k: MetricsBlock.from_json(v) for k, v in baselines.items() if isinstance(v, Mapping)},
                   comparison={k: Comparison.from_json(comparison[k]) for k in DIRECTION_KEYS
                               if isinstance(comparison.get(k), Mapping)},
                   encoding={k: e for k in ("model", "ridge_backbone")
                             if (e := Encoding.from_json(encoding.get(k))) is not None},
                   feve_per_neuron=tuple(finite(v) for v in per_neuron) if isinstance(per_neuron, list) else None)

    @property
    def test_size(self) -> int | None:
        """The number of test images (None when not recorded or zero)."""
        return int(self.test.n) if self.test.n else None

    def baseline(self, key: str) -> MetricsBlock | None:
        """A baseline with metrics: recorded as an object whose image → neural entry is one."""
        block = self.baselines.get(key)
        return block if block is not None and "image_to_neural" in block.directions else None

    def best_linear_top1(self, direction: str) -> float | None:
        """The highest test top-1 of the linear readouts (ridge from pixels, random features, backbone)
        in `direction`, as `training.runs.best_linear` picks it (any baseline recording it counts)."""
        scores = [v for k in LINEAR_READOUTS if k in self.baselines
                  and (v := self.baselines[k].top1(direction)) is not None]
        return max(scores) if scores else None


# ---- shared_results.json -----------------------------------------------------------------------


@dataclass(frozen=True)
class PairDirection:
    """One way of a cross-subject pair (a_to_b, b_to_a) or of a subject's repeat scale."""

    top1: float | None = None
    top1_ci: tuple[float | None, float | None] = (None, None)
    top5: float | None = None
    mrr: float | None = None
    mean_rank: float | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PairDirection:
        ci = d.get("top1_ci")
        lo, hi = (list(ci) + [None, None])[:2] if isinstance(ci, (list, tuple)) else (None, None)
        return cls(finite(d.get("top1")), (finite(lo), finite(hi)), finite(d.get("top5")), finite(d.get("mrr")),
                   finite(d.get("mean_rank")))


@dataclass(frozen=True)
class PairMetrics:
    """Retrieval between two sets of responses to the same images (`shared_eval._pair_metrics`)."""

    a_to_b: PairDirection | None = None
    b_to_a: PairDirection | None = None
    n: int | None = None  # images both saw (candidates per query)
    chance_top1: float | None = None

    @classmethod
    def from_json(cls, d: Any) -> PairMetrics | None:
        if not isinstance(d, Mapping):
            return None
        ways = {k: PairDirection.from_json(d[k]) if isinstance(d.get(k), Mapping) else None
                for k in ("a_to_b", "b_to_a")}
        n = finite(d.get("n"))
        return cls(**ways, n=None if n is None else int(n), chance_top1=finite(d.get("chance_top1")))


@dataclass(frozen=True)
class SubjectPair:
    """Two subjects of a shared run compared through the shared space: mean responses, and single
    trials (repeat 1 of each) when both have repeats."""

    a: str
    b: str
    mean: PairMetrics
    single_trial: PairMetrics | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SubjectPair:
        return cls(str(d.get("a")), str(d.get("b")), PairMetrics.from_json(d) or PairMetrics(),
                   PairMetrics.from_json(d.get("single_trial")))


@dataclass(frozen=True)
class SkippedPair:
    a: str | None
    b: str | None
    reason: str | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SkippedPair:
        a, b, reason = (d.get(k) for k in ("a", "b", "reason"))
        return cls(None if a is None else str(a), None if b is None else str(b),
                   None if reason is None else str(reason))


@dataclass(frozen=True)
class CrossSubject:
    """`cross_subject` of shared_results.json (`evaluation.shared_eval.cross_subject`): every pair
    compared, each subject's repeat 1 → repeat 2 scale, the pairs not compared and why."""

    pairs: tuple[SubjectPair, ...] = ()
    repeat_scale: Mapping[str, PairMetrics] = field(default_factory=dict)
    skipped: tuple[SkippedPair, ...] = ()

    @classmethod
    def from_json(cls, d: Any) -> CrossSubject:
        """Empty for None or anything but a JSON object; entries that are not objects are left out."""
        if isinstance(d, CrossSubject):
            return d
        d = mapping(d)
        pairs, scale, skipped = d.get("pairs"), mapping(d.get("repeat_scale")), d.get("skipped")
        return cls(pairs=tuple(SubjectPair.from_json(p) for p in pairs if isinstance(p, Mapping))
                   if isinstance(pairs, list) else (),
                   repeat_scale={str(k): m for k, v in scale.items() if (m := PairMetrics.from_json(v)) is not None},
                   skipped=tuple(SkippedPair.from_json(s) for s in skipped if isinstance(s, Mapping))
                   if isinstance(skipped, list) else ())


@dataclass(frozen=True)
class SharedSubject:
    """One subject's line of shared_results.json (`training.shared_runs._per_subject`); its full
    results are in `subjects/<name>/results.json` (`RunResults`)."""

    n_test: int | None = None
    chance_top1: float | None = None
    top1: Mapping[str, float | None] = field(default_factory=dict)  # direction -> test top-1
    top1_ci: Mapping[str, tuple[float | None, float | None] | None] = field(default_factory=dict)
    results: str | None = None  # the subject's results.json, relative to the run folder

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SharedSubject:
        n = finite(d.get("n_test"))
        return cls(None if n is None else int(n), finite(d.get("chance_top1")),
                   {k: finite(d.get(f"top1_{k}")) for k in DIRECTION_KEYS},
                   {k: _pair(d.get(f"top1_ci_{k}")) for k in DIRECTION_KEYS}, _text(d.get("results")))


@dataclass(frozen=True)
class SharedResults:
    """A shared or adapted run's `shared_results.json` (`training.shared_runs`)."""

    kind: str | None = None  # "shared" or "adapted"
    subjects: Mapping[str, SharedSubject] = field(default_factory=dict)
    cross_subject: CrossSubject = field(default_factory=CrossSubject)
    elapsed_s: float | None = None

    @classmethod
    def from_json(cls, d: Any) -> SharedResults:
        """Empty for None (not written yet, or damaged: the loader reports why) or a non-object."""
        d = mapping(d)
        subjects = mapping(d.get("subjects"))
        return cls(_text(d.get("kind")),
                   {str(k): SharedSubject.from_json(v) for k, v in subjects.items() if isinstance(v, Mapping)},
                   CrossSubject.from_json(d.get("cross_subject")), finite(d.get("elapsed_s")))
