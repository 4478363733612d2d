"""How stored arrays map onto images, trials and neurons, decided from shapes alone (so that
`SubjectStore.list` and the import checks can decide from the MAT headers, before any data is read).

* `pick_image_variable`, `decide_from_headers` -- the header decisions of a MAT pair (which image
  variable; declared sizes, shapes that fit together, trainable sizes; the small `istim` read),
  made before any image or response data is read: by `subject.load_pair` and by the sandboxed
  import check (`check_worker`).
* `check_values` -- an array is not empty and holds no NaN/Inf.
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

from neuroalign.data.matio import MatInfo, check_declared_size, read_mat_variables
from neuroalign.data.trainable import check_trainable_shape

IMAGE_VARIABLES = ("images", "imgs")
RESPONSE_VARIABLE = "responses"
OPTIONAL_RESPONSE_VARIABLES = ("istim", "responses_repeats")

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


# ---- header decisions of a MAT pair ---------------------------------------------------------


def _all_finite(arr: np.ndarray) -> bool:
    """True when no NaN/Inf; min and max propagate both, so no temporary array of the input's size."""
    return arr.dtype.kind != "f" or bool(np.isfinite(arr.min()) and np.isfinite(arr.max()))


def check_values(path: Path, name: str, arr: np.ndarray) -> None:
    """Refuse an empty array or one with NaN/Inf (one line naming the file and variable)."""
    if arr.size == 0:
        raise ValueError(f"{path.name}: variable {name!r} is empty (shape {arr.shape}); expected data")
    if not _all_finite(arr):
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        raise ValueError(f"{path.name}: variable {name!r} {arr.shape} {arr.dtype} contains {n_nan} NaN and {n_inf} Inf "
                         "values; expected finite numbers (remove or impute them first)")


def pick_image_variable(path: Path, info: MatInfo) -> str:
    """The images file's image variable (the first of IMAGE_VARIABLES it holds), from its header."""
    for name in IMAGE_VARIABLES:
        if name in info.variables:
            return name
    raise ValueError(f"{path.name}: no image variable ('images' or 'imgs'); found {info.describe()} ({info.format})")


def _numeric_shape(info: MatInfo, name: str) -> tuple[int, ...] | None:
    """Declared shape of a non-empty numeric variable, else None (refused with its own message when read)."""
    shape, dtype = info.variables[name]
    try:
        numeric = np.dtype(dtype).kind in "biuf"
    except TypeError:
        numeric = False
    return tuple(shape) if numeric and all(int(s) > 0 for s in shape) else None


def decide_from_headers(images_path: Path, responses_path: Path, img_info: MatInfo, img_var: str,
                        resp_info: MatInfo, require_trainable: bool) -> np.ndarray | None:
    """Refuse from the headers (and the small `istim`) what reading the data cannot fix; returns istim.

    Declared sizes the file cannot hold or above the size cap, shapes that do not fit together,
    and with `require_trainable` too small or too few images, are refused before any image or
    response data is read (nothing large is inflated).
    """
    key = RESPONSE_VARIABLE if RESPONSE_VARIABLE in resp_info.variables else "responses_repeats"
    check_declared_size(images_path, img_info, img_var)  # impossible or too large: refused first
    check_declared_size(responses_path, resp_info, key)
    istim = None
    if "istim" in resp_info.variables:
        istim = read_mat_variables(responses_path, ["istim"])[0]["istim"]
        check_values(responses_path, "istim", istim)
        if min(istim.shape) != 1 and istim.ndim != 1:
            raise ValueError(f"{responses_path.name}: istim has shape {istim.shape}; expected a vector of image ids")
    img_shape = _numeric_shape(img_info, img_var)
    resp_shape = _numeric_shape(resp_info, key)
    if key == "responses_repeats" and resp_shape is not None:
        resp_shape = resp_shape[1:] if len(resp_shape) == 3 else None
    if img_shape is None or resp_shape is None:
        return istim
    decision = decide_layout(img_shape, resp_shape, None if istim is None else int(istim.size),
                             images_path.name, responses_path.name)
    if require_trainable:
        n_images = decision.n_images
        if istim is not None:
            n_images = int(istim_presentations(responses_path, istim, decision.n_images)[2].size)
        check_trainable_shape(f"{images_path.name} + {responses_path.name}", n_images, decision.image_hw)
    return istim
