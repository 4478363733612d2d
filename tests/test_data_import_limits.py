"""Huge declared variables are refused from the headers, before anything is inflated: peak memory
of the refusing process stays far below the declared size, for MAT v5 (zlib) and v7.3 (gzip)
files that declare 20,000 x 10,000 float64 (1.6 GB) but compress to a few MB; the size cap is
configurable through NEUROALIGN_MAX_IMPORT_BYTES and named in the error."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from neuroalign.data.matio import MAX_BYTES_ENV, MAX_VARIABLE_BYTES, max_variable_bytes

ROWS, COLS = 20_000, 10_000  # declared responses: 1.6 GB of float64
PEAK_LIMIT = 300 * 1024**2
_CHUNK_ROWS = 250  # rows of zeros streamed at a time (20 MB)


def _v5_compressed_zeros(path: Path, name: str, rows: int, cols: int) -> Path:
    """A MAT v5 file holding one zlib-compressed double matrix of zeros, built in constant memory."""
    data_bytes = rows * cols * 8
    name_b = name.encode()
    name_el = struct.pack("<II", 1, len(name_b)) + name_b + b"\0" * (-len(name_b) % 8)
    body = (struct.pack("<IIII", 6, 8, 6, 0) + struct.pack("<IIii", 5, 8, rows, cols) + name_el
            + struct.pack("<II", 9, data_bytes))
    comp = zlib.compressobj(1)
    parts = [comp.compress(struct.pack("<II", 14, len(body) + data_bytes) + body)]
    zeros = bytes(_CHUNK_ROWS * cols * 8)
    for _ in range(data_bytes // len(zeros)):
        parts.append(comp.compress(zeros))
    parts.append(comp.flush())
    payload = b"".join(parts)
    header = b"MATLAB 5.0 MAT-file, written by the neuroalign tests".ljust(116, b" ") + b"\0" * 8 + b"\x00\x01IM"
    path.write_bytes(header + struct.pack("<II", 15, len(payload)) + payload)
    return path


def _v73_gzip_zeros(path: Path, name: str, rows: int, cols: int) -> Path:
    """A MAT v7.3 file holding one gzip-chunked double matrix of zeros (MATLAB order rows x cols)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        ds = f.create_dataset(name, shape=(cols, rows), dtype="f8", chunks=(cols // 10, _CHUNK_ROWS),
                              compression="gzip", compression_opts=1)
        ds.attrs["MATLAB_class"] = np.bytes_("double")
        block = np.zeros((cols, _CHUNK_ROWS))
        for start in range(0, rows, _CHUNK_ROWS):
            ds[:, start:start + _CHUNK_ROWS] = block
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, written by the neuroalign tests".ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM")
    return path


_PROBE = r"""
import json, resource, sys, tracemalloc
from neuroalign.data import SubjectStore
store = SubjectStore(sys.argv[3])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
tracemalloc.start()
try:
    store.import_subject("huge", sys.argv[1], sys.argv[2])
    message = None
except ValueError as exc:
    message = str(exc)
peak = tracemalloc.get_traced_memory()[1]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"message": message, "traced_peak": peak, "rss_growth": after - before}))
"""


def _import_in_subprocess(images: Path, responses: Path, root: Path, env_cap: str | None = None) -> dict:
    import os

    env = dict(os.environ)
    env.pop(MAX_BYTES_ENV, None)
    if env_cap is not None:
        env[MAX_BYTES_ENV] = env_cap
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(images), str(responses), str(root)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def huge_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("huge")
    v5 = _v5_compressed_zeros(folder / "responses_v5.mat", "responses", ROWS, COLS)
    v73 = _v73_gzip_zeros(folder / "responses_v73.mat", "responses", ROWS, COLS)
    assert v5.stat().st_size < 20 * 1024**2 and v73.stat().st_size < 20 * 1024**2
    return {"v5": v5, "v7.3": v73}


@pytest.fixture
def small_images(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    savemat(tmp_path / "images.mat", {"images": rng.integers(0, 256, (60, 34, 40), dtype=np.uint8)})
    return tmp_path / "images.mat"


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_huge_responses_not_matching_the_images_are_refused_from_headers(huge_files, small_images, tmp_path, fmt):
    root = tmp_path / "root"
    result = _import_in_subprocess(small_images, huge_files[fmt], root)
    message = result["message"]
    assert message is not None and "\n" not in message, message
    assert f"responses have shape ({ROWS}, {COLS})" in message and "40, reading H x W x N images of 60 x 34" in message \
        and "60, reading N x H x W images of 34 x 40" in message, message
    assert result["traced_peak"] < PEAK_LIMIT and result["rss_growth"] < PEAK_LIMIT, result
    assert not root.exists() or list(root.iterdir()) == []


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_size_cap_from_the_environment_is_named_in_the_error(huge_files, tmp_path, fmt):
    rng = np.random.default_rng(0)
    images = tmp_path / "images.mat"
    savemat(images, {"images": rng.integers(0, 256, (34, 40, ROWS), dtype=np.uint8)})  # 20,000 images: counts fit
    root = tmp_path / "root"
    result = _import_in_subprocess(images, huge_files[fmt], root, env_cap="1000000000")
    message = result["message"]
    assert message is not None and "\n" not in message, message
    assert "responses" in message and "above the 953.7 MiB import size limit" in message, message
    assert MAX_BYTES_ENV in message, message
    assert result["traced_peak"] < PEAK_LIMIT and result["rss_growth"] < PEAK_LIMIT, result
    assert not root.exists() or list(root.iterdir()) == []


def test_size_cap_setting(monkeypatch):
    monkeypatch.delenv(MAX_BYTES_ENV, raising=False)
    assert max_variable_bytes() == MAX_VARIABLE_BYTES == 8 * 1024**3
    assert max_variable_bytes(123) == 123
    monkeypatch.setenv(MAX_BYTES_ENV, "2e9")
    assert max_variable_bytes() == 2_000_000_000
    for bad in ("lots", "0", "-5"):
        monkeypatch.setenv(MAX_BYTES_ENV, bad)
        with pytest.raises(ValueError, match=MAX_BYTES_ENV):
            max_variable_bytes()
