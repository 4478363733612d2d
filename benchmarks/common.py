"""Shared pieces of the benchmarks: timers, synthetic data, and the steps being timed.

`time_fn` runs warm-ups, then timed repeats, and returns the median. The timer is wall clock by
default. ``set_timer("cpu")`` switches to the CPU time of the one compute thread, which other
processes' load on a shared machine does not change.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.reference_loop import ReferenceNeuralTower, ReferenceStep
from neuroalign.config import TrainConfig
from neuroalign.data.subject import Subject
from neuroalign.models.neural import LatentTower, ReferenceAttentionTower

logger = logging.getLogger("benchmarks")

IMAGE_HW = (68, 270)
DEMO_NEURONS = 450  # neuroalign.data.simulate.SIZES["default"]
BATCH = 128  # the reference's batch size
QUICK_BATCH = 32  # --quick on a CPU: the reference step costs ~40 s of CPU at batch 128
REFERENCE_EPOCHS = 5000
REFERENCE_TRAIN_FRACTION = 0.9


# ------------------------------------------------------------------------------------------------
# timing helpers
# ------------------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


TIMER: dict[str, Any] = {"name": "wall", "warmup": 2}  # "cpu": CPU time of the (single) compute thread, robust on a shared machine


def set_timer(name: str) -> None:
    """'wall' (perf_counter) or 'cpu' (thread CPU time; also sets torch to one thread so all
    compute runs on the timed thread and other processes' load does not count)."""
    if name not in ("wall", "cpu"):
        raise ValueError(f"timer must be wall or cpu, got {name!r}")
    TIMER["name"] = name
    if name == "cpu":
        torch.set_num_threads(1)


def time_fn(fn: Callable[[], Any], device: torch.device, repeats: int = 3, warmup: int | None = None) -> dict[str, Any]:
    """Median seconds of `fn()` over `repeats` runs after `warmup` untimed runs (default TIMER's).

    When one warm-up run already took longer than TIMER["slow_s"], a single timed run follows
    (the reference loop at 1,000 neurons costs tens of seconds per step)."""
    warmup = TIMER["warmup"] if warmup is None else warmup
    clock = time.thread_time if TIMER["name"] == "cpu" and device.type == "cpu" else time.perf_counter
    slow = TIMER.get("slow_s")
    for _ in range(warmup):
        t = clock()
        fn()
        _sync(device)
        if slow is not None and clock() - t > slow:
            repeats = 1
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        _sync(device)
        times.append(clock() - t)
    return {"median_s": statistics.median(times), "times_s": [round(x, 6) for x in times]}


def synthetic_subject(n_images: int, n_neurons: int, seed: int = 0,
                      image_hw: tuple[int, int] = IMAGE_HW) -> Subject:
    """Random images in [0, 1] (N, 1, 68, 270) and non-negative responses (N, K)."""
    rng = np.random.default_rng(seed)
    images = rng.random((n_images, 1, *image_hw), dtype=np.float32)
    responses = rng.gamma(2.0, 1.0, size=(n_images, n_neurons)).astype(np.float32)
    return Subject(name=f"bench-{n_images}x{n_neurons}", images=images, responses=responses,
                   meta={"simulated": True})


def make_trainer(subject: Subject, device: torch.device, batch: int, mode: str = "frozen", **neural: Any):
    """The real Trainer, prepared (frozen: features cached by `prepare()`), as `fit` would use it."""
    from neuroalign.training.trainer import Trainer

    changes = {"epochs": 1, "batch_size": batch, "device": device.type, "image.mode": mode,
               "bf16": device.type == "cuda"}
    changes.update({f"neural.{k}": v for k, v in neural.items()})
    config = TrainConfig(preset="reference").replace(**changes)
    return Trainer(config, subject).prepare()


def trainer_step_fn(trainer, batch: int, seed: int = 0) -> Callable[[], None]:
    """Exactly the per-step work of `Trainer.fit` (forward, zero_grad, backward, both optimizers)."""
    gen = torch.Generator().manual_seed(seed)
    train = torch.as_tensor(trainer.split["train"], dtype=torch.long)

    def step() -> None:
        idx = train[torch.randperm(len(train), generator=gen)[:batch]].to(trainer.inputs.device)
        with trainer.autocast():
            loss, _, _, _ = trainer.model(trainer.inputs[idx], trainer.responses[idx])
        trainer.opt_image.zero_grad(set_to_none=True)
        trainer.opt_neural.zero_grad(set_to_none=True)
        loss.backward()
        trainer.opt_image.step()
        trainer.opt_neural.step()

    return step


def reference_step_fn(subject: Subject, device: torch.device, batch: int, seed: int = 0) -> Callable[[], None]:
    ref = ReferenceStep(subject.n_neurons, device)
    images = torch.from_numpy(subject.images).to(device)
    responses = torch.from_numpy(subject.responses).to(device)
    responses = (responses - responses.min(0).values) / (responses.max(0).values - responses.min(0).values + 1e-8)
    gen = torch.Generator().manual_seed(seed)

    def step() -> None:
        idx = torch.randperm(subject.n_images, generator=gen)[:batch].to(device)
        ref.step(images[idx], responses[idx])

    return step


# ------------------------------------------------------------------------------------------------


def _tower_step(tower: torch.nn.Module, responses: torch.Tensor, device: torch.device,
                bf16: bool = False) -> Callable[[], None]:
    target = torch.rand(responses.shape[0], 1, 16, 64, device=device)

    def step() -> None:
        tower.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = tower(responses)
        ((out.float() - target) ** 2).mean().backward()

    return step


NEURAL_METHODS = {
    "reference": lambda k: ReferenceNeuralTower(k),
    "plain": lambda k: ReferenceAttentionTower(k, folded=False),
    "folded": lambda k: ReferenceAttentionTower(k),
    "latent": lambda k: LatentTower(k, n_latents=64),
}


def neural_tower_point(method: str, k: int, batch: int, device: torch.device, repeats: int) -> dict[str, Any]:
    """Forward + backward time of one neural tower on (batch, k) responses."""
    torch.manual_seed(0)
    tower = NEURAL_METHODS[method](k).to(device).train()
    responses = torch.rand(batch, k, device=device)
    res = time_fn(_tower_step(tower, responses, device, bf16=device.type == "cuda"), device, repeats)
    return {"ms": 1e3 * res["median_s"], "times_s": res["times_s"]}
