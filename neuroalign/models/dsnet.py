"""DS-Net backbone (Mao et al., NeurIPS 2021, "Dual-stream Network for Visual Recognition").

Written from the paper's description. Four stages with dims [64, 128, 320, 512], heads
[1, 2, 5, 8], patch-embedding convs with kernel = stride 4, 2, 2, 2 (floor arithmetic, so a
1x68x270 input gives 17x67, 8x33, 4x16, 2x8 maps), and dual-stream mix blocks:

1. `x = x + pos_embed(x)` (depthwise 3x3 conv positional term); `shortcut = x`.
2. `x = conv1(norm1(x))` (BatchNorm + 1x1 conv), split along channels into a global half (first
   half) and a local half.
3. Local stream: `l = l + conv(norm_conv1(l))` (depthwise 3x3).
4. Global stream: adaptive average pooling to `ceil(h / s), ceil(w / s)` with s = [8, 4, 2, 2] per
   stage (any input size, no padding to a square), tokens, `g = g + SDPA(channel_up(norm_sa1(g)))`.
5. Cross-scale co-attention both ways (local queries on global keys/values and vice versa), from
   `cross_channel_up_conv(norm_conv2(l))` and `cross_channel_up_sa(norm_sa2(g))`, each followed by
   `fuse_channel_*` and its residual.
6. Global half back to the local resolution by bilinear interpolation, concat [local, global],
   `x = shortcut + conv2(...)`; then `x = x + mlp(norm2(x))` (BatchNorm + conv MLP, ratio 4, GELU).

Module names mirror the public DS-Net release (`patch_embed{i}.proj`, `blocks{i}.{j}.<layer>`,
`norm`), so its state dicts load by name (see `neuroalign.models.weights`).

Intermediate features come from `forward_intermediates(x, indices, stop_early, intermediates_only)`
(timm's contract: a list of block outputs, nothing computed after the last one needed);
`features_at(x, stage, block)` is the one-block case the image tower uses.

Variants are registered once (`VARIANTS`, filled by `@register_variant` on the named constructors
`ds_net_tiny`, `ds_net_small`); `build_backbone(name)` builds one by name. `ds_net_small` with
depths [3, 4, 12, 3] and one input channel has 27,757,344 parameters; `ds_net_tiny` (paper's
DS-Net-T: depths [2, 2, 4, 1], same dims) has 10,019,264 with one input channel and no head
(10,534,312 with three input channels and the 1000-class head, the paper's 10.5M).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

DIMS = (64, 128, 320, 512)
HEADS = (1, 2, 5, 8)
PATCH_STRIDES = (4, 2, 2, 2)
GLOBAL_DOWNSAMPLE = (8, 4, 2, 2)
MLP_RATIO = 4
MIN_INPUT = 32

# An entry of `forward_intermediates(indices=...)`: a flat 0-based block index (negative counts
# from the last block) or a 1-based (stage, block) pair as in `ImageTowerConfig`.
BlockIndex = Union[int, tuple[int, int]]


def _split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:  # (B, N, C) -> (B, h, N, C/h)
    b, n, c = x.shape
    return x.view(b, n, n_heads, c // n_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:  # (B, h, N, c) -> (B, N, h*c)
    b, h, n, c = x.shape
    return x.transpose(1, 2).reshape(b, n, h * c)


class PatchEmbed(nn.Module):
    """Conv with kernel = stride (non-overlapping patches); floor arithmetic on odd sizes."""

    def __init__(self, in_chans: int, dim: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ConvMlp(nn.Module):
    """1x1 conv -> GELU -> 1x1 conv."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MixBlock(nn.Module):
    """Dual-stream block (local depthwise conv + downsampled global self-attention + co-attention)."""

    def __init__(self, dim: int, n_heads: int, downsample: int, mlp_ratio: int = MLP_RATIO) -> None:
        super().__init__()
        self.dim_sa = dim // 2
        self.dim_conv = dim - self.dim_sa
        if self.dim_sa != self.dim_conv or self.dim_sa % n_heads:
            raise ValueError(f"mix block needs an even dim whose half divides by heads, got {dim}/{n_heads}")
        self.n_heads, self.downsample = n_heads, downsample
        half = self.dim_sa
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        # local stream
        self.norm_conv1 = nn.BatchNorm2d(half)
        self.conv = nn.Conv2d(half, half, 3, padding=1, groups=half)
        # global stream
        self.norm_sa1 = nn.LayerNorm(half)
        self.channel_up = nn.Linear(half, 3 * half)
        # co-attention
        self.norm_conv2 = nn.BatchNorm2d(half)
        self.norm_sa2 = nn.LayerNorm(half)
        self.cross_channel_up_conv = nn.Conv2d(half, 3 * half, 1)
        self.cross_channel_up_sa = nn.Linear(half, 3 * half)
        self.fuse_channel_conv = nn.Linear(half, half)
        self.fuse_channel_sa = nn.Linear(half, half)
        # fuse + MLP
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, dim * mlp_ratio)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = x.chunk(3, dim=-1)
        return tuple(_split_heads(t, self.n_heads) for t in (q, k, v))  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        shortcut = x
        x = self.conv1(self.norm1(x))
        h, w = x.shape[-2:]
        glob, loc = x[:, : self.dim_sa], x[:, self.dim_sa:]

        loc = loc + self.conv(self.norm_conv1(loc))

        gh, gw = max(1, math.ceil(h / self.downsample)), max(1, math.ceil(w / self.downsample))
        g = F.adaptive_avg_pool2d(glob, (gh, gw)).flatten(2).transpose(1, 2)  # (B, Ng, C/2)
        g = g + _merge_heads(F.scaled_dot_product_attention(*self._qkv(self.channel_up(self.norm_sa1(g)))))

        lq, lk, lv = self._qkv(self.cross_channel_up_conv(self.norm_conv2(loc)).flatten(2).transpose(1, 2))
        gq, gk, gv = self._qkv(self.cross_channel_up_sa(self.norm_sa2(g)))
        loc_tokens = self.fuse_channel_conv(_merge_heads(F.scaled_dot_product_attention(lq, gk, gv)))
        loc = loc + loc_tokens.transpose(1, 2).reshape(loc.shape)
        g = g + self.fuse_channel_sa(_merge_heads(F.scaled_dot_product_attention(gq, lk, lv)))

        g = g.transpose(1, 2).reshape(g.shape[0], self.dim_sa, gh, gw)
        g = F.interpolate(g, size=(h, w), mode="bilinear", align_corners=False)
        x = shortcut + self.conv2(torch.cat([loc, g], dim=1))
        return x + self.mlp(self.norm2(x))


class DSNet(nn.Module):
    """DS-Net backbone without classifier head.

    `depths` may have fewer than four entries (the later stages are then not built); the final
    `norm` exists only when all four stages are built. `forward_intermediates` stops after the
    requested block.
    """

    def __init__(self, depths: Sequence[int], in_chans: int = 1, dims: Sequence[int] = DIMS,
                 heads: Sequence[int] = HEADS, downsamples: Sequence[int] = GLOBAL_DOWNSAMPLE,
                 mlp_ratio: int = MLP_RATIO) -> None:
        super().__init__()
        depths = tuple(int(d) for d in depths)
        if not 1 <= len(depths) <= 4 or min(depths) < 1:
            raise ValueError(f"depths must list 1 to 4 positive block counts, got {depths}")
        self.depths, self.in_chans = depths, in_chans
        self.num_stages = len(depths)
        self.stage_channels = tuple(dims[: self.num_stages])
        self.stage_strides = tuple(int(math.prod(PATCH_STRIDES[: i + 1])) for i in range(self.num_stages))
        prev = in_chans
        for i, depth in enumerate(depths):
            setattr(self, f"patch_embed{i + 1}", PatchEmbed(prev, dims[i], PATCH_STRIDES[i]))
            setattr(self, f"blocks{i + 1}", nn.ModuleList(
                MixBlock(dims[i], heads[i], downsamples[i], mlp_ratio) for _ in range(depth)))
            prev = dims[i]
        self.norm = nn.BatchNorm2d(dims[3]) if self.num_stages == 4 else None
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def config(self) -> dict:
        """Architecture settings (json-able), part of the feature-cache fingerprint."""
        return {"depths": list(self.depths), "in_chans": self.in_chans, "dims": list(self.stage_channels)}

    @property
    def block_names(self) -> tuple[tuple[int, int], ...]:
        """(stage, block), 1-based, of every built block in forward order (flat index = position)."""
        return tuple((s + 1, j + 1) for s, depth in enumerate(self.depths) for j in range(depth))

    def _check_images(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_INPUT:
            raise ValueError(f"images must be at least {MIN_INPUT}x{MIN_INPUT}, got {tuple(x.shape[-2:])}")

    def _flat_index(self, index: BlockIndex) -> int:
        n = sum(self.depths)
        if isinstance(index, int):
            if not -n <= index < n:
                raise ValueError(f"block index must be in [{-n}, {n}) for this backbone's {n} blocks, got {index}")
            return index % n
        stage, block = (int(i) for i in index)
        if not 1 <= stage <= self.num_stages:
            raise ValueError(f"stage must be in 1..{self.num_stages} for this backbone, got {stage}")
        if not 1 <= block <= self.depths[stage - 1]:
            raise ValueError(f"block must be in 1..{self.depths[stage - 1]} for stage {stage}, got {block}")
        return sum(self.depths[: stage - 1]) + block - 1

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | Sequence[BlockIndex] | None = None, stop_early: bool = True,
        intermediates_only: bool = True,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Block outputs `(B, C_stage, h, w)` of images `x (B, in_chans, H, W)`, as in timm.

        `indices`: None (every block), an int n (the last n blocks), or a sequence whose entries
        are flat 0-based block indices over all built blocks in forward order (negative counts from
        the end; `block_names` lists the order) or 1-based `(stage, block)` pairs. The list follows
        the order of `indices`. With `stop_early` (and `intermediates_only`) no block after the last
        one needed is computed. With `intermediates_only=False` every block runs and the result is
        `(forward_features(x), intermediates)`."""
        n = sum(self.depths)
        if indices is None:
            take = list(range(n))
        elif isinstance(indices, int):
            if not 1 <= indices <= n:
                raise ValueError(f"indices as a count must be in 1..{n} for this backbone, got {indices}")
            take = list(range(n - indices, n))
        else:
            take = [self._flat_index(i) for i in indices]
            if not take:
                raise ValueError("indices must name at least one block")
        self._check_images(x)
        last = max(take) if stop_early and intermediates_only else n - 1
        wanted, outputs = set(take), {}
        flat = 0
        for s in range(1, self.num_stages + 1):
            if flat > last:
                break
            x = getattr(self, f"patch_embed{s}")(x)
            for blk in getattr(self, f"blocks{s}")[: last + 1 - flat]:
                x = blk(x)
                if flat in wanted:
                    outputs[flat] = x
                flat += 1
        intermediates = [outputs[i] for i in take]
        if intermediates_only:
            return intermediates
        return (self.norm(x) if self.norm is not None else x), intermediates

    def features_at(self, x: torch.Tensor, stage: int, block: int) -> torch.Tensor:
        """Output of block `block` of stage `stage` (both 1-based): `(B, C_stage, h, w)`; nothing
        after that block is computed."""
        return self.forward_intermediates(x, [(stage, block)])[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All built stages (and the final BatchNorm when all four are built): `(B, C, h, w)`."""
        final, _ = self.forward_intermediates(x, [-1], intermediates_only=False)
        return final

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


# --- variants -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """A registered DS-Net variant: its stage depths and its named constructor."""

    depths: tuple[int, ...]
    build: Callable[..., DSNet]


VARIANTS: dict[str, Variant] = {}


def register_variant(depths: Sequence[int]) -> Callable[[Callable[..., DSNet]], Callable[..., DSNet]]:
    """Decorator: register the constructor under its function name with these full depths."""
    def add(fn: Callable[..., DSNet]) -> Callable[..., DSNet]:
        VARIANTS[fn.__name__] = Variant(tuple(int(d) for d in depths), fn)
        return fn
    return add


def variant(name: str) -> Variant:
    """The registered variant `name`; ValueError naming the registered ones otherwise."""
    if name not in VARIANTS:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(VARIANTS)}")
    return VARIANTS[name]


@register_variant(depths=(2, 2, 4, 1))
def ds_net_tiny(in_chans: int = 1, depths: Sequence[int] | None = None) -> DSNet:
    """DS-Net-T (paper's smaller variant): depths [2, 2, 4, 1], dims [64, 128, 320, 512]."""
    return DSNet(depths or VARIANTS["ds_net_tiny"].depths, in_chans=in_chans)


@register_variant(depths=(3, 4, 12, 3))
def ds_net_small(in_chans: int = 1, depths: Sequence[int] | None = None) -> DSNet:
    """DS-Net-S as used by the reference: depths [3, 4, 12, 3] (the public release uses [3, 4, 8, 3])."""
    return DSNet(depths or VARIANTS["ds_net_small"].depths, in_chans=in_chans)


VARIANT_DEPTHS = MappingProxyType({name: v.depths for name, v in VARIANTS.items()})  # read-only view


def build_backbone(name: str, **kw) -> DSNet:
    """Backbone by registered name (`ds_net_tiny` | `ds_net_small`), keyword args passed to its constructor."""
    return variant(name).build(**kw)


def truncated_depths(name: str, stage: int, block: int, depths: Sequence[int] | None = None) -> tuple[int, ...]:
    """Depths of `name` cut after (stage, block): the backbone an image tower needs to build."""
    full = tuple(depths or variant(name).depths)
    if not 1 <= stage <= len(full):
        raise ValueError(f"stage must be in 1..{len(full)} for {name}, got {stage}")
    if not 1 <= block <= full[stage - 1]:
        raise ValueError(f"block must be in 1..{full[stage - 1]} for {name} stage {stage}, got {block}")
    return (*full[: stage - 1], block)
