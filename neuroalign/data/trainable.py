"""What a subject needs before it can be trained, checked when it is imported or validated.

An untrainable subject is refused at import with the reason in one line, instead of importing
fine and failing later inside a training job:

* images of at least `MIN_INPUT` x `MIN_INPUT` pixels (the DS-Net backbone's minimum,
  `neuroalign.models.dsnet.MIN_INPUT`, 32 px);
* at least `MIN_IMAGES` images (10: the split by image needs train, validation and test images,
  and a retrieval test over one or two images means nothing);
* responses that vary across images for at least one neuron (constant responses carry no signal
  and every normaliser maps them to 0).

The first two are decided from the MAT headers (`check_trainable_shape`), before any data is read.
"""

from __future__ import annotations

import numpy as np

MIN_IMAGES = 10

_min_side: int | None = None


def use_min_image_side(side: int) -> None:
    """Use `side` as the minimum instead of importing the backbone (the sandboxed check's worker,
    which must not import torch, gets the parent's `min_image_side()`)."""
    global _min_side
    _min_side = int(side)


def min_image_side() -> int:
    """The backbone's minimal input side in pixels (`neuroalign.models.dsnet.MIN_INPUT`)."""
    if _min_side is not None:
        return _min_side
    from neuroalign.models.dsnet import MIN_INPUT  # imports torch: only when an import is checked

    return int(MIN_INPUT)


def check_trainable_shape(where: str, n_images: int, image_hw: tuple[int, int]) -> None:
    """ValueError "<where>: ..." when the images are too small or too few to train on."""
    side = min_image_side()
    h, w = int(image_hw[0]), int(image_hw[1])
    if min(h, w) < side:
        raise ValueError(f"{where}: images are {h} x {w} px; expected at least {side} x {side} px "
                         "(the image tower's DS-Net backbone cannot take smaller images)")
    if n_images < MIN_IMAGES:
        raise ValueError(f"{where}: {n_images} image(s) with responses; expected at least {MIN_IMAGES} "
                         "(training splits the images into train, validation and test sets)")


def check_trainable_responses(where: str, responses: np.ndarray) -> None:
    """ValueError "<where>: ..." when every neuron's response `(N, K)` is the same for all images."""
    if responses.shape[0] >= 2 and bool(np.all(responses.max(axis=0) == responses.min(axis=0))):
        raise ValueError(f"{where}: responses are constant across all {responses.shape[0]} images for every one "
                         f"of the {responses.shape[1]} neurons; expected responses that vary with the stimulus")
