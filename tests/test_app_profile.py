"""Image models page through AppTest: a stored profile drawn (chart, FEVE chart, table, best layer),
a profile started as a background job on the tiny simulated subject that completes and is kept with
the subject, Stop, stale and missing profiles explained."""

import shutil

import pytest

import app_support as s
from app_support import app_env  # noqa: F401 (fixture)
from profile_support import make_profile

from neuroalign.jobs import profile_job
from neuroalign.training.profile import PROFILE_FILE, load_profile, save_profile
from neuroalign.ui import nav, profile_view

PAGE = "pages/profile.py"
JOB_TIMEOUT_S = 300  # a shared 2-core CPU: worker start, one tiny layer and the reference lines


@pytest.fixture
def profile_env(app_env, monkeypatch):
    """app_env with a fresh profile-job manager, closed at the end (a worker left running is killed)."""
    monkeypatch.setattr(profile_job, "_jobs", None)
    yield app_env
    if profile_job._jobs is not None:
        profile_job._jobs.close(timeout=30, kill=True)


@pytest.fixture
def stored(profile_env):
    from neuroalign.data import load_subject

    subject_dir = s.write_subject(profile_env["data"], "m1")
    profile_env["subject_dir"] = subject_dir
    profile_env["hash"] = load_subject(subject_dir).data_hash
    return profile_env


@pytest.fixture
def sim_app(profile_env, sim_root):
    shutil.copytree(sim_root / "sim-M1", profile_env["data"] / "sim-M1")
    profile_env["subject_dir"] = profile_env["data"] / "sim-M1"
    return profile_env


def _titles(at):
    return [sp["layout"]["title"]["text"] for sp in s.chart_specs(at)]


def test_stored_profile_renders_chart_feve_and_table(stored):
    save_profile(stored["subject_dir"], make_profile(stored["hash"]))
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert at.title[0].value == "Image models"
    assert _titles(at) == ["Top-1 identification by layer (test images)", "Median FEVE by layer (test repeats)"]
    spec = s.chart_specs(at)[0]
    best = [t for t in spec["data"] if t.get("name") == "best layer (highest val MRR)"]
    assert len(best) == 2 and all(list(s.arr(t["x"])) == [8.0] for t in best)  # both panels, at stage 3's end
    assert any(m.value.startswith("**Best layer: ds_net_tiny, stage 3 block 4**") for m in at.markdown)
    metrics = {m.label: m for m in at.metric}
    assert metrics["Top-1, image → neural"].value == "0.55" and metrics["Median FEVE"].value == "0.40"
    assert metrics["Top-1, neural → image"].delta == "+0.22 vs ridge"  # 0.50 vs the random-feature ridge's 0.28
    assert any("chosen on validation only" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert list(table["best"]) == ["", "", "★", "", "◯"] and list(table["model"])[-1] == "random_rectified"
    assert table["test img→neu"].tolist() == [r["test"]["image_to_neural"]["top1"] for r in make_profile()["rows"]]
    at.radio(key=profile_view.SPLIT_KEY).set_value("val").run()
    s.no_exceptions(at)
    assert _titles(at)[0] == "Top-1 identification by layer (validation images)"
    at.radio(key=profile_view.X_KEY).set_value("relative").run()
    assert s.chart_specs(at)[0]["layout"]["xaxis"]["range"] == [0.0, 1.05]
    assert s.theme_placeholders(at) == []


def test_missing_stale_and_no_repeat_profiles_are_explained(stored):
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert any("No profile of m1 yet" in i.value for i in at.info) and not at.get("plotly_chart")
    assert at.button(key=profile_view.RUN_KEY).label.startswith("Run profile (")
    save_profile(stored["subject_dir"], make_profile("another-hash"))
    at = s.app_at(PAGE)
    assert any("computed on other data" in i.value for i in at.info)
    save_profile(stored["subject_dir"], make_profile(stored["hash"], feve=False))
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert _titles(at) == ["Top-1 identification by layer (test images)"]
    assert any("no repeats" in c.value for c in at.caption)


def test_profile_page_in_navigation_and_linked_from_retrieval(stored):
    paths = [p.path for p in nav.PAGES]
    assert paths.count(PAGE) == 1 and paths.index(PAGE) == paths.index(nav.RETRIEVAL.path) + 1
    run = s.write_finished_run(stored["runs"], "m1", stored["subject_dir"])
    assert run.is_dir()
    at = s.app_at("pages/retrieval.py")
    s.no_exceptions(at)
    assert "profile" in [link.proto.page for link in at.get("page_link")]
    assert at.session_state[profile_view.PREFERRED_SUBJECT] == "m1"  # the Image models page opens on the run's subject


def test_run_profile_job_completes_and_is_kept_with_the_subject(sim_app):
    at = s.app_at(PAGE, timeout=60)
    s.no_exceptions(at)
    assert at.selectbox(key=profile_view.SUBJECT_KEY).value == "sim-M1"
    at.multiselect(key=profile_view.MODELS_KEY).set_value(["v1_gabor"]).run()
    assert at.button(key=profile_view.RUN_KEY).label == "Run profile (1 layer)"
    at.button(key=profile_view.RUN_KEY).click().run()
    s.no_exceptions(at)
    assert not [e.value for e in at.error]
    assert any("Profiling sim-M1" in m.value for m in at.markdown)  # the job box, with its Stop button
    assert at.button(key=profile_view.STOP_KEY) is not None
    assert at.button(key=profile_view.RUN_KEY).disabled
    final = profile_job.get_profile_jobs().wait(sim_app["subject_dir"], timeout=JOB_TIMEOUT_S)
    assert final.state == "finished", final.message
    prof = load_profile(sim_app["subject_dir"])
    assert prof["complete"] and [r["model"] for r in prof["rows"]] == ["v1_gabor"]
    assert "val" in prof["rows"][0] and "ridge_random" in prof["reference"]
    at.run()
    s.no_exceptions(at)
    assert any("Last profile job (finished)" in b.value for b in at.success)
    assert _titles(at)[0] == "Top-1 identification by layer (test images)"
    assert at.dataframe[0].value["model"].tolist() == ["v1_gabor"]


def test_stop_ends_the_profile_job(sim_app):
    at = s.app_at(PAGE, timeout=60)
    at.multiselect(key=profile_view.MODELS_KEY).set_value(["ds_net_tiny"]).run()
    at.radio(key=profile_view.LAYERS_KEY).set_value("all").run()
    at.button(key=profile_view.RUN_KEY).click().run()
    s.no_exceptions(at)
    at.button(key=profile_view.STOP_KEY).click().run()
    s.no_exceptions(at)
    final = profile_job.get_profile_jobs().wait(sim_app["subject_dir"], timeout=JOB_TIMEOUT_S)
    assert final.state == "stopped", final.message
    assert final.message.startswith("stopped by user")
    prof = load_profile(sim_app["subject_dir"])
    assert prof is None or (not prof["complete"] and len(prof["rows"]) < 9)  # 9 blocks: it ended early
    if prof is None:
        assert not (sim_app["subject_dir"] / PROFILE_FILE).exists()
    at.run()
    s.no_exceptions(at)
    assert any("Last profile job (stopped)" in b.value for b in at.info)
