"""FEVE beside retrieval: the Retrieval page shows the model's median FEVE (quartiles, neurons included)
next to the ridge on the run's features when results.json has `encoding`, nothing when it has none;
the Neurons page adds the per-neuron FEVE histogram and a FEVE column."""

import numpy as np
import pytest

import app_support as s
import neurons_support as ns
from app_support import app_env, app_populated  # noqa: F401 (fixtures)

from neuroalign.io_utils import atomic_write_json
from neuroalign.ui import results_view

ENCODING = {"metric": "FEVE",
            "model": {"median": 0.4321, "q25": 0.25, "q75": 0.61, "n_included": 20, "n_neurons": 24, "min_fev": 0.15,
                      "median_fev": 0.5, "per_neuron": [0.1 * (i % 8) for i in range(24)]},
            "ridge_backbone": {"median": 0.3876, "q25": 0.2, "q75": 0.5, "n_included": 20, "n_neurons": 24,
                               "min_fev": 0.15, "median_fev": 0.5}}


def _metrics(at):
    return {m.label: m for m in at.metric}


def test_retrieval_shows_feve_of_model_and_ridge(app_populated):
    path = app_populated["run"] / "results.json"
    results = s.load_json(path)
    atomic_write_json(path, {**results, "encoding": ENCODING})
    at = s.app_at("pages/retrieval.py")
    s.no_exceptions(at)
    metrics = _metrics(at)
    assert metrics["FEVE, model"].value == "0.43"
    assert metrics["FEVE, ridge"].value == "0.39"
    assert "explainable variance" in metrics["FEVE, model"].help
    assert any(c.value == "q25–q75 0.25–0.61 · 20 of 24 neurons (FEV ≥ 0.15)" for c in at.caption)
    assert at.dataframe[0].value.set_index("metric").loc["top1", "model"] == results["test"]["image_to_neural"]["top1"]


@pytest.mark.parametrize("encoding", [None, {"metric": "FEVE"}, {"model": "damaged"}])
def test_retrieval_without_encoding_shows_no_feve(app_populated, encoding):
    if encoding is not None:
        path = app_populated["run"] / "results.json"
        atomic_write_json(path, {**s.load_json(path), "encoding": encoding})
    at = s.app_at("pages/retrieval.py")
    s.no_exceptions(at)
    assert not [m for m in at.metric if "FEVE" in m.label] and not at.error


def test_encoding_summary_copes_with_missing_numbers():
    enc = results_view.encoding_summary({"encoding": {"model": {"median": None, "n_included": 0, "n_neurons": 5}}})
    assert enc["model"].median is None and enc["model"].detail() == "0 of 5 neurons (FEV ≥ 0.15)"
    assert results_view.encoding_summary({}) is None and results_view.feve_per_neuron({}) is None
    assert results_view.feve_per_neuron({"encoding": ENCODING})[3] == pytest.approx(0.3)


@pytest.mark.usefixtures("one_torch_thread")
def test_neurons_page_feve_histogram_and_column(app_env, tmp_path_factory):
    run = ns.copy_into(app_env["data"], app_env["runs"], tmp_path_factory.mktemp("importance-feve"))
    results = s.load_json(run / "results.json")
    per_neuron = results["encoding"]["model"]["per_neuron"]  # the trained run has repeats: FEVE per neuron
    assert len(per_neuron) == ns.N_NEURONS
    at = s.app_at("pages/neurons.py", timeout=120)
    s.no_exceptions(at)
    spec = [sp for sp in s.chart_specs(at) if sp["layout"]["title"]["text"] == "FEVE per neuron (test repeats)"]
    assert len(spec) == 1
    shown = s.arr(spec[0]["data"][0]["x"])
    assert len(shown) == results["encoding"]["model"]["n_included"]  # the neurons with FEV >= 0.15
    assert np.median(shown) == pytest.approx(results["encoding"]["model"]["median"], abs=1e-4)
    table = at.dataframe[0].value
    assert "FEVE" in table.columns
    for neuron, value in zip(table["neuron"], table["FEVE"]):
        expected = per_neuron[int(neuron)]
        assert (np.isnan(value) and expected is None) or value == pytest.approx(expected)
    assert table["FEVE"].head(10).mean() > 0.3  # the most important neurons are the signal half, well predicted


def test_neurons_page_without_encoding_has_no_feve(app_env, tmp_path_factory):
    run = ns.copy_into(app_env["data"], app_env["runs"], tmp_path_factory.mktemp("importance-feve"))
    results = s.load_json(run / "results.json")
    results.pop("encoding", None)
    atomic_write_json(run / "results.json", results)
    at = s.app_at("pages/neurons.py", timeout=120)
    s.no_exceptions(at)
    assert "FEVE per neuron (test repeats)" not in [sp["layout"]["title"]["text"] for sp in s.chart_specs(at)]
    assert "FEVE" not in at.dataframe[0].value.columns
