"""Jobs in worker processes (issue 13 part 2): an out-of-memory or killed worker fails its run and
leaves the manager and the queue running; racing starts make one job; the server's torch state is
untouched; a stop is graceful; a live worker found by a second server is adopted, never marked
interrupted; ended jobs are pruned; snapshots share histories; the stall note (issue 12 item 6)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import app_support as s
from neuroalign.config import TrainConfig
from neuroalign.jobs import protocol as job_protocol, state as job_state, manager as jobs
from neuroalign.training import runs as runs_io
from neuroalign.jobs.manager import JobManager, process_alive
from neuroalign.ui import jobs_view

FAKE_RUNNER = '''
"""Worker runners for tests: behave like pipeline.run_training, by subject name."""
import logging, os, signal, sys, time
from pathlib import Path
from neuroalign.io_utils import atomic_write_json
from neuroalign.training import runs


def _records(run_dir, n_epochs):
    for epoch in range(1, n_epochs + 1):
        runs.append_metrics(run_dir, {"event": "step", "epoch": epoch, "step": epoch, "train_loss": 1.0 / epoch,
                                      "progress": epoch / n_epochs, "samples_per_s": 100.0})
        runs.append_metrics(run_dir, {"event": "epoch", "epoch": epoch, "step": epoch, "val_loss": 2.0 / epoch,
                                      "progress": epoch / n_epochs, "eta_s": 0.0})


def run(subject, config=None, data_dir=None, runs_dir=None, stop_event=None, run_dir=None, cache_dir=None):
    if isinstance(subject, (str, os.PathLike)) and Path(subject).is_dir():  # mode resume: run(run_dir, ...)
        run_dir, subject = Path(subject), "resumed"
    runs.write_status(run_dir, "running", f"training {subject}")
    if subject == "oom":
        import torch
        runs.append_metrics(run_dir, {"event": "step", "epoch": 1, "step": 1, "train_loss": 1.0, "progress": 0.1})
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
    if subject == "sigkill":
        print("allocating 80 GiB for the attention blocks", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    if subject == "exit3":
        print("giving up: exit 3", file=sys.stderr, flush=True)
        os._exit(3)
    if subject == "stubborn":  # ignores stop requests
        time.sleep(120)
    if subject in ("hold", "quiet"):
        while not stop_event.wait(0.05):
            if subject == "hold":
                runs.append_metrics(run_dir, {"event": "step", "epoch": 1, "step": 1, "train_loss": 1.0})
        runs.write_status(run_dir, "stopped", "stopped by user; best checkpoint restored and evaluated")
        return run_dir
    _records(run_dir, 3)
    atomic_write_json(Path(run_dir) / "results.json", {"test": {"n": 5}})
    runs.write_status(run_dir, "finished", f"done {subject}", progress=1.0)
    return run_dir
'''


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test(monkeypatch):
    """Every JobManager made in a test is closed at its end (stragglers terminated), so a failing
    test leaves no worker process behind (a worker stops by itself only when the server -- here
    pytest -- exits, and the next test must not share the machine with it)."""
    made = []
    init = JobManager.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(JobManager, "__init__", recording_init)
    yield
    for mgr in made:
        mgr.close(timeout=10, kill=True)


@pytest.fixture
def fake_worker(tmp_path, monkeypatch):
    """A module `h2_fake_runner` importable by worker processes, and a data root with subjects."""
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "h2_fake_runner.py").write_text(textwrap.dedent(FAKE_RUNNER))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(mod_dir), os.environ.get("PYTHONPATH")])))
    data = tmp_path / "data"

    def subject(name):
        if not (data / name).exists():
            s.write_subject(data, name, n_images=12, n_neurons=4)
        return name

    return SimpleNamespace(data=data, runs=tmp_path / "runs", subject=subject, runner="h2_fake_runner:run")


def _wait_for(predicate, timeout=30.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_out_of_memory_in_worker_fails_the_run_and_the_queue_goes_on(fake_worker):
    fw = fake_worker
    mgr = JobManager(worker_runner=fw.runner, poll_s=0.05)
    oom = mgr.start(fw.subject("oom"), TrainConfig(preset="reference", epochs=3), fw.data, fw.runs)
    nxt = mgr.start(fw.subject("ok"), TrainConfig(preset="reference", epochs=3), fw.data, fw.runs)
    assert mgr.get(nxt).state == "queued"
    snap = mgr.wait(oom, 60)
    assert snap.state == "failed" and snap.kind == "worker"
    assert snap.error == "OutOfMemoryError: CUDA out of memory. Tried to allocate 80.00 GiB"
    assert runs_io.read_status(snap.run_dir) == runs_io.read_status(snap.run_dir) | {"state": "failed",
                                                                                 "message": snap.error}
    assert not process_alive(snap.pid)  # its memory went with its process
    assert not (snap.run_dir / jobs.WORKER_FILE).exists()
    assert "OutOfMemoryError" in (snap.run_dir / jobs.WORKER_LOG).read_text()  # the traceback is in the log
    ok = mgr.wait(nxt, 60)
    assert ok.state == "finished" and ok.message == "done ok" and (ok.run_dir / "results.json").is_file()
    assert [h["epoch"] for h in ok.history if h["event"] == "epoch"] == [1, 2, 3]  # from metrics.jsonl
    assert ok.progress == 1.0 and mgr.active_for("oom") is None


def test_killed_or_exiting_worker_marks_its_run_failed(fake_worker):
    fw = fake_worker
    mgr = JobManager(worker_runner=fw.runner, poll_s=0.05)
    ids = [mgr.start(fw.subject(n), TrainConfig(preset="reference", epochs=3), fw.data, fw.runs) for n in ("sigkill", "exit3", "ok")]
    killed, exited, ok = (mgr.wait(i, 60) for i in ids)
    assert killed.state == "failed"
    assert "killed by signal 9 (SIGKILL" in killed.error and "out-of-memory" in killed.error
    assert "last log line: allocating 80 GiB for the attention blocks" in killed.error
    assert "\n" not in killed.error
    status = runs_io.read_status(killed.run_dir)
    assert status["state"] == "failed" and status["message"] == killed.error
    assert exited.state == "failed" and "exited with code 3" in exited.error and "giving up: exit 3" in exited.error
    assert ok.state == "finished"  # the queue kept going


def test_close_terminates_a_worker_that_ignores_stop(fake_worker):
    fw = fake_worker
    mgr = JobManager(worker_runner=fw.runner, poll_s=0.05)
    job = mgr.start(fw.subject("stubborn"), TrainConfig(preset="reference", epochs=3), fw.data, fw.runs)
    assert _wait_for(lambda: mgr.get(job).message == "training stubborn")
    mgr.close(timeout=0.5, kill=True)
    snap = mgr.get(job)
    assert snap.state == "failed" and "killed by signal 15 (SIGTERM)" in snap.error
    assert not process_alive(snap.pid)


def test_racing_starts_of_one_subject_make_exactly_one_job(fake_worker):
    fw = fake_worker
    mgr = JobManager(worker_runner=fw.runner, poll_s=0.05)
    name, n = fw.subject("hold"), 8
    barrier = threading.Barrier(n)
    ids, errors = [], []

    def go():
        barrier.wait()
        try:
            ids.append(mgr.start(name, TrainConfig(preset="reference", epochs=3), fw.data, fw.runs))
        except ValueError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=go) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 1 and len(errors) == n - 1
    assert all(e.startswith("subject 'hold' already has an active job (job-1, ") for e in errors)
    assert len([p for p in fw.runs.iterdir() if p.is_dir()]) == 1  # one run folder, nothing half-made
    mgr.stop(ids[0])
    assert mgr.wait(ids[0], 60).state == "stopped"


def _tiny_config(**changes) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 16, "device": "cpu", "image.backbone": "ds_net_tiny", "image.stage": 1,
            "image.block": 1, "neural.kind": "linear", "neural.d_model": 16, "log_every_steps": 1}
    base.update(changes)
    return TrainConfig(preset="reference").replace(**base)


def test_worker_leaves_server_torch_state_alone_and_stops_gracefully(tmp_path):
    """threads=1 and deterministic=True are set in the worker; the server keeps its own settings,
    during the run and after. Stop: state 'stopped', the best checkpoint evaluated (results.json)."""
    import torch

    s.write_subject(tmp_path / "data", "m1")
    threads_before, det_before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(3)
    torch.use_deterministic_algorithms(False)
    try:
        mgr = JobManager(poll_s=0.05)
        cfg = _tiny_config(epochs=100_000, threads=1, deterministic=True)
        job = mgr.start("m1", cfg, tmp_path / "data", tmp_path / "runs")
        seen = []

        def trained_an_epoch():
            seen.append((torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))
            snap = mgr.get(job)
            assert snap.state == "running", snap.error
            return any(h["event"] == "epoch" for h in snap.history)

        assert _wait_for(trained_an_epoch, timeout=120)
        mgr.stop(job)
        snap = mgr.wait(job, 120)
        assert set(seen) == {(3, False)}
        assert torch.get_num_threads() == 3 and not torch.are_deterministic_algorithms_enabled()
        assert snap.state == "stopped" and 1 <= snap.epoch < 100_000, snap.error
        assert snap.message.startswith("stopped by user")
        assert (snap.run_dir / "results.json").is_file() and (snap.run_dir / "best.pt").is_file()
        assert (snap.run_dir / jobs.STOP_FILE).is_file() and not (snap.run_dir / jobs.WORKER_FILE).exists()
        config = json.loads((snap.run_dir / "config.json").read_text())
        assert config["config"]["threads"] == 1 and config["world_size"] == 1
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(det_before)


def test_restart_adopts_a_live_worker_and_never_marks_it_interrupted(fake_worker):
    fw = fake_worker
    first = JobManager(worker_runner=fw.runner, poll_s=0.05)
    job = first.start(fw.subject("hold"), TrainConfig(preset="reference", epochs=3), fw.data, fw.runs)
    run_dir = first.get(job).run_dir
    assert _wait_for(lambda: runs_io.read_status(run_dir).get("message") == "training hold")
    pid = first.get(job).pid
    assert json.loads((run_dir / jobs.WORKER_FILE).read_text())["pid"] == pid

    # a dead worker's record: its run is marked interrupted and the record removed
    dead = runs_io.new_run_dir(fw.runs, "gone")
    runs_io.write_status(dead, "running", "epoch 3/10")
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    (dead / jobs.WORKER_FILE).write_text(json.dumps({"pid": done.pid, "start_ticks": None}))

    second = JobManager(poll_s=0.05)  # the server after a restart
    states = {i.path: i.state for i in second.sync_runs(fw.runs)}
    assert states[run_dir] == "running" and states[dead] == "interrupted"
    assert not (dead / jobs.WORKER_FILE).exists()
    (adopted,) = second.snapshots()
    assert adopted.kind == "adopted" and adopted.pid == pid and adopted.alive and adopted.subject == "hold"
    assert _wait_for(lambda: second.get(adopted.job_id).history)  # followed through metrics.jsonl
    with pytest.raises(ValueError, match="already has an active job"):
        second.start("hold", TrainConfig(preset="reference", epochs=3), fw.data, fw.runs)
    (run_dir / "config.json").write_text(json.dumps({"config": TrainConfig(preset="reference", epochs=3).to_dict(),
                                                     "subject": {"name": "hold", "path": str(fw.data / "hold")}}))
    (run_dir / runs_io.LAST_CKPT).write_bytes(b"a checkpoint")
    with pytest.raises(ValueError, match=f"still being trained by process {pid}; stop it"):
        JobManager().resume(run_dir)
    second.sync_runs(fw.runs)  # a second sync adopts nothing new
    assert len(second.snapshots()) == 1
    second.stop(adopted.job_id)  # through the run folder: the worker stops gracefully
    assert second.wait(adopted.job_id, 30).state == "stopped"
    assert first.wait(job, 30).state == "stopped"
    assert runs_io.read_status(run_dir)["state"] == "stopped"


def test_resume_runs_in_a_worker_with_this_sessions_history(fake_worker):
    fw = fake_worker
    run_dir = runs_io.new_run_dir(fw.runs, "r1")
    (run_dir / "config.json").write_text(json.dumps({"config": TrainConfig(preset="reference", epochs=3).to_dict(),
                                                     "subject": {"name": "r1", "path": str(fw.data / "r1")}}))
    (run_dir / runs_io.LAST_CKPT).write_bytes(b"a checkpoint")
    runs_io.write_status(run_dir, "interrupted", "")
    runs_io.append_metrics(run_dir, {"event": "epoch", "epoch": 9, "val_loss": 1.0})  # an earlier session
    mgr = JobManager(worker_runner=fw.runner, poll_s=0.05)
    snap = mgr.wait(mgr.resume(run_dir, data_dir=fw.data), 60)
    assert snap.state == "finished" and snap.message == "done resumed", snap.error
    assert json.loads((run_dir / jobs.SPEC_FILE).read_text())["mode"] == "resume"
    assert [h["epoch"] for h in snap.history if h["event"] == "epoch"] == [1, 2, 3]


def _thread_runner(n_steps=0, n_epochs=1, hold=None):
    def run(subject, config, data_dir, runs_dir, callback=None, stop_event=None, run_dir=None):
        runs_io.write_status(run_dir, "running", "training")
        for step in range(1, n_steps + 1):
            callback("step", {"epoch": 1, "step": step, "train_loss": 1.0, "progress": 0.5})
        for epoch in range(1, n_epochs + 1):
            callback("epoch", {"epoch": epoch, "val_loss": 1.0, "progress": epoch / n_epochs})
        if hold is not None:
            hold.wait(30)
        runs_io.write_status(run_dir, "finished", "done", progress=1.0)
        return run_dir
    return run


def test_ended_jobs_are_pruned_and_snapshots_share_history(tmp_path, monkeypatch):
    monkeypatch.setattr(job_state, "MAX_STEP_HISTORY", 20)
    mgr = JobManager(runner=_thread_runner(n_steps=100, n_epochs=5), keep_finished=2)
    ids = []
    for _ in range(4):
        ids.append(mgr.start("A", TrainConfig(preset="reference", epochs=5), tmp_path, tmp_path / "runs"))
        mgr.wait(ids[-1], 10)
    other = mgr.start("B", TrainConfig(preset="reference", epochs=5), tmp_path, tmp_path / "runs")
    mgr.wait(other, 10)
    assert [x.job_id for x in mgr.snapshots()] == [other, ids[3], ids[2]]  # 2 per subject kept
    with pytest.raises(ValueError, match="unknown job 'job-1'.*kept only for the 2 most recent"):
        mgr.get(ids[0])
    a, b = mgr.get(ids[3]), mgr.get(ids[3])
    assert a.history is b.history  # no copy per snapshot
    steps = [h for h in a.history if h["event"] == "step"]
    assert 20 <= len(steps) <= 22 and steps[-1]["step"] == 100  # the newest steps kept
    assert [h["epoch"] for h in a.history if h["event"] == "epoch"] == [1, 2, 3, 4, 5]  # every epoch kept


def test_snapshot_history_does_not_change_afterwards(tmp_path):
    hold = threading.Event()
    mgr = JobManager(runner=_thread_runner(n_steps=3, n_epochs=1, hold=hold))
    job = mgr.start("A", TrainConfig(preset="reference", epochs=5), tmp_path, tmp_path / "runs")
    assert _wait_for(lambda: len(mgr.get(job).history) == 4)
    early = mgr.get(job)
    with mgr._lock:  # more records arrive while the early snapshot is held
        job_state.apply_records(mgr._jobs[job], [{"event": "epoch", "epoch": 2, "val_loss": 0.5}])
    hold.set()
    assert mgr.wait(job, 10).state == "finished"
    assert len(early.history) == 4 and len(mgr.get(job).history) == 5


def test_stall_note_says_alive_or_gone():
    now = time.time()
    snap = SimpleNamespace(state="running", started=now - 600, last_activity=now - 130, alive=True, pid=4242,
                           kind="worker")
    assert jobs_view.stall_note(snap, now=now) == "no progress for 2 min — the job is still alive (pid 4242)"
    snap.alive = False
    assert jobs_view.stall_note(snap, now=now) == "no progress for 2 min — the worker process is gone"
    snap.last_activity = now - 10
    assert jobs_view.stall_note(snap, now=now) is None
    snap.last_activity, snap.state = now - 130, "finished"
    assert jobs_view.stall_note(snap, now=now) is None


def test_live_message_of_a_stalled_worker_job(fake_worker, monkeypatch):
    """A running worker that writes nothing new: the card's line says so, with its pid."""
    fw = fake_worker
    monkeypatch.setattr(jobs_view, "STALL_AFTER_S", 0.5)
    mgr = JobManager(worker_runner=fw.runner, poll_s=0.05)
    job = mgr.start(fw.subject("quiet"), TrainConfig(preset="reference", epochs=3), fw.data, fw.runs)
    assert _wait_for(lambda: mgr.get(job).message == "training quiet")
    assert _wait_for(lambda: "no progress" in jobs_view.live_message(mgr.get(job)), timeout=10)
    snap = mgr.get(job)
    assert jobs_view.live_message(snap).startswith("training quiet · no progress for ")
    assert f"the job is still alive (pid {snap.pid})" in jobs_view.live_message(snap)
    os.kill(snap.pid, signal.SIGKILL)
    final = mgr.wait(job, 30)
    assert final.state == "failed" and "SIGKILL" in final.error


def test_live_message_reads_status_once_per_change(tmp_path, monkeypatch):
    hold = threading.Event()
    mgr = JobManager(runner=_thread_runner(n_epochs=0, hold=hold))
    job = mgr.start("A", TrainConfig(preset="reference", epochs=5), tmp_path, tmp_path / "runs")
    assert _wait_for(lambda: runs_io.read_status(mgr.get(job).run_dir).get("message") == "training")
    reads = []
    real = runs_io.read_status
    monkeypatch.setattr(runs_io, "read_status", lambda d: reads.append(d) or real(d))
    snap = mgr.get(job)
    assert [jobs_view.live_message(snap) for _ in range(3)] == ["training"] * 3
    assert len(reads) == 1
    runs_io.write_status(snap.run_dir, "running", "preparing: backbone features 3/12 images")
    before = len(reads)
    assert jobs_view.live_message(snap) == "preparing: backbone features 3/12 images"  # a change is seen
    assert jobs_view.live_message(snap) == "preparing: backbone features 3/12 images" and len(reads) == before + 1
    hold.set()
    mgr.wait(job, 10)


def test_nproc_resolution(monkeypatch):
    monkeypatch.delenv(jobs.JOB_PROCESSES_ENV, raising=False)
    assert jobs.resolve_nproc(None, TrainConfig(preset="reference", device="cpu")) == 1
    assert jobs.resolve_nproc(3, TrainConfig(preset="reference")) == 3
    monkeypatch.setenv(jobs.JOB_PROCESSES_ENV, "2")
    assert jobs.resolve_nproc(None, TrainConfig(preset="reference", device="cpu")) == 2
    monkeypatch.setenv(jobs.JOB_PROCESSES_ENV, "two")
    with pytest.raises(ValueError, match="NEUROALIGN_JOB_PROCESSES must be a whole number >= 1, got 'two'"):
        jobs.resolve_nproc(None, TrainConfig(preset="reference"))
    with pytest.raises(ValueError, match="nproc must be a whole number"):
        jobs.resolve_nproc(0, TrainConfig(preset="reference"))
    with pytest.raises(ValueError, match="needs worker processes"):
        JobManager(runner=_thread_runner()).start("A", TrainConfig(preset="reference"), Path("."), Path("runs"), nproc=2)


def test_metrics_tail_waits_for_a_torn_line_and_rereads_a_replaced_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = job_protocol.MetricsTail(path)
    assert tail.read() == []  # no file yet
    path.write_text('{"event": "step", "step": 1}\n{"event": "st')
    assert tail.read() == [{"event": "step", "step": 1}]
    with open(path, "a") as fh:
        fh.write('ep", "step": 2}\nnot json\n[1, 2]\n')
    assert tail.read() == [{"event": "step", "step": 2}]  # completed line; junk and non-objects skipped
    path.write_text('{"event": "epoch", "epoch": 1}\n')  # shorter: a new file
    assert tail.read() == [{"event": "epoch", "epoch": 1}]


def test_last_log_line_skips_separators_and_the_log_prefix(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text("2026-12-02 06:56:21,975 rank0 INFO neuroalign.jobs.worker: worker pid 1: start m1\n"
                   "2026-12-02 06:56:22,001 rank0 ERROR neuroalign.jobs.worker: failed: ValueError: bad\n"
                   "=====================\n\n")
    assert jobs.last_log_line(log) == "failed: ValueError: bad"
    assert jobs.last_log_line(tmp_path / "missing.log") is None
