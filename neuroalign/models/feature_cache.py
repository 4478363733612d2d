"""Cache of frozen-backbone features: computed once per (backbone, block, data), reused every epoch.

Two levels: a bounded in-process LRU (shared by all threads, e.g. dashboard training jobs) and
`<cache_dir>/features/<key>.pt` on disk (written atomically, read with `weights_only=True`). The
key hashes the backbone fingerprint (config + weights), the stage/block, the data hash and the
input shape, so a changed backbone or dataset never reuses stale features.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from neuroalign.io_utils import atomic_torch_save

logger = logging.getLogger(__name__)

MEMORY_LIMIT_BYTES = 4 * 1024**3  # total size of features kept in memory
_memory: "OrderedDict[str, torch.Tensor]" = OrderedDict()
_lock = threading.Lock()


def feature_key(tower, data_hash: str, shape: tuple[int, ...]) -> str:
    """Cache key of `tower`'s features for a dataset with hash `data_hash` and image shape `shape`."""
    text = "|".join([tower.backbone_fingerprint(), f"stage={tower.stage}", f"block={tower.block}",
                     str(data_hash), "x".join(str(int(s)) for s in shape)])
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def clear_memory_cache() -> None:
    """Drop all in-memory features (the disk cache is untouched)."""
    with _lock:
        _memory.clear()


def _remember(key: str, feats: torch.Tensor) -> None:
    with _lock:
        _memory[key] = feats
        _memory.move_to_end(key)
        total = sum(t.numel() * t.element_size() for t in _memory.values())
        while len(_memory) > 1 and total > MEMORY_LIMIT_BYTES:
            _, old = _memory.popitem(last=False)
            total -= old.numel() * old.element_size()


def _load_disk(path: Path, shape: tuple[int, ...]) -> torch.Tensor | None:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        feats = obj["features"]
        if not isinstance(feats, torch.Tensor) or feats.shape[0] != shape[0]:
            raise ValueError(f"unexpected content {type(feats).__name__}")
        return feats
    except Exception as exc:  # a corrupt or foreign file is recomputed, not fatal
        logger.warning("ignoring unreadable feature cache %s (%s); recomputing", path, exc)
        return None


@torch.no_grad()
def compute_features(tower, images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu",
                     batch_size: int = 64, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Backbone features of all `images (N, 1, H, W)` in eval mode, in batches: `(N, C, h, w)` on CPU."""
    device = torch.device(device)
    backbone = tower.backbone
    was_training = backbone.training
    backbone.eval()
    try:
        out = []
        for start in range(0, len(images), batch_size):
            batch = torch.as_tensor(np.asarray(images[start:start + batch_size]), dtype=torch.float32)
            batch = batch.to(device).contiguous(memory_format=torch.channels_last)
            feats = tower.extract(batch)
            out.append(feats.float().cpu().contiguous())
            if progress is not None:
                progress(min(start + batch_size, len(images)), len(images))
    finally:
        backbone.train(was_training)
    return torch.cat(out)


def shares_prefix(shallow, deep) -> bool:
    """Whether `shallow`'s backbone is the first part of `deep`'s: every parameter and buffer of the
    shallower one exists in the deeper one with the same values (same model, same seed, same weights)."""
    deep_state = deep.backbone.state_dict()
    for key, tensor in shallow.backbone.state_dict().items():
        other = deep_state.get(key)
        if other is None or other.shape != tensor.shape or not torch.equal(other, tensor):
            return False
    return True


@torch.no_grad()
def compute_layer_features(towers, images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu",
                           batch_size: int = 64, progress: Callable[[int, int], None] | None = None,
                           should_stop: Callable[[], bool] | None = None) -> list[torch.Tensor] | None:
    """What `compute_features` returns for each of several `towers` that read layers of ONE backbone,
    from one forward pass of the deepest tower's backbone (`forward_intermediates` with every layer
    asked for) instead of one pass per layer: a profile of a model's stage ends runs its early
    stages once, not once per layer. Each tower's own transform and pooling are applied to its layer
    (exactly `tower.extract`). Every shallower backbone must be a prefix of the deepest one
    (`shares_prefix`), else ValueError. Returns None when `should_stop()` turns true between batches."""
    towers = list(towers)
    if not towers:
        return []
    deep = max(towers, key=lambda t: (t.stage, t.block))
    for t in towers:
        if t.backbone_name != deep.backbone_name or not shares_prefix(t, deep):
            raise ValueError(f"{t.backbone_name} stage {t.stage} block {t.block} is not a prefix of "
                             f"{deep.backbone_name} stage {deep.stage} block {deep.block}; compute it on its own")
    from neuroalign.models.image_models import apply_transform

    device = torch.device(device)
    backbone = deep.backbone
    was_training = backbone.training
    backbone.eval()
    layers = [(t.stage, t.block) for t in towers]
    out: list[list[torch.Tensor]] = [[] for _ in towers]
    try:
        for start in range(0, len(images), batch_size):
            if should_stop is not None and should_stop():
                return None
            batch = torch.as_tensor(np.asarray(images[start:start + batch_size]), dtype=torch.float32)
            batch = batch.to(device).contiguous(memory_format=torch.channels_last)
            for i, (t, feats) in enumerate(zip(towers, backbone.forward_intermediates(batch, layers))):
                feats = apply_transform(feats, t.transform)
                if t.head == "readout":
                    feats = torch.nn.functional.adaptive_avg_pool2d(feats, t.grid)
                out[i].append(feats.float().cpu().contiguous())
            if progress is not None:
                progress(min(start + batch_size, len(images)), len(images))
    finally:
        backbone.train(was_training)
    return [torch.cat(parts) for parts in out]


def _check_images(images) -> tuple[int, ...]:
    shape = tuple(int(s) for s in np.shape(images))
    if len(shape) != 4:
        raise ValueError(f"expected images of shape (N, 1, H, W), got {shape}")
    return shape


def cache_path(cache_dir: str | Path | None, key: str) -> Path | None:
    """`<cache_dir>/features/<key>.pt`, or None without a cache folder."""
    return Path(cache_dir) / "features" / f"{key}.pt" if cache_dir is not None else None


def has_features(tower, images: np.ndarray, data_hash: str, cache_dir: str | Path | None = None) -> bool:
    """Whether `tower`'s features of these images are cached (in memory, or a file on disk), without
    reading them."""
    key = feature_key(tower, data_hash, _check_images(images))
    with _lock:
        if key in _memory:
            return True
    path = cache_path(cache_dir, key)
    return path is not None and path.exists()


def lookup_features(tower, images: np.ndarray, data_hash: str, cache_dir: str | Path | None = None,
                    remember: bool = True) -> torch.Tensor | None:
    """Cached features `(N, C, h, w)` on CPU from memory, else from disk (then kept in memory unless
    `remember` is False), else None."""
    shape = _check_images(images)
    key = feature_key(tower, data_hash, shape)
    with _lock:
        feats = _memory.get(key)
        if feats is not None:
            _memory.move_to_end(key)
    if feats is not None:
        logger.debug("feature cache hit (memory) %s", key)
        return feats
    path = cache_path(cache_dir, key)
    if path is not None and path.exists():
        feats = _load_disk(path, shape)
        if feats is not None:
            logger.info("feature cache hit (disk) %s", path)
            if remember:
                _remember(key, feats)
    return feats


def store_features(tower, images: np.ndarray, data_hash: str, feats: torch.Tensor,
                   cache_dir: str | Path | None = None, write_disk: bool = True, remember: bool = True) -> None:
    """Keep `feats` (CPU) in memory (unless `remember` is False) and, with `write_disk` and a cache
    folder, write its file atomically."""
    key = feature_key(tower, data_hash, _check_images(images))
    path = cache_path(cache_dir, key)
    if write_disk and path is not None:
        atomic_torch_save(path, {"features": feats, "key": key})
    if remember:
        _remember(key, feats)


def cached_features(tower, images: np.ndarray, data_hash: str, cache_dir: str | Path | None = None,
                    device: torch.device | str = "cpu", batch_size: int = 64,
                    progress: Callable[[int, int], None] | None = None, remember: bool = True) -> torch.Tensor:
    """Features `(N, C, h, w)` (float32, on `device`) of `images (N, 1, H, W)` for an `ImageTower`.

    Looked up in memory, then in `<cache_dir>/features/<key>.pt` (skipped when `cache_dir` is
    None), else computed in eval mode under no_grad and stored in both (in memory only when
    `remember`: a profile reads each layer once and keeps none of them). (Several torchrun
    processes share the work through `neuroalign.training.distributed.shared_features`.)
    """
    feats = lookup_features(tower, images, data_hash, cache_dir, remember=remember)
    if feats is None:
        logger.info("computing backbone features for %d images (stage %d, block %d)",
                    len(images), tower.stage, tower.block)
        feats = compute_features(tower, images, device=device, batch_size=batch_size, progress=progress)
        store_features(tower, images, data_hash, feats, cache_dir, remember=remember)
    return feats.to(device)
