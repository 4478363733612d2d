"""A worker ends with the dashboard server that started it (issue 13 part 2: "a server restart
shows interrupted runs and offers resume"): a kill -9 of the server makes the worker stop
gracefully on its own -- best checkpoint restored and evaluated, last.pt kept, the run `stopped`
and resumable -- on every torchrun rank too; NEUROALIGN_JOBS_OUTLIVE_SERVER=1 keeps the old
detached workers, which a later server adopts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import app_support as s
from neuroalign.config import TrainConfig
from neuroalign.jobs import manager as jobs
from neuroalign.training import runs as runs_io
from neuroalign.jobs.manager import JobManager, process_alive

# The "server": a process that starts one job with a JobManager and then idles until killed.
SERVER = textwrap.dedent('''
    import json, sys, time
    from neuroalign.config import TrainConfig
    from neuroalign.jobs.manager import JobManager
    a = json.loads(sys.argv[1])
    mgr = JobManager(worker_runner=a["runner"], poll_s=0.05)
    job = mgr.start(a["subject"], TrainConfig.from_dict(a["config"]), a["data"], a["runs"], nproc=a["nproc"])
    print(mgr.get(job).run_dir, flush=True)
    time.sleep(600)
''')

# Runner for worker processes: every rank notes when it started and when its stop event fired.
RANK_RUNNER = textwrap.dedent('''
    import os
    from pathlib import Path
    from neuroalign.training import runs


    def run(subject, config=None, data_dir=None, runs_dir=None, stop_event=None, run_dir=None, cache_dir=None):
        marks = Path(runs_dir).parent / "marks"
        marks.mkdir(exist_ok=True)
        rank = os.environ.get("RANK", "0")
        if run_dir is not None:
            runs.write_status(run_dir, "running", f"training {subject}")
        (marks / f"rank{rank}.started").write_text(str(os.getpid()))
        while not stop_event.wait(0.05):
            pass
        (marks / f"rank{rank}.stopped").write_text("")
        if run_dir is not None:
            runs.write_status(run_dir, "stopped", "stopped by user; best checkpoint restored and evaluated")
        return run_dir
''')


def _wait_for(predicate, timeout=30.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


def _worker_pid(run_dir: Path) -> int | None:
    try:
        return json.loads((run_dir / jobs.WORKER_FILE).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


class _Server:
    """A child "server" process running one job; kill() is the kill -9 of the server."""

    def __init__(self, tmp_path: Path, subject: str, config: TrainConfig, runner: str | None = None,
                 nproc: int = 1, env: dict | None = None) -> None:
        self.data, self.runs = tmp_path / "data", tmp_path / "runs"
        args = {"subject": subject, "config": config.to_dict(), "data": str(self.data), "runs": str(self.runs),
                "runner": runner, "nproc": nproc}
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(args)], stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, **(env or {})})
        self.run_dir = Path(self.proc.stdout.readline().strip())
        self.pids: list[int] = []

    def worker(self, timeout: float = 30.0) -> int:
        assert _wait_for(lambda: _worker_pid(self.run_dir) is not None, timeout), "no worker.json"
        self.pids.append(_worker_pid(self.run_dir))
        return self.pids[-1]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        for pid in self.pids:  # never leave a worker behind, whatever failed
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def runner_module(tmp_path, monkeypatch):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "h6_rank_runner.py").write_text(RANK_RUNNER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(mods), os.environ.get("PYTHONPATH")])))
    s.write_subject(tmp_path / "data", "m1", n_images=12, n_neurons=4)
    return "h6_rank_runner:run"


def test_server_killed_worker_stops_gracefully_and_the_run_is_resumable(tmp_path, monkeypatch):
    """A real (tiny) training: kill -9 of its server; the worker restores the best checkpoint,
    evaluates and exits within seconds; the next server lists the run stopped and resumes it."""
    monkeypatch.delenv(jobs.OUTLIVE_SERVER_ENV, raising=False)
    s.write_subject(tmp_path / "data", "m1")
    cfg = TrainConfig(preset="reference").replace(**{"epochs": 100_000, "batch_size": 16, "device": "cpu", "threads": 1,
                                   "image.backbone": "ds_net_tiny", "image.stage": 1, "image.block": 1,
                                   "neural.kind": "linear", "neural.d_model": 16, "log_every_steps": 1})
    server = _Server(tmp_path, "m1", cfg)
    try:
        pid = server.worker()
        metrics = server.run_dir / runs_io.METRICS_FILE
        assert _wait_for(lambda: metrics.is_file() and '"event": "epoch"' in metrics.read_text(), timeout=120), \
            (server.run_dir / jobs.WORKER_LOG).read_text()[-2000:]  # an epoch ended: last.pt exists
        server.kill()
        killed = time.monotonic()
        assert _wait_for(lambda: not process_alive(pid), timeout=30), "the worker outlived its server"
        took = time.monotonic() - killed
        log = (server.run_dir / jobs.WORKER_LOG).read_text()
        assert "the dashboard server that started this worker exited" in log
        status = runs_io.read_status(server.run_dir)
        assert status["state"] == "stopped", (status, log[-2000:])
        assert status["message"].startswith("stopped because the dashboard server exited (epoch "), status
        assert "test top-1" in status["message"]  # the best checkpoint was evaluated
        for name in (runs_io.LAST_CKPT, runs_io.BEST_CKPT, "results.json"):
            assert (server.run_dir / name).is_file(), name
        assert runs_io.load_checkpoint(server.run_dir / runs_io.LAST_CKPT)["epoch"] >= 1  # what resume reads
        assert took < 20, f"the worker took {took:.1f} s to stop"

        nxt = JobManager(runner=lambda *a, **k: None)  # the next dashboard start
        try:
            states = {i.path: i.state for i in nxt.sync_runs(server.runs)}
            assert states[server.run_dir] == "stopped"
            assert not (server.run_dir / jobs.WORKER_FILE).exists()  # its stale pid record is gone
            assert not nxt.snapshots()  # nothing adopted: nothing runs it
            job = nxt.resume(server.run_dir)  # offered and accepted: last.pt, no live worker
            assert nxt.wait(job, 10).state == "finished"
        finally:
            nxt.close(timeout=10, kill=True)
    finally:
        server.cleanup()


def test_every_torchrun_rank_stops_when_the_server_dies(tmp_path, monkeypatch, runner_module):
    monkeypatch.delenv(jobs.OUTLIVE_SERVER_ENV, raising=False)
    server = _Server(tmp_path, "m1", TrainConfig(preset="reference", epochs=3), runner=runner_module, nproc=2)
    marks = tmp_path / "marks"
    try:
        launcher = server.worker()
        assert _wait_for(lambda: all((marks / f"rank{r}.started").is_file() for r in (0, 1)), timeout=60), \
            (server.run_dir / jobs.WORKER_LOG).read_text()[-2000:]
        ranks = [int((marks / f"rank{r}.started").read_text()) for r in (0, 1)]
        server.pids += ranks
        assert launcher not in ranks  # the ranks are torchrun's children, not the server's
        server.kill()
        assert _wait_for(lambda: not any(process_alive(p) for p in [launcher, *ranks]), timeout=30)
        assert all((marks / f"rank{r}.stopped").is_file() for r in (0, 1))  # each stopped, none was killed
        status = runs_io.read_status(server.run_dir)
        assert status["state"] == "stopped"
        assert status["message"] == ("stopped because the dashboard server exited; best checkpoint restored "
                                     "and evaluated")
    finally:
        server.cleanup()


def test_outlive_server_opt_in_keeps_the_worker_and_a_later_server_adopts_it(tmp_path, runner_module):
    server = _Server(tmp_path, "m1", TrainConfig(preset="reference", epochs=3), runner=runner_module,
                     env={jobs.OUTLIVE_SERVER_ENV: "1"})
    try:
        pid = server.worker()
        assert json.loads((server.run_dir / jobs.SPEC_FILE).read_text())["server"] is None
        assert _wait_for(lambda: (tmp_path / "marks" / "rank0.started").is_file(), timeout=30)
        server.kill()
        time.sleep(1.0)  # many watcher polls: a worker tied to its server would be stopping by now
        assert process_alive(pid) and not (tmp_path / "marks" / "rank0.stopped").exists()
        later = JobManager(poll_s=0.05)
        try:
            states = {i.path: i.state for i in later.sync_runs(server.runs)}
            assert states[server.run_dir] == "running"  # adopted, not marked interrupted
            (adopted,) = later.snapshots()
            assert adopted.kind == "adopted" and adopted.pid == pid
            later.stop(adopted.job_id)
            final = later.wait(adopted.job_id, 30)
            assert final.state == "stopped" and final.message.startswith("stopped by user")
        finally:
            later.close(timeout=10, kill=True)
        assert _wait_for(lambda: not process_alive(pid), timeout=10)
    finally:
        server.cleanup()


def test_resume_offer_for_a_run_the_server_exit_stopped(tmp_path, monkeypatch):
    """What the Runs page's Resume needs (ui.jobs_view): offered for stopped/interrupted/failed runs
    with a last.pt and no job on them; request_resume queues the job."""
    import threading

    from neuroalign.ui import jobs_view

    hold = threading.Event()

    def runner(run_dir, data_dir=None, callback=None, stop_event=None):
        hold.wait(20)
        runs_io.write_status(run_dir, "finished", "done", progress=1.0)
        return run_dir

    monkeypatch.setattr(jobs, "_manager", JobManager(runner=runner))
    run_dir = runs_io.new_run_dir(tmp_path / "runs", "m1")
    (run_dir / "config.json").write_text(json.dumps({"config": TrainConfig(preset="reference", epochs=3).to_dict(),
                                                     "subject": {"name": "m1", "path": str(tmp_path / "m1")}}))
    runs_io.write_status(run_dir, "stopped", "stopped because the dashboard server exited (epoch 2, best 1)")
    assert "has no last.pt" in jobs_view.resume_blocker(run_dir, "stopped")
    (run_dir / runs_io.LAST_CKPT).write_bytes(b"a checkpoint")
    assert "this one is finished" in jobs_view.resume_blocker(run_dir, "finished")
    assert all(jobs_view.resume_blocker(run_dir, st) is None for st in ("stopped", "interrupted", "failed"))
    try:
        job = jobs_view.request_resume(run_dir)
        assert jobs_view.resume_blocker(run_dir, "stopped") == f"{run_dir.name} is being trained by a job right now"
        with pytest.raises(ValueError, match="already has an active job"):
            jobs_view.request_resume(run_dir)
        hold.set()
        assert jobs.get_job_manager().wait(job, 10).state == "finished"
        assert jobs_view.resume_blocker(run_dir, "stopped") is None
    finally:
        hold.set()
        jobs.get_job_manager().close(timeout=10)
