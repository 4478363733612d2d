"""The Train page's job card says when a running job has made no progress for a while, and whether
its process is still there (issue 12 item 6)."""

import threading

import pytest

import app_support as s
from app_support import app_env, app_populated  # noqa: F401 (fixtures)
from test_app_train import PAGE, _submit

from neuroalign.jobs import manager as jobs
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


def test_an_evaluating_job_shows_no_eta_and_queued_jobs_their_place():
    """Issue 23 item 7: a job (e.g. a worker adopted after a restart) that is only evaluating is not
    'running · ETA 17m'; queued jobs say where they are in the queue and are not counted as running."""
    from types import SimpleNamespace

    from neuroalign.ui import jobs_view

    def snap(job_id, state, message="", started=None, finished=None):
        return SimpleNamespace(job_id=job_id, subject="m1", run_dir=f"/runs/{job_id}", state=state, message=message,
                               epoch=40, epochs=40, eta_s=1020.0, samples_per_s=None, history=(), started=started,
                               finished=finished, progress=1.0)

    evaluating = snap("job-1", "running", "evaluating on the test split", started=5.0)
    text = jobs_view.progress_text(evaluating)
    assert text.startswith("evaluating") and "ETA" not in text and jobs_view.is_evaluating(evaluating)
    training = snap("job-2", "running", "epoch 3/40", started=6.0)
    assert "ETA 17m 00s" in jobs_view.progress_text(training) and not jobs_view.is_evaluating(training)
    done, q3, q4 = snap("job-0", "finished", finished=9.0), snap("job-3", "queued"), snap("job-4", "queued")
    snaps = jobs_view.order([q4, done, evaluating, q3, training])
    assert [s.job_id for s in snaps] == ["job-2", "job-1", "job-3", "job-4", "job-0"]
    assert jobs_view.counts_text(snaps) == "2 running, 2 queued"
    assert jobs_view.progress_text(q4, snaps).startswith("queued · 2nd in line")
    assert jobs_view.progress_text(q3, snaps).startswith("queued · next to start")


def test_a_preparing_budgeted_job_says_what_is_left_of_its_budget(monkeypatch):
    """Before its first epoch a job has no ETA; with a time budget the card says how much of it is left
    (the budget bounds the whole job) instead of 'ETA —', and that it is used up once it is."""
    from types import SimpleNamespace

    from neuroalign.ui import jobs_view

    monkeypatch.setattr(jobs_view.time, "time", lambda: 1000.0)
    prep = SimpleNamespace(job_id="job-1", subject="m1", run_dir="/runs/job-1", state="running",
                           message="choosing the image model", epoch=0, epochs=40, eta_s=None, samples_per_s=None,
                           history=(), started=1000.0 - 70.0, finished=None, progress=0.0, budget_s=300.0)
    assert jobs_view.progress_text(prep) == "running · preparing · 3m 50s of the time budget left"
    assert "time budget used up" in jobs_view.progress_text(SimpleNamespace(**{**vars(prep), "started": 500.0}))
    assert "ETA —" in jobs_view.progress_text(SimpleNamespace(**{**vars(prep), "budget_s": None}))
    training = SimpleNamespace(**{**vars(prep), "eta_s": 95.0, "epoch": 3})
    assert jobs_view.progress_text(training) == "running · epoch 3/40 · ETA 1m 35s"
