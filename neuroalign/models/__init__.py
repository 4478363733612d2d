"""Models: the DS-Net image tower, the neural towers and the alignment losses.

* `dsnet` -- DS-Net backbone (one variant registry) with timm-style `forward_intermediates`.
* `image_tower` -- `ImageTower`: backbone features -> conv1x1 or readout head -> 16x64 map.
* `feature_cache` -- `cached_features`: frozen-backbone features cached in memory and on disk.
* `neural` -- one class per neural tower kind, registered by name (reference, transformer, latent;
  `linear_tower.LinearNeuralTower` as "linear"); `build_neural_tower` builds the one a config names,
  `neural_tower.make_neural_tower(n, kind=...)` is the same with keyword options.
* `folded` (+ `folded_tiles`, `native`) -- the exact folded attention of the reference and latent
  towers: eager tiles, torch.compile'd chunks or fused C++ CPU kernels.
* `maps` -- per-sample min-max and the DCT basis of the 16x64 maps.
* `losses` -- `clip_loss`, `similarity_matrix`, RMSE, SSIM, `CombinedLoss`.
* `weights` -- `load_backbone_weights` from a local DS-Net state-dict file.
"""

from neuroalign.models.dsnet import DSNet, build_backbone, ds_net_small, ds_net_tiny
from neuroalign.models.feature_cache import cached_features
from neuroalign.models.image_tower import ImageTower
from neuroalign.models.losses import (
    CombinedLoss,
    clip_loss,
    rmse_loss,
    similarity_matrix,
    ssim_loss,
    ssim_map,
    ssim_per_sample,
)
from neuroalign.models.maps import MAP_SIZE, minmax_per_sample
from neuroalign.models.linear_tower import LinearNeuralTower
from neuroalign.models import neural
from neuroalign.models.neural_tower import NeuralTower, make_neural_tower
from neuroalign.models.weights import LoadReport, load_backbone_weights

__all__ = [
    "DSNet", "build_backbone", "ds_net_small", "ds_net_tiny", "cached_features", "ImageTower",
    "CombinedLoss", "clip_loss", "rmse_loss", "similarity_matrix", "ssim_loss", "ssim_map",
    "ssim_per_sample", "MAP_SIZE", "minmax_per_sample", "NeuralTower", "make_neural_tower", "LoadReport", "load_backbone_weights",
    "LinearNeuralTower", "build_neural_tower",
]


def build_neural_tower(n_neurons: int, config, n_components: int = 256):
    """The registered tower of `config.kind` (`neuroalign.models.neural.NEURAL_TOWER_CLASSES`, kind ->
    class: reference, transformer, latent, linear); `n_components` is the linear tower's embedding size."""
    return neural.build(n_neurons, config, n_components)
