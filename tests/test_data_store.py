"""SubjectStore: cheap listing, validation, atomic import with name rules, delete inside the root only."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy.io import savemat

from neuroalign.data import SubjectStore, load_subject
from neuroalign.data.matio import write_mat_v73


def _pair(tmp_path, arrays, fmt="v5"):
    src = tmp_path / "upload"
    src.mkdir(exist_ok=True)
    write = savemat if fmt == "v5" else write_mat_v73
    # the natimg2800 style: imgs H x W x N uint8, responses neurons x trials with istim
    n = arrays["images"].shape[0]
    trials = np.concatenate([arrays["repeats"][0], arrays["repeats"][1]])
    istim = np.concatenate([np.arange(1, n + 1), np.arange(1, n + 1)]).astype(np.float64)
    write(src / "imgs.mat", {"imgs": np.moveaxis(arrays["images"], 0, 2), "junk": np.zeros((3, 3))})
    write(src / "resp.mat", {"responses": trials.T, "istim": istim})
    return src / "imgs.mat", src / "resp.mat"


def test_list_reference_folder_without_sidecar(tiny_subject_root):
    store = SubjectStore(tiny_subject_root)
    (tiny_subject_root / "notes").mkdir()  # not a subject
    (tiny_subject_root / ".tmp-x" / "Data").mkdir(parents=True)  # leftover temp folder: hidden
    infos = store.list()
    assert [i.name for i in infos] == ["tiny"] == store.names()
    i = infos[0]
    assert (i.n_images, i.n_neurons, i.image_shape, i.has_repeats, i.format, i.read_from) == \
        (60, 40, (68, 270), True, "v5", "header")


def test_list_reports_broken_subject_instead_of_raising(tiny_subject_root):
    bad = tiny_subject_root / "broken" / "Data"
    bad.mkdir(parents=True)
    (bad / "images.mat").write_bytes(b"nonsense" * 100)
    (bad / "responses.mat").write_bytes(b"nonsense" * 100)
    infos = {i.name: i for i in SubjectStore(tiny_subject_root).list()}
    assert infos["broken"].error and "images.mat" in infos["broken"].error
    assert infos["tiny"].error is None


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_validate_and_import_are_atomic_and_canonical(tmp_path, make_tiny_arrays, fmt):
    arrays = make_tiny_arrays(n_images=30, n_neurons=20)
    imgs, resp = _pair(tmp_path, arrays, fmt)
    store = SubjectStore(tmp_path / "root")
    report = store.validate(imgs, resp)
    assert (report.image_layout, report.response_orientation, report.n_images, report.n_neurons) == \
        ("HWN", "neurons x trials", 30, 20)
    assert report.has_repeats and any("HWN" in line for line in report.summary_lines())
    info = store.import_subject("M7", imgs, resp)
    assert (info.name, info.n_images, info.n_neurons, info.has_repeats, info.read_from) == ("M7", 30, 20, True, "sidecar")
    assert sorted(os.listdir(store.root)) == ["M7"]  # no temp folder left behind
    s = store.load("M7")
    np.testing.assert_allclose(s.images[:, 0], arrays["images"] / 255.0, atol=1e-6)
    np.testing.assert_allclose(s.responses, arrays["responses"], rtol=1e-5)
    np.testing.assert_array_equal(s.repeats, arrays["repeats"])
    side = json.loads((store.root / "M7" / "subject.json").read_text())
    assert side["source"]["image_layout"] == "HWN" and side["source"]["format"] == fmt
    # the stored files are what the reference code reads: images N x H x W, responses N x K
    from scipy.io import loadmat
    assert loadmat(store.root / "M7" / "Data" / "images.mat")["images"].shape == (30, 68, 270)


def test_import_refuses_bad_names_and_existing(tmp_path, tiny_subject_root, make_tiny_arrays):
    imgs, resp = _pair(tmp_path, make_tiny_arrays(n_images=20, n_neurons=5))
    store = SubjectStore(tiny_subject_root)
    for bad in ["", "  ", "a/b", "a\\b", "..", "x..y", ".hidden", "../escape"]:
        with pytest.raises(ValueError, match="subject name"):
            store.import_subject(bad, imgs, resp)
    with pytest.raises(FileExistsError, match="'tiny' already exists"):
        store.import_subject("tiny", imgs, resp)
    assert store.names() == ["tiny"]


def test_failed_import_leaves_nothing(tmp_path, tiny_subject_root):
    bad = tmp_path / "bad.mat"
    savemat(bad, {"responses": np.ones((3, 3))})
    store = SubjectStore(tiny_subject_root)
    with pytest.raises(ValueError, match="bad.mat: no image variable"):
        store.import_subject("new", bad, bad)
    assert sorted(os.listdir(tiny_subject_root)) == ["tiny"]


def test_stale_sidecar_is_ignored(tiny_subject_root):
    store = SubjectStore(tiny_subject_root)
    folder = tiny_subject_root / "tiny"
    (folder / "subject.json").write_text(json.dumps({
        "n_images": 999, "n_neurons": 1, "image_shape": [1, 1], "has_repeats": False, "format": "v5",
        "files": {"images.mat": [1, 1], "responses.mat": [1, 1]}, "simulated": True}))
    info = store.info("tiny")
    assert (info.n_images, info.read_from, info.simulated) == (60, "header", True)


def test_delete_only_inside_root(tmp_path, tiny_subject_root):
    outside = tmp_path / "outside" / "Data"
    outside.mkdir(parents=True)
    (tiny_subject_root / "link").symlink_to(tmp_path / "outside")
    store = SubjectStore(tiny_subject_root)
    with pytest.raises(FileNotFoundError):
        store.delete("link")
    assert outside.exists()
    with pytest.raises(ValueError):
        store.delete("../outside")
    store.delete("tiny")
    assert not (tiny_subject_root / "tiny").exists() and store.names() == []
    with pytest.raises(FileNotFoundError):
        store.delete("tiny")


def test_loaded_reference_layout_matches_direct_load(tiny_subject_root):
    store = SubjectStore(tiny_subject_root)
    a, b = store.load("tiny"), load_subject(tiny_subject_root / "tiny")
    assert a.data_hash == b.data_hash
    with pytest.raises(FileNotFoundError, match=r"subject 'nobody' not found in .* \(available: tiny\)"):
        store.load("nobody")


def test_list_stringer_recording_folder(tmp_path, make_tiny_arrays):
    arrays = make_tiny_arrays(n_images=20, n_neurons=6)
    data = tmp_path / "root" / "M170717" / "Data"
    data.mkdir(parents=True)
    savemat(data / "images.mat", {"imgs": np.moveaxis(arrays["images"], 0, 2)})
    trials = np.concatenate([arrays["repeats"][0], arrays["repeats"][1]])
    istim = np.concatenate([np.arange(1, 21), np.arange(1, 21)]).astype(float)
    savemat(data / "responses.mat", {"stim": {"resp": trials, "istim": istim}})
    (info,) = SubjectStore(tmp_path / "root").list()
    assert (info.n_images, info.n_neurons, info.has_repeats, info.read_from, info.error) == (20, 6, True, "load", None)


def test_first_start_demo_rule_is_an_empty_root(tmp_path, monkeypatch):
    import neuroalign.data.store as store_mod

    root = tmp_path / "root"
    store = SubjectStore(root)
    made = []
    monkeypatch.setattr(store_mod, "make_demo_subjects", lambda r, **kw: made.append(r) or ["sim-M1"])
    assert store.is_empty()  # a root that does not exist yet
    root.mkdir()
    (root / "notes.txt").write_text("not a subject")
    assert not store.is_empty() and store.ensure_demo() == [] and made == []  # any entry: no demo
    (root / "notes.txt").unlink()
    assert store.is_empty() and store.ensure_demo() == ["sim-M1"] and made == [store.root]


def test_demo_subjects_are_written_only_under_free_names(tmp_path):
    from neuroalign.data import make_demo_subjects
    from neuroalign.data.names import name_taken

    root = tmp_path / "root"
    root.mkdir()
    (root / "sim-M1").symlink_to(tmp_path / "nowhere")  # a dangling link takes the name too
    assert name_taken(root, "sim-M1") and not name_taken(root, "sim-M2")
    assert make_demo_subjects(root, size="tiny", names=("sim-M1",)) == []
    assert os.path.islink(root / "sim-M1") and sorted(p.name for p in root.iterdir()) == ["sim-M1"]


def test_pid_alive():
    import subprocess
    import sys

    from neuroalign.io_utils import pid_alive

    assert pid_alive(os.getpid())
    for gone in (None, "123", 0, -1, True, 2**70):
        assert not pid_alive(gone), gone
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)


def test_subject_info_read_from_and_its_old_name(tmp_path):
    """Issue 22 item 5: `SubjectInfo.source` (how the summary was read) was renamed `read_from`,
    since the sidecar's `source` is where the data came from; the old name still reads it."""
    from neuroalign.data.store import SubjectInfo

    info = SubjectInfo("m", str(tmp_path), 1, 2, (3, 4), False, "v5", False, "header")
    assert info.read_from == info.source == "header" and "read_from" in info.to_dict()
