"""Image model "auto": choose the image features per subject on its VALIDATION images only.

Like RidgeCV picks alpha, the default picks which frozen feature bank and layer the image tower
reads: for every candidate of `AUTO_CANDIDATES` the features of all images are computed (and cached,
so the winner's are reused by the trainer), the closed-form start (`linear_start.solve_start`:
ridge on the train images, reduced rank, whitening, each chosen on val) is fitted in the dual form
on the standardised Gram matrix of the train and val images, and the candidate with the best mean
val MRR of both retrieval directions wins (ties: val top-1, then the order below). Only the winner's
start is refitted with cross-validated settings (`linear_start.CV_FOLDS`, as every training run's
start) and gets feature-space weights (`DualStart.primal`). The best two candidates also compete read
side by side (`COMBINE_TOP`), scored on the sum of their Gram matrices (each bank standardised on its
own), with no new product.
The test images play no part. The candidates span the classic V1 model, the strongest simple
baseline, the research code's backbone and a network trained on natural images:

* ``random_rectified`` at stage 2 (the random filters at half the image's resolution: better than the
  full resolution on all three selection subjects' val) and stage 1 (the bank of the random-feature
  ridge baseline),
* ``v1_gabor`` (the Gabor quadrature bank),
* ``ds_net_small`` stage 1 block 3, squared (the previous default's features),
* ``efficientnet_lite0`` (ImageNet weights) at the ends of stages 2, 3 and 4 (its block outputs as they
  are: signed, linear bottlenecks; better than squared on the selection subjects' val).

What was tried and why these: docs/RESULTS.md ("How the image features are chosen").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from neuroalign.config import AUTO, TrainConfig, layer_label
from neuroalign.linalg import standardised_gram, standardiser
from neuroalign.models import ImageTower, cached_features
from neuroalign.training.linear_start import CV_FOLDS, DualStart, LinearStart, solve_start

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    backbone: str
    stage: int
    block: int
    transform: str

    @property
    def label(self) -> str:
        if "+" in self.backbone:  # a combination names its parts' layers itself
            return self.backbone
        return layer_label(self.backbone, self.stage, self.block, self.transform)


# the best two candidates read side by side compete too (their features concatenated); with 3, the best
# three as well. 3 was tried on 2026-12-04: it gained on sel-surround (test MRR 0.726 -> 0.793) but the
# report subjects' quality runs lost with it on report-B and report-E (val sets of 120 and 50 images
# cannot tell the triple from the pair): back to 2 (docs/RESULTS.md)
COMBINE_TOP = 2
# the channels of a typical candidate (random_rectified's 64, EfficientNet-Lite0 stage 2's 24, the
# Gabor bank's 128): the evaluation's time is estimated for features this wide on the readout grid
# before the choice (`Trainer._choose_image_model`)
TYPICAL_CHANNELS = 64
NUMBER_WORDS = {2: "two", 3: "three"}

# Ordered so that under a tight time budget the cheap candidates that won on the selection subjects
# are tried first (candidates not expected to end within half the budget are skipped, `ChoiceBudget`):
# random rectified filters at half resolution (the cheapest bank: a quarter of the full resolution's
# convolutions; val MRR of the start 0.674 -> 0.743 on sel-subunit, 0.954 -> 0.966 on sel-gabor, 0.704 -> 0.794 on
# sel-surround against the full resolution), then EfficientNet-Lite0 stage 2 (best on sel-surround's
# profile, val MRR 0.788, and cheap: two stages of a small network) -- the quality run of sel-surround
# had once skipped it at half the budget and chosen the random filters -- then the baseline's bank.
AUTO_CANDIDATES: tuple[Candidate, ...] = (
    Candidate("random_rectified", 2, 1, "none"),
    Candidate("efficientnet_lite0", 2, 2, "none"),
    Candidate("random_rectified", 1, 1, "none"),
    Candidate("v1_gabor", 1, 1, "none"),
    Candidate("ds_net_small", 1, 3, "square"),
    Candidate("efficientnet_lite0", 3, 2, "none"),
    Candidate("efficientnet_lite0", 4, 3, "none"),
)


@dataclass
class ImageChoice:
    """The winner, its closed-form start (reused by the trainer) and what every candidate scored."""

    candidate: Candidate
    start: LinearStart
    report: dict[str, Any] = field(default_factory=dict)


def candidate_tower(config: TrainConfig, candidate: Candidate) -> ImageTower:
    """The readout image tower of `config` reading `candidate`'s features."""
    image = config.image
    return ImageTower(backbone=candidate.backbone, stage=candidate.stage, block=candidate.block, mode="frozen",
                      init_seed=image.init_seed, head="readout", grid=tuple(image.grid),
                      n_components=config.n_components, transform=candidate.transform)


def choose_image_features(config: TrainConfig, subject, split: dict[str, np.ndarray], responses: np.ndarray,
                          cache_dir=None, device: torch.device | str = "cpu",
                          candidates: Sequence[Candidate] = AUTO_CANDIDATES,
                          status: Callable[[str], None] | None = None,
                          deadline: float | None = None, combine: bool = True, shrink: float = 1.0,
                          cv_deadline: float | None = None) -> ImageChoice:
    """Score every candidate by its closed-form start on the val images (module docstring).

    `responses (N, K)`: the subject's responses normalised with train statistics. `deadline`
    (time.monotonic() value): a candidate is started only when it is expected to end by then
    (`ChoiceBudget`: expected to cost as much as the costliest one scored so far; at least one is always
    scored); the others are listed as skipped. With `combine`, the best two candidates read side by side
    (`image_models.CombinedModel`, their features concatenated) compete too (and, with `COMBINE_TOP` 3,
    the best three; `_combinations`), each only if its fit is expected to end by `deadline`.
    `cv_deadline`: the winner's start has its settings cross-validated only when that is expected to end
    by then (`CV_FOLDS` fits of the winner's size); else the val split's settings are kept, and its
    report says so. `shrink`: the start's damping of the population-mean direction
    (`linear_start.population_shrink`). Returns the winner."""
    tr = np.asarray(split["train"], dtype=np.int64)
    va = np.asarray(split["val"], dtype=np.int64)
    responses = np.asarray(responses, dtype=np.float64)
    rows: list[dict[str, Any]] = []
    best: tuple[tuple[float, float, int], Candidate, _Scored] | None = None
    scored: list[tuple[tuple[float, float, int], int, Candidate, _Scored]] = []
    t_all = time.monotonic()
    budget = ChoiceBudget(deadline)
    for i, cand in enumerate(candidates):
        if best is not None and not budget.allows(budget.candidate_s):
            rows.append({"model": cand.label, "skipped": "time budget"})
            continue
        t0 = time.monotonic()
        if status is not None:
            status(f"choosing the image model: {cand.label} ({i + 1}/{len(candidates)})")
        try:
            tower = candidate_tower(config, cand).to(device)
            progress = None if status is None else (
                lambda done, total, c=cand, i=i: status(f"choosing the image model: {c.label} ({i + 1}/"
                                                        f"{len(candidates)}), features {done:,}/{total:,} images"))
            # computed on `device` (a GPU when training uses one), kept on the CPU for the closed-form fits
            feats = cached_features(tower, subject.images, subject.data_hash, cache_dir=cache_dir, device=device,
                                    progress=progress).cpu()
        except ValueError as exc:  # e.g. images too small for this model's layer: the others still compete
            rows.append({"model": cand.label, "error": str(exc)})
            continue
        t_feat = time.monotonic() - t0
        t_fit = time.monotonic()
        fit = _Scored.fit(feats, tr, va, responses, config.n_components, shrink)
        budget.spent(time.monotonic() - t0, time.monotonic() - t_fit)
        rep = fit.dual.report
        key = (float(rep["val_mrr_mean"]), float(rep["val_top1_mean"]), -i)
        rows.append({"model": cand.label, "backbone": cand.backbone, "stage": cand.stage, "block": cand.block,
                     "transform": cand.transform, "val_mrr": rep["val_mrr_mean"], "val_top1": rep["val_top1_mean"],
                     "n_features": fit.n_features, "features_s": round(t_feat, 2),
                     "fit_s": round(time.monotonic() - t0 - t_feat, 2)})
        logger.info("image model %s: val MRR %.3f, top-1 %.3f", cand.label, key[0], key[1])
        if best is None or key > best[0]:
            best = (key, cand, fit)
        scored.append((key, i, cand, fit))
        scored = sorted(scored, key=lambda t: t[0], reverse=True)[:COMBINE_TOP]  # only these keep their features
    if combine and len(scored) >= 2:
        best = _try_combinations(config, subject, scored, responses, tr, va, rows, best, cache_dir, status, budget,
                                 shrink)
    if best is None:
        raise ValueError("no image model could read these images: " +
                         "; ".join(f"{r['model']}: {r.get('error', r.get('skipped'))}" for r in rows))
    _, cand, fit = best
    report = {"chosen": cand.label, "backbone": cand.backbone, "stage": cand.stage, "block": cand.block,
              "transform": cand.transform, "criterion": "val MRR of the closed-form start (mean of both directions)",
              "candidates": rows, "elapsed_s": round(time.monotonic() - t_all, 2)}
    # cross-validating the winner's settings costs about CV_FOLDS fits of its size
    cross_validate = ChoiceBudget(cv_deadline).allows(CV_FOLDS * budget.fit_s)
    start = fit.start(tr, va, responses, config.n_components, shrink, cross_validate=cross_validate)
    return ImageChoice(cand, start, report)


class ChoiceBudget:
    """What `choose_image_features` may still start before its deadline: a step is started when the
    time left is at least its expected cost -- that of the costliest candidate scored so far (features
    and fit; `candidate_s`) or of the slowest fit (`fit_s`; a side-by-side read or a cross-validation
    repeats fits). Costs differ by candidate (a full-resolution bank is several times a pyramid level),
    so the costliest rather than the mean keeps the overrun of a tight budget small."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.candidate_s = 0.0
        self.fit_s = 0.0

    def spent(self, candidate_s: float, fit_s: float) -> None:
        self.candidate_s = max(self.candidate_s, candidate_s)
        self.fit_s = max(self.fit_s, fit_s)

    def allows(self, expected_s: float) -> bool:
        return self.deadline is None or time.monotonic() + expected_s <= self.deadline


@dataclass
class _Scored:
    """A candidate's features `(N, ...)`, their train standardisation, the standardised Gram rows of
    the train and val images against the train images, and the dual start fitted on them."""

    feats: torch.Tensor
    mean: np.ndarray
    scale: np.ndarray
    gram: np.ndarray  # (n_train + n_val, n_train)
    dual: DualStart

    @property
    def n_features(self) -> int:
        return len(self.mean)

    @classmethod
    def fit(cls, feats: torch.Tensor, tr: np.ndarray, va: np.ndarray, responses: np.ndarray,
            n_components: int, shrink: float = 1.0) -> "_Scored":
        x = feats.flatten(1).numpy()
        mean, scale = standardiser(x, rows=tr)
        gram = standardised_gram(x, mean, scale, b_rows=tr, rows=np.concatenate([tr, va]))
        return cls(feats, mean, scale, gram, _solve(gram, len(tr), responses, tr, va, n_components, shrink))

    def start(self, tr: np.ndarray, va: np.ndarray, responses: np.ndarray, n_components: int,
              shrink: float = 1.0, cross_validate: bool = True) -> LinearStart:
        """The training run's start on these features, with feature-space weights (what the trainer
        copies into the towers): settings by cross-validation on train + val (`CV_FOLDS`; the
        candidates were compared by the val split alone), or, with `cross_validate` False (the time
        budget left no room for it), the val split's settings already fitted."""
        x = self.feats.flatten(1).numpy()
        if not cross_validate:
            self.dual.report["selection"] = "val split (the time budget left no time for cross-validation)"
            return self.dual.primal(x[tr], self.mean, self.scale)
        n = len(tr)
        dual = solve_start(self.gram[:n], self.gram[n:], responses[tr], responses[va], n_components,
                           gram_val_val=standardised_gram(x, self.mean, self.scale, b_rows=va, rows=va),
                           folds=CV_FOLDS, shrink=shrink)
        return dual.primal(x[tr], self.mean, self.scale)


def _solve(gram: np.ndarray, n_train: int, responses: np.ndarray, tr: np.ndarray, va: np.ndarray,
           n_components: int, shrink: float = 1.0) -> DualStart:
    """The val-split start from Gram rows (train images first, then val) against the train images."""
    return solve_start(gram[:n_train], gram[n_train:], responses[tr], responses[va], n_components, shrink=shrink)


def _combinations(scored: list) -> list[list]:
    """The side-by-side reads tried, in this order: the best two candidates, then (`COMBINE_TOP` 3) the
    best three; `scored` is best first. Each combination's parts in candidate order (a stable name)."""
    return [sorted(scored[:k], key=lambda t: t[1]) for k in range(2, min(len(scored), COMBINE_TOP) + 1)]


def _try_combinations(config, subject, scored, responses, tr, va, rows, best, cache_dir, status,
                      budget: "ChoiceBudget | None" = None, shrink: float = 1.0):
    """Score the best candidates read side by side (their standardised features concatenated: the Gram
    matrix is the sum of theirs, so no new product): the best two (and with `COMBINE_TOP` 3 the best
    three; `_combinations`), each only if `budget` allows one more fit. The winning combination's concatenated
    features are kept in the cache under its own key (so the trainer reuses them). Returns the new best."""
    from neuroalign.models.feature_cache import store_features
    from neuroalign.models.image_models import combination_name

    winner = None
    groups = _combinations(scored)
    for group in groups:
        if budget is not None and not budget.allows(budget.fit_s):
            rows.append({"model": " + ".join(c.label for _, _, c, _ in group), "skipped": "time budget"})
            continue
        name = combination_name([(c.backbone, c.stage, c.block, c.transform) for _, _, c, _ in group])
        cand = Candidate(name, 1, 1, "none")
        if status is not None:
            status(f"choosing the image model: the {NUMBER_WORDS.get(len(group), len(group))} best side by side")
        t0 = time.monotonic()
        parts = [f for _, _, _, f in group]
        gram = parts[0].gram.copy()
        for p in parts[1:]:
            gram += p.gram
        dual = _solve(gram, len(tr), responses, tr, va, config.n_components, shrink)
        rep = dual.report
        key = (float(rep["val_mrr_mean"]), float(rep["val_top1_mean"]), -len(rows))
        rows.append({"model": " + ".join(c.label for _, _, c, _ in group), "backbone": name, "stage": 1, "block": 1,
                     "transform": "none", "val_mrr": rep["val_mrr_mean"], "val_top1": rep["val_top1_mean"],
                     "n_features": sum(p.n_features for p in parts), "features_s": 0.0,
                     "fit_s": round(time.monotonic() - t0, 2)})
        if best is None or key > best[0]:  # only a winner's features are concatenated (hundreds of MB when wide)
            fit = _Scored(torch.cat([p.feats for p in parts], dim=1), np.concatenate([p.mean for p in parts]),
                          np.concatenate([p.scale for p in parts]), gram, dual)
            best, winner = (key, cand, fit), cand
    if winner is not None and best[1] is winner:
        store_features(candidate_tower(config, winner), subject.images, subject.data_hash, best[2].feats, cache_dir)
    return best


def resolved_config(config: TrainConfig, candidate: Candidate) -> TrainConfig:
    """`config` with the chosen image model in place of "auto" (what config.json records)."""
    if config.image.backbone != AUTO:
        return config
    return config.replace(**{"image.backbone": candidate.backbone, "image.stage": candidate.stage,
                             "image.block": candidate.block, "image.transform": candidate.transform})
