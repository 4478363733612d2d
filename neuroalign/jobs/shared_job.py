"""Shared-model jobs of the dashboard: one shared model over several subjects (`train --shared`) and
a new subject adapted from a shared run (`train --adapt-from`), run by the same job machinery as a
single-subject training (`manager.JobManager.start_shared` / `start_adapt`: a worker process, followed
through its run folder, shown on the Train page's job card, listed on the Runs page when it ends).

Manager side (`check_shared` / `check_adapt`): the refusals the library would raise once the worker
had started -- fewer than two or repeated subjects, a subject that is not in the data root or cannot
be read, images of different sizes, a subject already in the shared run, a folder that is not a
shared run -- as one-line ValueErrors before any run folder is made (from the subjects' headers and
the shared run's JSON files; no arrays are loaded in the server). What only the data can tell (too
few val/test images under the shared split rule, constant features) fails the job with its one line.

Worker side (`run`): calls `training.shared_runs.train_shared` / `adapt_from_run` with the run
folder the manager made. The library reports phases ("features: ...", "shared fit: ridge strength
2/5", "evaluating A ..."), not epochs; `PhaseProgress` turns them into a monotone fraction written
into status.json as `progress` (what the job card's bar shows). A stop (the Stop button, or the
dashboard server's exit) takes effect at the next phase: the fit is closed form, so there is no
checkpoint to restore or resume; the run ends `stopped` with what was written so far.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Sequence

MODES = ("shared", "adapt")
STOPPED_MESSAGE = "stopped by user before the shared fit ended (closed form: nothing to resume; start it again)"


class StopRequested(Exception):
    """Raised from the status callback between phases once a stop was requested."""


def check_shared(names: Sequence[str], data_dir: str | Path) -> list[str]:
    """The subjects of a shared job, checked (one-line ValueError otherwise)."""
    from neuroalign.data import SubjectStore

    names = [str(n) for n in names]
    if len(names) < 2:
        raise ValueError(f"a shared model needs at least 2 subjects, got {len(names)}; pick more subjects or train "
                         "one run per subject")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"subject {dup[0]!r} is listed twice; expected distinct subjects")
    store = SubjectStore(data_dir)
    sizes = {}
    for name in names:
        if not store.exists(name):
            raise ValueError(f"no subject {name!r} in {store.root}")
        info = store.info(name)
        if info.error:
            raise ValueError(f"subject {name!r} cannot be read: {info.error}")
        sizes[name] = tuple(info.image_shape)
    if len(set(sizes.values())) > 1:
        raise ValueError("the subjects' images differ in size (" + ", ".join(f"{n}: {h}x{w}" for n, (h, w) in sizes.items())
                         + "); expected one image size for a shared model (train them separately)")
    return names


def shared_subjects(run_dir: str | Path) -> list[str]:
    """The subjects of a shared run (its config.json), [] when it records none."""
    from neuroalign.training.shared_runs import read_shared_record

    return [str(s.get("name")) for s in (read_shared_record(run_dir).get("subjects") or []) if isinstance(s, dict)]


def check_adapt(from_dir: str | Path, name: str, data_dir: str | Path) -> Path:
    """The shared run a new subject is adapted from, checked (one-line ValueError otherwise)."""
    from neuroalign.data import SubjectStore
    from neuroalign.training.shared import MODEL_JSON, MODEL_NPZ
    from neuroalign.training.shared_runs import read_shared_record

    from_dir = Path(from_dir)
    try:
        record = read_shared_record(from_dir)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    missing = [f for f in (MODEL_NPZ, MODEL_JSON) if not (from_dir / f).is_file()]
    if missing:
        raise ValueError(f"shared run {from_dir.name} has no {missing[0]} (it did not finish); pick a finished shared run")
    if name in shared_subjects(from_dir):
        raise ValueError(f"subject {name!r} is already part of the shared run {from_dir.name}; expected a new subject")
    store = SubjectStore(data_dir)
    if not store.exists(name):
        raise ValueError(f"no subject {name!r} in {store.root}")
    info = store.info(name)
    if info.error:
        raise ValueError(f"subject {name!r} cannot be read: {info.error}")
    want = tuple((record.get("image") or {}).get("image_shape") or ())
    if want and tuple(info.image_shape) != want:
        raise ValueError(f"{name} has {info.image_shape[0]}x{info.image_shape[1]} images, the shared run {from_dir.name} "
                         f"was trained on {want[0]}x{want[1]}; expected the same image size")
    return from_dir


class PhaseProgress:
    """A monotone fraction done from the library's phase messages (see the module docstring). A
    shared fit: hashing, then per candidate image model ("(i/n)") the features of every subject
    (40 % of its share) and the fit (Gram matrix, ridge strengths: 60 %), then one evaluation per
    subject. An adaptation: features, read-in fit, evaluation."""

    def __init__(self, mode: str, n_subjects: int) -> None:
        self.mode, self.n = mode, max(int(n_subjects), 1)
        self.value = 0.0
        self.candidate, self.candidates, self.features_seen = 1, 1, 0
        self.evaluated = 0

    def _in_candidate(self, fraction: float) -> float:
        return 0.05 + 0.75 * ((self.candidate - 1) + fraction) / self.candidates

    def update(self, message: str) -> float:
        m = message.lower()
        value = self.value
        if self.mode == "adapt":
            value = {"features": 0.1, "fitting": 0.4, "evaluating": 0.7}.get(m.split(" ", 1)[0], value)
        elif m.startswith("hashing"):
            value = 0.02
        elif m.startswith("features"):
            cand = re.search(r"\((\d+)/(\d+)\)\s*$", message)
            if cand:
                i, total = int(cand.group(1)), int(cand.group(2))
                if i != self.candidate:
                    self.features_seen = 0
                self.candidate, self.candidates = i, max(total, 1)
            value = self._in_candidate(0.4 * min(self.features_seen, self.n) / self.n)
            self.features_seen += 1
        elif m.startswith("shared fit"):
            ridge = re.search(r"ridge strength (\d+)/(\d+)", m)
            value = self._in_candidate(0.4 + (0.6 * int(ridge.group(1)) / max(int(ridge.group(2)), 1) if ridge else 0.0))
        elif m.startswith("evaluating"):
            self.evaluated += 1
            value = 0.8 + 0.18 * (self.evaluated - 1) / self.n
        self.value = min(max(self.value, value), 0.99)
        return self.value


def run(spec: dict[str, Any], stop_event: threading.Event) -> None:
    """Run a shared / adapt job spec in this (worker) process, writing into `spec["run_dir"]`."""
    from neuroalign.training import runs as runs_io

    run_dir = Path(spec["run_dir"])
    mode = spec["mode"]
    names = [str(n) for n in spec.get("subjects") or []]
    progress = PhaseProgress(mode, len(names))

    def on_status(message: str) -> None:
        if stop_event.is_set():
            raise StopRequested(STOPPED_MESSAGE)
        runs_io.write_status(run_dir, "running", message, progress=progress.update(message))

    try:
        if mode == "shared":
            from neuroalign.config import TrainConfig
            from neuroalign.training.shared_runs import train_shared

            train_shared(names, TrainConfig.from_dict(spec["config"]), spec["data_dir"], spec["runs_dir"],
                         cache_dir=spec["cache_dir"], on_status=on_status, baselines=bool(spec.get("baselines", True)),
                         run_dir=run_dir)
        else:
            from neuroalign.training.shared_runs import adapt_from_run

            adapt_from_run(spec["adapt_from"], names, spec["data_dir"], spec["runs_dir"], cache_dir=spec["cache_dir"],
                           on_status=on_status, baselines=bool(spec.get("baselines", True)), run_dir=run_dir)
    except StopRequested:
        runs_io.write_status(run_dir, "stopped", STOPPED_MESSAGE)
