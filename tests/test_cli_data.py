"""CLI data commands: list, validate, import, demo-data; bad input is one line on stderr, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy.io import savemat

from neuroalign.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_list_shows_counts(tiny_subject_root, capsys):
    assert main(["list", "--data-dir", str(tiny_subject_root)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("tiny"))
    assert line.split()[:6] == ["tiny", "60", "40", "68x270", "yes", "v5"]


def test_list_empty_root_hints_at_demo_data(tmp_path, capsys):
    assert main(["list", "--data-dir", str(tmp_path)]) == 0
    assert "demo-data" in capsys.readouterr().out


def test_data_dir_from_environment(tiny_subject_root, capsys, monkeypatch):
    monkeypatch.setenv("NEUROALIGN_DATA_DIR", str(tiny_subject_root))
    assert main(["list"]) == 0
    assert "tiny" in capsys.readouterr().out


def test_validate_ok_and_bad(tiny_subject_root, tmp_path, capsys):
    data = tiny_subject_root / "tiny" / "Data"
    assert main(["validate", "--images", str(data / "images.mat"), "--responses", str(data / "responses.mat")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok") and "60 images of 68 x 270" in out
    bad = tmp_path / "short.mat"
    savemat(bad, {"responses": np.ones((59, 40))})
    assert main(["validate", "--images", str(data / "images.mat"), "--responses", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: short.mat: responses have shape (59, 40)")
    assert main(["validate", "--images", str(tmp_path / "none.mat"), "--responses", str(bad)]) == 2
    assert "none.mat: file not found" in capsys.readouterr().err


def test_import_then_list(tiny_subject_root, capsys):
    data = tiny_subject_root / "tiny" / "Data"
    args = ["--images", str(data / "images.mat"), "--responses", str(data / "responses.mat"),
            "--data-dir", str(tiny_subject_root)]
    assert main(["import", "--name", "M6", *args]) == 0
    assert "imported M6: 60 images x 40 neurons (with repeats)" in capsys.readouterr().out
    assert (tiny_subject_root / "M6" / "Data" / "images.mat").is_file()
    assert main(["import", "--name", "M6", *args]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["import", "--name", "../evil", *args]) == 2
    assert "path separator" in capsys.readouterr().err
    assert main(["list", "--data-dir", str(tiny_subject_root)]) == 0
    assert "M6" in capsys.readouterr().out


def test_demo_data_creates_then_keeps(tmp_path, capsys):
    assert main(["demo-data", "--size", "tiny", "--data-dir", str(tmp_path)]) == 0
    assert "created sim-M1, sim-M2" in capsys.readouterr().out
    assert main(["demo-data", "--size", "tiny", "--data-dir", str(tmp_path)]) == 0
    assert "already exist" in capsys.readouterr().out
    assert main(["list", "--data-dir", str(tmp_path)]) == 0
    assert "simulated" in capsys.readouterr().out


def test_no_traceback_in_a_real_process(tmp_path):
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"\x00garbage" * 64)
    proc = subprocess.run([sys.executable, "-m", "neuroalign", "validate", "--images", str(junk),
                           "--responses", str(junk)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: junk.mat")


def test_import_v73_lists_source_format_and_paths(tmp_path, capsys):
    """Issue 12 item 2: `list` says the format the subject was imported from (v7.3; stored as v5)
    and the files it came from; subject.json records the absolute paths given."""
    import json

    from neuroalign.data import write_mat_v73

    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    write_mat_v73(src / "stim73.mat", {"images": rng.random((20, 40, 48)).astype(np.float32)})
    write_mat_v73(src / "resp73.mat", {"responses": rng.random((20, 6))})
    root = tmp_path / "root"
    assert main(["import", "--data-dir", str(root), "--name", "h5", "--images", str(src / "stim73.mat"),
                 "--responses", str(src / "resp73.mat")]) == 0
    capsys.readouterr()
    assert main(["list", "--data-dir", str(root)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("h5 "))
    assert row.split()[5] == "v7.3" and row.endswith("stim73.mat + resp73.mat")
    source = json.loads((root / "h5" / "subject.json").read_text())["source"]
    assert source["images_file"] == str(src / "stim73.mat") and source["format"] == "v7.3"
