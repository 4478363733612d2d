"""Registry of neural blocks: `@register("name")` on a tower class, `build` by the config's name.

A registered class has `from_config(n_neurons, config, n_components)` and maps responses `(B, K)`
to maps `(B, 1, 16, 64)`; `register` sets the class attribute `block` to its name. The names are
`NeuralTowerConfig.block` values (`neuroalign.config.NEURAL_BLOCKS`).
"""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from neuroalign.config import NeuralTowerConfig

T = TypeVar("T", bound=type)

BLOCK_CLASSES: dict[str, type[nn.Module]] = {}


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make the tower class buildable as neural block `name`."""
    def add(cls: T) -> T:
        if name in BLOCK_CLASSES and BLOCK_CLASSES[name] is not cls:
            raise ValueError(f"neural block {name!r} is already registered to {BLOCK_CLASSES[name].__name__}")
        BLOCK_CLASSES[name] = cls
        cls.block = name
        return cls
    return add


def neural_block(name: str) -> type[nn.Module]:
    """The tower class registered as `name`; ValueError naming the registered blocks otherwise."""
    if name not in BLOCK_CLASSES:
        raise ValueError(f"neural block must be one of {', '.join(sorted(BLOCK_CLASSES))}; got {name!r}")
    return BLOCK_CLASSES[name]


def build(n_neurons: int, config: NeuralTowerConfig | None = None, n_components: int = 256) -> nn.Module:
    """The tower of `config.block` for `n_neurons` neurons (`n_components`: the linear block's
    embedding size; the attention blocks map through their fixed MLP head)."""
    config = config or NeuralTowerConfig()
    return neural_block(config.block).from_config(n_neurons, config, n_components)
