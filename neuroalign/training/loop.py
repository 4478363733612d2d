"""The training loop of one `Trainer.fit` call: epochs of steps, validation, best-epoch keeping,
stop conditions, progress events. `FitLoop(trainer, state, callback, stop_event, train_deadline).run()
-> FitResult`.

Three owners, each named where it is used: the Trainer (`t`) is the engine -- models, data on the
device, optimisers, the process group -- and is not changed here except by optimiser steps; the
`FitState` (`s`, `training.state`) is everything the fit advances and `last.pt` carries (epoch,
step, best epoch and its weights, the loss curves); the loop itself holds what lives for this one
call (start time, throughput counters, the deadline). Under torchrun every rank runs the same loop
on its slice of each global batch; decisions (validation numbers, stop requests) are rank 0's or
agreed by all ranks, so all ranks take every branch together.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from neuroalign.training import distributed as dist_ops
from neuroalign.training import runs as runs_io
from neuroalign.training.state import FitState

logger = logging.getLogger(__name__)

Callback = Callable[[str, dict[str, float]], None]
MIN_IMPROVEMENT = 1e-6  # relative val-loss improvement that counts as "better"
#: `last.pt` is written after the start, at the end of an epoch once this many seconds passed since the
#: previous write, every `checkpoint_every_epochs` epochs and at the end: a kill loses at most about
#: this long (or that many epochs) of training, and fast epochs do not pay a checkpoint each
CHECKPOINT_SECONDS = 30.0


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run must be marked failed."""


@dataclass
class FitResult:
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    stop_reason: str  # completed | early_stopping | time_budget | stopped
    elapsed_s: float
    train_loss_hist: list[float] = field(default_factory=list)
    val_loss_hist: list[float] = field(default_factory=list)


class FitLoop:
    def __init__(self, trainer, state: FitState, callback: Callback | None, stop_event: threading.Event | None,
                 train_deadline: float | None = None) -> None:
        self.t, self.s, self.callback, self.stop_event = trainer, state, callback, stop_event
        self.train_deadline = train_deadline  # time.monotonic() at which training ends (None: max_seconds)
        self.t0 = time.monotonic()
        self.last_log_t, self.last_log_samples = self.t0, 0
        self.samples = 0  # global-batch rows trained on in this fit
        self.step_time = 0.0  # seconds inside training steps only (no validation, no checkpoints)
        self.last_save = self.t0  # when last.pt was last written by this fit

    def _elapsed(self) -> float:
        """Training seconds of the whole run: earlier sessions' and this fit's."""
        return self.s.elapsed_s + time.monotonic() - self.t0

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> FitResult:
        t, s, cfg = self.t, self.s, self.t.config
        fresh = s.fresh
        self._start()
        self.t0 = self.last_log_t = time.monotonic()
        if fresh:  # last.pt from the start on (after the closed-form start): a kill in epoch 1 can resume
            self._save_timed()
        stop_reason = "completed"
        for epoch in range(s.epoch + 1, cfg.epochs + 1):
            train_loss, reason = self._train_epoch(epoch)
            stop_reason = reason or stop_reason
            if train_loss is None:  # stopped at an epoch boundary: nothing new to score
                break
            self._end_epoch(epoch, train_loss)
            if cfg.early_stopping_patience is not None and s.bad_epochs >= cfg.early_stopping_patience \
                    and stop_reason == "completed":
                stop_reason = "early_stopping"
            if stop_reason != "completed":
                break
            if epoch % max(cfg.checkpoint_every_epochs, 1) == 0 \
                    or time.monotonic() - self.last_save >= CHECKPOINT_SECONDS:
                self._save_timed()
        if s.best_model is None:  # stopped before the first epoch ended: the initial weights are "best"
            s.best_val, s.best_epoch = self._val_loss(), s.epoch
            s.best_model, s.best_dirty = t.model_state(), True
        s.elapsed_s = self._elapsed()
        t.save_checkpoints()
        if s.best_model is not None:
            t.load_model_state(s.best_model)
        logger.info("training ended (%s) after epoch %d; best epoch %d, val loss %.4f",
                    stop_reason, s.epoch, s.best_epoch, s.best_val)
        return FitResult(s.epoch, s.best_epoch, s.best_val, stop_reason, s.elapsed_s,
                         list(s.train_loss_hist), list(s.val_loss_hist))

    def _start(self) -> None:
        """Epoch 0 of a fresh run: the closed-form start (init="linear") and, under
        select_by val_top1 / val_mrr, the starting weights scored as the first candidate for "best"."""
        t, s = self.t, self.s
        if not s.fresh:
            return
        if t.config.init == "linear" and s.linear_start is None:
            if t.status is not None and t.is_main:
                t.status("preparing: closed-form linear start (ridge and predictable subspace, choices on val)")
            t.fit_linear_start()
        if t.config.select_by != "val_loss" and s.best_model is None:
            val_loss, score = self._validate()
            s.keep_best(t.model_state(), val_loss, 0, score)
            # epoch 0 on the loss curves (a "start" record, apart from the per-epoch "epoch" records): the
            # starting weights (the closed-form start) a run restores when no epoch beats them on val
            self._emit("start", {"epoch": 0, "step": 0, "val_loss": s.best_val,
                                 **({"val_score": s.best_score} if s.best_score is not None else {})})

    def _train_epoch(self, epoch: int) -> tuple[float | None, str | None]:
        """The epoch's steps: `(mean training loss, or None when no step ran; stop reason or None)`."""
        t, s, cfg = self.t, self.s, self.t.config
        t.core.train()
        batches = t.batches(epoch)
        loss_sum, n_steps, reason = torch.zeros((), device=t.device), 0, None
        for i, batch in enumerate(batches):
            reason = self._stop_reason()
            if reason is not None:
                break
            step_t0 = time.monotonic()
            loss, parts = self._step(batch, epoch, i)
            loss_sum += loss.detach()
            n_steps += 1
            self.samples += len(batch)
            self.step_time += time.monotonic() - step_t0
            s.global_step += 1
            elapsed = self._elapsed()
            progress = self._progress(epoch - 1 + (i + 1) / len(batches), elapsed)
            log_now = s.global_step % max(cfg.log_every_steps, 1) == 0
            if log_now or t.device.type == "cpu":  # on CPU .item() costs no device sync
                value = float(loss.item())
                self._check_finite(value, f"epoch {epoch}, step {s.global_step}")
            if log_now:
                now = time.monotonic()
                rate = (self.samples - self.last_log_samples) / max(now - self.last_log_t, 1e-9)
                self.last_log_t, self.last_log_samples = now, self.samples
                lr_i, lr_n = t.lrs()
                self._emit("step", {
                    "epoch": epoch, "step": s.global_step, "train_loss": value, "lr_image": lr_i,
                    "lr_neural": lr_n, "samples_per_s": rate, "elapsed_s": elapsed, "progress": progress,
                    "eta_s": self._eta(elapsed, progress), "temperature": float(parts["temperature"])})
        if n_steps == 0:
            return None, reason
        train_loss = float(loss_sum.item() / max(n_steps, 1))
        self._check_finite(train_loss, f"epoch {epoch} (mean training loss)")
        return train_loss, reason

    def _step(self, batch: torch.Tensor, epoch: int, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimisation step on a global batch (this rank's slice of it under torchrun; the model
        gathers both towers' maps, so the loss is the global batch's)."""
        t = self.t
        if t.dist.enabled:
            idx, offset = t.local_rows(batch)
            responses = t.train_responses(idx, epoch, i, offset, len(batch))
            with t.autocast():
                loss, parts, _, _ = t.model(t.inputs[idx], responses, total=len(batch))
        else:
            with t.autocast():
                loss, parts, _, _ = t.model(t.inputs[batch], t.train_responses(batch, epoch, i))
        t.opt_image.zero_grad(set_to_none=True)
        t.opt_neural.zero_grad(set_to_none=True)
        loss.backward()
        if t.config.optim.grad_clip:
            nn.utils.clip_grad_norm_(t.core.parameters(), t.config.optim.grad_clip)
        t.opt_image.step()
        t.opt_neural.step()
        return loss, parts

    def _end_epoch(self, epoch: int, train_loss: float) -> None:
        """Validate, step the schedulers, keep the best weights, report the epoch."""
        t, s = self.t, self.s
        val_loss, score = self._validate()
        self._check_finite(val_loss, f"epoch {epoch} (validation loss)")
        t.sched_image.step(val_loss)
        t.sched_neural.step(val_loss)
        s.epoch = epoch
        s.train_loss_hist.append(train_loss)
        s.val_loss_hist.append(val_loss)
        if self._is_better(val_loss, score):
            s.keep_best(t.model_state(), val_loss, epoch, score)
        else:
            s.bad_epochs += 1
        elapsed = self._elapsed()
        progress = self._progress(epoch, elapsed)
        lr_i, lr_n = t.lrs()
        self._emit("epoch", {
            "epoch": epoch, "step": s.global_step, "train_loss": train_loss, "val_loss": val_loss,
            "best_val_loss": s.best_val, "best_epoch": s.best_epoch, "lr_image": lr_i, "lr_neural": lr_n,
            **({"val_score": score, "best_val_score": s.best_score} if score is not None else {}),
            "samples_per_s": self.samples / max(self.step_time, 1e-9), "elapsed_s": elapsed,
            "progress": progress, "eta_s": self._eta(elapsed, progress)})

    # ---- decisions ------------------------------------------------------------------------
    def _val_loss(self) -> float:
        """The validation loss, computed by rank 0 and the same on every rank."""
        t = self.t
        return dist_ops.agree([t.val_loss() if t.is_main else math.nan], t.dist, t.device)[0]

    def _validate(self) -> tuple[float, float | None]:
        """`(val_loss, selection score or None)`, computed by rank 0 and the same on every rank."""
        t = self.t
        used = t.config.select_by != "val_loss"
        if not t.dist.enabled:
            return t.val_loss(), t.selection_score()
        values = [t.val_loss(), t.selection_score() if used else 0.0] if t.is_main else [math.nan, math.nan]
        val_loss, score = dist_ops.agree(values, t.dist, t.device)
        return val_loss, (score if used else None)

    def _is_better(self, val_loss: float, score: float | None) -> bool:
        s = self.s
        if score is not None:
            return score > s.best_score + 1e-9
        return val_loss < s.best_val - MIN_IMPROVEMENT * abs(s.best_val if math.isfinite(s.best_val) else 0)

    def _check_finite(self, value: float, where: str) -> None:
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"loss became {value} at {where}; training stopped (best epoch so far: {self.s.best_epoch}). "
                "Try a lower learning rate or gradient clipping.")

    def _stop_reason(self) -> str | None:
        """'stopped', 'time_budget' or None; under DDP all ranks agree (one tiny all-reduce per step)."""
        t, code = self.t, 0
        if self.stop_event is not None and self.stop_event.is_set():
            code = 2
        elif self.train_deadline is not None:
            code = int(time.monotonic() >= self.train_deadline)
        elif t.config.max_seconds is not None and self._elapsed() >= t.config.max_seconds:
            code = 1
        return {0: None, 1: "time_budget", 2: "stopped"}[dist_ops.max_code(code, t.dist, t.device)]

    # ---- reporting ------------------------------------------------------------------------
    def _save_timed(self) -> None:
        """`best.pt` / `last.pt` now, recording the training seconds so far."""
        self.t.save_checkpoints(elapsed_s=self._elapsed())
        self.last_save = time.monotonic()

    def _progress(self, epochs_done: float, elapsed: float) -> float:
        cfg = self.t.config
        p = epochs_done / cfg.epochs
        if self.train_deadline is not None:  # the job's budget: the loop ends at train_deadline
            span = self.train_deadline - self.t0
            p = max(p, (time.monotonic() - self.t0) / span if span > 0 else 1.0)
        elif cfg.max_seconds:
            p = max(p, elapsed / cfg.max_seconds)
        return float(min(max(p, 0.0), 1.0))

    @staticmethod
    def _eta(elapsed: float, progress: float) -> float:
        return float(elapsed * (1 - progress) / progress) if progress > 0 else float("nan")

    def _emit(self, event: str, values: dict[str, float]) -> None:
        t = self.t
        values = {k: float(v) for k, v in values.items()}
        if t.writes_files:
            runs_io.append_metrics(t.run_dir, {"event": event, **values})
        if self.callback is not None and t.is_main:
            self.callback(event, values)
