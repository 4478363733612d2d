"""Run directories: the on-disk source of truth for every training run.

`<runs-dir>/<run-id>/` holds `config.json`, `split.json`, `normaliser.json`, `metrics.jsonl`
(append-only), `status.json`, `best.pt`, `last.pt`, `results.json`, `test_outputs.npz`,
`loss_data.mat`, `test_result.mat`. Everything except `metrics.jsonl` is written atomically
(temp file + rename); `metrics.jsonl` is appended line by line and a torn last line (crash
mid-write) is skipped when reading.

`config.json` layout: `{"config": TrainConfig.to_dict(), "subject": {"name", "path", "data_hash",
"n_images", "n_neurons", "simulated"}, "code_version", "torch_version", "device", "world_size",
"created", "resumed_from_epoch"}` (`resumed_from_epoch`: the epoch of `last.pt` a resumed run
continued from, or null).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from neuroalign.io_utils import atomic_write_json
from neuroalign.io_utils import pid_alive as _pid_alive

logger = logging.getLogger(__name__)

STATES = ("queued", "running", "finished", "failed", "stopped", "interrupted")
ACTIVE_STATES = ("queued", "running")
CONFIG_FILE, SPLIT_FILE, NORMALISER_FILE = "config.json", "split.json", "normaliser.json"
METRICS_FILE, STATUS_FILE, RESULTS_FILE = "metrics.jsonl", "status.json", "results.json"
BEST_CKPT, LAST_CKPT, TEST_OUTPUTS = "best.pt", "last.pt", "test_outputs.npz"
LOSS_MAT, TEST_MAT = "loss_data.mat", "test_result.mat"

_metrics_lock = threading.Lock()


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_run_dir(runs_dir: str | os.PathLike, subject: str) -> Path:
    """Create and return a fresh, uniquely named run folder `<runs_dir>/<UTC time>_<subject>_<hex>`."""
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", subject).strip("-") or "subject"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for _ in range(100):
        path = root / f"{stamp}_{safe}_{secrets.token_hex(3)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"could not create a unique run folder under {root}")  # pragma: no cover


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        logger.warning("unreadable %s: %s", path, exc)
        return None


def is_run_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / STATUS_FILE).is_file() or (path / CONFIG_FILE).is_file())


def read_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    return _read_json(Path(run_dir) / STATUS_FILE) or {}


def write_status(run_dir: str | os.PathLike, state: str, message: str = "", **fields: Any) -> dict[str, Any]:
    """Atomically replace `status.json`, keeping earlier fields (progress, epoch, ...) not given."""
    if state not in STATES:
        raise ValueError(f"status state must be one of {STATES}, got {state!r}")
    status = read_status(run_dir)
    status.update(fields)
    status.update({"state": state, "message": message, "updated": _utc_now()})
    if state in ACTIVE_STATES:
        status["pid"] = os.getpid()
    status.setdefault("progress", 0.0)
    atomic_write_json(Path(run_dir) / STATUS_FILE, status)
    return status


def append_metrics(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON object as a line to `metrics.jsonl` (non-finite floats become null)."""
    clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in record.items()}
    line = json.dumps(clean, default=float, allow_nan=False) + "\n"
    with _metrics_lock, open(Path(run_dir) / METRICS_FILE, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete lines of `metrics.jsonl` (a torn or corrupt line is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def write_split(run_dir: str | os.PathLike, split: dict[str, np.ndarray]) -> None:
    atomic_write_json(Path(run_dir) / SPLIT_FILE, {k: [int(i) for i in split[k]] for k in ("train", "val", "test")})


def read_split(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    data = _read_json(Path(run_dir) / SPLIT_FILE)
    if not isinstance(data, dict) or not all(k in data for k in ("train", "val", "test")):
        raise FileNotFoundError(f"{Path(run_dir) / SPLIT_FILE} is missing or lacks train/val/test")
    return {k: np.asarray(data[k], dtype=np.int64) for k in ("train", "val", "test")}


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` (tensors and plain containers only) onto the CPU."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass
class RunRecord:
    """Everything stored in one run folder (files that do not exist yet are None/empty)."""

    path: Path
    config: dict[str, Any]
    status: dict[str, Any]
    results: dict[str, Any] | None
    split: dict[str, np.ndarray] | None = None

    @property
    def run_id(self) -> str:
        return self.path.name

    def train_config(self):
        """The run's `TrainConfig`."""
        from neuroalign.config import TrainConfig

        return TrainConfig.from_dict(self.config["config"])

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def test_outputs(self) -> dict[str, np.ndarray] | None:
        """`test_indices (n,)`, `image_maps (n,16,64)`, `neural_maps (n,16,64)`, `similarity (n,n)`
        (image rows x neural columns), `ssim (n,)`; None before evaluation."""
        path = self.path / TEST_OUTPUTS
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


def load_run(run_dir: str | os.PathLike) -> RunRecord:
    path = Path(run_dir)
    if not is_run_dir(path):
        raise FileNotFoundError(f"{path} is not a run folder (expected {STATUS_FILE} or {CONFIG_FILE} inside)")
    try:
        split = read_split(path)
    except FileNotFoundError:
        split = None
    return RunRecord(path=path, config=_read_json(path / CONFIG_FILE) or {}, status=read_status(path),
                     results=_read_json(path / RESULTS_FILE), split=split)


@dataclass
class RunInfo:
    """One line of the runs table (cheap: reads only the small JSON files)."""

    run_id: str
    path: Path
    subject: str
    state: str
    message: str
    created: str | None
    preset: str | None
    progress: float
    metrics: dict[str, float | None] = field(default_factory=dict)


def _summary(results: dict[str, Any] | None) -> dict[str, float | None]:
    if not results or "test" not in results:
        return {}
    test = results["test"]
    base = results.get("baselines") or {}
    ridge = base.get("ridge") or {}
    return {
        "test_top1_image_to_neural": test.get("image_to_neural", {}).get("top1"),
        "test_top1_neural_to_image": test.get("neural_to_image", {}).get("top1"),
        "chance_top1": test.get("chance_top1"),
        "n_test": test.get("n"),
        "ridge_top1_image_to_neural": ridge.get("image_to_neural", {}).get("top1"),
        "mean_ssim": (results.get("ssim") or {}).get("mean"),
    }


def list_runs(runs_dir: str | os.PathLike) -> list[RunInfo]:
    """All run folders under `runs_dir`, newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    infos = []
    for path in sorted(root.iterdir(), reverse=True):
        if not is_run_dir(path):
            continue
        cfg = _read_json(path / CONFIG_FILE) or {}
        status = read_status(path)
        infos.append(RunInfo(
            run_id=path.name, path=path,
            subject=(cfg.get("subject") or {}).get("name", "?"),
            state=status.get("state", "unknown"), message=status.get("message", ""),
            created=cfg.get("created"), preset=(cfg.get("config") or {}).get("preset"),
            progress=float(status.get("progress") or 0.0),
            metrics=_summary(_read_json(path / RESULTS_FILE)),
        ))
    return infos


def delete_run(run_dir: str | os.PathLike) -> None:
    """Remove a run folder (refuses folders that are not runs, and runs still active in this process)."""
    path = Path(run_dir)
    if not is_run_dir(path):
        raise ValueError(f"{path} is not a run folder (expected {STATUS_FILE} or {CONFIG_FILE} inside)")
    status = read_status(path)
    if status.get("state") in ACTIVE_STATES and _pid_alive(status.get("pid")):
        raise ValueError(f"run {path.name} is {status['state']}; stop it before deleting")
    shutil.rmtree(path)


def mark_interrupted(runs_dir: str | os.PathLike, live_run_dirs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Mark runs whose status says queued/running but that nobody is running any more as `interrupted`.

    A run counts as live when it is in `live_run_dirs` (jobs of this process) or when its status was
    written by another process that is still alive (e.g. a CLI run next to the dashboard).
    Returns the folders that were marked.
    """
    live = {Path(p).resolve() for p in live_run_dirs}
    marked = []
    for info in list_runs(runs_dir):
        if info.state not in ACTIVE_STATES or info.path.resolve() in live:
            continue
        pid = read_status(info.path).get("pid")
        if pid != os.getpid() and _pid_alive(pid):
            continue
        write_status(info.path, "interrupted",
                     f"was {info.state} when its process ended; resume continues from the last checkpoint")
        marked.append(info.path)
    return marked
