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

Modules: `common` (MatInfo, tables, errors), `sniff` (format detection), `v5_walk` (the v5
binary walker), `v5` (scipy), `hdf5` (h5py), `write` (v7.3 writer, atomic `save_mat`); this
module holds the entry points `peek_mat`, `read_mat_variables` and `read_mat_struct_fields`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from neuroalign.data.matio.common import (MAX_BYTES_ENV, MAX_DEFLATE_RATIO, MAX_VARIABLE_BYTES,
                                          OUTSIDE, V5_MAX_VARIABLE_BYTES, MatInfo, bytes_of, check_file, fail,
                                          human, max_variable_bytes)
from neuroalign.data.matio.hdf5 import peek_h5, read_h5, read_h5_struct_fields
from neuroalign.data.matio.sniff import detect_format
from neuroalign.data.matio.v5 import peek_v5, read_v5, read_v5_struct_fields
from neuroalign.data.matio.v5_walk import inflated_size
from neuroalign.data.matio.write import save_mat, write_mat_v73

__all__ = ["MAX_BYTES_ENV", "MAX_VARIABLE_BYTES", "V5_MAX_VARIABLE_BYTES", "MatInfo", "check_declared_size",
           "max_variable_bytes", "peek_mat", "read_mat_struct_fields", "read_mat_variables", "save_mat", "write_mat_v73"]

logger = logging.getLogger(__name__)

#: Compressed v5 variables declaring more than this ratio get their inflated size counted first.
_SUSPICIOUS_RATIO = 16


def peek_mat(path: str | os.PathLike) -> MatInfo:
    """List the variables of a MAT file (shapes in MATLAB order, dtypes) without reading data."""
    path = Path(path)
    check_file(path)
    fmt = detect_format(path)
    return peek_h5(path, fmt) if fmt in ("v7.3", "hdf5") else peek_v5(path, fmt)


def check_declared_size(path: Path, info: MatInfo, name: str, max_bytes: int | None = None,
                        label: str | None = None) -> None:
    """Refuse from the headers, before reading: negative dims, over the size cap, or more than the file holds.

    The cap is `max_bytes`, else $NEUROALIGN_MAX_IMPORT_BYTES, else `MAX_VARIABLE_BYTES` (8 GiB).
    Every variable with stored data is bounded by it, whatever its dtype or class: HDF5 datasets by
    the elements their stored bytes can decode to (`MatInfo.holds`: the datatype's size in the file,
    each filter's maximal expansion; unknown filters count as uncompressed storage, filters that
    cannot be decoded and data in other files are refused); v4/v5 variables by one byte per element,
    within zlib's maximal ratio when compressed, and compressed v5 variables declaring a suspicious
    ratio get their inflated size counted (streaming, constant memory) instead of trusting the header.
    """
    label = label or f"variable {name!r}"
    max_bytes = max_variable_bytes(max_bytes)
    shape, dtype = info.variables[name]
    if name in info.refused:
        raise fail(path, f"{label} {info.refused[name]}")
    if dtype == OUTSIDE:
        raise fail(path, f"{label} is an HDF5 external link, external or virtual dataset (its data is in other "
                   "files); expected the data inside this file")
    if any(int(s) < 0 for s in shape):
        raise fail(path, f"{label} declares negative dimensions {shape}; the file is corrupt")
    size = bytes_of(shape, dtype)
    if size > max_bytes:
        raise fail(path, f"{label} declares shape {shape} {dtype} = {human(size)}, above the {human(max_bytes)} "
                         f"import size limit (set {MAX_BYTES_ENV} to a larger byte count to allow it)")
    if name not in info.stored:
        return  # a struct/cell (HDF5 group): its fields are checked one by one when read
    stored, compression, offset = info.stored[name]
    elements = int(math.prod(int(s) for s in shape))
    if name in info.holds:  # HDF5
        if elements > info.holds[name]:
            how = "uncompressed" if compression == "none" else compression
            raise fail(path, f"{label} declares shape {shape} {dtype} ({human(size)}) but the file holds only "
                       f"{human(stored)} for it ({how}: at most {info.holds[name]:,} elements); the file is "
                       "truncated or corrupt, or the data was never written")
        return
    if dtype == "sparse":
        return  # v5 sparse: the header shape is the dense one; refused as sparse when read
    # v4/v5: MATLAB may store a class's data in a smaller type (e.g. a double array of small integers
    # as uint8, and v4 headers do not tell the type): bound by one byte per element
    size = elements
    if compression == "none":
        bound = stored
    else:  # v5 compresses with zlib only ("other": an element list that could not be matched)
        bound = stored * MAX_DEFLATE_RATIO
        if compression == "zlib" and offset >= 0 and size > stored * _SUSPICIOUS_RATIO:
            bound = inflated_size(path, offset, stored, size)
    if size > bound:
        raise fail(path, f"{label} declares shape {shape} {dtype} (at least {human(size)}) but the file "
                   f"holds only {human(bound)} for it; the file is truncated or corrupt")


def read_mat_variables(path: str | os.PathLike, names: Sequence[str], optional: Sequence[str] = (),
                       max_bytes: int | None = None) -> tuple[dict[str, np.ndarray], MatInfo]:
    """Read only `names` (all required) and those of `optional` that exist.

    Returns ({name: array in MATLAB order}, MatInfo). Raises ValueError naming the file when a
    required variable is missing, a variable is not numeric, or declares more than the size cap
    (`max_bytes`, else $NEUROALIGN_MAX_IMPORT_BYTES, else 8 GiB) or than the file holds.
    """
    path = Path(path)
    info = peek_mat(path)
    missing = [n for n in names if n not in info.variables]
    if missing:
        raise fail(path, f"missing variable(s) {', '.join(repr(m) for m in missing)}; "
                   f"found {info.describe()} ({info.format})")
    wanted = list(names) + [n for n in optional if n in info.variables and n not in names]
    for name in wanted:
        check_declared_size(path, info, name, max_bytes)
    if not wanted:
        return {}, info
    t0 = time.perf_counter()
    reader = read_h5 if info.format in ("v7.3", "hdf5") else read_v5
    try:
        data = reader(path, info, wanted)
    except MemoryError as exc:
        total = sum(bytes_of(*info.variables[n]) for n in wanted)
        if total < 64 * 1024**2:  # a small variable cannot need that much: a data element lies about its size
            raise fail(path, f"a data element of {', '.join(wanted)} declares more bytes than its "
                       f"{human(total)} variable; the file is corrupt") from exc
        raise fail(path, f"not enough memory to read {', '.join(wanted)} ({human(total)} declared); "
                   "expected a file that fits in memory (free memory or use a larger machine)") from exc
    for name, arr in data.items():
        if arr.dtype.byteorder not in ("=", "|") and not arr.dtype.isnative:
            data[name] = arr.astype(arr.dtype.newbyteorder("="))  # big-endian file: native order for numpy maths
    logger.debug("read %s from %s (%s) in %.2fs", wanted, path, info.format, time.perf_counter() - t0)
    return data, info


def read_mat_struct_fields(path: str | os.PathLike, name: str, fields: Sequence[str],
                           optional: Sequence[str] = (), max_bytes: int | None = None
                           ) -> dict[str, np.ndarray]:
    """Numeric fields of the scalar struct `name` (e.g. Stringer et al.'s `stim.resp`, `stim.istim`).

    v5 reads the whole struct variable (scipy cannot read single fields) after walking it field
    by field; v7.3 only the fields. Raises ValueError naming the file when the struct or a
    required field is missing, not numeric, or declares more than `max_bytes` (or than the file holds).
    """
    path = Path(path)
    info = peek_mat(path)
    if name not in info.variables:
        raise fail(path, f"missing struct {name!r}; found {info.describe()} ({info.format})")
    if info.format in ("v7.3", "hdf5"):
        return read_h5_struct_fields(path, info, name, fields, optional,
                                     lambda sub, key, label: check_declared_size(path, sub, key, max_bytes, label))
    return read_v5_struct_fields(path, info, name, fields, optional)
