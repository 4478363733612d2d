"""Issue 20 item 8: an import that meets a full disk says so in one line naming the file it was writing
(where it would have been, not a temporary name), and leaves nothing behind -- through the CLI and the
store (the dashboard's Save calls `SubjectStore.import_subject`), for MAT v5 and v7.3 (HDF5) writes.

The import service writes an import's files in its sandboxed worker (issue 19 / 22: parsed once, there),
so the full disk is made there (`worker_support.in_worker`); the worker reports the file as it would
have been, and the server raises that one-line OSError."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from scipy.io import savemat

from neuroalign import io_utils
from neuroalign.cli import main
from neuroalign.data import SubjectStore
from neuroalign.data.matio import write as matio_write
from worker_support import HDF5_TO_A_FULL_DISK, fsync_full_at, in_worker


@pytest.fixture
def pair(tmp_path, make_tiny_arrays):
    arrays = make_tiny_arrays(n_images=40, n_neurons=12, hw=(36, 72))
    src = tmp_path / "src"
    src.mkdir()
    savemat(src / "imgs.mat", {"images": arrays["images"]})
    savemat(src / "resp.mat", {"responses": arrays["responses"], "responses_repeats": arrays["repeats"]})
    return src / "imgs.mat", src / "resp.mat"


def _full_at(monkeypatch, name: str) -> None:
    """The disk fills up when the atomic write of `name` is flushed (os.fsync raises ENOSPC)."""
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(f".{name}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(io_utils.os, "fsync", fsync)


def _hdf5_to_a_full_disk(monkeypatch) -> None:
    """Every variable goes to MAT v7.3, whose HDF5 writes land on /dev/full (real ENOSPC from the library)."""
    real = matio_write.write_mat_v73

    def write(path, variables):
        os.symlink("/dev/full", path)
        return real(path, variables)

    monkeypatch.setattr(matio_write, "V5_MAX_VARIABLE_BYTES", 0)
    monkeypatch.setattr(matio_write, "write_mat_v73", write)



@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc to see which file is flushed")
@pytest.mark.parametrize("name", ["images.mat", "responses.mat", "subject.json"])
def test_cli_import_on_a_full_disk_is_one_line_naming_the_file(pair, tmp_path, monkeypatch, capsys, name):
    root = tmp_path / "data"
    in_worker(monkeypatch, fsync_full_at(name))
    code = main(["import", "--data-dir", str(root), "--name", "M6", "--images", str(pair[0]),
                 "--responses", str(pair[1])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    where = root / "M6" / ("Data/" if name.endswith(".mat") else "") / name
    assert "No space left on device" in err[0] and str(where) in err[0] and ".tmp-" not in err[0], err[0]
    assert [p.name for p in root.iterdir()] == []  # no subject, no temporary folder
    assert SubjectStore(root).list() == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_store_import_of_a_v73_file_on_a_full_disk(pair, tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    in_worker(monkeypatch, HDF5_TO_A_FULL_DISK)
    with pytest.raises(OSError) as info:
        SubjectStore(root).import_subject("M7", *pair)
    exc = info.value
    assert exc.errno == errno.ENOSPC and exc.filename == str(root / "M7" / "Data" / "images.mat")
    assert "\n" not in str(exc) and "Unable to" not in str(exc)  # not HDF5's multi-line report
    assert [p.name for p in root.iterdir()] == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_cli_import_of_a_v73_file_on_a_full_disk(pair, tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    in_worker(monkeypatch, HDF5_TO_A_FULL_DISK)
    code = main(["import", "--data-dir", str(root), "--name", "M8", "--images", str(pair[0]),
                 "--responses", str(pair[1])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: No space left on device ({root / 'M8' / 'Data' / 'images.mat'})"], err
    assert [p.name for p in root.iterdir()] == []


def test_save_mat_v73_on_a_full_disk_names_the_file(tmp_path, monkeypatch):
    _hdf5_to_a_full_disk(monkeypatch)
    with pytest.raises(OSError) as info:
        matio_write.save_mat(tmp_path / "x.mat", {"a": np.zeros((4, 4), np.float32)})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "x.mat")
    assert list(tmp_path.iterdir()) == []
