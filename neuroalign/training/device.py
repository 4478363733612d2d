"""Device choice, determinism and the (optional) torchrun process group."""

from __future__ import annotations

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


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU) when world_size > 1."""
    if not info.enabled or torch.distributed.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend)
    logger.info("joined process group: rank %d / %d (%s)", info.rank, info.world_size, backend)
