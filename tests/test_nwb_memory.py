"""Issue 19 item 2: "a 10,000-ROI x 50,000-frame series must import in bounded memory (measured in a test
on a generated file)".

The file is a pynwb-written session (20 images, 40 presentations every 40 s, a one-ROI series of
50,000 frames at 30 Hz) whose series is then replaced, with h5py, by the full 10,000 ROIs x 50,000
frames float32 (2.0 GB in memory, 4.0 GB as the float64 a naive mean would make), chunked 250 frames x
all ROIs and gzip-compressed from a simple pattern (each chunk's level times a per-ROI factor), written
as pre-compressed chunks so the file is ~6 MB and written in about a second. Its `rois` region and
the PlaneSegmentation `id` are rewritten for the 10,000 ROIs too.

The sandboxed import check (`neuroalign.data.imports.check`, the worker every import goes through)
reads it with a response window of 0-40 s, so every frame from the first onset to the end of the
last window is read (~48,000 of the 50,000 frames: nothing is skipped), under a memory limit of 64 MB
above what the reader's plan declares (one 64 MiB block of the series twice, the images and the
presentations x ROIs result: ~157 MB), far below the series' 2 GB; it passes, its measured peak
resident memory (VmHWM of the worker) stays under 400 MB (measured: ~200 MB; ~110 MB with 8 MiB
blocks), and the responses are the exact window means. The full size is used: on the shared 2-core
test machine writing takes ~2 s and the check ~11 s.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from nwb_support import write_nwb
from neuroalign.data import imports
from neuroalign.data.nwb import NwbOptions

N_ROIS, N_FRAMES, RATE = 10_000, 50_000, 30.0
CHUNK_FRAMES = 250
LEVELS = 7  # chunk c holds level(c) = 1 + 0.25 (c % 7) times the ROI's factor
WINDOW = (0.0, 40.0)


def level(c: np.ndarray) -> np.ndarray:
    return 1.0 + 0.25 * (np.asarray(c) % LEVELS)


def factor() -> np.ndarray:
    return ((1 + np.arange(N_ROIS) % 16) / 16).astype(np.float32)


def write_big_series(path: Path) -> dict:
    truth = write_nwb(path, n_images=20, n_rois=1, repeats=2, isi=40.0, series_rate=True, frames=N_FRAMES,
                      rate=RATE)
    series = "processing/ophys/DfOverF/plane0"
    row = factor()
    blocks = [zlib.compress(np.broadcast_to(np.float32(level(c)) * row, (CHUNK_FRAMES, N_ROIS)).tobytes(), 9)
              for c in range(LEVELS)]
    with h5py.File(path, "r+") as f:
        old = f[f"{series}/data"]
        attrs = dict(old.attrs)
        del f[f"{series}/data"]
        ds = f.create_dataset(f"{series}/data", shape=(N_FRAMES, N_ROIS), dtype="<f4",
                              chunks=(CHUNK_FRAMES, N_ROIS), compression="gzip", compression_opts=9)
        for key, value in attrs.items():
            ds.attrs[key] = value
        for c in range(N_FRAMES // CHUNK_FRAMES):
            ds.id.write_direct_chunk((c * CHUNK_FRAMES, 0), blocks[c % LEVELS])
        # the ROI table and the region for 10,000 ROIs (ids 5, 7, 9, ...)
        table = "processing/ophys/ImageSegmentation/rois_plane0"
        del f[f"{table}/id"]
        ids = f.create_dataset(f"{table}/id", data=5 + 2 * np.arange(N_ROIS, dtype=np.int64))
        ids.attrs["neurodata_type"], ids.attrs["namespace"] = "ElementIdentifiers", "hdmf-common"
        region = f[f"{series}/rois"]
        rattrs = dict(region.attrs)
        del f[f"{series}/rois"]
        new = f.create_dataset(f"{series}/rois", data=np.arange(N_ROIS, dtype=np.int64))
        for key, value in rattrs.items():
            new.attrs[key] = value
    return truth


def expected_means(truth: dict) -> np.ndarray:
    """(images, 16) the mean over presentations of the window means, for ROIs 0..15 (the pattern's period)."""
    stamps = np.arange(N_FRAMES) / RATE  # starting_time 0, rate 30 Hz
    per_frame = level(np.arange(N_FRAMES) // CHUNK_FRAMES)
    trials = np.array([per_frame[(stamps >= t + WINDOW[0]) & (stamps < t + WINDOW[1])].mean()
                       for t in truth["onsets"]])
    shown = np.unique(truth["index"])
    per_image = np.array([trials[truth["index"] == i].mean() for i in shown])
    return per_image[:, None] * factor()[None, :16].astype(np.float64)


@pytest.fixture(scope="module")
def big_nwb(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("big") / "big.nwb"
    return path, write_big_series(path)


def test_a_10000_roi_50000_frame_series_imports_in_bounded_memory(big_nwb, tmp_path):
    path, truth = big_nwb
    series_bytes = N_ROIS * N_FRAMES * 4
    assert path.stat().st_size < 20 * 1024**2 < series_bytes  # a small file holding a 2 GB series
    result = imports.check(imports.NwbSource(path, options=NwbOptions(window=WINDOW)), memory_mb=64, seconds=300,
                           preview_path=tmp_path / "preview.npz")
    report = result.report
    assert report.n_images == 20 and report.n_neurons == N_ROIS
    peak = result.peak_rss_bytes
    assert peak is not None and peak < 400 * 1024**2, f"peak {peak / 1024**2:.0f} MB"
    assert peak < series_bytes / 5
    # the responses are the exact window means (every frame of every window read, in blocks); the preview
    # holds the responses of every image here (it keeps up to 200)
    with np.load(tmp_path / "preview.npz") as z:
        rows, row_ids = z["rows"], z["row_ids"]
    np.testing.assert_array_equal(row_ids, np.unique(truth["index"]))
    assert rows.shape == (20, N_ROIS)
    np.testing.assert_allclose(rows[:, :16], expected_means(truth), rtol=1e-5)
    np.testing.assert_allclose(rows[:, 16:32], rows[:, :16], rtol=1e-6)  # the pattern's period: ROI r = ROI r + 16
