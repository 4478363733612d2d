"""A finished run, re-read from its folder: re-evaluation and neuron importance.

The run-folder side of `neuroalign.evaluation` (which holds only functions on arrays and trainers):
`evaluate_run(run_dir)` rebuilds the trainer from the run folder (`rebuild.rebuild_trainer`: config,
split, normaliser) with its `best.pt` and writes `results.json`, `test_outputs.npz` and
`test_result.mat` again -- `python -m neuroalign evaluate RUN_DIR`; `evaluate_trainer(trainer,
run_dir)` scores a fitted trainer (`evaluation.evaluate.score_trainer`) and writes those three files
(`write_evaluation`; `test_result.mat` in the reference format: `z_img`, `z_neu` `(n,16,64)`,
`ssim_list (1,n)`, `mean_ssim`, 1-based `test_indices`, on TEST samples); `run_importance(run_dir)` loads the run's neural side and scores which neurons drive it
(`evaluation.importance`), `save_importance` / `load_importance` keep it as `importance.npz`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuroalign.data import Subject
from neuroalign.evaluation.evaluate import Evaluation, score_trainer
from neuroalign.evaluation.importance import (DRAWS, NATIVE_SAMPLES, STEPS, MISMATCH_TOLERANCE, NeuronImportance,
                                              attribution_importance, native_importance, neural_maps)
from neuroalign.io_utils import atomic_savemat, atomic_savez, atomic_write_json
from neuroalign.models import CombinedLoss, build_neural_tower
from neuroalign.training import runs as runs_io
from neuroalign.training.rebuild import check_record, read_normaliser, rebuild_trainer, run_subject
from neuroalign.training.runs import BEST_CKPT, load_checkpoint, load_run, run_lock

logger = logging.getLogger(__name__)


def write_evaluation(run_dir: str | Path, evaluation: Evaluation) -> None:
    """`results.json`, `test_outputs.npz` and `test_result.mat` of `evaluation` into `run_dir` (each atomically)."""
    run_dir = Path(run_dir)
    out = evaluation.outputs
    test_idx, ssim = out["test_indices"], out["ssim"]
    atomic_write_json(run_dir / "results.json", evaluation.results)
    atomic_savez(run_dir / "test_outputs.npz", **out)
    atomic_savemat(run_dir / "test_result.mat", {
        "z_img": out["image_maps"].astype(np.float64), "z_neu": out["neural_maps"].astype(np.float64),
        "ssim_list": ssim.reshape(1, -1), "mean_ssim": float(ssim.mean()), "test_indices": test_idx.reshape(1, -1) + 1,
    })


def evaluate_trainer(trainer, run_dir: str | Path | None = None, subject_path: str | Path | None = None,
                     training: dict[str, Any] | None = None, baselines: bool = True) -> dict[str, Any]:
    """Score a fitted trainer (`score_trainer`) and, given `run_dir`, write its artifacts there;
    returns the results."""
    evaluation = score_trainer(trainer, subject_path=subject_path, training=training, baselines=baselines)
    if run_dir is not None:
        write_evaluation(run_dir, evaluation)
    return evaluation.results


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                 device: str | None = None) -> dict[str, Any]:
    """Recompute `results.json` (and the test outputs) of a run from its `best.pt`, holding the run's
    lock (`RunLockedError` while another process trains, resumes, evaluates or deletes it)."""
    with run_lock(run_dir, "evaluate"):
        record = load_run(run_dir)
        best_path = Path(run_dir) / BEST_CKPT
        if not best_path.is_file():
            raise FileNotFoundError(f"{best_path} not found; the run has no best checkpoint to evaluate")
        trainer, subject_path = rebuild_trainer(record, data_dir=data_dir, cache_dir=cache_dir, device=device)
        best = load_checkpoint(best_path)
        trainer.load_model_state(best["model"])
        training = dict((record.results or {}).get("training") or {})
        training.update({"best_epoch": int(best["epoch"]), "best_val_loss": float(best["val_loss"])})
        return evaluate_trainer(trainer, run_dir=record.path, subject_path=subject_path, training=training)


@dataclass
class TrainedNeuralSide:
    """What importance needs of a run: the neural tower with its best weights (eval mode), the
    normalised test responses, the stored image-tower test maps and the contrastive temperature."""

    run_dir: Path
    kind: str  # the neural tower's kind (NeuralTowerConfig.kind)
    tower: torch.nn.Module
    responses: np.ndarray  # (n, K) normalised test responses
    image_maps: np.ndarray  # (n, 16, 64)
    neural_maps: np.ndarray  # (n, 16, 64) as stored by the evaluation
    test_indices: np.ndarray  # (n,)
    temperature: float
    center: bool
    subject: Subject


def load_trained_neural_side(run_dir: str | Path, subject: Subject | None = None,
                             data_dir: str | Path | None = None) -> TrainedNeuralSide:
    """The neural side of a finished run, from its folder (config, split, normaliser, best.pt, test
    outputs) and its subject (`subject` when given, else loaded from `data_dir`/name or the recorded
    path). ValueError / FileNotFoundError with a one-line reason for anything missing or mismatched."""
    run_dir = Path(run_dir)
    record = runs_io.load_run(run_dir)
    check_record(record)
    config = record.train_config()
    outputs = record.test_outputs()
    if not outputs or not {"test_indices", "image_maps", "neural_maps"} <= set(outputs):
        raise FileNotFoundError(f"{run_dir / runs_io.TEST_OUTPUTS} is missing or incomplete; evaluate the run first")
    best_path = run_dir / runs_io.BEST_CKPT
    if not best_path.is_file():
        raise FileNotFoundError(f"{best_path} not found; the run has no best checkpoint")
    best = runs_io.load_checkpoint(best_path)  # RunFileError (a ValueError, one line) when damaged
    subject, _ = run_subject(record, subject=subject, data_dir=data_dir,
                             purpose="importance needs the original responses")
    test_idx = np.asarray(outputs["test_indices"], dtype=np.int64)
    if not np.array_equal(test_idx, np.asarray(record.split["test"], dtype=np.int64)):
        raise ValueError(f"{runs_io.TEST_OUTPUTS} of {run_dir.name} does not match its split.json test rows; "
                         "re-evaluate the run")
    normaliser = read_normaliser(run_dir)
    state = best["model"]
    if "neural_tower" not in state:
        raise ValueError(f"{best_path} holds no neural-tower weights (expected a 'model' entry with 'neural_tower')")
    tower = build_neural_tower(subject.n_neurons, config.neural, config.n_components)
    try:
        tower.load_state_dict(state["neural_tower"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{best_path} does not fit the run's {config.neural.kind} neural tower over "
                         f"{subject.n_neurons} neurons: {first}") from None
    tower.eval()
    loss = CombinedLoss(config.loss)
    if "loss" in state:
        loss.load_state_dict(state["loss"])
    return TrainedNeuralSide(
        run_dir=run_dir, kind=config.neural.kind, tower=tower,
        responses=np.ascontiguousarray(normaliser.transform(subject.responses[test_idx]), dtype=np.float32),
        image_maps=np.asarray(outputs["image_maps"], dtype=np.float32),
        neural_maps=np.asarray(outputs["neural_maps"], dtype=np.float32),
        test_indices=test_idx, temperature=float(torch.as_tensor(loss.temperature).detach()), center=bool(config.loss.center), subject=subject)


def run_importance(run_dir: str | Path, subject: Subject | None = None, data_dir: str | Path | None = None,
                   steps: int = STEPS, draws: int = DRAWS, batch_size: int = 256,
                   native_samples: int = NATIVE_SAMPLES, max_seconds: float | None = None) -> NeuronImportance:
    """Per-neuron importance of a finished run on its test split (see the module docstring). With
    `max_seconds`, the attribution and the tower's own measure each stop starting new batches after
    that time (`n_used` says over how many test images the attribution averaged)."""
    side = load_trained_neural_side(run_dir, subject=subject, data_dir=data_dir)
    att = attribution_importance(side.tower, side.responses, side.image_maps, side.temperature, side.center,
                                 steps=steps, draws=draws, batch_size=batch_size, max_seconds=max_seconds)
    importance, net = att.magnitude, att.signed
    total = float(importance.sum())
    share = importance / total if total > 0 else np.full_like(importance, 1.0 / len(importance))
    maps = neural_maps(side.tower, side.responses[att.rows], batch_size=batch_size)
    stored = side.neural_maps[att.rows]
    scale = float(np.abs(stored).max()) or 1.0
    mismatch = float(np.abs(maps - stored).max()) / scale if maps.shape == stored.shape else math.inf
    warnings = []
    if mismatch > MISMATCH_TOLERANCE:
        warnings.append(f"best.pt does not reproduce the stored test maps (largest difference {mismatch:.2g} of the "
                        "map range); the run may have been re-trained or evaluated elsewhere — re-evaluate it")
        logger.warning("%s: %s", side.run_dir.name, warnings[-1])
    if total == 0:
        warnings.append("every attribution is 0 (the model's output does not depend on the responses)")
    native, label, native_n = native_importance(side.tower, side.responses, max_samples=native_samples,
                                                max_seconds=max_seconds)
    return NeuronImportance(kind=side.kind, importance=importance, share=share, net=net, n_test=len(side.responses),
                            n_used=len(att.rows), temperature=side.temperature, native=native, native_label=label,
                            native_n=native_n, map_mismatch=mismatch, warnings=warnings)


IMPORTANCE_FILE = "importance.npz"
_ARRAYS = ("importance", "share", "net", "native")


def save_importance(run_dir: str | Path, imp: NeuronImportance) -> Path:
    """Keep a run's importance in its folder (`importance.npz`, atomic): the job computes it once after
    training over ALL test images, so what the Neurons page shows never depends on machine load."""
    meta = {k: v for k, v in vars(imp).items() if k not in _ARRAYS}
    arrays = {k: np.asarray(getattr(imp, k), dtype=np.float64) for k in _ARRAYS if getattr(imp, k) is not None}
    path = Path(run_dir) / IMPORTANCE_FILE
    atomic_savez(path, meta=np.asarray(json.dumps(meta, default=float)), **arrays)
    return path


def load_importance(run_dir: str | Path) -> NeuronImportance | None:
    """The stored importance of a run, or None when absent, unreadable, or older than its best.pt."""
    path = Path(run_dir) / IMPORTANCE_FILE
    best = Path(run_dir) / runs_io.BEST_CKPT
    try:
        if not path.is_file() or (best.is_file() and best.stat().st_mtime > path.stat().st_mtime):
            return None
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if "block" in meta and "kind" not in meta:  # written before the field was renamed
                meta["kind"] = meta.pop("block")
            arrays = {k: z[k] for k in _ARRAYS if k in z.files}
        return NeuronImportance(**meta, **{k: arrays.get(k) for k in _ARRAYS})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable %s (%s)", path, exc)
        return None
