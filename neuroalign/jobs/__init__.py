"""The dashboard's background jobs, a layer above `neuroalign.training` (which never imports it).

* `manager` -- `get_job_manager()`: training jobs, each a worker process (`worker`, or torchrun for
  several processes) followed by a thread through the run folder (`process`, `state`, `protocol`,
  `adopt`); the module docstring tells the whole story.
* `profile_job` -- `get_profile_jobs()`: the Image models page's layer profile in a worker process
  (`profile_worker`).

Workers start as `python -m neuroalign.jobs.worker` / `python -m neuroalign.jobs.profile_worker`.
Nothing is imported here, so starting a worker imports only what it needs.
"""
