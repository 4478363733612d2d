"""Registry of neural tower kinds: `@register("name")` on a tower class, `build` by the config's kind.

A registered class has `from_config(n_neurons, config, n_components)` and maps responses `(B, K)`
to maps `(B, 1, 16, 64)`; `register` sets the class attribute `kind` to its name. The names are the
`NeuralTowerConfig.kind` values (`neuroalign.config.NEURAL_KINDS`).
"""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from neuroalign.config import NeuralTowerConfig

T = TypeVar("T", bound=type)

NEURAL_TOWER_CLASSES: dict[str, type[nn.Module]] = {}  # kind -> tower class
BLOCK_CLASSES = NEURAL_TOWER_CLASSES  # the old name (the same dict), kept for code that imports it


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make the tower class buildable as neural tower kind `name`."""
    def add(cls: T) -> T:
        if name in NEURAL_TOWER_CLASSES and NEURAL_TOWER_CLASSES[name] is not cls:
            raise ValueError(f"neural tower kind {name!r} is already registered to "
                             f"{NEURAL_TOWER_CLASSES[name].__name__}")
        NEURAL_TOWER_CLASSES[name] = cls
        cls.kind = name
        return cls
    return add


def neural_tower_class(name: str) -> type[nn.Module]:
    """The tower class registered as kind `name`; ValueError naming the registered kinds otherwise."""
    if name not in NEURAL_TOWER_CLASSES:
        raise ValueError(f"neural tower kind must be one of {', '.join(sorted(NEURAL_TOWER_CLASSES))}; got {name!r}")
    return NEURAL_TOWER_CLASSES[name]


neural_block = neural_tower_class  # the old name, kept for code that imports it


def build(n_neurons: int, config: NeuralTowerConfig | None = None, n_components: int = 256) -> nn.Module:
    """The tower of kind `config.kind` for `n_neurons` neurons (`n_components`: the linear tower's
    embedding size; the attention towers map through their fixed MLP head)."""
    config = config or NeuralTowerConfig()
    return neural_tower_class(config.kind).from_config(n_neurons, config, n_components)
