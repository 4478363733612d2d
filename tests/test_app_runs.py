"""Runs page through AppTest: table, filters, curve overlay, selecting a run, downloads, delete."""

import app_support as s
from app_support import app_env, app_populated  # noqa: F401 (fixtures)

from neuroalign.training import runs as runs_io
from neuroalign.ui import keys

PAGE = "pages/runs.py"


def _with_failed_and_orphan(env):
    failed = s.write_finished_run(env["runs"], "m1", env["subject_dir"], state="failed", seed=1)
    (failed / "results.json").unlink()
    runs_io.write_status(failed, "failed", "ValueError: broken on purpose")
    orphan = s.write_finished_run(env["runs"], "m1", env["subject_dir"], state="running", seed=2)
    return failed, orphan


def test_empty_root(app_env):
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert at.info[0].value == "No runs yet."


def test_table_filters_and_overlay(app_populated):
    failed, orphan = _with_failed_and_orphan(app_populated)
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    table = at.dataframe[0].value
    assert sorted(table["state"]) == ["failed", "finished", "interrupted"]  # orphaned "running" run marked
    assert runs_io.read_status(orphan)["state"] == "interrupted"
    at.multiselect(key=keys.RUNS_FILTER_STATE).set_value(["finished"]).run()
    assert at.dataframe[0].value["run"].tolist() == [app_populated["run"].name]
    at.multiselect(key=keys.RUNS_FILTER_STATE).set_value([]).run()
    at.multiselect(key=keys.RUNS_PICK).set_value([str(app_populated["run"]), str(failed)]).run()
    curves = next(sp for sp in s.chart_specs(at) if sp["layout"]["title"]["text"] == "Loss")
    names = {t["name"] for t in curves["data"]}
    assert {f"{app_populated['run'].name} val", f"{failed.name} val"} <= names


def test_select_run_downloads_and_delete(app_populated):
    failed, _ = _with_failed_and_orphan(app_populated)
    at = s.app_at(PAGE)
    at.selectbox(key=keys.RUNS_ONE).set_value(str(failed)).run()
    s.no_exceptions(at)
    assert at.error[0].value == "This run failed: ValueError: broken on purpose"
    assert at.session_state[keys.SELECTED_RUN] == str(failed)
    at.selectbox(key=keys.RUNS_ONE).set_value(str(app_populated["run"])).run()
    buttons = {b.key: b for b in at.get("download_button")}
    assert buttons["runs.download.best.pt"].proto.disabled  # no checkpoint in this run folder
    assert not buttons["runs.download.results.json"].proto.disabled
    assert not buttons["runs.download.csv"].proto.disabled
    assert at.button(key=keys.RUNS_DELETE).disabled
    at.checkbox(key=keys.delete_confirm(keys.RUNS_DELETE_CONFIRM, app_populated["run"].name)).check().run()
    at.button(key=keys.RUNS_DELETE).click().run()
    s.no_exceptions(at)
    assert not app_populated["run"].exists() and failed.exists()
    assert app_populated["run"].name not in at.dataframe[0].value["run"].tolist()


def test_delete_confirmation_does_not_carry_over_to_the_next_run(app_populated):
    """Issue 23 item 3: after deleting one run the box for the run shown next is unticked."""
    first = app_populated["run"]
    second = s.write_finished_run(app_populated["runs"], "m1", app_populated["subject_dir"], seed=4)
    at = s.app_at(PAGE)
    at.selectbox(key=keys.RUNS_ONE).set_value(str(first)).run()
    (box,) = at.checkbox
    assert box.label.startswith(f"Yes, delete {first.name}")
    box.check().run()
    assert not at.button(key=keys.RUNS_DELETE).disabled
    at.button(key=keys.RUNS_DELETE).click().run()
    s.no_exceptions(at)
    assert not first.exists() and second.exists()
    (box,) = at.checkbox
    assert box.label.startswith(f"Yes, delete {second.name}")
    # keyed by the run: the browser keeps a widget's value per key, so a shared key stays ticked
    assert box.value is False and box.key != keys.delete_confirm(keys.RUNS_DELETE_CONFIRM, first.name)
    assert at.button(key=keys.RUNS_DELETE).disabled
    at.run()  # what the browser sends back for the new box is its own (unticked) state
    assert at.checkbox[0].value is False and at.button(key=keys.RUNS_DELETE).disabled
    assert second.exists()


def test_run_listing_is_read_once_per_ttl_and_again_when_runs_change(app_populated, monkeypatch):
    """Issue 11 hot path: the pages that list runs rerun on every click; the listing (which reads every
    run) is read once per TTL, and again at once when a run folder is added or deleted or the set of
    live jobs changes. Issue 22 item 4: that cached read never writes (no adoption, no marking)."""
    import sys

    from neuroalign.jobs import manager as jobs
    from neuroalign.training import runs as runs_io
    from neuroalign.ui import loaders

    calls, writes = [], []
    real_list, real_mark = runs_io.list_runs, runs_io.mark_interrupted

    def counting(runs_dir):
        if sys._getframe(1).f_globals["__name__"] == loaders.__name__:  # the page's listing, not the manager's
            calls.append(str(runs_dir))
        return real_list(runs_dir)

    def marking(runs_dir, live=()):
        writes.append(sys._getframe(1).f_code.co_name)
        return real_mark(runs_dir, live)

    monkeypatch.setattr(runs_io, "list_runs", counting)
    monkeypatch.setattr(runs_io, "mark_interrupted", marking)
    monkeypatch.setattr(jobs, "SYNC_S", 3600.0)  # the manager syncs once, when it starts watching
    monkeypatch.setattr(loaders, "RUNS_TTL_S", 3600.0)  # no time slot ends inside the test
    at = s.app_at(PAGE)  # app.py, then the Runs page: two script runs
    at.run()
    s.no_exceptions(at)
    assert len(calls) == 1
    assert writes == ["_sync"]  # the job manager's, at its start
    other = s.write_finished_run(app_populated["runs"], "m1", app_populated["subject_dir"], seed=3)
    at.run()
    assert len(calls) == 2 and other.name in at.dataframe[0].value["run"].tolist()
    at.run()
    assert len(calls) == 2
    monkeypatch.setattr(jobs.JobManager, "live_run_dirs", lambda self: [other])  # a job started
    at.run()
    assert len(calls) == 3
    monkeypatch.setattr(loaders, "RUNS_TTL_S", 1e-6)  # every call falls into a new time slot
    at.run()
    assert len(calls) == 4
    assert writes == ["_sync"]  # reading the runs never marked anything


def test_table_shows_the_main_columns_and_more_on_request(app_populated):
    """Issue 12 item 12: the Runs table fits a small window by default; other columns are added on request,
    and a damaged run's problem column appears only when there is one."""
    from neuroalign.ui import tables

    at = s.app_at(PAGE)
    s.no_exceptions(at)
    order = list(at.dataframe[0].proto.column_order)
    assert order == list(tables.RUN_DEFAULT_COLUMNS)
    assert at.dataframe[0].value["id"].tolist() == [app_populated["run"].name.rsplit("_", 1)[-1]]
    at.multiselect(key="runs.columns").set_value(["mean SSIM", "run"]).run()
    assert list(at.dataframe[0].proto.column_order) == [*tables.RUN_DEFAULT_COLUMNS, "mean SSIM", "run"]


def _resume_manager(monkeypatch):
    """A job manager whose in-thread runner records what it was asked to resume and finishes it."""
    from neuroalign.jobs import manager as jobs

    resumed = []

    def runner(*args, callback=None, stop_event=None, **kw):
        resumed.append(args[0])
        runs_io.write_status(args[0], "finished", "resumed and finished")
        return args[0]

    monkeypatch.setattr(jobs, "_manager", jobs.JobManager(runner=runner))
    return resumed


def test_resume_an_interrupted_run(app_populated, monkeypatch):
    """Issue 23 item 6 / issue 20 item 4: a run interrupted by the server's exit, with last.pt and no
    job on it, has an enabled Resume that queues a job continuing it in the same folder."""
    from neuroalign.jobs import manager as jobs

    resumed = _resume_manager(monkeypatch)
    run = s.write_finished_run(app_populated["runs"], "m1", app_populated["subject_dir"], seed=5)
    runs_io.write_status(run, "interrupted", "stopped because the dashboard server exited")
    no_ckpt = s.write_finished_run(app_populated["runs"], "m1", app_populated["subject_dir"], seed=6)
    runs_io.write_status(no_ckpt, "stopped", "stopped on request")
    (run / runs_io.LAST_CKPT).write_bytes(b"checkpoint")
    at = s.app_at(PAGE)
    at.selectbox(key=keys.RUNS_ONE).set_value(str(app_populated["run"])).run()
    assert keys.RUNS_RESUME not in [b.key for b in at.button]  # a finished run has nothing to resume
    at.selectbox(key=keys.RUNS_ONE).set_value(str(no_ckpt)).run()
    button = at.button(key=keys.RUNS_RESUME)
    assert button.disabled and "has no last.pt" in button.proto.help
    at.selectbox(key=keys.RUNS_ONE).set_value(str(run)).run()
    assert not at.button(key=keys.RUNS_RESUME).disabled
    at.button(key=keys.RUNS_RESUME).click().run()
    s.no_exceptions(at)
    (job_id,) = at.session_state[keys.TRAIN_LAUNCHED]
    assert jobs.get_job_manager().wait(job_id, timeout=30).state == "finished"
    assert [str(p) for p in resumed] == [str(run)]
    at.run()
    assert runs_io.read_status(run)["state"] == "finished"
    assert keys.RUNS_RESUME not in [b.key for b in at.button]


def test_a_preparing_run_has_its_subject_and_submission_time(app_populated):
    """Issue 23 item 8: a queued/preparing run (no config.json yet) shows its subject, not "?", and
    "created" is when the run was submitted (its folder's time), not when training started."""
    from datetime import datetime

    run = runs_io.new_run_dir(app_populated["runs"], "m1")
    runs_io.write_status(run, "queued", "waiting for a free slot")
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    table = at.dataframe[0].value.set_index("run")
    assert table.loc[run.name, "subject"] == "m1"
    stamp = datetime.strptime(run.name.split("_")[0], "%Y%m%d-%H%M%S")
    assert table.loc[run.name, "created"].to_pydatetime().replace(tzinfo=None) == stamp
    finished = table.loc[app_populated["run"].name, "created"].to_pydatetime().replace(tzinfo=None)
    assert finished == datetime.strptime(app_populated["run"].name.split("_")[0], "%Y%m%d-%H%M%S")


def _choice_record():
    pair = "random_rectified@1.1:none+v1_gabor@1.1:none"
    return {"image_choice": {
        "chosen": pair, "backbone": pair, "stage": 1, "block": 1, "transform": "none",
        "candidates": [
            {"model": "random_rectified", "backbone": "random_rectified", "stage": 1, "block": 1, "transform": "none",
             "val_mrr": 0.81, "val_top1": 0.7, "n_features": 16384, "features_s": 3.0, "fit_s": 1.5},
            {"model": "efficientnet_lite0 stage 2 block 2", "error": "images too small"},
            {"model": "v1_gabor", "backbone": "v1_gabor", "stage": 1, "block": 1, "transform": "none",
             "val_mrr": 0.79, "val_top1": 0.68, "n_features": 32768, "features_s": 0.0, "fit_s": 2.0},
            {"model": "efficientnet_lite0 stage 3 block 2", "skipped": "time budget"},
            {"model": "random_rectified + v1_gabor", "backbone": pair, "stage": 1, "block": 1, "transform": "none",
             "val_mrr": 0.84, "val_top1": 0.72, "n_features": 49152, "features_s": 0.0, "fit_s": 0.4}]}}


def test_image_choice_frame_says_what_auto_compared():
    from neuroalign.ui.tables import image_choice_frame

    df = image_choice_frame(_choice_record())
    assert df["image model"].tolist()[-1] == "random_rectified + v1_gabor"
    assert df["outcome"].tolist() == ["", "could not read the images: images too small", "", "skipped (time budget)",
                               "chosen"]
    assert df["val MRR"].tolist()[0] == 0.81 and df["seconds"].tolist()[0] == 4.5
    # a shared run's rows carry pooled scores and no layer fields: the best pooled score is the one chosen
    shared = {"image_choice": {"chosen": "v1_gabor", "candidates": [
        {"model": "random_rectified stage 1 block 1", "val_mrr_pooled": 0.5, "val_top1_pooled": 0.4},
        {"model": "v1_gabor stage 1 block 1", "val_mrr_pooled": 0.6, "val_top1_pooled": 0.5},
        {"model": "ds_net_small stage 1 block 3", "skipped": "time budget"}]}}
    assert image_choice_frame(shared)["outcome"].tolist() == ["", "chosen", "skipped (time budget)"]
    # a fixed image model, or a damaged record: no table
    for record in ({}, {"image_choice": None}, {"image_choice": {"candidates": "x"}}, None, [],
                   {"image_choice": {"candidates": [1, "a"]}}):
        df = image_choice_frame(record)
        assert df is None or df.empty


def test_runs_page_shows_how_auto_chose(app_populated):
    import json

    run = app_populated["run"]
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, **_choice_record()}))
    at = s.app_at(PAGE)
    at.selectbox(key=keys.RUNS_ONE).set_value(str(run)).run()
    s.no_exceptions(at)
    (exp,) = [e for e in at.expander if e.label.startswith("How the image model was chosen")]
    assert "3 of 5 candidates" in exp.label
    table = exp.dataframe[0].value
    assert table.loc[table["outcome"] == "chosen", "image model"].tolist() == ["random_rectified + v1_gabor"]


def test_start_caption_says_what_the_start_chose_and_damped():
    from neuroalign.ui.tables import start_caption

    rep = {"alpha_relative": 0.0031622776601683794, "rank": 64, "whiten": [0.0, 0.5], "population_shrink": 0.3105,
           "population_noise_share": 10.372, "selection": "5-fold cross-validation on the train and val images"}
    line = start_caption({"training": {"linear_start": rep}})
    assert line.startswith("Closed-form start: ridge strength 0.0032 (relative to the largest), rank 64, whitening "
                           "exponents 0 (image) / 0.5 (neural), chosen by 5-fold cross-validation")
    assert "damped to 0.31 (the repeat noise along it is 10× an average direction's)" in line
    even = start_caption({"training": {"linear_start": {**rep, "population_shrink": 1.0,
                                                        "population_noise_share": 0.98}}})
    assert "not damped (the repeat noise along it is 0.98×" in even
    no_reps = start_caption({"training": {"linear_start": {**rep, "population_shrink": 1.0,
                                                           "population_noise_share": None}}})
    assert "no repeats" in no_reps
    for damaged in (None, {}, {"training": None}, {"training": {"linear_start": "x"}},
                    {"training": {"linear_start": {"rank": 3}}}, {"training": {"linear_start": {**rep, "whiten": "a"}}}):
        out = start_caption(damaged)
        assert out is None or ("whitening" not in out and out.startswith("Closed-form start"))


def test_runs_page_shows_the_start_line(app_populated):
    import json

    run = app_populated["run"]
    results = json.loads((run / "results.json").read_text())
    results.setdefault("training", {})["linear_start"] = {
        "alpha_relative": 0.01, "rank": 16, "whiten": [0.0, 0.0], "population_shrink": 0.5,
        "population_noise_share": 4.0, "selection": "5-fold cross-validation on the train and val images"}
    (run / "results.json").write_text(json.dumps(results))
    at = s.app_at(PAGE)
    at.selectbox(key=keys.RUNS_ONE).set_value(str(app_populated["run"])).run()
    s.no_exceptions(at)
    assert any(c.value.startswith("Closed-form start: ridge strength 0.01") and "damped to 0.50" in c.value
               for c in at.caption), [c.value for c in at.caption]
