"""One training run end to end: load -> split -> normalise -> train -> evaluate -> exports.

`run_training` is what the CLI (`python -m neuroalign train`) and the dashboard's background jobs
call; `resume_training` continues an interrupted run from its `last.pt` in the same folder.
The run folder is written as training goes (see `neuroalign.training.runs`): `status.json`
says queued/running/finished/failed/stopped, and a failure leaves its one-line reason there.

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
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from neuroalign import __version__, io_utils
from neuroalign.config import TrainConfig
from neuroalign.data import Subject, load_subject
from neuroalign.evaluation.evaluate import estimate_evaluation_seconds, evaluate_trainer
from neuroalign.io_utils import atomic_savemat, atomic_write_json
from neuroalign.training import distributed as dist_ops
from neuroalign.training import runs as runs_io
from neuroalign.training.device import describe_device, dist_info_from_env
from neuroalign.training.rebuild import rebuild_trainer, subject_path as _subject_path
from neuroalign.training.trainer import Callback, FitResult, Trainer, TrainingDiverged

__all__ = ["STOP_MESSAGES", "rebuild_trainer", "resume_training", "run_training"]

logger = logging.getLogger(__name__)

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


def _config_record(config: TrainConfig, subject: Subject, subject_path: Path, trainer: Trainer) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "subject": {"name": subject.name, "path": str(subject_path), "data_hash": subject.data_hash,
                    "n_images": subject.n_images, "n_neurons": subject.n_neurons,
                    "image_shape": list(subject.images.shape[2:]), "simulated": bool(subject.meta.get("simulated", False))},
        "code_version": __version__, "git_commit": _git_commit(), "torch_version": torch.__version__,
        "device": str(trainer.device), "device_description": describe_device(trainer.device),
        "fused_cpu_kernels": trainer.fused_kernels, "world_size": trainer.dist.world_size,
        "backend": trainer.dist_backend, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "resumed_from_epoch": None, "image_choice": trainer.image_choice,
        "reproduce": f"python -m neuroalign train --subjects {subject.name} (config.json holds every setting)",
    }


def _status_writer(run_dir: Path, is_main: bool, on_status: Callable[[str], None] | None = None):
    """`write_status` into `run_dir` on rank 0 (and `on_status(message)` while running); a no-op on the
    other torchrun ranks."""
    def write(state: str, message: str = "", **fields: Any) -> None:
        if is_main:
            if on_status is not None and state == "running" and message:
                on_status(message)
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


def _finish(trainer: Trainer, fit: FitResult, run_dir: Path, subject_path: Path) -> None:
    if not trainer.is_main:
        return
    atomic_savemat(run_dir / runs_io.LOSS_MAT, {
        "train_loss_hist": np.asarray(fit.train_loss_hist, dtype=np.float64).reshape(1, -1),
        "test_loss_hist": np.asarray(fit.val_loss_hist, dtype=np.float64).reshape(1, -1),
    })
    estimate = getattr(trainer, "evaluation_estimate_s", None)
    message = "evaluating on the test split (retrieval, baselines, FEVE" + \
        (f"; about {estimate:.0f} s)" if estimate else ")")
    runs_io.write_status(run_dir, "running", message, progress=1.0, epoch=fit.epochs_run, phase="evaluation",
                         eta_s=estimate)
    if getattr(trainer, "on_status", None) is not None:
        trainer.on_status(message)
    training = {"epochs_run": fit.epochs_run, "best_epoch": fit.best_epoch, "best_val_loss": fit.best_val_loss,
                "stop_reason": fit.stop_reason, "elapsed_s": fit.elapsed_s, "select_by": trainer.config.select_by}
    if math.isfinite(trainer.state.best_score):
        training["best_val_score"] = trainer.state.best_score
    if trainer.state.linear_start is not None:
        training["linear_start"] = trainer.state.linear_start
    results = evaluate_trainer(trainer, run_dir=run_dir, subject_path=subject_path, training=training)
    _store_importance(trainer, run_dir)
    t = results["test"]
    summary = (f"{STOP_MESSAGES[fit.stop_reason]} (epoch {fit.epochs_run}, best {fit.best_epoch}); test top-1 "
               f"image → neural {t['image_to_neural']['top1']:.3f}, neural → image {t['neural_to_image']['top1']:.3f} "
               f"(chance {t['chance_top1']:.3f})")
    state = "stopped" if fit.stop_reason == "stopped" else "finished"
    runs_io.write_status(run_dir, state, summary, progress=1.0, epoch=fit.epochs_run)


def _store_importance(trainer: Trainer, run_dir: Path) -> None:
    """Which neurons drive the alignment, over every test image, once, in the job (the Neurons page
    reads it; a failure here is logged and never fails the finished run)."""
    from neuroalign.training.run_eval import run_importance, save_importance

    message = "computing which neurons drive the alignment (all test images)"
    runs_io.write_status(run_dir, "running", message, progress=1.0, phase="importance")
    if getattr(trainer, "on_status", None) is not None:
        trainer.on_status(message)
    try:
        save_importance(run_dir, run_importance(run_dir, subject=trainer.subject))
    except Exception as exc:  # noqa: BLE001 -- the page recomputes it; the run's results stand
        logger.warning("neuron importance not stored for %s: %s: %s", run_dir.name, type(exc).__name__, exc)


def _train_and_finish(trainer: Trainer, run_dir: Path, subject_path: Path, callback: Callback | None,
                      stop_event: threading.Event | None, train_deadline: float | None = None) -> Path:
    config = trainer.config

    def on_event(event: str, values: dict[str, float]) -> None:
        if event == "epoch":
            runs_io.write_status(run_dir, "running", f"epoch {int(values['epoch'])}/{config.epochs}",
                                 progress=values["progress"], epoch=int(values["epoch"]), epochs=config.epochs,
                                 eta_s=values.get("eta_s"))
        if callback is not None:
            callback(event, values)

    try:
        fit = trainer.fit(callback=on_event if trainer.is_main else None, stop_event=stop_event,
                          train_deadline=train_deadline)
        _finish(trainer, fit, run_dir, subject_path)
    except TrainingDiverged as exc:
        if trainer.is_main:
            _fail_status(run_dir, str(exc))
        raise
    except BaseException as exc:
        if trainer.is_main:
            _fail_status(run_dir, f"{type(exc).__name__}: {exc}")
        raise
    return run_dir


def run_training(subject_name: str, config: TrainConfig, data_dir: str | Path, runs_dir: str | Path,
                 callback: Callback | None = None, stop_event: threading.Event | None = None,
                 run_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                 on_status: Callable[[str], None] | None = None) -> Path:
    """Train `subject_name` from `data_dir` into a new run folder under `runs_dir` (or `run_dir`).
    `on_status(message)` hears every phase message written to status.json (loading, features, the
    image-model choice, the closed-form start, evaluation), e.g. for a terminal.

    Returns the run folder. A NaN/Inf loss raises `TrainingDiverged` after writing status
    `failed`; a stop request or the time budget ends cleanly (best checkpoint restored, evaluated).
    Under torchrun every rank calls this: rank 0 makes (or takes) the folder and is the only one
    that writes into it (even when every rank is given `run_dir`); every rank trains and returns
    rank 0's folder.
    """
    config.validate()
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
            return _train_new(run_dir, subject_name, subject_path, config, callback, stop_event, cache_dir,
                              dist.is_main, deadline, on_status)
    except OSError as exc:
        if created and io_utils.is_disk_full(exc) and not (run_dir / runs_io.LAST_CKPT).is_file():
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing resumable in it: leave no empty run behind
            logger.info("removed %s: the disk filled up before its first checkpoint", run_dir)
        raise


def _train_new(run_dir: Path, subject_name: str, subject_path: Path, config: TrainConfig,
               callback: Callback | None, stop_event: threading.Event | None,
               cache_dir: str | Path | None, is_main: bool, deadline: float | None = None,
               on_status: Callable[[str], None] | None = None) -> Path:
    """`run_training` in its (locked) run folder; `deadline` (time.monotonic()) ends the whole job."""
    status = _status_writer(run_dir, is_main, on_status)
    status("running", "loading data", epochs=config.epochs, progress=0.0)
    try:
        subject = load_subject(subject_path)
        status("running", "preparing (backbone features and, on a CPU, the fused kernels are built once)")
        trainer = Trainer(config, subject, run_dir=run_dir, cache_dir=cache_dir,
                          status=lambda message: status("running", message, progress=0.0), deadline=deadline)
        trainer.on_status = on_status
        trainer.evaluation_estimate_s = estimate_evaluation_seconds(trainer)  # the evaluation's ETA
        # training ends early enough for the evaluation to fit the budget
        train_deadline = deadline - trainer.evaluation_estimate_s if deadline is not None else None
    except BaseException as exc:
        status("failed", f"{type(exc).__name__}: {exc}")
        raise
    if trainer.is_main:
        # the trainer's config: "auto" resolved to the image model it chose (its comparison recorded too)
        atomic_write_json(run_dir / runs_io.CONFIG_FILE, _config_record(trainer.config, subject, subject_path, trainer))
        runs_io.write_split(run_dir, trainer.split)
        atomic_write_json(run_dir / runs_io.NORMALISER_FILE, trainer.normaliser.state_dict())
    return _train_and_finish(trainer, run_dir, subject_path, callback, stop_event, train_deadline)


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
        return _train_and_finish(trainer, record.path, subject_path, callback, stop_event)
