"""Reading a calcium-imaging session stored as NWB 2.x into a `Subject` (images, one response row per
image, repeats), with h5py only (the sandboxed check worker imports neither pynwb nor pandas).

What is read, and how it is decided (every decision is written to the report and `subject.json`):

* **Presentations** -- an `IndexSeries` in `stimulus/presentation` (onsets from its `timestamps`,
  or `starting_time` + `rate`), or an intervals table (`TimeIntervals` in `intervals/` or
  `stimulus/presentation`) with an image-index column (`image_index`, `frame`, `image_id`,
  `stimulus_index` or `image`, or the one named). Negative or NaN indices are blanks (gray
  screens) and are dropped. Default: the only `IndexSeries`; without one, the only intervals table
  with an index column; otherwise the user names one (`NwbOptions.presentations`).
* **Images** -- the templates the presentations index: an `Images` container in
  `stimulus/templates` (the index counts in the order of its `order_of_images`; without it the
  images are put in natural order of their names -- NaturalScene2 before NaturalScene10, which a
  plain sort gets wrong -- and a note warns), a legacy `ImageSeries`/`OpticalSeries` (the index is
  the frame), or, for files without templates (or with templates in external files), a separately
  given `.mat` images file (`images`/`imgs`, image i = the index i). Images keep their size (as
  MAT imports do; the image tower takes any size of at least 32 px) and are scaled to [0, 1] by
  the MAT rules; RGB(A) images whose colour channels are equal are read as grayscale, colour
  images are refused. Images of different sizes, indices beyond the templates, and images
  never presented (dropped, as MAT imports do) are reported.
* **Responses** -- `RoiResponseSeries` in `processing/ophys`: a container (`DfOverF`,
  `Fluorescence`, `Deconvolved`, ...) gives one series per imaging plane, concatenated along the
  neurons (a container holding several series of one plane, e.g. fluorescence and neuropil, needs
  them named: `DfOverF/plane0`). Default container: DfOverF, else Deconvolved, else Fluorescence.
  `data` is frames x ROIs (ROIs x frames is recognised from the time stamps and noted);
  `conversion` and `offset` are applied. Each neuron's identity is recorded (`subject.json`, source
  `nwb`: `series`, `imaging_planes`, `rois_per_series`, `roi_tables` and `roi_ids`, the `id` of
  each column's row in the PlaneSegmentation that the series' `rois` region refers to; None with a
  note when the file does not say), so per-neuron results can go back into the file
  (`neuroalign.export_nwb`).
* **Response of a presentation** -- the mean of the frames whose time stamps `t` satisfy
  `onset + start <= t < onset + end` (`NwbOptions.window`, seconds, default 0.0-0.5 s), from each
  series' own time stamps (planes of a multi-plane recording are sampled at different times), never
  from frame counts. A window that leaves a series' recording or holds no frame is refused.
* **Repeats** -- one row per image is the mean over its presentations; when every image was
  presented at least twice, the first R presentations (R = the smallest count) are kept as
  `repeats (R, N, K)` for the repeat decoder, FEV/FEVE and repeat augmentation.

Memory: a series is read in blocks of time (`NwbOptions.chunk_bytes`, default 64 MiB, aligned with
its HDF5 chunks), only over frames some window needs; what stays in memory is one block and the
presentations x neurons result, whatever the length of the recording.

Hostile files: every dataset read whole is first bounded by what the file stores for it (as MAT
v7.3 files are, `matio.hdf5.h5_stored`) and by the import cap; HDF5 external links and external or
virtual datasets are refused; errors are one-line ValueErrors naming the file.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from neuroalign.data.layout import image_layout_candidates, to_nhw
from neuroalign.data.matio import check_declared_size, peek_mat, read_mat_variables
from neuroalign.data.matio.common import human, max_variable_bytes
from neuroalign.data.matio.hdf5 import h5_stored
from neuroalign.data.matio.sniff import has_hdf5_signature, other_kind
from neuroalign.data.subject import (IMAGE_VARIABLES, Subject, aggregate_presentations, scale_images)
from neuroalign.data.trainable import check_trainable_responses, check_trainable_shape

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CHUNK_BYTES", "DEFAULT_WINDOW", "INDEX_COLUMNS", "NwbOptions", "NwbPlan", "SERIES_PREFERENCE",
           "inventory", "plan_nwb", "read_nwb"]

#: the default response window after each onset, seconds (half-open: start <= t - onset < end)
DEFAULT_WINDOW = (0.0, 0.5)
#: bytes of one block of a response series in memory (the read buffer plus its running sums)
DEFAULT_CHUNK_BYTES = 64 * 1024**2
#: containers in processing/ophys tried in this order when no series is named
SERIES_PREFERENCE = ("DfOverF", "Deconvolved", "Fluorescence")
#: image-index columns of an intervals table, tried in this order when none is named
INDEX_COLUMNS = ("image_index", "frame", "image_id", "stimulus_index", "image")
OPHYS = "processing/ophys"
_IMAGE_TYPES = {"Image", "GrayscaleImage", "RGBImage", "RGBAImage"}
_IMAGE_SERIES_TYPES = {"ImageSeries", "OpticalSeries"}
_TABLE_TYPES = {"TimeIntervals", "DynamicTable"}


@dataclass(frozen=True)
class NwbOptions:
    """What to read from an NWB file; every field None/empty means "decide as the module docstring says".

    `series`: names in processing/ophys, each a container ("DfOverF": its series, one per imaging
    plane), a series in a container ("DfOverF/plane0") or a series directly in the module.
    `window`: (start, end) seconds after each onset. `chunk_bytes`: memory for one block of a series.
    """

    series: tuple[str, ...] = ()
    presentations: str | None = None
    templates: str | None = None
    index_column: str | None = None
    window: tuple[float, float] = DEFAULT_WINDOW
    chunk_bytes: int = DEFAULT_CHUNK_BYTES

    def __post_init__(self) -> None:
        series = (self.series,) if isinstance(self.series, str) else tuple(self.series or ())
        object.__setattr__(self, "series", tuple(s.strip().strip("/") for s in series if s and s.strip()))
        for key in ("presentations", "templates", "index_column"):
            value = getattr(self, key)
            object.__setattr__(self, key, (str(value).strip().strip("/") or None) if value is not None else None)
        try:
            start, end = (float(v) for v in self.window)
        except (TypeError, ValueError):
            raise ValueError(f"response window {self.window!r}: expected two numbers, START END in seconds "
                             "after each onset (e.g. 0 0.5)") from None
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
            raise ValueError(f"response window {start:g} to {end:g} s: expected finite START < END in seconds after "
                             "each onset (e.g. 0 0.5)")
        object.__setattr__(self, "window", (start, end))
        if int(self.chunk_bytes) < 1:
            raise ValueError(f"chunk_bytes {self.chunk_bytes!r}: expected a positive byte count")
        object.__setattr__(self, "chunk_bytes", int(self.chunk_bytes))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["series"], d["window"] = list(self.series), list(self.window)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "NwbOptions":
        d = dict(d or {})
        known = {k: d[k] for k in ("series", "presentations", "templates", "index_column", "window", "chunk_bytes")
                 if k in d and d[k] is not None}
        return cls(**known)


# ---------------------------------------------------------------------------------------------
# small HDF5 helpers (never following external links)


def _fail(path: Path, message: str) -> ValueError:
    return ValueError(f"{path.name}: {message}")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _type(obj: Any) -> str:
    return _text(obj.attrs.get("neurodata_type", "")) if obj is not None else ""


def _child(path: Path, group: Any, name: str) -> Any:
    """`group[name]`, or None when absent or a soft link that leads nowhere; an external link is refused."""
    import h5py

    try:
        link = group.get(name, getlink=True)
    except (KeyError, RuntimeError, ValueError):
        return None
    if link is None:
        return None
    if isinstance(link, h5py.ExternalLink):
        raise _fail(path, f"{group.name.rstrip('/')}/{name} is an HDF5 external link (its data is in "
                    f"{link.filename}); expected the data inside this file")
    try:
        return group[name]
    except (KeyError, RuntimeError, ValueError):
        return None


def _members(path: Path, group: Any) -> list[tuple[str, Any]]:
    """(name, object) of a group's members in HDF5 order; broken soft links skipped, external links refused."""
    out = []
    for name in group.keys():
        obj = _child(path, group, name)
        if obj is not None:
            out.append((name, obj))
    return out


def _label(obj: Any) -> str:
    """A path without the leading slash, for messages ("processing/ophys/DfOverF/plane0")."""
    return obj.name.lstrip("/")


def _check_dataset(path: Path, ds: Any, label: str, *, cap: bool = True) -> None:
    """Refuse from the headers what cannot be read safely or in full: data in other files, filters that
    cannot be decoded, more elements declared than the stored bytes can decode to, above the import cap."""
    if ds.external or ds.is_virtual:
        raise _fail(path, f"{label} is an HDF5 external or virtual dataset (its data is in other files); "
                    "expected the data inside this file")
    (stored, how, _), holds, refusal = h5_stored(ds)
    if refusal:
        raise _fail(path, f"{label} {refusal}")
    n = int(math.prod(int(s) for s in ds.shape)) if ds.shape is not None else 0
    if ds.shape is None or n == 0:
        raise _fail(path, f"{label} is empty (shape {ds.shape}); expected data")
    if n > holds:
        raise _fail(path, f"{label} declares shape {tuple(ds.shape)} {ds.dtype} but the file holds only "
                    f"{human(stored)} for it ({how}: at most {holds:,} elements); the file is truncated or corrupt")
    size = n * ds.dtype.itemsize
    limit = max_variable_bytes()
    if cap and size > limit:
        raise _fail(path, f"{label} declares shape {tuple(ds.shape)} {ds.dtype} = {human(size)}, above the "
                    f"{human(limit)} import size limit (set NEUROALIGN_MAX_IMPORT_BYTES to allow it)")


def _numeric(path: Path, ds: Any, label: str) -> None:
    if ds.dtype.kind not in "biuf":
        raise _fail(path, f"{label} has HDF5 type {ds.dtype}; expected numbers")


def _read_small(path: Path, ds: Any, label: str) -> np.ndarray:
    """A dataset read whole after the header checks (time stamps, indices, images)."""
    _check_dataset(path, ds, label)
    _numeric(path, ds, label)
    arr = np.asarray(ds[()])
    if arr.dtype.byteorder not in ("=", "|") and not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def natural_key(name: str) -> tuple:
    """Sort key that orders the digits in a name as numbers: NaturalScene2 before NaturalScene10."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", name) if part != "")


# ---------------------------------------------------------------------------------------------
# the file


def _open(path: Path):
    """An h5py.File of an NWB 2.x file, or a one-line ValueError saying what the file is instead."""
    import h5py

    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if path.is_dir():
        raise _fail(path, "is a folder, not a file (expected an .nwb file)")
    if not path.is_file():
        raise _fail(path, "is not a regular file (expected an .nwb file)")
    if path.stat().st_size == 0:
        raise _fail(path, "the file is empty (expected an NWB file)")
    if not has_hdf5_signature(path):
        with open(path, "rb") as fh:
            head = fh.read(520)
        kind = other_kind(head) or ("a MATLAB v5 .mat file" if head.startswith(b"MATLAB 5.0") else None)
        what = f"is {kind}" if kind else "is not an HDF5 file"
        raise _fail(path, f"{what}; expected an NWB 2.x file (NWB files are HDF5: the neurodata without borders "
                    "format, e.g. from DANDI, the Allen Brain Observatory or neuroconv)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise _fail(path, f"cannot open as HDF5 ({' '.join(str(exc).split())[:120]}); the file may be truncated "
                    "or corrupt") from exc
    try:
        root_type = _type(f)
        version = _text(f.attrs.get("nwb_version", ""))
        if root_type != "NWBFile":
            if version.startswith(("NWB-1", "1.")):
                raise _fail(path, f"is an NWB {version} file; expected NWB 2.x (convert it, e.g. with the Allen SDK "
                            "or neuroconv)")
            with open(path, "rb") as fh:
                matlab = fh.read(10) == b"MATLAB 7.3"
            raise _fail(path, ("is a MATLAB v7.3 .mat file" if matlab else "is an HDF5 file but not NWB")
                        + " (no NWBFile at its root); expected an NWB 2.x file")
        if version.startswith(("1.", "NWB-1")):
            raise _fail(path, f"is an NWB {version} file; expected NWB 2.x")
    except BaseException:
        f.close()
        raise
    return f


def _version(f: Any) -> str:
    return _text(f.attrs.get("nwb_version", "2")) or "2"


# ---------------------------------------------------------------------------------------------
# presentations


@dataclass
class _Presentations:
    label: str
    kind: str  # "IndexSeries" | "intervals table"
    onsets: np.ndarray  # (n,) float64 seconds, blanks dropped, in time order
    indices: np.ndarray  # (n,) int64
    n_blank: int
    n_total: int
    index_column: str | None = None
    templates_link: str | None = None  # HDF5 path of the linked Images / ImageSeries
    note: str | None = None


def _presentation_candidates(path: Path, f: Any, index_column: str | None = None
                             ) -> tuple[list[Any], list[tuple[Any, str | None]]]:
    """(IndexSeries groups, [(intervals table, its image-index column or None)]) of the file; `index_column`
    is the column the user named (else the first of INDEX_COLUMNS a table has)."""
    series, tables = [], []
    for where in ("stimulus/presentation", "intervals"):
        group = _child(path, f, where)
        if group is None:
            continue
        for _, obj in _members(path, group):
            if _type(obj) == "IndexSeries":
                series.append(obj)
            elif hasattr(obj, "keys") and _child(path, obj, "start_time") is not None:
                tables.append((obj, _index_column(path, obj, index_column)))
    return series, tables


def _columns(table: Any) -> list[str]:
    names = table.attrs.get("colnames")
    if names is None:
        return [k for k in table.keys() if k != "id"]
    return [_text(c) for c in np.asarray(names).reshape(-1)]


def _index_column(path: Path, table: Any, wanted: str | None) -> str | None:
    """The image-index column of an intervals table: `wanted`, else the first of INDEX_COLUMNS that is a
    plain (not ragged) column of numbers; None when there is none."""
    cols = _columns(table)
    for name in ([wanted] if wanted else INDEX_COLUMNS):
        if name not in cols or f"{name}_index" in table:
            continue
        obj = _child(path, table, name)
        if obj is not None and hasattr(obj, "dtype") and obj.dtype.kind in "biuf" and len(obj.shape or ()) == 1:
            return name
    return None


def _describe_candidates(series: list[Any], tables: list[tuple[Any, str | None]]) -> str:
    parts = [f"IndexSeries {_label(s)}" for s in series]
    parts += [f"table {_label(t)}" + (f" (column {c})" if c else " (no image-index column)") for t, c in tables]
    return ", ".join(parts) or "none"


def _times(path: Path, obj: Any, n: int, label: str) -> tuple[np.ndarray, str]:
    """(time of each of the `n` samples of a TimeSeries, "timestamps" | "rate"), seconds."""
    ts = _child(path, obj, "timestamps")
    if ts is not None:
        t = _read_small(path, ts, f"{label}/timestamps").astype(np.float64).reshape(-1)
        if t.size != n:
            raise _fail(path, f"{label} has {n} samples but {t.size} timestamps; expected one timestamp per sample")
        how = "timestamps"
    else:
        start = _child(path, obj, "starting_time")
        if start is None:
            raise _fail(path, f"{label} has neither timestamps nor starting_time and rate; expected one of them")
        rate = float(np.asarray(start.attrs.get("rate", np.nan)))
        t0 = float(np.asarray(start[()]))
        if not (math.isfinite(rate) and rate > 0 and math.isfinite(t0)):
            raise _fail(path, f"{label} has starting_time {t0:g} s and rate {rate:g} Hz; expected a finite start and "
                        "a positive rate")
        t = t0 + np.arange(n, dtype=np.float64) / rate
        how = f"starting_time {t0:g} s + rate {rate:g} Hz"
    if not np.all(np.isfinite(t)):
        raise _fail(path, f"{label} has NaN or Inf timestamps; expected finite times in seconds")
    if t.size > 1 and np.any(np.diff(t) < 0):
        raise _fail(path, f"{label} timestamps are not in increasing order; expected times in seconds, increasing")
    return t, how


def _link_target(path: Path, group: Any, name: str) -> str | None:
    import h5py

    link = group.get(name, getlink=True)
    if link is None:
        return None
    if isinstance(link, h5py.ExternalLink):
        raise _fail(path, f"{_label(group)}/{name} is an HDF5 external link (to {link.filename}); expected the "
                    "templates inside this file")
    if isinstance(link, h5py.SoftLink):
        return link.path if _child(path, group, name) is not None else None
    obj = _child(path, group, name)
    return None if obj is None else obj.name


def _read_presentations(path: Path, f: Any, options: NwbOptions) -> _Presentations:
    series, tables = _presentation_candidates(path, f, options.index_column)
    chosen: Any = None
    if options.presentations:
        want = options.presentations
        for obj in series + [t for t, _ in tables]:
            if obj.name.strip("/") == want or obj.name.rsplit("/", 1)[-1] == want:
                chosen = obj
                break
        if chosen is None:
            raise _fail(path, f"no stimulus presentation named {want!r}; found {_describe_candidates(series, tables)}")
    elif len(series) == 1:
        chosen = series[0]
    elif not series and len([t for t, c in tables if c]) == 1:
        chosen = next(t for t, c in tables if c)
    elif not series and tables and options.index_column and not options.presentations:
        raise _fail(path, f"no intervals table has a column {options.index_column!r} of numbers; found "
                    + "; ".join(f"{_label(t)}: {', '.join(_columns(t)) or 'no columns'}" for t, _ in tables)
                    + " (expected --index-column to name one of them)")
    elif not series and not any(c for _, c in tables):
        raise _fail(path, "no stimulus presentation: expected an IndexSeries in stimulus/presentation or an "
                    "intervals table with an image-index column (" + ", ".join(INDEX_COLUMNS) + "); found "
                    + _describe_candidates(series, tables))
    else:
        raise _fail(path, "several stimulus presentations: " + _describe_candidates(series, tables)
                    + "; expected one, or the one named (--presentations NAME)")
    label = _label(chosen)
    if _type(chosen) == "IndexSeries":
        data = _child(path, chosen, "data")
        if data is None:
            raise _fail(path, f"{label} has no data; expected the index of the image shown at each timestamp")
        idx = _read_small(path, data, f"{label}/data").reshape(-1)
        onsets, how = _times(path, chosen, idx.size, label)
        link = _link_target(path, chosen, "indexed_images") or _link_target(path, chosen, "indexed_timeseries")
        kind, column, note = "IndexSeries", None, f"onsets from {how}"
    else:
        column = _index_column(path, chosen, options.index_column)
        if column is None:
            wanted = repr(options.index_column) if options.index_column else "an image-index column (" + \
                ", ".join(INDEX_COLUMNS) + ")"
            raise _fail(path, f"intervals table {label} has no {wanted} of numbers; found columns "
                        + ", ".join(_columns(chosen)) + " (name one with --index-column)")
        idx = _read_small(path, _child(path, chosen, column), f"{label}/{column}").reshape(-1)
        onsets = _read_small(path, _child(path, chosen, "start_time"), f"{label}/start_time").astype(np.float64)
        onsets = onsets.reshape(-1)
        if onsets.size != idx.size:
            raise _fail(path, f"{label}: start_time has {onsets.size} rows but {column} {idx.size}; the table is "
                        "inconsistent")
        link, kind, note = None, "intervals table", f"onsets from start_time, image index from column {column!r}"
    idx = idx.astype(np.float64)
    blank = ~np.isfinite(idx) | (idx < 0)
    kept = idx[~blank]
    if np.any(kept != np.round(kept)):
        raise _fail(path, f"{label}: image indices must be whole numbers; found values such as "
                    f"{float(kept[kept != np.round(kept)][0]):g}")
    onsets_kept = onsets[~blank]
    if not np.all(np.isfinite(onsets_kept)):
        raise _fail(path, f"{label}: onsets include NaN or Inf; expected times in seconds")
    if kept.size == 0:
        raise _fail(path, f"{label}: all {idx.size} presentations are blanks (index < 0); expected image indices "
                    "0, 1, 2, ...")
    order = np.argsort(onsets_kept, kind="stable")
    return _Presentations(label, kind, onsets_kept[order], kept[order].astype(np.int64), int(blank.sum()),
                          int(idx.size), column, link, note)


# ---------------------------------------------------------------------------------------------
# templates (images)


@dataclass
class _Templates:
    label: str
    kind: str  # "Images" | "ImageSeries" | "OpticalSeries" | "images file"
    n: int
    shape: tuple[int, ...]  # of one image as stored (H, W) or (H, W, C)
    dtype: str
    order: str  # how the index maps onto images (recorded)
    members: list[str] = field(default_factory=list)  # Images: HDF5 paths in index order
    data_path: str | None = None  # ImageSeries: its data dataset
    file: Path | None = None  # images file
    variable: str | None = None
    layout: str | None = None
    notes: list[str] = field(default_factory=list)
    external: bool = False


def _template_groups(path: Path, f: Any) -> list[Any]:
    group = _child(path, f, "stimulus/templates")
    if group is None:
        return []
    return [obj for _, obj in _members(path, group) if _type(obj) in {"Images"} | _IMAGE_SERIES_TYPES]


def _image_templates(path: Path, group: Any) -> _Templates:
    label = _label(group)
    members = {name: obj for name, obj in _members(path, group)
               if hasattr(obj, "dtype") and _type(obj) in _IMAGE_TYPES}
    if not members:
        raise _fail(path, f"{label} holds no images (GrayscaleImage, RGBImage, RGBAImage); expected the stimuli")
    notes: list[str] = []
    order_ds = _child(path, group, "order_of_images")
    if order_ds is not None:
        by_id = {obj.id: name for name, obj in members.items()}
        refs = order_ds[()]
        names = []
        for ref in np.asarray(refs).reshape(-1):
            try:
                target = group.file[ref]
            except Exception:  # noqa: BLE001 - a null or dangling reference
                raise _fail(path, f"{label}/order_of_images holds a reference that leads nowhere; the file is "
                            "damaged") from None
            name = by_id.get(target.id)  # by HDF5 object: the group may have been reached through a link
            if name is None:
                raise _fail(path, f"{label}/order_of_images refers to {target.name}, which is not an image of "
                            f"{label}; expected references to its images")
            names.append(name)
        if len(set(names)) != len(names):
            raise _fail(path, f"{label}/order_of_images lists an image twice; expected each image once")
        order = "order_of_images"
    else:
        names = sorted(members, key=natural_key)
        order = "natural order of the image names (no order_of_images)"
        plain = sorted(members)
        notes.append(f"{label} has no order_of_images: the presentation indices are taken to count its "
                     f"{len(names)} images in natural order of their names ({', '.join(names[:3])}, …"
                     + (f"; a plain sort would give {', '.join(plain[:3])}, …" if plain != names else "")
                     + "); check the preview")
        logger.warning("%s: %s", path.name, notes[-1])
    shapes = {tuple(members[n].shape) for n in names}
    if len(shapes) > 1:
        first = names[0]
        other = next(n for n in names if tuple(members[n].shape) != tuple(members[first].shape))
        raise _fail(path, f"{label}: images of different sizes ({first} is {_shape_text(members[first].shape)}, "
                    f"{other} is {_shape_text(members[other].shape)}); expected one size for all stimuli "
                    "(resize them before writing the file)")
    dtypes = {str(members[n].dtype) for n in names}
    return _Templates(label, "Images", len(names), tuple(members[names[0]].shape), sorted(dtypes)[0], order,
                      members=[members[n].name for n in names], notes=notes)


def _shape_text(shape: Sequence[int]) -> str:
    return " x ".join(str(int(s)) for s in shape)


def _series_templates(path: Path, group: Any) -> _Templates:
    label = _label(group)
    data = _child(path, group, "data")
    external = _child(path, group, "external_file")
    if data is None or data.shape is None or (len(data.shape) >= 1 and data.shape[0] == 0):
        if external is not None:
            files = [_text(x) for x in np.asarray(external[()]).reshape(-1)[:2]]
            return _Templates(label, _type(group), 0, (), "", "frames", external=True,
                              notes=[f"{label} keeps its frames in external files ({', '.join(files)}, ...)"])
        raise _fail(path, f"{label} holds no frames; expected the stimulus images")
    if len(data.shape) not in (3, 4) or (len(data.shape) == 4 and data.shape[3] not in (1, 3, 4)):
        raise _fail(path, f"{label}/data has shape {tuple(data.shape)}; expected frames x height x width "
                    "(or x 3 colour channels)")
    return _Templates(label, _type(group), int(data.shape[0]), tuple(int(s) for s in data.shape[1:]),
                      str(data.dtype), "frames of the series", data_path=data.name)


def _file_templates(images: Path, max_index: int) -> _Templates:
    info = peek_mat(images)
    var = next((v for v in IMAGE_VARIABLES if v in info.variables), None)
    if var is None:
        raise ValueError(f"{images.name}: no image variable ('images' or 'imgs'); found {info.describe()} "
                         f"({info.format})")
    check_declared_size(images, info, var)
    shape, dtype = info.variables[var]
    candidates = [c for c in image_layout_candidates(tuple(shape)) if c[1] > max_index]
    if not candidates:
        raise ValueError(f"{images.name}: images have shape {tuple(shape)}; expected grayscale images (H x W x N, "
                         f"N x H x W, ...) with at least {max_index + 1} images (the largest presentation index is "
                         f"{max_index})")
    layout, n, hw = candidates[0]
    return _Templates(images.name, "images file", int(n), tuple(hw), dtype, "the images file's order", file=images,
                      variable=var, layout=layout)


def _choose_templates(path: Path, f: Any, pres: _Presentations, options: NwbOptions,
                      images: Path | None) -> _Templates:
    groups = _template_groups(path, f)
    chosen = None
    if pres.templates_link is not None:
        chosen = f[pres.templates_link]
        if _type(chosen) not in {"Images"} | _IMAGE_SERIES_TYPES:
            raise _fail(path, f"{pres.label} indexes {pres.templates_link}, a {_type(chosen) or 'group'}; expected "
                        "an Images container or an ImageSeries")
        if options.templates and options.templates not in (chosen.name.strip("/"), chosen.name.rsplit("/", 1)[-1]):
            raise _fail(path, f"{pres.label} indexes the images of {_label(chosen)}, not {options.templates!r}; "
                        "leave out --templates")
    elif options.templates:
        chosen = next((g for g in groups if options.templates in (g.name.strip("/"), g.name.rsplit("/", 1)[-1])),
                      None)
        if chosen is None:
            raise _fail(path, f"no stimulus templates named {options.templates!r}; found "
                        + (", ".join(_label(g) for g in groups) or "none"))
    elif len(groups) == 1:
        chosen = groups[0]
    elif len(groups) > 1 and images is None:
        raise _fail(path, "several stimulus templates (" + ", ".join(_label(g) for g in groups) + ") and "
                    f"{pres.label} does not say which it indexes; expected one, or the one named (--templates NAME)")
    found = None
    if chosen is not None:
        found = _image_templates(path, chosen) if _type(chosen) == "Images" else _series_templates(path, chosen)
    max_index = int(pres.indices.max())
    if images is not None:
        if found is not None and not found.external:
            raise ValueError(f"{path.name} has its own stimulus images ({found.label}, {found.n} images); "
                             f"leave out the images file {images.name}")
        tpl = _file_templates(images, max_index)
        if found is not None:
            tpl.notes = found.notes + [f"images from {images.name} instead"]
        return tpl
    if found is None:
        raise _fail(path, "no stimulus images: expected an Images container or an ImageSeries in stimulus/templates; "
                    "for a file without them, give the images as a .mat file (--images on the command line, the images .mat on the Subjects page)")
    if found.external:
        raise _fail(path, found.notes[0] + "; give the images as a .mat file (--images on the command line, the images .mat on the Subjects page)")
    if max_index >= found.n:
        raise _fail(path, f"{pres.label} shows image index {max_index} but {found.label} holds {found.n} images "
                    f"(indices 0 to {found.n - 1}); expected presentations of these images")
    return found


# ---------------------------------------------------------------------------------------------
# response series


@dataclass
class _Series:
    label: str  # "DfOverF/plane0"
    path: str  # HDF5 path of the series
    plane: str
    n_frames: int
    n_rois: int
    time_axis: int
    dtype: str
    chunks: tuple[int, ...] | None
    conversion: float
    offset: float
    unit: str
    roi_table: str | None = None  # HDF5 path of the PlaneSegmentation its `rois` region refers to
    roi_ids: list[int] | None = None  # that table's `id` of each column of the series (None: unknown)
    roi_note: str | None = None  # why the ROI ids are unknown
    axis_from: str | None = None  # what said the data is stored ROIs x frames (time_axis 1)


def _roi_series(path: Path, group: Any) -> list[Any]:
    return [obj for _, obj in _members(path, group) if _type(obj) == "RoiResponseSeries"]


def _ophys(path: Path, f: Any) -> Any:
    module = _child(path, f, OPHYS)
    if module is None:
        processing = _child(path, f, "processing")
        found = ", ".join(k for k in processing.keys()) if processing is not None else ""
        raise _fail(path, "no processing module 'ophys' (found " + (found or "no processing modules") + "); "
                    "expected calcium-imaging responses (DfOverF, Fluorescence or Deconvolved) in processing/ophys")
    return module


def series_choices(path: Path, f: Any) -> dict[str, list[str]]:
    """{container or series name: [series labels]} of processing/ophys (a direct series maps to itself)."""
    module = _ophys(path, f)
    out: dict[str, list[str]] = {}
    for name, obj in _members(path, module):
        if _type(obj) == "RoiResponseSeries":
            out[name] = [name]
        elif hasattr(obj, "keys"):
            inner = _roi_series(path, obj)
            if inner:
                out[name] = [f"{name}/{s.name.rsplit('/', 1)[-1]}" for s in inner]
    return out


def _plane_of(path: Path, series: Any) -> str:
    """The imaging plane of a RoiResponseSeries (its ROI table's imaging_plane), else its own name."""
    rois = _child(path, series, "rois")
    try:
        table = series.file[rois.attrs["table"]] if rois is not None and "table" in rois.attrs else None
        plane = _child(path, table, "imaging_plane") if table is not None else None
        if plane is not None:
            return _label(plane)
        if table is not None:
            return _label(table)
    except (KeyError, ValueError, RuntimeError, TypeError):
        pass
    return _label(series)


def _roi_identity(path: Path, series: Any, n_rois: int, label: str) -> tuple[str | None, list[int] | None, str | None]:
    """(ROI table path, the table's `id` of each of the series' `n_rois` columns, None) from the series'
    `rois` DynamicTableRegion (its row indices into the PlaneSegmentation its `table` attribute refers to);
    (table or None, None, why) when the file does not say. Both datasets are read after the header checks
    (bounded by what the file stores and by the import cap): a few bytes per ROI."""
    rois = _child(path, series, "rois")
    if rois is None or not hasattr(rois, "dtype"):
        return None, None, f"{label} has no rois region: the ROI ids are unknown"
    try:
        table = series.file[rois.attrs["table"]] if "table" in rois.attrs else None
    except (KeyError, ValueError, RuntimeError, TypeError):
        table = None
    if table is None or not hasattr(table, "keys"):
        return None, None, f"{label}/rois refers to no ROI table: the ROI ids are unknown"
    ids = _child(path, table, "id")
    if ids is None or not hasattr(ids, "dtype"):
        return _label(table), None, f"{_label(table)} has no id column: the ROI ids of {label} are unknown"
    try:
        rows = _read_small(path, rois, f"{label}/rois").reshape(-1)
    except ValueError as exc:  # a damaged region: the responses are still readable, the ids are not
        return _label(table), None, f"{str(exc).split(': ', 1)[-1]}: the ROI ids are unknown"
    if rows.size != n_rois:
        return _label(table), None, (f"{label}/rois lists {rows.size} ROIs for {n_rois} columns of data: the ROI ids "
                                     "are unknown")
    n_ids = int(ids.shape[0]) if ids.shape else 0
    if rows.dtype.kind == "f" or rows.size and (int(rows.min()) < 0 or int(rows.max()) >= n_ids):
        return _label(table), None, (f"{label}/rois holds rows outside {_label(table)} ({n_ids} rows): the ROI ids "
                                     "are unknown")
    try:
        table_ids = _read_small(path, ids, f"{_label(table)}/id").reshape(-1)
    except ValueError as exc:
        return _label(table), None, f"{str(exc).split(': ', 1)[-1]}: the ROI ids of {label} are unknown"
    if table_ids.dtype.kind == "f":
        return _label(table), None, f"{_label(table)}/id is not integer: the ROI ids of {label} are unknown"
    return _label(table), [int(v) for v in table_ids[rows.astype(np.int64)]], None


def _choose_series(path: Path, f: Any, options: NwbOptions) -> list[Any]:
    choices = series_choices(path, f)
    module = _ophys(path, f)
    if not choices:
        raise _fail(path, "processing/ophys holds no RoiResponseSeries (found "
                    + (", ".join(module.keys()) or "nothing") + "); expected DfOverF, Fluorescence or Deconvolved")
    listing = "; ".join(f"{k}: {', '.join(v)}" if v != [k] else k for k, v in choices.items())
    wanted = list(options.series)
    if not wanted:
        default = next((c for c in SERIES_PREFERENCE if c in choices), None)
        if default is None and len(choices) == 1:
            default = next(iter(choices))
        if default is None:
            raise _fail(path, f"several response series in processing/ophys ({listing}); expected one of "
                        f"{', '.join(SERIES_PREFERENCE)}, or the one named (--series NAME)")
        wanted = [default]
    out = []
    for want in wanted:
        if want in choices:
            objs = [module[label] for label in choices[want]]
            planes: dict[str, list[str]] = {}
            for obj in objs:
                planes.setdefault(_plane_of(path, obj), []).append(_label(obj).split("ophys/", 1)[-1])
            doubled = {p: s for p, s in planes.items() if len(s) > 1}
            if doubled:
                plane, names = next(iter(doubled.items()))
                raise _fail(path, f"{want} holds {len(names)} series of imaging plane {plane.rsplit('/', 1)[-1]} "
                            f"({', '.join(names)}); expected one series per plane: name the ones to use "
                            f"(--series {names[0]})")
            out += objs
        else:
            obj = _child(path, module, want)
            if obj is None or _type(obj) != "RoiResponseSeries":
                raise _fail(path, f"no response series {want!r} in processing/ophys; expected one of: {listing}")
            out.append(obj)
    names = [o.name for o in out]
    if len(set(names)) != len(names):
        raise _fail(path, "a response series is named twice; expected each series once")
    return out


def _series_info(path: Path, obj: Any) -> _Series:
    label = _label(obj).split("ophys/", 1)[-1]
    data = _child(path, obj, "data")
    if data is None or not hasattr(data, "shape"):
        raise _fail(path, f"{label} has no data; expected frames x ROIs")
    _check_dataset(path, data, f"{label}/data", cap=False)  # read in blocks: the cap applies to the result
    _numeric(path, data, f"{label}/data")
    if data.dtype.kind == "c":
        raise _fail(path, f"{label}/data holds complex numbers; expected real responses")
    shape = tuple(int(s) for s in data.shape)
    if len(shape) == 1:
        shape = (shape[0], 1)
    if len(shape) != 2:
        raise _fail(path, f"{label}/data has shape {shape}; expected frames x ROIs")
    ts = _child(path, obj, "timestamps")
    n_times = int(ts.shape[0]) if ts is not None and ts.shape else None
    time_axis, axis_from = 0, None
    if n_times is not None and shape[0] != n_times:
        if shape[1] == n_times:
            time_axis, axis_from = 1, "its timestamps say which axis is time"
        else:
            raise _fail(path, f"{label}/data has shape {shape} but {n_times} timestamps; expected frames x ROIs with "
                        "one timestamp per frame")
    elif n_times is None:
        # timed by starting_time + rate: no per-frame count to compare with, but the `rois` region
        # lists one row per ROI (its shape only is read here)
        rois = _child(path, obj, "rois")
        n_listed = int(rois.shape[0]) if rois is not None and getattr(rois, "shape", None) else None
        if n_listed is not None and shape[0] == n_listed != shape[1]:
            time_axis, axis_from = 1, f"its rois region lists {n_listed} ROIs"
    n_frames = shape[time_axis]
    conversion = float(np.asarray(data.attrs.get("conversion", 1.0)))
    offset = float(np.asarray(data.attrs.get("offset", 0.0)))
    if not (math.isfinite(conversion) and math.isfinite(offset)):
        raise _fail(path, f"{label}/data has conversion {conversion:g} and offset {offset:g}; expected finite numbers")
    chunks = tuple(int(c) for c in data.chunks) if data.chunks else None
    n_rois = shape[1 - time_axis]
    roi_table, roi_ids, roi_note = _roi_identity(path, obj, n_rois, label)
    return _Series(label, obj.name, _plane_of(path, obj), n_frames, n_rois, time_axis, str(data.dtype),
                   chunks, conversion, offset, _text(data.attrs.get("unit", "")), roi_table, roi_ids, roi_note,
                   axis_from)


# ---------------------------------------------------------------------------------------------
# the plan: every decision from the metadata (and the small presentation arrays), no pixels or frames


@dataclass
class NwbPlan:
    """What `read_nwb` will read, decided from the file's structure before any image or frame is read."""

    path: Path
    nwb_version: str
    options: NwbOptions
    presentations: _Presentations
    templates: _Templates
    series: list[_Series]
    notes: list[str] = field(default_factory=list)

    @property
    def n_neurons(self) -> int:
        return sum(s.n_rois for s in self.series)

    @property
    def n_images_shown(self) -> int:
        return int(np.unique(self.presentations.indices).size)

    def image_hw(self) -> tuple[int, int]:
        shape = self.templates.shape
        return int(shape[0]), int(shape[1])

    def memory_bytes(self, writing: bool = False) -> int:
        """What reading needs beyond the interpreter: the images (raw, float32 and the presented ones),
        the presentations x neurons result with its per-image means and repeats, the time stamps and
        one block of a series (its buffer and running sums, twice for h5py's conversions); with
        `writing`, the MAT writer's copy of images and responses too."""
        t = self.templates
        n_img_el = t.n * int(math.prod(t.shape or (0,)))
        raw = np.dtype(t.dtype).itemsize if t.dtype else 1
        n_out = self.presentations.onsets.size * self.n_neurons
        images = n_img_el * (raw + 12 + (4 if writing else 0))
        out = n_out * (32 + (4 if writing else 0))
        stamps = sum(s.n_frames for s in self.series) * 8 * 2
        roi_ids = self.n_neurons * 64  # the ROI ids as Python ints, their rows and JSON text
        return int(images + out + stamps + roi_ids + 2 * self.options.chunk_bytes + 4 * 1024**2)

    def declared(self) -> list[tuple[tuple[int, ...], str]]:
        return [((self.memory_bytes(),), "uint8")]


def plan_nwb(path: str | os.PathLike, *, images: str | os.PathLike | None = None,
             options: NwbOptions | None = None) -> NwbPlan:
    """Decide what to read (see module docstring); one-line ValueError when the file cannot be used."""
    path = Path(path)
    options = options or NwbOptions()
    images = Path(images) if images is not None else None
    with _open(path) as f:
        return _plan(path, f, images, options)


def _plan(path: Path, f: Any, images: Path | None, options: NwbOptions) -> NwbPlan:
    version = _version(f)
    series_objs = _choose_series(path, f, options)
    pres = _read_presentations(path, f, options)
    tpl = _choose_templates(path, f, pres, options, images)
    series = [_series_info(path, s) for s in series_objs]
    cap = max_variable_bytes()
    out_bytes = pres.onsets.size * sum(s.n_rois for s in series) * 4
    if out_bytes > cap:
        raise _fail(path, f"{pres.onsets.size} presentations x {sum(s.n_rois for s in series)} ROIs = "
                    f"{human(out_bytes)} of responses, above the {human(cap)} import size limit (set "
                    "NEUROALIGN_MAX_IMPORT_BYTES to allow it)")
    notes = list(tpl.notes)
    if pres.n_blank:
        notes.append(f"{pres.n_blank} blank presentations (index < 0) of {pres.n_total} dropped")
    planes = [s.plane for s in series]
    if len(set(planes)) != len(planes):
        raise _fail(path, f"two of the chosen series ({', '.join(s.label for s in series)}) record imaging plane "
                    f"{planes[0].rsplit('/', 1)[-1]}; expected one series per plane")
    for s in series:
        if s.roi_note:
            notes.append(s.roi_note)
        if s.time_axis == 1:
            notes.append(f"{s.label}/data is stored ROIs x frames ({s.n_rois} x {s.n_frames}); read as frames x "
                         f"ROIs ({s.axis_from})")
    return NwbPlan(path, version, options, pres, tpl, series, notes)


# ---------------------------------------------------------------------------------------------
# reading


def _gray(path: Path, arr: np.ndarray, label: str) -> np.ndarray:
    """(n, H, W[, C]) -> (n, H, W): colour images with equal channels become grayscale, others are refused."""
    if arr.ndim == 3:
        return arr
    if arr.shape[-1] == 1:
        return arr[..., 0]
    rgb = arr[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0]
    raise _fail(path, f"{label} holds colour images ({arr.shape[-1]} channels that differ); expected grayscale "
                "stimuli (the image models are grayscale: store the luminance the animal saw)")


def _read_images(path: Path, f: Any, tpl: _Templates) -> tuple[np.ndarray, tuple[int, ...], str]:
    """All template images as stored, (n, H, W) (grayscale), with their original shape and dtype."""
    if tpl.kind == "images file":
        data, _ = read_mat_variables(tpl.file, [tpl.variable])
        raw = data[tpl.variable]
        return to_nhw(raw, tpl.layout), tuple(raw.shape), str(raw.dtype)
    if tpl.kind == "Images":
        first = f[tpl.members[0]]
        stack = np.empty((tpl.n, *first.shape), dtype=first.dtype)
        for i, member in enumerate(tpl.members):
            ds = f[member]
            _check_dataset(path, ds, _label(ds))
            _numeric(path, ds, _label(ds))
            ds.read_direct(stack, dest_sel=np.s_[i])
        shape = (tpl.n, *first.shape)
    else:
        ds = f[tpl.data_path]
        stack = _read_small(path, ds, _label(ds))
        shape = tuple(stack.shape)
    if stack.dtype.kind not in "biuf":
        raise _fail(path, f"{tpl.label} images have type {stack.dtype}; expected numbers")
    return _gray(path, stack, tpl.label), shape, str(stack.dtype)


def _windows(path: Path, s: _Series, stamps: np.ndarray, onsets: np.ndarray, window: tuple[float, float]
             ) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last frame of each presentation's window; refuses windows outside the recording."""
    start, end = window
    if stamps.size > 1:
        step = float(np.median(np.diff(stamps)))
    else:
        step = 0.0
    lo, hi = float(stamps[0]), float(stamps[-1]) + step
    tol = 1e-9 * max(1.0, abs(hi))
    outside = (onsets + start < lo - tol) | (onsets + end > hi + tol)
    if outside.any():
        first = float(onsets[np.argmax(outside)])
        raise _fail(path, f"{int(outside.sum())} of {onsets.size} presentations (onset + {start:g} to {end:g} s) fall "
                    f"outside the recording of {s.label} ({lo:.3f} to {hi:.3f} s), e.g. the onset at {first:.3f} s; "
                    "expected onsets within the imaging session (check that stimulus and imaging share one "
                    "time base, or the response window)")
    first_frame = np.searchsorted(stamps, onsets + start, side="left")
    stop = np.searchsorted(stamps, onsets + end, side="left")
    empty = stop <= first_frame
    if empty.any():
        raise _fail(path, f"the response window {start:g} to {end:g} s holds no frame of {s.label} after "
                    f"{int(empty.sum())} of {onsets.size} onsets (frames every {step * 1000:.1f} ms); expected at "
                    "least one frame in every window (widen the window)")
    return first_frame.astype(np.int64), stop.astype(np.int64)


def _block_frames(s: _Series, chunk_bytes: int) -> int:
    itemsize = np.dtype(s.dtype).itemsize
    rows = max(1, chunk_bytes // max(1, s.n_rois * (itemsize + 8)))
    if s.chunks:
        along = s.chunks[s.time_axis] if len(s.chunks) == 2 else s.chunks[0]
        if rows >= along:
            rows = (rows // along) * along
    return int(min(rows, max(1, s.n_frames)))


def _window_means(path: Path, f: Any, s: _Series, first: np.ndarray, stop: np.ndarray, chunk_bytes: int
                  ) -> np.ndarray:
    """(presentations, ROIs) float32: the mean of each window's frames, reading the series block by block."""
    ds = f[s.path + "/data"]
    k = s.n_rois
    n = first.size
    # float64 sums unless that alone would pass 256 MiB (then float32: ~7 significant digits, plenty for means)
    out = np.zeros((n, k), dtype=np.float64 if n * k <= 32 * 1024**2 else np.float32)
    rows = _block_frames(s, chunk_bytes)
    one_d = len(ds.shape) == 1
    buf = np.empty((rows, k) if s.time_axis == 0 else (k, rows), dtype=ds.dtype)
    sums = np.zeros((rows + 1, k), dtype=np.float64)
    # windows are in onset order: first and stop never decrease
    i, pos, end = 0, int(first.min()), int(stop.max())
    while pos < end:
        while i < n and stop[i] <= pos:
            i += 1
        if i == n:
            break
        pos = max(pos, int(first[i]))
        b1 = min(pos + rows, s.n_frames)
        m = b1 - pos
        if one_d:
            ds.read_direct(buf[:m, 0], source_sel=np.s_[pos:b1])
            block = buf[:m]
        elif s.time_axis == 0:
            ds.read_direct(buf, source_sel=np.s_[pos:b1, :], dest_sel=np.s_[:m, :])
            block = buf[:m]
        else:
            ds.read_direct(buf, source_sel=np.s_[:, pos:b1], dest_sel=np.s_[:, :m])
            block = buf[:, :m].T
        np.cumsum(block, axis=0, dtype=np.float64, out=sums[1:m + 1])
        j = int(np.searchsorted(first, b1, side="left"))  # windows starting before the block ends
        for a in range(i, j, rows):  # at most `rows` windows at a time: bounded temporaries
            b = min(j, a + rows)
            ws = np.clip(first[a:b], pos, b1) - pos
            we = np.clip(stop[a:b], pos, b1) - pos
            out[a:b] += sums[we] - sums[ws]
        pos = b1
    counts = (stop - first).astype(np.float64)
    out /= counts[:, None].astype(out.dtype)
    if s.conversion != 1.0:
        out *= s.conversion
    if s.offset != 0.0:
        out += s.offset
    bad = ~np.isfinite(out)
    if bad.any():
        rows_bad = np.flatnonzero(bad.any(axis=1))
        raise _fail(path, f"{s.label}: the response windows of {rows_bad.size} presentations include NaN or Inf "
                    f"frames ({int(bad.sum())} values); expected finite responses (remove or impute them first)")
    big = float(np.finfo(np.float32).max)
    if out.dtype == np.float64 and np.abs(out).max() > big:
        raise _fail(path, f"{s.label}: responses beyond the float32 range; expected responses such as dF/F")
    return np.ascontiguousarray(out, dtype=np.float32)


def read_plan(plan: NwbPlan, name: str | None = None, *, require_trainable: bool = False) -> Subject:
    """Read what `plan` decided into a Subject (see module docstring)."""
    path, pres, tpl = plan.path, plan.presentations, plan.templates
    where = path.name if tpl.file is None else f"{path.name} + {tpl.file.name}"
    if require_trainable:
        check_trainable_shape(where, plan.n_images_shown, plan.image_hw())
    notes = list(plan.notes)
    with _open(path) as f:
        raw, raw_shape, raw_dtype = _read_images(path, f, tpl)
        if raw.dtype.kind == "f" and not (np.isfinite(raw.min()) and np.isfinite(raw.max())):
            raise _fail(path, f"{tpl.label}: images hold NaN or Inf values; expected finite intensities")
        images_all, scaling = scale_images(raw)
        del raw
        blocks, frames_per_window, steps = [], [], []
        for s in plan.series:
            stamps, how = _times(path, f[s.path], s.n_frames, s.label)
            first, stop = _windows(path, s, stamps, pres.onsets, plan.options.window)
            counts = stop - first
            frames_per_window += [int(counts.min()), int(counts.max())]
            if stamps.size > 1:
                steps.append(float(np.median(np.diff(stamps))))
            del stamps
            blocks.append(_window_means(path, f, s, first, stop, plan.options.chunk_bytes))
    trials = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
    del blocks
    start, end = plan.options.window
    if steps and end - start < min(steps):
        notes.append(f"the response window ({(end - start) * 1000:.0f} ms) is shorter than the frame interval "
                     f"({min(steps) * 1000:.0f} ms): one frame per presentation at most")
    gaps = np.diff(pres.onsets)
    if gaps.size and end > float(np.median(gaps)):
        notes.append(f"the response window ends {end:g} s after onset, later than the next onset usually comes "
                     f"({float(np.median(gaps)):.3g} s): it includes responses to the following presentation")
    means, repeats, shown, info = aggregate_presentations(path, pres.indices, trials, tpl.n, max_repeats=None)
    del trials
    images = np.ascontiguousarray(images_all[shown][:, None], dtype=np.float32)
    del images_all
    lo, hi = info["presentations_per_image"]
    notes.append(f"{pres.onsets.size} presentations → {shown.size} images × {lo if lo == hi else f'{lo}–{hi}'} "
                 f"presentation{'s' if hi > 1 else ''} (the mean per image is used"
                 + (f"; the first {repeats.shape[0]} presentations of each image are the repeats)" if repeats is not None
                    else "; no repeats: some image was presented once)"))
    if info["n_images_unshown"]:
        notes.append(f"{info['n_images_unshown']} of the {tpl.n} images were never presented and are dropped")
    if images.shape[0] < 3:
        notes.append(f"only {images.shape[0]} image(s): loadable, but training needs at least 3")
    if require_trainable:
        check_trainable_responses(where, means)
    k = means.shape[1]
    series_text = ", ".join(f"{s.label} ({s.n_rois} ROIs, {s.n_frames} frames)" for s in plan.series)
    summary = [
        f"format: NWB {plan.nwb_version}" + (f", images from {tpl.file.name}" if tpl.file is not None else ""),
        f"images: {tpl.label} ({tpl.kind}), {tpl.n} images of {images.shape[2]} x {images.shape[3]} {raw_dtype}, "
        f"indexed in {tpl.order}",
        f"image scaling: {scaling}",
        f"presentations: {pres.label} ({pres.kind}; {pres.note}), {pres.onsets.size} kept"
        + (f", {pres.n_blank} blanks dropped" if pres.n_blank else ""),
        f"responses: {series_text} → {k} neurons",
        f"response window: mean of the frames {start:g} to {end:g} s after each onset "
        f"({min(frames_per_window)}–{max(frames_per_window)} frames)",
        f"repeats: {'yes, ' + str(repeats.shape[0]) if repeats is not None else 'no'}",
    ]
    meta = {
        "format": f"NWB {plan.nwb_version}", "source_kind": "nwb",
        "images_file": str(tpl.file if tpl.file is not None else path), "responses_file": str(path),
        "nwb_file": str(path),
        "images_variable": tpl.variable or tpl.label,
        "images_shape_original": list(raw_shape), "images_dtype": raw_dtype,
        "responses_shape_original": [int(pres.onsets.size), int(k)], "responses_dtype": "float32",
        "image_layout": tpl.layout or "NHW", "response_orientation": "presentations x neurons",
        "image_scaling": scaling, "n_images": int(images.shape[0]), "n_neurons": int(k),
        "image_shape": [int(images.shape[2]), int(images.shape[3])],
        "has_repeats": repeats is not None, "repeats_source": "presentations" if repeats is not None else None,
        "n_repeats": 0 if repeats is None else int(repeats.shape[0]),
        "simulated": False, "path": str(path.parent), "notes": notes, "summary_lines": summary,
        "nwb": {
            "nwb_version": plan.nwb_version, "series": [s.label for s in plan.series],
            "imaging_planes": [s.plane for s in plan.series], "rois_per_series": [s.n_rois for s in plan.series],
            "roi_tables": [s.roi_table for s in plan.series], "roi_ids": [s.roi_ids for s in plan.series],
            "frames_per_series": [s.n_frames for s in plan.series],
            "responses_unit": sorted({s.unit for s in plan.series}),
            "presentations": pres.label, "presentations_kind": pres.kind, "index_column": pres.index_column,
            "templates": tpl.label, "templates_kind": tpl.kind, "image_order": tpl.order,
            "response_window_s": [start, end],
            "window_rule": "mean of the frames with onset + start <= timestamp < onset + end, per series",
            "frames_per_window": [min(frames_per_window), max(frames_per_window)],
            "n_presentations": int(pres.onsets.size), "n_blank_dropped": int(pres.n_blank),
            "presentations_per_image": [int(lo), int(hi)], "n_images_in_templates": int(tpl.n),
        },
        **info,
    }
    for n in notes:
        logger.info("%s: %s", name or path.stem, n)
    return Subject(name=name or path.stem, images=images, responses=means, repeats=repeats, meta=meta,
                   image_ids=shown.astype(np.int64))


def read_nwb(path: str | os.PathLike, *, images: str | os.PathLike | None = None, options: NwbOptions | None = None,
             name: str | None = None, require_trainable: bool = False, **option_fields: Any) -> Subject:
    """Read an NWB 2.x calcium-imaging session into a Subject in this process (a notebook's own file).

    `options` (or its fields as keywords: `series=`, `presentations=`, `templates=`, `index_column=`,
    `window=(start, end)`, `chunk_bytes=`) say what to read; `images` is a .mat images file for an NWB
    file without stimulus templates. Imports into a data folder go through the sandboxed import
    service instead (`SubjectStore.import_nwb`, `neuroalign.data.imports`).
    """
    if option_fields:
        base = (options or NwbOptions()).to_dict()
        base.update(option_fields)
        options = NwbOptions.from_dict(base)
    plan = plan_nwb(path, images=images, options=options)
    return read_plan(plan, name, require_trainable=require_trainable)


def inventory(path: str | os.PathLike) -> dict[str, Any]:
    """What an NWB file offers, for choosing (the dashboard's selectors; the report lists it too):
    `series` {choice: [series]}, `series_default`, `presentations` [{name, kind, n, index_column}],
    `presentations_default`, `templates` [{name, kind, n}], `nwb_version`. One-line ValueError when
    the file is not NWB 2.x."""
    path = Path(path)
    with _open(path) as f:
        out: dict[str, Any] = {"nwb_version": _version(f)}
        try:
            choices = series_choices(path, f)
        except ValueError as exc:
            choices, out["series_error"] = {}, str(exc)
        out["series"] = choices
        out["series_default"] = next((c for c in SERIES_PREFERENCE if c in choices),
                                     next(iter(choices)) if len(choices) == 1 else None)
        series, tables = _presentation_candidates(path, f)
        def rows(obj: Any, key: str) -> int:
            ds = _child(path, obj, key)
            return int(ds.shape[0]) if ds is not None and getattr(ds, "shape", None) else 0

        pres = [{"name": _label(s), "kind": "IndexSeries", "n": rows(s, "data"), "index_column": None} for s in series]
        pres += [{"name": _label(t), "kind": "intervals table", "n": rows(t, "start_time"), "index_column": c,
                  "columns": _columns(t)} for t, c in tables]
        out["presentations"] = pres
        usable = [p for p in pres if p["kind"] == "IndexSeries"] or [p for p in pres if p["index_column"]]
        out["presentations_default"] = usable[0]["name"] if len(usable) == 1 else None
        out["templates"] = [{"name": _label(g), "kind": _type(g),
                             "n": len([1 for _, o in _members(path, g) if _type(o) in _IMAGE_TYPES])
                             if _type(g) == "Images" else rows(g, "data")} for g in _template_groups(path, f)]
    return out
