"""The profile job (neuroalign.jobs.profile_job / profile_worker): requests refused in one line,
one profile per subject, a worker that fails or is killed leaves a one-line failed status, a folder
whose worker is gone reads as interrupted."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from neuroalign.io_utils import atomic_write_json
from neuroalign.jobs import protocol as proto
from neuroalign.jobs import profile_job as pj

TIMEOUT_S = 240


@pytest.fixture
def jobs():
    manager = pj.ProfileJobs()
    yield manager
    manager.close(timeout=30, kill=True)


@pytest.fixture
def sim_data(sim_root, tmp_path):
    shutil.copytree(sim_root / "sim-M1", tmp_path / "data" / "sim-M1")
    return tmp_path / "data"


def test_requests_refused_in_one_line(jobs, sim_data):
    assert pj.n_layers(["ds_net_tiny", "random_rectified"], "stages") == 4 + 3  # the bank's 3 pyramid levels
    assert pj.n_layers(["ds_net_tiny"], "all") == 9 and pj.n_layers(["pkg.mod:f"], "stages") is None
    for kwargs, match in (({"layers": "some"}, "layers must be one of"), ({"models": []}, "at least one image model"),
                          ({"models": ["resnet50"]}, "unknown image model 'resnet50'"),
                          ({"max_seconds": 0}, "budget must be > 0")):
        with pytest.raises(ValueError, match=match):
            jobs.start("sim-M1", sim_data, **kwargs)
    with pytest.raises(ValueError, match="no subject 'nobody'"):
        jobs.start("nobody", sim_data)
    assert not (sim_data / "sim-M1" / pj.JOB_DIR).exists()  # nothing started
    with pytest.raises(ValueError, match="no profile of sim-M1 is running"):
        jobs.stop(sim_data / "sim-M1")


def test_failing_worker_says_why_in_one_line(jobs, sim_data):
    jobs.start("sim-M1", sim_data, models=["no_such_package.models:factory"])
    final = jobs.wait(sim_data / "sim-M1", TIMEOUT_S)
    assert final.state == "failed" and "no_such_package" in final.message and "\n" not in final.message
    assert not (sim_data / "sim-M1" / "profile.json").exists()


def test_one_profile_per_subject_and_a_killed_worker_fails(jobs, sim_data):
    folder = sim_data / "sim-M1"
    started = jobs.start("sim-M1", sim_data, models=["ds_net_tiny"], layers="all")
    assert started.active and started.total == 9 and started.models == ("ds_net_tiny",)
    with pytest.raises(ValueError, match="already running"):
        jobs.start("sim-M1", sim_data)
    os.kill(started.pid, signal.SIGKILL)
    final = jobs.wait(folder, TIMEOUT_S)
    assert final.state == "failed" and "killed by signal 9" in final.message
    assert not final.active and jobs.status(folder).state == "failed"


def test_running_folder_without_its_worker_reads_interrupted(tmp_path):
    folder = tmp_path / "subj" / pj.JOB_DIR
    folder.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    atomic_write_json(folder / pj.STATUS_FILE, {"state": "running", "message": "layer 3", "done": 2, "total": 5,
                                               "started": time.time() - 60})
    atomic_write_json(folder / proto.WORKER_FILE, {"pid": dead.pid, "start_ticks": None})
    status = pj.read_status(tmp_path / "subj")
    assert status.state == "interrupted" and "run the profile again" in status.message and not status.active
    followed = pj.read_status(tmp_path / "subj", followed=True)  # a thread of this server follows it: running
    assert followed.active and followed.progress == pytest.approx(0.4) and followed.eta_s == pytest.approx(90, rel=0.1)
    assert pj.read_status(tmp_path / "other") is None


def test_a_new_profile_keeps_the_stored_rows_of_the_models_it_did_not_profile():
    import copy

    from neuroalign.jobs.profile_worker import merge_with_stored
    from profile_support import make_profile

    stored = make_profile()
    new = copy.deepcopy(stored)
    new["rows"] = [dict(stored["rows"][4], val_mrr=0.9)]  # the bank again, now the best of all
    new["best"] = {"overall": 0, "per_model": {"random_rectified": 0}}
    merged = merge_with_stored(new, stored)
    assert [r["model"] for r in merged["rows"]] == ["ds_net_tiny"] * 4 + ["random_rectified"]  # registry order
    assert merged["rows"][4]["val_mrr"] == 0.9 and merged["kept_from_stored"] == ["ds_net_tiny"]
    assert merged["best"] == {"overall": 4, "per_model": {"ds_net_tiny": 2, "random_rectified": 4}}
    assert merge_with_stored(new, make_profile(data_hash="other data")) is new
    assert merge_with_stored(new, None) is new and merge_with_stored(stored, stored) is stored
