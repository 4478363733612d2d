"""One training run end to end: split -> normalise -> features -> start -> fit -> evaluate -> exports.

`train_subject` is the one orchestration of a new run, on a `Subject` in memory: the CLI
(`python -m neuroalign train`) and the dashboard's worker reach it through `run_training` (which
takes a subject of the data folder, the run folder and the time budget of the whole job), the
library through `neuroalign.Aligner.fit` (arrays, no folder until asked). `resume_training`
continues an interrupted run from its `last.pt` in the same folder through the same fit ->
evaluate -> exports half (`_fit_and_finish`). The run folder is written as training goes (see
`neuroalign.training.runs`): `status.json` says queued/running/finished/failed/stopped, and a
failure leaves its one-line reason there.

Exports in the reference format: `loss_data.mat` with `train_loss_hist` and `test_loss_hist`
(1 x epochs). NOTE: `test_loss_hist` holds our VALIDATION loss history -- the reference drove
its scheduler with the test loss under that name; we never touch test data during training,
but keep the variable name so existing MATLAB scripts still run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from neuroalign import __version__, io_utils
from neuroalign.config import TrainConfig
from neuroalign.data import Subject, load_subject
from neuroalign.evaluation.evaluate import estimate_evaluation_seconds
from neuroalign.io_utils import atomic_savemat, atomic_write_json
from neuroalign.training import distributed as dist_ops
from neuroalign.training import runs as runs_io
from neuroalign.training.device import describe_device, dist_info_from_env
from neuroalign.training.rebuild import rebuild_trainer, subject_path as _subject_path
from neuroalign.training.trainer import Callback, FitResult, Trainer, TrainingDiverged
from neuroalign.training.run_eval import evaluate_trainer

__all__ = ["IN_MEMORY", "STOP_MESSAGES", "Trained", "rebuild_trainer", "resume_training", "run_training",
           "train_subject"]

logger = logging.getLogger(__name__)

#: config.json's subject path for data given as arrays (there is no subject folder to reload)
IN_MEMORY = "(in memory: neuroalign.Aligner.fit)"

STOP_MESSAGES = {
    "completed": "finished all epochs",
    "early_stopping": "stopped early: no validation improvement",
    "time_budget": "time budget reached",
    "stopped": "stopped by user",
}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _config_record(config: TrainConfig, subject: Subject, subject_path: Path | None, trainer: Trainer) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "subject": {"name": subject.name, "path": str(subject_path) if subject_path is not None else IN_MEMORY,
                    "data_hash": subject.data_hash,
                    "n_images": subject.n_images, "n_neurons": subject.n_neurons,
                    "image_shape": list(subject.images.shape[2:]), "simulated": bool(subject.meta.get("simulated", False))},
        "code_version": __version__, "git_commit": _git_commit(), "torch_version": torch.__version__,
        "device": str(trainer.device), "device_description": describe_device(trainer.device),
        "fused_cpu_kernels": trainer.fused_kernels, "world_size": trainer.dist.world_size,
        "backend": trainer.dist_backend, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "resumed_from_epoch": None, "image_choice": trainer.image_choice,
        "reproduce": f"python -m neuroalign train --subjects {subject.name} (config.json holds every setting)",
    }


def _status_writer(run_dir: Path | None, is_main: bool, on_status: Callable[[str], None] | None = None):
    """`write_status` into `run_dir` on rank 0 (and `on_status(message)` while running); a no-op on the
    other torchrun ranks; without a run folder only `on_status` hears it."""
    def write(state: str, message: str = "", **fields: Any) -> None:
        if is_main:
            if on_status is not None and state == "running" and message:
                on_status(message)
            if run_dir is None:
                return
            if state == "failed":
                _fail_status(run_dir, message)
            else:
                runs_io.write_status(run_dir, state, message, **fields)
    return write


def _fail_status(run_dir: Path, message: str) -> None:
    """Status `failed` with `message`; a status that cannot be written (a full disk) is logged, so the
    error being reported stays the one that propagates."""
    try:
        runs_io.write_status(run_dir, "failed", message)
    except OSError as exc:
        logger.info("could not record the failure in %s: %s", run_dir / runs_io.STATUS_FILE, exc)


def _writer_lock(run_dir: Path, is_main: bool, action: str):
    """The run folder's exclusive lock on rank 0 (the only rank that writes); nothing on the others."""
    return runs_io.run_lock(run_dir, action) if is_main else contextlib.nullcontext()


def save_loss_curves(run_dir: Path, train_loss_hist: list[float], val_loss_hist: list[float]) -> None:
    """`loss_data.mat` in the reference format (see the module docstring)."""
    atomic_savemat(run_dir / runs_io.LOSS_MAT, {
        "train_loss_hist": np.asarray(train_loss_hist, dtype=np.float64).reshape(1, -1),
        "test_loss_hist": np.asarray(val_loss_hist, dtype=np.float64).reshape(1, -1),
    })


def write_final_status(run_dir: Path, training: dict[str, Any], results: dict[str, Any]) -> None:
    """status.json `finished` (or `stopped`) with the one-line summary of the run."""
    t = results["test"]
    summary = (f"{STOP_MESSAGES[training['stop_reason']]} (epoch {training['epochs_run']}, best "
               f"{training['best_epoch']}); test top-1 image → neural {t['image_to_neural']['top1']:.3f}, "
               f"neural → image {t['neural_to_image']['top1']:.3f} (chance {t['chance_top1']:.3f})")
    state = "stopped" if training["stop_reason"] == "stopped" else "finished"
    runs_io.write_status(run_dir, state, summary, progress=1.0, epoch=training["epochs_run"])


def training_record(trainer: Trainer, fit: FitResult) -> dict[str, Any]:
    """results.json's `training` block: how the fit ended and what it selected."""
    training = {"epochs_run": fit.epochs_run, "best_epoch": fit.best_epoch, "best_val_loss": fit.best_val_loss,
                "stop_reason": fit.stop_reason, "elapsed_s": fit.elapsed_s, "select_by": trainer.config.select_by}
    if math.isfinite(trainer.state.best_score):
        training["best_val_score"] = trainer.state.best_score
    if trainer.state.linear_start is not None:
        training["linear_start"] = trainer.state.linear_start
    return training


def _finish(trainer: Trainer, fit: FitResult, run_dir: Path | None, subject_path: Path | None,
            estimate: float | None, baselines: bool, on_status: Callable[[str], None] | None) -> dict[str, Any]:
    """Evaluate the fitted trainer (best epoch restored) on the test split; with a run folder also the
    exports, neuron importance and the final status. Rank 0 only. Returns results.json's content."""
    status = _status_writer(run_dir, True, on_status)
    if run_dir is not None:
        save_loss_curves(run_dir, fit.train_loss_hist, fit.val_loss_hist)
    message = f"evaluating on the test split (retrieval, {'baselines, ' if baselines else ''}FEVE" + \
        (f"; about {estimate:.0f} s)" if estimate else ")")
    status("running", message, progress=1.0, epoch=fit.epochs_run, phase="evaluation", eta_s=estimate)
    training = training_record(trainer, fit)
    results = evaluate_trainer(trainer, run_dir=run_dir, subject_path=subject_path, training=training,
                               baselines=baselines)
    if run_dir is not None:
        _store_importance(trainer, run_dir, status)
        write_final_status(run_dir, training, results)
    return results


def _store_importance(trainer: Trainer, run_dir: Path, status: Callable[..., None]) -> None:
    """Which neurons drive the alignment, over every test image, once, in the job (the Neurons page
    reads it; a failure here is logged and never fails the finished run)."""
    from neuroalign.training.run_eval import run_importance, save_importance

    status("running", "computing which neurons drive the alignment (all test images)", progress=1.0,
           phase="importance")
    try:
        save_importance(run_dir, run_importance(run_dir, subject=trainer.subject))
    except Exception as exc:  # noqa: BLE001 -- the page recomputes it; the run's results stand
        logger.warning("neuron importance not stored for %s: %s: %s", run_dir.name, type(exc).__name__, exc)


def _fit_and_finish(trainer: Trainer, run_dir: Path | None, subject_path: Path | None, callback: Callback | None,
                    stop_event: threading.Event | None, train_deadline: float | None = None,
                    estimate: float | None = None, baselines: bool = True,
                    on_status: Callable[[str], None] | None = None) -> tuple[FitResult, dict[str, Any] | None]:
    """The second half of every run (new or resumed): fit, then `_finish`; status `failed` with the
    one-line reason on any error. Returns the fit and the results (None on torchrun ranks > 0)."""
    config = trainer.config
    writes = run_dir is not None and trainer.is_main

    def on_event(event: str, values: dict[str, float]) -> None:
        if event == "epoch" and writes:
            runs_io.write_status(run_dir, "running", f"epoch {int(values['epoch'])}/{config.epochs}",
                                 progress=values["progress"], epoch=int(values["epoch"]), epochs=config.epochs,
                                 eta_s=values.get("eta_s"))
        if callback is not None:
            callback(event, values)

    try:
        fit = trainer.fit(callback=on_event if trainer.is_main else None, stop_event=stop_event,
                          train_deadline=train_deadline)
        results = _finish(trainer, fit, run_dir, subject_path, estimate, baselines, on_status) \
            if trainer.is_main else None
    except TrainingDiverged as exc:
        if writes:
            _fail_status(run_dir, str(exc))
        raise
    except BaseException as exc:
        if writes:
            _fail_status(run_dir, f"{type(exc).__name__}: {exc}")
        raise
    return fit, results


@dataclass
class Trained:
    """What `train_subject` returns: the Trainer (best epoch restored), how its fit ended, the
    evaluation (results.json's content; None on torchrun ranks > 0) and config.json's content."""

    trainer: Trainer
    fit: FitResult
    results: dict[str, Any] | None
    record: dict[str, Any]


def train_subject(subject: Subject, config: TrainConfig, run_dir: Path | None = None, *,
                  subject_path: Path | None = None, split: dict[str, np.ndarray] | None = None,
                  cache_dir: str | Path | None = None, callback: Callback | None = None,
                  stop_event: threading.Event | None = None, deadline: float | None = None,
                  on_status: Callable[[str], None] | None = None, baselines: bool = True,
                  record_extra: dict[str, Any] | None = None) -> Trained:
    """Train one subject: the Trainer (split by image, normaliser on the train rows, backbone features,
    image model "auto" resolved), config.json / split.json / normaliser.json, the fit (closed-form
    start, epochs, best epoch restored), the test-split evaluation and the exports.

    `run_dir`: the run folder, written on rank 0 as training goes, its status.json failed with the
    one-line reason on an error (None: nothing is written). `subject_path`: the subject's folder
    (config.json, ground truth for the oracle baseline; None: data given as arrays). `deadline`
    (time.monotonic()): the whole job's end -- training stops early enough for the measured
    evaluation to fit. `on_status(message)` hears every phase message; `record_extra` adds keys to
    config.json. The caller holds the run folder's lock.
    """
    is_main = dist_info_from_env().is_main
    status = _status_writer(run_dir, is_main, on_status)
    try:
        trainer = Trainer(config, subject, run_dir=run_dir, cache_dir=cache_dir, split=split,
                          status=lambda message: status("running", message, progress=0.0), deadline=deadline)
        status("running", "preparing (backbone features and, on a CPU, the fused kernels are built once)")
        trainer.prepare()  # the heavy part: process group, split, towers, features, optimisers
        estimate = estimate_evaluation_seconds(trainer, baselines=baselines)  # the evaluation's ETA
        # training ends early enough for the evaluation to fit the budget
        train_deadline = deadline - estimate if deadline is not None else None
    except BaseException as exc:
        status("failed", f"{type(exc).__name__}: {exc}")
        raise
    # the trainer's config: "auto" resolved to the image model it chose (its comparison recorded too)
    record = {**_config_record(trainer.config, subject, subject_path, trainer), **(record_extra or {})}
    if run_dir is not None and trainer.is_main:
        atomic_write_json(run_dir / runs_io.CONFIG_FILE, record)
        runs_io.write_split(run_dir, trainer.split)
        atomic_write_json(run_dir / runs_io.NORMALISER_FILE, trainer.normaliser.state_dict())
    fit, results = _fit_and_finish(trainer, run_dir, subject_path, callback, stop_event, train_deadline, estimate,
                                   baselines, on_status)
    return Trained(trainer, fit, results, record)


def run_training(subject_name: str, config: TrainConfig, data_dir: str | Path, runs_dir: str | Path,
                 callback: Callback | None = None, stop_event: threading.Event | None = None,
                 run_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                 on_status: Callable[[str], None] | None = None) -> Path:
    """Train `subject_name` from `data_dir` into a new run folder under `runs_dir` (or `run_dir`)
    through `train_subject`; `config.max_seconds` bounds the whole job from here (loading,
    preparation, training, evaluation). `on_status(message)` hears every phase message written to
    status.json (loading, features, the image-model choice, the closed-form start, evaluation),
    e.g. for a terminal.

    Returns the run folder. A NaN/Inf loss raises `TrainingDiverged` after writing status
    `failed`; a stop request or the time budget ends cleanly (best checkpoint restored, evaluated).
    Under torchrun every rank calls this: rank 0 makes (or takes) the folder and is the only one
    that writes into it (even when every rank is given `run_dir`); every rank trains and returns
    rank 0's folder.
    """
    # the time budget bounds the whole job from here: preparation, training and evaluation
    deadline = time.monotonic() + config.max_seconds if config.max_seconds else None
    subject_path = _subject_path(data_dir, subject_name)
    dist = dist_info_from_env()
    if dist.enabled:  # the process group first: the ranks agree on the run folder through it
        dist_ops.setup(config)
    created = run_dir is None and dist.is_main
    if created:
        run_dir = runs_io.new_run_dir(runs_dir, subject_name)
    run_dir = Path(dist_ops.broadcast_object(str(run_dir) if run_dir is not None else None, dist))
    try:
        with _writer_lock(run_dir, dist.is_main, "train"):
            status = _status_writer(run_dir, dist.is_main, on_status)
            status("running", "loading data", epochs=config.epochs, progress=0.0)
            try:
                subject = load_subject(subject_path)
            except BaseException as exc:
                status("failed", f"{type(exc).__name__}: {exc}")
                raise
            train_subject(subject, config, run_dir, subject_path=subject_path, cache_dir=cache_dir, callback=callback,
                          stop_event=stop_event, deadline=deadline, on_status=on_status)
            return run_dir
    except OSError as exc:
        if created and io_utils.is_disk_full(exc) and not (run_dir / runs_io.LAST_CKPT).is_file():
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing resumable in it: leave no empty run behind
            logger.info("removed %s: the disk filled up before its first checkpoint", run_dir)
        raise


def resume_training(run_dir: str | Path, data_dir: str | Path | None = None, callback: Callback | None = None,
                    stop_event: threading.Event | None = None, cache_dir: str | Path | None = None,
                    threads: int | None = None) -> Path:
    """Continue a run from its `last.pt` (same split, normaliser, optimizer state) in the same folder
    (`threads`: CPU threads for this continuation instead of the recorded setting)."""
    is_main = dist_info_from_env().is_main  # under torchrun every rank reads the folder, rank 0 writes
    with _writer_lock(Path(run_dir), is_main, "train --resume"):
        record = runs_io.load_run(run_dir)
        last = runs_io.load_checkpoint(record.path / runs_io.LAST_CKPT)
        best_path = record.path / runs_io.BEST_CKPT
        best = runs_io.load_checkpoint(best_path) if best_path.is_file() else None
        status = _status_writer(record.path, is_main)
        status("running", f"resuming from epoch {int(last['epoch'])}")
        try:
            trainer, subject_path = rebuild_trainer(record, data_dir=data_dir, cache_dir=cache_dir, threads=threads)
            trainer.load_training_state(last, best)
        except BaseException as exc:
            status("failed", f"could not resume: {type(exc).__name__}: {exc}")
            raise
        if is_main:
            # the log continues after the checkpoint's epoch: what was logged after it is re-run
            runs_io.truncate_metrics(record.path, int(last["epoch"]))
            cfg = dict(record.config)
            cfg["resumed_from_epoch"] = int(last["epoch"])
            cfg["world_size"], cfg["backend"] = trainer.dist.world_size, trainer.dist_backend
            atomic_write_json(record.path / runs_io.CONFIG_FILE, cfg)
        _fit_and_finish(trainer, record.path, subject_path, callback, stop_event)
        return record.path
