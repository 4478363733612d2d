"""Training: the Trainer, one-run pipelines, run directories and background jobs.

* `trainer` -- `Trainer(config, subject).fit(callback, stop_event)`: split by image identity,
  normaliser fitted on train rows, cached frozen-backbone features, val-driven schedulers,
  best-by-val checkpoint restored, NaN/Inf guard, optional torchrun DDP.
* `pipeline` -- `run_training` / `resume_training`: load -> train -> evaluate -> exports.
* `runs` -- run-directory io (`new_run_dir`, `list_runs`, `load_run`, `mark_interrupted`, ...).
* `jobs` -- `get_job_manager()`: process-level background jobs the dashboard drives.
* `device` -- `resolve_device`, `describe_device`, seeding and determinism, torchrun info.

Nothing here imports streamlit. Importing this package does not import torch eagerly beyond
what `runs`/`jobs` need (the trainer is imported on use).
"""

from neuroalign.training.jobs import JobManager, JobSnapshot, get_job_manager
from neuroalign.training.runs import RunInfo, RunRecord, delete_run, list_runs, load_run, mark_interrupted, new_run_dir

__all__ = [
    "JobManager", "JobSnapshot", "RunInfo", "RunRecord", "delete_run", "get_job_manager", "list_runs", "load_run",
    "mark_interrupted", "new_run_dir",
]
