"""JobManager: one active job per subject, FIFO queue, stop, failure message, thread-safe snapshots."""

import threading
import time

import pytest

from neuroalign.config import TrainConfig
from neuroalign.training import runs
from neuroalign.jobs.manager import JobManager


def _fake_runner(step_s=0.01, n_epochs=5, fail=False):
    """Behaves like pipeline.run_training: reports epochs, honours stop_event, writes the final status."""
    def run(subject, config, data_dir, runs_dir, callback=None, stop_event=None, run_dir=None):
        runs.write_status(run_dir, "running", "training")
        for epoch in range(1, n_epochs + 1):
            if stop_event.is_set():
                runs.write_status(run_dir, "stopped", "stopped by user; best checkpoint restored and evaluated")
                return run_dir
            time.sleep(step_s)
            callback("step", {"epoch": epoch, "step": epoch, "train_loss": 1.0 / epoch, "progress": epoch / n_epochs})
            callback("epoch", {"epoch": epoch, "val_loss": 2.0 / epoch, "progress": epoch / n_epochs, "eta_s": 0.0})
            if fail and epoch == 2:
                raise RuntimeError("loss became NaN at epoch 2")
        runs.write_status(run_dir, "finished", "done", progress=1.0)
        return run_dir
    return run


def test_one_active_job_per_subject_and_queue(tmp_path):
    mgr = JobManager(max_parallel=1, runner=_fake_runner(step_s=0.05))
    cfg = TrainConfig(preset="reference", epochs=5)
    a = mgr.start("A", cfg, tmp_path / "data", tmp_path / "runs")
    with pytest.raises(ValueError, match="already has an active job"):
        mgr.start("A", cfg, tmp_path / "data", tmp_path / "runs")
    b = mgr.start("B", cfg, tmp_path / "data", tmp_path / "runs")
    assert mgr.get(b).state == "queued"  # one slot: B waits for A
    assert runs.read_status(mgr.get(b).run_dir)["state"] == "queued"
    sa, sb = mgr.wait(a, 10), mgr.wait(b, 10)
    assert sa.state == sb.state == "finished"
    assert sb.started >= sa.finished - 1e-3  # FIFO: B started after A ended
    assert [h["epoch"] for h in sa.history if h["event"] == "epoch"] == [1, 2, 3, 4, 5]
    assert sa.progress == 1.0
    # the subject is free again once its job ended
    c = mgr.start("A", cfg, tmp_path / "data", tmp_path / "runs")
    assert mgr.wait(c, 10).state == "finished"


def test_parallel_slots(tmp_path):
    mgr = JobManager(max_parallel=2, runner=_fake_runner(step_s=0.05))
    ids = [mgr.start(s, TrainConfig(preset="reference", epochs=5), tmp_path, tmp_path / "runs") for s in ("A", "B")]
    time.sleep(0.02)
    assert all(mgr.get(i).state == "running" for i in ids)
    assert all(mgr.wait(i, 10).state == "finished" for i in ids)


def test_stop_running_and_queued(tmp_path):
    mgr = JobManager(max_parallel=1, runner=_fake_runner(step_s=0.1, n_epochs=100))
    a = mgr.start("A", TrainConfig(preset="reference", epochs=100), tmp_path, tmp_path / "runs")
    b = mgr.start("B", TrainConfig(preset="reference", epochs=100), tmp_path, tmp_path / "runs")
    mgr.stop(b)
    assert mgr.get(b).state == "stopped"
    assert runs.read_status(mgr.get(b).run_dir)["state"] == "stopped"
    time.sleep(0.25)
    mgr.stop(a)
    s = mgr.wait(a, 10)
    assert s.state == "stopped" and 1 <= s.epoch < 100
    assert "best checkpoint" in s.message


def test_failure_message_is_kept(tmp_path):
    mgr = JobManager(runner=_fake_runner(fail=True))
    j = mgr.start("A", TrainConfig(preset="reference", epochs=5), tmp_path, tmp_path / "runs")
    s = mgr.wait(j, 10)
    assert s.state == "failed"
    assert "NaN" in s.error
    assert runs.read_status(s.run_dir)["state"] == "failed"
    assert mgr.active_for("A") is None


def test_snapshots_from_two_threads(tmp_path):
    mgr = JobManager(max_parallel=2, runner=_fake_runner(step_s=0.002, n_epochs=200))
    errors, seen = [], []

    def poll():
        try:
            for _ in range(300):
                for snap in mgr.snapshots():
                    epochs = [h["epoch"] for h in snap.history if h["event"] == "epoch"]
                    assert epochs == sorted(epochs)  # a consistent copy, never half-updated
                    seen.append(len(snap.history))
                time.sleep(0.001)
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    starters = [threading.Thread(target=lambda s=s: mgr.start(s, TrainConfig(preset="reference", epochs=200), tmp_path, tmp_path / "runs"))
                for s in ("A", "B")]
    pollers = [threading.Thread(target=poll) for _ in range(2)]
    for t in starters + pollers:
        t.start()
    for t in starters + pollers:
        t.join()
    for snap in mgr.snapshots():
        assert mgr.wait(snap.job_id, 20).state == "finished"
    assert not errors and max(seen) > 0
    assert {s.subject for s in mgr.snapshots()} == {"A", "B"}


def test_sync_runs_marks_orphans_interrupted(tmp_path):
    root = tmp_path / "runs"
    orphan = runs.new_run_dir(root, "X")
    runs.write_status(orphan, "running", "epoch 3")  # e.g. the server was restarted mid-run
    mgr = JobManager(runner=_fake_runner(step_s=0.2, n_epochs=50))
    j = mgr.start("Y", TrainConfig(preset="reference", epochs=50), tmp_path, root)
    infos = {i.path: i.state for i in mgr.sync_runs(root)}
    assert infos[orphan] == "interrupted"
    assert infos[mgr.get(j).run_dir] in ("queued", "running")  # the live job is left alone
    mgr.stop(j)
    mgr.wait(j, 10)


def test_resume_requires_checkpoint(tmp_path):
    d = runs.new_run_dir(tmp_path, "X")
    runs.write_status(d, "interrupted", "")
    mgr = JobManager(runner=_fake_runner())
    with pytest.raises((ValueError, FileNotFoundError)):
        mgr.resume(d)


def test_snapshots_say_stopping_until_the_job_has_ended(tmp_path):
    """Issue 22 item 4: 'a stop was requested' lives in the job's snapshot (every tab, every page),
    not in a set the dashboard keeps; a queued job is cancelled at once and never says stopping."""
    mgr = JobManager(max_parallel=1, runner=_fake_runner(step_s=0.1, n_epochs=100))
    cfg = TrainConfig(preset="reference", epochs=100)
    a = mgr.start("A", cfg, tmp_path, tmp_path / "runs")
    b = mgr.start("B", cfg, tmp_path, tmp_path / "runs")
    time.sleep(0.15)
    assert not mgr.get(a).stopping and not mgr.get(b).stopping
    assert mgr.stop(a).stopping and mgr.get(a).stopping and mgr.get(a).state == "running"
    assert not mgr.stop(b).stopping and mgr.get(b).state == "stopped"
    final = mgr.wait(a, 10)
    assert final.state == "stopped" and not final.stopping


def test_a_watched_runs_folder_is_synced_at_once_and_in_the_poll(tmp_path):
    """Issue 22 item 4: the manager marks orphaned runs interrupted when it starts watching a runs
    folder and again in its own poll (no page read has to); `close` ends the watcher."""
    root = tmp_path / "runs"
    first = runs.new_run_dir(root, "X")
    runs.write_status(first, "running", "epoch 3")  # the server was restarted mid-run
    mgr = JobManager(runner=_fake_runner(step_s=0.2, n_epochs=50), sync_s=0.05)
    j = mgr.start("Y", TrainConfig(preset="reference", epochs=50), tmp_path, root)
    mgr.watch(root)
    assert runs.read_status(first)["state"] == "interrupted"  # at once, before any listing
    later = runs.new_run_dir(root, "Z")
    runs.write_status(later, "running", "epoch 1")  # e.g. a worker that died without a word
    deadline = time.monotonic() + 10
    while runs.read_status(later)["state"] != "interrupted" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runs.read_status(later)["state"] == "interrupted"
    assert runs.read_status(mgr.get(j).run_dir)["state"] in ("queued", "running")  # the live job is left alone
    watcher = mgr._watcher
    mgr.close(timeout=10)
    watcher.join(5)
    assert not watcher.is_alive()
    again = runs.new_run_dir(root, "W")
    runs.write_status(again, "running", "epoch 1")
    time.sleep(0.3)
    assert runs.read_status(again)["state"] == "running"  # closed: nobody polls any more
