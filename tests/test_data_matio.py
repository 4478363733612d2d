"""MAT io: v5 and v7.3 give the same arrays in MATLAB order; bad files give ValueErrors naming the file."""

from __future__ import annotations


import h5py
import hdf5storage
import numpy as np
import pytest
from scipy.io import savemat

from neuroalign.data.matio import peek_mat, read_mat_variables, save_mat, write_mat_v73


@pytest.fixture
def arr() -> np.ndarray:
    return np.random.default_rng(0).random((6, 9, 4)).astype(np.float32)


def test_v5_reads_only_requested_variables(tmp_path, arr):
    f = tmp_path / "a.mat"
    savemat(f, {"imgs": arr, "other": np.ones((3, 2)), "istim": np.arange(1, 5)})
    data, info = read_mat_variables(f, ["imgs"], optional=["istim", "absent"])
    assert info.format == "v5"
    assert set(data) == {"imgs", "istim"}
    np.testing.assert_array_equal(data["imgs"], arr)
    assert info.variables["other"] == ((3, 2), "float64")


@pytest.mark.parametrize("writer", ["ours", "hdf5storage"])
def test_v73_comes_back_in_matlab_order(tmp_path, arr, writer):
    f = tmp_path / "b.mat"
    if writer == "ours":
        write_mat_v73(f, {"imgs": arr, "n": np.array([[7.0]])})
    else:
        hdf5storage.savemat(str(f), {"imgs": arr}, format="7.3", matlab_compatible=True)
    info = peek_mat(f)
    assert info.format == "v7.3"
    assert info.variables["imgs"] == ((6, 9, 4), "float32")
    data, _ = read_mat_variables(f, ["imgs"])
    np.testing.assert_array_equal(data["imgs"], arr)
    # the on-disk dataset is column-major (reversed), as MATLAB writes it
    with h5py.File(f, "r") as h:
        assert h["imgs"].shape == (4, 9, 6)


def test_our_v73_files_read_back_by_hdf5storage(tmp_path, arr):
    f = tmp_path / "c.mat"
    write_mat_v73(f, {"imgs": arr})
    np.testing.assert_array_equal(hdf5storage.loadmat(str(f))["imgs"], arr)


def test_save_mat_is_v5_for_normal_sizes(tmp_path, arr):
    path, fmt = save_mat(tmp_path / "d.mat", {"x": arr})
    assert fmt == "v5" and peek_mat(path).format == "v5"


def test_missing_variable_lists_what_was_found(tmp_path, arr):
    f = tmp_path / "e.mat"
    savemat(f, {"pics": arr})
    with pytest.raises(ValueError, match=r"e\.mat: missing variable\(s\) 'images'; found pics \(6, 9, 4\) float32"):
        read_mat_variables(f, ["images"])


def test_non_numeric_variable_is_refused(tmp_path):
    f = tmp_path / "f.mat"
    savemat(f, {"images": "hello", "cells": np.array([1, "a"], dtype=object)})
    with pytest.raises(ValueError, match=r"f\.mat: variable 'images' is .*expected a numeric array"):
        read_mat_variables(f, ["images"])
    with pytest.raises(ValueError, match="expected a numeric array"):
        read_mat_variables(f, ["cells"])


def test_v73_char_variable_is_refused(tmp_path):
    f = tmp_path / "g.mat"
    hdf5storage.savemat(str(f), {"images": "some text"}, format="7.3", matlab_compatible=True)
    with pytest.raises(ValueError, match=r"g\.mat: variable 'images' is a MATLAB char"):
        read_mat_variables(f, ["images"])


@pytest.mark.parametrize("kind", ["empty", "garbage", "text", "trunc_v5", "trunc_v73"])
def test_broken_files_raise_value_error_naming_the_file(tmp_path, arr, kind):
    f = tmp_path / f"{kind}.mat"
    if kind == "empty":
        f.write_bytes(b"")
    elif kind == "garbage":
        f.write_bytes(np.random.default_rng(1).integers(1, 255, 4000, dtype=np.uint8).tobytes())
    elif kind == "text":
        f.write_text("this is a csv file, not MATLAB\n1,2,3\n" * 20)
    else:
        src = tmp_path / "src.mat"
        savemat(src, {"images": arr}) if kind == "trunc_v5" else write_mat_v73(src, {"images": arr})
        data = src.read_bytes()
        f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"^{kind}\.mat: "):
        read_mat_variables(f, ["images"])


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mat"):
        peek_mat(tmp_path / "nope.mat")


def test_absurd_declared_size_is_refused_before_reading(tmp_path, arr):
    f = tmp_path / "big.mat"
    savemat(f, {"images": arr})
    with pytest.raises(ValueError, match=r"big\.mat: variable 'images' declares shape \(6, 9, 4\).*limit"):
        read_mat_variables(f, ["images"], max_bytes=100)


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_other_large_variables_are_not_read(tmp_path, arr, fmt):
    f = tmp_path / "withbig.mat"
    variables = {"images": arr, "spont": np.zeros((400, 400))}  # 1.28 MB of something else
    savemat(f, variables) if fmt == "v5" else write_mat_v73(f, variables)
    data, info = read_mat_variables(f, ["images"], max_bytes=arr.nbytes)
    assert list(data) == ["images"] and info.variables["spont"][0] == (400, 400)
    with pytest.raises(ValueError, match="'spont' declares shape"):
        read_mat_variables(f, ["spont"], max_bytes=arr.nbytes)


def test_a_renamed_picture_is_named_not_a_scipy_riddle(tmp_path):
    """Issue 23 item 12: a PNG renamed to .mat got scipy's "Unknown mat file type, version 85, 174";
    the message says what the file is."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    (tmp_path / "images.mat").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match=r"^images\.mat: is a PNG image, not a MATLAB \.mat file") as err:
        peek_mat(tmp_path / "images.mat")
    assert "version" not in str(err.value)
    (tmp_path / "r.mat").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    with pytest.raises(ValueError, match="is a JPEG image"):
        read_mat_variables(tmp_path / "r.mat", ["responses"])
