"""What an HDF5 (v7.3) dataset can hold, for every datatype and filter (issue 20 items 1 and 14).

The size check bounds every dataset by the elements its stored bytes can decode to: the
datatype's size in the file (big-endian, float16, long double alike), each filter's maximal
expansion (gzip, lzf, szip, n-bit, scale-offset; unknown filters count as uncompressed storage,
filters that cannot be decoded are refused). A declared size never raises the check worker's
memory budget before the file has proven it holds the data. Files are generated here.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from neuroalign.data import check_worker, load_pair
from neuroalign.data.matio import peek_mat, read_mat_variables

N, K, H, W = 12, 5, 32, 40
RNG = np.random.default_rng(11)
IMAGES = RNG.integers(0, 256, (N, H, W), dtype=np.uint8)
RESPONSES = RNG.random((N, K))


def _images(d: Path) -> Path:
    savemat(d / "images.mat", {"images": IMAGES})
    return d / "images.mat"


def _h5(path: Path, build) -> Path:
    with h5py.File(path, "w") as f:
        build(f)
    return path


def test_scaleoffset_responses_are_accepted(tmp_path):
    """Scale-offset packs values into a few bits: a legitimate file stores far fewer bytes than it declares."""
    resp = _h5(tmp_path / "r.mat", lambda f: f.create_dataset("responses", data=RESPONSES, scaleoffset=3,
                                                                chunks=(N, K)))
    info = peek_mat(resp)
    assert info.stored["responses"][0] < RESPONSES.nbytes  # compressed
    subject = load_pair(_images(tmp_path), resp, require_trainable=True)
    np.testing.assert_allclose(subject.responses, RESPONSES, atol=1e-3)


def test_an_unrelated_dangling_soft_link_does_not_refuse_the_file(tmp_path):
    def build(f):
        f.create_dataset("responses", data=RESPONSES)
        f["old_result"] = h5py.SoftLink("/removed/long/ago")
        f["loop"] = h5py.SoftLink("/loop")

    resp = _h5(tmp_path / "r.mat", build)
    subject = load_pair(_images(tmp_path), resp)
    np.testing.assert_allclose(subject.responses, RESPONSES.astype(np.float32))
    with pytest.raises(ValueError) as e:
        read_mat_variables(resp, ["old_result"])
    msg = str(e.value)
    assert msg.startswith("r.mat: variable 'old_result' is an HDF5 soft link to '/removed/long/ago' that leads "
                          "nowhere") and "expected a numeric array" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("dtype", [">f8", ">f4", "<f2", ">i2", np.dtype(np.longdouble).str])
def test_non_native_and_unusual_dtypes_with_data_are_read(tmp_path, dtype):
    resp = _h5(tmp_path / "r.mat", lambda f: f.create_dataset("responses", data=(RESPONSES * 100).astype(dtype),
                                                                compression="gzip", shuffle=True))
    data, info = read_mat_variables(resp, ["responses"])
    assert info.holds["responses"] >= N * K
    np.testing.assert_allclose(data["responses"].astype(np.float64), (RESPONSES * 100).astype(dtype), rtol=1e-3)


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_unallocated_chunks_hold_nothing_even_compressed(tmp_path, compression):
    """One chunk written of a (12, 10,000,000) float64 dataset: the rest is fill value, not data."""
    def build(f):
        ds = f.create_dataset("responses", shape=(N, 10_000_000), dtype=">f8", chunks=(N, 1000),
                              compression=compression)
        ds[:, :1000] = RNG.random((N, 1000))

    resp = _h5(tmp_path / "r.mat", build)
    with pytest.raises(ValueError) as e:
        read_mat_variables(resp, ["responses"])
    msg = str(e.value)
    assert "declares shape (12, 10000000) >f8 (915.5 MiB) but the file holds only" in msg, msg
    assert f"({compression}: at most" in msg and "\n" not in msg


def test_filter_expansion_bounds(tmp_path):
    """Each filter's bound: gzip ~1100x, lzf 90x, scale-offset one bit per element, shuffle/fletcher32 1x."""
    def build(f):
        kw = {"data": np.zeros((100, 1000)), "chunks": (100, 1000)}
        f.create_dataset("gzip", compression="gzip", **kw)
        f.create_dataset("lzf", compression="lzf", **kw)
        f.create_dataset("so", scaleoffset=0, **{**kw, "data": np.zeros((100, 1000), np.int32)})
        f.create_dataset("shuffled", shuffle=True, fletcher32=True, **kw)

    info = peek_mat(_h5(tmp_path / "z.h5", build))
    for name, ratio in (("gzip", 1100), ("lzf", 90), ("so", 32), ("shuffled", 1)):
        stored, kind, _ = info.stored[name]
        item = 4 if name == "so" else 8
        assert info.holds[name] == stored * ratio // item, (name, kind, stored, info.holds[name])
        assert info.holds[name] >= 100_000, name  # what was written fits
    assert info.stored["shuffled"][1] == "shuffle"


def test_an_unproven_optional_variable_never_raises_the_budget(tmp_path):
    """`responses_repeats` declaring 2.7 GB with no data beside good `responses`: refused before the budget grows."""
    def build(f):
        f.create_dataset("responses", data=RESPONSES)
        f.create_dataset("responses_repeats", shape=(2, N, 15_000_000), dtype=">f8")

    resp = _h5(tmp_path / "r.mat", build)
    with pytest.raises(ValueError, match="variable 'responses_repeats' declares shape .* but the file holds only 0"):
        check_worker._declared(_images(tmp_path), resp)
