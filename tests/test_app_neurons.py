"""Neurons page through AppTest: importance of a trained run, ranked and against reliability; the
page in the navigation; runs it cannot use explained, never a traceback."""

import numpy as np
import pytest

import app_support as s
import neurons_support as ns
from app_support import app_env, app_populated  # noqa: F401 (fixtures)

from neuroalign.ui import neurons_view

PAGE = "pages/neurons.py"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def trained_app(app_env, tmp_path_factory):
    app_env["run"] = ns.copy_into(app_env["data"], app_env["runs"], tmp_path_factory.mktemp("importance-app"))
    return app_env


def test_empty_root_points_to_train(app_env):
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert any("No finished run yet" in i.value for i in at.info)


def test_importance_ranked_and_against_reliability(trained_app):
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert at.title[0].value == "Neurons"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Neural tower"] == "linear" and metrics["Neurons"] == "40" and metrics["Test images"] == "30"
    assert any("only 30 test images" in w.value for w in at.warning)  # fewer than 100: said so
    verdicts = [b.value for b in at.success]
    assert any(v.startswith("The model relies mostly on the neurons with high repeat reliability") for v in verdicts)
    table = at.dataframe[0].value
    assert len(table) == neurons_view.TOP_ROWS and list(table["rank"]) == list(range(1, 21))
    assert np.all(np.diff(table["share"]) <= 0)  # most important first
    assert np.isin(table["neuron"].head(10), ns.SIGNAL).mean() >= 0.8  # the signal half leads
    titles = [sp["layout"]["title"]["text"] for sp in s.chart_specs(at)]
    assert "Neurons ranked by importance" in titles and "Importance vs reliability" in titles
    assert s.theme_placeholders(at) == []
    at.radio(key=neurons_view.MEASURE_KEY).set_value("net").run()  # the signed measure: same story
    s.no_exceptions(at)
    titles = [sp["layout"]["title"]["text"] for sp in s.chart_specs(at)]
    assert "Neurons ranked by net contribution" in titles
    assert any(b.value.startswith("The model relies mostly on") and "between net contribution and" in b.value
               for b in at.success)
    net_table = at.dataframe[0].value
    assert np.all(np.diff(net_table["net"]) <= 0) and np.isin(net_table["neuron"].head(10), ns.SIGNAL).all()


def test_neurons_page_is_in_the_navigation(trained_app):
    from neuroalign.ui import nav

    paths = [p.path for p in nav.PAGES]
    assert paths.count(PAGE) == 1 and paths.index(PAGE) == paths.index(nav.FEATURE_MAPS.path) + 1


def _responses_mat(subject_dir):
    from scipy.io import loadmat

    return loadmat(subject_dir / "Data" / "responses.mat")


def test_subject_without_repeats_is_ranked_only_with_a_note(trained_app):
    from scipy.io import savemat

    subject_dir = trained_app["data"] / "half"
    savemat(subject_dir / "Data" / "responses.mat", {"responses": _responses_mat(subject_dir)["responses"]})
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert any("has no repeats" in i.value for i in at.info) and not at.success
    assert "reliability" not in at.dataframe[0].value.columns
    titles = [sp["layout"]["title"]["text"] for sp in s.chart_specs(at)]
    assert "Neurons ranked by importance" in titles and "Importance vs reliability" not in titles


def test_simulated_ground_truth_is_compared(trained_app):
    """With the simulator's noiseless rates (here: the signal neurons' mean responses, noise neurons
    constant), importance is also set against the true SNR."""
    from neuroalign.io_utils import atomic_savez

    subject_dir = trained_app["data"] / "half"
    mat = _responses_mat(subject_dir)
    rates = mat["responses"].astype(np.float32).copy()
    noise = np.setdiff1d(np.arange(ns.N_NEURONS), ns.SIGNAL)
    rates[:, noise] = 0.0
    atomic_savez(subject_dir / "ground_truth.npz", rates=rates, repeats=mat["responses_repeats"].astype(np.float32))
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert any("neurons with high true SNR" in b.value for b in at.success)
    assert "true SNR" in at.dataframe[0].value.columns
    assert any(sp["layout"]["title"]["text"].startswith("Importance vs true SNR") for sp in s.chart_specs(at))


def test_run_without_checkpoint_is_explained(app_populated):
    """The populated app's made-up run has no best.pt: the page says so instead of failing."""
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert any("Cannot compute neuron importance" in e.value and "best checkpoint" in e.value for e in at.error)
