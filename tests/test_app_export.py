"""Runs page: Export (issue 19 item 4) -- a trained run's file prepared on a click (the library's bytes),
offered for download; a run without a model has the button disabled with the reason; a run whose
subject changed is one error line, the page stays up."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from scipy.io import loadmat

import app_support as s
from app_support import app_env  # noqa: F401 (fixture)

from neuroalign.export import export_run
from neuroalign.ui import keys

PAGE = "pages/runs.py"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def trained_env(app_env):
    from neuroalign.config import preset
    from neuroalign.training.pipeline import run_training

    s.write_subject(app_env["data"], "m1", n_images=60)
    cfg = preset("recommended").replace(epochs=1, device="cpu", batch_size=32, **{
        "image.backbone": "random_rectified", "image.block": 1, "image.transform": "none"})
    app_env["run"] = run_training("m1", cfg, app_env["data"], app_env["runs"], cache_dir=app_env["cache"])
    app_env["bare"] = s.write_finished_run(app_env["runs"], "m1", app_env["data"] / "m1", seed=3)  # no best.pt
    return app_env


def test_prepare_and_download_the_export(trained_env):
    run = trained_env["run"]
    at = s.app_at(PAGE, timeout=120)
    at.selectbox(key=keys.RUNS_ONE).set_value(str(trained_env["bare"])).run()
    s.no_exceptions(at)
    assert at.button(key=keys.RUNS_EXPORT_PREPARE).disabled
    assert "no best.pt yet" in " ".join(c.value for c in at.caption)

    at.selectbox(key=keys.RUNS_ONE).set_value(str(run)).run()
    assert not at.button(key=keys.RUNS_EXPORT_PREPARE).disabled
    assert keys.RUNS_EXPORT_DOWNLOAD not in {b.key for b in at.get("download_button")}
    at.button(key=keys.RUNS_EXPORT_PREPARE).click().run()
    s.no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    button = next(b for b in at.get("download_button") if b.key == keys.RUNS_EXPORT_DOWNLOAD)
    assert button.proto.label.startswith(f"Download {run.name}_m1.mat (") and button.proto.label.endswith(" kB)")
    _, data, name = at.session_state[keys.RUNS_EXPORT_READY]
    assert name == f"{run.name}_m1.mat"
    mat = loadmat(io.BytesIO(data))
    want = export_run(run, data_dir=trained_env["data"], cache_dir=trained_env["cache"], device="cpu")
    np.testing.assert_allclose(mat["image_embedding"], want["image_embedding"], atol=1e-6)
    np.testing.assert_allclose(mat["feve"][:, 0], want["feve"])
    assert json.loads(str(mat["config_json"][0]))["run_id"] == run.name

    # another format: the prepared file no longer matches, Prepare again gives an .npz
    at.segmented_control(key=keys.RUNS_EXPORT_FORMAT).set_value("npz").run()
    assert keys.RUNS_EXPORT_DOWNLOAD not in {b.key for b in at.get("download_button")}
    at.button(key=keys.RUNS_EXPORT_PREPARE).click().run()
    _, data, name = at.session_state[keys.RUNS_EXPORT_READY]
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        np.testing.assert_allclose(z["response_embedding"], want["response_embedding"], atol=1e-6)
    assert name.endswith("_m1.npz")

    # the per-neuron table as CSV: the neuron_table of the library, byte for byte
    from neuroalign.export_nwb import neuron_table, table_bytes

    at.segmented_control(key=keys.RUNS_EXPORT_FORMAT).set_value("csv").run()
    at.button(key=keys.RUNS_EXPORT_PREPARE).click().run()
    s.no_exceptions(at)
    _, data, name = at.session_state[keys.RUNS_EXPORT_READY]
    assert name == f"{run.name}_m1_neurons.csv"
    assert data == table_bytes(neuron_table(run, data_dir=trained_env["data"]))
    assert data.decode().splitlines()[0].startswith("neuron,") and "feve" in data.decode().splitlines()[0]


def test_export_of_a_run_whose_subject_changed_is_one_line(trained_env):
    run = trained_env["run"]
    record = json.loads((run / "config.json").read_text())
    record["subject"]["data_hash"] = "f" * 64
    (run / "config.json").write_text(json.dumps(record))
    at = s.app_at(PAGE, timeout=120)
    at.selectbox(key=keys.RUNS_ONE).set_value(str(run)).run()
    at.button(key=keys.RUNS_EXPORT_PREPARE).click().run()
    s.no_exceptions(at)
    (error,) = [e.value for e in at.error if "Cannot export" in e.value]
    assert "changed since run" in error and "\n" not in error
    assert keys.RUNS_EXPORT_DOWNLOAD not in {b.key for b in at.get("download_button")}
