"""The one run loader: a run folder's config, subject, split and normaliser, checked, and a Trainer
rebuilt from them -- for resuming (`pipeline.resume_training`), re-evaluating
(`run_eval.evaluate_run`), neuron importance (`run_eval.run_importance`) and the library's
`Aligner.load`."""

from __future__ import annotations

from pathlib import Path

from neuroalign.data import Normaliser, Subject, SubjectStore, load_subject
from neuroalign.training import runs as runs_io
from neuroalign.training.trainer import Trainer


def subject_path(data_dir: str | Path, name: str) -> Path:
    """Folder of subject `name` in the data root `data_dir`."""
    return SubjectStore(data_dir).path(name)


def check_record(record: runs_io.RunRecord) -> None:
    """FileNotFoundError naming the file when the run's config (with its subject) or split is missing."""
    if "config" not in record.config or "subject" not in record.config:
        raise FileNotFoundError(f"{record.path / runs_io.CONFIG_FILE} is missing or incomplete")
    if record.split is None:
        raise FileNotFoundError(f"{record.path / runs_io.SPLIT_FILE} not found")


def read_normaliser(run_dir: str | Path) -> Normaliser:
    """The run's fitted normaliser (`normaliser.json`); FileNotFoundError / ValueError in one line."""
    path = Path(run_dir) / runs_io.NORMALISER_FILE
    state = runs_io.read_json_file(path)  # RunFileError (a ValueError, one line) when damaged
    if state is None:
        raise FileNotFoundError(f"{path} not found; the run has no normaliser (was it trained with this version?)")
    try:
        return Normaliser.from_state_dict(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable normaliser state ({type(exc).__name__}: {exc})") from None


def run_subject(record: runs_io.RunRecord, subject: Subject | None = None, data_dir: str | Path | None = None,
                purpose: str = "evaluate against the original data") -> tuple[Subject, Path]:
    """The run's subject (`subject` when given, else loaded from `data_dir`/name or the recorded path)
    and its folder; ValueError when its data differ from what the run recorded (`purpose` ends the message)."""
    meta = record.config["subject"]
    path = subject_path(data_dir, meta["name"]) if data_dir is not None else Path(meta["path"])
    where = "" if subject is not None else f" at {path}"
    if subject is None:
        subject = load_subject(path)
    if subject.data_hash != meta.get("data_hash"):
        raise ValueError(f"subject {meta.get('name')}{where} changed since the run (data hash {subject.data_hash[:12]}, "
                         f"the run used {str(meta.get('data_hash'))[:12]}); {purpose}")
    return subject, path


def rebuild_trainer(record: runs_io.RunRecord, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                    device: str | None = None, threads: int | None = None) -> tuple[Trainer, Path]:
    """A prepared Trainer (`Trainer.prepare()` done) with a run's config, subject, split and
    normaliser (weights: fresh init); `device` and `threads` override the recorded run-control
    settings. Returns `(trainer, subject folder)`."""
    check_record(record)
    config = record.train_config()
    overrides = {k: v for k, v in (("device", device), ("threads", threads)) if v is not None}
    if overrides:  # from a flag: checked here (the Trainer does not validate)
        config = config.replace(**overrides)
        config.validate()
    subject, path = run_subject(record, data_dir=data_dir)
    trainer = Trainer(config, subject, run_dir=record.path, cache_dir=cache_dir, split=record.split,
                      normaliser=read_normaliser(record.path))
    return trainer.prepare(), path
