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

from neuroalign.data.matio.common import CLASS_TO_DTYPE, OUTSIDE, MatInfo, fail, short

_HDF5_SKIP = ("#refs#", "#subsystem#")
_IN_OTHER_FILES = "(its data is in other files); expected the data inside this file"


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


def h5_stored(obj: Any) -> tuple[int, str, int]:
    """(bytes stored, compression "none" | "gzip" | "other", -1) of an HDF5 dataset, from its header."""
    filters = set(obj._filters) - {"shuffle", "fletcher32", "scaleoffset"}
    kind = "none" if not filters else ("gzip" if filters <= {"gzip", "lzf", "szip"} else "other")
    return int(obj.id.get_storage_size()), kind, -1


def _entries(group: Any, matlab: bool, skip: Sequence[str] = ()) -> tuple[dict, dict]:
    """MatInfo `variables` and `stored` of the members of an HDF5 group (never following external links)."""
    variables: dict[str, tuple[tuple[int, ...], str]] = {}
    stored: dict[str, tuple[int, str, int]] = {}
    for k in group.keys():
        if k in skip:
            continue
        if isinstance(group.get(k, getlink=True), h5py.ExternalLink):
            variables[k] = ((), OUTSIDE)  # never opened: it would read another file
            continue
        obj = group[k]
        variables[k] = h5_entry(obj, matlab)
        if isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual):
            variables[k] = (variables[k][0], OUTSIDE)  # raw data in other files
        elif isinstance(obj, h5py.Dataset):
            stored[k] = h5_stored(obj)
    return variables, stored


def peek_h5(path: Path, fmt: str) -> MatInfo:
    """Variables of an HDF5-based MAT file (shapes in MATLAB order) and the bytes stored for each."""
    try:
        with h5py.File(path, "r") as f:
            variables, stored = _entries(f, fmt == "v7.3", _HDF5_SKIP)
    except OSError as exc:
        raise fail(path, f"cannot read the HDF5 (v7.3) structure ({short(exc)}); the file may be truncated") from exc
    except Exception as exc:  # h5py raises KeyError/RuntimeError/... for damaged metadata
        raise fail(path, f"cannot read the HDF5 (v7.3) structure ({type(exc).__name__}: {short(exc)}); "
                   "the file may be corrupt") from exc
    return MatInfo(str(path), fmt, variables, stored)


def _read_dataset(path: Path, group: Any, key: str, label: str, declared: str, matlab: bool) -> np.ndarray:
    """Read the numeric dataset `group[key]` (MATLAB order) or refuse it with one line about `label`.

    `declared` is its MatInfo dtype (OUTSIDE for data in other files); `matlab` says whether
    datasets without a `MATLAB_class` are column-major too.
    """
    if declared == OUTSIDE or isinstance(group.get(key, getlink=True), h5py.ExternalLink):
        raise fail(path, f"{label} is an HDF5 external link, external or virtual dataset {_IN_OTHER_FILES}")
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
                                        info.format == "v7.3") for name in names}

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
            variables, stored = _entries(group, True)
            missing = [k for k in fields if k not in variables]
            if missing:
                raise fail(path, f"struct {name!r} has no field {missing[0]!r}; found {', '.join(variables) or 'none'}")
            sub = MatInfo(info.path, info.format, variables, stored)
            wanted = list(fields) + [o for o in optional if o in variables and o not in fields]
            for key in wanted:
                check_size(sub, key, f"field {name}.{key}")
            return {key: _read_dataset(path, group, key, f"field {name}.{key}", variables[key][1], True)
                    for key in wanted}

    return _guarded(path, f"struct {name!r}", body)
