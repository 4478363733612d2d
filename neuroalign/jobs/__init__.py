"""The dashboard's background jobs, a layer above `neuroalign.training` (which never imports it).
This docstring is the one place for how a job works; the modules say only what is theirs.

* `manager` -- `get_job_manager()`: one `JobManager` per server process (every browser session
  sees the same jobs). A job is a thread of the server that follows one training run; jobs never
  call Streamlit. At most one active job per subject; other subjects queue FIFO (`max_parallel`).
* `worker` -- the training itself, `python -m neuroalign.jobs.worker --spec RUN_DIR/job_spec.json`
  (under `torch.distributed.run` for several processes: GPUs, or $NEUROALIGN_JOB_PROCESSES), in a
  session of its own, so nothing it sets process-wide (torch threads, deterministic switches) and
  no out-of-memory kill reaches the server. `JobManager(runner=...)` runs a callable in the job's
  thread instead (tests, embedding code).
* `process` -- starts the worker and follows it through the run folder only (`protocol` names the
  files): `metrics.jsonl` lines become the job's history, `status.json` its message and outcome. A
  worker that ends without a final status of its own gets its run marked `failed` with how it
  ended and the last line of `worker.log`.
* Stop: `stop_request.json` in the run folder, polled by every rank; the trainer ends its step,
  restores the best checkpoint and still evaluates. A queued job is cancelled at once. Snapshots
  say `stopping` until the job ends.
* Server lifetime: the spec names the server (pid and start time); once it is gone (exit, Ctrl-C,
  kill -9) the worker stops as for a Stop, keeps `last.pt` and ends `stopped` ("stopped because
  the dashboard server exited ..."); `resume` continues it. $NEUROALIGN_JOBS_OUTLIVE_SERVER=1 lets
  workers train on after the server.
* `adopt` / `JobManager.watch(runs_dir)`: at once and then every few seconds the manager follows
  live workers it did not start (`worker.json`: a second server, a detached worker) and marks runs
  that claim to be queued/running with no live job or process `interrupted` (resumable).
* `state` -- `Job` records and the read-only `JobSnapshot` the pages poll (O(1): the history tuple
  is shared; about `state.MAX_STEP_HISTORY` step records kept; ended jobs pruned to a few per
  subject, older ones live on as run folders).
* `shared_job` -- shared-model and adapt jobs (worker modes "shared" / "adapt").
* `profile_job` -- `get_profile_jobs()`: the Image models page's layer profile in a worker process
  (`profile_worker`).

Nothing is imported here, so starting a worker imports only what it needs.
"""
