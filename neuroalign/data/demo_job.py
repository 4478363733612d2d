"""The first-start demo subjects, created by a background thread that the server process owns.

The dashboard calls `start_once(root)` on every page view: the first call for an empty data root
starts one thread that writes the simulated subjects (`SubjectStore.ensure_demo`); every later call,
from any browser session, gets the same `DemoJob` back and can show its progress until it ends.
Attempted once per data root and process, so deleting every subject later does not bring the demo
back. No streamlit here: the pages read `DemoJob.snapshot()`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

RUNNING, FINISHED, FAILED = "running", "finished", "failed"


@dataclass(frozen=True)
class DemoStatus:
    """What a page shows: state, the subjects written so far (of `total`), seconds since the start,
    the names created (finished) or the one-line error (failed)."""

    root: Path
    state: str
    written: tuple[str, ...]
    total: int
    elapsed_s: float
    names: tuple[str, ...] = ()
    error: str = ""

    @property
    def running(self) -> bool:
        return self.state == RUNNING


@dataclass
class DemoJob:
    root: Path
    size: str = "default"
    seed: int = 0
    state: str = RUNNING
    started: float = field(default_factory=time.time)
    ended: float | None = None
    names: tuple[str, ...] = ()
    error: str = ""
    thread: threading.Thread | None = None

    def _run(self) -> None:
        from neuroalign.data.store import SubjectStore

        try:
            names = SubjectStore(self.root).ensure_demo(size=self.size, seed=self.seed)
        except Exception as exc:  # noqa: BLE001 - reported on every page; the CLI can retry
            logger.exception("demo creation failed")
            self.error, self.state = (str(exc) or type(exc).__name__), FAILED
        else:
            self.names, self.state = tuple(names), FINISHED
            logger.info("demo subjects ready in %s: %s", self.root, ", ".join(names) or "none needed")
        finally:
            self.ended = time.time()

    def snapshot(self) -> DemoStatus:
        from neuroalign.data.names import name_taken
        from neuroalign.data.simulate import DEMO_SUBJECTS

        written = tuple(n for n in DEMO_SUBJECTS if name_taken(self.root, n)) if self.state == RUNNING else self.names
        return DemoStatus(root=self.root, state=self.state, written=written, total=len(DEMO_SUBJECTS),
                          elapsed_s=(self.ended or time.time()) - self.started, names=self.names, error=self.error)

    def wait(self, timeout: float | None = None) -> DemoStatus:
        if self.thread is not None:
            self.thread.join(timeout)
        return self.snapshot()


_jobs: dict[str, DemoJob | None] = {}
_lock = threading.Lock()


def start_once(root: str | Path, size: str = "default", seed: int = 0) -> DemoJob | None:
    """The demo job of `root`: started by the first call when the root is empty (or missing), the same
    job for every later call; None when the root held something at the first call (no demo)."""
    from neuroalign.data.store import SubjectStore

    key = str(Path(root).expanduser().resolve())
    with _lock:
        if key in _jobs:
            return _jobs[key]
        try:
            empty = SubjectStore(Path(key)).is_empty()
        except ValueError as exc:  # e.g. the root is a file: say so on the pages, as a failed demo
            job = DemoJob(Path(key), size, seed, state=FAILED, error=str(exc), ended=time.time())
            _jobs[key] = job
            return job
        if not empty:
            _jobs[key] = None
            return None
        job = _jobs[key] = DemoJob(Path(key), size, seed)
        job.thread = threading.Thread(target=job._run, name="neuroalign-demo", daemon=True)
        job.thread.start()
        return job


def current(root: str | Path) -> DemoJob | None:
    """The demo job of `root` if one was started in this process."""
    with _lock:
        return _jobs.get(str(Path(root).expanduser().resolve()))
