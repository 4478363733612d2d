"""Run-directory io: atomic status, append-only metrics, listing, interrupted detection, deletion."""

import json
import subprocess
import sys

import numpy as np
import pytest

from neuroalign.io_utils import atomic_write_json
from neuroalign.training import runs
from neuroalign.io_utils import start_ticks


def test_new_run_dirs_are_unique_and_sanitised(tmp_path):
    a = runs.new_run_dir(tmp_path, "sim M1/../x")
    b = runs.new_run_dir(tmp_path, "sim M1/../x")
    assert a != b and a.parent == tmp_path and b.parent == tmp_path
    assert "/" not in a.name and " " not in a.name


def test_status_roundtrip_keeps_fields(tmp_path):
    d = runs.new_run_dir(tmp_path, "s")
    runs.write_status(d, "running", "epoch 1", progress=0.1, epoch=1, epochs=10)
    runs.write_status(d, "finished", "done", progress=1.0)
    st = runs.read_status(d)
    assert st["state"] == "finished" and st["epochs"] == 10 and st["progress"] == 1.0
    with pytest.raises(ValueError):
        runs.write_status(d, "exploded")


def test_metrics_append_only_and_torn_line_skipped(tmp_path):
    d = runs.new_run_dir(tmp_path, "s")
    runs.append_metrics(d, {"event": "epoch", "epoch": 1, "val_loss": 1.5})
    runs.append_metrics(d, {"event": "epoch", "epoch": 2, "val_loss": float("nan")})
    with open(d / runs.METRICS_FILE, "a") as fh:
        fh.write('{"event": "epoch", "ep')  # a crash mid-line
    m = runs.read_metrics(d)
    assert [r["epoch"] for r in m] == [1, 2]
    assert m[1]["val_loss"] is None
    runs.append_metrics(d, {"event": "epoch", "epoch": 3})  # e.g. the resumed run: a line of its own
    assert (d / runs.METRICS_FILE).read_text().count("\n") == 4
    assert [r["epoch"] for r in runs.read_metrics(d)] == [1, 2, 3]


def test_atomic_json_failure_keeps_old_file(tmp_path):
    path = tmp_path / "status.json"
    atomic_write_json(path, {"state": "running"})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"state": object()})
    assert json.loads(path.read_text()) == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temp file left behind


def test_split_roundtrip_and_load_run(tmp_path):
    d = runs.new_run_dir(tmp_path, "s")
    split = {"train": np.array([0, 2]), "val": np.array([1]), "test": np.array([3])}
    runs.write_split(d, split)
    atomic_write_json(d / runs.CONFIG_FILE, {"config": {"preset": "reference"}, "subject": {"name": "s"}, "created": "t"})
    runs.write_status(d, "finished", "ok")
    atomic_write_json(d / runs.RESULTS_FILE, {"test": {"image_to_neural": {"top1": 0.5}, "neural_to_image": {"top1": 0.25},
                                                        "n": 4, "chance_top1": 0.25}})
    rec = runs.load_run(d)
    assert rec.split["test"].tolist() == [3]
    assert rec.test_outputs() is None
    infos = runs.list_runs(tmp_path)
    assert len(infos) == 1 and infos[0].subject == "s" and infos[0].state == "finished"
    assert infos[0].metrics["test_top1_image_to_neural"] == 0.5
    with pytest.raises(FileNotFoundError):
        runs.load_run(tmp_path / "nope")


def test_mark_interrupted(tmp_path):
    live = runs.new_run_dir(tmp_path, "live")
    dead = runs.new_run_dir(tmp_path, "dead")
    other = runs.new_run_dir(tmp_path, "other")
    done = runs.new_run_dir(tmp_path, "done")
    for d in (live, dead, other):
        runs.write_status(d, "running", "epoch 3")
    runs.write_status(done, "finished", "ok")
    # `other` was written by another process that is still alive -> left alone
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        st = runs.read_status(other)
        st["pid"], st["pid_start"] = proc.pid, start_ticks(proc.pid)  # as that process would record it
        atomic_write_json(other / runs.STATUS_FILE, st)
        # `dead` claims a process that no longer exists
        st = runs.read_status(dead)
        st["pid"] = 2**22 + 12345
        atomic_write_json(dead / runs.STATUS_FILE, st)
        marked = runs.mark_interrupted(tmp_path, live_run_dirs=[live])
    finally:
        proc.kill()
        proc.wait()
    assert marked == [dead]
    assert runs.read_status(dead)["state"] == "interrupted"
    assert runs.read_status(live)["state"] == "running"
    assert runs.read_status(other)["state"] == "running"
    # a run of *this* process that no job owns any more is interrupted too
    # (and `other`, whose process has now ended)
    assert set(runs.mark_interrupted(tmp_path, live_run_dirs=[])) == {live, other}
    assert runs.read_status(live)["state"] == "interrupted"


def test_delete_run_refuses_non_runs_and_active(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ValueError):
        runs.delete_run(plain)
    d = runs.new_run_dir(tmp_path, "s")
    runs.write_status(d, "running", "")
    with pytest.raises(ValueError):
        runs.delete_run(d)
    runs.write_status(d, "stopped", "")
    runs.delete_run(d)
    assert not d.exists() and plain.exists()


def test_a_run_folder_written_before_the_neural_kind_rename_still_loads(tmp_path):
    """Issue 22 item 5: config.json of older runs stores the neural tower's type as `neural.block`."""
    from neuroalign.config import preset
    from neuroalign.training.run_files import RunFileError

    cfg = preset("recommended").replace(**{"neural.kind": "latent", "init": "random"})
    stored = cfg.to_dict()
    stored["neural"]["block"] = stored["neural"].pop("kind")
    d = runs.new_run_dir(tmp_path, "s")
    atomic_write_json(d / runs.CONFIG_FILE, {"config": stored, "subject": {"name": "s"}})
    assert runs.load_run(d).train_config() == cfg
    stored["neural"]["kind"] = "linear"  # both keys, disagreeing: refused with a one-line reason
    atomic_write_json(d / runs.CONFIG_FILE, {"config": stored, "subject": {"name": "s"}})
    with pytest.raises(RunFileError, match="both 'kind' \\('linear'\\) and its old name 'block' \\('latent'\\)") as err:
        runs.load_run(d).train_config()
    assert "\n" not in str(err.value) and "config.json" in str(err.value)
