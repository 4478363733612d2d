"""Safe MAT-file io: v4/v5 through scipy, v7.3 (HDF5) through h5py.

Only the requested variables are read (a file may carry other, huge variables). HDF5 datasets
written by MATLAB are stored column-major, so they come back transposed to MATLAB order: both
formats give the same shapes (e.g. the natimg2800 `imgs` is (68, 270, N) either way).

Every problem a user can fix (empty, truncated or non-MAT file, missing or non-numeric
variable, absurd declared size) is a `ValueError` naming the file, what was found and what was
expected.

Hostile files: before any data is read, a variable's declared size is checked against the bytes
the file really stores for it (uncompressed: declared <= stored; zlib/gzip-compressed: within the
format's maximal ratio, and for v5 a streaming, constant-memory count of the inflated bytes when
the ratio looks suspicious), so a tiny truncated file declaring gigabytes is refused without
allocating them. Negative dimensions are refused; running out of memory is a ValueError too.
The v5 struct read by `read_mat_struct_fields` is walked field by field first (constant memory)
with the same rule: no field may declare more elements than the bytes stored for it.
Complex, sparse, char, cell and struct variables are refused with a message saying so; MATLAB
logical arrays come back as bool in both formats.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import time
import zlib
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
#: Deflate never expands data by more than ~1032x; allow some slack for headers.
_MAX_DEFLATE_RATIO = 1100
#: Compressed v5 variables declaring more than this ratio get their inflated size counted first.
_SUSPICIOUS_RATIO = 16
_MI_COMPRESSED = 15
#: MatInfo dtype of HDF5 variables whose data lives in other files (external links/storage, virtual)
_OUTSIDE = "stored outside the file"
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
    #: name -> (bytes the file stores for it, compression "none" | "zlib" | "gzip" | "other", offset of
    #: a v5 zlib stream or -1); filled by `peek_mat` (used to refuse impossible declared sizes)
    stored: dict[str, tuple[int, str, int]] = field(default_factory=dict, repr=False)

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
    if path.is_dir():
        raise _fail(path, "is a folder, not a file (expected a .mat file)")
    if not path.is_file():
        raise _fail(path, "is not a regular file (expected a .mat file)")
    if path.stat().st_size == 0:
        raise _fail(path, "the file is empty (expected a MATLAB .mat file)")


def _detect_format(path: Path) -> str:
    """"v4", "v5", "v7.3" or "hdf5"; ValueError when it is not a MAT file."""
    with open(path, "rb") as fh:
        head = fh.read(520)
    if head[:10] == b"MATLAB 7.3" or (not head.startswith(b"MATLAB 5.0") and _has_hdf5_signature(path)):
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
        raise _fail(path, f"not a MATLAB .mat file ({_short(exc)}); expected a MAT v5 or v7.3 file") from exc
    if major == 0:
        return "v4"  # no text header; reading the variable headers below tells garbage apart
    if major == 1:
        return "v5"
    return "v7.3"


def _has_hdf5_signature(path: Path) -> bool:
    """HDF5 signature at offset 0 or after a user block (512, 1024, 2048, ... bytes)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        offset = 0
        while offset + 8 <= size and offset <= 1 << 20:
            fh.seek(offset)
            if fh.read(8) == _HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


def _short(exc: BaseException, limit: int = 160) -> str:
    """First sentence of an exception message, on one line (scipy's are long)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text.split("; ")[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        raise _fail(path, f"cannot read the MAT {fmt} variable headers ({type(exc).__name__}: {_short(exc)}); "
                          "the file may be truncated or corrupt") from exc
    variables = {name: (tuple(int(s) for s in shape), _CLASS_TO_DTYPE.get(cls, cls)) for name, shape, cls in entries}
    info = MatInfo(str(path), fmt, variables)
    size = path.stat().st_size
    elements = _v5_elements(path) if fmt == "v5" else None
    if elements is not None and len(elements) == len(entries):
        for (name, _, _), (offset, nbytes, compressed) in zip(entries, elements):
            info.stored[name] = (nbytes, "zlib", offset) if compressed else (nbytes, "none", -1)
    else:  # v4 (never compressed) or an element list that does not line up: bound by the file
        compressed = fmt == "v5" and (elements is None or any(e[2] for e in elements))
        for name in variables:
            info.stored[name] = (size, "other" if compressed else "none", -1)
    return info


def _v5_elements(path: Path) -> list[tuple[int, int, bool]] | None:
    """Top-level v5 elements as (data offset, byte count, compressed), or None when unparsable."""
    out = []
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.read(128)
        if len(header) < 128 or header[126:128] not in (b"IM", b"MI"):
            return None
        endian = "<" if header[126:128] == b"IM" else ">"
        pos = 128
        while pos + 8 <= size:
            fh.seek(pos)
            mdtype, nbytes = struct.unpack(endian + "II", fh.read(8))
            if mdtype >> 16:  # small data element: not a variable
                return None
            out.append((pos + 8, min(nbytes, max(size - pos - 8, 0)), mdtype == _MI_COMPRESSED))
            pos += 8 + nbytes
    return out


def _inflated_size(path: Path, offset: int, nbytes: int, limit: int) -> int:
    """Bytes a zlib stream at `offset` inflates to (stops counting past `limit`); constant memory."""
    inflater = zlib.decompressobj()
    total, left = 0, nbytes
    with open(path, "rb") as fh:
        fh.seek(offset)
        while left > 0 and total <= limit:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
            data = chunk
            while data and total <= limit:
                try:
                    out = inflater.decompress(data, 1 << 22)
                except zlib.error:
                    return total
                total += len(out)
                data = inflater.unconsumed_tail
            if inflater.eof:
                break
    return total


class _V5Stream:
    """Sequential bytes of one v5 element (plain or zlib), read and skipped in constant memory."""

    def __init__(self, fh: Any, nbytes: int, compressed: bool) -> None:
        self.fh, self.left, self.buf = fh, nbytes, b""
        self.inflater = zlib.decompressobj() if compressed else None

    def _more(self, want: int) -> bytes:
        want = max(1 << 16, min(want, 1 << 20))
        if self.inflater is None:
            data = self.fh.read(min(self.left, want)) if self.left > 0 else b""
            self.left -= len(data)
            return data
        while True:
            data = self.inflater.unconsumed_tail
            if not data:
                if self.left <= 0 or self.inflater.eof:
                    return b""
                data = self.fh.read(min(self.left, 1 << 16))
                self.left -= len(data)
                if not data:
                    return b""
            try:
                out = self.inflater.decompress(data, want)
            except zlib.error:
                return b""
            if out:
                return out

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            more = self._more(n - len(self.buf))
            if not more:
                break
            self.buf += more
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def skip(self, n: int) -> int:
        """Skip up to `n` bytes; returns how many were really there."""
        done = 0
        while done < n:
            if not self.buf:
                if self.inflater is None:  # plain: seek instead of reading
                    k = min(n - done, self.left)
                    self.fh.seek(k, 1)
                    self.left -= k
                    done += k
                    break
                self.buf = self._more(n - done)
                if not self.buf:
                    break
            k = min(len(self.buf), n - done)
            self.buf, done = self.buf[k:], done + k
        return done


def _check_v5_matrix(path: Path, s: _V5Stream, endian: str, nbytes: int, where: str, depth: int = 0) -> None:
    """Walk one miMATRIX body of `nbytes` bytes (recursing into struct/cell elements) and refuse
    dimensions declaring more elements than the bytes stored for them (at least 1 byte each)."""
    consumed = 0

    def truncated() -> ValueError:
        return _fail(path, f"{where} is cut short (its header declares {nbytes} bytes); "
                           "the file is truncated or corrupt")

    def element() -> bytes:
        nonlocal consumed
        head = s.read(8)
        if len(head) < 8:
            raise truncated()
        mdtype, n = struct.unpack(endian + "II", head)
        if mdtype >> 16:  # small data element: up to 4 bytes inside the tag
            consumed += 8
            return head[4:4 + (mdtype >> 16)]
        if n > min(nbytes, 1 << 20):
            raise _fail(path, f"{where} has a header element declaring {n} bytes; expected a few bytes "
                              "(the file is corrupt)")
        data = s.read(n + (-n % 8))
        if len(data) < n:
            raise truncated()
        consumed += 8 + len(data)
        return data[:n]

    if nbytes == 0:
        return  # empty matrix
    if depth > 16:
        raise _fail(path, f"{where} is nested more than 16 levels deep; expected a plain struct")
    flags = element()
    cls = struct.unpack(endian + "I", flags[:4])[0] & 0xFF if len(flags) >= 4 else 0
    dims_raw = element()
    dims = struct.unpack(endian + f"{len(dims_raw) // 4}i", dims_raw[: len(dims_raw) // 4 * 4])
    element()  # array name (empty inside structs and cells)
    if any(d < 0 for d in dims):
        raise _fail(path, f"{where} declares negative dimensions {dims}; the file is corrupt")
    count = math.prod(dims)
    subs: list[str] = []
    if cls in (2, 3):  # struct or object: fields of every element, one miMATRIX each
        if cls == 3:
            element()  # class name
        field_len = element()
        width = struct.unpack(endian + "i", field_len[:4])[0] if len(field_len) >= 4 else 0
        names = element()
        fields = [names[i:i + width].split(b"\0")[0].decode("latin-1") for i in range(0, len(names), width)] \
            if width > 0 else []
        if count * len(fields) * 8 > nbytes - consumed:
            raise _fail(path, f"{where} declares {dims} x {len(fields)} fields but the file holds only "
                              f"{_human(nbytes)} for it; the file is truncated or corrupt")
        subs = [f"{where}.{f}" if count == 1 else f"{where}({i + 1}).{f}" for i in range(count) for f in fields]
    elif cls == 1:  # cell
        if count * 8 > nbytes - consumed:
            raise _fail(path, f"{where} declares a {dims} cell but the file holds only {_human(nbytes)} for it; "
                              "the file is truncated or corrupt")
        subs = [f"{where}{{{i + 1}}}" for i in range(count)]
    elif cls != 5 and count > nbytes - consumed:  # sparse (5) dims are not its stored element count
        raise _fail(path, f"{where} declares shape {dims} ({count} elements) but the file holds only "
                          f"{_human(nbytes - consumed)} for it (expected at least 1 byte per element); "
                          "the file is truncated or corrupt")
    for sub in subs:
        head = s.read(8)
        if len(head) < 8:
            raise truncated()
        _mdtype, n = struct.unpack(endian + "II", head)
        consumed += 8
        if n > nbytes - consumed:
            raise _fail(path, f"{sub} declares {n} bytes but its struct holds only {nbytes - consumed}; "
                              "the file is truncated or corrupt")
        _check_v5_matrix(path, s, endian, n, sub, depth + 1)
        consumed += n
    rest = nbytes - consumed
    if rest > 0 and s.skip(rest) < rest:
        raise truncated()


def _check_v5_struct(path: Path, info: MatInfo, name: str) -> None:
    """Refuse a v5 struct variable whose fields declare more data than the file stores, before scipy reads it."""
    elements = _v5_elements(path)
    names = list(info.variables)
    if elements is None or len(elements) != len(names):
        return  # scipy refuses an element list it cannot follow either
    offset, nbytes, compressed = elements[names.index(name)]
    with open(path, "rb") as fh:
        endian = "<" if fh.read(128)[126:128] == b"IM" else ">"
        fh.seek(offset)
        stream = _V5Stream(fh, nbytes, compressed)
        if compressed:
            head = stream.read(8)
            if len(head) < 8:
                raise _fail(path, f"struct {name!r} is cut short; the file is truncated or corrupt")
            nbytes = struct.unpack(endian + "II", head)[1]
        _check_v5_matrix(path, stream, endian, nbytes, name)


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

    stored: dict[str, tuple[int, str, int]] = {}
    try:
        with h5py.File(path, "r") as f:
            variables = {}
            for k in f.keys():
                if k in _HDF5_SKIP:
                    continue
                if isinstance(f.get(k, getlink=True), h5py.ExternalLink):
                    variables[k] = ((), _OUTSIDE)  # never opened: it would read another file
                    continue
                obj = f[k]
                variables[k] = _h5_entry(obj, fmt == "v7.3")
                if isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual):
                    variables[k] = (variables[k][0], _OUTSIDE)  # raw data in other files
                elif isinstance(obj, h5py.Dataset):
                    filters = set(obj._filters) - {"shuffle", "fletcher32", "scaleoffset"}
                    kind = "none" if not filters else ("gzip" if filters <= {"gzip", "lzf", "szip"} else "other")
                    stored[k] = (int(obj.id.get_storage_size()), kind, -1)
    except OSError as exc:
        raise _fail(path, f"cannot read the HDF5 (v7.3) structure ({_short(exc)}); the file may be truncated") from exc
    except Exception as exc:  # h5py raises KeyError/RuntimeError/... for damaged metadata
        raise _fail(path, f"cannot read the HDF5 (v7.3) structure ({type(exc).__name__}: {_short(exc)}); "
                          "the file may be corrupt") from exc
    return MatInfo(str(path), fmt, variables, stored)


def peek_mat(path: str | os.PathLike) -> MatInfo:
    """List the variables of a MAT file (shapes in MATLAB order, dtypes) without reading data."""
    path = Path(path)
    _check_file(path)
    fmt = _detect_format(path)
    return _peek_h5(path, fmt) if fmt in ("v7.3", "hdf5") else _peek_scipy(path, fmt)


# ---------------------------------------------------------------------------------------------
# read


def _check_numeric(path: Path, name: str, arr: np.ndarray, kind_desc: str) -> np.ndarray:
    if isinstance(arr, np.ndarray) and arr.dtype.kind == "c":
        raise _fail(path, f"variable {name!r} {arr.shape} holds complex numbers ({arr.dtype}); expected real "
                          "numbers (save real(x) or abs(x))")
    if not isinstance(arr, np.ndarray) and hasattr(arr, "toarray"):
        raise _fail(path, f"variable {name!r} is a MATLAB sparse matrix {getattr(arr, 'shape', '')}; "
                          "expected a full numeric array (save full(x))")
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        dtype = getattr(arr, "dtype", type(arr).__name__)
        raise _fail(path, f"variable {name!r} is {kind_desc} ({dtype}); expected a numeric array")
    return arr


def _check_declared_size(path: Path, info: MatInfo, name: str, max_bytes: int) -> None:
    """Refuse before reading: negative dims, over `max_bytes`, or more than the file can hold."""
    shape, dtype = info.variables[name]
    if any(int(s) < 0 for s in shape):
        raise _fail(path, f"variable {name!r} declares negative dimensions {shape}; the file is corrupt")
    size = _bytes_of(shape, dtype)
    if size > max_bytes:
        raise _fail(path, f"variable {name!r} declares shape {shape} {dtype} = {size / 1024**3:.1f} GiB, "
                          f"above the {max_bytes / 1024**3:.1f} GiB limit")
    if dtype not in _DTYPE_TO_CLASS or name not in info.stored:
        return  # non-numeric (refused with its own message when read) or unknown storage
    stored, compression, offset = info.stored[name]
    if info.format in ("v4", "v5"):
        # MATLAB may store a class's data in a smaller type (e.g. a double array of small integers
        # as uint8, and v4 headers do not tell the type): bound by one byte per element
        size = int(math.prod(int(s) for s in shape))
    if compression == "none":
        bound = stored
    elif compression in ("zlib", "gzip"):
        bound = stored * _MAX_DEFLATE_RATIO
        if compression == "zlib" and offset >= 0 and size > stored * _SUSPICIOUS_RATIO:
            bound = _inflated_size(path, offset, stored, size)
    else:
        return
    if size > bound:
        raise _fail(path, f"variable {name!r} declares shape {shape} {dtype} (at least {_human(size)}) but the file "
                          f"holds only {_human(bound)} for it; the file is truncated or corrupt")


def _human(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _read_scipy(path: Path, info: MatInfo, names: Sequence[str]) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    try:
        raw = loadmat(str(path), variable_names=list(names), squeeze_me=False, chars_as_strings=False,
                      struct_as_record=True, simplify_cells=False)
    except Exception as exc:
        if isinstance(exc, MemoryError):
            raise
        raise _fail(path, f"cannot read MAT {info.format} data ({type(exc).__name__}: {_short(exc)}); "
                          "the file may be truncated or corrupt") from exc
    out = {}
    for name in names:
        if name not in raw:
            raise _fail(path, f"variable {name!r} could not be read; found {info.describe()}")
        arr = raw[name]
        cls = info.variables.get(name, ((), "?"))[1]
        arr = _check_numeric(path, name, arr, f"a MATLAB {cls}" if cls not in _DTYPE_TO_CLASS else "not numeric")
        if cls == "bool" and arr.dtype != bool:
            arr = arr.astype(bool)  # scipy gives MATLAB logicals as uint8
        out[name] = arr
    return out


def _read_h5(path: Path, info: MatInfo, names: Sequence[str]) -> dict[str, np.ndarray]:
    import h5py

    out = {}
    try:
        with h5py.File(path, "r") as f:
            for name in names:
                if info.variables[name][1] == _OUTSIDE:
                    raise _fail(path, f"variable {name!r} is an HDF5 external link, external or virtual dataset "
                                      "(its data is in other files); expected the data inside this file")
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
                if obj.attrs.get("MATLAB_sparse", None) is not None:
                    raise _fail(path, f"variable {name!r} is a MATLAB sparse matrix; expected a full numeric array "
                                      "(save full(x))")
                if obj.dtype.names and {"real", "imag"} <= set(obj.dtype.names):
                    raise _fail(path, f"variable {name!r} holds complex numbers; expected real numbers "
                                      "(save real(x) or abs(x))")
                if obj.dtype.kind not in "biuf":
                    raise _fail(path, f"variable {name!r} has HDF5 type {obj.dtype}; expected a numeric array")
                arr = np.asarray(obj[()])
                if cls == "logical":
                    arr = arr.astype(bool)
                if info.format == "v7.3" or cls is not None:
                    arr = arr.T  # MATLAB order as a view: no copy of a possibly huge array
                out[name] = arr
    except (ValueError, MemoryError):
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
        _check_declared_size(path, info, name, max_bytes)
    if not wanted:
        return {}, info
    t0 = time.perf_counter()
    reader = _read_h5 if info.format in ("v7.3", "hdf5") else _read_scipy
    try:
        data = reader(path, info, wanted)
    except MemoryError as exc:
        total = sum(_bytes_of(*info.variables[n]) for n in wanted)
        if total < 64 * 1024**2:  # a small variable cannot need that much: a data element lies about its size
            raise _fail(path, f"a data element of {', '.join(wanted)} declares more bytes than its "
                              f"{_human(total)} variable; the file is corrupt") from exc
        raise _fail(path, f"not enough memory to read {', '.join(wanted)} ({_human(total)} declared); "
                          "expected a file that fits in memory (free memory or use a larger machine)") from exc
    for name, arr in data.items():
        if arr.dtype.byteorder not in ("=", "|") and not arr.dtype.isnative:
            data[name] = arr.astype(arr.dtype.newbyteorder("="))  # big-endian file: native order for numpy maths
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
                sub = MatInfo(info.path, info.format, {
                    k: ((), _OUTSIDE) if isinstance(group.get(k, getlink=True), h5py.ExternalLink)
                    else _h5_entry(group[k], True) for k in present})
            for field_name in list(fields) + [o for o in optional if o in present]:
                if field_name not in present:
                    raise _fail(path, f"struct {name!r} has no field {field_name!r}; found {', '.join(present) or 'none'}")
            wanted = list(fields) + [o for o in optional if o in present]
            with h5py.File(path, "r") as f:
                for field_name in wanted:
                    shape, dtype = sub.variables[field_name]
                    if _bytes_of(shape, dtype) > MAX_VARIABLE_BYTES:
                        raise _fail(path, f"field {name}.{field_name} declares shape {shape}, above the size limit")
                    if isinstance(f[name].get(field_name, getlink=True), h5py.ExternalLink):
                        raise _fail(path, f"field {name}.{field_name} is an HDF5 external link; expected the data "
                                          "inside this file")
                    ds = f[name][field_name]
                    if isinstance(ds, h5py.Group) or ds.dtype.kind not in "biuf":
                        raise _fail(path, f"field {name}.{field_name} is not a numeric array")
                    if ds.external or ds.is_virtual:
                        raise _fail(path, f"field {name}.{field_name} is an external or virtual dataset; expected "
                                          "the data inside this file")
                    out[field_name] = np.asarray(ds[()]).T
        except ValueError:
            raise
        except Exception as exc:
            raise _fail(path, f"cannot read struct {name!r} ({type(exc).__name__}: {exc})") from exc
        return out
    from scipy.io import loadmat

    _, size_dtype = info.variables[name]
    if info.format == "v5" and size_dtype == "struct":
        _check_v5_struct(path, info, name)
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
