"""How stored arrays map onto images, trials and neurons, decided from shapes alone (so that
`SubjectStore.list` and the import checks can decide from the MAT headers, before any data is read).

* `decide_layout` -- image layout (H x W x N, N x H x W, N x 1 x H x W, N x H x W x 1,
  H x W x 1 x N) and response orientation (trials x neurons or neurons x trials); see
  `neuroalign.data.subject` for the rules.
* `to_nhw` -- the chosen layout as an (N, H, W) view.
* `istim_presentations` -- which trials of an `istim` vector show which image, how often.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_REFERENCE_ASPECT = 270 / 68


def _aspect_score(h: int, w: int) -> float:
    return abs(math.log(max(w, 1) / max(h, 1)) - math.log(_REFERENCE_ASPECT))


def image_layout_candidates(shape: tuple[int, ...]) -> list[tuple[str, int, tuple[int, int]]]:
    """Possible (layout, n_images, (H, W)) for an image array shape, most plausible first."""
    if len(shape) == 4:
        out = []
        if shape[1] == 1:
            out.append(("N1HW", shape[0], (shape[2], shape[3])))
        if shape[2] == 1:
            out.append(("HW1N", shape[3], (shape[0], shape[1])))
        if shape[3] == 1:
            out.append(("NHW1", shape[0], (shape[1], shape[2])))
        return out
    if len(shape) == 3:
        hwn = ("HWN", shape[2], (shape[0], shape[1]))
        nhw = ("NHW", shape[0], (shape[1], shape[2]))
        return sorted([hwn, nhw], key=lambda c: (_aspect_score(*c[2]), c[0] != "HWN"))
    return []


@dataclass
class LayoutDecision:
    image_layout: str
    n_images: int
    image_hw: tuple[int, int]
    response_orientation: str  # "trials x neurons" | "neurons x trials"
    n_trials: int
    n_neurons: int
    notes: list[str]


def decide_layout(images_shape: tuple[int, ...], responses_shape: tuple[int, ...],
                  n_trials: int | None = None, images_name: str = "images.mat",
                  responses_name: str = "responses.mat") -> LayoutDecision:
    """Decide image layout and response orientation from shapes alone.

    `n_trials` is the trial count when an `istim` vector gives it; otherwise trials = images.
    Raises ValueError (naming both files and the shapes) when nothing is consistent.
    """
    images_shape, responses_shape = tuple(images_shape), tuple(responses_shape)
    candidates = image_layout_candidates(images_shape)
    if not candidates:
        raise ValueError(f"{images_name}: images have shape {images_shape} (rank {len(images_shape)}); "
                         "expected grayscale H x W x N, N x H x W, N x 1 x H x W, N x H x W x 1 or H x W x 1 x N")
    if len(responses_shape) != 2:
        raise ValueError(f"{responses_name}: responses have shape {responses_shape} (rank {len(responses_shape)}); "
                         "expected a 2-D trials x neurons (or neurons x trials) matrix")
    for layout, n, hw in candidates:
        t = n if n_trials is None else n_trials
        notes: list[str] = []
        if responses_shape[0] == t:
            orientation, k = "trials x neurons", responses_shape[1]
            if responses_shape[1] == t:
                notes.append(f"responses are {responses_shape[0]} x {responses_shape[1]}: both axes match the "
                             f"{t} trials; assumed trials x neurons as the reference code does")
        elif responses_shape[1] == t:
            orientation, k = "neurons x trials", responses_shape[0]
        else:
            continue
        if n_trials is None and any(c[1] in responses_shape for c in candidates if c[0] != layout):
            notes.append(f"images {images_shape}: both {candidates[0][0]} and {candidates[1][0]} match; "
                         f"chose {layout} (image {hw[0]} x {hw[1]} closest to the 68 x 270 aspect)")
        # with istim every candidate has the same trial count: the most plausible aspect wins
        return LayoutDecision(layout, n, hw, orientation, t, k, notes)
    readings = "; or ".join(f"{n}, reading {_LAYOUT_WORDS.get(layout, layout)} images of {hw[0]} x {hw[1]}"
                            for layout, n, hw in candidates)
    wanted = f"{n_trials} trials (length of istim)" if n_trials is not None else f"the image count ({readings})"
    raise ValueError(f"{responses_name}: responses have shape {responses_shape} but {images_name} holds images "
                     f"of shape {images_shape}; expected one responses axis to equal {wanted}")


_LAYOUT_WORDS = {"HWN": "H x W x N", "NHW": "N x H x W", "N1HW": "N x 1 x H x W", "HW1N": "H x W x 1 x N",
                 "NHW1": "N x H x W x 1"}


def to_nhw(arr: np.ndarray, layout: str) -> np.ndarray:
    """The images of `arr` stored in `layout` as an (N, H, W) view (no copy)."""
    if layout == "HWN":
        return np.moveaxis(arr, 2, 0)
    if layout == "NHW":
        return arr
    if layout == "N1HW":
        return arr[:, 0]
    if layout == "HW1N":
        return np.moveaxis(arr[:, :, 0, :], 2, 0)
    if layout == "NHW1":
        return arr[..., 0]
    raise AssertionError(layout)


def istim_presentations(path: Path, istim: np.ndarray, n_images: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Which trials of `istim` (1-based image id per trial, (T,)) show which of `n_images` images.

    Returns (keep (T,) bool: trials showing an image, ids (T',) their 0-based image ids,
    shown (M,) sorted ids of the images presented, counts (M,) presentations of each). Ids above
    `n_images` are gray screens. Refuses non-integer ids, ids < 1 and an istim without image trials.
    The one place that counts presentations: loading and the store's header summary use it.
    """
    ids = istim.reshape(-1).astype(np.float64)
    if np.any(ids != np.round(ids)) or ids.min() < 1:
        raise ValueError(f"{path.name}: istim must hold 1-based integer image ids; found values in "
                         f"[{ids.min():g}, {ids.max():g}] with non-integers or ids < 1")
    ids = ids.astype(np.int64) - 1
    keep = ids < n_images
    if not keep.all():
        ids = ids[keep]
    if ids.size == 0:
        raise ValueError(f"{path.name}: istim ids are all above the {n_images} images (gray screens); expected ids 1..{n_images}")
    shown, counts = np.unique(ids, return_counts=True)
    return keep, ids, shown, counts
