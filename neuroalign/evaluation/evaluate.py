"""Honest evaluation of a trained model on its untouched TEST split (eval mode, best weights).

`score_trainer(trainer)` scores a fitted `Trainer` (best weights restored) and returns an
`Evaluation`: `results` (what `results.json` holds: `test` -- retrieval both directions over the
whole test set, `n`, chance levels, `n_way_300` when the test set has >= 300 items; `val` (same on
the val split); `ssim` (mean/median/std of per-sample SSIM between the two towers' maps on test);
`encoding` (FEVE); `baselines` (`ridge`, `repeat` when repeats exist, `oracle` for simulated
subjects, the random- and backbone-feature ridges; same test split) and `comparison` (the paired
verdict against the best linear readout); `training`; `similarity`) and `outputs` (the test maps,
similarity and SSIM per item). Nothing here writes files: a run folder's artifacts are written by
`neuroalign.training.run_eval.write_evaluation`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuroalign.config import layer_label
from neuroalign.evaluation.baselines import (
    backbone_features_baseline,
    compare_with_linear,
    oracle_baseline,
    random_features_baseline,
    repeat_baseline,
    ridge_baseline,
)
from neuroalign.evaluation.feve import linear_feve
from neuroalign.evaluation.retrieval import n_way_metrics, retrieval_metrics
from neuroalign.models import minmax_per_sample, similarity_matrix, ssim_per_sample

logger = logging.getLogger(__name__)

N_WAY = 300
N_WAY_DRAWS = 100


def _maps_metrics(trainer, indices: np.ndarray, hits: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    img, neu = trainer.predict(indices)
    center = trainer.config.loss.center
    sim = similarity_matrix(torch.from_numpy(img), torch.from_numpy(neu), center=center).numpy().astype(np.float64)
    metrics = retrieval_metrics(sim, hits=hits)
    nway = n_way_metrics(sim, n_way=N_WAY, draws=N_WAY_DRAWS, seed=0)
    if nway is not None:
        metrics[f"n_way_{N_WAY}"] = nway
    # SSIM's constants assume maps in [0, 1]: score min-max copies (a no-op for the conv1x1/attention
    # towers, whose maps already are; the readout towers' DCT maps are zero-mean)
    ssim = ssim_per_sample(minmax_per_sample(torch.from_numpy(img)),
                           minmax_per_sample(torch.from_numpy(neu))).numpy().astype(np.float64)
    return metrics, {"image_maps": img, "neural_maps": neu, "similarity": sim.astype(np.float32), "ssim": ssim}


BACKBONE_BASELINE_GRID = (8, 32)


def backbone_baseline_features(trainer) -> np.ndarray | None:
    """The run's frozen backbone features `(N, D)` for the linear-encoding baseline, average-pooled to
    an 8x32 grid when they are larger (the readout head's inputs are already that); None in
    fine-tune mode (there are no fixed features to regress from)."""
    if not trainer.frozen:
        return None
    feats = trainer.inputs.float()
    if feats.shape[2] * feats.shape[3] > BACKBONE_BASELINE_GRID[0] * BACKBONE_BASELINE_GRID[1]:
        feats = torch.nn.functional.adaptive_avg_pool2d(feats, BACKBONE_BASELINE_GRID)
    return feats.flatten(1).cpu().numpy()


def compute_baselines(subject, split: dict[str, np.ndarray], subject_path: str | Path | None = None,
                      backbone_features: np.ndarray | None = None, backbone_label: str | None = None) -> dict[str, Any]:
    """Ridge from pixels, from random rectified features and (when given) from the run's backbone
    features; repeat (when the subject has >= 2 repeats) and oracle (simulated ground truth)."""
    out: dict[str, Any] = {}
    for key, fn in (("ridge", lambda: ridge_baseline(subject.images, subject.responses, split)),
                    ("ridge_random", lambda: random_features_baseline(subject.images, subject.responses, split)),
                    ("ridge_backbone", None if backbone_features is None else
                     lambda: backbone_features_baseline(backbone_features, subject.responses, split,
                                                        backbone_label or "the run's frozen backbone features"))):
        if fn is None:
            continue
        try:
            out[key] = fn()
        except ValueError as exc:
            logger.warning("%s baseline skipped: %s", key, exc)
    rep = repeat_baseline(subject.repeats, split) if subject.repeats is not None else None
    if rep is not None:
        out["repeat"] = rep
    if subject_path is not None:
        from neuroalign.data import load_ground_truth

        truth = load_ground_truth(subject_path)
        if truth is not None and "rates" in truth and truth["rates"].shape == subject.responses.shape:
            out["oracle"] = oracle_baseline(truth["rates"], subject.responses, split)
    return out


def estimate_evaluation_seconds(trainer, baselines: bool = True, feature_dim: int | None = None) -> float:
    """How long `score_trainer` will take on this machine, measured rather than guessed: the random
    rectified features are timed on a few images and scaled to all of them, one Gram product and one
    eigendecomposition of the solves' sizes are timed on a quarter of the training images and scaled
    (quadratically / cubically), and the ridge fits are counted (pixels, random features, the run's
    features, FEVE of the model and of the features), with 50 % slack. Used to end training early
    enough that the whole job fits its time budget. `feature_dim`: the width of the frozen features
    when the trainer has none yet (before image model "auto" has chosen; only the split is needed)."""
    import time as _time

    from neuroalign.evaluation.baselines import random_rectified_features
    from neuroalign.linalg import eigh

    sub = trainer.subject
    n, n_train = sub.n_images, len(trainer.split["train"])
    t0 = _time.monotonic()
    seconds = 0.0
    if baselines:
        k = min(32, n)
        sample = random_rectified_features(sub.images[:k])
        seconds += (_time.monotonic() - t0) * n / k
        dims = [2048, sample.shape[1]]
        if feature_dim is not None:
            dims.append(int(feature_dim))
        elif trainer.frozen:
            dims.append(int(np.prod(trainer.inputs.shape[1:])))
    else:
        dims = []
    dims.append(1024)  # FEVE of the model (its 16x64 image maps)
    m = max(min(n_train, 256), 2)
    rng = np.random.default_rng(0)
    for d in dims:
        x = rng.standard_normal((m, min(d, 8192)))
        t1 = _time.monotonic()
        g = x @ x.T
        gram = (_time.monotonic() - t1) * (d / x.shape[1]) * (n_train / m) ** 2 * (n / n_train)
        t1 = _time.monotonic()
        eigh(g)
        seconds += gram + (_time.monotonic() - t1) * (n_train / m) ** 3
    seconds += 0.002 * n  # the maps of every image, retrieval metrics, files
    return 1.5 * seconds


def encoding_scores(trainer) -> dict[str, Any] | None:
    """FEVE per neuron on the test repeats (`evaluation.feve`): of the model (a ridge from its image maps,
    i.e. its shared-space embedding, to each neuron, fitted on train, strength chosen on val) and of the
    linear encoding model on the run's frozen features. None without >= 2 repeats."""
    reps = trainer.subject.repeats
    if reps is None or reps.shape[0] < 2:
        return None
    norm = trainer.normaliser
    responses = norm.transform(trainer.subject.responses)
    trials = np.stack([norm.transform(r) for r in reps])
    img, _ = trainer.predict(np.arange(trainer.subject.n_images))
    out: dict[str, Any] = {"metric": "FEVE", "model": linear_feve(img.reshape(len(img), -1), responses, trials, trainer.split)}
    feats = backbone_baseline_features(trainer)
    if feats is not None:
        backbone = linear_feve(feats, responses, trials, trainer.split)
        if backbone is not None:
            backbone.pop("per_neuron", None)
            out["ridge_backbone"] = backbone
    return out


@dataclass(frozen=True)
class Evaluation:
    """`results` (results.json) and `outputs` (test_indices, image_maps, neural_maps, similarity,
    ssim: what test_outputs.npz holds) of one scoring."""

    results: dict[str, Any]
    outputs: dict[str, np.ndarray]


def score_trainer(trainer, subject_path: str | Path | None = None, training: dict[str, Any] | None = None,
                  baselines: bool = True) -> Evaluation:
    """Score a fitted trainer on its test (and val) split; see the module docstring."""
    split = trainer.split
    test_idx = np.asarray(split["test"], dtype=np.int64)
    if len(test_idx) < 2:
        raise ValueError(f"evaluation needs >= 2 test images, got {len(test_idx)}")
    test, outputs = _maps_metrics(trainer, test_idx, hits=True)  # per-image hits: paired baseline comparison
    val, _ = _maps_metrics(trainer, np.asarray(split["val"], dtype=np.int64))
    ssim = outputs["ssim"]
    results: dict[str, Any] = {
        "test": test,
        "val": val,
        "ssim": {"mean": float(ssim.mean()), "median": float(np.median(ssim)), "std": float(ssim.std()), "n": int(len(ssim))},
        "similarity": "correlation (centred cosine)" if trainer.config.loss.center else "cosine",
        "checkpoint": "best.pt",
        "training": training or {},
    }
    encoding = encoding_scores(trainer)
    if encoding is not None:
        results["encoding"] = encoding
    if baselines:
        c = trainer.config.image
        label = f"the run's frozen {layer_label(c.backbone, c.stage, c.block)} features"
        results["baselines"] = compute_baselines(trainer.subject, split, subject_path,
                                                 backbone_baseline_features(trainer), label)
        comparison = compare_with_linear(test, results["baselines"])
        if comparison is not None:
            results["comparison"] = comparison
    i2n, n2i = test["image_to_neural"], test["neural_to_image"]
    logger.info("test (n=%d): top1 image->neural %.3f, neural->image %.3f (chance %.3f); mean SSIM %.3f",
                test["n"], i2n["top1"], n2i["top1"], test["chance_top1"], ssim.mean())
    return Evaluation(results, {"test_indices": test_idx, **outputs})
