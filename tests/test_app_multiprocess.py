"""A dashboard-launched 2-process job on a CPU (issue 14): with NEUROALIGN_JOB_PROCESSES=2 the Train
page's job runs as `torch.distributed.run --nproc_per_node=2` (2 gloo processes), is shown like any
other job, and finishes with results and a world size of 2 recorded."""

import json

import pytest

import app_support as s
from app_support import app_env, app_populated  # noqa: F401 (fixtures)
from test_app_train import PAGE, _submit, _tiny

from neuroalign.jobs import manager as jobs
from neuroalign.jobs.manager import get_job_manager
from neuroalign.ui import keys


def test_train_page_launches_a_two_process_job(app_populated, monkeypatch):
    monkeypatch.setenv(jobs.JOB_PROCESSES_ENV, "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    at = _submit(_tiny(s.app_at(PAGE), epochs=2, block=1))
    s.no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    (job_id,) = at.session_state[keys.TRAIN_LAUNCHED]
    first = get_job_manager().get(job_id)
    assert first.kind == "worker" and first.nproc == 2
    at.run()  # shown like any other job while it runs
    assert any(m.value.startswith(f"**m1** · `{job_id}`") for m in at.markdown)
    snap = get_job_manager().wait(job_id, timeout=240)
    log = (snap.run_dir / jobs.WORKER_LOG).read_text()
    assert snap.state == "finished", f"{snap.error}\n{log[-3000:]}"
    assert "torch.distributed.run --standalone --nproc_per_node=2" in log
    assert "rank1" in log and "joined process group: rank 1 / 2 (gloo)" in log
    assert (snap.run_dir / "results.json").is_file()
    assert json.loads((snap.run_dir / "config.json").read_text())["world_size"] == 2
    assert [h["epoch"] for h in snap.history if h["event"] == "epoch"] == [1, 2]  # followed from metrics.jsonl
    at.run()
    s.no_exceptions(at)
    assert any("finished" in m.value for m in at.success)
    loss = next(sp for sp in s.chart_specs(at) if sp["layout"]["title"]["text"] == "Loss")
    assert len(s.arr(next(t for t in loss["data"] if t["name"].endswith("val"))["y"])) == 3  # the start + 2 epochs


pytestmark = pytest.mark.usefixtures("one_torch_thread")
