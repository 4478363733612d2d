"""Device choice, determinism and the (optional) torchrun process group."""

from __future__ import annotations

import atexit
import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available else CPU; 'cuda' without a GPU is a ValueError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto")
        if name == "cuda":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device(name)
    raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")


def describe_device(device: torch.device | str | None = None) -> str:
    """Human-readable description, e.g. 'cuda:0 (NVIDIA H200, 139.8 GiB)' or 'cpu (2 threads)'."""
    device = resolve_device("auto") if device is None else torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    return f"cpu ({torch.get_num_threads()} threads)"


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can still get: free GPU memory, or MemAvailable from /proc/meminfo
    on a Linux CPU; None when it cannot be read."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        with open("/proc/meminfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, RuntimeError, ValueError, IndexError):
        return None
    return None


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; with `deterministic`, pick deterministic kernels where torch can.

    `torch.use_deterministic_algorithms` is process-wide; `warn_only=True` keeps ops without a
    deterministic kernel usable (they log a warning instead of failing).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class DistInfo:
    """Distributed context from the torchrun environment (world_size 1 = plain single process)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """Read WORLD_SIZE / RANK / LOCAL_RANK as set by `torchrun`."""
    try:
        return DistInfo(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
                        int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError as exc:
        raise ValueError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers: {exc}") from None


BACKENDS = ("auto", "nccl", "gloo")


def resolve_backend(requested: str, device: torch.device) -> str:
    """The process-group backend for `requested` ("auto" | "nccl" | "gloo") on `device`: "auto" is
    NCCL on CUDA and gloo on a CPU; NCCL for a CPU device is a ValueError (it only moves CUDA tensors)."""
    if requested not in BACKENDS:
        raise ValueError(f"dist_backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    if requested == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if requested == "nccl" and device.type != "cuda":
        raise ValueError(f"dist_backend 'nccl' needs CUDA devices, but this run trains on {device.type}; "
                         "use dist_backend 'gloo' or 'auto' on a CPU")
    return requested


def init_distributed(info: DistInfo, device: torch.device, backend: str = "auto") -> str | None:
    """Join the torchrun process group when world_size > 1 and return its backend (None for one
    process). `backend` as in `resolve_backend`; a group that is already initialised is reused when
    its backend is the requested one (a different one is a ValueError)."""
    if not info.enabled:
        return None
    wanted = resolve_backend(backend, device)
    if torch.distributed.is_initialized():
        have = str(torch.distributed.get_backend())
        if backend != "auto" and have != wanted:
            raise ValueError(f"the process group already uses backend {have!r}, but dist_backend {wanted!r} "
                             "was requested")
        return have
    if not torch.distributed.is_available():
        raise ValueError(f"WORLD_SIZE={info.world_size} asks for {info.world_size} processes, but this torch "
                         "build has no torch.distributed")
    torch.distributed.init_process_group(backend=wanted)
    atexit.register(_destroy_process_group)
    logger.info("joined process group: rank %d / %d (%s)", info.rank, info.world_size, wanted)
    return wanted


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
