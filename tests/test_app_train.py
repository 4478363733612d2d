"""Train page through AppTest: prerequisites, preset form, launching a tiny training and seeing it
finish, invalid settings, a failing job and stopping a job."""

import pytest

import app_support as s
from app_support import app_env, app_populated  # noqa: F401 (fixtures)

from neuroalign.config import preset
from neuroalign.jobs.manager import get_job_manager
from neuroalign.ui import keys, train_form

PAGE = "pages/train.py"
F = keys.TRAIN_FIELD_PREFIX


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny(at, epochs=3, block=2):
    """Settings of a training that takes about a second on a CPU (the default preset's linear neural
    tower, which has no embedding size to shrink)."""
    # the image model first: a selector above the form (its change reruns the page, and the layer fields
    # follow it); the form's own fields then take effect on submit
    at.selectbox(key=F + "image.backbone").set_value("ds_net_tiny").run()
    at.number_input(key=F + "epochs").set_value(epochs)
    at.number_input(key=F + "batch_size").set_value(16)
    at.number_input(key=F + "image.block").set_value(block)
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
    assert all(f.help for f in train_form.FORM_FIELDS)  # every field explains itself
    # issue 12 item 12: labels fit a column of the 3-per-row form at 1,024 px (checkboxes have less room)
    assert all(len(f.label) <= (18 if f.kind == "bool" else 26) for f in train_form.FORM_FIELDS)
    at.selectbox(key=keys.TRAIN_PRESET).set_value("reference").run()
    assert at.number_input(key=F + "epochs").value == 5000
    assert at.checkbox(key=F + "loss.center").value is False
    assert at.selectbox(key=F + "optim.neural_optimizer").value == "rmsprop"


def _shown(at) -> set[str]:
    """Config paths of the Train form's widgets on the page."""
    widgets = [*at.number_input, *at.selectbox, *at.checkbox]
    return {w.key[len(F):] for w in widgets if w.key and w.key.startswith(F)}


def test_form_shows_only_the_fields_of_the_chosen_towers(app_populated):
    """The linear neural tower has no embedding, heads, layers, MLP or folding: the form does not offer
    them; picking an attention tower brings them (and only its own) back, values kept."""
    attention_only = {"neural.d_model", "neural.n_heads", "neural.mlp_activation"}
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert at.selectbox(key=F + "neural.kind").value == "linear"  # the recommended preset
    shown = _shown(at)
    assert not (attention_only | {"neural.folded", "neural.n_layers", "neural.n_latents"}) & shown
    assert {"neural.dropout", "n_components", "init", "image.transform"} <= shown
    at.selectbox(key=F + "neural.kind").set_value("transformer").run()
    s.no_exceptions(at)
    shown = _shown(at)
    assert attention_only | {"neural.n_layers"} <= shown
    assert not {"neural.folded", "neural.n_latents", "init"} & shown  # transformer: no folded path, no closed form
    at.session_state[F + "neural.d_model"] = 48  # a value the form holds (as after a submit)
    at.selectbox(key=F + "neural.kind").set_value("latent").run()
    assert {"neural.folded", "neural.n_latents"} <= _shown(at)
    at.selectbox(key=F + "neural.kind").set_value("linear").run()
    assert "neural.d_model" not in _shown(at)
    at.selectbox(key=F + "neural.kind").set_value("reference").run()
    assert at.number_input(key=F + "neural.d_model").value == 48  # kept while hidden
    at.selectbox(key=F + "image.head").set_value("conv1x1").run()
    shown = _shown(at)
    assert not {"image.transform", "n_components"} & shown  # readout-head / linear-tower settings
    assert {"neural.folded", "image.stage"} <= shown
    # what is hidden is what config_from_values ignores: the table's rule, one place
    for f in train_form.FORM_FIELDS:
        assert (f.path in shown) == f.applies("reference", "conv1x1"), f.path


def test_picking_an_image_model_sets_a_layer_it_has(app_populated):
    """The image model is a selector above the form: picking a filter bank (one layer) shows stage 1
    block 1 and the bank's own nonlinearity at once, before anything is submitted, and what the form
    shows is what config_from_values makes of it; back to the preset's model, the preset's layer."""
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    rec = preset("recommended")
    values = lambda: (at.number_input(key=F + "image.stage").value, at.number_input(key=F + "image.block").value,
                      at.selectbox(key=F + "image.transform").value)
    assert values() == (rec.image.stage, rec.image.block, rec.image.transform)
    at.selectbox(key=F + "image.backbone").set_value("v1_gabor").run()
    s.no_exceptions(at)
    assert values() == (1, 1, "none")
    shown = {k: at.session_state[k] for k in at.session_state if str(k).startswith(F)}
    image = train_form.config_from_values("recommended", shown).image
    assert (image.backbone, image.stage, image.block, image.transform) == ("v1_gabor", 1, 1, "none")
    at.selectbox(key=F + "image.backbone").set_value("ds_net_tiny").run()
    assert values() == (1, 2, "square")  # the preset's stage 1 block 3, capped to DS-Net-T's two blocks
    at.selectbox(key=F + "image.backbone").set_value(rec.image.backbone).run()
    assert values() == (rec.image.stage, rec.image.block, rec.image.transform)


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
    values[F + "neural.n_heads"] = 3  # not a setting of the linear tower: the preset's value is kept
    kept = train_form.config_from_values("recommended", values)
    assert kept.neural.n_heads == preset("recommended").neural.n_heads and kept.preset == "recommended"
    values[F + "neural.kind"] = "transformer"  # now it is one, and an invalid one
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
    assert s.arr(val["x"]).tolist() == [0, 1, 2, 3]  # the start (epoch 0), then one validation point per epoch
    assert (snap.run_dir / "results.json").is_file() and snap.run_dir.parent == app_populated["runs"]
    at.toggle(key=keys.TRAIN_LOG_Y).set_value(True).run()
    loss = next(sp for sp in s.chart_specs(at) if sp["layout"]["title"]["text"] == "Loss")
    assert loss["layout"]["yaxis"]["type"] == "log"


def test_invalid_settings_show_one_line_error(app_populated):
    at = s.app_at(PAGE)
    at.selectbox(key=F + "neural.kind").set_value("transformer").run()  # a tower with attention heads
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


def test_failed_job_shows_its_error(app_populated, monkeypatch):
    # the form now refuses a block the backbone lacks before any job starts (config validation), so the
    # job fails inside its runner, where errors the form cannot foresee (data, memory) happen
    from neuroalign.jobs import manager as jobs

    def runner(*args, **kwargs):
        raise ValueError("ds_net_tiny stage 2 has blocks 1..2, got block 4")

    monkeypatch.setattr(jobs, "_manager", jobs.JobManager(runner=runner))
    at = _submit(_tiny(s.app_at(PAGE)))
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

    from neuroalign.jobs import manager as jobs
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


def _walk(node):
    """Every element under `node`, in page order."""
    children = getattr(node, "children", None)
    yield node
    if children:
        for child in children.values():
            yield from _walk(child)


def _fake_manager(monkeypatch, records=(), hold=True):
    """A job manager whose runner reports `records`, then (if `hold`) runs until stopped and, after the
    stop, keeps running until `release` is set (so 'stopping' can be seen)."""
    import threading

    from neuroalign.jobs import manager as jobs
    from neuroalign.training import runs as runs_io

    release, reported = threading.Event(), threading.Event()

    def runner(subject, config, data_dir, runs_dir, callback=None, stop_event=None, run_dir=None):
        runs_io.write_status(run_dir, "running", "training")
        for rec in records:
            callback(rec["event"], {k: v for k, v in rec.items() if k != "event"})
        reported.set()
        if hold:
            stop_event.wait(30)
            release.wait(30)
        runs_io.write_status(run_dir, "stopped" if stop_event.is_set() else "finished", "done")
        return run_dir

    monkeypatch.setattr(jobs, "_manager", jobs.JobManager(runner=runner, max_parallel=2))
    return release, reported


def _records(rate_stall=9.0):
    recs = []
    for step in range(1, 7):
        recs.append({"event": "step", "epoch": 1, "step": step, "train_loss": 1.0 / step, "lr_image": 1e-3,
                     "lr_neural": 1e-3, "samples_per_s": 400.0 + step, "progress": step / 12, "eta_s": 5.0})
    recs.append({"event": "epoch", "epoch": 1, "step": 6, "train_loss": 0.5, "val_loss": 0.6,
                 "samples_per_s": rate_stall, "progress": 0.5, "eta_s": 5.0})
    return recs


def test_stop_says_stopping_at_once(app_populated, monkeypatch):
    """Issue 12 item 7: right after Stop the card says it is stopping (not 'running · ETA ...')."""
    release, reported = _fake_manager(monkeypatch, _records())
    at = _submit(s.app_at(PAGE))
    (job_id,) = at.session_state[keys.TRAIN_LAUNCHED]
    assert reported.wait(10)
    at.run()
    at.button(key=keys.TRAIN_STOP_PREFIX + job_id).click().run()
    s.no_exceptions(at)
    assert get_job_manager().get(job_id).state == "running"  # still restoring / evaluating
    assert any("stopping — restoring the best checkpoint and evaluating" in w.value for w in at.warning)
    texts = [p.proto.text for p in at.main.get("progress")]
    assert texts and texts[0].startswith("stopping") and "ETA" not in texts[0]
    assert keys.TRAIN_STOP_PREFIX + job_id not in [b.key for b in at.button]  # no second Stop
    assert at.sidebar.get("progress")[0].proto.text.startswith("m1: stopping")
    at.run()  # still says so on the next refresh (another tab would too)
    assert any("stopping —" in w.value for w in at.warning)
    release.set()
    assert get_job_manager().wait(job_id, timeout=30).state == "stopped"
    at.run()
    assert not any("stopping —" in w.value for w in at.warning)


def test_throughput_counts_training_steps_only(app_populated, monkeypatch):
    """Issue 12 item 9: the reported samples/s is the training steps' rate, not an average that
    includes the preparation (the epoch record's 9 samples/s here)."""
    from neuroalign.ui import jobs_view

    release, reported = _fake_manager(monkeypatch, _records(rate_stall=9.0), hold=False)
    at = _submit(s.app_at(PAGE))
    (job_id,) = at.session_state[keys.TRAIN_LAUNCHED]
    snap = get_job_manager().wait(job_id, timeout=30)
    assert snap.samples_per_s == 9.0  # what the job reports last
    assert jobs_view.training_throughput(snap) == pytest.approx(403.5)
    at.run()
    text = at.main.get("progress")[0].proto.text
    assert "404 samples/s training" in text and " 9 samples/s" not in text


def test_live_curve_drawn_on_top_and_overlay_defaults(app_populated, monkeypatch):
    """Issue 12 item 8: a running job's curve is drawn last and marked; finished jobs join only when picked."""
    release, reported = _fake_manager(monkeypatch, _records())
    manager = get_job_manager()
    at = _submit(s.app_at(PAGE))
    (first,) = at.session_state[keys.TRAIN_LAUNCHED]
    assert reported.wait(10)
    jobs_view_stop = manager.stop(first)
    release.set()
    assert manager.wait(first, timeout=30).state == "stopped" and jobs_view_stop
    s.write_subject(app_populated["data"], "m2")
    release.clear()
    at = s.app_at(PAGE)
    at.multiselect(key=keys.TRAIN_SUBJECTS).set_value(["m2"])
    _submit(at)
    assert not at.error, [e.value for e in at.error]
    second = at.session_state[keys.TRAIN_LAUNCHED][-1]
    at.run()
    loss = next(sp for sp in s.chart_specs(at) if sp["layout"]["title"]["text"] == "Loss")
    names = [t["name"] for t in loss["data"]]
    assert names and all(n.startswith(f"m2 ({second}) · running") for n in names)  # finished one not by default
    live = next(t for t in loss["data"] if t["name"].endswith("running train"))
    assert live["line"]["width"] > 2
    at.multiselect(key=keys.TRAIN_COMPARE).set_value([f"m1 ({first})"]).run()
    loss = next(sp for sp in s.chart_specs(at) if sp["layout"]["title"]["text"] == "Loss")
    names = [t["name"] for t in loss["data"]]
    assert names[0].startswith(f"m1 ({first})") and names[-1].startswith(f"m2 ({second}) · running")
    manager.stop(second)
    release.set()
    manager.wait(second, timeout=30)


def test_launch_form_comes_before_the_jobs_and_wraps(app_populated, monkeypatch):
    """Issue 12 item 12: with jobs on the page the launch form is still at the top; sections in rows of 3."""
    release, reported = _fake_manager(monkeypatch, _records(), hold=False)
    at = _submit(s.app_at(PAGE))
    get_job_manager().wait(at.session_state[keys.TRAIN_LAUNCHED][0], timeout=30)
    at.run()
    order = [getattr(el, "type", "") + ":" + str(getattr(getattr(el, "proto", None), "label", "")
                                               or getattr(el, "value", "")) for el in _walk(at.main)]
    form = next(i for i, x in enumerate(order) if "New training" in x)
    card = next(i for i, x in enumerate(order) if x.startswith("markdown:**m1** · `"))
    chart = next(i for i, x in enumerate(order) if x.startswith("plotly_chart"))
    assert form < card < chart
    assert train_form.SECTIONS_PER_ROW == 3
    headers = [m.value for m in at.markdown if m.value.strip("*") in train_form.FORM_SECTIONS]
    assert len(headers) == len(train_form.FORM_SECTIONS)


def test_start_button_counts_the_runs_and_enter_picks_one_subject(app_populated):
    """Issue 23 item 4: the button says how many runs one click starts; typing a name and pressing
    Enter does not select every fuzzy match (no bulk "Select N matches" row, substring matching)."""
    for name in ("m2", "m3"):
        s.write_subject(app_populated["data"], name)
    at = s.app_at(PAGE)
    assert at.button(key=keys.TRAIN_SUBMIT).label == "Start 1 run: m1"
    at.multiselect(key=keys.TRAIN_SUBJECTS).set_value(["m1", "m2", "m3"]).run()
    assert at.button(key=keys.TRAIN_SUBMIT).label == "Start 3 runs: m1, m2, m3"
    at.multiselect(key=keys.TRAIN_SUBJECTS).set_value([]).run()
    assert at.button(key=keys.TRAIN_SUBMIT).label == "Start training"
    box = at.multiselect(key=keys.TRAIN_SUBJECTS).proto
    assert box.HasField("select_all") and box.select_all == 0  # the browser shows no bulk-select row
    assert box.DESCRIPTOR.fields_by_name["filter_mode"].enum_type.values_by_number[box.filter_mode].name \
        == "FILTER_MODE_CONTAINS"
    assert train_form.start_label(["a", "b", "c", "d", "e"]) == "Start 5 runs: a, b, c + 2 more"


def test_default_subject_is_the_last_used(app_populated):
    """Issue 12 item 14: not the alphabetically first subject, but the one used last (or a demo one)."""
    s.write_subject(app_populated["data"], "aaa")  # alphabetically first, never used
    at = s.app_at(PAGE)
    assert at.multiselect(key=keys.TRAIN_SUBJECTS).value == ["m1"]  # m1 has the newest run
    at = s.app_at("pages/subjects.py")
    at.selectbox(key=keys.SUBJECT_PICK).set_value("aaa").run()
    at.switch_page(PAGE).run()
    assert at.multiselect(key=keys.TRAIN_SUBJECTS).value == ["aaa"]  # opened last on the Subjects page

    class Info:
        def __init__(self, name, simulated=False):
            self.name, self.simulated = name, simulated

    infos = [Info("aaa"), Info("sim-M1", True), Info("sim-M2", True)]
    assert train_form.default_subjects(["aaa", "sim-M1", "sim-M2"], None, infos, None) == ["sim-M1"]
    assert train_form.default_subjects(["aaa", "sim-M1"], None, infos, "gone") == ["sim-M1"]
    assert train_form.default_subjects(["aaa"], None, infos[:1], None) == ["aaa"]


def _expander(at, label="New training"):
    return next(e for e in _walk(at.main) if getattr(e, "type", "") == "expander" and e.proto.label == label)


def test_queue_is_counted_apart_and_cards_are_ordered(app_populated, monkeypatch):
    """Issue 23 item 7: queued jobs are not counted as running; each says its place in the queue; a
    queued card never sits below a finished one; a card of a deleted run is dropped."""
    from neuroalign.jobs import manager as jobs

    release, reported = _fake_manager(monkeypatch, _records())
    monkeypatch.setattr(jobs._manager, "max_parallel", 1)
    for name in ("m2", "m3", "m4"):
        s.write_subject(app_populated["data"], name)
    manager = get_job_manager()
    done = manager.start("m4", preset("recommended"), app_populated["data"], app_populated["runs"])
    manager.stop(done)
    release.set()
    assert manager.wait(done, timeout=30).state in ("stopped", "finished")
    release.clear()
    at = s.app_at(PAGE)
    at.multiselect(key=keys.TRAIN_SUBJECTS).set_value(["m1", "m2", "m3"]).run()
    assert at.button(key=keys.TRAIN_SUBMIT).label == "Start 3 runs: m1, m2, m3"
    _submit(at)
    assert reported.wait(10)
    at.run()
    s.no_exceptions(at)
    sidebar = [c.value for c in at.sidebar.caption]
    assert any("**Training** (1 running, 2 queued)" in c for c in sidebar), sidebar
    texts = [p.proto.text for p in at.main.get("progress")]
    assert texts[0].startswith("running") and texts[1].startswith("queued · next to start")
    assert texts[2].startswith("queued · 2nd in line") and texts[3].startswith("stopped")
    cards = [m.value for m in at.markdown if m.value.startswith("**m")]
    assert [c.split("**")[1] for c in cards] == ["m1", "m2", "m3", "m4"]
    home = s.app_at()
    assert home.metric[3].label == "Training now" and home.metric[3].value == "1"
    import shutil

    shutil.rmtree(manager.get(done).run_dir)  # deleted on the Runs page: its card goes
    at.run()
    assert [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**m")] == ["m1", "m2", "m3"]
    first, second, third = at.session_state[keys.TRAIN_LAUNCHED]
    reported.clear()
    manager.stop(first)  # the watched job ends; the next queued one starts and reports
    release.set()
    assert manager.wait(first, timeout=30).state == "stopped" and reported.wait(10)
    at.run()
    loss = next(sp for sp in s.chart_specs(at) if sp["layout"]["title"]["text"] == "Loss")
    names = [tr["name"] for tr in loss["data"]]
    assert any(n.startswith(f"m1 ({first})") for n in names), names  # the chart stays on the job watched
    assert any(n.startswith(f"m2 ({second}) · running") for n in names)
    for job_id in (second, third):
        manager.stop(job_id)


def test_stopped_job_card_offers_resume_and_a_failed_start_keeps_the_form_open(app_populated, monkeypatch):
    """Issue 23 items 6 and 7: a stopped job with last.pt has Resume on its card (one card per run
    folder after it); the chart stays on the job that was watched; a start that fails keeps the
    form open."""
    from neuroalign.jobs import manager as jobs
    from neuroalign.training import runs as runs_io

    resumed = []

    def runner(*args, callback=None, stop_event=None, run_dir=None, **kw):
        if run_dir is None:  # a resume: runner(run_dir, data_dir=...)
            resumed.append(args[0])
            runs_io.write_status(args[0], "finished", "resumed")
            return args[0]
        from neuroalign.io_utils import atomic_write_json

        subject, config, data_dir = args[:3]
        atomic_write_json(run_dir / "config.json", {"config": config.to_dict(), "subject": {
            "name": subject, "path": str(data_dir / subject)}})
        runs_io.write_status(run_dir, "running", "training")
        for rec in _records():
            callback(rec["event"], {k: v for k, v in rec.items() if k != "event"})
        (run_dir / runs_io.LAST_CKPT).write_bytes(b"checkpoint")
        stop_event.wait(30)
        runs_io.write_status(run_dir, "stopped", "stopped on request")
        return run_dir

    monkeypatch.setattr(jobs, "_manager", jobs.JobManager(runner=runner))
    at = _submit(s.app_at(PAGE))
    (job_id,) = at.session_state[keys.TRAIN_LAUNCHED]
    at.run()  # the job is live on this session's chart
    at.button(key=keys.TRAIN_STOP_PREFIX + job_id).click().run()
    snap = get_job_manager().wait(job_id, timeout=30)
    assert snap.state == "stopped"
    at.run()
    s.no_exceptions(at)
    loss = next(sp for sp in s.chart_specs(at) if sp["layout"]["title"]["text"] == "Loss")
    assert all(t["name"].startswith(f"m1 ({job_id})") for t in loss["data"])
    assert not at.button(key=keys.TRAIN_RESUME_PREFIX + job_id).disabled
    at.button(key=keys.TRAIN_RESUME_PREFIX + job_id).click().run()
    assert not at.error, [e.value for e in at.error]
    second = at.session_state[keys.TRAIN_LAUNCHED][-1]
    assert second != job_id and get_job_manager().wait(second, timeout=30).state == "finished"
    assert [str(p) for p in resumed] == [str(snap.run_dir)]
    at.run()
    cards = [m.value for m in at.markdown if m.value.startswith("**m1**")]
    assert len(cards) == 1 and f"`{second}`" in cards[0]  # the run folder's newest job only
    assert not _expander(at).proto.expanded  # jobs exist: the form is collapsed
    at.multiselect(key=keys.TRAIN_SUBJECTS).set_value([])
    _submit(at)
    assert "no subject selected" in at.error[0].value
    assert _expander(at).proto.expanded  # the failed start keeps it open
    at.run()
    assert _expander(at).proto.expanded  # also on the next rerun, until a start works
