"""Retrieval page through AppTest: prerequisites, metrics table, query browser both directions,
heatmap and rank histogram, damaged or orphaned runs."""

import numpy as np
import pytest

import app_support as s
from app_support import app_env, app_populated  # noqa: F401 (fixtures)

from neuroalign import plots
from neuroalign.ui import keys

PAGE = "pages/retrieval.py"


def test_empty_root_points_to_train(app_env):
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert any("No finished run yet" in i.value for i in at.info)


def test_metrics_table_and_charts(app_populated):
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    results = s.load_json(app_populated["run"] / "results.json")
    table = at.dataframe[0].value.set_index("metric")
    assert table.loc["top1", "model"] == results["test"]["image_to_neural"]["top1"]  # image -> neural first
    assert table.loc["top1", "chance"] == results["test"]["chance_top1"]
    ridge = results["baselines"]["ridge"]["neural_to_image"]["mean_rank"]
    at.radio(key="retrieval.table_direction").set_value("neural_to_image").run()
    table = at.dataframe[0].value.set_index("metric")
    assert table.loc["mean_rank", "ridge pixels"] == ridge
    assert table.loc["top1", "model"] == results["test"]["neural_to_image"]["top1"]
    titles = [sp["layout"]["title"]["text"] for sp in s.chart_specs(at)]
    assert any("similarity" in t.lower() for t in titles) and any("Rank of the true match" in t for t in titles)
    assert s.theme_placeholders(at) == []


def _add_results(run_dir, **changes):
    from neuroalign.io_utils import atomic_write_json

    results = s.load_json(run_dir / "results.json")
    for key, value in changes.items():
        results[key] = value
    atomic_write_json(run_dir / "results.json", results)
    return results


def _block(i2n, n2i, n=6, ci=None, rows="made up"):
    out = {"image_to_neural": {"top1": i2n, "top5": 0.9, "top10": 1.0, "mean_rank": 2.0, "median_rank": 2.0,
                               "mrr": 0.5},
           "neural_to_image": {"top1": n2i, "top5": 0.9, "top10": 1.0, "mean_rank": 2.0, "median_rank": 2.0,
                               "mrr": 0.5}, "n": n, "rows": rows}
    if ci:
        out["image_to_neural"]["top1_ci"], out["neural_to_image"]["top1_ci"] = ci
    return out


def test_old_run_gets_wilson_intervals_and_a_linear_verdict(app_populated):
    """An old results.json (ridge from pixels only, no top1_ci) still shows intervals and the verdict."""
    from neuroalign.evaluation.retrieval import wilson_interval
    from neuroalign.ui.results_view import shown_interval

    results = s.load_json(app_populated["run"] / "results.json")
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    table = at.dataframe[0].value.set_index("metric")
    assert list(table.columns) == ["model", "chance", "ridge pixels"]
    top1 = results["test"]["image_to_neural"]["top1"]
    lo, hi = wilson_interval(top1, 6)
    assert shown_interval(top1, 6) == (lo, hi) and shown_interval(top1, 0) == (0.0, 1.0)  # the display's one formula
    assert table.loc["top1 95% lo", "model"] == pytest.approx(lo)
    assert table.loc["top1 95% hi", "model"] == pytest.approx(hi)
    assert 0.0 <= lo <= top1 <= hi <= 1.0
    texts = [b.value for b in list(at.success) + list(at.error)]
    assert len(texts) == 2 and all("best linear readout" in x and "ridge pixels" in x for x in texts)
    ridge = results["baselines"]["ridge"]["image_to_neural"]["top1"]
    i2n = next(x for x in texts if x.startswith("image → neural"))
    assert ("does not beat" not in i2n) == (top1 > ridge)
    assert any("Only 6 test images" in w.value for w in at.warning)  # fewer than 100


def test_every_baseline_is_a_column_and_the_best_linear_one_is_named(app_populated):
    """Issue 10 baselines: ridge_random / ridge_backbone / repeat / oracle columns with help, recorded
    top1_ci used as is, and the verdict against the best of the ridge baselines per direction."""
    run = app_populated["run"]
    test = s.load_json(run / "results.json")["test"]
    test["image_to_neural"]["top1"], test["neural_to_image"]["top1"] = 0.5, 0.5
    test["image_to_neural"]["top1_ci"], test["neural_to_image"]["top1_ci"] = [0.2, 0.8], [0.21, 0.79]
    _add_results(run, test=test, baselines={
        "ridge": _block(0.1, 0.1),
        "ridge_random": _block(0.3, 0.7, ci=([0.1, 0.6], [0.4, 0.9]), rows="ridge prediction from random features"),
        "ridge_backbone": _block(0.4, 0.2),
        "repeat": _block(0.6, 0.6), "oracle": _block(0.9, 0.95)})
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    table = at.dataframe[0].value.set_index("metric")
    assert list(table.columns) == ["model", "chance", "ridge pixels", "ridge random", "ridge backbone",
                                   "repeat", "oracle"]
    assert table.loc["top1 95% lo", "model"] == 0.2  # recorded interval, not recomputed
    at.radio(key="retrieval.table_direction").set_value("neural_to_image").run()
    assert at.dataframe[0].value.set_index("metric").loc["top1 95% hi", "ridge random"] == 0.9
    config = at.dataframe[0].proto.columns
    assert "random rectified" in config and "rows: ridge prediction from random features" in config
    beats = {b.value.split(":")[0]: b.value for b in at.success}
    loses = {b.value.split(":")[0]: b.value for b in at.error}
    assert "ridge backbone" in beats["image → neural"]  # 0.5 > best linear 0.4 (backbone)
    assert "does not beat" in loses["neural → image"] and "ridge random" in loses["neural → image"]
    bars = next(sp for sp in s.chart_specs(at) if "95 %" in sp["layout"]["title"]["text"])
    assert list(bars["data"][0]["y"]) == ["model", "ridge pixels", "ridge random", "ridge backbone",
                                          "repeat", "oracle"]
    assert s.arr(bars["data"][0]["error_x"]["array"])[0] == pytest.approx(0.3)  # 0.8 - 0.5


def test_similarity_ticks_diagonal_and_chance_line(app_populated):
    """Issue 12 item 5: similarity matrix with image-id ticks and the true pairs marked; rank histogram
    with the uniform-rank chance level."""
    outputs = np.load(app_populated["run"] / "test_outputs.npz")
    ids = [str(i) for i in outputs["test_indices"]]
    at = s.app_at(PAGE)
    specs = s.chart_specs(at)
    heat = next(sp for sp in specs if sp["layout"]["title"]["text"].startswith("Test similarity"))
    assert heat["layout"]["xaxis"]["tickvals"] == ids and heat["layout"]["yaxis"]["ticktext"] == ids
    diag = next(tr for tr in heat["data"] if tr.get("name") == "true pairs")
    assert list(diag["x"]) == ids and list(diag["y"]) == ids
    ranks = next(sp for sp in specs if sp["layout"]["title"]["text"].startswith("Rank of the true match"))
    chance = next(tr for tr in ranks["data"] if tr.get("name", "").startswith("chance"))
    assert np.allclose(s.arr(chance["y"]), 1.0)  # 6 queries, 6 ranks, bins of 1: one query per bin
    assert any("diagonal" in c.value for c in at.caption)
    assert any(link.proto.page in ("neurons", "pages/neurons.py") for link in at.get("page_link"))
    import json

    headers = json.loads(at.dataframe[0].proto.columns)  # short headers, the full name in the help
    assert headers["ridge pixels"]["label"] == "pixels" and "ridge regression from the pixels" in \
        headers["ridge pixels"]["help"]


def test_query_browser_both_directions(app_populated):
    outputs = np.load(app_populated["run"] / "test_outputs.npz")
    sim, test_idx = outputs["similarity"], outputs["test_indices"]
    at = s.app_at(PAGE)
    at.number_input(key=keys.RETRIEVAL_K).set_value(3).run()
    images = at.get("image")
    assert len(images) == 1 + 3  # the query and its top 3
    order, _ = plots.top_k(sim, 0, 3, "image_to_neural")
    captions = [c for c in (el.proto.imgs[0].caption for el in images[1:])]
    assert [int(c.split("image ")[1].split(" ")[0]) for c in captions] == test_idx[order].tolist()
    assert sum("CORRECT" in c for c in captions) == int(0 in order)
    at.radio(key=keys.RETRIEVAL_DIRECTION).set_value("neural_to_image")
    at.selectbox(key=keys.RETRIEVAL_QUERY).set_value(2).run()
    s.no_exceptions(at)
    order, _ = plots.top_k(sim, 2, 3, "neural_to_image")
    captions = [el.proto.imgs[0].caption for el in at.get("image")[1:]]
    assert [int(c.split("image ")[1].split(" ")[0]) for c in captions] == test_idx[order].tolist()
    rank = plots.true_match_ranks(sim)["neural_to_image"][2]
    assert any(m.value == f"**Match rank:** {rank:g} of {len(test_idx)}" for m in at.markdown)


def test_orphaned_and_damaged_runs_stay_up(app_populated):
    import shutil

    shutil.rmtree(app_populated["subject_dir"])  # subject deleted after training
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert any("not available" in w.value for w in at.warning)
    assert at.dataframe[0].value.shape[0] == 8  # 6 metrics + the two top-1 interval bounds, one direction
    (app_populated["run"] / "test_outputs.npz").write_bytes(b"garbage")
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert at.error and at.error[0].value.startswith("Cannot read run")


def test_selecting_a_run_switches_everything_and_is_shared(app_populated):
    other = s.write_finished_run(app_populated["runs"], "m1", app_populated["subject_dir"], n_test=8, seed=5)
    at = s.app_at(PAGE)
    at.selectbox(key=keys.RETRIEVAL_RUN).set_value(str(other)).run()
    s.no_exceptions(at)
    assert at.subheader[0].value == "Test identification among 8 held-out images"
    at.selectbox(key=keys.RETRIEVAL_RUN).set_value(str(app_populated["run"])).run()
    assert at.subheader[0].value == "Test identification among 6 held-out images"
    at.switch_page("pages/feature_maps.py").run()  # the choice follows to Feature maps
    assert at.selectbox(key=keys.MAPS_RUN).value == str(app_populated["run"])


def test_verdict_names_the_paired_comparison_when_results_have_it():
    """A run whose results.json carries the paired comparison says, per direction, the difference on the
    same test images, its interval and p, and whether it is within noise; without it, the old wording."""
    from neuroalign.ui.results_view import linear_verdicts

    def m(a, b):
        return {"image_to_neural": {"top1": a}, "neural_to_image": {"top1": b}}

    results = {"test": {**m(0.60, 0.66), "n": 100}, "baselines": {"ridge_random": m(0.55, 0.72)},
               "comparison": {"image_to_neural": {"best_name": "ridge_random", "difference": 0.05,
                                                  "difference_ci": [-0.01, 0.11], "p_value": 0.12},
                              "neural_to_image": {"best_name": "ridge_random", "difference": -0.06,
                                                  "difference_ci": [-0.11, -0.01], "p_value": 0.03}}}
    i2n, n2i = linear_verdicts(results)
    assert i2n.beats and "paired on the same test images: difference +0.050" in i2n.text and "within noise" in i2n.text
    assert not n2i.beats and "does not beat" in n2i.text and "p = 0.03: significant" in n2i.text
    del results["comparison"]
    assert "paired" not in linear_verdicts(results)[1].text
