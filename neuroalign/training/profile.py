"""The layer-by-layer alignment profile: which image model, and which layer of it, aligns with a
population (Yamins et al. 2014, Cadena et al. 2019, Brain-Score).

For every image model and every layer asked for (default: the end of every stage; `layers="all"`
every block), on the subject's own train/val/test split (the one a training run with the same
config uses):

1. the frozen features of all images (readout-head pooling and the model's default nonlinearity,
   cached like a training run's);
2. the closed-form start (`linear_start.fit_linear_start`, its settings chosen on the val split:
   how `auto` compares image models; a training run then re-chooses the settings of the layer it
   trains on by 5-fold cross-validation on train + val, five more fits that the profile spares on
   every layer; the population-mean direction damped as in a training run,
   `linear_start.population_shrink`) scored on val and on test, both directions, top-1 with Wilson
   intervals, MRR, mean rank;
3. the encoding score per neuron: FEVE of a ridge from those features, strength chosen on val,
   scored on the test repeats (`evaluation.feve`).

Steps 2 and 3 share one standardised Gram product of all images with the train images (the one
large product, images x features x train images); the start is solved in the dual form on it
(`linear_start.solve_start`), so no layer's weights in feature space are ever formed.

Beside it the reference lines: ridge from pixels and from random rectified features (test top-1),
the repeat decoder, the noiseless oracle where the simulator kept it, and FEV (the noise ceiling of
FEVE is 1). `best` marks the layer with the best val MRR per model and overall (test numbers are
reported, never used for a choice). The result is a plain json-able dict; `save_profile` keeps it
with the subject (`<subject>/profile.json`) so the dashboard opens it instantly.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from neuroalign.config import TrainConfig, preset
from neuroalign.data import Normaliser, Subject, split_indices
from neuroalign.evaluation import baselines as base
from neuroalign.evaluation.feve import linear_feve
from neuroalign.evaluation.retrieval import retrieval_metrics
from neuroalign.io_utils import atomic_write_json
from neuroalign.linalg import standardised_gram, standardiser
from neuroalign.models import cached_features
from neuroalign.training.image_choice import Candidate, candidate_tower
from neuroalign.training.linear_start import population_shrink, solve_start

logger = logging.getLogger(__name__)

PROFILE_FILE = "profile.json"
# cheapest first, so a budgeted profile has the fast models whole before the deep DS-Net stages
PROFILE_ORDER = ("random_rectified", "v1_gabor", "efficientnet_lite0", "ds_net_tiny", "ds_net_small")
PROFILE_VERSION = 1


class ProfileStopped(Exception):
    """The profile was stopped (stop event or time budget) before any layer was scored."""


def profile_layers(models: Sequence[str] | None = None, layers: str = "stages") -> list[Candidate]:
    """The (model, stage, block, transform) list a profile scores: every registered model (or
    `models`), the end of every stage (`layers="stages"`) or every block (`"all"`)."""
    from neuroalign.models.image_models import image_model_spec, registered_models

    names = list(models) if models else sorted(registered_models(), key=lambda n: (PROFILE_ORDER.index(n)
                                                                               if n in PROFILE_ORDER else 99, n))
    out = []
    for name in names:
        spec = image_model_spec(name)
        chosen = spec.stage_ends() if layers == "stages" else spec.layers()
        out += [Candidate(name, s, b, spec.transform) for s, b in chosen]
    return out


def cosine_metrics(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Retrieval metrics of cosine identification between rows of `a` (images) and `b` (responses)."""
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return retrieval_metrics(an @ bn.T)


def _short(m: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for d in ("image_to_neural", "neural_to_image"):
        out[d] = {k: m[d][k] for k in ("top1", "top1_ci", "top5", "mrr", "mean_rank") if k in m[d]}
    out["n"], out["chance_top1"] = m["n"], m["chance_top1"]
    return out


def subject_split(subject: Subject, config: TrainConfig) -> dict[str, np.ndarray]:
    d = config.data
    return split_indices(subject.n_images, d.val_fraction, d.test_fraction, d.split_seed)


def alignment_profile(subject: Subject, config: TrainConfig | None = None, models: Sequence[str] | None = None,
                      layers: str = "stages", cache_dir=None, progress: Callable[[int, int, str], None] | None = None,
                      stop_event: threading.Event | None = None, max_seconds: float | None = None,
                      ground_truth: dict | None = None, candidates: Sequence[Candidate] | None = None) -> dict[str, Any]:
    """The profile of `subject` (module docstring). `progress(done, total, message)` after every layer;
    `stop_event` / `max_seconds` end it after the current layer (the rows so far are returned and
    `complete` is False). `candidates` replaces the (models, layers) list with explicit layers."""
    config = config or preset("recommended")
    t0 = time.monotonic()
    split = subject_split(subject, config)
    tr, va, te = (np.asarray(split[k], dtype=np.int64) for k in ("train", "val", "test"))
    normaliser = Normaliser(config.data.normaliser).fit(subject.responses[tr])
    resp = normaliser.transform(subject.responses).astype(np.float64)
    reps = None if subject.repeats is None else np.stack([normaliser.transform(r) for r in subject.repeats])
    # the start's damping of the population-mean direction, as a training run's (`population_shrink`)
    population = None if reps is None else population_shrink(reps[:, tr])
    shrink = 1.0 if population is None else population["shrink"]
    cands = list(candidates) if candidates is not None else profile_layers(models, layers)
    rows: list[dict[str, Any]] = []
    stopped = None
    for i, cand in enumerate(cands):
        if stop_event is not None and stop_event.is_set():
            stopped = "stopped"
            break
        if max_seconds is not None and rows and time.monotonic() - t0 > max_seconds:
            stopped = "time budget"
            break
        if progress is not None:
            progress(i, len(cands), f"{cand.label} ({i + 1}/{len(cands)})")
        t1 = time.monotonic()
        try:
            tower = candidate_tower(config, cand)
            _prefetch_model(config, cands[i:], subject, cache_dir, stop_event)
            feats = cached_features(tower, subject.images, subject.data_hash, cache_dir=cache_dir,
                                    remember=cache_dir is None).flatten(1).numpy()
        except ValueError as exc:  # e.g. images too small for a deep layer: the row says why
            rows.append({"model": cand.backbone, "stage": cand.stage, "block": cand.block, "label": cand.label,
                         "error": str(exc)})
            continue
        # one standardised Gram product of all images with the train images serves the start, its
        # scores and the FEVE ridge (the same numbers as `fit_linear_start` on the features)
        mean, scale = standardiser(feats, rows=tr)
        gram = standardised_gram(feats, mean, scale, b_rows=tr)
        del feats
        start = solve_start(gram[tr], gram[va], resp[tr], resp[va], config.n_components, shrink=shrink)
        img, neu = start.image_embeddings(gram), start.neural_embeddings(resp)
        row = {"model": cand.backbone, "stage": cand.stage, "block": cand.block, "transform": cand.transform,
               "label": cand.label, "n_features": len(mean),
               "val": _short(cosine_metrics(img[va], neu[va])), "test": _short(cosine_metrics(img[te], neu[te])),
               "val_mrr": float(start.report["val_mrr_mean"]),
               "start": {**start.report, "n_features": len(mean)}}
        enc = linear_feve(None, resp, reps, split, gram=gram)
        if enc is not None:
            row["feve"] = {k: v for k, v in enc.items() if k != "per_neuron"}
        row["seconds"] = round(time.monotonic() - t1, 2)
        rows.append(row)
    if not any("val" in r for r in rows):
        raise ProfileStopped("the profile ended before any layer was scored")
    if progress is not None:  # the reference lines take a while too
        progress(len(cands), len(cands), "reference lines: ridge on pixels and on random features, repeat decoder")
    return {"version": PROFILE_VERSION, "subject": subject.name, "data_hash": subject.data_hash,
            "n_images": subject.n_images, "n_neurons": subject.n_neurons,
            "split": {k: len(v) for k, v in split.items()}, "layers": layers, "rows": rows,
            "best": _best(rows), "reference": _reference(subject, resp, reps, split, ground_truth),
            "complete": stopped is None, "stopped": stopped, "elapsed_s": round(time.monotonic() - t0, 1),
            "config": {"grid": list(config.image.grid), "n_components": config.n_components,
                       "normaliser": config.data.normaliser, "split_seed": config.data.split_seed}}


def _prefetch_model(config: TrainConfig, remaining: Sequence[Candidate], subject: Subject, cache_dir,
                    stop_event: threading.Event | None) -> None:
    """Before the first layer of a model is scored: compute every remaining layer of that model that
    is not cached yet in ONE forward pass (`compute_layer_features`) and cache each, when the
    model's shallower builds are prefixes of its deepest one (EfficientNet-Lite0's seven stage ends,
    or a DS-Net's, whose random init is drawn stage by stage: one pass instead of one per layer). A
    model whose truncated builds are not prefixes (a user's own) keeps one pass per layer."""
    from neuroalign.models.feature_cache import compute_layer_features, has_features, shares_prefix, store_features
    from neuroalign.models.image_models import parse_combination

    name = remaining[0].backbone
    same = [c for c in remaining if c.backbone == name]
    if len(same) < 2 or parse_combination(name) is not None:
        return
    try:
        towers = [candidate_tower(config, c) for c in same]
    except ValueError:
        return  # e.g. a layer that cannot read these images: each layer reports its own error
    todo = [t for t in towers if not has_features(t, subject.images, subject.data_hash, cache_dir)]
    if len(todo) < 2:
        return
    deep = max(todo, key=lambda t: (t.stage, t.block))
    todo = [t for t in todo if shares_prefix(t, deep)]
    if len(todo) < 2:
        return
    try:
        feats = compute_layer_features(todo, subject.images,
                                       should_stop=None if stop_event is None else stop_event.is_set)
    except ValueError as exc:  # images too small for the deepest layer: the layers go one by one
        logger.info("one-pass features of %s not used: %s", name, exc)
        return
    for tower, f in zip(todo, feats or []):
        store_features(tower, subject.images, subject.data_hash, f, cache_dir, remember=cache_dir is None)


def _best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model and overall: the layer with the best val MRR (index into rows)."""
    scored = [(i, r) for i, r in enumerate(rows) if "val_mrr" in r]
    per_model: dict[str, int] = {}
    for i, r in scored:
        if r["model"] not in per_model or r["val_mrr"] > rows[per_model[r["model"]]]["val_mrr"]:
            per_model[r["model"]] = i
    overall = max(scored, key=lambda t: t[1]["val_mrr"])[0]
    return {"overall": overall, "per_model": per_model}


def _reference(subject: Subject, resp: np.ndarray, reps, split, ground_truth) -> dict[str, Any]:
    """The horizontal lines of the profile chart: pixel and random-feature ridge, repeat decoder,
    oracle (test top-1 both ways) and the repeats' FEV."""
    out: dict[str, Any] = {}
    for name, fn in (("ridge", lambda: base.ridge_baseline(subject.images, resp, split)),
                     ("ridge_random", lambda: base.random_features_baseline(subject.images, resp, split)),
                     ("repeat", lambda: base.repeat_baseline(reps, split))):
        m = fn()
        if m is not None:
            out[name] = {d: m[d]["top1"] for d in ("image_to_neural", "neural_to_image")}
    if ground_truth is not None and "rates" in ground_truth:
        m = base.oracle_baseline(ground_truth["rates"], resp, split)
        out["oracle"] = {d: m[d]["top1"] for d in ("image_to_neural", "neural_to_image")}
    return out


def profile_path(subject_dir: str | Path) -> Path:
    return Path(subject_dir) / PROFILE_FILE


def save_profile(subject_dir: str | Path, profile: dict[str, Any]) -> Path:
    """Keep the profile with the subject (atomic)."""
    path = profile_path(subject_dir)
    atomic_write_json(path, profile)
    return path


def load_profile(subject_dir: str | Path, data_hash: str | None = None) -> dict[str, Any] | None:
    """The stored profile, or None when absent, unreadable or computed on other data."""
    import json

    path = profile_path(subject_dir)
    try:
        profile = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(profile, dict) or profile.get("version") != PROFILE_VERSION:
        return None
    if data_hash is not None and profile.get("data_hash") != data_hash:
        return None
    return profile


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
