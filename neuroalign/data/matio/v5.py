"""MAT v4/v5 through scipy: variable headers (`peek_v5`), variables (`read_v5`), struct fields."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.io import loadmat, whosmat

from neuroalign.data.matio.common import CLASS_TO_DTYPE, DTYPE_TO_CLASS, MatInfo, check_numeric, fail, short
from neuroalign.data.matio.v5_walk import check_v5_struct, v5_elements


def peek_v5(path: Path, fmt: str) -> MatInfo:
    """Variable names, shapes and classes of a v4/v5 file, and the bytes stored for each."""
    try:
        entries = whosmat(str(path))
    except Exception as exc:
        raise fail(path, f"cannot read the MAT {fmt} variable headers ({type(exc).__name__}: {short(exc)}); "
                   "the file may be truncated or corrupt") from exc
    variables = {name: (tuple(int(s) for s in shape), CLASS_TO_DTYPE.get(cls, cls)) for name, shape, cls in entries}
    info = MatInfo(str(path), fmt, variables)
    size = path.stat().st_size
    elements = v5_elements(path) if fmt == "v5" else None
    if elements is not None and len(elements) == len(entries):
        for (name, _, _), (offset, nbytes, compressed) in zip(entries, elements):
            info.stored[name] = (nbytes, "zlib", offset) if compressed else (nbytes, "none", -1)
    else:  # v4 (never compressed) or an element list that does not line up: bound by the file
        compressed = fmt == "v5" and (elements is None or any(e[2] for e in elements))
        for name in variables:
            info.stored[name] = (size, "other" if compressed else "none", -1)
    return info


def read_v5(path: Path, info: MatInfo, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The numeric variables `names` (MATLAB order; logicals as bool)."""
    try:
        raw = loadmat(str(path), variable_names=list(names), squeeze_me=False, chars_as_strings=False,
                      struct_as_record=True, simplify_cells=False)
    except Exception as exc:
        if isinstance(exc, MemoryError):
            raise
        raise fail(path, f"cannot read MAT {info.format} data ({type(exc).__name__}: {short(exc)}); "
                   "the file may be truncated or corrupt") from exc
    out = {}
    for name in names:
        if name not in raw:
            raise fail(path, f"variable {name!r} could not be read; found {info.describe()}")
        arr = raw[name]
        cls = info.variables.get(name, ((), "?"))[1]
        arr = check_numeric(path, name, arr, f"a MATLAB {cls}" if cls not in DTYPE_TO_CLASS else "not numeric")
        if cls == "bool" and arr.dtype != bool:
            arr = arr.astype(bool)  # scipy gives MATLAB logicals as uint8
        out[name] = arr
    return out


def read_v5_struct_fields(path: Path, info: MatInfo, name: str, fields: Sequence[str],
                          optional: Sequence[str]) -> dict[str, np.ndarray]:
    """Numeric fields of the scalar struct `name`; scipy reads the whole struct, after `check_v5_struct`."""
    _, size_dtype = info.variables[name]
    if info.format == "v5" and size_dtype == "struct":
        check_v5_struct(path, info, name)
    try:
        raw = loadmat(str(path), variable_names=[name], struct_as_record=True, squeeze_me=False)[name]
    except Exception as exc:
        raise fail(path, f"cannot read struct {name!r} ({type(exc).__name__}: {exc}); "
                   "the file may be truncated or corrupt") from exc
    if raw.dtype.names is None or raw.size != 1:
        raise fail(path, f"variable {name!r} is {size_dtype} {raw.shape}, not a scalar struct; "
                   f"expected fields {', '.join(fields)}")
    present = list(raw.dtype.names)
    out: dict[str, np.ndarray] = {}
    for field_name in list(fields) + [o for o in optional if o in present]:
        if field_name not in present:
            raise fail(path, f"struct {name!r} has no field {field_name!r}; found {', '.join(present)}")
        value = raw[field_name].reshape(-1)[0]
        out[field_name] = check_numeric(path, f"{name}.{field_name}", value, "not numeric")
    return out
