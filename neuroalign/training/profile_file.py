"""`Profile`: a subject's stored alignment profile (`<subject>/profile.json`, written by
`training.profile.save_profile`, merged by `jobs.profile_worker.merge_with_stored`), typed.

`Profile.from_json(d)` reads the dict once: every field is checked for its type and falls back to
what the Image models page showed when it is missing: sizes and counts None
(shown as "?"), `complete` True, no rows, no best layer, no reference lines. A field of the wrong
type reads as missing, and a row that is not an object reads as an unscored layer (`NOT_A_ROW`,
keeping its place: `best` indexes the rows), so an odd file gives a summary and table with less in
them, not a traceback. The page's table and summary (`ui.profile_view`) and its charts
(`plots.profile`) all read it through this class; `raw` keeps the dict as read.

Light on purpose (no torch, no numpy): the dashboard imports it to draw a page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from neuroalign.config import layer_label

DIRECTIONS = ("image_to_neural", "neural_to_image")
SPLITS = ("train", "val", "test")
NOT_A_ROW = "not a layer record (profile.json is damaged)"  # a row that is not a JSON object keeps its place


def finite(v: Any) -> float | None:
    """`v` as a float when it is a finite JSON number (not a bool), else None."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def integer(v: Any) -> int | None:
    """`v` when it is a JSON integer (not a bool), else None."""
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def mapping(v: Any) -> Mapping[str, Any]:
    """`v` when it is a JSON object, else an empty one."""
    return v if isinstance(v, Mapping) else {}


def interval(v: Any) -> tuple[float, float] | None:
    """`v` as (low, high) when it is a JSON list of two finite numbers, else None."""
    if isinstance(v, list) and len(v) == 2 and all(finite(x) is not None for x in v):
        return float(v[0]), float(v[1])
    return None


@dataclass(frozen=True)
class LayerScores:
    """One split (val or test) of a profiled layer: top-1 per direction (and its 95 % interval), the
    split's size and chance."""

    image_to_neural: float | None = None  # top-1
    neural_to_image: float | None = None
    n: int | None = None
    chance_top1: float | None = None
    intervals: Mapping[str, tuple[float, float] | None] = field(default_factory=dict)  # direction -> top-1 CI

    @classmethod
    def from_json(cls, d: Any) -> LayerScores:
        d = mapping(d)
        i2n, n2i = (finite(mapping(d.get(k)).get("top1")) for k in DIRECTIONS)
        return cls(i2n, n2i, integer(d.get("n")), finite(d.get("chance_top1")),
                   {k: interval(mapping(d.get(k)).get("top1_ci")) for k in DIRECTIONS})

    def top1(self, direction: str) -> float | None:
        return getattr(self, direction) if direction in DIRECTIONS else None

    def top1_ci(self, direction: str) -> tuple[float, float] | None:
        return self.intervals.get(direction)


@dataclass(frozen=True)
class LayerFeve:
    """A layer's encoding score: median FEVE over the neurons with enough explainable variance, its
    quartiles, and how many neurons that median is over."""

    median: float | None = None
    q25: float | None = None
    q75: float | None = None
    n_included: int | None = None
    n_neurons: int | None = None

    @classmethod
    def from_json(cls, d: Any) -> LayerFeve | None:
        """None when the row has no FEVE (a subject without repeats: absent, empty or not an object)."""
        if not isinstance(d, Mapping) or not d:
            return None
        return cls(finite(d.get("median")), finite(d.get("q25")), finite(d.get("q75")), integer(d.get("n_included")),
                   integer(d.get("n_neurons")))

    @property
    def neurons(self) -> str:
        """'180 of 200' ('' when either count is missing)."""
        if self.n_included is None or self.n_neurons is None:
            return ""
        return f"{self.n_included} of {self.n_neurons}"


@dataclass(frozen=True)
class ProfileRow:
    """One profiled layer: which (model, stage, block), its val and test identification, val MRR (what
    the best layer is chosen by), FEVE, seconds; or `error` for a layer that could not be scored."""

    model: str | None = None
    stage: int | None = None
    block: int | None = None
    label: str | None = None
    val: LayerScores = field(default_factory=LayerScores)
    test: LayerScores = field(default_factory=LayerScores)
    val_mrr: float | None = None
    feve: LayerFeve | None = None
    seconds: float | None = None
    error: str = ""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProfileRow:
        model, label = d.get("model"), d.get("label")
        return cls(model=model if isinstance(model, str) else None, stage=integer(d.get("stage")),
                   block=integer(d.get("block")), label=label if isinstance(label, str) else None, val=LayerScores.from_json(d.get("val")),
                   test=LayerScores.from_json(d.get("test")), val_mrr=finite(d.get("val_mrr")),
                   feve=LayerFeve.from_json(d.get("feve")), seconds=finite(d.get("seconds")),
                   error=str(d.get("error") or ""))

    @property
    def scored(self) -> bool:
        return self.val_mrr is not None

    def scores(self, split: str) -> LayerScores:
        """The val or test scores (ValueError for another split name)."""
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        return self.val if split == "val" else self.test

    @property
    def name(self) -> str:
        """The layer's name in charts and tables (`config.layer_label`)."""
        return layer_label(str(self.model), self.stage, self.block)


@dataclass(frozen=True)
class Profile:
    """A subject's alignment profile (`training.profile.alignment_profile`)."""

    rows: tuple[ProfileRow, ...] = ()
    best_overall: int | None = None  # index into rows: the best val MRR of all
    best_per_model: Mapping[str, int] = field(default_factory=dict)  # model -> index into rows
    reference: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)  # "ridge" -> direction -> top-1
    split: Mapping[str, int | None] = field(default_factory=lambda: dict.fromkeys(SPLITS))  # "test" -> images
    subject: str | None = None
    data_hash: str | None = None
    n_images: int | None = None
    n_neurons: int | None = None
    layers: str | None = None  # "stages" or "all"
    complete: bool = True
    stopped: str | None = None  # why an incomplete profile ended ("stopped", "time budget")
    elapsed_s: float | None = None
    kept_from_stored: tuple[str, ...] = ()  # models whose rows came from an earlier profile of the same data
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Any) -> Profile:
        if isinstance(d, Profile):
            return d
        d = mapping(d)
        rows = d.get("rows")
        best = mapping(d.get("best"))
        kept = d.get("kept_from_stored")
        text = {k: (v if isinstance(v := d.get(k), str) else None) for k in ("subject", "data_hash", "layers")}
        return cls(rows=tuple(ProfileRow.from_json(r) if isinstance(r, Mapping) else ProfileRow(error=NOT_A_ROW)
                              for r in rows) if isinstance(rows, list) else (),
                   best_overall=integer(best.get("overall")),
                   best_per_model={str(k): v for k, v in mapping(best.get("per_model")).items()
                                   if integer(v) is not None},
                   reference={str(k): {x: finite(v.get(x)) for x in DIRECTIONS}
                              for k, v in mapping(d.get("reference")).items() if isinstance(v, Mapping)},
                   split={k: integer(mapping(d.get("split")).get(k)) for k in SPLITS},
                   **text, n_images=integer(d.get("n_images")), n_neurons=integer(d.get("n_neurons")),
                   complete=bool(d.get("complete", True)), stopped=str(d["stopped"]) if d.get("stopped") else None,
                   elapsed_s=finite(d.get("elapsed_s")),
                   kept_from_stored=tuple(map(str, kept)) if isinstance(kept, list) else (), raw=d)

    @property
    def best_row(self) -> ProfileRow | None:
        """The best layer overall (chosen on validation), None when the profile names none."""
        i = self.best_overall
        return self.rows[i] if i is not None and 0 <= i < len(self.rows) else None

    def mark(self, i: int) -> str:
        """"★" for the best layer overall, "◯" for the best of its model, "" otherwise."""
        if i == self.best_overall:
            return "★"
        return "◯" if i in self.best_per_model.values() else ""

    @property
    def models(self) -> list[str | None]:
        """The image models profiled, in row order."""
        return list(dict.fromkeys(r.model for r in self.rows))

    @property
    def has_feve(self) -> bool:
        """Whether any row has a median FEVE (the subject has repeats)."""
        return any(r.feve is not None and r.feve.median is not None for r in self.rows)

    def reference_top1(self, name: str, direction: str) -> float | None:
        """A reference line's test top-1 ("ridge", "ridge_random", "repeat", "oracle"), None when absent."""
        line = self.reference.get(name)
        return None if line is None else line.get(direction)
