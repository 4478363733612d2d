"""What every MAT reader shares: `MatInfo`, the class/dtype tables, one-line errors, size checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from neuroalign import settings
from neuroalign.text import printable

#: Largest variable (declared bytes) that will be read unless `NEUROALIGN_MAX_IMPORT_BYTES` or
#: `max_bytes` says otherwise; larger ones are refused before reading.
#: Environment variable overriding `MAX_VARIABLE_BYTES` (a byte count, e.g. 2000000000).
MAX_BYTES_ENV = "NEUROALIGN_MAX_IMPORT_BYTES"
MAX_VARIABLE_BYTES = settings.SETTINGS[MAX_BYTES_ENV].default  # 8 GiB
#: Largest variable scipy's v5 writer can hold; bigger ones are written as v7.3.
V5_MAX_VARIABLE_BYTES = 2**31 - 1

#: Deflate never expands data by more than ~1032x; allow some slack for headers.
MAX_DEFLATE_RATIO = 1100
#: MatInfo dtype of HDF5 variables whose data lives in other files (external links/storage, virtual)
OUTSIDE = "stored outside the file"
CLASS_TO_DTYPE = {
    "double": "float64", "single": "float32", "logical": "bool",
    "int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16",
    "int32": "int32", "uint32": "uint32", "int64": "int64", "uint64": "uint64",
}
DTYPE_TO_CLASS = {v: k for k, v in CLASS_TO_DTYPE.items()}


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
    #: HDF5: name -> the most elements the bytes stored for it can decode to (its datatype's size in
    #: the file and its filters' maximal expansion; `hdf5.h5_stored`)
    holds: dict[str, int] = field(default_factory=dict, repr=False)
    #: name -> why its data cannot be read at all (e.g. an HDF5 filter this installation cannot
    #: decode, a soft link that leads nowhere), refused when that variable is wanted
    refused: dict[str, str] = field(default_factory=dict, repr=False)

    def describe(self, names: Sequence[str] | None = None) -> str:
        """One-line listing such as "images (68, 270, 60) uint8, extra (1, 3) float64"."""
        items = [(n, v) for n, v in self.variables.items() if names is None or n in names]
        if not items:
            return "no variables"
        return ", ".join(f"{printable(n)} {tuple(s)} {printable(d)}" for n, (s, d) in items)


def fail(path: Path, message: str) -> ValueError:
    """The ValueError every reader raises: "<file name>: <message>"."""
    return ValueError(f"{path.name}: {message}")


def short(exc: BaseException, limit: int = 160) -> str:
    """First sentence of an exception message, on one line (scipy's are long)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text.split("; ")[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def human(n: int) -> str:
    """A byte count as "1.5 GiB", "3.0 MiB", "12 bytes"."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def bytes_of(shape: Sequence[int], dtype: str) -> int:
    """Declared bytes of an array of `shape` and `dtype` (8 bytes per element for non-numpy classes)."""
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:
        itemsize = 8
    return int(math.prod(int(s) for s in shape)) * itemsize


def max_variable_bytes(explicit: int | None = None) -> int:
    """The size cap: `explicit`, else $NEUROALIGN_MAX_IMPORT_BYTES, else `MAX_VARIABLE_BYTES`."""
    if explicit is not None:
        return int(explicit)
    return settings.get(MAX_BYTES_ENV)


def check_file(path: Path) -> None:
    """FileNotFoundError/ValueError unless `path` is a non-empty regular file."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if path.is_dir():
        raise fail(path, "is a folder, not a file (expected a .mat file)")
    if not path.is_file():
        raise fail(path, "is not a regular file (expected a .mat file)")
    if path.stat().st_size == 0:
        raise fail(path, "the file is empty (expected a MATLAB .mat file)")


def check_numeric(path: Path, name: str, arr: object, kind_desc: str) -> np.ndarray:
    """`arr` if it is a real, full numeric ndarray; else a ValueError saying what it is."""
    if isinstance(arr, np.ndarray) and arr.dtype.kind == "c":
        raise fail(path, f"variable {name!r} {arr.shape} holds complex numbers ({arr.dtype}); expected real "
                   "numbers (save real(x) or abs(x))")
    if not isinstance(arr, np.ndarray) and hasattr(arr, "toarray"):
        raise fail(path, f"variable {name!r} is a MATLAB sparse matrix {getattr(arr, 'shape', '')}; "
                   "expected a full numeric array (save full(x))")
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        dtype = getattr(arr, "dtype", type(arr).__name__)
        raise fail(path, f"variable {name!r} is {kind_desc} ({dtype}); expected a numeric array")
    return arr
