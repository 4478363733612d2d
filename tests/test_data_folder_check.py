"""Subject folders placed in the data folder by hand are checked once in the sandbox (issue 20 item 2).

A folder this package did not write is never parsed in-process before the sandboxed check passed:
a file that crashes its parser ends only the check worker, the folder is listed with the reason,
and `train --subjects` fails with one line. The result is recorded per folder, keyed by the MAT
files' size, mtime, inode and device. Files are generated here.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from neuroalign.data import folder_check, sandbox
from neuroalign.data.store import SubjectStore

N, K, H, W = 12, 5, 32, 40
RNG = np.random.default_rng(5)
REPO = Path(__file__).resolve().parents[1]


def _pad8(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 8)


def nested_cell_v5(path: Path, name: str = "images", depth: int = 200_000) -> Path:
    """A zlib-compressed v5 file whose variable is a cell in a cell ... `depth` deep (a double at the bottom):
    scipy's reader recurses once per level in C and overflows the stack (SIGSEGV) at this depth."""
    def head(nbytes: int, label: bytes) -> bytes:
        return (struct.pack("<II", 14, nbytes) + struct.pack("<IIII", 6, 8, 1, 0) + struct.pack("<IIii", 5, 8, 1, 1)
                + struct.pack("<II", 1, len(label)) + _pad8(label))

    leaf = (struct.pack("<IIII", 6, 8, 6, 0) + struct.pack("<IIii", 5, 8, 1, 1) + struct.pack("<II", 1, 0)
            + struct.pack("<II", 9, 8) + struct.pack("<d", 1.0))
    leaf = struct.pack("<II", 14, len(leaf)) + leaf
    sizes, child = [], len(leaf)
    for level in range(depth - 1, -1, -1):
        label = name.encode() if level == 0 else b""
        nbytes = 40 + len(_pad8(label)) + child
        sizes.append((nbytes, label))
        child = 8 + nbytes
    comp = zlib.compressobj()
    body = b"".join([comp.compress(head(n, label)) for n, label in reversed(sizes)] + [comp.compress(leaf), comp.flush()])
    header = b"MATLAB 5.0 MAT-file, nested cell".ljust(116) + b"\0" * 8 + b"\x00\x01IM"
    path.write_bytes(header + struct.pack("<II", 15, len(body)) + body)
    return path


def _hand_placed(root: Path, name: str, images: np.ndarray | None = None) -> Path:
    data = root / name / "Data"
    data.mkdir(parents=True)
    savemat(data / "images.mat", {"images": RNG.integers(0, 256, (N, H, W), dtype=np.uint8) if images is None
                                  else images})
    savemat(data / "responses.mat", {"responses": RNG.random((N, K))})
    return root / name


@pytest.fixture
def count_checks(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = sandbox.check_pair

    def counting(images, responses, **kw):
        calls.append(Path(images).parent.parent.name)
        return real(images, responses, **kw)

    monkeypatch.setattr(sandbox, "check_pair", counting)
    return calls


def test_a_crashing_folder_is_refused_in_one_line_by_train_and_listed_with_its_reason(tmp_path):
    root = tmp_path / "data"
    evil = _hand_placed(root, "evil")
    nested_cell_v5(evil / "Data" / "images.mat")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "neuroalign"]
    train = subprocess.run(base + ["train", "--subjects", "evil", "--data-dir", str(root), "--runs-dir",
                                   str(tmp_path / "runs"), "--epochs", "1"],
                           capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert train.returncode == 2, (train.returncode, train.stderr[-2000:])
    err = train.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in train.stderr, train.stderr
    assert err.startswith("error: subject folder 'evil' was refused by the sandboxed check of its files"), err
    assert "SIGSEGV" in err
    # the refusal is recorded: listing shows it without another check, in-process and safely
    listing = subprocess.run(base + ["list", "--data-dir", str(root)], capture_output=True, text=True,
                             timeout=120, env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "evil" in listing.stdout and "refused by the sandboxed check of its files" in listing.stdout
    info = SubjectStore(root).info("evil")
    assert info.read_from == "check" and "killed (SIGSEGV)" in info.error


def test_a_hand_placed_folder_is_checked_once_and_again_when_a_file_changes(tmp_path, count_checks):
    root = tmp_path / "data"
    folder = _hand_placed(root, "M6")
    store = SubjectStore(root)
    assert [i.name for i in store.list() if i.error is None] == ["M6"]
    assert count_checks == ["M6"]
    store.list()
    subject = store.load("M6")
    assert subject.n_images == N and count_checks == ["M6"]  # recorded: not checked again
    record = folder_check.current_record(folder)
    assert record["ok"] and record["how"] == "sandbox"
    # a file replaced: checked again; a refused replacement is listed with its reason
    savemat(folder / "Data" / "images.mat", {"images": np.full((N, H, W), np.nan)})
    info = store.info("M6")
    assert count_checks == ["M6", "M6"]
    assert info.error.startswith("refused by the sandboxed check of its files: images.mat: variable 'images'")
    assert "NaN" in info.error
    with pytest.raises(ValueError, match=r"^subject folder 'M6' was refused by the sandboxed check of its files"):
        store.load("M6")
    assert count_checks == ["M6", "M6"]


def test_a_copy_of_a_checked_folder_is_checked_again(tmp_path, count_checks):
    """The record is keyed by inode and device too: a copy keeping sizes and mtimes is other files."""
    import shutil

    root = tmp_path / "data"
    _hand_placed(root, "a")
    SubjectStore(root).list()
    shutil.copytree(root / "a", root / "b", copy_function=shutil.copy2)  # keeps mtimes
    SubjectStore(root).load("b")
    assert sorted(count_checks) == ["a", "b"]


def test_folders_this_package_writes_are_never_checked(tmp_path, count_checks):
    root, src = tmp_path / "data", tmp_path / "src"
    src.mkdir()
    savemat(src / "i.mat", {"images": RNG.integers(0, 256, (N, H, W), dtype=np.uint8)})
    savemat(src / "r.mat", {"responses": RNG.random((N, K))})
    store = SubjectStore(root)
    store.import_subject("imported", src / "i.mat", src / "r.mat")
    store.list()
    store.load("imported")
    assert count_checks == []
    assert folder_check.current_record(root / "imported")["how"] == "written"
    assert os.listdir(root) == ["imported"]  # no check records for our own folders
    # a copy keeping sizes and mtimes (cp -a, or a folder shared by someone else) is not what was written
    import shutil

    shutil.copytree(root / "imported", root / "copy", copy_function=shutil.copy2)
    assert store.load("copy").n_images == N and count_checks == ["copy"]
    store.delete("copy")
    store.delete("imported")
    assert not (root / folder_check.CHECKS_DIR).exists() and store.is_empty()
