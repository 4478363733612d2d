"""The typed readers of the files the result pages show: `training.profile_file.Profile`
(profile.json), `ui.result_files.RunResults` (results.json) and `ui.result_files.SharedResults`
(shared_results.json). Files written by the real writers read back field for field; a missing
optional field gives the documented default; a wrong-typed one reads as missing (the pages' fallback,
never a traceback)."""

from __future__ import annotations

import json

import pytest

import app_support as s
from app_support import app_env  # noqa: F401 (fixture)
from profile_support import make_profile
from shared_support import shared_config, write_shared_subjects

from neuroalign.training.profile_file import NOT_A_ROW, LayerFeve, Profile
from neuroalign.ui import profile_view, results_view, shared_view
from neuroalign.ui.result_files import CrossSubject, Encoding, RunResults, SharedResults
from neuroalign.ui.summary import RunSummary

DIRS = ("image_to_neural", "neural_to_image")


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """A shared run over two subjects with repeats (baselines, comparison, FEVE, cross-subject retrieval)."""
    from neuroalign.training.shared_runs import train_shared

    root = tmp_path_factory.mktemp("run_files")
    write_shared_subjects(root / "data", names=("A", "B"), n_images=60, neurons=(12, 20))
    run = train_shared(["A", "B"], shared_config(), root / "data", root / "runs", cache_dir=root / "cache")
    return {"run": run, "data": root / "data", "cache": root / "cache"}


def _json(path):
    return json.loads(path.read_text(encoding="utf-8"))


# ---- profile.json -----------------------------------------------------------------------------------


def test_profile_written_by_the_writer_reads_back(shared_run):
    from neuroalign.config import preset
    from neuroalign.data import load_subject
    from neuroalign.plots.profile import has_feve
    from neuroalign.training.profile import alignment_profile, load_profile, save_profile

    subject_dir = shared_run["data"] / "A"
    subject = load_subject(subject_dir)
    save_profile(subject_dir, alignment_profile(subject, preset("recommended"), models=["random_rectified"],
                                                cache_dir=shared_run["cache"]))
    raw = load_profile(subject_dir, subject.data_hash)
    p = Profile.from_json(raw)
    assert len(p.rows) == len(raw["rows"]) >= 1 and p.raw is raw
    for row, r in zip(p.rows, raw["rows"]):
        assert (row.model, row.stage, row.block, row.label) == (r["model"], r["stage"], r["block"], r["label"])
        for d in DIRS:
            assert row.val.top1(d) == r["val"][d]["top1"] and row.test.top1(d) == r["test"][d]["top1"]
        assert row.test.n == r["test"]["n"] and row.val_mrr == r["val_mrr"] and row.seconds == r["seconds"]
        assert (row.feve.median, row.feve.n_included, row.feve.n_neurons) == (
            r["feve"]["median"], r["feve"]["n_included"], r["feve"]["n_neurons"])
        assert row.error == "" and row.scored
    assert p.best_row is p.rows[raw["best"]["overall"]] and dict(p.best_per_model) == raw["best"]["per_model"]
    for name, line in raw["reference"].items():
        assert all(p.reference_top1(name, d) == line[d] for d in DIRS)
    assert dict(p.split) == raw["split"] and (p.n_images, p.n_neurons) == (raw["n_images"], raw["n_neurons"])
    assert (p.subject, p.data_hash, p.layers) == ("A", subject.data_hash, "stages")
    assert p.complete and p.stopped is None and p.elapsed_s == raw["elapsed_s"] and p.kept_from_stored == ()
    assert p.has_feve == has_feve(raw) is True and p.models == ["random_rectified"]
    # the page's table is the same from the dict or the reader
    assert profile_view.rows_table(raw).equals(profile_view.rows_table(p))


def test_profile_missing_fields_read_as_documented():
    p = Profile.from_json({})
    assert p.rows == () and p.best_row is None and p.complete and p.stopped is None
    assert dict(p.split) == {"train": None, "val": None, "test": None} and p.n_images is None
    assert p.kept_from_stored == () and p.reference_top1("ridge", "image_to_neural") is None
    old = make_profile(feve=False)
    del old["complete"], old["stopped"], old["reference"]["oracle"]
    p = Profile.from_json(old)
    assert p.complete and not p.has_feve and all(r.feve is None for r in p.rows)
    assert p.reference_top1("oracle", "image_to_neural") is None and p.mark(2) == "★" and p.mark(4) == "◯"
    table = profile_view.rows_table(p)
    assert list(table["median FEVE"].isna()) == [True] * 5 and set(table["neurons"]) == {""}
    assert LayerFeve(median=0.3).neurons == "" and Profile.from_json(p) is p


def test_profile_wrong_typed_fields_read_as_missing():
    raw = make_profile()
    raw["rows"].insert(0, "not a row")  # a row that is not an object keeps its place: best still indexes rows
    raw["best"] = {"overall": 3, "per_model": {"ds_net_tiny": 3, "random_rectified": "5"}}
    raw["rows"][1]["val"] = "x"
    raw["rows"][2]["feve"] = {"median": "0.4", "n_included": 3}  # no n_neurons: no "3 of ?" (it used to raise)
    raw.update(split="x", n_images="100", reference={"ridge": 0.3, "repeat": {"image_to_neural": "high"}},
               kept_from_stored=5, elapsed_s=float("nan"))
    p = Profile.from_json(raw)
    assert p.rows[0].error == NOT_A_ROW and not p.rows[0].scored and p.best_row is p.rows[3]
    assert dict(p.best_per_model) == {"ds_net_tiny": 3} and p.mark(5) == ""
    assert p.rows[1].val.top1("image_to_neural") is None and p.rows[1].test.top1("image_to_neural") == 0.25
    assert p.rows[2].feve == LayerFeve(n_included=3) and p.rows[2].feve.neurons == ""
    assert dict(p.split) == {"train": None, "val": None, "test": None} and p.n_images is None
    assert dict(p.reference) == {"repeat": {"image_to_neural": None, "neural_to_image": None}}
    assert p.kept_from_stored == () and p.elapsed_s is None
    table = profile_view.rows_table(p)
    assert list(table["best"]) == ["", "", "", "★", "", ""] and table["note"][0] == NOT_A_ROW
    for rows in ("oops", None, {"0": {}}):
        assert Profile.from_json({**raw, "rows": rows}).rows == ()
    assert Profile.from_json([1, 2]) == Profile()


def test_profile_page_with_odd_fields_has_no_traceback(app_env):  # noqa: F811 (fixture)
    from neuroalign.data import load_subject
    from neuroalign.training.profile import save_profile

    subject_dir = s.write_subject(app_env["data"], "m1")
    raw = make_profile(load_subject(subject_dir).data_hash)
    raw["rows"][0]["feve"] = {"median": 0.2, "n_included": 3}  # these two used to raise in the page
    raw.update(kept_from_stored=5, n_images=None)
    save_profile(subject_dir, raw)
    at = s.app_at("pages/profile.py")
    s.no_exceptions(at)
    assert any("? images × 24 neurons" in c.value for c in at.caption)
    assert at.dataframe[0].value["neurons"].tolist() == ["", "20 of 24", "20 of 24", "20 of 24", "20 of 24"]


# ---- results.json -----------------------------------------------------------------------------------


def test_results_written_by_the_writer_read_back(shared_run):
    from neuroalign.training.runs import best_linear

    raw = _json(shared_run["run"] / "subjects" / "A" / "results.json")
    res = RunResults.from_json(raw)
    t = raw["test"]
    assert res.test_size == t["n"] and res.has_test and res.test.chance["chance_top1"] == t["chance_top1"]
    for d in DIRS:
        for metric in ("top1", "top5", "mrr", "mean_rank"):
            assert res.test.metric(d, metric) == t[d][metric]
        assert list(res.test.recorded_top1_ci(d)) == t[d]["top1_ci"]
        best = best_linear(raw["baselines"])
        assert res.best_linear_top1(d) == pytest.approx(best[f"best_linear_top1_{d}"])
    assert set(res.baselines) == {k for k, v in raw["baselines"].items() if isinstance(v, dict)}
    for key, block in res.baselines.items():
        if res.baseline(key) is not None:
            assert all(block.top1(d) == raw["baselines"][key][d]["top1"] for d in DIRS)
    assert set(res.comparison) == {d for d in DIRS if d in raw["comparison"]} != set()
    for d in res.comparison:
        c, row = res.comparison[d], raw["comparison"][d]
        assert (c.best_name, c.difference, c.p_value, list(c.difference_ci)) == (
            row["best_name"], row["difference"], row["p_value"], row["difference_ci"])
    model = raw["encoding"]["model"]
    assert res.encoding["model"].median == model["median"] and res.encoding["model"].n_neurons == 12
    assert len(res.feve_per_neuron) == 12
    # the pages' functions answer the same from the dict and from the reader
    for fn in ("linear_verdicts", "top1_bar_rows", "chance_top1", "best_linear_columns", "encoding_summary",
               "feve_per_neuron", "column_help", "small_test_warning"):
        assert getattr(results_view, fn)(raw) == getattr(results_view, fn)(res), fn
    assert results_view.metrics_table(raw, "neural_to_image").equals(results_view.metrics_table(res, "neural_to_image"))


def test_old_results_fall_back_as_documented():
    old = {"test": {"image_to_neural": {"top1": 0.5}, "neural_to_image": {"top1": 0.4}, "n": 40},
           "baselines": {"ridge": {"image_to_neural": {"top1": 0.3}, "neural_to_image": {"top1": 0.45}}}}
    res = RunResults.from_json(old)
    assert res.test.recorded_top1_ci("image_to_neural") is None and res.comparison == {} and res.encoding == {}
    assert res.feve_per_neuron is None and results_view.encoding_summary(old) is None
    assert results_view.top1_with_interval(res.test, "image_to_neural", 40) == (
        0.5, *results_view.shown_interval(0.5, 40))  # a Wilson interval from top-1 and n
    verdicts = results_view.linear_verdicts(old)
    assert [v.beats for v in verdicts] == [True, False] and "paired" not in verdicts[0].text
    assert [r.key for r in results_view.present_references(old)] == ["ridge"]
    assert results_view.chance_top1(old) == pytest.approx(1 / 40)
    assert Encoding.from_json({"median": 0.5}).min_fev == 0.15 and Encoding.from_json("x") is None
    empty = RunResults.from_json(None)
    assert empty.test_size is None and not empty.has_test and empty.baselines == {}
    assert RunSummary().run_results == empty and RunResults.from_json(res) is res


def test_wrong_typed_results_give_the_pages_fallbacks():
    bad = {"test": [1, 2], "baselines": {"ridge": "broken"}, "comparison": {"image_to_neural": "x"},
           "encoding": {"model": "damaged"}}
    assert [v.text for v in results_view.linear_verdicts(bad)] == [
        "image → neural: no test top-1 recorded.", "neural → image: no test top-1 recorded."]
    assert results_view.metrics_table(bad, "image_to_neural")["model"].isna().all()
    assert results_view.present_references(bad) == [] and results_view.encoding_summary(bad) is None
    as_text = RunResults.from_json({"test": {"image_to_neural": {"top1": "0.5"}, "neural_to_image": {"top1": True},
                                             "n": "40"}})
    assert as_text.test.top1("image_to_neural") is None and as_text.test.top1("neural_to_image") is None
    assert as_text.test_size is None  # a number written as text, or a bool, is a wrong type: missing
    ci = {"test": {"image_to_neural": {"top1": 0.5, "top1_ci": ["a", "b"]}, "n": 40},
          "comparison": {"image_to_neural": {"best_name": "ridge", "difference": "x", "p_value": 0.2,
                                             "difference_ci": [0, 1]}}}
    res = RunResults.from_json(ci)
    assert res.test.recorded_top1_ci("image_to_neural") == (None, None) and res.test_size == 40
    assert results_view.top1_with_interval(res.test, "image_to_neural", None) == (
        0.5, *results_view.shown_interval(0.5, 40))  # unreadable bounds: Wilson, as before
    assert res.comparison["image_to_neural"].difference is None
    assert results_view._paired_note(res, "image_to_neural", "ridge") is None  # the old wording then


# ---- shared_results.json ------------------------------------------------------------------------------


def test_shared_results_written_by_the_writer_read_back(shared_run):
    raw = _json(shared_run["run"] / "shared_results.json")
    shared = SharedResults.from_json(raw)
    assert shared.kind == "shared" and set(shared.subjects) == {"A", "B"} and shared.elapsed_s == raw["elapsed_s"]
    for name, per in raw["subjects"].items():
        sub = shared.subjects[name]
        assert sub.n_test == per["n_test"] and sub.chance_top1 == per["chance_top1"]
        assert all(sub.top1[d] == per[f"top1_{d}"] and list(sub.top1_ci[d]) == per[f"top1_ci_{d}"] for d in DIRS)
        assert sub.results == f"subjects/{name}/results.json"
    cross, rc = shared.cross_subject, raw["cross_subject"]
    assert [(p.a, p.b) for p in cross.pairs] == [(p["a"], p["b"]) for p in rc["pairs"]] == [("A", "B")]
    pair = cross.pairs[0]
    assert pair.mean.n == rc["pairs"][0]["n"] and pair.mean.a_to_b.top1 == rc["pairs"][0]["a_to_b"]["top1"]
    assert list(pair.mean.b_to_a.top1_ci) == rc["pairs"][0]["b_to_a"]["top1_ci"]
    assert (pair.single_trial is None) == ("single_trial" not in rc["pairs"][0])
    assert set(cross.repeat_scale) == set(rc["repeat_scale"]) and cross.skipped == ()
    for subject in (None, "A", "B"):
        assert shared_view.cross_subject_rows(rc, subject) == shared_view.cross_subject_rows(cross, subject)
    summary = RunSummary(shared={"subject": "A", "results": raw})
    assert summary.shared_subject == "A" and summary.shared_results == shared


def test_shared_results_missing_and_wrong_typed_fields():
    empty = SharedResults.from_json(None)
    assert empty.kind is None and empty.subjects == {} and empty.cross_subject == CrossSubject()
    assert RunSummary().shared_results == empty and RunSummary().shared_subject is None
    assert SharedResults.from_json({"subjects": [1], "cross_subject": "x"}) == empty
    m = {"top1": "x", "top1_ci": [0.2], "top5": 1, "mrr": 0.5}
    cross = CrossSubject.from_json({"pairs": [{"a": "A", "b": "B", "a_to_b": m, "b_to_a": "x", "n": 4.0,
                                               "chance_top1": 0.25, "single_trial": [1]}, "not a pair"],
                                    "repeat_scale": {"A": {"a_to_b": m, "n": 5}, "B": "x"},
                                    "skipped": [{"a": "A", "b": "C", "reason": None}, 3]})
    assert len(cross.pairs) == 1 and cross.pairs[0].single_trial is None and cross.pairs[0].mean.b_to_a is None
    assert set(cross.repeat_scale) == {"A"} and [(k.a, k.b, k.reason) for k in cross.skipped] == [("A", "C", None)]
    rows = shared_view.cross_subject_rows(cross, "A")
    assert [r["label"] for r in rows] == ["A → B", "A: repeat 1 → repeat 2"]
    assert (rows[0]["top1"], rows[0]["lo"], rows[0]["hi"], rows[0]["n"], rows[0]["top5"]) == (None, 0.2, None, 4, 1.0)
    for odd in ({"pairs": {"a": "A"}}, {"repeat_scale": [1]}, {"skipped": "x"}, None):
        assert shared_view.cross_subject_rows(odd) == []
