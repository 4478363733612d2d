"""Load DS-Net weights from a local state-dict file into a (possibly truncated) backbone.

Accepts the key names of the public DS-Net release (`patch_embed1.proj.weight`,
`blocks2.3.conv1.weight`, ...), optionally wrapped (`{"state_dict": ...}`, `{"model": ...}`) and/or
prefixed (`module.`, `model.`, `backbone.`). Only the tensors the tower uses (stages up to the
requested block) must be present and match; everything else is reported as ignored. A 3-channel
first conv is adapted to a 1-channel backbone by summing over the input channels. Nothing is
downloaded.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module", "state_dict_ema", "model_ema")
PREFIXES = ("module.", "model.", "backbone.")
FIRST_CONV = "patch_embed1.proj.weight"
_KEY = re.compile(r"^(?:patch_embed(\d+)|blocks(\d+)\.(\d+))\.")


@dataclass
class LoadReport:
    """What `load_backbone_weights` did: keys loaded, file keys ignored, tensors adapted."""

    path: str
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"loaded {len(self.loaded)} tensors from {self.path}, ignored {len(self.ignored)}"
        if self.adapted:
            text += f", adapted {', '.join(self.adapted)}"
        return text


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        found = sorted(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path} holds no state dict of tensors (found {found}); expected DS-Net weights "
                         f"such as {FIRST_CONV!r}")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        state[key] = value
    return state


def needed_for(key: str, stage: int, block: int) -> bool:
    """Whether backbone tensor `key` is used to compute the output of (stage, block), 1-based."""
    m = _KEY.match(key)
    if m is None:
        return False  # final norm, head: never used by the image tower
    if m.group(1) is not None:
        return int(m.group(1)) <= stage
    s, j = int(m.group(2)), int(m.group(3))
    return s < stage or (s == stage and j < block)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The unwrapped, prefix-stripped tensors of a weights file (loaded with `weights_only=True`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"could not read {path} as a PyTorch state dict ({type(exc).__name__}); "
                         f"expected a .pt/.pth file of DS-Net weights") from None
    return _unwrap(obj, path)


def load_backbone_weights(backbone: nn.Module, path: str | Path, stage: int, block: int) -> LoadReport:
    """Copy the tensors `backbone` needs for (stage, block) from the file at `path`.

    Raises FileNotFoundError for a missing file and ValueError naming the key when a needed tensor
    is absent or has the wrong shape. BatchNorm `num_batches_tracked` counters are optional.
    """
    state = read_state_dict(path)
    target = backbone.state_dict()
    report = LoadReport(path=str(path))
    needed = [k for k in target if needed_for(k, stage, block)]
    missing = [k for k in needed if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} tensor(s) needed up to stage {stage} block {block}, "
                         f"e.g. {missing[0]!r}; found keys like {sorted(state)[:3]}")
    new_values: dict[str, torch.Tensor] = {}
    for key in needed:
        if key not in state:
            continue
        src, dst = state[key], target[key]
        if src.shape != dst.shape and key == FIRST_CONV and src.dim() == 4 and dst.shape[1] == 1 \
                and src.shape[0] == dst.shape[0] and src.shape[2:] == dst.shape[2:]:
            src = src.sum(dim=1, keepdim=True)
            report.adapted.append(f"{key} ({state[key].shape[1]} -> 1 input channels, summed)")
        if src.shape != dst.shape:
            raise ValueError(f"{path}: tensor {key!r} has shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
        new_values[key] = src.to(dtype=dst.dtype)
        report.loaded.append(key)
    with torch.no_grad():
        for key, value in new_values.items():
            target[key].copy_(value)  # state_dict() tensors share storage with the module
    report.ignored = sorted(k for k in state if k not in new_values)
    logger.info("%s", report.summary())
    return report
