"""Hostile and unusual inputs to the data layer: encodings, odd variables, corrupt files, names, roots.

Every refused input must give a one-line ValueError/FileNotFoundError naming the file, what was
found and what was expected, without allocating what a corrupt header claims; the CLI turns
them into `error: ...` and exit code 2.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import threading
import time
import tracemalloc
import unicodedata
import warnings
import zlib
from pathlib import Path

import h5py
import hdf5storage
import numpy as np
import pytest
import scipy.sparse
from scipy.io import savemat

from neuroalign.cli import main
from neuroalign.data import load_pair
from neuroalign.data.matio import peek_mat, read_mat_variables
from neuroalign.data.store import SubjectStore, check_subject_name

N, K, H, W = 12, 5, 32, 40


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"images": rng.integers(0, 256, (N, H, W), dtype=np.uint8), "responses": rng.random((N, K))}


@pytest.fixture
def pair(tmp_path: Path, arrays) -> tuple[Path, Path]:
    return _v5(tmp_path / "images.mat", images=arrays["images"]), _v5(tmp_path / "responses.mat",
                                                                        responses=arrays["responses"])


def _v5(path: Path, **variables) -> Path:
    savemat(path, variables)
    return path


def _h5s(path: Path, **variables) -> Path:
    hdf5storage.savemat(str(path), variables, format="7.3", matlab_compatible=True)
    return path


def _pad8(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 8)


def _v5_big_endian(path: Path, name: str, arr: np.ndarray) -> Path:
    """A MAT v5 file as a big-endian machine writes it ('MI' header, big-endian tags and data)."""
    cls, mi = {"float64": (6, 9), "uint8": (9, 2), "uint16": (11, 4)}[str(arr.dtype)]
    el = lambda t, data: struct.pack(">II", t, len(data)) + _pad8(data)  # noqa: E731
    body = (el(6, struct.pack(">II", cls, 0)) + el(5, struct.pack(f">{arr.ndim}i", *arr.shape))
            + el(1, name.encode()) + el(mi, arr.astype(arr.dtype.newbyteorder(">")).tobytes(order="F")))
    header = b"MATLAB 5.0 MAT-file, big-endian".ljust(116) + b"\0" * 8 + b"\x01\x00MI"
    path.write_bytes(header + struct.pack(">II", 14, len(body)) + body)
    return path


def _h5_raw(path: Path, userblock: int, **variables) -> Path:
    """Plain h5py (no MATLAB attributes); with a user block but no MATLAB header text."""
    with h5py.File(path, "w", userblock_size=userblock) if userblock else h5py.File(path, "w") as f:
        for k, v in variables.items():
            f[k] = v
    return path


def _one_line_error(exc_info, *needles: str) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and len(msg) < 400, msg
    for needle in needles:
        assert needle.lower() in msg.lower(), (needle, msg)
    return msg


# ---------------------------------------------------------------------------------------------
# encodings that must load, identically


ENCODINGS = {
    "v4 responses": lambda d, a: (_v5(d / "i.mat", images=a["images"]),
                                  (savemat(d / "r.mat", {"responses": a["responses"]}, format="4"), d / "r.mat")[1]),
    "v5 compressed": lambda d, a: ((savemat(d / "i.mat", {"images": a["images"]}, do_compression=True), d / "i.mat")[1],
                                   (savemat(d / "r.mat", {"responses": a["responses"]}, do_compression=True),
                                    d / "r.mat")[1]),
    "v5 big-endian": lambda d, a: (_v5_big_endian(d / "i.mat", "images", a["images"]),
                                   _v5_big_endian(d / "r.mat", "responses", a["responses"])),
    "v5 big-endian uint16": lambda d, a: (_v5_big_endian(d / "i.mat", "images", a["images"].astype(np.uint16) * 257),
                                          _v5(d / "r.mat", responses=a["responses"])),
    "v7.3 hdf5storage": lambda d, a: (_h5s(d / "i.mat", images=a["images"]), _h5s(d / "r.mat", responses=a["responses"])),
    "h5py no user block": lambda d, a: (_h5_raw(d / "i.mat", 0, images=a["images"]),
                                        _h5_raw(d / "r.mat", 0, responses=a["responses"])),
    "h5py 512 user block": lambda d, a: (_h5_raw(d / "i.mat", 512, images=a["images"]),
                                         _h5_raw(d / "r.mat", 512, responses=a["responses"])),
    "h5py 1024 user block": lambda d, a: (_h5_raw(d / "i.mat", 1024, images=a["images"]),
                                          _h5_raw(d / "r.mat", 2048, responses=a["responses"])),
    "names with spaces and unicode": lambda d, a: (_v5(d / "my images é 猫.mat", images=a["images"]),
                                                   _v5(d / "résponses 1.mat", responses=a["responses"])),
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_encodings_give_the_same_subject(tmp_path, arrays, encoding):
    images_path, responses_path = ENCODINGS[encoding](tmp_path, arrays)
    s = load_pair(images_path, responses_path, "x")
    np.testing.assert_allclose(s.images[:, 0], arrays["images"] / 255.0, atol=1e-6)
    np.testing.assert_allclose(s.responses, arrays["responses"], rtol=1e-6)
    assert s.responses.dtype == np.float32 and s.responses.flags["C_CONTIGUOUS"]
    assert s.images.dtype == np.float32 and s.images.flags["C_CONTIGUOUS"]


def test_reference_code_folder_loads_as_is(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "root" / "M6" / "Data"
    data.mkdir(parents=True)
    imgs = rng.integers(0, 256, (30, 68, 270), dtype=np.uint8)
    resp = rng.random((30, 400))
    _v5(data / "images.mat", images=imgs)
    _v5(data / "responses.mat", responses=resp)
    store = SubjectStore(tmp_path / "root")
    [info] = store.list()
    assert (info.name, info.n_images, info.n_neurons, info.image_shape, info.error) == ("M6", 30, 400, (68, 270), None)
    s = store.load("M6")
    assert s.images.shape == (30, 1, 68, 270) and s.meta["image_scaling"] == "uint8 / 255"
    np.testing.assert_allclose(s.responses, resp.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# variables of the wrong kind


NON_NUMERIC = {
    "v5 char": (_v5, "hello", "char"),
    "v5 cell": (_v5, np.array([np.ones(3), "a"], dtype=object), "cell"),
    "v5 struct": (_v5, {"a": np.ones(3)}, "struct"),
    "v5 complex": (_v5, "complex of the variable's shape", "complex"),
    "v5 sparse": (_v5, scipy.sparse.csc_matrix(np.eye(N, K)), "sparse"),
    "v7.3 char": (_h5s, "hello", "char"),
    "v7.3 cell": (_h5s, np.array([np.ones(3), "a"], dtype=object), "cell"),
    "v7.3 struct": (_h5s, {"a": np.ones(3)}, "struct"),
    "v7.3 complex": (_h5s, "complex of the variable's shape", "complex"),
}


@pytest.mark.parametrize("var", ["images", "responses"])
@pytest.mark.parametrize("case", list(NON_NUMERIC))
def test_non_numeric_variables_are_refused_by_kind(tmp_path, pair, case, var):
    writer, value, word = NON_NUMERIC[case]
    if word == "complex":  # shaped like the variable, so that only its kind is wrong
        value = np.ones((N, H, W) if var == "images" else (N, K)) + 1j
    bad = writer(tmp_path / "bad.mat", **{var: value})
    args = (bad, pair[1]) if var == "images" else (pair[0], bad)
    with pytest.raises(ValueError) as e:
        load_pair(*args)
    _one_line_error(e, "bad.mat", repr(var), word, "expected")


@pytest.mark.parametrize("writer", [_v5, _h5s])
def test_logical_images_are_zero_or_one(tmp_path, arrays, pair, writer):
    mask = arrays["images"] > 128
    s = load_pair(writer(tmp_path / "mask.mat", images=mask), pair[1])
    assert s.meta["image_scaling"] == "bool as 0/1"
    np.testing.assert_array_equal(s.images[:, 0], mask.astype(np.float32))


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64"])
def test_signed_integer_images_with_negatives_are_min_max_scaled(tmp_path, arrays, pair, dtype):
    raw = (arrays["images"].astype(np.int64) - 128).astype(dtype)
    s = load_pair(_v5(tmp_path / "i.mat", images=raw), pair[1])
    x = raw.astype(np.float64)
    np.testing.assert_allclose(s.images[:, 0], (x - x.min()) / (x.max() - x.min()), atol=1e-6)
    assert "min-max" in s.meta["image_scaling"]


@pytest.mark.parametrize("dtype", ["uint32", "uint64", "int16"])
def test_wide_integer_images_holding_8_bit_values_are_divided_by_255(tmp_path, arrays, pair, dtype):
    s = load_pair(_v5(tmp_path / "i.mat", images=arrays["images"].astype(dtype)), pair[1])
    np.testing.assert_allclose(s.images[:, 0], arrays["images"] / 255.0, atol=1e-6)  # not / 2**32 - 1


SHAPES = {  # name: (images, responses, expected (n_images, n_neurons, (H, W)))
    "single image": (lambda a: a["images"][:1], lambda a: a["responses"][:1], (1, K, (H, W))),
    "one neuron": (lambda a: a["images"], lambda a: a["responses"][:, :1], (N, 1, (H, W))),
    "one neuron as a vector": (lambda a: a["images"], lambda a: a["responses"][:, 0], (N, 1, (H, W))),
    "1 pixel tall": (lambda a: a["images"][:, :1], lambda a: a["responses"], (N, K, (1, W))),
    "1 x 1 pixel": (lambda a: a["images"][:, :1, :1], lambda a: a["responses"], (N, K, (1, 1))),
}


@pytest.mark.parametrize("case", list(SHAPES))
def test_degenerate_but_valid_shapes_load(tmp_path, arrays, case):
    img, resp, (n, k, hw) = SHAPES[case]
    s = load_pair(_v5(tmp_path / "i.mat", images=img(arrays)), _v5(tmp_path / "r.mat", responses=resp(arrays)))
    assert (s.n_images, s.n_neurons, s.image_shape) == (n, k, hw)
    if n < 3:
        assert any("training needs at least 3" in note for note in s.meta["notes"])


BAD_VALUES = {  # name: (which file, value builder, words in the message)
    "0-size images": ("images", lambda a: np.zeros((0, H, W), np.uint8), ["empty", f"(0, {H}, {W})"]),
    "0-size responses": ("responses", lambda a: np.zeros((N, 0)), ["empty"]),
    "5-D images": ("images", lambda a: a["images"].reshape(N, 1, H, W, 1), ["rank 5", "expected"]),
    "2-D images": ("images", lambda a: a["images"].reshape(N, -1), ["rank 2", "expected"]),
    "3-D responses": ("responses", lambda a: a["responses"][None], ["rank 3", "expected a 2-D"]),
    "NaN in images": ("images", lambda a: np.where(a["images"] == a["images"].max(), np.nan, a["images"] / 255.0),
                      ["NaN", "expected finite"]),
    "Inf in responses": ("responses", lambda a: np.where(a["responses"] > 0.9, np.inf, a["responses"]),
                         ["Inf", "expected finite"]),
    "beyond float32": ("responses", lambda a: a["responses"] * 1e300, ["float32 range"]),
    "count mismatch": ("responses", lambda a: a["responses"][:5], ["image count"]),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_shapes_and_values_are_explained(tmp_path, arrays, pair, case):
    which, value, words = BAD_VALUES[case]
    bad = _v5(tmp_path / "bad.mat", **{which: value(arrays)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # e.g. an overflow while casting to float32
        with pytest.raises(ValueError) as e:
            load_pair(*((bad, pair[1]) if which == "images" else (pair[0], bad)))
    _one_line_error(e, "bad.mat", *words)


# ---------------------------------------------------------------------------------------------
# files that are not MAT files, or lie about their contents


def _not_mat(d: Path, kind: str) -> Path:
    p = d / f"{kind}.mat"
    if kind == "zero-byte":
        p.write_bytes(b"")
    elif kind == "random bytes":
        p.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "text":
        p.write_text("images = [1 2 3; 4 5 6];\n" * 20)
    elif kind == "zeros":
        p.write_bytes(b"\0" * 2048)
    elif kind == "hdf5 not matlab":
        with h5py.File(p, "w") as f:
            f.create_group("group")["x"] = np.arange(3)
    elif kind == "folder":
        p.mkdir()
    elif kind == "dangling link":
        p.symlink_to(d / "nowhere.mat")
    elif kind == "link to a text file outside":
        (d.parent / "outside.txt").write_text("root:x:0:0:root:/root:/bin/bash\n")
        p.symlink_to(d.parent / "outside.txt")
    elif kind == "fifo":
        os.mkfifo(p)  # reading it would block forever
    elif kind == "missing":
        pass
    return p


@pytest.mark.parametrize("kind", ["zero-byte", "random bytes", "text", "zeros", "hdf5 not matlab", "folder",
                                  "dangling link", "link to a text file outside", "fifo", "missing"])
def test_files_that_are_not_mat_files(tmp_path, pair, kind):
    d = tmp_path / "in"
    d.mkdir()
    bad = _not_mat(d, kind)
    t0 = time.perf_counter()
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        load_pair(bad, pair[1])
    assert time.perf_counter() - t0 < 2
    _one_line_error(e, f"{kind}.mat")
    with pytest.raises((ValueError, FileNotFoundError)):
        load_pair(pair[0], bad)


def test_symlink_to_a_good_file_loads(tmp_path, pair):
    (tmp_path / "link.mat").symlink_to(pair[0])
    assert load_pair(tmp_path / "link.mat", pair[1]).n_images == N


def _patch_v5(raw: bytes, dims: tuple[int, ...]) -> bytes:
    """Overwrite the dimensions of the first (uncompressed) variable of a v5 file."""
    out = bytearray(raw)
    off = 128 + 8 + 16  # file header, miMATRIX tag, array flags
    assert struct.unpack("<II", out[off:off + 8]) == (5, 4 * len(dims))
    struct.pack_into(f"<{len(dims)}i", out, off + 8, *dims)
    return bytes(out)


def _v5_bytes(**variables) -> bytes:
    bio = io.BytesIO()
    savemat(bio, variables)
    return bio.getvalue()


def _compress_v5(raw: bytes) -> bytes:
    comp = zlib.compress(raw[128:])
    return raw[:128] + struct.pack("<II", 15, len(comp)) + comp


HUGE = {  # name: file bytes builder, words in the message
    "v5 declares 2.5 GiB in 200 bytes": (lambda: _patch_v5(_v5_bytes(images=np.zeros((2, 3, 4), np.uint8)),
                                                           (30000, 30000, 3)), ["truncated or corrupt", "2.5 GiB"]),
    "v5 compressed declares 2.5 GiB": (lambda: _compress_v5(_patch_v5(_v5_bytes(images=np.zeros((2, 3, 4), np.uint8)),
                                                                      (30000, 30000, 3))), ["truncated or corrupt"]),
    "v5 declares 9 TiB": (lambda: _patch_v5(_v5_bytes(images=np.zeros((2, 3, 4), np.uint8)), (100000, 100000, 1000)),
                          ["limit"]),
    "v5 negative dimension": (lambda: _patch_v5(_v5_bytes(images=np.zeros((2, 3, 4), np.uint8)), (-1, 3, 4)),
                              ["negative"]),
    "v5 truncated half-way": (lambda: _v5_bytes(images=np.zeros((20, 30, 40), np.uint8))[:5000],
                              ["truncated"]),
    # compressed random data: within the deflate ratio, so only counting the inflated bytes tells
    "v5 compressed declares 64x its content": (
        lambda: _compress_v5(_patch_v5(_v5_bytes(images=np.random.default_rng(0).integers(
            0, 256, (4, 40, 50), np.uint8)), (4 * 64, 40, 50))), ["truncated or corrupt"]),
    "v4 declares 6.7 GiB": (lambda: struct.pack("<5i", 0, 30000, 30000, 0, 7) + b"images\0" + b"\0" * 64,
                            ["truncated or corrupt"]),
}


@pytest.mark.parametrize("case", list(HUGE))
def test_huge_declared_sizes_are_refused_without_allocating(tmp_path, pair, case):
    build, words = HUGE[case]
    bad = tmp_path / "huge.mat"
    bad.write_bytes(build())
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as e:
            load_pair(bad, pair[1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024**2, f"{peak / 1024**2:.0f} MiB allocated for a {bad.stat().st_size}-byte file"
    _one_line_error(e, "huge.mat", *words)


def _stim_bytes(resp: np.ndarray, istim: np.ndarray, compress: bool = False) -> bytes:
    """A Stringer-style recording file: struct `stim` with fields `resp` (trials x neurons) and `istim`."""
    bio = io.BytesIO()
    savemat(bio, {"stim": {"resp": resp, "istim": istim, "note": np.array(["x"], dtype=object)}},
            do_compression=compress)
    return bio.getvalue()


def _patch_stim_resp(raw: bytes, shape: tuple[int, int], dims: tuple[int, int]) -> bytes:
    """Overwrite the dimensions of the (uncompressed) field `stim.resp` declared `shape`."""
    old = struct.pack("<IIii", 5, 8, *shape)
    assert raw.count(old) == 1
    return raw.replace(old, struct.pack("<IIii", 5, 8, *dims))


@pytest.mark.parametrize("compress", [False, True])
def test_small_stim_struct_loads(tmp_path, pair, arrays, compress):
    f = tmp_path / "rec.mat"
    f.write_bytes(_stim_bytes(arrays["responses"], np.arange(1, N + 1, dtype=np.float64)[:, None], compress))
    s = load_pair(pair[0], f)
    np.testing.assert_allclose(s.responses, arrays["responses"], rtol=1e-6)


STIM_HUGE = {  # name: file bytes builder, words in the message
    "v5 stim.resp declares 240 GB": (lambda raw: _patch_stim_resp(raw, (N, K), (300000, 100000)),
                                     ["stim.resp", "(300000, 100000)", "truncated or corrupt"]),
    "v5 compressed stim.resp declares 240 GB": (
        lambda raw: _compress_v5(_patch_stim_resp(raw, (N, K), (300000, 100000))),
        ["stim.resp", "(300000, 100000)", "truncated or corrupt"]),
    "v5 stim.resp declares 2x its content": (lambda raw: _patch_stim_resp(raw, (N, K), (N, 16 * K)),
                                             ["stim.resp", "truncated or corrupt"]),
    "v5 stim.resp negative dimension": (lambda raw: _patch_stim_resp(raw, (N, K), (-1, K)),
                                        ["stim.resp", "negative"]),
    "v5 stim cut short": (lambda raw: raw[:300], ["stim", "truncated"]),
}


@pytest.mark.parametrize("case", list(STIM_HUGE))
def test_huge_struct_fields_are_refused_without_allocating(tmp_path, pair, arrays, case):
    build, words = STIM_HUGE[case]
    bad = tmp_path / "huge.mat"
    bad.write_bytes(build(_stim_bytes(arrays["responses"], np.arange(1, N + 1, dtype=np.float64)[:, None])))
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as e:
            load_pair(pair[0], bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2
    assert peak < 32 * 1024**2, f"{peak / 1024**2:.0f} MiB allocated for a {bad.stat().st_size}-byte file"
    _one_line_error(e, "huge.mat", *words)


def test_v73_dataset_without_stored_chunks_is_refused_quickly(tmp_path, pair):
    bad = tmp_path / "empty73.mat"
    with h5py.File(bad, "w", userblock_size=512) as f:
        ds = f.create_dataset("images", shape=(3000, 1000, 1000), dtype="u1", chunks=(1, 100, 100))
        ds.attrs["MATLAB_class"] = np.bytes_("uint8")
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as e:
        load_pair(bad, pair[1])
    assert time.perf_counter() - t0 < 2
    _one_line_error(e, "empty73.mat", "2.8 GiB", "0 bytes")


def test_highly_compressed_legit_file_still_loads(tmp_path, pair):
    dark = np.zeros((N, 68, 270), np.uint8)  # ~220 kB that deflates ~1000x: must not look corrupt
    savemat(tmp_path / "dark.mat", {"images": dark}, do_compression=True)
    assert (tmp_path / "dark.mat").stat().st_size < 2000
    s = load_pair(tmp_path / "dark.mat", pair[1])
    assert s.images.shape == (N, 1, 68, 270) and s.images.max() == 0


@pytest.mark.parametrize("how", ["external storage", "external link"])
def test_hdf5_data_in_other_files_is_never_read(tmp_path, pair, arrays, how):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(arrays["images"].tobytes())
    bad = tmp_path / "ext.mat"
    with h5py.File(bad, "w") as f:
        if how == "external storage":
            f.create_dataset("images", shape=(N, H, W), dtype="u1", external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
        else:
            f["images"] = h5py.ExternalLink(str(pair[0]), "images")
    with pytest.raises(ValueError) as e:
        load_pair(bad, pair[1])
    _one_line_error(e, "ext.mat", "other files", "expected the data inside this file")


def test_running_out_of_memory_is_a_value_error(tmp_path, pair, monkeypatch):
    import neuroalign.data.matio as matio

    def boom(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(matio, "read_v5", boom)
    big = tmp_path / "big.mat"
    savemat(big, {"responses": np.zeros((N, 800_000), np.float64)}, do_compression=True)
    with pytest.raises(ValueError) as e:
        read_mat_variables(big, ["responses"])
    _one_line_error(e, "big.mat", "not enough memory")


def test_float64_responses_become_float32_without_extra_copies(tmp_path, pair):
    rng = np.random.default_rng(0)
    resp = rng.random((400, 3000))  # 9.6 MB float64
    for i, (writer, orient) in enumerate(((_v5, resp), (_v5, np.ascontiguousarray(resp.T)), (_h5s, resp))):
        f = writer(tmp_path / f"r{i}.mat", responses=orient)
        imgs = _v5(tmp_path / "i.mat", images=rng.integers(0, 256, (400, 2, 3), dtype=np.uint8))
        tracemalloc.start()
        try:
            s = load_pair(imgs, f)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        np.testing.assert_allclose(s.responses, resp.astype(np.float32))
        assert s.responses.flags["C_CONTIGUOUS"]
        # the float64 array as read + its float32 conversion, nothing more (was 2x the float64 size)
        assert peak < 1.65 * resp.nbytes, f"{writer.__name__}: peak {peak / resp.nbytes:.2f} x the float64 size"


def test_peek_lists_without_reading(tmp_path, arrays):
    f = _v5(tmp_path / "x.mat", images=arrays["images"], other=np.zeros(3))
    info = peek_mat(f)
    assert info.variables["images"] == ((N, H, W), "uint8") and info.stored["images"][1] == "none"


# ---------------------------------------------------------------------------------------------
# subject names


@pytest.mark.parametrize("bad", ["", "   ", "../x", "a/b", "a\\b", ".hidden", "..", "x..y", "con", "NUL.txt",
                                 "Com1", "a:b", "what?", "trailing.", " lead", "zero\u200bwidth", "tab\tname",
                                 "x" * 101, "é" * 101, "鼠" * 70])
def test_unusable_names_are_refused(bad):
    with pytest.raises(ValueError, match="subject name"):
        check_subject_name(bad)


@pytest.mark.parametrize("good", ["M6", "sim-M1", "mouse 7", "a.b", "Maus-Zoë", "鼠1", "x" * 100, "鼠" * 66,
                                  "consul", "com10"])
def test_usable_names(good):
    assert check_subject_name(good) == good


def test_names_are_nfc_normalised_on_import(tmp_path, pair):
    store = SubjectStore(tmp_path / "root")
    decomposed = unicodedata.normalize("NFD", "Zoë")
    info = store.import_subject(decomposed, *pair)
    assert info.name == "Zoë" and os.listdir(store.root) == ["Zoë"]
    with pytest.raises(FileExistsError):
        store.import_subject("Zoë", *pair)


# ---------------------------------------------------------------------------------------------
# atomic import


def _leftovers(root: Path) -> list[str]:
    return sorted(os.listdir(root)) if root.exists() else []


@pytest.mark.parametrize("exc", ['RuntimeError("disk on fire")', 'OSError(28, "No space left")', "KeyboardInterrupt()"])
def test_interrupted_import_leaves_nothing(tmp_path, pair, monkeypatch, exc):
    """The import service writes in its sandboxed worker: a write that fails there half-way (responses.mat
    partly written) is a one-line refusal, and neither the subject nor the staging folder is left."""
    from worker_support import failing_second_save, in_worker

    in_worker(monkeypatch, failing_second_save(exc))
    store = SubjectStore(tmp_path / "root")
    (tmp_path / "root").mkdir()
    with pytest.raises((ValueError, OSError)) as info:
        store.import_subject("new", *pair)
    assert "\n" not in str(info.value)
    if exc.startswith("RuntimeError"):
        assert "writing subject 'new'" in str(info.value) and "disk on fire" in str(info.value)
    assert _leftovers(store.root) == [] and store.list() == []


@pytest.mark.parametrize("exc", [RuntimeError("lost"), KeyboardInterrupt(), OSError(28, "No space left")])
def test_interruption_at_the_rename_leaves_nothing(tmp_path, pair, monkeypatch, exc):
    """Ctrl-C (or any failure) in the server while it publishes the staged subject: nothing is left."""
    import neuroalign.data.writer as writer_mod

    real = os.rename

    def failing(src, dst):
        if ".tmp-" in str(src):
            raise exc
        return real(src, dst)

    monkeypatch.setattr(writer_mod.os, "rename", failing)
    store = SubjectStore(tmp_path / "root")
    with pytest.raises(type(exc)):
        store.import_subject("new", *pair)
    assert _leftovers(store.root) == []


def test_ctrl_c_while_the_worker_stages_stops_it_and_leaves_nothing(tmp_path, pair, monkeypatch):
    """Ctrl-C in the server while the worker parses and writes: the worker (its own session, so it would not
    get the terminal's signal) is killed and the staging folder removed."""
    import _thread

    from worker_support import in_worker

    marker = tmp_path / "worker.pid"
    in_worker(monkeypatch, f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)")

    def interrupt_once_the_worker_runs() -> None:  # not on a fixed timer: on a loaded machine the server may
        deadline = time.monotonic() + 50            # still be before the worker (e.g. inside h5py) after 1.5 s
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        _thread.interrupt_main()

    # a process started in the background by a non-interactive shell has SIGINT ignored, and then
    # interrupt_main() does nothing: give this one Python's own handler, as a terminal would
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt_once_the_worker_runs, daemon=True).start()
        store = SubjectStore(tmp_path / "root")
        with pytest.raises(KeyboardInterrupt):
            store.import_subject("new", *pair)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert _leftovers(store.root) == []
    pid = int(marker.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_failure_at_the_final_rename_leaves_nothing(tmp_path, pair, monkeypatch):
    store = SubjectStore(tmp_path / "root")
    real_rename = os.rename

    def failing_rename(src, dst):
        if ".tmp-" in str(src):
            raise OSError(5, "Input/output error")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError):
        store.import_subject("new", *pair)
    assert _leftovers(store.root) == []


def test_folder_created_meanwhile_is_never_replaced(tmp_path, arrays, pair):
    store = SubjectStore(tmp_path / "root")
    subject = load_pair(*pair, "x")

    def someone_else(path):  # runs while the subject is written to the temporary folder
        (store.root / "new").mkdir()
        (store.root / "new" / "theirs.txt").write_text("keep me")

    with pytest.raises(FileExistsError, match="'new' already exists"):
        store.write_subject("new", subject, extra_files={"x.txt": someone_else})
    assert _leftovers(store.root) == ["new"] and os.listdir(store.root / "new") == ["theirs.txt"]


def test_empty_folder_or_dangling_link_blocks_the_name(tmp_path, pair):
    store = SubjectStore(tmp_path / "root")
    store.root.mkdir()
    (store.root / "empty").mkdir()
    (store.root / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("empty", "dangling"):
        with pytest.raises(FileExistsError):
            store.import_subject(name, *pair)
    assert _leftovers(store.root) == ["dangling", "empty"]


def test_concurrent_imports_of_one_name_have_one_winner(tmp_path, pair):
    store = SubjectStore(tmp_path / "root")
    subject = load_pair(*pair, "x")
    barrier = threading.Barrier(2, timeout=10)
    results: list[str] = []

    def write():
        try:
            store.write_subject("race", subject, extra_files={"sync": lambda p: barrier.wait()})
            results.append("ok")
        except FileExistsError:
            results.append("exists")

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["exists", "ok"]
    assert _leftovers(store.root) == ["race"] and store.load("race").n_images == N


def test_temporary_folders_of_dead_writers_are_removed(tmp_path, pair):
    root = tmp_path / "root"
    root.mkdir()
    dead = root / ".tmp-old-999999999-0123abcd"  # no such pid
    alive = root / ".tmp-busy-1-89abcdef"  # pid 1 always runs
    recent = root / ".tmp-recent-999999998-00000000"
    for d in (dead, alive, recent):
        (d / "Data").mkdir(parents=True)
    old = time.time() - 7200
    os.utime(dead, (old, old))
    os.utime(alive, (old, old))
    SubjectStore(root).import_subject("new", *pair)
    assert _leftovers(root) == sorted([alive.name, recent.name, "new"])


# ---------------------------------------------------------------------------------------------
# data roots


def test_missing_root_lists_nothing_and_import_creates_it(tmp_path, pair):
    store = SubjectStore(tmp_path / "not" / "there")
    assert store.list() == [] and store.names() == []
    store.import_subject("M1", *pair)
    assert store.names() == ["M1"]


def test_root_that_is_a_file(tmp_path, pair, capsys):
    root = tmp_path / "root.txt"
    root.write_text("not a folder")
    store = SubjectStore(root)
    with pytest.raises(ValueError, match="not a folder"):
        store.list()
    with pytest.raises(ValueError, match="not a folder"):
        store.import_subject("M1", *pair)
    for argv in (["list"], ["import", "--name", "M1", "--images", str(pair[0]), "--responses", str(pair[1])]):
        assert main([*argv, "--data-dir", str(root)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: data root") and err.count("\n") == 1


def test_junk_in_the_root_is_skipped_or_reported(tmp_path, pair, capsys):
    root = tmp_path / "root"
    store = SubjectStore(root)
    store.import_subject("good", *pair)
    (root / "README.txt").write_text("hi")
    (root / "stray.mat").write_bytes(b"junk")
    (root / ".DS_Store").write_bytes(b"\0\1")
    (root / ".git").mkdir()
    (root / "empty").mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "a.txt").write_text("x")
    (root / "half" / "Data").mkdir(parents=True)
    _v5(root / "half" / "Data" / "images.mat", images=np.zeros((3, 4, 5), np.uint8))
    (root / "broken" / "Data").mkdir(parents=True)
    (root / "broken" / "Data" / "images.mat").write_bytes(b"junk")
    (root / "broken" / "Data" / "responses.mat").write_bytes(b"junk")
    (root / "odd..name" / "Data").mkdir(parents=True)
    for f in pair:
        (root / "odd..name" / "Data" / f.name).write_bytes(f.read_bytes())
    (root / "bad-sidecar").mkdir()
    (root / "bad-sidecar" / "Data").symlink_to(root / "good" / "Data")
    (root / "bad-sidecar" / "subject.json").write_text('["not", "an", "object"]')
    (root / "loop").symlink_to(root / "loop")
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    outside = tmp_path / "elsewhere"
    (outside / "Data").mkdir(parents=True)
    for f in pair:
        (outside / "Data" / f.name).write_bytes(f.read_bytes())
    (root / "linked").symlink_to(outside)

    infos = {i.name: i for i in store.list()}
    assert sorted(infos) == ["bad-sidecar", "broken", "good", "half", "linked", "odd..name"]
    for ok in ("good", "odd..name", "linked", "bad-sidecar"):
        assert infos[ok].error is None and infos[ok].n_images == N, infos[ok]
    assert "incomplete" in infos["half"].error
    assert "not a MATLAB .mat file" in infos["broken"].error and "\n" not in infos["broken"].error
    assert store.names() == ["bad-sidecar", "broken", "good", "linked", "odd..name"]
    assert store.load("odd..name").n_images == N
    assert main(["list", "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "broken" in out and "unreadable" in out and "README" not in out
    with pytest.raises(FileNotFoundError, match="symbolic link"):
        store.delete("linked")
    assert (outside / "Data" / "images.mat").exists()


# ---------------------------------------------------------------------------------------------
# CLI: one line, exit code 2


@pytest.mark.parametrize("case", ["random bytes", "zero-byte", "text", "v5 declares 2.5 GiB", "NaN", "folder"])
def test_cli_validate_bad_files_one_line_exit_2(tmp_path, arrays, pair, capsys, case):
    d = tmp_path / "in"
    d.mkdir()
    if case in ("random bytes", "zero-byte", "text", "folder"):
        bad = _not_mat(d, case)
    elif case == "NaN":
        bad = _v5(d / "nan.mat", images=np.full((N, H, W), np.nan))
    else:
        bad = d / "huge.mat"
        bad.write_bytes(HUGE["v5 declares 2.5 GiB in 200 bytes"][0]())
    assert main(["validate", "--images", str(bad), "--responses", str(pair[1])]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1 and bad.name in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_cli_import_os_errors_are_one_line(tmp_path, pair, capsys, monkeypatch):
    from worker_support import in_worker

    in_worker(monkeypatch, """
import neuroalign.data.writer as _wm
def _full_disk(path, variables):
    raise OSError(28, "No space left on device", str(path))
_wm.save_mat = _full_disk
""")
    root = tmp_path / "root"
    assert main(["import", "--data-dir", str(root), "--name", "M1", "--images", str(pair[0]),
                 "--responses", str(pair[1])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No space left on device") and err.count("\n") == 1
    assert str(root / "M1" / "Data" / "images.mat") in err
    assert _leftovers(root) == []


@pytest.mark.parametrize("name,ok", [("../x", False), ("a/b", False), ("", False), (".hidden", False),
                                     ("con", False), ("x" * 300, False), ("Maus Zoë 鼠", True)])
def test_cli_import_names(tmp_path, pair, capsys, name, ok):
    root = tmp_path / "root"
    rc = main(["import", "--data-dir", str(root), "--name", name, "--images", str(pair[0]),
               "--responses", str(pair[1])])
    captured = capsys.readouterr()
    if ok:
        assert rc == 0 and SubjectStore(root).names() == [name]
    else:
        assert rc == 2 and captured.err.startswith("error: subject name") and _leftovers(root) == []
        assert not (tmp_path / "x").exists()


def test_cli_list_survives_undecodable_folder_names(tmp_path, pair, capsys):
    root = tmp_path / "root"
    SubjectStore(root).import_subject("ok", *pair)
    odd = os.fsencode(root) + b"/bad\xff\xfename"
    os.makedirs(odd + b"/Data")
    for f in pair:
        with open(odd + b"/Data/" + f.name.encode(), "wb") as fh:
            fh.write(f.read_bytes())
    assert main(["list", "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "bad\\udcff\\udcfename" in out and "ok" in out
