"""Data parallelism across torchrun processes with the objective of one process (PyTorch's own
collectives; nothing here runs when WORLD_SIZE is 1).

* `setup(config)` -- the process's device (`cuda:LOCAL_RANK` under torchrun on GPUs) and the process
  group (`config.dist_backend`: "auto" = NCCL on CUDA, gloo on a CPU; `device.init_distributed`).
* Global batches: `config.batch_size` is the GLOBAL batch. Every rank draws the same permutation
  of the training rows (the one a single process draws) and takes its slice of each global batch
  (`shard_bounds`: `torch.tensor_split` sizes, the first `B % W` ranks one row more; a rank whose
  slice is empty still takes part in the step).
* Global negatives: `gather_rows` all-gathers a tower's maps (`_GatherRows`: public
  `torch.distributed.all_gather` forward; its backward sums every rank's gradient of the gathered
  rows with one all-reduce and keeps this rank's own rows -- public collectives only, so any torch
  build works, gloo and NCCL alike; a private `_functional_collectives` import broke on torch 2.11).
  Every rank then computes the loss of the whole global
  batch -- the same number everywhere, equal to one process's loss. Gradient scale: rank r's
  gradient is W * dL/d(its rows) (each of the W identical losses sends dL/d(rows of r) back to r);
  DistributedDataParallel averages, (1/W) * sum_r W * dL/d(rows of r) = dL/dparameters, exactly the
  single-process gradient. A parameter of the loss itself (the learnable temperature) gets the
  same full dL/dtau on every rank, which averaging leaves unchanged.
* `shared_features`: frozen-backbone features with an empty cache are computed shard by shard
  (each rank its own whole batches of 64 images, so each image is computed in the same batch as
  one process would) and exchanged; local rank 0 of each machine writes the cache file
  atomically and every rank waits at a barrier. A failure on any rank stops all ranks.
* `agree` / `broadcast_module` / `broadcast_object`: rank 0's numbers, weights or object on every
  rank (validation decisions, the closed-form start, the run folder).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from neuroalign.config import TrainConfig
from neuroalign.models.feature_cache import compute_features, lookup_features, store_features
from neuroalign.training.device import DistInfo, dist_info_from_env, init_distributed, resolve_device

logger = logging.getLogger(__name__)

FEATURE_BATCH = 64  # images per backbone batch (the same boundaries as `cached_features`)
RANK_SEED_STRIDE = 1_000_003  # rank r > 0 draws dropout masks from seed + r * stride


@dataclass
class Setup:
    dist: DistInfo
    device: torch.device
    backend: str | None  # None for a single process


def setup(config: TrainConfig) -> Setup:
    """Resolve the device (under torchrun with CUDA: `cuda:LOCAL_RANK`) and join the process group."""
    dist = dist_info_from_env()
    device = resolve_device(config.device)
    if dist.enabled and device.type == "cuda":
        if dist.local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {dist.local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                             "start at most one process per GPU (--nproc_per_node)")
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    backend = init_distributed(dist, device, config.dist_backend)
    return Setup(dist, device, backend)


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """Rows `[lo, hi)` of rank `rank` in a batch of `n` rows split as `torch.tensor_split` does."""
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class _GatherRows(torch.autograd.Function):
    """Every rank's `(n, ...)` rows stacked in rank order; the backward sums all ranks' gradients of
    the stack (one all-reduce: these maps are small) and returns this rank's `n` rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, world_size: int, rank: int) -> torch.Tensor:
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world_size)]
        torch.distributed.all_gather(parts, x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None, None


def gather_rows(x: torch.Tensor, total: int | None, dist: DistInfo) -> torch.Tensor:
    """All ranks' rows of `x` in rank order, `(total, ...)`, with gradient to this rank's rows.

    `x` holds this rank's `shard_bounds(total, ...)` rows; uneven slices are padded to the
    largest for the collective and the padding dropped again (`total` None: every rank holds as
    many rows as this one).
    """
    if not dist.enabled:
        return x
    total = x.shape[0] * dist.world_size if total is None else int(total)
    width = -(-total // dist.world_size)
    lo, hi = shard_bounds(total, dist.world_size, dist.rank)
    if x.shape[0] != hi - lo:
        raise ValueError(f"rank {dist.rank} holds {x.shape[0]} rows, expected {hi - lo} of a global batch of {total}")
    padded = x if x.shape[0] == width else torch.cat([x, x.new_zeros((width - x.shape[0], *x.shape[1:]))])
    full = _GatherRows.apply(padded.contiguous(), dist.world_size, dist.rank)
    if total % dist.world_size == 0:
        return full
    parts = []
    for r in range(dist.world_size):
        a, b = shard_bounds(total, dist.world_size, r)
        parts.append(full[r * width:r * width + (b - a)])
    return torch.cat(parts)


def agree(values: list[float], dist: DistInfo, device: torch.device) -> list[float]:
    """Rank 0's floats on every rank (so every rank takes the same validation decisions)."""
    if not dist.enabled:
        return values
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    torch.distributed.broadcast(t, src=0)
    return [float(x) for x in t.tolist()]


def max_code(code: int, dist: DistInfo, device: torch.device) -> int:
    """The largest of every rank's `code` (one tiny all-reduce)."""
    if not dist.enabled:
        return code
    flag = torch.tensor([code], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag.item())


@torch.no_grad()
def broadcast_module(module: nn.Module, dist: DistInfo) -> None:
    """Overwrite every parameter and buffer of `module` with rank 0's."""
    if not dist.enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        torch.distributed.broadcast(t.data, src=0)


def ddp_wrap(module: nn.Module, device_ids: list[int] | None, sync_buffers: bool,
             ddp_class: type = nn.parallel.DistributedDataParallel) -> nn.Module:
    """`module` in DistributedDataParallel, with buffers synchronised at each forward only when
    `sync_buffers`. torch 2.13 names that switch `forward_sync_buffers` (deprecating
    `broadcast_buffers`); earlier releases, such as the 2.11 found on a CUDA machine, know only
    `broadcast_buffers`: the keyword is chosen from the class's own signature."""
    import inspect

    params = inspect.signature(ddp_class.__init__).parameters
    key = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    return ddp_class(module, device_ids=device_ids, **{key: sync_buffers})


def broadcast_object(obj: Any, dist: DistInfo) -> Any:
    """Rank 0's (picklable) `obj` on every rank."""
    if not dist.enabled:
        return obj
    box = [obj if dist.is_main else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def reseed_per_rank(seed: int, dist: DistInfo) -> None:
    """Rank r > 0 continues from its own torch seed, so dropout masks are independent across ranks
    (rank 0 keeps the single-process stream); the weights are synchronised by DDP, not by seeds."""
    if dist.enabled and dist.rank > 0:
        torch.manual_seed(seed + RANK_SEED_STRIDE * dist.rank)


def _gather_features(local: torch.Tensor, n: int, counts: list[int], dist: DistInfo, device: torch.device) -> torch.Tensor:
    width = max(counts)
    send = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=device)
    send[:local.shape[0]] = local.to(device)
    bufs = [torch.empty_like(send) for _ in range(dist.world_size)]
    torch.distributed.all_gather(bufs, send)
    out = torch.cat([b[:c] for b, c in zip(bufs, counts)])
    assert out.shape[0] == n
    return out


def shared_features(tower, images: np.ndarray, data_hash: str, cache_dir, device: torch.device, dist: DistInfo,
                    progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """`cached_features` for several processes: `(N, C, h, w)` float32 on `device`, the same on every rank.

    When every rank finds the features cached, each uses its own copy; otherwise every rank computes
    its shard of whole backbone batches, the shards are all-gathered, local rank 0 of each machine
    writes the cache file (atomically) and all ranks meet at a barrier before going on.
    """
    feats = lookup_features(tower, images, data_hash, cache_dir)
    if max_code(int(feats is None), dist, device) == 0:
        return feats.to(device)
    n = len(images)
    n_batches = -(-n // FEATURE_BATCH)
    bounds = [shard_bounds(n_batches, dist.world_size, r) for r in range(dist.world_size)]
    rows = [(a * FEATURE_BATCH, min(b * FEATURE_BATCH, n)) for a, b in bounds]
    counts = [max(hi - lo, 0) for lo, hi in rows]
    lo, hi = rows[dist.rank]
    logger.info("rank %d computes backbone features of images %d..%d of %d", dist.rank, lo, hi, n)
    local, error = None, None
    report = None if progress is None else (lambda done, _total: progress(min(done * dist.world_size, n), n))
    try:
        if hi > lo:
            local = compute_features(tower, images[lo:hi], device=device, batch_size=FEATURE_BATCH, progress=report)
        shape = None if local is None else tuple(local.shape[1:])
    except Exception as exc:  # every rank must learn of it, or the others wait forever
        error, shape = exc, None
    if max_code(int(error is not None), dist, device):
        if error is not None:
            raise error
        raise RuntimeError("computing the backbone features failed on another torchrun rank (see its log)")
    shape = broadcast_object(shape, dist)  # rank 0 always has at least one batch
    if local is None:
        local = torch.zeros((0, *shape), dtype=torch.float32)
    feats = _gather_features(local, n, counts, dist, device)
    store_features(tower, images, data_hash, feats.cpu(), cache_dir, write_disk=dist.local_rank == 0)
    torch.distributed.barrier()
    return feats
