"""Writing MAT files: v7.3 (HDF5 with the MATLAB user block) and atomic v5-or-v7.3 `save_mat`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from neuroalign.data.matio.common import DTYPE_TO_CLASS, V5_MAX_VARIABLE_BYTES
from neuroalign.io_utils import atomic_savemat, disk_full_error, is_disk_full


def _matlab_header_73() -> bytes:
    text = (f"MATLAB 7.3 MAT-file, Platform: neuroalign, Created on: "
            f"{time.strftime('%a %b %d %H:%M:%S %Y', time.gmtime())} HDF5 schema 1.00 .").encode("ascii")
    return text[:116].ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def write_mat_v73(path: str | os.PathLike, variables: Mapping[str, np.ndarray]) -> Path:
    """Write numeric arrays as a MATLAB v7.3 (HDF5) file that MATLAB, hdf5storage and this package read.

    Arrays are given in MATLAB order and stored transposed (column-major), with the 512-byte
    MATLAB user block and `MATLAB_class` attributes. Not atomic: see `save_mat` for that.
    """
    path = Path(path)
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            arr = np.asarray(value)
            if arr.ndim < 2:
                arr = arr.reshape(1, -1)
            cls = DTYPE_TO_CLASS.get(str(arr.dtype))
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
    path = Path(path)
    if all(np.asarray(v).nbytes <= V5_MAX_VARIABLE_BYTES for v in variables.values()):
        return atomic_savemat(path, dict(variables)), "v5"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.v73.tmp")
    try:
        write_mat_v73(tmp, variables)
        os.replace(tmp, path)
    except BaseException as exc:
        # HDF5 reports a full disk as a multi-line OSError naming neither file: one line naming `path`
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path, "v7.3"
