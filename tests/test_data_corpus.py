"""A corpus of malformed imports, generated here (no committed binaries), through the CLI `import`
and its sandboxed check (issue 13 part 1): each case gives exit code 2 and one line with a
meaningful fragment, never a traceback; nothing appears in the data folder (nothing half-written);
and the check's worker process stays under 300 MB of resident memory (measured: its VmHWM).

Also the limits themselves: a check that runs past its time or memory limit is a one-line
rejection naming the file and the setting, and the worker imports no torch.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import scipy.sparse
from scipy.io import savemat

from neuroalign.cli import main
from neuroalign.data import sandbox, write_mat_v73
from neuroalign.data.store import SubjectStore
from test_data_hostile import HUGE, STIM_HUGE, _h5s, _not_mat, _stim_bytes, _v5
from test_data_import_limits import _v5_compressed_zeros, _v73_gzip_zeros

PEAK_LIMIT = 300 * 1024**2
N, K, H, W = 12, 5, 32, 40
RNG = np.random.default_rng(7)
IMAGES = RNG.integers(0, 256, (N, H, W), dtype=np.uint8)
RESPONSES = RNG.random((N, K))

Builder = Callable[[Path], tuple[Path, Path]]


def _good(d: Path) -> tuple[Path, Path]:
    return _v5(d / "images.mat", images=IMAGES), _v5(d / "responses.mat", responses=RESPONSES)


def _bad_images(make: Callable[[Path], Path]) -> Builder:
    return lambda d: (make(d), _good(d)[1])


def _bad_responses(make: Callable[[Path], Path]) -> Builder:
    return lambda d: (_good(d)[0], make(d))


def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name
    return make


def _truncated_v5(d: Path) -> Path:
    raw = _v5(d / "full.mat", responses=RNG.random((N, 400))).read_bytes()
    (d / "cut5.mat").write_bytes(raw[: len(raw) // 2])
    return d / "cut5.mat"


def _truncated_v73(keep: float) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        raw = write_mat_v73(d / "full73.mat", {"responses": RNG.random((N, 4000))}).read_bytes()
        (d / "cut73.mat").write_bytes(raw[: int(len(raw) * keep)])
        return d / "cut73.mat"
    return make


def _v73_magic_only(d: Path) -> Path:
    p = d / "fake73.mat"
    p.write_bytes(b"MATLAB 7.3 MAT-file".ljust(128, b" ") + RNG.bytes(2000))
    return p


def _v73_absurd_dims(d: Path) -> Path:
    p = d / "absurd73.mat"
    with h5py.File(p, "w", userblock_size=512) as f:
        ds = f.create_dataset("responses", shape=(2**31, 2**20), dtype="f8", chunks=(1, 1024))
        ds.attrs["MATLAB_class"] = np.bytes_("double")
    return p


def _v73_external(how: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        secret = d / "secret.bin"
        secret.write_bytes(RNG.bytes(N * K * 8))
        p = d / "ext.mat"
        with h5py.File(p, "w") as f:
            if how == "link":
                f["responses"] = h5py.ExternalLink(str(_good(d)[1]), "responses")
            else:
                f.create_dataset("responses", shape=(K, N), dtype="f8", external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
        return p
    return make


#: declared bytes of the HDF5 size-check bypass files: above the worker's 300 MB limit
BYPASS_BYTES = 360_000_000


def _h5_no_data(dtype: str, *, matlab_header: bool = False, filter_id: int | None = None) -> Callable[[Path], Path]:
    """Responses declaring BYPASS_BYTES of `dtype` with no data stored (no `MATLAB_class` attribute):
    plain HDF5, or v7.3 (a MATLAB header in the user block), optionally chunked through filter `filter_id`."""
    def make(d: Path) -> Path:
        p = d / "bypass.mat"
        itemsize = np.dtype(dtype).itemsize
        shape = (N, BYPASS_BYTES // itemsize // N)
        with h5py.File(p, "w", userblock_size=512 if matlab_header else 0) as f:
            if filter_id is None:
                f.create_dataset("responses", shape=shape, dtype=dtype)
            else:
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_chunk((N, 100_000))
                dcpl.set_filter(filter_id, h5py.h5z.FLAG_OPTIONAL, ())
                h5py.h5d.create(f.id, b"responses", h5py.h5t.py_create(np.dtype(dtype)),
                                h5py.h5s.create_simple(shape), dcpl=dcpl)
        if matlab_header:
            with open(p, "r+b") as fh:
                fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116))
        return p
    return make


def _link_to(target: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / "link.mat").symlink_to(target)
        return d / "link.mat"
    return make


def _bomb(fmt: str, rows: int) -> Callable[[Path], Path]:
    """Zeros that compress ~1000x: 3,000 x 10,000 float64 (240 MB declared) in a small file."""
    def make(d: Path) -> Path:
        writer = _v5_compressed_zeros if fmt == "v5" else _v73_gzip_zeros
        return writer(d / f"bomb_{fmt.replace('.', '')}.mat", "responses", rows, 10_000)
    return make


def _istim(ids: np.ndarray) -> Builder:
    """Responses per trial with `istim` ids, for N images of 68 x 270 (an unambiguous N x H x W layout)."""
    return lambda d: (_v5(d / "images.mat", images=RNG.integers(0, 256, (N, 68, 270), dtype=np.uint8)),
                      _v5(d / "istim.mat", responses=RNG.random((ids.size, K)), istim=ids.astype(np.float64)))


def _non_utf8_name(d: Path) -> Path:
    p = os.fsencode(d) + b"/resp\xff\xfe.mat"
    with open(p, "wb") as fh:
        fh.write(RNG.bytes(3000))
    return Path(os.fsdecode(p))


# name: (builder, fragment of the message)
CORPUS: dict[str, tuple[Builder, str]] = {
    # not MAT files at all
    "empty file": (_bad_responses(lambda d: _not_mat(d, "zero-byte")), "the file is empty"),
    "a folder": (_bad_images(lambda d: _not_mat(d, "folder")), "is a folder"),
    "symlink to /dev/zero": (_bad_responses(_link_to("/dev/zero")), "not a regular file"),
    "fifo": (_bad_responses(lambda d: _not_mat(d, "fifo")), "not a regular file"),
    "missing file": (_bad_images(lambda d: d / "nowhere.mat"), "file not found"),
    "wrong magic (random bytes)": (_bad_responses(lambda d: _not_mat(d, "random bytes")), "not a MATLAB .mat file"),
    "text file": (_bad_images(lambda d: _not_mat(d, "text")), "not a MATLAB .mat file"),
    "v7.3 header, no HDF5": (_bad_responses(_v73_magic_only), "no readable HDF5 content"),
    "non-UTF-8 file name": (_bad_responses(_non_utf8_name), "resp\\udcff\\udcfe.mat: not a MATLAB .mat file"),
    # truncated, or declaring more than the file holds
    "truncated v5": (_bad_responses(_truncated_v5), "cut5.mat: cannot read MAT v5 data"),
    "truncated v7.3 (half)": (_bad_responses(_truncated_v73(0.5)), "the file may be truncated"),
    "truncated v7.3 (90 %)": (_bad_responses(_truncated_v73(0.9)), "the file may be truncated"),
    "v5 declares 2.5 GiB in 200 bytes": (_bad_images(_write("huge.mat", HUGE["v5 declares 2.5 GiB in 200 bytes"][0]())),
                                         "the file holds only"),
    "v5 compressed declares 2.5 GiB": (_bad_images(_write("huge.mat", HUGE["v5 compressed declares 2.5 GiB"][0]())),
                                       "truncated or corrupt"),
    "v5 declares 9 TiB": (_bad_images(_write("huge.mat", HUGE["v5 declares 9 TiB"][0]())), "import size limit"),
    "v5 negative dimension": (_bad_images(_write("huge.mat", HUGE["v5 negative dimension"][0]())), "negative"),
    "v5 compressed, 64x its content": (
        _bad_images(_write("huge.mat", HUGE["v5 compressed declares 64x its content"][0]())), "truncated or corrupt"),
    "v4 declares 6.7 GiB": (_bad_images(_write("huge.mat", HUGE["v4 declares 6.7 GiB"][0]())), "truncated or corrupt"),
    "v5 struct field declares 240 GB": (
        _bad_responses(_write("rec.mat", STIM_HUGE["v5 stim.resp declares 240 GB"][0](
            _stim_bytes(RESPONSES, np.arange(1, N + 1, dtype=np.float64)[:, None])))), "stim.resp"),
    "v7.3 absurd dimensions, no data": (_bad_responses(_v73_absurd_dims), "import size limit"),
    "v5 compressed bomb (count mismatch)": (_bad_responses(_bomb("v5", 3_000)), "image count"),
    "v7.3 gzip bomb (count mismatch)": (_bad_responses(_bomb("v7.3", 3_000)), "image count"),
    # wrong kinds and dtypes
    "complex responses": (_bad_responses(lambda d: _v5(d / "c.mat", responses=RESPONSES + 1j)), "complex"),
    "char images": (_bad_images(lambda d: _v5(d / "c.mat", images="not an image")), "char"),
    "cell responses (v7.3)": (_bad_responses(lambda d: _h5s(d / "c.mat", responses=np.array([np.ones(3), "a"],
                                                                                          dtype=object))), "cell"),
    "struct responses": (_bad_responses(lambda d: _v5(d / "s.mat", responses={"a": np.ones(3)})), "struct"),
    "sparse responses": (_bad_responses(lambda d: _v5(d / "s.mat", responses=scipy.sparse.csc_matrix(RESPONSES))),
                         "sparse"),
    "bool responses, all false": (_bad_responses(lambda d: _v5(d / "b.mat", responses=np.zeros((N, K), bool))),
                                  "constant"),
    "missing variable": (_bad_responses(lambda d: _v5(d / "m.mat", spikes=RESPONSES)), "no variable 'responses'"),
    # values and shapes
    "zero-size images": (_bad_images(lambda d: _v5(d / "z.mat", images=np.zeros((0, H, W), np.uint8))), "empty"),
    "zero-size responses": (_bad_responses(lambda d: _v5(d / "z.mat", responses=np.zeros((N, 0)))), "empty"),
    "NaN responses": (_bad_responses(lambda d: _v5(d / "n.mat", responses=np.where(RESPONSES > 0.5, np.nan,
                                                                                   RESPONSES))), "NaN"),
    "Inf responses": (_bad_responses(lambda d: _v5(d / "i.mat", responses=np.where(RESPONSES > 0.5, np.inf,
                                                                                   RESPONSES))), "Inf"),
    "responses beyond float32": (_bad_responses(lambda d: _v5(d / "f.mat", responses=RESPONSES * 1e300)),
                                 "float32 range"),
    "constant responses": (_bad_responses(lambda d: _v5(d / "k.mat", responses=np.ones((N, K)))), "constant"),
    "images of 2x2 px": (lambda d: (_v5(d / "i.mat", images=IMAGES[:, :2, :2]), _good(d)[1]), "2 x 2 px"),
    "5 images": (lambda d: (_v5(d / "i.mat", images=IMAGES[:5]), _v5(d / "r.mat", responses=RESPONSES[:5])),
                 "expected at least 10"),
    "5-D images": (_bad_images(lambda d: _v5(d / "i.mat", images=IMAGES.reshape(N, 1, H, W, 1))), "rank 5"),
    "count mismatch": (_bad_responses(lambda d: _v5(d / "r.mat", responses=RESPONSES[:7])), "image count"),
    "transposed and mismatched": (_bad_responses(lambda d: _v5(d / "r.mat", responses=RESPONSES[:7].T)),
                                  "image count"),
    "istim out of range": (_istim(np.arange(N + 1, 2 * N + 1)), f"istim ids are all above the {N} images"),
    "istim negative": (_istim(-np.arange(1, N + 1)), "istim must hold 1-based integer image ids"),
    "istim not integer": (_istim(np.arange(1, N + 1) + 0.5), "istim must hold 1-based integer image ids"),
    # the HDF5 size check for every dtype and filter: no stored data, no MATLAB_class (issue 20 item 1)
    "hdf5 big-endian >f4, no data": (_bad_responses(_h5_no_data(">f4")), "the file holds only 0 bytes"),
    "v7.3 big-endian >f8, no data": (_bad_responses(_h5_no_data(">f8", matlab_header=True)),
                                     "the file holds only 0 bytes"),
    "hdf5 float16, no data": (_bad_responses(_h5_no_data("<f2")), "the file holds only 0 bytes"),
    "hdf5 long double, no data": (_bad_responses(_h5_no_data(np.dtype(np.longdouble).str)),
                                  "the file holds only 0 bytes"),
    "hdf5 n-bit filter, no data": (_bad_responses(_h5_no_data(">f4", filter_id=5)), "(nbit: at most 0 elements)"),
    "hdf5 unknown optional filter": (_bad_responses(_h5_no_data("<f4", filter_id=305)),
                                     "HDF5 filter 305, which this installation cannot decode"),
    "hdf5 external link": (_bad_responses(_v73_external("link")), "other files"),
    "hdf5 external storage": (_bad_responses(_v73_external("storage")), "other files"),
}


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A data folder holding one good subject (so the folder exists and must stay as it is)."""
    d = tmp_path_factory.mktemp("corpus-root")
    src = tmp_path_factory.mktemp("corpus-good")
    SubjectStore(d / "data").import_subject("existing", *_good(src))
    return d / "data"


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("case", list(CORPUS))
def test_malformed_import_is_refused_cleanly(tmp_path, root, case, capsys, caplog):
    build, fragment = CORPUS[case]
    images, responses = build(tmp_path)
    before = _tree(root)
    with caplog.at_level(logging.INFO, logger="neuroalign.data.sandbox"):
        rc = main(["import", "--data-dir", str(root), "--name", "newcomer", "--images", os.fspath(images),
                   "--responses", os.fspath(responses)])
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2, (rc, err, captured.out)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err + captured.out, err
    assert fragment.lower() in err.lower(), (fragment, err)
    assert _tree(root) == before  # nothing new, nothing half-written
    peaks = [r.peak_rss_bytes for r in caplog.records if hasattr(r, "peak_rss_bytes")]
    assert len(peaks) == 1 and peaks[0] is not None, peaks
    assert peaks[0] < PEAK_LIMIT, f"the check peaked at {peaks[0] / 1e6:.0f} MB"


def test_bomb_within_the_counts_is_refused_by_the_size_cap(tmp_path, root, capsys, monkeypatch, caplog):
    """A compressed bomb whose shape fits the images: refused from the headers by the (configured) cap."""
    monkeypatch.setenv("NEUROALIGN_MAX_IMPORT_BYTES", "100000000")
    images = _v5(tmp_path / "i.mat", images=RNG.integers(0, 256, (3_000, 32, 32), dtype=np.uint8))
    responses = _bomb("v5", 3_000)(tmp_path)
    with caplog.at_level(logging.INFO, logger="neuroalign.data.sandbox"):
        assert main(["import", "--data-dir", str(root), "--name", "b", "--images", str(images),
                     "--responses", str(responses)]) == 2
    err = capsys.readouterr().err
    assert "import size limit" in err and "NEUROALIGN_MAX_IMPORT_BYTES" in err and err.count("\n") == 1
    assert max(r.peak_rss_bytes for r in caplog.records if hasattr(r, "peak_rss_bytes")) < PEAK_LIMIT


# ---- the limits ------------------------------------------------------------------------------------


def test_time_limit_is_a_one_line_rejection(tmp_path, root, capsys, monkeypatch):
    monkeypatch.setenv(sandbox.SECONDS_ENV, "0.05")  # not even enough to start the worker
    images, responses = _good(tmp_path)
    before = _tree(root)
    assert main(["import", "--data-dir", str(root), "--name", "t", "--images", str(images),
                 "--responses", str(responses)]) == 2
    err = capsys.readouterr().err
    assert "exceeded the 0.05 s time limit (set NEUROALIGN_CHECK_SECONDS" in err and err.count("\n") == 1, err
    assert _tree(root) == before


def test_memory_limit_is_a_one_line_rejection(tmp_path, monkeypatch):
    """The header phase reads `istim` (40 MB here); with a 10 MB limit that is a refusal naming the file."""
    monkeypatch.setenv(sandbox.MEMORY_ENV, "10")
    n = 5_000_000
    images = _v5(tmp_path / "images.mat", images=IMAGES)
    responses = _v5(tmp_path / "big_istim.mat", responses=RESPONSES, istim=np.ones(n))
    with pytest.raises(sandbox.CheckLimitExceeded) as e:
        sandbox.check_pair(images, responses)
    msg = str(e.value)
    assert msg.startswith("the check of big_istim.mat exceeded the 10 MB memory limit") and "\n" not in msg, msg
    assert "NEUROALIGN_CHECK_MEMORY_MB" in msg
    sandbox.check_pair(*_good(tmp_path))  # a small good pair fits in the same 10 MB


def test_bad_limit_settings_are_one_line_errors(monkeypatch):
    monkeypatch.setenv(sandbox.MEMORY_ENV, "lots")
    with pytest.raises(ValueError, match="NEUROALIGN_CHECK_MEMORY_MB='lots' is not a number"):
        sandbox.check_limits()
    monkeypatch.setenv(sandbox.MEMORY_ENV, "300")
    monkeypatch.setenv(sandbox.SECONDS_ENV, "-1")
    with pytest.raises(ValueError, match="must be positive"):
        sandbox.check_limits()


def test_a_good_pair_passes_with_its_report_and_preview(tmp_path):
    images, responses = _good(tmp_path)
    result = sandbox.check_pair(images, responses, preview_path=tmp_path / "p.npz")
    assert (result.report.n_images, result.report.n_neurons, result.report.image_shape) == (N, K, (H, W))
    assert result.preview["images"].shape == (8, H, W) and result.preview["rows"].shape == (N, K)
    assert result.peak_rss_bytes < PEAK_LIMIT and result.limits.memory_mb == sandbox.DEFAULT_MEMORY_MB


_PROBE = """
import json, sys
from neuroalign.data import check_worker, sandbox
answer = check_worker._serve(json.loads(sys.argv[1]))
heavy = sorted(m for m in sandbox.FORBIDDEN_MODULES if m in sys.modules)
print(json.dumps({"ok": answer["ok"], "heavy": heavy, "top": sorted({m.split('.')[0] for m in sys.modules})}))
"""


def test_the_worker_imports_no_torch(tmp_path):
    import json

    images, responses = _good(tmp_path)
    request = {"op": "check", "images": str(images), "responses": str(responses), "min_side": 32,
               "memory_mb": 300, "seconds": 30}
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(request)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    probe = json.loads(out.strip().splitlines()[-1])
    assert probe["ok"] and probe["heavy"] == [], probe
    assert {"numpy", "scipy", "h5py", "neuroalign"} <= set(probe["top"])


def test_a_worker_that_dies_is_a_rejection(tmp_path, monkeypatch):
    """A parser crash (here: the worker kills itself with SIGSEGV) refuses the file, in one line."""
    monkeypatch.setattr(sandbox, "WORKER_ARGS", ("-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"))
    with pytest.raises(sandbox.CheckLimitExceeded) as e:
        sandbox.check_pair(*_good(tmp_path))
    assert str(e.value) == ("the check of images.mat + responses.mat was killed (SIGSEGV); the file cannot be "
                            "read safely and is refused")
