"""What a Trainer saves and restores: model weights, `best.pt` and `last.pt` (the run-directory
names are `training.runs`'s). Plain functions of a Trainer, so the Trainer holds the loop only.

* `model_state(trainer)` -- CPU copies of both towers and the loss (`{"image_tower", "neural_tower", "loss"}`).
* `training_state(trainer)` -- everything `last.pt` needs to resume (tensors and plain containers),
  including the random streams (`rng_state`), so a resumed run draws what the uninterrupted one would.
* `load_training_state(trainer, last, best)` -- the inverse (the `best.pt` weights become the best state).
* `save_checkpoints(trainer)` -- `best.pt` when it changed and `last.pt`, atomically, rank 0 with a run dir.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from neuroalign.io_utils import atomic_torch_save
from neuroalign.training import runs as runs_io

logger = logging.getLogger(__name__)


def cpu_state(module: nn.Module) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def model_state(trainer) -> dict[str, Any]:
    return {"image_tower": cpu_state(trainer.image_tower), "neural_tower": cpu_state(trainer.neural_tower),
            "loss": cpu_state(trainer.loss_fn)}


def load_model_state(trainer, state: dict[str, Any]) -> None:
    trainer.image_tower.load_state_dict(state["image_tower"])
    trainer.neural_tower.load_state_dict(state["neural_tower"])
    trainer.loss_fn.load_state_dict(state["loss"])


def training_state(trainer) -> dict[str, Any]:
    t = trainer
    return {
        "model": model_state(t), "opt_image": t.opt_image.state_dict(), "opt_neural": t.opt_neural.state_dict(),
        "sched_image": t.sched_image.state_dict(), "sched_neural": t.sched_neural.state_dict(),
        "epoch": t.epoch, "global_step": t.global_step, "elapsed_s": t.elapsed_before,
        "best_val": t.best_val, "best_score": t.best_score, "best_epoch": t.best_epoch,
        "bad_epochs": t.bad_epochs, "linear_start": t.linear_start_report,
        "train_loss_hist": list(t.train_loss_hist), "val_loss_hist": list(t.val_loss_hist),
        "rng": rng_state(),
    }


def rng_state() -> dict[str, Any]:
    """Every random stream training draws from, as tensors and plain values (`weights_only` loads it):
    torch CPU (dropout), torch CUDA (each device, when CUDA is in use), numpy and Python. The batch
    order needs none: each epoch's permutation comes from a generator seeded by seed and epoch."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "state": list(state), "gauss": gauss_next},
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    """Restore what `rng_state` saved (streams it lacks stay as they are)."""
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        states = list(rng["cuda"])[: torch.cuda.device_count()]
        for index, state in enumerate(states):
            torch.cuda.set_rng_state(state, index)
    if "numpy" in rng:
        n = rng["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "python" in rng:
        p = rng["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def load_training_state(trainer, last: dict[str, Any], best: dict[str, Any] | None = None) -> None:
    t = trainer
    load_model_state(t, last["model"])
    t.opt_image.load_state_dict(last["opt_image"])
    t.opt_neural.load_state_dict(last["opt_neural"])
    t.sched_image.load_state_dict(last["sched_image"])
    t.sched_neural.load_state_dict(last["sched_neural"])
    t.epoch, t.global_step = int(last["epoch"]), int(last["global_step"])
    t.elapsed_before = float(last["elapsed_s"])
    t.best_val, t.best_epoch = float(last["best_val"]), int(last["best_epoch"])
    t.bad_epochs = int(last["bad_epochs"])
    t.best_score = float(last.get("best_score", -math.inf))
    t.linear_start_report = last.get("linear_start")
    t.train_loss_hist = [float(x) for x in last["train_loss_hist"]]
    t.val_loss_hist = [float(x) for x in last["val_loss_hist"]]
    t.best_state = best["model"] if best is not None else None
    if last.get("rng") and not t.dist.enabled:
        # the streams continue where the checkpoint left them (dropout masks as in the uninterrupted run);
        # under torchrun each rank keeps its own reseeded stream (only rank 0's was saved)
        set_rng_state(last["rng"])
    logger.info("resumed at epoch %d (best epoch %d, val %.4f)", t.epoch, t.best_epoch, t.best_val)


def save_checkpoints(trainer) -> None:
    t = trainer
    if t.run_dir is None or not t.is_main:
        return
    if t.best_state is not None and t._best_dirty:
        atomic_torch_save(t.run_dir / runs_io.BEST_CKPT,
                          {"model": t.best_state, "epoch": t.best_epoch, "val_loss": t.best_val})
        t._best_dirty = False
    atomic_torch_save(t.run_dir / runs_io.LAST_CKPT, training_state(t))
