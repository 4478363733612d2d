"""The dashboard and shared runs (issue 21): the Train page's shared-model and adapt options run
through the job machinery and end as runs on the Runs page; Runs, Retrieval, Feature maps and
Neurons open a shared run with a subject picker; Retrieval shows cross-subject retrieval. Tiny
subjects (90 images of 36x64 px, the random-feature image model): seconds per fit."""

from __future__ import annotations

from pathlib import Path

import pytest

import app_support as s
from app_support import app_env  # noqa: F401 (fixture)
from shared_support import shared_config, write_other_sized, write_shared_subjects

from neuroalign.jobs.manager import get_job_manager
from neuroalign.ui import keys, shared_view

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- the Train page -------------------------------------------------------------------------------


def _shared_form(at, subjects):
    at.radio(key=keys.TRAIN_KIND).set_value(shared_view.SHARED).run()
    at.multiselect(key=keys.TRAIN_SUBJECTS).set_value(list(subjects)).run()
    at.selectbox(key=keys.TRAIN_FIELD_PREFIX + "image.backbone").set_value("random_rectified").run()  # above the form
    # the layer fields follow the image model at once (a one-layer bank: stage 1 block 1, no nonlinearity)
    assert at.number_input(key=keys.TRAIN_FIELD_PREFIX + "image.block").value == 1
    assert at.selectbox(key=keys.TRAIN_FIELD_PREFIX + "image.transform").value == "none"
    at.number_input(key=keys.TRAIN_FIELD_PREFIX + "n_components").set_value(16)  # in the form: applied on submit
    return at


def test_train_page_shared_model_and_adaptation_through_jobs(app_env):
    root = app_env["data"]
    write_shared_subjects(root, names=("A", "B", "C"))
    write_shared_subjects(root, names=("D",), image_seed=5)
    write_other_sized(root, "E")
    at = s.app_at("pages/train.py")
    s.no_exceptions(at)
    # the shared form shows only what a closed-form shared model reads
    at = _shared_form(at, ["A", "E"])
    labels = {w.label for w in at.number_input}
    assert "Shared dimensions" in labels and "Epochs" not in labels
    # different image sizes: one line before anything starts, no run folder
    at.button(key=keys.TRAIN_SUBMIT).click().run()
    s.no_exceptions(at)
    (err,) = [e.value for e in at.error]
    assert "differ in size" in err and "A: 36x64" in err and "E: 32x48" in err and "\n" not in err
    assert get_job_manager().snapshots() == [] and not any(app_env["runs"].iterdir())
    # A, B, C: one shared job through a worker process, on the job card, then on the Runs page
    at.multiselect(key=keys.TRAIN_SUBJECTS).set_value(["A", "B", "C"]).run()
    submit = at.button(key=keys.TRAIN_SUBMIT)
    assert submit.label.startswith("Start 1 shared model over 3 subjects")
    submit.click().run()
    s.no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    (job_id,) = at.session_state[keys.TRAIN_LAUNCHED]
    snap = get_job_manager().wait(job_id, timeout=180)
    assert snap.state == "finished", snap.error
    assert snap.mode == "shared" and snap.subjects == ("A", "B", "C") and snap.progress == 1.0 and snap.kind == "worker"
    assert {p.name for p in (snap.run_dir / "subjects").iterdir()} == {"A", "B", "C"}
    at.run()
    s.no_exceptions(at)
    assert any("shared model" in m.value and "A, B, C" in m.value for m in at.markdown)
    assert any("shared model finished" in m.value for m in at.success)

    at.switch_page("pages/runs.py").run()
    s.no_exceptions(at)
    table = next(d.value for d in at.dataframe if "kind" in d.value)
    row = table[table["path"] == str(snap.run_dir)].iloc[0]
    assert row["subject"] == "A+B+C (shared)" and row["state"] == "finished"
    at.selectbox(key=keys.RUNS_ONE).set_value(str(snap.run_dir)).run()
    per = next(d.value for d in at.dataframe if list(d.value.columns[:2]) == ["subject", "top1 img→neu"])
    assert per["subject"].tolist() == ["A", "B", "C"] and per["top1 img→neu"].between(0, 1).all()

    # adapt D to the shared run from the Train page (only its read-in is fitted)
    at.switch_page("pages/train.py").run()
    at.radio(key=keys.TRAIN_KIND).set_value(shared_view.ADAPT).run()
    s.no_exceptions(at)
    assert at.selectbox(key=keys.TRAIN_ADAPT_RUN).value == str(snap.run_dir)
    assert set(at.selectbox(key=keys.TRAIN_ADAPT_SUBJECT).options) == {"D", "E"}  # A, B, C are in the run
    at.selectbox(key=keys.TRAIN_ADAPT_SUBJECT).set_value("E").run()
    at.button(key=keys.TRAIN_ADAPT_SUBMIT).click().run()  # other-sized images: refused in one line
    (err,) = [e.value for e in at.error]
    assert "32x48" in err and "36x64" in err and "\n" not in err
    at.selectbox(key=keys.TRAIN_ADAPT_SUBJECT).set_value("D").run()
    at.button(key=keys.TRAIN_ADAPT_SUBMIT).click().run()
    s.no_exceptions(at)
    job_id = at.session_state[keys.TRAIN_LAUNCHED][-1]
    adapted = get_job_manager().wait(job_id, timeout=120)
    assert adapted.state == "finished", adapted.error
    assert adapted.mode == "adapt" and adapted.adapt_from == snap.run_dir.resolve()
    assert (adapted.run_dir / "subjects" / "D" / "results.json").is_file()
    at.run()
    assert any("adapted from" in m.value for m in at.markdown)


# ---- the result pages on a shared run -------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_roots(tmp_path_factory):
    """A data root with A, B, C (the same images) and D (others), one shared run over A, B, C and
    D adapted from it (library calls: the pages read what a job writes)."""
    from neuroalign.training.shared_runs import adapt_from_run, train_shared

    base = tmp_path_factory.mktemp("shared-pages")
    data, runs, cache = base / "data", base / "runs", base / "cache"
    write_shared_subjects(data, names=("A", "B", "C"))
    write_shared_subjects(data, names=("D",), image_seed=5)
    run = train_shared(["A", "B", "C"], shared_config(), data, runs, cache_dir=cache)
    (adapted,) = adapt_from_run(run, ["D"], data, runs, cache_dir=cache)
    return {"data": data, "runs": runs, "cache": cache, "run": run, "adapted": adapted}


@pytest.fixture
def shared_pages(shared_roots, monkeypatch):
    from neuroalign.jobs import manager as jobs

    monkeypatch.setattr(jobs, "_manager", None)
    monkeypatch.setenv("NEUROALIGN_DATA_DIR", str(shared_roots["data"]))
    monkeypatch.setenv("NEUROALIGN_RUNS_DIR", str(shared_roots["runs"]))
    monkeypatch.setenv("NEUROALIGN_CACHE_DIR", str(shared_roots["cache"]))
    monkeypatch.setenv("NEUROALIGN_NO_DEMO", "1")
    yield shared_roots
    if jobs._manager is not None:
        jobs._manager.close(timeout=10, kill=True)


def _open(page: str, run: Path, subject: str | None = None):
    at = s.app_at()
    at.session_state[keys.SELECTED_RUN] = str(run)
    if subject is not None:
        at.session_state[keys.SHARED_SUBJECT] = subject
    at.switch_page(page).run()
    s.no_exceptions(at)
    return at


def _picker(at):
    return next(b for b in at.selectbox if b.label == "Subject in this shared run")


@pytest.mark.parametrize("page", ["pages/retrieval.py", "pages/feature_maps.py", "pages/neurons.py"])
def test_result_pages_open_a_shared_run_with_a_subject_picker(shared_pages, page):
    at = _open(page, shared_pages["run"])
    picker = _picker(at)
    assert picker.options == ["A", "B", "C"] and picker.value == "A"
    picker.set_value("B").run()
    s.no_exceptions(at)
    problems = [e.value for e in at.error if "linear readout" not in e.value]  # the verdict boxes are errors too
    assert not problems, problems
    assert at.session_state[keys.SHARED_SUBJECT] == "B"  # the next page opens on the same subject
    if page.endswith("retrieval.py"):
        import json

        res = json.loads((shared_pages["run"] / "subjects" / "B" / "results.json").read_text())
        assert at.subheader[0].value == f"Test identification among {res['test']['n']} held-out images"
        metrics = at.dataframe[0].value.set_index("metric")  # with the baselines and intervals of B's results.json
        assert metrics.loc["top1", "model"] == pytest.approx(res["test"]["image_to_neural"]["top1"])
        assert metrics.loc["top1 95% lo", "model"] == pytest.approx(res["test"]["image_to_neural"]["top1_ci"][0])
        assert metrics.loc["top1", "ridge pixels"] == pytest.approx(res["baselines"]["ridge"]["image_to_neural"]["top1"])
    elif page.endswith("feature_maps.py"):
        assert any("no feature maps" in i.value for i in at.info)
        titles = [sp["layout"]["title"]["text"] for sp in s.chart_specs(at)]
        assert any(t.startswith("test image") and "cosine" in t for t in titles)
    else:
        top = next(d.value for d in at.dataframe if "neuron" in d.value.columns)
        assert len(top) == 20 and top["neuron"].between(0, 29).all()  # B has 30 neurons
        assert abs(top["share"].sum()) > 0


def test_retrieval_shows_cross_subject_retrieval(shared_pages):
    import json

    at = _open("pages/retrieval.py", shared_pages["run"], subject="A")
    table = next(d.value for d in at.dataframe if "query → candidates" in d.value.columns)
    cross = json.loads((shared_pages["run"] / "shared_results.json").read_text())["cross_subject"]
    pair = next(p for p in cross["pairs"] if (p["a"], p["b"]) == ("A", "B"))
    means = table[table["responses"] == "mean over repeats"]
    assert set(means["query → candidates"]) == {"A → B", "B → A", "A → C", "C → A"}  # both directions, A's pairs
    ab = means[means["query → candidates"] == "A → B"].iloc[0]
    assert ab["top-1"] == pytest.approx(pair["a_to_b"]["top1"])
    assert [ab["95% lo"], ab["95% hi"]] == pytest.approx(pair["a_to_b"]["top1_ci"])
    assert ab["chance"] == pytest.approx(1 / pair["n"]) and ab["images"] == pair["n"]
    ba = means[means["query → candidates"] == "B → A"].iloc[0]
    assert ba["top-1"] == pytest.approx(pair["b_to_a"]["top1"])
    assert set(table[table["responses"] == "single trials"]["query → candidates"]) == set(means["query → candidates"])
    scale = table[table["responses"] == "same subject's repeats"]
    assert set(scale["query → candidates"]) == {"A: repeat 1 → repeat 2", "B: repeat 1 → repeat 2",
                                                 "C: repeat 1 → repeat 2"}
    assert scale.iloc[0]["top-1"] == pytest.approx(cross["repeat_scale"]["A"]["a_to_b"]["top1"])
    chart = next(sp for sp in s.chart_specs(at) if sp["layout"]["title"]["text"].startswith("Cross-subject"))
    assert {t["name"] for t in chart["data"]} >= {"across subjects", "same subject, repeat 1 → repeat 2", "chance"}
    # the adapted subject D saw other images: one line says why there is nothing to compare
    at = _open("pages/retrieval.py", shared_pages["adapted"])
    assert _picker_or_none(at) is None or _picker_or_none(at).options == ["D"]
    assert any("No cross-subject retrieval for D" in i.value for i in at.info)


def _picker_or_none(at):
    return next((b for b in at.selectbox if b.label in ("Subject in this shared run", "Subject")), None)


def test_cross_subject_rows_and_phase_progress():
    from neuroalign.jobs.shared_job import PhaseProgress

    m = {"top1": 0.5, "top1_ci": [0.2, 0.8], "top5": 1.0, "mrr": 0.7}
    cross = {"pairs": [{"a": "A", "b": "B", "a_to_b": m, "b_to_a": {**m, "top1": 0.25}, "n": 4, "chance_top1": 0.25},
                       {"a": "B", "b": "C", "a_to_b": m, "b_to_a": m, "n": 4, "chance_top1": 0.25}],
             "repeat_scale": {"A": {"a_to_b": m, "n": 5, "chance_top1": 0.2}}}
    rows = shared_view.cross_subject_rows(cross, "A")
    assert [r["label"] for r in rows] == ["A → B", "B → A", "A: repeat 1 → repeat 2"]
    assert rows[1]["top1"] == 0.25 and rows[0]["lo"] == 0.2 and rows[2]["chance"] == 0.2
    p = PhaseProgress("shared", 3)
    seen = [p.update(msg) for msg in ("hashing images", "features: m stage 1 block 1, A (1/2)",
                                      "features: m stage 1 block 1, B (1/2)", "shared fit: ridge strength 5/5",
                                      "features: m stage 1 block 1, A (2/2)", "shared fit: ridge strength 1/5",
                                      "evaluating A", "evaluating B", "evaluating C")]
    assert seen == sorted(seen) and 0 < seen[0] < seen[3] < seen[5] < seen[6] < seen[-1] < 1  # never backwards
