"""The Train page's job card says when a running job has made no progress for a while, and whether
its process is still there (issue 12 item 6)."""

import threading

import pytest

import app_support as s
from app_support import app_env, app_populated  # noqa: F401 (fixtures)
from test_app_train import PAGE, _submit

from neuroalign.training import jobs
from neuroalign.training import runs as runs_io
from neuroalign.ui import jobs_view, keys


def test_card_says_no_progress_and_that_the_job_is_alive(app_populated, monkeypatch):
    started, release = threading.Event(), threading.Event()

    def runner(subject, config, data_dir, runs_dir, callback=None, stop_event=None, run_dir=None):
        runs_io.write_status(run_dir, "running", "preparing: backbone features 0/48 images")
        started.set()
        release.wait(30)  # e.g. a backbone stuck on a slow disk: nothing new for a while
        runs_io.write_status(run_dir, "finished", "done", progress=1.0)
        return run_dir

    monkeypatch.setattr(jobs, "_manager", jobs.JobManager(runner=runner))
    at = _submit(s.app_at(PAGE))
    (job_id,) = at.session_state[keys.TRAIN_LAUNCHED]
    assert started.wait(10)
    at.run()
    assert not any("no progress" in c.value for c in at.caption)  # not yet: it has just started
    monkeypatch.setattr(jobs_view, "STALL_AFTER_S", 0.2)
    threading.Event().wait(0.4)
    at.run()
    s.no_exceptions(at)
    captions = [c.value for c in at.caption if "no progress" in c.value]
    assert captions and captions[0].startswith("preparing: backbone features 0/48 images · no progress for ")
    assert captions[0].endswith("the job is still alive (in the server process)")
    release.set()
    assert jobs.get_job_manager().wait(job_id, timeout=30).state == "finished"
    at.run()
    assert not any("no progress" in c.value for c in at.caption)


pytestmark = pytest.mark.usefixtures("one_torch_thread")
