"""Training: the Trainer, one-run pipelines and run directories (the dashboard's jobs that run them
are `neuroalign.jobs`, a layer above: nothing here imports it).

* `trainer` -- `Trainer(config, subject).fit(callback, stop_event, train_deadline)`: the engine;
  the constructor only keeps the settings, `prepare()` (which `fit` calls) builds it in named steps
  (device and process group, split by image identity, normaliser fitted on train rows, towers,
  cached frozen-backbone features, optimisers); `state` -- `FitState`, the fit's
  progress as one object (epoch, step, best epoch and its weights, loss curves), and the
  checkpoints made from it; `loop` -- `FitLoop(trainer, state, ...)`, the epoch/step loop
  (val-driven schedulers, best-by-val restored, NaN/Inf guard, stop/time budget); `dual_tower` -- both towers and the loss in one module; `linear_start` -- the
  closed-form start of the default preset.
* `distributed` -- torchrun: global-batch slices per rank, all-gathered maps (global negatives),
  feature exchange, rank-0 decisions broadcast.
* `pipeline` -- `train_subject`, the one orchestration of a run (Trainer -> records -> fit -> evaluate
  -> exports) that `run_training` (CLI, dashboard worker), `neuroalign.Aligner.fit` and, for its
  second half, `resume_training` go through;
  `rebuild` -- `rebuild_trainer` (a run's config, subject, split and normaliser).
* `runs` (+ `run_files`, the damaged-file-safe readers) -- run-directory io (`new_run_dir`,
  `list_runs`, `load_run`, `mark_interrupted`, ...).
* `device` -- `resolve_device`, `describe_device`, seeding and determinism, torchrun info and backend.

Nothing here imports streamlit. Importing this package does not import torch eagerly beyond
what `runs` needs (the trainer is imported on use).
"""

from neuroalign.training.runs import RunInfo, RunRecord, delete_run, list_runs, load_run, mark_interrupted, new_run_dir

__all__ = ["RunInfo", "RunRecord", "delete_run", "list_runs", "load_run", "mark_interrupted", "new_run_dir"]
