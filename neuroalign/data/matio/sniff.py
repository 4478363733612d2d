"""Which MAT format a file is: v4, v5, v7.3 (HDF5 with a MATLAB header) or plain HDF5."""

from __future__ import annotations

from pathlib import Path

import h5py
from scipy.io.matlab import matfile_version

from neuroalign.data.matio.common import fail, short

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Files people rename to .mat by mistake, by their first bytes: named in the message instead of scipy's
# "Unknown mat file type, version 85, 174" (which is what a PNG's bytes read as)
_OTHER_KINDS = ((b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
                (b"GIF87a", "a GIF image"), (b"GIF89a", "a GIF image"), (b"II*\x00", "a TIFF image"),
                (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
                (b"\x1f\x8b", "a gzip archive"), (b"\x93NUMPY", "a NumPy .npy file"))


def other_kind(head: bytes) -> str | None:
    """What a non-MAT file is, from its first bytes ("a PNG image"), or None when unrecognised."""
    return next((kind for magic, kind in _OTHER_KINDS if head.startswith(magic)), None)


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
    kind = other_kind(head)
    if kind is not None:
        raise fail(path, f"is {kind}, not a MATLAB .mat file (renamed?); expected a MAT v5 or v7.3 file")
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
