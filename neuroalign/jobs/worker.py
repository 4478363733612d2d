"""The training worker: one training run in a process of its own (what the dashboard's jobs launch).

    python -m neuroalign.jobs.worker --spec RUN_DIR/job_spec.json
    python -m torch.distributed.run --standalone --nproc_per_node=N -m neuroalign.jobs.worker --spec ...

`JobManager` (neuroalign.jobs.manager) writes the spec and starts this module; everything the job
thread learns about the run comes back through the run directory, never through a pipe:
progress and history from `metrics.jsonl` (what the trainer appends), state and message from
`status.json`, the result from `status.json` / `results.json`, this process's log on stderr
(which the manager sends to `worker.log`). Everything that is process-wide in torch (the thread
count, deterministic algorithms, module switches read from the environment) is set here, in the
worker, and dies with it.

Spec (`job_spec.json`, JSON): `{"version": 1, "mode": "start" | "resume", "subject", "data_dir",
"runs_dir", "run_dir" (created by the manager, holding a status.json), "cache_dir",
"config": TrainConfig.to_dict(), "runner": null | "module:function", "server": null | {"pid",
"start_ticks"}}`. `runner` replaces `pipeline.run_training` (mode start) or
`pipeline.resume_training` (mode resume) by a callable with the same parameters; the manager sets
it only when told so in code (tests, custom pipelines). `server`: see "Server lifetime" below.
Modes "shared" (`"subjects"`: one shared model over them) and "adapt" (`"subjects"`: the one new
subject, `"adapt_from"`: the shared run) run `neuroalign.jobs.shared_job.run` instead.

Stopping and the server's lifetime: see `neuroalign.jobs` (the package docstring). Here a watcher
thread polls `stop_request.json` and the server's pid and sets the trainer's stop event; under
torchrun every rank polls, and only rank 0 writes the run folder.

Exit status: 0 the run ended with a final status of its own (finished or stopped); 1 it failed
(status.json says `failed` and why; the last stderr line says it too); 2 the spec was unusable.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from neuroalign.jobs.protocol import SERVER_EXITED_MESSAGE, SPEC_VERSION, STOP_FILE, process_alive

logger = logging.getLogger("neuroalign.jobs.worker")

MODES = ("start", "resume", "shared", "adapt")  # shared / adapt: neuroalign.jobs.shared_job
STOP_POLL_S = 0.2
FINAL_STATES = ("finished", "stopped", "failed", "interrupted")


class SpecError(ValueError):
    """The worker spec is missing, unreadable or inconsistent (exit status 2)."""


def load_spec(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a worker spec; SpecError with one line naming what was found otherwise."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"worker spec {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"worker spec {path} is not readable JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"worker spec {path} must be a JSON object, got {type(spec).__name__}")
    if spec.get("version") != SPEC_VERSION:
        raise SpecError(f"worker spec {path} has version {spec.get('version')!r}, expected {SPEC_VERSION}")
    if spec.get("mode") not in MODES:
        raise SpecError(f"worker spec {path}: mode must be one of {', '.join(MODES)}, got {spec.get('mode')!r}")
    need = ("run_dir", "data_dir", "cache_dir") + (("subject", "runs_dir", "config") if spec["mode"] == "start" else
                                                   ("subjects", "runs_dir", "config") if spec["mode"] == "shared" else
                                                   ("subjects", "runs_dir", "adapt_from") if spec["mode"] == "adapt"
                                                   else ())
    missing = [k for k in need if spec.get(k) in (None, "")]
    if missing:
        raise SpecError(f"worker spec {path} lacks {', '.join(missing)}")
    run_dir = Path(spec["run_dir"])
    if not (run_dir / "status.json").is_file():
        raise SpecError(f"worker spec {path}: run folder {run_dir} has no status.json (the manager creates it)")
    runner = spec.get("runner")
    if runner is not None and (not isinstance(runner, str) or runner.count(":") != 1):
        raise SpecError(f"worker spec {path}: runner must be 'module:function', got {runner!r}")
    server = spec.get("server")
    if server is not None and not (isinstance(server, dict) and isinstance(server.get("pid"), int)
                                   and not isinstance(server["pid"], bool)):
        raise SpecError(f"worker spec {path}: server must be null or an object with an integer pid, got {server!r}")
    return spec


def _import_runner(name: str) -> Callable[..., Any]:
    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"worker runner {name!r} cannot be imported: {exc}") from None
    if not callable(fn):
        raise SpecError(f"worker runner {name!r} is not callable")
    return fn


def _server_watch(spec: dict[str, Any]) -> Callable[[], bool] | None:
    """A check that says True once the spec's server process is gone; None when the spec names no
    server (workers meant to outlive it). A direct child also notices its parent changing (the
    server's pid could be reused where there is no /proc to tell its start time)."""
    server = spec.get("server")
    if not isinstance(server, dict) or not isinstance(server.get("pid"), int):
        return None
    pid, ticks = server["pid"], server.get("start_ticks") if isinstance(server.get("start_ticks"), int) else None
    child = os.getppid() == pid

    def gone() -> bool:
        return (child and os.getppid() != pid) or not process_alive(pid, ticks)
    return gone


def _watch_stop(stop_file: Path, stop_event: threading.Event, done: threading.Event,
                server_gone: Callable[[], bool] | None = None, why: dict[str, str] | None = None) -> None:
    """Set `stop_event` once `stop_file` exists or `server_gone()` says the server exited (polled
    until `done`); `why["reason"]` says which ("user" or "server")."""
    while not done.wait(STOP_POLL_S):
        reason = None
        if stop_file.exists():
            reason = "user"
            logger.info("stop requested (%s); stopping after the current step", stop_file.name)
        elif server_gone is not None and server_gone():
            reason = "server"
            logger.warning("the dashboard server that started this worker exited; stopping after the current step")
        if reason is not None:
            if why is not None:
                why["reason"] = reason
            stop_event.set()
            return


def _server_exit_message(message: str) -> str:
    """The run's stop message, saying that the server's exit (not a user) stopped it."""
    user = "stopped by user"
    rest = message[len(user):] if message.startswith(user) else (f"; {message}" if message else "")
    return SERVER_EXITED_MESSAGE + rest


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def run_spec(spec: dict[str, Any]) -> str:
    """Run what `spec` says in this process; returns the run's final state (finished/stopped/failed).

    Raises what the training raises, after making sure (rank 0) that status.json says `failed`
    with the one-line reason when the runner did not write a final status itself.
    """
    from neuroalign.training import runs as runs_io

    run_dir = Path(spec["run_dir"])
    is_main = _rank() == 0
    stop_event, done, why = threading.Event(), threading.Event(), {}
    watcher = threading.Thread(target=_watch_stop, args=(run_dir / STOP_FILE, stop_event, done, _server_watch(spec),
                                                         why), name="neuroalign-stop-watcher", daemon=True)
    watcher.start()
    try:
        if spec["mode"] in ("shared", "adapt"):
            from neuroalign.jobs import shared_job

            shared_job.run(spec, stop_event)
        elif spec["mode"] == "start":
            from neuroalign.config import TrainConfig

            config = TrainConfig.from_dict(spec["config"])
            config.validate()  # the worker's boundary: a spec is a file; nothing below validates again
            if spec.get("runner"):
                runner = _import_runner(spec["runner"])
            else:
                from neuroalign.training import pipeline

                runner = pipeline.run_training
            runner(spec["subject"], config, spec["data_dir"], spec["runs_dir"], stop_event=stop_event,
                   run_dir=run_dir if is_main else None, cache_dir=spec["cache_dir"])
        else:
            if spec.get("runner"):
                runner = _import_runner(spec["runner"])
            else:
                from neuroalign.training import pipeline

                runner = pipeline.resume_training
            runner(run_dir, data_dir=spec["data_dir"], stop_event=stop_event, cache_dir=spec["cache_dir"])
    except runs_io.RunLockedError:
        raise  # another process writes the run: its status is not ours to change
    except BaseException as exc:
        if is_main and runs_io.read_status(run_dir).get("state") not in FINAL_STATES:
            runs_io.write_status(run_dir, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        done.set()
    if not is_main:
        return "finished"
    status = runs_io.read_status(run_dir)
    state = status.get("state")
    if state not in FINAL_STATES:  # a runner that returned without a final status
        state = "stopped" if stop_event.is_set() else "finished"
        status = runs_io.write_status(run_dir, state, "stopped by user" if state == "stopped" else "finished")
    if state == "stopped" and why.get("reason") == "server":
        runs_io.write_status(run_dir, state, _server_exit_message(str(status.get("message") or "")))
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neuroalign.jobs.worker",
                                     description="Run one training job described by a JSON spec (see the module docstring).")
    parser.add_argument("--spec", required=True, help="path of the job spec (job_spec.json in the run folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s rank{_rank()} %(levelname)s %(name)s: %(message)s")
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        logger.error("%s", exc)
        return 2
    logger.info("worker pid %d: %s %s in %s", os.getpid(), spec["mode"], spec.get("subject") or "", spec["run_dir"])
    try:
        state = run_spec(spec)
    except SpecError as exc:
        logger.error("%s", exc)
        return 2
    except BaseException as exc:  # noqa: BLE001 - the one line the job card shows comes last
        logger.exception("training failed")
        logger.error("failed: %s: %s", type(exc).__name__, " ".join(str(exc).split()))
        return 1
    logger.info("run ended: %s", state)
    return 1 if state == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
