"""Which MAT format a file is: v4, v5, v7.3 (HDF5 with a MATLAB header) or plain HDF5."""

from __future__ import annotations

from pathlib import Path

import h5py
from scipy.io.matlab import matfile_version

from neuroalign.data.matio.common import fail, short

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def detect_format(path: Path) -> str:
    """"v4", "v5", "v7.3" or "hdf5"; ValueError when it is not a MAT file."""
    with open(path, "rb") as fh:
        head = fh.read(520)
    if head[:10] == b"MATLAB 7.3" or (not head.startswith(b"MATLAB 5.0") and has_hdf5_signature(path)):
        try:
            if not h5py.is_hdf5(path):
                raise fail(path, "has a MATLAB 7.3 header but no readable HDF5 content "
                           "(truncated or corrupt?)")
        except OSError as exc:
            raise fail(path, f"cannot open as HDF5 ({exc})") from exc
        return "v7.3" if head[:10] == b"MATLAB 7.3" else "hdf5"
    try:
        major, _minor = matfile_version(str(path))
    except Exception as exc:  # scipy raises ValueError/MatReadError/... for non-MAT bytes
        raise fail(path, f"not a MATLAB .mat file ({short(exc)}); expected a MAT v5 or v7.3 file") from exc
    if major == 0:
        return "v4"  # no text header; reading the variable headers tells garbage apart
    if major == 1:
        return "v5"
    return "v7.3"


def has_hdf5_signature(path: Path) -> bool:
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
