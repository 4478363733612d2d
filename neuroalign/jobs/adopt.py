"""Finding workers that run without a job of this process to follow them (adoption).

A worker normally ends with the server that started it (it watches the server's pid), but one can
be alive when a server starts: a second server on the same runs folder while the first still runs,
or a worker started with $NEUROALIGN_JOBS_OUTLIVE_SERVER=1 before a restart. `live_workers` lists
them, from the `worker.json` pid records of a runs folder, as `Job` records in state running
(kind "adopted") for the manager to follow; a record whose process is gone is removed, and the
run's status is left for `runs.mark_interrupted` to judge.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from neuroalign.config import TrainConfig
from neuroalign.jobs import protocol as proto
from neuroalign.jobs.state import Job
from neuroalign.training import runs as runs_io

logger = logging.getLogger(__name__)


def _config(run_dir: Path, spec: dict) -> TrainConfig:
    record = proto.read_json(run_dir / runs_io.CONFIG_FILE)
    record = record if isinstance(record, dict) else {}
    try:
        return TrainConfig.from_dict(spec.get("config") or record.get("config") or {})
    except (ValueError, TypeError):
        return TrainConfig(preset="reference")


def _subject(run_dir: Path, spec: dict) -> str:
    record = proto.read_json(run_dir / runs_io.CONFIG_FILE)
    record = record if isinstance(record, dict) else {}
    subject = record.get("subject") if isinstance(record.get("subject"), dict) else {}
    if spec.get("mode") in ("shared", "adapt") and isinstance(spec.get("subjects"), list):
        return "+".join(str(n) for n in spec["subjects"])
    return str(spec.get("subject") or subject.get("name") or run_dir.name)


def live_workers(runs_dir: Path, followed: Callable[[Path], bool], new_id: Callable[[], str]) -> list[Job]:
    """Jobs for the live workers recorded under `runs_dir` whose run `followed(run_dir)` says no
    job of this process follows yet; `new_id()` names each one."""
    if not runs_dir.is_dir():
        return []
    found = []
    for marker in sorted(runs_dir.glob(f"*/{proto.WORKER_FILE}")):
        run_dir = marker.parent
        if followed(run_dir):
            continue
        pid, ticks, info = proto.recorded_worker(run_dir)
        if not proto.process_alive(pid, ticks):
            proto.remove(marker)  # its process is gone; mark_interrupted judges the status
            continue
        if runs_io.read_status(run_dir).get("state") not in runs_io.ACTIVE_STATES:
            continue  # the worker has written its end and is exiting
        spec = proto.read_json(run_dir / proto.SPEC_FILE)
        spec = spec if isinstance(spec, dict) else {}
        nproc = info.get("nproc") if isinstance(info.get("nproc"), int) else 1
        job = Job(new_id(), _subject(run_dir, spec), run_dir, _config(run_dir, spec),
                  Path(spec.get("data_dir") or "."), runs_dir, resume=spec.get("mode") == "resume",
                  kind="adopted", nproc=nproc, state="running", message="running (found after a restart)",
                  pid=pid, alive=True, start_ticks=ticks)
        if spec.get("mode") in ("shared", "adapt"):  # neuroalign.jobs.shared_job
            job.mode = spec["mode"]
            job.subjects = tuple(str(n) for n in spec.get("subjects") or ())
            job.adapt_from = Path(spec["adapt_from"]) if spec.get("adapt_from") else None
        job.started = job.last_activity = time.time()
        found.append(job)
        logger.info("found the live worker pid %s of run %s (%s)", pid, run_dir.name, job.job_id)
    return found
