"""The Trainer: a plain object that fits the two towers of one subject (no threads, no Streamlit).

* Split by image identity (`split_indices`) and a `Normaliser` fitted on the TRAIN rows only
  (both can be passed in, e.g. when resuming or re-evaluating a run).
* Frozen backbone: the features of all N images are computed once (`cached_features`); every
  step only runs `ImageTower.project` on cached features. Fine-tune mode runs the backbone.
* Image side (head, backbone in fine-tune mode, learnable temperature): AdamW. Neural side:
  RMSprop (reference) or AdamW. Each with ReduceLROnPlateau driven by the VALIDATION loss.
* The Trainer is the engine (models, data on the device, optimisers, process group); what a fit
  changes as it goes -- epoch, step, the best epoch and its weights, the loss curves -- is one
  `training.state.FitState` (`trainer.state`), which the loop (`training.loop.FitLoop`) takes
  explicitly and `last.pt` carries (with the weights, optimiser states and RNG streams).
* The best epoch (by val loss or `select_by`) is kept (in memory; `best.pt` on disk) and restored at
  the end; `last.pt` holds the full state for resuming (`training.state`).
* Stops cleanly on `stop_event`, on the `max_seconds` budget and on early stopping; a NaN/Inf
  loss raises `TrainingDiverged` (never a silent garbage model).
* `.item()` (a device sync) only at the log interval and once per epoch.
* torchrun (`training.distributed`): `batch_size` is the GLOBAL batch; every rank draws the
  single-process permutation and takes its slice of each global batch; both towers' maps are
  all-gathered (gradient to each rank's rows) so the loss, its gradient and therefore the training
  equal one process with the same global batch. Validation, selection and early stopping use rank
  0's numbers on every rank; only rank 0 writes files. Randomness that depends on the world size:
  dropout masks (each rank its own stream); repeat augmentation is drawn per global batch and is
  the single-process draw on any number of processes.
* Two phases: `Trainer(...)` only stores and checks its arguments (cheap); `prepare()` builds the
  engine (idempotent; `fit()` and every engine method call it). The engine attributes
  (`ENGINE_ATTRIBUTES`) do not exist before that: reading one raises an AttributeError naming
  `prepare()` -- no hidden work on attribute access, and any other missing name stays a plain typo.
"""

from __future__ import annotations

import logging
import threading
from contextlib import nullcontext
from functools import cached_property, partial, wraps
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from neuroalign.config import AUTO, TrainConfig
from neuroalign.data import Normaliser, Subject, split_indices
from neuroalign.evaluation.retrieval import retrieval_metrics
from neuroalign.models import CombinedLoss, ImageTower, build_neural_tower, cached_features, similarity_matrix
from neuroalign.training import distributed as dist_ops
from neuroalign.training import state as state_io
from neuroalign.training.device import available_memory_bytes, seed_everything
from neuroalign.training.dual_tower import DualTower
from neuroalign.training.linear_start import CV_FOLDS, apply_linear_start, fit_linear_start, train_population
from neuroalign.training.loop import Callback, FitLoop, FitResult, TrainingDiverged
from neuroalign.training.state import FitState

logger = logging.getLogger(__name__)

EVAL_BATCH = 256
__all__ = ["Callback", "DualTower", "FitResult", "FitState", "Trainer", "TrainingDiverged"]


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a host tensor to `device` (through pinned memory on CUDA)."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def build_optimisers(config: TrainConfig, image_tower: nn.Module, neural_tower: nn.Module, loss_fn: nn.Module):
    """AdamW over the image side (+ the learnable temperature), RMSprop or AdamW over the neural side,
    each with ReduceLROnPlateau: `(opt_image, opt_neural, sched_image, sched_neural)`."""
    o = config.optim
    image_params = [p for p in image_tower.parameters() if p.requires_grad]
    image_params += [p for p in loss_fn.parameters() if p.requires_grad]
    opt_image = torch.optim.AdamW(image_params, lr=o.image_lr, weight_decay=o.image_weight_decay)
    if o.neural_optimizer == "rmsprop":
        opt_neural = torch.optim.RMSprop(neural_tower.parameters(), lr=o.neural_lr, alpha=o.neural_alpha,
                                         weight_decay=o.neural_weight_decay)
    else:
        opt_neural = torch.optim.AdamW(neural_tower.parameters(), lr=o.neural_lr, weight_decay=o.neural_weight_decay)
    plateau = dict(mode="min", factor=o.plateau_factor, patience=o.plateau_patience)
    return (opt_image, opt_neural, torch.optim.lr_scheduler.ReduceLROnPlateau(opt_image, **plateau),
            torch.optim.lr_scheduler.ReduceLROnPlateau(opt_neural, **plateau))


def _check_split(split: dict[str, np.ndarray], n_images: int) -> None:
    """ValueError unless `split` has disjoint train/val/test image indices below `n_images`, with at
    least 2 train and 2 val images."""
    missing = [k for k in ("train", "val", "test") if k not in split]
    if missing:
        raise ValueError(f"the split lacks {', '.join(missing)}; expected train, val and test image indices")
    sets = [set(np.asarray(split[k]).tolist()) for k in ("train", "val", "test")]
    if sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]:
        raise ValueError("train/val/test splits overlap; expected disjoint image indices")
    if len(sets[0]) < 2 or len(sets[1]) < 2:
        raise ValueError(f"need >= 2 train and val images, got {len(sets[0])} and {len(sets[1])}")
    if max(max(s) for s in sets if s) >= n_images:
        raise ValueError(f"split indices exceed the subject's {n_images} images")


class _BuiltByPrepare:
    """Class-level stand-in for one engine attribute: until `prepare()` sets the instance's own value
    (which Python then finds first, so this costs nothing afterwards), reading it raises an
    AttributeError that says what to do."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        raise AttributeError(f"Trainer.{self.name} is built by prepare(); call trainer.prepare() "
                             "(fit() and the engine methods do) first")


def _needs_engine(method: Callable) -> Callable:
    """An engine method: `prepare()` first (a no-op once prepared)."""
    @wraps(method)
    def run(self: "Trainer", *args: Any, **kwargs: Any) -> Any:
        self.prepare()
        return method(self, *args, **kwargs)
    return run


class Trainer:
    """Fits one subject. `Trainer(config, subject).fit(callback)`; see the module docstring.

    The constructor keeps the settings (and checks a given split); `prepare()` builds the engine."""

    # set by prepare(); before it, reading one raises an AttributeError naming prepare()
    ENGINE_ATTRIBUTES = ("dist", "device", "dist_backend", "split", "normaliser", "responses", "image_choice",
                         "image_tower", "neural_tower", "repeats", "fused_kernels", "loss_fn", "frozen", "core",
                         "inputs", "model", "opt_image", "opt_neural", "sched_image", "sched_neural", "state")

    def __init__(self, config: TrainConfig, subject: Subject, run_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, split: dict[str, np.ndarray] | None = None,
                 normaliser: Normaliser | None = None, status: Callable[[str], None] | None = None,
                 deadline: float | None = None) -> None:
        # `config` is validated where it entered (CLI, form, Aligner, worker spec, run folder), not again
        # here. Its image model may be "auto" until prepare() resolves it (`self.config` is replaced).
        self.config, self.subject = config, subject
        # `deadline`: time.monotonic() by which the whole job (preparation, training, evaluation) must
        # end -- run_training sets it from `max_seconds`; "auto" starts no candidate it expects to end
        # after half the budget or after the time the evaluation needs, and cross-validates the
        # winner's start only if that fits before the evaluation. The training loop's own end is
        # `fit(train_deadline=...)`.
        self.deadline = deadline
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.cache_dir = cache_dir  # backbone features (and "auto"'s candidates) are cached here
        self.status = status  # one-line progress of the preparation steps (features, closed-form start)
        if split is not None:  # a given split (resume, re-evaluation, Aligner) is checked now: cheap
            _check_split(split, subject.n_images)
        self._given_split, self._given_normaliser = split, normaliser
        self._prepared = False

    def prepare(self) -> "Trainer":
        """Build the engine, once (later calls return at once); returns self. In order:

        1. the device and, under torchrun, the process group (`distributed.setup`);
        2. `seed_everything(config.seed)` -- before anything random is built;
        3. the split (the given one, else by image identity) and the normaliser (the given one, else
           fitted on the train rows); the normalised responses on the device;
        4. image model "auto": the candidates compared and `config` replaced by the chosen one;
        5. the image and neural towers; the single trials for repeat augmentation; the memory check
           (a K x K-block tower that cannot fit is refused); the fused CPU kernels (built once);
        6. the loss and `core` (both towers + loss) on the device;
        7. `inputs`: the cached backbone features of all images (frozen) or the images (fine-tune);
        8. `model` (`core`, in DistributedDataParallel under torchrun) and the optimisers with their
           schedulers; `state`, a fresh `FitState`.

        A prepare() that raised leaves a half-built Trainer: make a new one.
        """
        if self._prepared:
            return self
        config, subject = self.config, self.subject
        env = dist_ops.setup(config)  # device and (torchrun) process group
        self.dist, self.device, self.dist_backend = env.dist, env.device, env.backend
        seed_everything(config.seed, config.deterministic)
        self._prepare_data(self._given_split, self._given_normaliser)
        self.image_choice: dict[str, Any] | None = None  # what "auto" compared and chose (config.json)
        self._chosen_start = None
        if config.image.backbone == AUTO:
            config = self.config = self._choose_image_model(self.cache_dir)
        self.image_tower = ImageTower.from_config(config.image, n_components=config.n_components)
        self.neural_tower = build_neural_tower(subject.n_neurons, config.neural, config.n_components)
        self._prepare_repeats()
        self._check_memory()
        self.fused_kernels = self._prepare_fused_kernels()
        self.loss_fn = CombinedLoss(config.loss)
        self.frozen = self.image_tower.frozen
        gather = partial(dist_ops.gather_rows, dist=self.dist) if self.dist.enabled else None
        self.core = DualTower(self.image_tower, self.neural_tower, self.loss_fn, from_features=self.frozen,
                              gather=gather).to(self.device)
        self.inputs = self._prepare_inputs(self.cache_dir)
        self.model: nn.Module = self._wrap_ddp()
        self.opt_image, self.opt_neural, self.sched_image, self.sched_neural = \
            build_optimisers(config, self.image_tower, self.neural_tower, self.loss_fn)
        self.state = FitState()  # the fit's progress; load_training_state replaces it on resume
        self._prepared = True
        return self

    # ---- preparation steps (prepare) ------------------------------------------------------
    def _prepare_data(self, split: dict[str, np.ndarray] | None, normaliser: Normaliser | None) -> None:
        """The split (by image) and the normaliser fitted on train rows; normalised responses on the device."""
        d, subject = self.config.data, self.subject
        if split is None:  # a given split was checked by the constructor
            split = split_indices(subject.n_images, d.val_fraction, d.test_fraction, d.split_seed)
            _check_split(split, subject.n_images)
        self.split = split
        self.normaliser = normaliser if normaliser is not None else \
            Normaliser(d.normaliser).fit(subject.responses[self.split["train"]])
        self.responses = _to_device(torch.from_numpy(self.normaliser.transform(subject.responses)), self.device)

    def _choose_image_model(self, cache_dir: str | Path | None) -> TrainConfig:
        """Image model "auto": the candidate whose closed-form start scores best on the val images
        (`training.image_choice`); returns the config with it in place of "auto". Every torchrun rank
        computes the same choice from the same data."""
        from neuroalign.training import image_choice

        report = None if self.status is None or not self.is_main else self.status
        choose_by = cv_by = None
        if self.deadline is not None and self.config.max_seconds:
            # the evaluation must fit after the choice: measured now, for features of a typical
            # candidate's width on the readout grid (`image_choice.TYPICAL_CHANNELS`)
            from neuroalign.evaluation.evaluate import estimate_evaluation_seconds

            width = image_choice.TYPICAL_CHANNELS * int(np.prod(self.config.image.grid))
            cv_by = self.deadline - estimate_evaluation_seconds(self, feature_dim=width)
            choose_by = min(self.deadline - 0.5 * self.config.max_seconds, cv_by)
        choice = image_choice.choose_image_features(self.config, self.subject, self.split,
                                                    self.responses.cpu().numpy(), cache_dir=cache_dir,
                                                    device=self.device, candidates=image_choice.AUTO_CANDIDATES,
                                                    status=report, deadline=choose_by, shrink=self.start_shrink,
                                                    cv_deadline=cv_by)
        self.image_choice = choice.report
        self._chosen_start = choice.start
        return image_choice.resolved_config(self.config, choice.candidate)

    def _prepare_repeats(self) -> None:
        """Normalised single trials `(R, N, K)` for repeat augmentation (None when off or absent)."""
        self.repeats = None
        reps = self.subject.repeats
        if self.config.data.repeat_augment > 0 and reps is not None and reps.shape[0] >= 1:
            reps = np.stack([self.normaliser.transform(rep) for rep in reps])
            self.repeats = _to_device(torch.from_numpy(np.ascontiguousarray(reps, dtype=np.float32)), self.device)

    def _prepare_inputs(self, cache_dir: str | Path | None) -> torch.Tensor:
        """What the image tower reads per step: cached backbone features of all images (frozen) or the images."""
        subject = self.subject
        if not self.frozen:
            return _to_device(torch.from_numpy(np.ascontiguousarray(subject.images, dtype=np.float32)), self.device)
        report = None if self.status is None or not self.is_main else \
            (lambda done, total: self.status(f"preparing: backbone features {done:,}/{total:,} images"))
        if self.dist.enabled:
            return dist_ops.shared_features(self.image_tower, subject.images, subject.data_hash, cache_dir,
                                            self.device, self.dist, progress=report)
        return cached_features(self.image_tower, subject.images, subject.data_hash, cache_dir=cache_dir,
                               device=self.device, progress=report)

    def _wrap_ddp(self) -> nn.Module:
        """The module a step calls: `core`, or under torchrun `core` in DistributedDataParallel (the
        backbone's BatchNorms as SyncBatchNorm when fine-tuned on GPUs: global-batch statistics)."""
        if not self.dist.enabled:
            return self.core
        if not self.frozen and self.device.type == "cuda":
            nn.SyncBatchNorm.convert_sync_batchnorm(self.core)
        ids = [self.device.index] if self.device.type == "cuda" else None
        model = dist_ops.ddp_wrap(self.core, ids, sync_buffers=not self.frozen)
        dist_ops.reseed_per_rank(self.config.seed, self.dist)
        return model

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
                "available; use the latent neural tower, linear in the number of neurons (--neural-kind "
                "latent, or Neural tower type on the Train page), or a machine with more memory")

    def _prepare_fused_kernels(self) -> bool:
        """Build/load the fused CPU kernels of the folded attention now (once per machine, ~20 s)
        rather than inside the first training step. True when training will use them."""
        if self.device.type != "cpu" or not self.neural_tower.uses_folded_attention:
            return False
        from neuroalign.models import native

        return native.load() is not None

    # ---- small helpers --------------------------------------------------------------------
    @_needs_engine
    def autocast(self):
        if self.config.bf16 and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def writes_files(self) -> bool:
        """True on the process that writes the run folder (rank 0, when there is one)."""
        return self.run_dir is not None and self.is_main

    @_needs_engine
    def lrs(self) -> tuple[float, float]:
        return float(self.opt_image.param_groups[0]["lr"]), float(self.opt_neural.param_groups[0]["lr"])

    @_needs_engine
    def batches(self, epoch: int) -> list[torch.Tensor]:
        """This epoch's GLOBAL training batches (index tensors into the subject): one permutation per
        seed+epoch, the same for every world size (each rank then takes its slice, `local_rows`)."""
        train = torch.as_tensor(self.split["train"], dtype=torch.long)
        gen = torch.Generator().manual_seed(self.config.seed * 100003 + epoch)
        order = torch.randperm(len(train), generator=gen)
        chunks = list(train[order].split(self.config.batch_size))
        if len(chunks) > 1 and len(chunks[-1]) < 2:  # a 1-item batch has no negatives
            chunks = chunks[:-1]
        return [c.to(self.device) for c in chunks]

    @_needs_engine
    def local_rows(self, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        """This rank's rows of a global batch and their offset in it."""
        lo, hi = dist_ops.shard_bounds(len(batch), self.dist.world_size, self.dist.rank)
        return batch[lo:hi], lo

    @_needs_engine
    def train_responses(self, idx: torch.Tensor, epoch: int, step: int, offset: int = 0,
                         total: int | None = None) -> torch.Tensor:
        """The rows' responses; with repeat augmentation some rows are one single trial instead. The
        draw is made for the whole global batch (`total` rows, these at `offset`), so every world
        size swaps the same rows for the same trials."""
        r = self.responses[idx]
        p = self.config.data.repeat_augment
        if self.repeats is None or p <= 0:
            return r
        total = len(idx) if total is None else total
        gen = torch.Generator().manual_seed(self.config.seed * 7919 + epoch * 100003 + step)
        use = (torch.rand(total, generator=gen) < p)[offset:offset + len(idx)]
        which = torch.randint(self.repeats.shape[0], (total,), generator=gen)[offset:offset + len(idx)]
        if not bool(use.any()):
            return r
        single = self.repeats[which.to(self.device), idx]
        return torch.where(use.to(self.device)[:, None], single, r)

    # ---- weights and checkpoints (training.state) -----------------------------------------
    @_needs_engine
    def model_state(self) -> dict[str, Any]:
        """Weights of both towers and the loss (CPU copies)."""
        return state_io.model_state(self)

    @_needs_engine
    def load_model_state(self, state: dict[str, Any]) -> None:
        state_io.load_model_state(self, state)

    @_needs_engine
    def training_state(self) -> dict[str, Any]:
        """Everything `last.pt` needs to resume (tensors and plain containers only): weights,
        optimiser states, `state` (the `FitState`) and the RNG streams."""
        return state_io.training_state(self)

    @_needs_engine
    def load_training_state(self, last: dict[str, Any], best: dict[str, Any] | None = None) -> None:
        """Resume from a `last.pt` dict (and the `best.pt` dict, whose weights become the best state):
        the weights and optimiser states loaded, `state` replaced by the checkpoint's `FitState`."""
        state_io.load_training_state(self, last, best)

    @_needs_engine
    def save_checkpoints(self, elapsed_s: float | None = None) -> None:
        """Write `best.pt` (when it changed) and `last.pt` atomically (rank 0 with a run dir only);
        `elapsed_s`: the training seconds to record (default `state.elapsed_s`)."""
        state_io.save_checkpoints(self, elapsed_s)

    # ---- evaluation -----------------------------------------------------------------------
    @_needs_engine
    @torch.no_grad()
    def val_loss(self, indices: np.ndarray | None = None) -> float:
        """Mean loss over `indices` (default: the val split) in eval mode, batches of `batch_size` in a
        fixed order (the same scale as the training loss). Local to this process."""
        idx = torch.as_tensor(self.split["val"] if indices is None else indices, dtype=torch.long)
        was = self.core.training
        self.core.eval()
        total, count = torch.zeros((), device=self.device), 0
        try:
            for chunk in idx.split(self.config.batch_size):
                if len(chunk) < 2:
                    continue
                chunk = chunk.to(self.device)
                with self.autocast():
                    img, neu = self.core.maps(self.inputs[chunk], self.responses[chunk])
                    loss, _ = self.loss_fn(img, neu)
                total += loss.float() * len(chunk)
                count += len(chunk)
        finally:
            self.core.train(was)
        return float(total.item() / max(count, 1))

    @_needs_engine
    @torch.no_grad()
    def val_scores(self, indices: np.ndarray | None = None) -> dict[str, float]:
        """Mean of both directions of top1, mrr and mean_rank on `indices` (default: val), eval mode,
        with the similarity the model is scored by."""
        idx = np.asarray(self.split["val"] if indices is None else indices)
        img, neu = self.predict(idx)
        sim = similarity_matrix(torch.from_numpy(img), torch.from_numpy(neu), center=self.config.loss.center)
        m = retrieval_metrics(sim.numpy().astype(np.float64))
        return {k: float(0.5 * (m["image_to_neural"][k] + m["neural_to_image"][k])) for k in ("top1", "mrr", "mean_rank")}

    @_needs_engine
    def selection_score(self) -> float | None:
        """The val score that picks the restored epoch (None for select_by="val_loss")."""
        if self.config.select_by == "val_loss":
            return None
        return self.val_scores()[self.config.select_by.removeprefix("val_")]

    @cached_property
    def population(self) -> dict[str, float] | None:
        """The repeat noise along the responses' population-mean direction (`linear_start.population_shrink`
        on the train images' normalised repeats: its `share` and the start's damping `shrink`); None
        without repeats. Estimated once, when the closed-form start first needs it."""
        return train_population(self.normaliser, self.subject.repeats, self.split["train"])

    @property
    def start_shrink(self) -> float:
        """The closed-form start's damping of the population-mean direction (1 = none)."""
        population = self.population
        return 1.0 if population is None else float(population["shrink"])

    @_needs_engine
    def fit_linear_start(self) -> dict[str, Any]:
        """Set both towers to the closed-form start (`training.linear_start`) from the train and val
        images; returns what was chosen (also kept in `state.linear_start`). Under torchrun every
        rank computes it from the same data and rank 0's weights are then broadcast (identical start)."""
        if not self.frozen:
            raise ValueError("the linear start needs a frozen backbone (cached features); got mode 'finetune'")
        tr, va = (np.asarray(self.split[k], dtype=np.int64) for k in ("train", "val"))
        feats = self.inputs.flatten(1).cpu().numpy()
        resp = self.responses.cpu().numpy()
        start = self._chosen_start  # "auto" fitted it on exactly these features while choosing
        if start is None or start.image_weight.shape[1] != feats.shape[1]:
            start = fit_linear_start(feats[tr], resp[tr], feats[va], resp[va], self.config.n_components,
                                     folds=CV_FOLDS, shrink=self.start_shrink)
        apply_linear_start(self.image_tower, self.neural_tower, start)
        dist_ops.broadcast_module(self.core, self.dist)
        if self.population is not None:
            start.report["population_noise_share"] = float(self.population["share"])
        self.state.linear_start = start.report
        return start.report

    @_needs_engine
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
                with self.autocast():
                    img, neu = self.core.maps(self.inputs[chunk], self.responses[chunk])
                img_out.append(img[:, 0].float().cpu())
                neu_out.append(neu[:, 0].float().cpu())
        finally:
            self.core.train(was)
        return torch.cat(img_out).numpy(), torch.cat(neu_out).numpy()

    # ---- training -------------------------------------------------------------------------
    def fit(self, callback: Callback | None = None, stop_event: threading.Event | None = None,
            train_deadline: float | None = None) -> FitResult:
        """`prepare()` (when not done yet), then train until `epochs`, early stopping, the time budget
        or `stop_event`; restore the best epoch. Continues from `self.state` (a fresh `FitState`, or a
        checkpoint's after `load_training_state`).

        The time budget: `train_deadline` (time.monotonic()) when given -- run_training's, early enough
        for the evaluation to fit the job's `max_seconds` -- else `max_seconds` of training alone.

        `callback(event, values)` gets event "step" (every `log_every_steps` steps) or "epoch", with
        plain floats: epoch, step, train_loss, val_loss (epoch), lr_image, lr_neural, samples_per_s,
        elapsed_s, progress (0..1), eta_s. With `config.threads` set, torch uses that many CPU
        threads while training (process-wide) and the previous count is restored afterwards.
        """
        self.prepare()  # before the thread setting below: preparation runs as it would outside fit()
        threads, previous = self.config.threads, torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            return FitLoop(self, self.state, callback, stop_event, train_deadline).run()
        finally:
            if threads:
                torch.set_num_threads(previous)


for _name in Trainer.ENGINE_ATTRIBUTES:  # see ENGINE_ATTRIBUTES
    setattr(Trainer, _name, _BuiltByPrepare(_name))
del _name
