"""The Trainer: a plain object that fits the two towers of one subject (no threads, no Streamlit).

* Split by image identity (`split_indices`) and a `Normaliser` fitted on the TRAIN rows only
  (both can be passed in, e.g. when resuming or re-evaluating a run).
* Frozen backbone: the features of all N images are computed once (`cached_features`); every
  step only runs `ImageTower.project` on cached features. Fine-tune mode runs the backbone.
* Image side (1x1 conv, backbone in fine-tune mode, learnable temperature): AdamW. Neural side:
  RMSprop (reference) or AdamW. Each with ReduceLROnPlateau driven by the VALIDATION loss.
* The best epoch by val loss is kept (in memory; `best.pt` on disk) and restored at the end;
  `last.pt` holds the full state (optimizers, schedulers, histories) for resuming.
* Stops cleanly on `stop_event`, on the `max_seconds` budget and on early stopping; a NaN/Inf
  loss raises `TrainingDiverged` (never a silent garbage model).
* `.item()` (a device sync) only at the log interval and once per epoch.
* torchrun: when WORLD_SIZE > 1 the towers are wrapped in DistributedDataParallel and every rank
  trains on its shard of each epoch's permutation (DistributedSampler); the contrastive loss uses
  each rank's local batch (no cross-rank negatives); only rank 0 writes files.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from neuroalign.config import TrainConfig
from neuroalign.data import Normaliser, Subject, split_indices
from neuroalign.io_utils import atomic_torch_save
from neuroalign.evaluation.retrieval import retrieval_metrics
from neuroalign.models import CombinedLoss, ImageTower, build_neural_tower, cached_features, similarity_matrix
from neuroalign.training.linear_start import apply_linear_start, fit_linear_start
from neuroalign.training import runs as runs_io
from neuroalign.training.device import (
    available_memory_bytes,
    dist_info_from_env,
    init_distributed,
    resolve_device,
    seed_everything,
)

logger = logging.getLogger(__name__)

Callback = Callable[[str, dict[str, float]], None]
EVAL_BATCH = 256
MIN_IMPROVEMENT = 1e-6  # relative val-loss improvement that counts as "better"


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


class DualTower(nn.Module):
    """Both towers and the loss in one module (one DDP wrapper syncs all trainable parameters).

    `forward(image_input, responses)` -> `(loss, parts, image_maps, neural_maps)`; `image_input`
    is cached features `(B, C, h, w)` when `from_features`, else images `(B, 1, H, W)`.
    """

    def __init__(self, image_tower: ImageTower, neural_tower: nn.Module, loss_fn: CombinedLoss,
                 from_features: bool) -> None:
        super().__init__()
        self.image_tower, self.neural_tower, self.loss_fn = image_tower, neural_tower, loss_fn
        self.from_features = from_features

    def maps(self, image_input: torch.Tensor, responses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.image_tower.project(image_input) if self.from_features else self.image_tower(image_input)
        return img.float(), self.neural_tower(responses).float()

    def forward(self, image_input: torch.Tensor, responses: torch.Tensor):
        img, neu = self.maps(image_input, responses)
        loss, parts = self.loss_fn(img, neu)
        return loss, parts, img, neu


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a host tensor to `device` (through pinned memory on CUDA)."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class Trainer:
    """Fits one subject. `Trainer(config, subject).fit(callback)`; see the module docstring."""

    def __init__(self, config: TrainConfig, subject: Subject, run_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, split: dict[str, np.ndarray] | None = None,
                 normaliser: Normaliser | None = None, status: Callable[[str], None] | None = None) -> None:
        config.validate()
        self.config, self.subject = config, subject
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.status = status  # one-line progress of the preparation steps (features, closed-form start)
        self.dist = dist_info_from_env()
        device = resolve_device(config.device)
        if self.dist.enabled and device.type == "cuda":
            device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        init_distributed(self.dist, device)
        seed_everything(config.seed, config.deterministic)

        d = config.data
        self.split = split if split is not None else split_indices(subject.n_images, d.val_fraction, d.test_fraction, d.split_seed)
        self._check_split()
        if normaliser is None:
            normaliser = Normaliser(d.normaliser).fit(subject.responses[self.split["train"]])
        self.normaliser = normaliser
        responses = torch.from_numpy(normaliser.transform(subject.responses))
        self.responses = _to_device(responses, device)

        self.image_tower = ImageTower.from_config(config.image, n_components=config.n_components)
        self.neural_tower = build_neural_tower(subject.n_neurons, config.neural, config.n_components)
        self.repeats = None  # normalised single trials (R, N, K) for repeat augmentation
        if d.repeat_augment > 0 and subject.repeats is not None and subject.repeats.shape[0] >= 1:
            reps = np.stack([normaliser.transform(rep) for rep in subject.repeats])
            self.repeats = _to_device(torch.from_numpy(np.ascontiguousarray(reps, dtype=np.float32)), device)
        self._check_memory()
        self.fused_kernels = self._prepare_fused_kernels()
        self.loss_fn = CombinedLoss(config.loss)
        self.frozen = self.image_tower.frozen
        self.core = DualTower(self.image_tower, self.neural_tower, self.loss_fn, from_features=self.frozen).to(device)
        if self.frozen:  # the backbone never runs per step: features of all images, once
            report = None if status is None else \
                (lambda done, total: status(f"preparing: backbone features {done:,}/{total:,} images"))
            self.inputs = cached_features(self.image_tower, subject.images, subject.data_hash,
                                          cache_dir=cache_dir, device=device, progress=report)
        else:
            self.inputs = _to_device(torch.from_numpy(np.ascontiguousarray(subject.images, dtype=np.float32)), device)
        self.model: nn.Module = self.core
        if self.dist.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.core, device_ids=ids)

        image_params = [p for p in self.image_tower.parameters() if p.requires_grad]
        image_params += [p for p in self.loss_fn.parameters() if p.requires_grad]
        o = config.optim
        self.opt_image = torch.optim.AdamW(image_params, lr=o.image_lr, weight_decay=o.image_weight_decay)
        if o.neural_optimizer == "rmsprop":
            self.opt_neural = torch.optim.RMSprop(self.neural_tower.parameters(), lr=o.neural_lr, alpha=o.neural_alpha,
                                                  weight_decay=o.neural_weight_decay)
        else:
            self.opt_neural = torch.optim.AdamW(self.neural_tower.parameters(), lr=o.neural_lr,
                                                weight_decay=o.neural_weight_decay)
        plateau = dict(mode="min", factor=o.plateau_factor, patience=o.plateau_patience)
        self.sched_image = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt_image, **plateau)
        self.sched_neural = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt_neural, **plateau)

        self.epoch = 0
        self.global_step = 0
        self.elapsed_before = 0.0  # seconds spent in earlier (resumed) sessions
        self.best_val = math.inf
        self.best_score = -math.inf  # select_by val_top1 / val_mrr: that val score, mean of both directions
        self.best_epoch = 0
        self.linear_start_report: dict[str, Any] | None = None
        self.bad_epochs = 0
        self.best_state: dict[str, Any] | None = None
        self._best_dirty = False
        self.train_loss_hist: list[float] = []
        self.val_loss_hist: list[float] = []

    # ---- helpers --------------------------------------------------------------------------
    def _check_split(self) -> None:
        sets = [set(np.asarray(self.split[k]).tolist()) for k in ("train", "val", "test")]
        if sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]:
            raise ValueError("train/val/test splits overlap; expected disjoint image indices")
        if len(sets[0]) < 2 or len(sets[1]) < 2:
            raise ValueError(f"need >= 2 train and val images, got {len(sets[0])} and {len(sets[1])}")
        if max(max(s) for s in sets if s) >= self.subject.n_images:
            raise ValueError(f"split indices exceed the subject's {self.subject.n_images} images")

    def _autocast(self):
        if self.config.bf16 and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def _write(self) -> bool:
        return self.run_dir is not None and self.is_main

    def _lrs(self) -> tuple[float, float]:
        return float(self.opt_image.param_groups[0]["lr"]), float(self.opt_neural.param_groups[0]["lr"])

    def _batches(self, epoch: int) -> list[torch.Tensor]:
        """This epoch's training batches (index tensors into the subject), same for a given seed+epoch."""
        train = torch.as_tensor(self.split["train"], dtype=torch.long)
        if self.dist.enabled:
            sampler = torch.utils.data.DistributedSampler(range(len(train)), num_replicas=self.dist.world_size,
                                                          rank=self.dist.rank, shuffle=True, seed=self.config.seed)
            sampler.set_epoch(epoch)
            order = torch.as_tensor(list(sampler), dtype=torch.long)
        else:
            gen = torch.Generator().manual_seed(self.config.seed * 100003 + epoch)
            order = torch.randperm(len(train), generator=gen)
        chunks = list(train[order].split(self.config.batch_size))
        if len(chunks) > 1 and len(chunks[-1]) < 2:  # a 1-item batch has no negatives
            chunks = chunks[:-1]
        return [c.to(self.device) for c in chunks]

    def model_state(self) -> dict[str, Any]:
        """Weights of both towers and the loss (CPU copies)."""
        return {"image_tower": _cpu_state(self.image_tower), "neural_tower": _cpu_state(self.neural_tower),
                "loss": _cpu_state(self.loss_fn)}

    def load_model_state(self, state: dict[str, Any]) -> None:
        self.image_tower.load_state_dict(state["image_tower"])
        self.neural_tower.load_state_dict(state["neural_tower"])
        self.loss_fn.load_state_dict(state["loss"])

    def training_state(self) -> dict[str, Any]:
        """Everything `last.pt` needs to resume (tensors and plain containers only)."""
        return {
            "model": self.model_state(), "opt_image": self.opt_image.state_dict(), "opt_neural": self.opt_neural.state_dict(),
            "sched_image": self.sched_image.state_dict(), "sched_neural": self.sched_neural.state_dict(),
            "epoch": self.epoch, "global_step": self.global_step, "elapsed_s": self.elapsed_before,
            "best_val": self.best_val, "best_score": self.best_score, "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs, "linear_start": self.linear_start_report,
            "train_loss_hist": list(self.train_loss_hist), "val_loss_hist": list(self.val_loss_hist),
        }

    def load_training_state(self, last: dict[str, Any], best: dict[str, Any] | None = None) -> None:
        """Resume from a `last.pt` dict (and the `best.pt` dict, whose weights become the best state)."""
        self.load_model_state(last["model"])
        self.opt_image.load_state_dict(last["opt_image"])
        self.opt_neural.load_state_dict(last["opt_neural"])
        self.sched_image.load_state_dict(last["sched_image"])
        self.sched_neural.load_state_dict(last["sched_neural"])
        self.epoch, self.global_step = int(last["epoch"]), int(last["global_step"])
        self.elapsed_before = float(last["elapsed_s"])
        self.best_val, self.best_epoch = float(last["best_val"]), int(last["best_epoch"])
        self.bad_epochs = int(last["bad_epochs"])
        self.best_score = float(last.get("best_score", -math.inf))
        self.linear_start_report = last.get("linear_start")
        self.train_loss_hist = [float(x) for x in last["train_loss_hist"]]
        self.val_loss_hist = [float(x) for x in last["val_loss_hist"]]
        self.best_state = best["model"] if best is not None else None
        logger.info("resumed at epoch %d (best epoch %d, val %.4f)", self.epoch, self.best_epoch, self.best_val)

    def save_checkpoints(self) -> None:
        """Write `best.pt` (when it changed) and `last.pt` atomically (rank 0 with a run dir only)."""
        if not self._write():
            return
        if self.best_state is not None and self._best_dirty:
            atomic_torch_save(self.run_dir / runs_io.BEST_CKPT,
                              {"model": self.best_state, "epoch": self.best_epoch, "val_loss": self.best_val})
            self._best_dirty = False
        atomic_torch_save(self.run_dir / runs_io.LAST_CKPT, self.training_state())

    # ---- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def val_loss(self, indices: np.ndarray | None = None) -> float:
        """Mean loss over `indices` (default: the val split) in eval mode, batches of `batch_size` in a
        fixed order (the same scale as the training loss)."""
        idx = torch.as_tensor(self.split["val"] if indices is None else indices, dtype=torch.long)
        was = self.core.training
        self.core.eval()
        total, count = torch.zeros((), device=self.device), 0
        try:
            for chunk in idx.split(self.config.batch_size):
                if len(chunk) < 2:
                    continue
                chunk = chunk.to(self.device)
                with self._autocast():
                    loss, _, _, _ = self.core(self.inputs[chunk], self.responses[chunk])
                total += loss.float() * len(chunk)
                count += len(chunk)
        finally:
            self.core.train(was)
        return float(total.item() / max(count, 1))

    @torch.no_grad()
    def val_scores(self, indices: np.ndarray | None = None) -> dict[str, float]:
        """Mean of both directions of top1, mrr and mean_rank on `indices` (default: val), eval mode,
        with the similarity the model is scored by."""
        idx = np.asarray(self.split["val"] if indices is None else indices)
        img, neu = self.predict(idx)
        sim = similarity_matrix(torch.from_numpy(img), torch.from_numpy(neu), center=self.config.loss.center)
        m = retrieval_metrics(sim.numpy().astype(np.float64))
        return {k: float(0.5 * (m["image_to_neural"][k] + m["neural_to_image"][k])) for k in ("top1", "mrr", "mean_rank")}

    def _selection_score(self) -> float | None:
        """The val score that picks the restored epoch (None for select_by="val_loss")."""
        if self.config.select_by == "val_loss":
            return None
        return self.val_scores()[self.config.select_by.removeprefix("val_")]

    def fit_linear_start(self) -> dict[str, Any]:
        """Set both towers to the closed-form start (`training.linear_start`) from the train and val
        images; returns what was chosen (also kept in `linear_start_report`)."""
        if not self.frozen:
            raise ValueError("the linear start needs a frozen backbone (cached features); got mode 'finetune'")
        tr, va = (np.asarray(self.split[k], dtype=np.int64) for k in ("train", "val"))
        feats = self.inputs.flatten(1).cpu().numpy()
        resp = self.responses.cpu().numpy()
        start = fit_linear_start(feats[tr], resp[tr], feats[va], resp[va], self.config.n_components)
        apply_linear_start(self.image_tower, self.neural_tower, start)
        self.linear_start_report = start.report
        return start.report

    @torch.no_grad()
    def predict(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image-tower and neural-tower maps `(n, 16, 64)` float32 of the given images, eval mode."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        was = self.core.training
        self.core.eval()
        img_out, neu_out = [], []
        try:
            for chunk in idx.split(EVAL_BATCH):
                chunk = chunk.to(self.device)
                with self._autocast():
                    img, neu = self.core.maps(self.inputs[chunk], self.responses[chunk])
                img_out.append(img[:, 0].float().cpu())
                neu_out.append(neu[:, 0].float().cpu())
        finally:
            self.core.train(was)
        return torch.cat(img_out).numpy(), torch.cat(neu_out).numpy()

    def _check_memory(self) -> None:
        """Refuse up front, with what to do instead, a reference tower whose K x K blocks cannot fit
        (an out-of-memory error half-way through the first step says much less)."""
        need = self.neural_tower.folded_block_bytes()
        have = available_memory_bytes(self.device) if need else None
        if have is not None and need > 0.9 * have:
            k = self.neural_tower.n_neurons
            raise ValueError(
                f"the reference attention over {k:,} neurons needs about {need / 2**30:.1f} GiB for its "
                f"{k:,} x {k:,} blocks and their gradients, but {self.device} has {have / 2**30:.1f} GiB "
                "available; use the latent neural block, linear in the number of neurons (--neural-block "
                "latent, or Block type on the Train page), or a machine with more memory")

    def _prepare_fused_kernels(self) -> bool:
        """Build/load the fused CPU kernels of the folded attention now (once per machine, ~20 s)
        rather than inside the first training step. True when training will use them."""
        if self.device.type != "cpu" or not self.neural_tower.uses_folded_attention:
            return False
        from neuroalign.models import native

        return native.load() is not None

    # ---- training -------------------------------------------------------------------------
    def _check_finite(self, value: float, where: str) -> None:
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"loss became {value} at {where}; training stopped (best epoch so far: {self.best_epoch}). "
                "Try a lower learning rate or gradient clipping.")

    def fit(self, callback: Callback | None = None, stop_event: threading.Event | None = None) -> FitResult:
        """Train until `epochs`, early stopping, the time budget or `stop_event`; restore the best epoch.

        `callback(event, values)` gets event "step" (every `log_every_steps` steps) or "epoch", with
        plain floats: epoch, step, train_loss, val_loss (epoch), lr_image, lr_neural, samples_per_s,
        elapsed_s, progress (0..1), eta_s. With `config.threads` set, torch uses that many CPU
        threads while training (process-wide) and the previous count is restored afterwards.
        """
        threads, previous = self.config.threads, torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            return self._fit(callback, stop_event)
        finally:
            if threads:
                torch.set_num_threads(previous)

    def _start(self, callback: Callback | None) -> None:
        """Epoch 0 of a fresh run: the closed-form start (init="linear") and, under
        select_by val_top1 / val_mrr, the starting weights scored as the first candidate for "best"."""
        if self.epoch > 0 or self.global_step > 0:
            return
        if self.config.init == "linear" and self.linear_start_report is None:
            if self.status is not None and self.is_main:
                self.status("preparing: closed-form linear start (ridge and predictable subspace, choices on val)")
            self.fit_linear_start()
        if self.config.select_by != "val_loss" and self.best_state is None:
            self.best_score = self._selection_score()
            self.best_val, self.best_epoch = self.val_loss(), 0
            self.best_state, self._best_dirty = self.model_state(), True

    def _is_better(self, val_loss: float, score: float | None) -> bool:
        if score is not None:
            return score > self.best_score + 1e-9
        return val_loss < self.best_val - MIN_IMPROVEMENT * abs(self.best_val if math.isfinite(self.best_val) else 0)

    def _train_responses(self, idx: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        """The batch's responses; with repeat augmentation some rows are one single trial instead."""
        r = self.responses[idx]
        p = self.config.data.repeat_augment
        if self.repeats is None or p <= 0:
            return r
        gen = torch.Generator().manual_seed(self.config.seed * 7919 + epoch * 100003 + step)
        use = torch.rand(len(idx), generator=gen) < p
        which = torch.randint(self.repeats.shape[0], (len(idx),), generator=gen)
        if not bool(use.any()):
            return r
        single = self.repeats[which.to(self.device), idx]
        return torch.where(use.to(self.device)[:, None], single, r)

    def _fit(self, callback: Callback | None, stop_event: threading.Event | None) -> FitResult:
        cfg = self.config
        self._start(callback)
        t0 = time.monotonic()
        stop_reason = "completed"
        last_log_t, last_log_samples, samples = t0, 0, 0
        step_time = 0.0  # seconds inside training steps only (no validation, no checkpoints)
        for epoch in range(self.epoch + 1, cfg.epochs + 1):
            self.core.train()
            batches = self._batches(epoch)
            loss_sum, n_steps = torch.zeros((), device=self.device), 0
            for i, idx in enumerate(batches):
                reason = self._stop_reason(stop_event, t0)
                if reason is not None:
                    stop_reason = reason
                    break
                step_t0 = time.monotonic()
                with self._autocast():
                    loss, parts, _, _ = self.model(self.inputs[idx], self._train_responses(idx, epoch, i))
                self.opt_image.zero_grad(set_to_none=True)
                self.opt_neural.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip:
                    nn.utils.clip_grad_norm_(self.core.parameters(), cfg.optim.grad_clip)
                self.opt_image.step()
                self.opt_neural.step()
                loss_sum += loss.detach()
                n_steps += 1
                samples += len(idx)
                step_time += time.monotonic() - step_t0
                self.global_step += 1
                elapsed = self.elapsed_before + time.monotonic() - t0
                progress = self._progress(epoch - 1 + (i + 1) / len(batches), elapsed)
                log_now = self.global_step % max(cfg.log_every_steps, 1) == 0
                if log_now or self.device.type == "cpu":  # on CPU .item() costs no device sync
                    value = float(loss.item())
                    self._check_finite(value, f"epoch {epoch}, step {self.global_step}")
                if log_now:
                    now = time.monotonic()
                    rate = (samples - last_log_samples) / max(now - last_log_t, 1e-9)
                    last_log_t, last_log_samples = now, samples
                    lr_i, lr_n = self._lrs()
                    self._emit(callback, "step", {
                        "epoch": epoch, "step": self.global_step, "train_loss": value, "lr_image": lr_i,
                        "lr_neural": lr_n, "samples_per_s": rate, "elapsed_s": elapsed, "progress": progress,
                        "eta_s": self._eta(elapsed, progress), "temperature": float(parts["temperature"])})
            if n_steps == 0:  # stopped at an epoch boundary: nothing new to score
                break
            train_loss = float(loss_sum.item() / max(n_steps, 1))
            self._check_finite(train_loss, f"epoch {epoch} (mean training loss)")
            val_loss = self.val_loss()
            self._check_finite(val_loss, f"epoch {epoch} (validation loss)")
            score = self._selection_score()
            self.sched_image.step(val_loss)
            self.sched_neural.step(val_loss)
            self.epoch = epoch
            self.train_loss_hist.append(train_loss)
            self.val_loss_hist.append(val_loss)
            if self._is_better(val_loss, score):
                self.best_val, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
                if score is not None:
                    self.best_score = score
                self.best_state = self.model_state()
                self._best_dirty = True
            else:
                self.bad_epochs += 1
            elapsed = self.elapsed_before + time.monotonic() - t0
            progress = self._progress(epoch, elapsed)
            lr_i, lr_n = self._lrs()
            self._emit(callback, "epoch", {
                "epoch": epoch, "step": self.global_step, "train_loss": train_loss, "val_loss": val_loss,
                "best_val_loss": self.best_val, "best_epoch": self.best_epoch, "lr_image": lr_i, "lr_neural": lr_n,
                **({"val_score": score, "best_val_score": self.best_score} if score is not None else {}),
                "samples_per_s": samples / max(step_time, 1e-9), "elapsed_s": elapsed,
                "progress": progress, "eta_s": self._eta(elapsed, progress)})
            if cfg.early_stopping_patience is not None and self.bad_epochs >= cfg.early_stopping_patience \
                    and stop_reason == "completed":
                stop_reason = "early_stopping"
            if stop_reason != "completed":
                break
            if epoch % max(cfg.checkpoint_every_epochs, 1) == 0:
                self._save_timed(t0)
        if self.best_state is None:  # stopped before the first epoch ended: the initial weights are "best"
            self.best_val, self.best_epoch = self.val_loss(), self.epoch
            self.best_state, self._best_dirty = self.model_state(), True
        self.elapsed_before += time.monotonic() - t0
        self.save_checkpoints()
        if self.best_state is not None:
            self.load_model_state(self.best_state)
        logger.info("training ended (%s) after epoch %d; best epoch %d, val loss %.4f",
                    stop_reason, self.epoch, self.best_epoch, self.best_val)
        return FitResult(self.epoch, self.best_epoch, self.best_val, stop_reason, self.elapsed_before,
                         list(self.train_loss_hist), list(self.val_loss_hist))

    def _stop_reason(self, stop_event: threading.Event | None, t0: float) -> str | None:
        """'stopped', 'time_budget' or None; under DDP all ranks agree (one tiny all-reduce per step)."""
        code = 0
        if stop_event is not None and stop_event.is_set():
            code = 2
        elif self.config.max_seconds is not None and self.elapsed_before + time.monotonic() - t0 >= self.config.max_seconds:
            code = 1
        if self.dist.enabled:
            flag = torch.tensor([code], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            code = int(flag.item())
        return {0: None, 1: "time_budget", 2: "stopped"}[code]

    def _save_timed(self, t0: float) -> None:
        before = self.elapsed_before
        self.elapsed_before = before + time.monotonic() - t0
        try:
            self.save_checkpoints()
        finally:
            self.elapsed_before = before

    def _progress(self, epochs_done: float, elapsed: float) -> float:
        p = epochs_done / self.config.epochs
        if self.config.max_seconds:
            p = max(p, elapsed / self.config.max_seconds)
        return float(min(max(p, 0.0), 1.0))

    @staticmethod
    def _eta(elapsed: float, progress: float) -> float:
        return float(elapsed * (1 - progress) / progress) if progress > 0 else float("nan")

    def _emit(self, callback: Callback | None, event: str, values: dict[str, float]) -> None:
        values = {k: float(v) for k, v in values.items()}
        if self._write():
            runs_io.append_metrics(self.run_dir, {"event": event, **values})
        if callback is not None and self.is_main:
            callback(event, values)
