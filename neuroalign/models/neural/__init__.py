"""Neural towers: population responses `(B, K)` -> maps `(B, 1, 16, 64)`, one class per kind.

What belongs here: the tower classes, each registered under its `NeuralTowerConfig.kind` name
(`registry.register`), and the parts they are composed of (`parts`: attention, per-neuron
embedding/readout, MLP map head). The folded maths they call lives in `neuroalign.models.folded`.

* ``reference`` -- `ReferenceAttentionTower`: one plain attention layer over the neuron tokens.
* ``transformer`` -- `TransformerTower`: pre-LN transformer blocks over the neuron tokens.
* ``latent`` -- `LatentTower`: learned latents cross-attend to the neurons (linear in K).
* ``linear`` -- `neuroalign.models.linear_tower.LinearNeuralTower`, registered here.

`build(n_neurons, config, n_components)` builds the tower a config names.
"""

from neuroalign.models.linear_tower import LinearNeuralTower
from neuroalign.models.neural.latent import LatentTower
from neuroalign.models.neural.reference import ReferenceAttentionTower
from neuroalign.models.neural.registry import (BLOCK_CLASSES, NEURAL_TOWER_CLASSES, build, neural_block,
                                               neural_tower_class, register)
from neuroalign.models.neural.transformer import TransformerTower

register("linear")(LinearNeuralTower)

__all__ = ["NEURAL_TOWER_CLASSES", "neural_tower_class", "BLOCK_CLASSES", "build", "neural_block", "register", "ReferenceAttentionTower", "TransformerTower",
           "LatentTower", "LinearNeuralTower"]
