"""One subject's stimuli and responses, loaded from the lab's .mat files.

Layout decisions (recorded in `Subject.meta`):

* Images may be stored H x W x N (MATLAB order, like the natimg2800 `imgs`, 68 x 270 x N),
  N x H x W, N x 1 x H x W, N x H x W x 1 or H x W x 1 x N, in variable `images` or `imgs`. N is the axis that
  matches the number of responses; when H x W x N and N x H x W both match, the one whose
  image aspect is closer to 68 x 270 wins (ties: H x W x N, the MATLAB order).
* Image intensities become float32 in [0, 1], keeping relative intensities: uint8 and uint16
  are divided by their dtype maximum (uint8 / 255, uint16 / 65535), bool (MATLAB logical) is 0/1,
  floats already within [0, 1] are kept, other numbers (floats, signed integers, uint32/uint64)
  within [0, 255] are divided by 255, and anything else (e.g. negative int16) is min-max scaled
  over the whole array (one offset and scale for all images).
* Values must be finite: NaN/Inf in images or responses, and responses beyond the float32 range
  (|x| > 3.4e38), are refused. Responses are converted to float32 (N, K) C-order in one step
  (no intermediate copies of a possibly large float64 matrix).
* Responses (`responses`) may be trials x neurons or neurons x trials: the axis that matches
  the trial count is the trial axis; when both match, trials x neurons (the reference code's
  convention) is assumed and noted in `meta["notes"]`.
* Repeats: an optional `istim` (1-based image id per trial, Stringer et al. format; ids above
  the image count are gray-screen trials and are dropped) is averaged into one row per image,
  and the first two presentations are kept as `repeats (2, N, K)` when every image has at least
  two. An optional `responses_repeats (R, N, K)` is used as the repeats directly (and its mean
  when `responses` is absent). Images never presented are dropped (`meta["n_images_unshown"]`).
* A recording file of Stringer et al. (2019) without `responses` works too: its struct
  `stim` gives `stim.resp` (trials x neurons) and `stim.istim`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from neuroalign.data.layout import (IMAGE_VARIABLES, OPTIONAL_RESPONSE_VARIABLES, RESPONSE_VARIABLE,  # noqa: F401
                                    check_values, decide_from_headers, decide_layout, istim_presentations,
                                    pick_image_variable, to_nhw)
from neuroalign.data.matio import peek_mat, read_mat_struct_fields, read_mat_variables
from neuroalign.data.trainable import check_trainable_responses, check_trainable_shape

logger = logging.getLogger(__name__)
SIDECAR = "subject.json"
GROUND_TRUTH = "ground_truth.npz"


@dataclass
class Subject:
    """Stimuli and responses of one subject, one response row per image.

    images: (N, 1, H, W) float32 in [0, 1]; responses: (N, K) float32 as stored (not normalised,
    the mean over repeats when repeats exist); repeats: (R, N, K) float32 or None;
    image_ids: (N,) int64, 0-based index of each image in the source file.
    """

    name: str
    images: np.ndarray
    responses: np.ndarray
    repeats: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    image_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        check_subject_arrays(self.images, self.responses, self.repeats)
        if self.image_ids is None:
            self.image_ids = np.arange(self.images.shape[0], dtype=np.int64)

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_neurons(self) -> int:
        return int(self.responses.shape[1])

    @property
    def image_shape(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    @cached_property
    def data_hash(self) -> str:
        """sha256 hex of the images and responses (bytes + shapes); the feature-cache key."""
        h = hashlib.sha256()
        for arr in (self.images, self.responses):
            a = np.ascontiguousarray(arr)
            h.update(str(a.shape).encode())
            h.update(str(a.dtype).encode())
            h.update(memoryview(a).cast("B"))
        return h.hexdigest()


def _shape_dtype(arr: Any) -> str:
    if not isinstance(arr, np.ndarray):
        return f"a {type(arr).__name__}"
    return f"shape {tuple(arr.shape)} {arr.dtype}"


def check_subject_arrays(images: Any, responses: Any, repeats: Any = None) -> None:
    """ValueError (one line naming what was found and what is expected) unless `images` is float32
    `(N, 1, H, W)`, `responses` float32 `(N, K)` and `repeats` None or float32 `(R, N, K)`."""
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[1] != 1 or images.dtype != np.float32:
        raise ValueError(f"Subject images: got {_shape_dtype(images)}; expected float32 (N, 1, H, W) in [0, 1]")
    n = images.shape[0]
    if not isinstance(responses, np.ndarray) or responses.ndim != 2 or responses.shape[0] != n \
            or responses.dtype != np.float32:
        raise ValueError(f"Subject responses: got {_shape_dtype(responses)}; expected float32 ({n}, K), one row "
                         f"per image of images {tuple(images.shape)}")
    k = responses.shape[1]
    if repeats is not None and (not isinstance(repeats, np.ndarray) or repeats.ndim != 3
                                or repeats.shape[1:] != (n, k) or repeats.dtype != np.float32):
        raise ValueError(f"Subject repeats: got {_shape_dtype(repeats)}; expected float32 (R, {n}, {k}) "
                         f"matching responses {tuple(responses.shape)}, or None")


# ---------------------------------------------------------------------------------------------
# conversions


def _f32(arr: np.ndarray) -> np.ndarray:
    """A fresh C-ordered float32 copy (safe to scale in place)."""
    return np.array(arr, dtype=np.float32, order="C", copy=True)


def scale_images(arr: np.ndarray) -> tuple[np.ndarray, str]:
    """Intensities -> C-ordered float32 in [0, 1] keeping relative intensities (see module docstring)."""
    if arr.dtype == bool:
        return _f32(arr), "bool as 0/1"
    if arr.dtype in (np.uint8, np.uint16):
        top = np.iinfo(arr.dtype).max
        out = _f32(arr)
        out /= np.float32(top)
        return out, f"{arr.dtype} / {top}"
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0 and hi <= 1 and arr.dtype.kind == "f":
        return np.ascontiguousarray(arr, dtype=np.float32), "float within [0, 1], kept"
    if lo >= 0 and hi <= 255:
        out = _f32(arr)
        out /= np.float32(255.0)
        return out, f"{arr.dtype} within [0, 255], divided by 255"
    if hi == lo:
        return np.zeros(arr.shape, np.float32), f"constant {arr.dtype} ({lo:g}), set to 0"
    span = hi - lo
    if not math.isfinite(span):
        raise ValueError(f"image values span [{lo:g}, {hi:g}], too wide to scale; expected intensities "
                         "(e.g. 0..255 or 0..1)")
    out = np.empty(arr.shape, dtype=np.float32)
    np.subtract(arr, lo, out=out, dtype=np.float64, casting="same_kind")  # float64 maths, float32 result
    out *= np.float32(1.0 / span)
    np.clip(out, 0.0, 1.0, out=out)  # float32 rounding may leave 1 + eps
    return out, f"{arr.dtype} in [{lo:g}, {hi:g}], min-max scaled over the whole array"


def _responses_f32(path: Path, name: str, arr: np.ndarray) -> np.ndarray:
    """(N, K) float32 C-order in one conversion step; refuses values beyond the float32 range."""
    big = float(np.finfo(np.float32).max)
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4 and (arr.max() > big or arr.min() < -big):
        raise ValueError(f"{path.name}: variable {name!r} has values in [{float(arr.min()):g}, {float(arr.max()):g}], "
                         f"beyond the float32 range (|x| <= {big:.3g}); expected responses such as rates or dF/F")
    return np.ascontiguousarray(arr, dtype=np.float32)


def aggregate_presentations(path: Path, ids: np.ndarray, resp: np.ndarray, n_images: int,
                            max_repeats: int | None = 2
                            ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, dict[str, Any]]:
    """Presentations (T, K) of 0-based image ids (T,) (all < `n_images`) -> the mean per image (M, K),
    repeats (R, M, K) | None, the ids of the M images presented (sorted) and counts.

    Repeats are the first R presentations of each image in presentation order, R = the smallest
    count (at most `max_repeats`; None: no cap), when every image was presented at least twice.
    The one place that averages presentations: `istim` in MAT files and NWB presentations use it.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    shown, counts = np.unique(ids, return_counts=True)
    order = np.argsort(ids, kind="stable")  # stable: presentations stay in trial order per image
    resp_sorted = resp[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    sums = np.add.reduceat(resp_sorted, starts, axis=0, dtype=np.float64)
    means = (sums / counts[:, None]).astype(np.float32)
    del sums
    repeats = None
    if counts.min() >= 2:
        r = int(counts.min()) if max_repeats is None else min(int(counts.min()), int(max_repeats))
        repeats = np.stack([resp_sorted[starts + j] for j in range(r)]).astype(np.float32)
    info = {"n_trials": int(ids.size), "n_images_unshown": int(n_images - shown.size),
            "presentations_per_image": [int(counts.min()), int(counts.max())]}
    return means, repeats, shown.astype(np.int64), info


def _aggregate_istim(path: Path, istim: np.ndarray, resp: np.ndarray, n_images: int
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, dict[str, Any]]:
    """Trials (T, K) + 1-based ids (T,) -> mean per image (M, K), repeats (2, M, K)|None, image ids (M,)."""
    keep, ids, shown, counts = istim_presentations(path, istim, n_images)
    if not keep.all():
        resp = resp[keep]
    means, repeats, shown, info = aggregate_presentations(path, ids, resp, n_images, max_repeats=2)
    info = {"n_trials": int(keep.size), "n_gray_trials_dropped": int((~keep).sum()), **{
        k: v for k, v in info.items() if k != "n_trials"}}
    return means, repeats, shown, info


def _orient_repeats(path: Path, rep: np.ndarray, n: int, k: int) -> np.ndarray:
    if rep.ndim != 3 or rep.shape[0] < 2:
        raise ValueError(f"{path.name}: responses_repeats has shape {rep.shape}; expected (R, N, K) with R >= 2 "
                         f"repeats, N = {n} images, K = {k} neurons")
    if rep.shape[1:] == (n, k):
        return rep
    if rep.shape[1:] == (k, n):
        return np.swapaxes(rep, 1, 2)
    raise ValueError(f"{path.name}: responses_repeats has shape {rep.shape}; expected (R, {n}, {k}) "
                     f"(repeats, images, neurons)")


# ---------------------------------------------------------------------------------------------
# loading


def load_pair(images_path: str | os.PathLike, responses_path: str | os.PathLike, name: str | None = None,
              *, require_trainable: bool = False) -> Subject:
    """Load and check an images file + responses file into a Subject (see module docstring).

    Shapes that do not fit together are refused from the MAT headers, before the data is read.
    `require_trainable` (imports and validation) also refuses what cannot be trained
    (`neuroalign.data.trainable`): too small or too few images (from the headers) and
    responses constant across images.
    """
    images_path, responses_path = Path(images_path), Path(responses_path)
    try:
        subject = _load_pair(images_path, responses_path, name, require_trainable)
    except MemoryError as exc:
        raise ValueError(f"{images_path.name} + {responses_path.name}: not enough memory to load this subject; "
                         "expected files that fit in memory (free memory or use a larger machine)") from exc
    if require_trainable:
        where = f"{images_path.name} + {responses_path.name}"
        check_trainable_shape(where, subject.n_images, subject.image_shape)
        check_trainable_responses(where, subject.responses)
    return subject


def _load_pair(images_path: Path, responses_path: Path, name: str | None, require_trainable: bool) -> Subject:
    img_info = peek_mat(images_path)
    img_var = pick_image_variable(images_path, img_info)
    resp_info = peek_mat(responses_path)
    stringer = RESPONSE_VARIABLE not in resp_info.variables and "responses_repeats" not in resp_info.variables
    if stringer and resp_info.variables.get("stim", ((), ""))[1] != "struct":
        raise ValueError(f"{responses_path.name}: no variable 'responses'; found {resp_info.describe()} "
                         f"({resp_info.format}); expected 'responses' (trials x neurons), optionally 'istim'")
    istim = None if stringer else decide_from_headers(images_path, responses_path, img_info, img_var, resp_info,
                                                       require_trainable)
    img_data, _ = read_mat_variables(images_path, [img_var])
    if stringer:
        # a recording file of Stringer et al. (2019): stim.resp (trials x neurons), stim.istim
        fields = read_mat_struct_fields(responses_path, "stim", ["resp"], optional=["istim"])
        resp_data = {"responses": fields["resp"], **({"istim": fields["istim"]} if "istim" in fields else {})}
    else:
        required = [RESPONSE_VARIABLE] if RESPONSE_VARIABLE in resp_info.variables else ["responses_repeats"]
        optional = [o for o in OPTIONAL_RESPONSE_VARIABLES if istim is None or o != "istim"]
        resp_data, _ = read_mat_variables(responses_path, required, optional=optional)
        if istim is not None:
            resp_data["istim"] = istim
    raw_images = img_data[img_var]
    check_values(images_path, img_var, raw_images)
    for key, arr in resp_data.items():
        check_values(responses_path, key, arr)

    notes: list[str] = []
    repeats = None
    repeats_source = None
    istim = resp_data.get("istim")
    if istim is not None and min(istim.shape) != 1 and istim.ndim != 1:
        raise ValueError(f"{responses_path.name}: istim has shape {istim.shape}; expected a vector of image ids")
    if "responses" in resp_data:
        raw_resp = resp_data["responses"]
    else:
        raw_resp = resp_data["responses_repeats"].mean(axis=0)
        notes.append("responses computed as the mean of responses_repeats")
    decision = decide_layout(raw_images.shape, raw_resp.shape, None if istim is None else int(istim.size),
                             images_path.name, responses_path.name)
    notes += decision.notes
    images, scaling = scale_images(to_nhw(raw_images, decision.image_layout))
    resp = _responses_f32(responses_path, "responses",
                          raw_resp if decision.response_orientation == "trials x neurons" else raw_resp.T)
    raw_resp_shape, raw_resp_dtype = list(raw_resp.shape), str(raw_resp.dtype)
    resp_data.pop("responses", None)
    del raw_resp  # the float64 original can go as soon as the float32 copy exists
    image_ids = np.arange(decision.n_images, dtype=np.int64)
    extra: dict[str, Any] = {"n_trials": decision.n_trials}
    if istim is not None:
        resp, repeats, image_ids, extra = _aggregate_istim(responses_path, istim, resp, decision.n_images)
        images = images[image_ids]
        repeats_source = "istim" if repeats is not None else None
        lo, hi = extra["presentations_per_image"]
        dropped = extra["n_gray_trials_dropped"]
        notes.append(f"istim: {extra['n_trials']} trials" + (f" ({dropped} gray/blank dropped)" if dropped else "")
                     + f" → {len(image_ids)} images × {lo if lo == hi else f'{lo}–{hi}'} presentation"
                     + ("s" if hi > 1 else "") + " (the mean per image is used"
                     + ("; the first two presentations are the repeats)" if repeats is not None else ")"))
        if extra["n_images_unshown"]:
            notes.append(f"{extra['n_images_unshown']} images never presented were dropped")
    elif "responses_repeats" in resp_data:
        repeats = _responses_f32(responses_path, "responses_repeats", _orient_repeats(
            responses_path, resp_data["responses_repeats"], decision.n_images, decision.n_neurons))
        repeats_source = "responses_repeats"

    if images.shape[0] < 3:
        notes.append(f"only {images.shape[0]} image(s): loadable, but training needs at least 3 "
                     "(one each for train, validation and test)")
    images = np.ascontiguousarray(images[:, None], dtype=np.float32)
    resp = np.ascontiguousarray(resp, dtype=np.float32)
    formats = {img_info.format, resp_info.format}
    meta = {
        "format": img_info.format if len(formats) == 1 else f"images {img_info.format}, responses {resp_info.format}",
        "images_file": str(images_path), "responses_file": str(responses_path),
        "images_variable": img_var,
        "images_shape_original": list(raw_images.shape), "images_dtype": str(raw_images.dtype),
        "responses_shape_original": raw_resp_shape, "responses_dtype": raw_resp_dtype,
        "image_layout": decision.image_layout, "response_orientation": decision.response_orientation,
        "image_scaling": scaling, "n_images": int(images.shape[0]), "n_neurons": int(resp.shape[1]),
        "image_shape": [int(images.shape[2]), int(images.shape[3])],
        "has_repeats": repeats is not None, "repeats_source": repeats_source,
        "n_repeats": 0 if repeats is None else int(repeats.shape[0]),
        "simulated": False, "path": str(images_path.parent), "notes": notes, **extra,
    }
    for n in notes:
        logger.info("%s: %s", name or images_path.parent.name, n)
    return Subject(name=name or images_path.parent.name, images=images, responses=resp,
                   repeats=repeats, meta=meta, image_ids=image_ids)


def subject_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """(images.mat, responses.mat) of a subject folder: `<path>/Data/` (reference layout) or `<path>/`."""
    path = Path(path)
    for folder in (path / "Data", path):
        if (folder / "images.mat").is_file() and (folder / "responses.mat").is_file():
            return folder / "images.mat", folder / "responses.mat"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: subject folder not found")
    raise FileNotFoundError(f"{path}: expected Data/images.mat and Data/responses.mat in the subject folder")


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The `subject.json` sidecar of a subject folder, or None when absent or unreadable."""
    f = Path(path) / SIDECAR
    try:
        data = json.loads(f.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # ValueError covers bad JSON and bad UTF-8
        logger.warning("ignoring unreadable %s: %s", f, exc)
        return None
    if not isinstance(data, dict):
        logger.warning("ignoring %s: expected a JSON object, found %s", f, type(data).__name__)
        return None
    return data


def source_of(sidecar: dict[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """(source format, original file names) recorded in a sidecar at import; (None, ()) when none."""
    source = sidecar.get("source")
    if not isinstance(source, dict):
        return None, ()
    fmt = source.get("format")
    files = tuple(str(source[k]) for k in ("nwb_file", "images_file", "responses_file") if source.get(k))
    return (str(fmt) if fmt else None), files



def load_subject(path: str | os.PathLike) -> Subject:
    """Load the subject folder `<root>/<name>` (files in `Data/`, as the reference code lays them out).

    A folder this package did not write is checked once in the sandbox first
    (`neuroalign.data.folder_check`): ValueError with the reason when its files were refused.
    """
    from neuroalign.data.folder_check import ensure_checked

    path = Path(path)
    images_path, responses_path = subject_files(path)
    ensure_checked(path)
    subject = load_pair(images_path, responses_path, name=path.name)
    sidecar = read_sidecar(path) or {}
    subject.meta["simulated"] = bool(sidecar.get("simulated", False))
    subject.meta["path"] = str(path)
    source_format, source_files = source_of(sidecar)
    subject.meta["source_format"] = source_format or subject.meta["format"]  # "format": the files on disk
    subject.meta["source_files"] = list(source_files)
    return subject


def load_ground_truth(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """Noiseless `rates (N, K)` and `repeats (R, N, K)` of a simulated subject folder, else None."""
    f = Path(path) / GROUND_TRUTH
    if not f.is_file():
        return None
    with np.load(f, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
