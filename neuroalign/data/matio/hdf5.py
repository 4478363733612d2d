"""MAT v7.3 (and plain HDF5) through h5py: structure (`peek_h5`), variables, struct fields.

One rule set refuses what cannot be read safely, for top-level variables and struct fields
alike (`_read_dataset`): external links and external or virtual datasets (data in other files),
groups (struct/cell), non-numeric MATLAB classes, sparse and complex arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import h5py
import numpy as np

from neuroalign.data.matio.common import CLASS_TO_DTYPE, MAX_DEFLATE_RATIO, OUTSIDE, MatInfo, fail, short

_HDF5_SKIP = ("#refs#", "#subsystem#")
_IN_OTHER_FILES = "(its data is in other files); expected the data inside this file"
#: MatInfo dtype of a soft link that leads nowhere
_BROKEN_LINK = "broken soft link"


def _matlab_class(obj: Any) -> str | None:
    cls = obj.attrs.get("MATLAB_class")
    return cls.decode() if isinstance(cls, bytes) else (str(cls) if cls is not None else None)


def h5_entry(obj: Any, matlab: bool) -> tuple[tuple[int, ...], str]:
    """(shape in MATLAB order, dtype or MATLAB class) of an HDF5 dataset or group."""
    if isinstance(obj, h5py.Group):
        cls = obj.attrs.get("MATLAB_class", b"struct")
        return (), cls.decode() if isinstance(cls, bytes) else str(cls)
    cls = _matlab_class(obj)
    shape = tuple(int(s) for s in obj.shape)
    if matlab or cls is not None:
        shape = shape[::-1]
    if obj.attrs.get("MATLAB_empty", 0):
        shape = (0,)
    if cls is not None:
        return shape, CLASS_TO_DTYPE.get(cls, cls)
    if obj.dtype.kind in "biuf":
        return shape, str(obj.dtype)
    return shape, "reference" if obj.dtype.kind == "O" else f"non-numeric ({obj.dtype})"


#: HDF5 filters this reader decodes, by id: name and at most how many bytes one stored byte decodes to
#: (None: from the datatype, see `_filter_ratio`). gzip: deflate expands at most ~1032x; lzf: a 3-byte
#: back reference expands to at most 264 bytes; shuffle and fletcher32 never shrink data.
_FILTERS: dict[int, tuple[str, float | None]] = {
    1: ("gzip", MAX_DEFLATE_RATIO), 2: ("shuffle", 1), 3: ("fletcher32", 1), 32000: ("lzf", 90),
    4: ("szip", None), 5: ("nbit", None), 6: ("scaleoffset", None),
}


def _filter_ratio(code: int, values: tuple, itemsize: int, precision: int) -> float:
    """At most how many decoded bytes one stored byte of filter `code` gives, for this datatype.

    n-bit stores `precision` bits per element; scale-offset at least one bit per element (HDF5
    writes a constant chunk with one bit per element too); szip (CCSDS 121) codes at best a run of
    64 blocks of `pixels_per_block` samples in two bits.
    """
    bits = 8 * itemsize
    if code == 5:
        return bits / max(1, min(precision, bits))
    if code == 6:
        return float(bits)
    if code == 4:
        pixels_per_block = int(values[1]) if len(values) > 1 and 0 < int(values[1]) <= 32 else 32
        return 64 * pixels_per_block * bits / 2
    ratio = _FILTERS.get(code, ("", 1))[1]
    return float(ratio if ratio is not None else 1)


def h5_stored(obj: Any) -> tuple[tuple[int, str, int], int, str | None]:
    """What the file holds for an HDF5 dataset, from its headers (nothing is decoded).

    Returns ((bytes stored, filters "none" | e.g. "gzip+shuffle", -1), the most elements those bytes
    can decode to, a reason the data cannot be read at all or None). Every datatype counts its
    size in the file (big-endian, float16, long double alike); every filter its maximal expansion
    (`_FILTERS`); a filter unknown to this reader but available to HDF5 counts as uncompressed
    storage, one it cannot decode is refused. Unallocated storage holds nothing (a fill value is
    not data).
    """
    stored = int(obj.id.get_storage_size())
    ftype = obj.id.get_type()
    itemsize = max(1, int(ftype.get_size()))
    try:
        precision = int(ftype.get_precision())
    except Exception:  # noqa: BLE001 - compound/reference/string types have none
        precision = 8 * itemsize
    dcpl = obj.id.get_create_plist()
    names, ratio, refusal = [], 1.0, None
    for i in range(dcpl.get_nfilters()):
        code, _flags, values, raw_name = dcpl.get_filter(i)
        code = int(code)
        known = _FILTERS.get(code)
        label = known[0] if known else f"filter {code}" + (f" ({raw_name.decode('utf-8', 'replace')})"
                                                            if raw_name else "")
        names.append(label)
        if not h5py.h5z.filter_avail(code):
            refusal = (refusal or f"is compressed with the HDF5 {label}, which this installation cannot decode; "
                       "expected no compression or gzip, lzf, szip, shuffle, n-bit or scale-offset "
                       "(re-save it with gzip)")
        ratio *= _filter_ratio(code, tuple(values), itemsize, precision) if known else 1.0
    kind = "+".join(n for n in names if n != "fletcher32") or "none"
    holds = int(stored * ratio) // itemsize
    return (stored, kind, -1), holds, refusal


def _entries(path: Path, fmt: str, group: Any, matlab: bool, skip: Sequence[str] = ()) -> MatInfo:
    """MatInfo of the members of an HDF5 group (never following external links).

    A soft link that leads nowhere (dangling, or a loop) is listed as such and refused only when
    it is read: an unrelated broken link does not make the other variables unreadable.
    """
    info = MatInfo(str(path), fmt)
    for k in group.keys():
        if k in skip:
            continue
        link = group.get(k, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            info.variables[k] = ((), OUTSIDE)  # never opened: it would read another file
            continue
        try:
            obj = group[k]
        except (KeyError, RuntimeError) as exc:
            if not isinstance(link, h5py.SoftLink):
                raise
            info.variables[k] = ((), _BROKEN_LINK)
            reason = short(exc).strip("'\"")
            info.refused[k] = (f"is an HDF5 soft link to {link.path!r} that leads nowhere ({reason}); "
                               "expected a numeric array")
            continue
        info.variables[k] = h5_entry(obj, matlab)
        if isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual):
            info.variables[k] = (info.variables[k][0], OUTSIDE)  # raw data in other files
        elif isinstance(obj, h5py.Dataset):
            info.stored[k], info.holds[k], refusal = h5_stored(obj)
            if refusal:
                info.refused[k] = refusal
    return info


def peek_h5(path: Path, fmt: str) -> MatInfo:
    """Variables of an HDF5-based MAT file (shapes in MATLAB order) and the bytes stored for each."""
    try:
        with h5py.File(path, "r") as f:
            return _entries(path, fmt, f, fmt == "v7.3", _HDF5_SKIP)
    except OSError as exc:
        raise fail(path, f"cannot read the HDF5 (v7.3) structure ({short(exc)}); the file may be truncated") from exc
    except Exception as exc:  # h5py raises KeyError/RuntimeError/... for damaged metadata
        raise fail(path, f"cannot read the HDF5 (v7.3) structure ({type(exc).__name__}: {short(exc)}); "
                   "the file may be corrupt") from exc


def _read_dataset(path: Path, group: Any, key: str, label: str, declared: str, matlab: bool,
                  refused: str | None = None) -> np.ndarray:
    """Read the numeric dataset `group[key]` (MATLAB order) or refuse it with one line about `label`.

    `declared` is its MatInfo dtype (OUTSIDE for data in other files), `refused` its MatInfo
    refusal if any; `matlab` says whether datasets without a `MATLAB_class` are column-major too.
    """
    if declared == OUTSIDE or isinstance(group.get(key, getlink=True), h5py.ExternalLink):
        raise fail(path, f"{label} is an HDF5 external link, external or virtual dataset {_IN_OTHER_FILES}")
    if refused:
        raise fail(path, f"{label} {refused}")
    obj = group[key]
    if isinstance(obj, h5py.Group):
        raise fail(path, f"{label} is a MATLAB {declared}; expected a numeric array")
    if obj.external or obj.is_virtual:
        raise fail(path, f"{label} is an HDF5 external or virtual dataset {_IN_OTHER_FILES}")
    cls = _matlab_class(obj)
    if cls is not None and cls not in CLASS_TO_DTYPE:
        raise fail(path, f"{label} is a MATLAB {cls}; expected a numeric array")
    if obj.attrs.get("MATLAB_empty", 0):
        return np.zeros((0,), dtype=np.float64)
    if obj.attrs.get("MATLAB_sparse", None) is not None:
        raise fail(path, f"{label} is a MATLAB sparse matrix; expected a full numeric array (save full(x))")
    if obj.dtype.names and {"real", "imag"} <= set(obj.dtype.names):
        raise fail(path, f"{label} holds complex numbers; expected real numbers (save real(x) or abs(x))")
    if obj.dtype.kind not in "biuf":
        raise fail(path, f"{label} has HDF5 type {obj.dtype}; expected a numeric array")
    arr = np.asarray(obj[()])
    if cls == "logical":
        arr = arr.astype(bool)
    if matlab or cls is not None:
        arr = arr.T  # MATLAB order as a view: no copy of a possibly huge array
    return arr


def _guarded(path: Path, what: str, body: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Run `body`; h5py's OSError/KeyError/RuntimeError for damaged data become one-line ValueErrors."""
    try:
        return body()
    except (ValueError, MemoryError):
        raise
    except Exception as exc:
        raise fail(path, f"cannot read {what} ({type(exc).__name__}: {exc}); "
                   "the file may be truncated or corrupt") from exc


def read_h5(path: Path, info: MatInfo, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The numeric variables `names` (MATLAB order; logicals as bool)."""
    def body() -> dict[str, np.ndarray]:
        with h5py.File(path, "r") as f:
            return {name: _read_dataset(path, f, name, f"variable {name!r}", info.variables[name][1],
                                        info.format == "v7.3", info.refused.get(name)) for name in names}

    return _guarded(path, "HDF5 (v7.3) data", body)


def read_h5_struct_fields(path: Path, info: MatInfo, name: str, fields: Sequence[str], optional: Sequence[str],
                          check_size: Callable[[MatInfo, str, str], None]) -> dict[str, np.ndarray]:
    """Numeric fields of the struct (group) `name`, opening the file once and reading only those fields.

    `check_size(field_info, field, label)` refuses a field by its declared size before it is read.
    """
    def body() -> dict[str, np.ndarray]:
        with h5py.File(path, "r") as f:
            group = f[name]
            if not isinstance(group, h5py.Group):
                raise fail(path, f"variable {name!r} is not a struct; expected fields {', '.join(fields)}")
            sub = _entries(path, info.format, group, True)
            missing = [k for k in fields if k not in sub.variables]
            if missing:
                raise fail(path, f"struct {name!r} has no field {missing[0]!r}; "
                           f"found {', '.join(sub.variables) or 'none'}")
            wanted = list(fields) + [o for o in optional if o in sub.variables and o not in fields]
            for key in wanted:
                check_size(sub, key, f"field {name}.{key}")
            return {key: _read_dataset(path, group, key, f"field {name}.{key}", sub.variables[key][1], True,
                                       sub.refused.get(key)) for key in wanted}

    return _guarded(path, f"struct {name!r}", body)
