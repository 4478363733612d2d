"""Safe MAT-file io: v4/v5 through scipy, v7.3 (HDF5) through h5py.

Only the requested variables are read (a file may carry other, huge variables). HDF5 datasets
written by MATLAB are stored column-major, so they come back transposed to MATLAB order: both
formats give the same shapes (e.g. the natimg2800 `imgs` is (68, 270, N) either way).

Every problem a user can fix (empty, truncated or non-MAT file, missing or non-numeric
variable, absurd declared size) is a `ValueError` naming the file, what was found and what was
expected.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Largest variable (declared bytes) that will be read; larger ones are refused before reading.
MAX_VARIABLE_BYTES = 8 * 1024**3
#: Largest variable scipy's v5 writer can hold; bigger ones are written as v7.3.
V5_MAX_VARIABLE_BYTES = 2**31 - 1

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_CLASS_TO_DTYPE = {
    "double": "float64", "single": "float32", "logical": "bool",
    "int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16",
    "int32": "int32", "uint32": "uint32", "int64": "int64", "uint64": "uint64",
}
_DTYPE_TO_CLASS = {v: k for k, v in _CLASS_TO_DTYPE.items()}
_HDF5_SKIP = ("#refs#", "#subsystem#")


@dataclass
class MatInfo:
    """What a MAT file holds, without its data.

    `format` is "v4", "v5", "v7.3" or "hdf5" (an HDF5 file without a MATLAB header);
    `variables` maps name -> (shape in MATLAB order, dtype name or MATLAB class such as "cell").
    """

    path: str
    format: str
    variables: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)

    def describe(self, names: Sequence[str] | None = None) -> str:
        """One-line listing such as "images (68, 270, 60) uint8, extra (1, 3) float64"."""
        items = [(n, v) for n, v in self.variables.items() if names is None or n in names]
        if not items:
            return "no variables"
        return ", ".join(f"{n} {tuple(s)} {d}" for n, (s, d) in items)


def _fail(path: Path, message: str) -> ValueError:
    return ValueError(f"{path.name}: {message}")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if not path.is_file():
        raise _fail(path, "is not a file (expected a .mat file)")
    if path.stat().st_size == 0:
        raise _fail(path, "the file is empty (expected a MATLAB .mat file)")


def _detect_format(path: Path) -> str:
    """"v4", "v5", "v7.3" or "hdf5"; ValueError when it is not a MAT file."""
    with open(path, "rb") as fh:
        head = fh.read(520)
    if head[:10] == b"MATLAB 7.3" or head[512:520] == _HDF5_SIGNATURE or head[:8] == _HDF5_SIGNATURE:
        import h5py

        try:
            if not h5py.is_hdf5(path):
                raise _fail(path, "has a MATLAB 7.3 header but no readable HDF5 content "
                                  "(truncated or corrupt?)")
        except OSError as exc:
            raise _fail(path, f"cannot open as HDF5 ({exc})") from exc
        return "v7.3" if head[:10] == b"MATLAB 7.3" else "hdf5"
    from scipy.io.matlab import matfile_version

    try:
        major, _minor = matfile_version(str(path))
    except Exception as exc:  # scipy raises ValueError/MatReadError/... for non-MAT bytes
        raise _fail(path, f"not a MATLAB .mat file ({exc}); expected a MAT v5 or v7.3 file") from exc
    if major == 0:
        return "v4"  # no text header; reading the variable headers below tells garbage apart
    if major == 1:
        return "v5"
    return "v7.3"


def _bytes_of(shape: Sequence[int], dtype: str) -> int:
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:
        itemsize = 8
    return int(math.prod(int(s) for s in shape)) * itemsize


# ---------------------------------------------------------------------------------------------
# peek


def _peek_scipy(path: Path, fmt: str) -> MatInfo:
    from scipy.io import whosmat

    try:
        entries = whosmat(str(path))
    except Exception as exc:
        raise _fail(path, f"cannot read the MAT {fmt} variable headers ({type(exc).__name__}: {exc}); "
                          "the file may be truncated or corrupt") from exc
    variables = {name: (tuple(int(s) for s in shape), _CLASS_TO_DTYPE.get(cls, cls)) for name, shape, cls in entries}
    return MatInfo(str(path), fmt, variables)


def _h5_entry(obj: Any, matlab: bool) -> tuple[tuple[int, ...], str]:
    import h5py

    if isinstance(obj, h5py.Group):
        cls = obj.attrs.get("MATLAB_class", b"struct")
        return (), cls.decode() if isinstance(cls, bytes) else str(cls)
    cls = obj.attrs.get("MATLAB_class")
    cls = cls.decode() if isinstance(cls, bytes) else (str(cls) if cls is not None else None)
    shape = tuple(int(s) for s in obj.shape)
    if matlab or cls is not None:
        shape = shape[::-1]
    if obj.attrs.get("MATLAB_empty", 0):
        shape = (0,)
    if cls is not None:
        return shape, _CLASS_TO_DTYPE.get(cls, cls)
    if obj.dtype.kind in "biuf":
        return shape, str(obj.dtype)
    return shape, "reference" if obj.dtype.kind == "O" else f"non-numeric ({obj.dtype})"


def _peek_h5(path: Path, fmt: str) -> MatInfo:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            variables = {k: _h5_entry(f[k], fmt == "v7.3") for k in f.keys() if k not in _HDF5_SKIP}
    except OSError as exc:
        raise _fail(path, f"cannot read the HDF5 (v7.3) structure ({exc}); the file may be truncated") from exc
    return MatInfo(str(path), fmt, variables)


def peek_mat(path: str | os.PathLike) -> MatInfo:
    """List the variables of a MAT file (shapes in MATLAB order, dtypes) without reading data."""
    path = Path(path)
    _check_file(path)
    fmt = _detect_format(path)
    return _peek_h5(path, fmt) if fmt in ("v7.3", "hdf5") else _peek_scipy(path, fmt)


# ---------------------------------------------------------------------------------------------
# read


def _check_numeric(path: Path, name: str, arr: np.ndarray, kind_desc: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        dtype = getattr(arr, "dtype", type(arr).__name__)
        raise _fail(path, f"variable {name!r} is {kind_desc} ({dtype}); expected a numeric array")
    return arr


def _read_scipy(path: Path, info: MatInfo, names: Sequence[str]) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    try:
        raw = loadmat(str(path), variable_names=list(names), squeeze_me=False, chars_as_strings=False,
                      struct_as_record=True, simplify_cells=False)
    except Exception as exc:
        raise _fail(path, f"cannot read MAT {info.format} data ({type(exc).__name__}: {exc}); "
                          "the file may be truncated or corrupt") from exc
    out = {}
    for name in names:
        if name not in raw:
            raise _fail(path, f"variable {name!r} could not be read; found {info.describe()}")
        arr = raw[name]
        cls = info.variables.get(name, ((), "?"))[1]
        out[name] = _check_numeric(path, name, arr, f"a MATLAB {cls}" if cls not in _DTYPE_TO_CLASS else "not numeric")
    return out


def _read_h5(path: Path, info: MatInfo, names: Sequence[str]) -> dict[str, np.ndarray]:
    import h5py

    out = {}
    try:
        with h5py.File(path, "r") as f:
            for name in names:
                obj = f[name]
                if isinstance(obj, h5py.Group):
                    raise _fail(path, f"variable {name!r} is a MATLAB {info.variables[name][1]}; expected a numeric array")
                cls = obj.attrs.get("MATLAB_class")
                cls = cls.decode() if isinstance(cls, bytes) else cls
                if cls is not None and cls not in _CLASS_TO_DTYPE:
                    raise _fail(path, f"variable {name!r} is a MATLAB {cls}; expected a numeric array")
                if obj.attrs.get("MATLAB_empty", 0):
                    out[name] = np.zeros((0,), dtype=np.float64)
                    continue
                if obj.dtype.kind not in "biuf":
                    raise _fail(path, f"variable {name!r} has HDF5 type {obj.dtype}; expected a numeric array")
                arr = obj[()]
                arr = np.asarray(arr)
                if cls == "logical":
                    arr = arr.astype(bool)
                if info.format == "v7.3" or cls is not None:
                    arr = np.ascontiguousarray(arr.T)
                out[name] = arr
    except ValueError:
        raise
    except Exception as exc:  # h5py raises OSError/KeyError/RuntimeError for damaged data
        raise _fail(path, f"cannot read HDF5 (v7.3) data ({type(exc).__name__}: {exc}); "
                          "the file may be truncated or corrupt") from exc
    return out


def read_mat_variables(path: str | os.PathLike, names: Sequence[str], optional: Sequence[str] = (),
                       max_bytes: int = MAX_VARIABLE_BYTES) -> tuple[dict[str, np.ndarray], MatInfo]:
    """Read only `names` (all required) and those of `optional` that exist.

    Returns ({name: array in MATLAB order}, MatInfo). Raises ValueError naming the file when a
    required variable is missing, a variable is not numeric, or declares more than `max_bytes`.
    """
    path = Path(path)
    info = peek_mat(path)
    missing = [n for n in names if n not in info.variables]
    if missing:
        raise _fail(path, f"missing variable(s) {', '.join(repr(m) for m in missing)}; "
                          f"found {info.describe()} ({info.format})")
    wanted = list(names) + [n for n in optional if n in info.variables and n not in names]
    for name in wanted:
        shape, dtype = info.variables[name]
        size = _bytes_of(shape, dtype)
        if size > max_bytes:
            raise _fail(path, f"variable {name!r} declares shape {shape} {dtype} = {size / 1024**3:.1f} GiB, "
                              f"above the {max_bytes / 1024**3:.1f} GiB limit")
    if not wanted:
        return {}, info
    t0 = time.perf_counter()
    reader = _read_h5 if info.format in ("v7.3", "hdf5") else _read_scipy
    data = reader(path, info, wanted)
    logger.debug("read %s from %s (%s) in %.2fs", wanted, path, info.format, time.perf_counter() - t0)
    return data, info


# ---------------------------------------------------------------------------------------------
# write


def _matlab_header_73() -> bytes:
    text = (f"MATLAB 7.3 MAT-file, Platform: neuroalign, Created on: "
            f"{time.strftime('%a %b %d %H:%M:%S %Y', time.gmtime())} HDF5 schema 1.00 .").encode("ascii")
    return text[:116].ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def write_mat_v73(path: str | os.PathLike, variables: Mapping[str, np.ndarray]) -> Path:
    """Write numeric arrays as a MATLAB v7.3 (HDF5) file that MATLAB, hdf5storage and this module read.

    Arrays are given in MATLAB order and stored transposed (column-major), with the 512-byte
    MATLAB user block and `MATLAB_class` attributes. Not atomic: see `save_mat` for that.
    """
    import h5py

    path = Path(path)
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            arr = np.asarray(value)
            if arr.ndim < 2:
                arr = arr.reshape(1, -1)
            cls = _DTYPE_TO_CLASS.get(str(arr.dtype))
            if cls is None:
                raise ValueError(f"cannot write {name!r} with dtype {arr.dtype} to a MAT file; expected a numeric array")
            data = arr.astype(np.uint8) if cls == "logical" else arr
            ds = f.create_dataset(name, data=np.ascontiguousarray(data.T))
            ds.attrs["MATLAB_class"] = np.bytes_(cls)
    with open(path, "r+b") as fh:
        fh.write(_matlab_header_73())
    return path


def save_mat(path: str | os.PathLike, variables: Mapping[str, np.ndarray]) -> tuple[Path, str]:
    """Write atomically as MAT v5, or v7.3 when a variable is too large for v5. Returns (path, format)."""
    from neuroalign.io_utils import atomic_savemat

    path = Path(path)
    if all(np.asarray(v).nbytes <= V5_MAX_VARIABLE_BYTES for v in variables.values()):
        return atomic_savemat(path, dict(variables)), "v5"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.v73.tmp")
    try:
        write_mat_v73(tmp, variables)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, "v7.3"


def read_mat_struct_fields(path: str | os.PathLike, name: str, fields: Sequence[str],
                           optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Numeric fields of the scalar struct `name` (e.g. Stringer et al.'s `stim.resp`, `stim.istim`).

    v5 reads the whole struct variable (scipy cannot read single fields); v7.3 only the fields.
    Raises ValueError naming the file when the struct or a required field is missing or not numeric.
    """
    path = Path(path)
    info = peek_mat(path)
    if name not in info.variables:
        raise _fail(path, f"missing struct {name!r}; found {info.describe()} ({info.format})")
    out: dict[str, np.ndarray] = {}
    if info.format in ("v7.3", "hdf5"):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                group = f[name]
                if not isinstance(group, h5py.Group):
                    raise _fail(path, f"variable {name!r} is not a struct; expected fields {', '.join(fields)}")
                present = list(group.keys())
                sub = MatInfo(info.path, info.format, {k: _h5_entry(group[k], True) for k in present})
            for field_name in list(fields) + [o for o in optional if o in present]:
                if field_name not in present:
                    raise _fail(path, f"struct {name!r} has no field {field_name!r}; found {', '.join(present) or 'none'}")
            wanted = list(fields) + [o for o in optional if o in present]
            with h5py.File(path, "r") as f:
                for field_name in wanted:
                    shape, dtype = sub.variables[field_name]
                    if _bytes_of(shape, dtype) > MAX_VARIABLE_BYTES:
                        raise _fail(path, f"field {name}.{field_name} declares shape {shape}, above the size limit")
                    ds = f[name][field_name]
                    if isinstance(ds, h5py.Group) or ds.dtype.kind not in "biuf":
                        raise _fail(path, f"field {name}.{field_name} is not a numeric array")
                    out[field_name] = np.ascontiguousarray(np.asarray(ds[()]).T)
        except ValueError:
            raise
        except Exception as exc:
            raise _fail(path, f"cannot read struct {name!r} ({type(exc).__name__}: {exc})") from exc
        return out
    from scipy.io import loadmat

    _, size_dtype = info.variables[name]
    try:
        raw = loadmat(str(path), variable_names=[name], struct_as_record=True, squeeze_me=False)[name]
    except Exception as exc:
        raise _fail(path, f"cannot read struct {name!r} ({type(exc).__name__}: {exc}); "
                          "the file may be truncated or corrupt") from exc
    if raw.dtype.names is None or raw.size != 1:
        raise _fail(path, f"variable {name!r} is {size_dtype} {raw.shape}, not a scalar struct; "
                          f"expected fields {', '.join(fields)}")
    present = list(raw.dtype.names)
    for field_name in list(fields) + [o for o in optional if o in present]:
        if field_name not in present:
            raise _fail(path, f"struct {name!r} has no field {field_name!r}; found {', '.join(present)}")
        value = raw[field_name].reshape(-1)[0]
        out[field_name] = _check_numeric(path, f"{name}.{field_name}", value, "not numeric")
    return out
