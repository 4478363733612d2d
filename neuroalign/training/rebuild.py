"""A Trainer rebuilt from a run folder (its config, subject, split and normaliser), for resuming
(`pipeline.resume_training`) and re-evaluating (`evaluation.evaluate.evaluate_run`); both import
it from here, so neither imports the other for it."""

from __future__ import annotations

from pathlib import Path

from neuroalign.data import Normaliser, SubjectStore, load_subject
from neuroalign.training import runs as runs_io
from neuroalign.training.trainer import Trainer


def subject_path(data_dir: str | Path, name: str) -> Path:
    """Folder of subject `name` in the data root `data_dir`."""
    return SubjectStore(data_dir).path(name)


def rebuild_trainer(record: runs_io.RunRecord, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                    device: str | None = None, threads: int | None = None) -> tuple[Trainer, Path]:
    """A Trainer with a run's config, subject, split and normaliser (weights: fresh init); `device`
    and `threads` override the recorded run-control settings. Returns `(trainer, subject folder)`."""
    if "config" not in record.config or "subject" not in record.config:
        raise FileNotFoundError(f"{record.path / runs_io.CONFIG_FILE} is missing or incomplete")
    config = record.train_config()
    if device is not None:
        config = config.replace(device=device)
    if threads is not None:
        config = config.replace(threads=threads)  # validated by Trainer
    meta = record.config["subject"]
    path = subject_path(data_dir, meta["name"]) if data_dir is not None else Path(meta["path"])
    subject = load_subject(path)
    if subject.data_hash != meta.get("data_hash"):
        raise ValueError(f"subject data at {path} changed since the run (hash {subject.data_hash[:12]}, "
                         f"run used {str(meta.get('data_hash'))[:12]}); evaluate against the original data")
    if record.split is None:
        raise FileNotFoundError(f"{record.path / runs_io.SPLIT_FILE} not found")
    norm_state = runs_io.read_json_file(record.path / runs_io.NORMALISER_FILE)
    if norm_state is None:
        raise FileNotFoundError(f"{record.path / runs_io.NORMALISER_FILE} not found")
    trainer = Trainer(config, subject, run_dir=record.path, cache_dir=cache_dir, split=record.split,
                      normaliser=Normaliser.from_state_dict(norm_state))
    return trainer, path
