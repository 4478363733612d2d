"""What a fit carries from step to step and across a resume, and how a Trainer saves and restores it.

* `FitState` -- the fit's progress as one object: where it is (epoch, step, seconds), the best
  epoch so far (its val loss/score, its weights, whether `best.pt` needs rewriting), early-stopping
  patience used, the closed-form start's report and the loss curves. The loop (`loop.FitLoop`) reads
  and writes only this object and the Trainer's engine (models, data, optimisers).
* `model_state(trainer)` -- CPU copies of both towers and the loss (`{"image_tower", "neural_tower", "loss"}`).
* `training_state(trainer)` -- everything `last.pt` needs to resume: the weights, the optimiser and
  scheduler states, `FitState.to_checkpoint()` and the random streams (`rng_state`), so a resumed run
  draws what the uninterrupted one would. The keys are flat (`epoch`, `best_val`, ...), the layout
  every earlier version wrote, so their `last.pt` files resume.
* `load_training_state(trainer, last, best)` -- the inverse (the `best.pt` weights become the best state).
* `save_checkpoints(trainer)` -- `best.pt` when it changed and `last.pt`, atomically, rank 0 with a run dir.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from neuroalign.io_utils import atomic_torch_save
from neuroalign.training import runs as runs_io

logger = logging.getLogger(__name__)


@dataclass
class FitState:
    """A fit's progress (see the module docstring). A fresh fit starts from `FitState()`; a resume
    from `FitState.from_checkpoint(last, best)`."""

    epoch: int = 0  # epochs completed
    global_step: int = 0  # optimisation steps taken
    elapsed_s: float = 0.0  # training seconds of earlier sessions (a resumed run's), not this one
    best_val: float = math.inf  # val loss of the best epoch
    best_score: float = -math.inf  # select_by val_top1 / val_mrr: that val score (mean of both directions)
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    linear_start: dict[str, Any] | None = None  # what the closed-form start chose (init="linear")
    train_loss_hist: list[float] = field(default_factory=list)
    val_loss_hist: list[float] = field(default_factory=list)
    best_model: dict[str, Any] | None = None  # weights of the best epoch (CPU copies)
    best_dirty: bool = False  # best_model changed since best.pt was written

    @property
    def fresh(self) -> bool:
        """True before the first step of a new run (the closed-form start and epoch 0 come then)."""
        return self.epoch == 0 and self.global_step == 0

    def keep_best(self, model: dict[str, Any], val_loss: float, epoch: int, score: float | None = None) -> None:
        """`model` (the current weights) becomes the best epoch's."""
        self.best_val, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
        if score is not None:
            self.best_score = score
        self.best_model, self.best_dirty = model, True

    def to_checkpoint(self, elapsed_s: float | None = None) -> dict[str, Any]:
        """The progress keys of `last.pt` (`elapsed_s`: the seconds to record, default `self.elapsed_s`)."""
        return {"epoch": self.epoch, "global_step": self.global_step,
                "elapsed_s": self.elapsed_s if elapsed_s is None else elapsed_s,
                "best_val": self.best_val, "best_score": self.best_score, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "linear_start": self.linear_start,
                "train_loss_hist": list(self.train_loss_hist), "val_loss_hist": list(self.val_loss_hist)}

    @classmethod
    def from_checkpoint(cls, last: dict[str, Any], best: dict[str, Any] | None = None) -> "FitState":
        """The state a `last.pt` dict recorded (`best`: the `best.pt` dict, whose weights become the best)."""
        return cls(epoch=int(last["epoch"]), global_step=int(last["global_step"]), elapsed_s=float(last["elapsed_s"]),
                   best_val=float(last["best_val"]), best_score=float(last.get("best_score", -math.inf)),
                   best_epoch=int(last["best_epoch"]), bad_epochs=int(last["bad_epochs"]),
                   linear_start=last.get("linear_start"),
                   train_loss_hist=[float(x) for x in last["train_loss_hist"]],
                   val_loss_hist=[float(x) for x in last["val_loss_hist"]],
                   best_model=best["model"] if best is not None else None)


def cpu_state(module: nn.Module) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def model_state(trainer) -> dict[str, Any]:
    return {"image_tower": cpu_state(trainer.image_tower), "neural_tower": cpu_state(trainer.neural_tower),
            "loss": cpu_state(trainer.loss_fn)}


def load_model_state(trainer, state: dict[str, Any]) -> None:
    trainer.image_tower.load_state_dict(state["image_tower"])
    trainer.neural_tower.load_state_dict(state["neural_tower"])
    trainer.loss_fn.load_state_dict(state["loss"])


def training_state(trainer, elapsed_s: float | None = None) -> dict[str, Any]:
    """`last.pt`: weights, optimiser and scheduler states, the fit's progress (`FitState`) and the RNG streams."""
    t = trainer
    return {
        "model": model_state(t), "opt_image": t.opt_image.state_dict(), "opt_neural": t.opt_neural.state_dict(),
        "sched_image": t.sched_image.state_dict(), "sched_neural": t.sched_neural.state_dict(),
        **t.state.to_checkpoint(elapsed_s), "rng": rng_state(),
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
    t.state = FitState.from_checkpoint(last, best)
    if last.get("rng") and not t.dist.enabled:
        # the streams continue where the checkpoint left them (dropout masks as in the uninterrupted run);
        # under torchrun each rank keeps its own reseeded stream (only rank 0's was saved)
        set_rng_state(last["rng"])
    logger.info("resumed at epoch %d (best epoch %d, val %.4f)", t.state.epoch, t.state.best_epoch, t.state.best_val)


def save_checkpoints(trainer, elapsed_s: float | None = None) -> None:
    """`best.pt` when the best weights changed, then `last.pt` (`elapsed_s`: the training seconds to
    record, default the state's); rank 0 with a run dir only."""
    t, s = trainer, trainer.state
    if t.run_dir is None or not t.is_main:
        return
    if s.best_model is not None and s.best_dirty:
        atomic_torch_save(t.run_dir / runs_io.BEST_CKPT, {"model": s.best_model, "epoch": s.best_epoch, "val_loss": s.best_val})
        s.best_dirty = False
    atomic_torch_save(t.run_dir / runs_io.LAST_CKPT, training_state(t, elapsed_s))
