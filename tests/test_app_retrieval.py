"""Retrieval page through AppTest: prerequisites, metrics table, query browser both directions,
heatmap and rank histogram, damaged or orphaned runs."""

import numpy as np

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
    assert table.loc["top1 · img→neu", "model"] == results["test"]["image_to_neural"]["top1"]
    assert table.loc["top1 · img→neu", "chance"] == results["test"]["chance_top1"]
    ridge = results["baselines"]["ridge"]["neural_to_image"]["mean_rank"]
    assert table.loc["mean_rank · neu→img", "ridge"] == ridge
    titles = [sp["layout"]["title"]["text"] for sp in s.chart_specs(at)]
    assert any("similarity" in t.lower() for t in titles) and any("Rank of the true match" in t for t in titles)


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
    assert any(m.value == f"{rank:g} / {len(test_idx)}" for m in at.metric)


def test_orphaned_and_damaged_runs_stay_up(app_populated):
    import shutil

    shutil.rmtree(app_populated["subject_dir"])  # subject deleted after training
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert any("not available" in w.value for w in at.warning)
    assert at.dataframe[0].value.shape[0] == 10
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
