"""Train page through AppTest: prerequisites, preset form, launching a tiny training and seeing it
finish, invalid settings, a failing job and stopping a job."""

import pytest

import app_support as s
from app_support import app_env, app_populated  # noqa: F401 (fixtures)

from neuroalign.config import preset
from neuroalign.training.jobs import get_job_manager
from neuroalign.ui import keys, train_form

PAGE = "pages/train.py"
F = keys.TRAIN_FIELD_PREFIX


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny(at, epochs=3, block=2):
    """Settings of a training that takes about a second on a CPU."""
    at.number_input(key=F + "epochs").set_value(epochs)
    at.number_input(key=F + "batch_size").set_value(16)
    at.selectbox(key=F + "image.backbone").set_value("ds_net_tiny")
    at.number_input(key=F + "image.block").set_value(block)
    at.number_input(key=F + "neural.d_model").set_value(32)
    return at


def _submit(at):
    at.button(key=keys.TRAIN_SUBMIT).click().run()
    return at


def test_empty_root_points_to_subjects(app_env):
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert any("No subjects yet" in i.value for i in at.info)
    assert len(at.get("page_link")) >= 1 and not at.button


def test_form_defaults_follow_preset(app_populated):
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    rec = preset("recommended")
    assert at.number_input(key=F + "epochs").value == rec.epochs
    assert at.number_input(key=F + "optim.neural_lr").value == pytest.approx(rec.optim.neural_lr)
    assert at.checkbox(key=F + "loss.center").value is True
    assert all(f.help for f in train_form.FIELDS)  # every field explains itself
    at.selectbox(key=keys.TRAIN_PRESET).set_value("reference").run()
    assert at.number_input(key=F + "epochs").value == 5000
    assert at.checkbox(key=F + "loss.center").value is False
    assert at.selectbox(key=F + "optim.neural_optimizer").value == "rmsprop"


def test_config_from_values_marks_custom_and_validates():
    values = train_form.widget_values(preset("recommended"))
    assert train_form.config_from_values("recommended", values).to_dict() == preset("recommended").to_dict()
    values[F + "epochs"] = 7
    values[F + "max_seconds"] = 30
    cfg = train_form.config_from_values("recommended", values)
    assert cfg.epochs == 7 and cfg.max_seconds == 30.0
    assert cfg.preset == "recommended"  # how long to train is not a change of the preset
    assert values[F + "threads"] == 0 and cfg.threads is None  # 0 = torch's default
    values[F + "threads"] = 1
    assert train_form.config_from_values("recommended", values).threads == 1
    assert train_form.config_from_values("recommended", values).preset == "recommended"  # run control
    assert cfg.neural.mlp_activation == preset("recommended").neural.mlp_activation  # untouched fields kept
    values[F + "loss.temperature"] = 0.2
    assert train_form.config_from_values("recommended", values).preset == "custom"
    values[F + "loss.temperature"] = preset("recommended").loss.temperature
    values[F + "neural.n_heads"] = 3
    with pytest.raises(ValueError, match="divisible"):
        train_form.config_from_values("recommended", values)


def test_launch_tiny_training_and_see_it_finish(app_populated):
    at = _submit(_tiny(s.app_at(PAGE)))
    s.no_exceptions(at)
    assert not at.error
    (job_id,) = at.session_state[keys.TRAIN_LAUNCHED]
    snap = get_job_manager().wait(job_id, timeout=120)
    assert snap.state == "finished", snap.error
    at.run()
    s.no_exceptions(at)
    assert any("finished" in m.value for m in at.success)
    loss = next(sp for sp in s.chart_specs(at) if sp["layout"]["title"]["text"] == "Loss")
    names = [t["name"] for t in loss["data"]]
    assert any(n.endswith("train") for n in names) and any(n.endswith("val") for n in names)
    val = next(t for t in loss["data"] if t["name"].endswith("val"))
    assert len(s.arr(val["y"])) == 3  # one validation point per epoch
    assert (snap.run_dir / "results.json").is_file() and snap.run_dir.parent == app_populated["runs"]
    at.toggle(key=keys.TRAIN_LOG_Y).set_value(True).run()
    loss = next(sp for sp in s.chart_specs(at) if sp["layout"]["title"]["text"] == "Loss")
    assert loss["layout"]["yaxis"]["type"] == "log"


def test_invalid_settings_show_one_line_error(app_populated):
    at = s.app_at(PAGE)
    at.number_input(key=F + "neural.n_heads").set_value(3)
    at.number_input(key=F + "neural.d_model").set_value(32)
    _submit(at)
    s.no_exceptions(at)
    assert at.error[0].value == "Cannot start: d_model (32) must be divisible by n_heads (3)"
    assert get_job_manager().snapshots() == []
    at.multiselect(key=keys.TRAIN_SUBJECTS).set_value([])
    at.number_input(key=F + "neural.n_heads").set_value(1)
    _submit(at)
    assert "no subject selected" in at.error[0].value


def test_failed_job_shows_its_error(app_populated):
    at = _submit(_tiny(s.app_at(PAGE), block=4))  # ds_net_tiny stage 2 has only 2 blocks
    (job_id,) = at.session_state[keys.TRAIN_LAUNCHED]
    assert get_job_manager().wait(job_id, timeout=60).state == "failed"
    at.run()
    s.no_exceptions(at)
    assert any(e.value.startswith("Failed:") and "block" in e.value for e in at.error)


def test_stop_button_stops_a_running_job(app_populated):
    at = _submit(_tiny(s.app_at(PAGE), epochs=100000))
    (job_id,) = at.session_state[keys.TRAIN_LAUNCHED]
    at.run()
    at.button(key=keys.TRAIN_STOP_PREFIX + job_id).click().run()
    snap = get_job_manager().wait(job_id, timeout=60)
    assert snap.state == "stopped" and snap.epoch < 100000


def test_running_job_shows_status_and_sidebar_progress(app_populated, monkeypatch):
    import threading

    from neuroalign.training import jobs
    from neuroalign.training import runs as runs_io

    started = threading.Event()

    def runner(subject, config, data_dir, runs_dir, callback=None, stop_event=None, run_dir=None):
        runs_io.write_status(run_dir, "running", "preparing (backbone features are computed once)")
        started.set()
        stop_event.wait(30)
        runs_io.write_status(run_dir, "stopped", "stopped on request")
        return run_dir

    monkeypatch.setattr(jobs, "_manager", jobs.JobManager(runner=runner))
    at = _submit(s.app_at(PAGE))
    assert started.wait(10)
    at.run()
    s.no_exceptions(at)
    assert any("preparing (backbone features" in c.value for c in at.caption)
    side = [p for p in at.sidebar.get("progress")]
    assert len(side) == 1 and side[0].proto.text.startswith("m1: running")
    (job_id,) = at.session_state[keys.TRAIN_LAUNCHED]
    at.button(key=keys.TRAIN_STOP_PREFIX + job_id).click().run()
    assert jobs.get_job_manager().wait(job_id, timeout=30).state == "stopped"
