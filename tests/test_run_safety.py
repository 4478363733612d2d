"""Issue 20, the run folder's side: one writer at a time (item 3), last.pt from the start (6), a resume
that continues exactly like the uninterrupted run (7), a full disk (8), wrong-typed config.json (12),
a reused pid (13)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from neuroalign import io_utils
from neuroalign.cli import main
from neuroalign.config import TrainConfig
from neuroalign.training import pipeline, runs


def tiny_config(**changes) -> TrainConfig:
    base = {"epochs": 4, "batch_size": 16, "device": "cpu", "image.backbone": "ds_net_tiny", "image.stage": 1,
            "image.block": 1, "neural.d_model": 16, "checkpoint_every_epochs": 1, "log_every_steps": 1}
    base.update(changes)
    return TrainConfig(preset="reference").replace(**base)


class Killed(BaseException):
    """What a kill does to the training, as an exception (the process 'dies' mid-run)."""


# ---- item 3: one writer at a time -------------------------------------------------------------------
@pytest.fixture
def held_run(tmp_path):
    """A run folder whose lock another process holds (as `train --resume` would); yields (folder, pid)."""
    run = runs.new_run_dir(tmp_path / "runs", "tiny")
    runs.write_status(run, "running", "epoch 3/10", progress=0.3)
    before = (run / runs.STATUS_FILE).read_text()
    code = textwrap.dedent(f"""
        import sys, time
        from neuroalign.training import runs
        with runs.run_lock({str(run)!r}, "train --resume"):
            print("locked", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield run, proc.pid, before
    finally:
        proc.kill()
        proc.wait()


def test_a_locked_run_refuses_resume_evaluate_delete_naming_the_holder(held_run, capsys):
    from neuroalign.training.run_eval import evaluate_run

    run, pid, before = held_run
    for attempt in (lambda: pipeline.resume_training(run), lambda: evaluate_run(run), lambda: runs.delete_run(run)):
        with pytest.raises(runs.RunLockedError) as info:
            attempt()
        text = str(info.value)
        assert "\n" not in text and run.name in text and f"pid {pid}" in text and "train --resume" in text
    assert run.is_dir() and (run / runs.STATUS_FILE).read_text() == before  # nothing of the holder's touched
    assert runs.lock_holder(run)["pid"] == pid
    with pytest.raises(runs.RunLockedError):
        runs.check_unlocked(run)
    assert main(["train", "--resume", str(run)]) == 2  # the CLI: one line, no traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: run ") and f"pid {pid}" in err[0]
    assert runs.mark_interrupted(run.parent) == []  # a locked run is live


def test_lock_is_released_reentrant_in_a_thread_and_exclusive_across_threads(tmp_path):
    run = runs.new_run_dir(tmp_path, "tiny")
    runs.write_status(run, "finished", "done")
    with runs.run_lock(run, "train"):
        with runs.run_lock(run, "evaluate"):  # resume evaluates inside its own lock
            pass
        errors = []

        def other():
            try:
                with runs.run_lock(run, "delete"):
                    pass
            except runs.RunLockedError as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert errors and "another thread" in errors[0]
    assert runs.lock_holder(run) is None  # released, its label cleared
    runs.delete_run(run)  # and free for the next writer
    assert not run.exists()


def test_lock_held_by_a_dead_process_is_free(tmp_path):
    run = runs.new_run_dir(tmp_path, "tiny")
    runs.write_status(run, "stopped", "x")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os
        from neuroalign.training import runs
        with runs.run_lock({str(run)!r}, "train"):
            os._exit(9)  # killed while holding it
    """)])
    assert proc.returncode == 9
    assert runs.lock_holder(run) is None
    with runs.run_lock(run, "evaluate"):
        pass


# ---- items 6 and 7: last.pt from the start; a resume continues exactly --------------------------------
def _epochs(run_dir):
    """(epoch, train_loss, val_loss) of each epoch record of metrics.jsonl, in file order."""
    return [(r["epoch"], r["train_loss"], r["val_loss"]) for r in runs.read_metrics(run_dir) if r["event"] == "epoch"]


def _kill_at(event_name: str, epoch: int):
    def callback(event, values):
        if event == event_name and values["epoch"] == epoch:
            raise Killed(f"killed at {event} of epoch {epoch}")
    return callback


@pytest.mark.usefixtures("one_torch_thread")
def test_resume_after_a_kill_continues_like_the_uninterrupted_run(tiny_subject_root, tmp_path):
    # dropout draws from the torch RNG every step: a resume must continue its stream
    config = tiny_config(**{"neural.dropout": 0.3, "data.repeat_augment": 0.5})
    straight = pipeline.run_training("tiny", config, tiny_subject_root, tmp_path / "a")
    expected = _epochs(straight)
    assert [e for e, _, _ in expected] == [1, 2, 3, 4]

    with pytest.raises(Killed):  # dies after logging epoch 3, before its checkpoint
        pipeline.run_training("tiny", config, tiny_subject_root, tmp_path / "b", callback=_kill_at("epoch", 3))
    killed = next((tmp_path / "b").iterdir())
    assert runs.load_checkpoint(killed / runs.LAST_CKPT)["epoch"] == 2
    assert [e for e, _, _ in _epochs(killed)] == [1, 2, 3]
    pipeline.resume_training(killed)
    got = _epochs(killed)
    assert [e for e, _, _ in got] == [1, 2, 3, 4]  # epoch 3's record from before the kill is gone
    assert got == expected  # every epoch's losses exactly as without the kill
    steps = [r["epoch"] for r in runs.read_metrics(killed) if r["event"] == "step"]
    assert steps == sorted(steps)  # the step log is not interleaved either
    assert runs.read_status(killed)["state"] == "finished"


@pytest.mark.usefixtures("one_torch_thread")
def test_killed_in_the_first_epoch_resumes_from_the_start_checkpoint(tiny_subject_root, tmp_path):
    config = tiny_config(epochs=2, init="linear", **{"image.head": "readout", "neural.kind": "linear",
                                                     "neural.dropout": 0.2})
    straight = pipeline.run_training("tiny", config, tiny_subject_root, tmp_path / "a")
    with pytest.raises(Killed):  # the first step of epoch 1
        pipeline.run_training("tiny", config, tiny_subject_root, tmp_path / "b", callback=_kill_at("step", 1))
    killed = next((tmp_path / "b").iterdir())
    last = runs.load_checkpoint(killed / runs.LAST_CKPT)
    assert last["epoch"] == 0 and last["global_step"] == 0 and last["linear_start"] is not None
    assert {"torch", "numpy", "python"} <= set(last["rng"])
    pipeline.resume_training(killed)
    assert _epochs(killed) == _epochs(straight)
    assert not [r for r in runs.read_metrics(killed) if r["event"] == "step" and r["step"] == 1][1:]


def test_truncate_metrics_keeps_the_checkpoint_epochs_only(tmp_path):
    run = runs.new_run_dir(tmp_path, "s")
    for record in ({"event": "step", "epoch": 1}, {"event": "epoch", "epoch": 1}, {"event": "step", "epoch": 2},
                   {"event": "epoch", "epoch": 2}, {"event": "step", "epoch": 3}):
        runs.append_metrics(run, record)
    with open(run / runs.METRICS_FILE, "a") as fh:
        fh.write('{"event": "st')  # torn by the kill
    assert runs.truncate_metrics(run, 2) == 2
    assert [(r["event"], r["epoch"]) for r in runs.read_metrics(run)] == [
        ("step", 1), ("epoch", 1), ("step", 2), ("epoch", 2)]
    assert runs.truncate_metrics(run, 2) == 0


# ---- item 8: a full disk ------------------------------------------------------------------------------
def test_atomic_write_on_a_full_disk_names_the_path(tmp_path, monkeypatch):
    import torch

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_utils.os, "fsync", full)
    with pytest.raises(OSError) as info:
        io_utils.atomic_torch_save(tmp_path / "last.pt", {"w": torch.zeros(10)})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_torch_save_runtime_error_of_a_full_disk_is_recognised():
    import io

    import torch

    class Full(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RuntimeError) as info:  # torch reports it as "enforce fail at inline_container.cc"
        torch.save({"w": torch.zeros(1000)}, io.BufferedWriter(Full(), 64))
    assert io_utils.is_disk_full(info.value)
    assert not io_utils.is_disk_full(RuntimeError("unrelated"))


def test_train_on_a_full_disk_one_line_and_no_run_folder_left(tiny_subject_root, tmp_path, monkeypatch, capsys):
    runs_root = tmp_path / "runs"
    real_fsync = os.fsync

    def fsync(fd):  # the disk fills up once last.pt is written
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(".last.pt."):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(io_utils.os, "fsync", fsync)
    code = main(["train", "--subjects", "tiny", "--data-dir", str(tiny_subject_root), "--runs-dir", str(runs_root),
                 "--epochs", "2", "--cache-dir", str(tmp_path / "cache"), "--quiet", "--backbone", "ds_net_tiny",
                 "--stage", "1", "--block", "1", "--device", "cpu", "--batch-size", "16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "No space left on device" in err[0] and "last.pt" in err[0] and "Traceback" not in err[0]
    assert list(runs_root.iterdir()) == []  # nothing resumable was written: no run folder left behind


# ---- item 12: config.json of the right syntax but the wrong types -------------------------------------
@pytest.mark.parametrize("path, value, expect", [
    (("config", "epochs"), "10", "config.epochs = \"10\""),
    (("config", "loss"), 3, "config.loss = 3"),
    (("config", "optim", "image_lr"), [1], "config.optim.image_lr"),
    (("config", "epochs"), -3, "epochs must be >= 1"),
    (("config",), "x", "expected an object"),
    (("subject", "name"), 5, "subject.name"),
    (("subject",), [], "expected an object"),
])
def test_wrong_typed_config_json_gives_one_line(tmp_path, capsys, path, value, expect):
    run = runs.new_run_dir(tmp_path, "s")
    record = {"config": TrainConfig(preset="reference").to_dict(), "subject": {"name": "s", "path": str(tmp_path), "data_hash": "x"}}
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    (run / runs.CONFIG_FILE).write_text(json.dumps(record))
    runs.write_split(run, {"train": [0, 1], "val": [2, 3], "test": [4, 5]})
    (run / runs.BEST_CKPT).write_bytes(b"")
    with pytest.raises(runs.RunFileError) as info:
        runs.load_run(run).train_config()
    assert expect in str(info.value) and "config.json" in str(info.value) and "\n" not in str(info.value)
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json" in err[0]


# ---- item 13: a reused pid ----------------------------------------------------------------------------
def test_status_records_the_start_time_and_a_reused_pid_is_not_alive(tmp_path):
    run = runs.new_run_dir(tmp_path, "s")
    status = runs.write_status(run, "running", "epoch 1")
    assert status["pid"] == os.getpid() and isinstance(status["pid_start"], int)
    assert runs.status_process_alive(status)
    # a dead run whose pid now belongs to another process (here: this one, started at another time)
    runs.write_status(run, "running", "epoch 1")
    stale = dict(runs.read_status(run), pid_start=status["pid_start"] - 1000)
    io_utils.atomic_write_json(run / runs.STATUS_FILE, stale)
    assert not runs.status_process_alive(stale)
    runs.delete_run(run)  # not refused as "running"
    assert not run.exists()

    other = runs.new_run_dir(tmp_path, "t")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        ticks = int(open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[19])
        io_utils.atomic_write_json(other / runs.STATUS_FILE, {"state": "running", "pid": proc.pid,
                                                              "pid_start": ticks + 7})
        assert runs.mark_interrupted(tmp_path) == [other]  # the pid lives, but it is not the run's process
        io_utils.atomic_write_json(other / runs.STATUS_FILE, {"state": "running", "pid": proc.pid, "pid_start": ticks})
        assert runs.mark_interrupted(tmp_path) == []  # the run's own process: still running
    finally:
        proc.kill()
        proc.wait()
