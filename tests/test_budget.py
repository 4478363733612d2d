"""--max-seconds is the wall clock of the whole job: preparation, the image-model choice, training and
evaluation (issue 23 item 2)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy.io import savemat

from neuroalign.cli import main

BUDGET = 60.0
# README ("Time budget"): a job ends within its budget plus what cannot be interrupted -- one image
# model's features or one closed-form fit in progress when the time is up, and the evaluation's
# misestimate, and the evaluation itself when it alone takes most of the budget; README states 90 s
# over a 60 s budget on two cores for a demo-sized subject (measured 67-121 s on two-core CI runs;
# before the budget bounded the job, a 90 s budget took over 9 minutes).
SLACK = 90.0


@pytest.fixture
def demo_sized_root(tmp_path, make_tiny_arrays):
    """A subject of the demo subjects' size (1,400 images of 68x270, 450 neurons, two repeats)."""
    a = make_tiny_arrays(n_images=1400, n_neurons=450, seed=3)
    folder = tmp_path / "data" / "big" / "Data"
    folder.mkdir(parents=True)
    savemat(folder / "images.mat", {"images": a["images"]})
    savemat(folder / "responses.mat", {"responses": a["responses"], "responses_repeats": a["repeats"]})
    return tmp_path / "data"


def test_a_budgeted_job_ends_within_its_budget(demo_sized_root, tmp_path, capsys):
    t0 = time.monotonic()
    code = main(["train", "--subjects", "big", "--data-dir", str(demo_sized_root), "--runs-dir", str(tmp_path / "runs"),
                 "--cache-dir", str(tmp_path / "cache"), "--max-seconds", str(BUDGET), "--device", "cpu"])
    wall = time.monotonic() - t0
    assert code == 0
    err = capsys.readouterr().err
    assert wall <= BUDGET + SLACK, (wall, err)
    # every phase was said while it happened, with the seconds since the start
    assert "choosing the image model" in err and "evaluating on the test split" in err
    run = next((tmp_path / "runs").iterdir())
    record = json.loads((run / "config.json").read_text())
    choice = record["image_choice"]
    tried = [c for c in choice["candidates"] if "val_mrr" in c]
    assert tried and record["config"]["image"]["backbone"] == choice["backbone"]
    # candidates not started by half the budget are listed as skipped, not silently dropped
    # + the best two read side by side (scored, or listed as skipped) once two were scored
    from neuroalign.training.image_choice import AUTO_CANDIDATES

    assert len(choice["candidates"]) in (len(AUTO_CANDIDATES), len(AUTO_CANDIDATES) + 1)
    results = json.loads((run / "results.json").read_text())
    assert results["training"]["stop_reason"] in ("time_budget", "early_stopping", "completed")
    assert "baselines" in results and "encoding" in results


def test_the_loop_stops_at_the_training_deadline(sim_root, tmp_path):
    from neuroalign.config import preset
    from neuroalign.data import load_subject
    from neuroalign.training.trainer import Trainer

    cfg = preset("recommended").replace(epochs=50, device="cpu", batch_size=32, early_stopping_patience=None,
                                        **{"image.backbone": "random_rectified", "image.block": 1, "image.transform": "none"})
    trainer = Trainer(cfg, load_subject(sim_root / "sim-M1"))
    deadline = time.monotonic() + 3.0
    t0 = time.monotonic()
    fit = trainer.fit(train_deadline=deadline)
    assert fit.stop_reason == "time_budget" and fit.epochs_run < 50
    assert time.monotonic() - t0 < 3.0 + 10.0


def test_evaluation_estimate_is_measured_and_finite(sim_root):
    from neuroalign.config import preset
    from neuroalign.data import load_subject
    from neuroalign.evaluation.evaluate import estimate_evaluation_seconds
    from neuroalign.training.run_eval import evaluate_trainer
    from neuroalign.training.trainer import Trainer

    cfg = preset("recommended").replace(epochs=1, device="cpu", **{"image.backbone": "random_rectified", "image.block": 1,
                                                                   "image.transform": "none"})
    trainer = Trainer(cfg, load_subject(sim_root / "sim-M1")).prepare()
    estimate = estimate_evaluation_seconds(trainer)
    assert np.isfinite(estimate) and estimate > 0
    t0 = time.monotonic()
    evaluate_trainer(trainer)
    actual = time.monotonic() - t0
    assert actual <= estimate * 3 + 5, (actual, estimate)
