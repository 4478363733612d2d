"""neuroalign.Aligner: fit / score / encode / save / load, parameters (sklearn clone), error messages,
and the run folder it writes as the dashboard reads it (training.runs.list_runs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neuroalign import Aligner
from neuroalign.config import TrainConfig, preset
from neuroalign.data import Subject
from neuroalign.training import runs as runs_io

TINY = {"epochs": 3, "batch_size": 16, "device": "cpu", "image__backbone": "ds_net_tiny", "image__stage": 1,
        "image__block": 1}


def _arrays(n: int = 80, k: int = 24, hw=(34, 136), seed: int = 0):
    """uint8 images and responses that are a noisy linear read-out of them (learnable)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *hw), dtype=np.uint8)
    w = rng.standard_normal((hw[0] * hw[1], k)).astype(np.float32) / 50
    rates = (images.reshape(n, -1).astype(np.float32) / 255 - 0.5) @ w
    repeats = (rates[None] + 0.3 * rng.standard_normal((2, n, k))).astype(np.float32)
    return images, repeats.mean(axis=0), repeats


@pytest.fixture(scope="module")
def data():
    return _arrays()


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    images, responses, repeats = data
    events = []
    aligner = Aligner("recommended", verbose=False, cache_dir=tmp_path_factory.mktemp("cache"), **TINY)
    aligner.fit(images, responses, repeats=repeats, name="toy", callback=lambda e, v: events.append(e))
    yield aligner, events
    torch.set_num_threads(before)


def test_fit_scores_the_test_split_and_encodes_new_data(fitted, data):
    aligner, events = fitted
    images, responses, _ = data
    assert "epoch" in events and aligner.training_["epochs_run"] >= 1
    assert aligner.config_.image.backbone == "ds_net_tiny" and aligner.config_.epochs == 3
    assert aligner.config_.preset == "custom"  # another image model than the preset's
    test = aligner.split_["test"]
    assert len(test) == 8 and not set(test) & set(aligner.split_["train"])
    score = aligner.score()
    assert score["n"] == 8 and score == aligner.results_["test"] and "baselines" not in aligner.results_
    assert 0.0 <= score["image_to_neural"]["top1"] <= 1.0

    emb, maps = aligner.encode_images(images[:5])
    assert emb.shape == (5, aligner.config_.n_components) == (5, aligner.embedding_dim_) and maps.shape == (5, 16, 64)
    emb4, _ = aligner.encode_images(images[:5, None].astype(np.float32) / 255)  # (N, 1, H, W) floats: the same
    np.testing.assert_allclose(emb4, emb, atol=1e-5)
    nemb, nmaps = aligner.encode_responses(responses[:5])
    assert nemb.shape == emb.shape and nmaps.shape == (5, 16, 64)
    # the embeddings are the shared space: their cosine is the cosine of the maps the model is scored with
    cos = lambda a, b: (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T  # noqa: E731
    np.testing.assert_allclose(cos(emb, nemb), cos(maps.reshape(5, -1), nmaps.reshape(5, -1)), atol=1e-4)

    # scoring the test images as new pairs gives the fitted test numbers
    again = aligner.score(images[test], responses[test])
    assert again["image_to_neural"] == score["image_to_neural"] and again["neural_to_image"] == score["neural_to_image"]


def test_save_load_round_trip_and_the_runs_page_lists_it(fitted, data, tmp_path):
    aligner, _ = fitted
    images, responses, _ = data
    run_dir = aligner.save(tmp_path / "runs" / "notebook-run")
    assert aligner.run_dir_ == run_dir
    for name in ("config.json", "split.json", "normaliser.json", "best.pt", "results.json", "status.json",
                 "metrics.jsonl", "test_outputs.npz"):
        assert (run_dir / name).is_file(), name
    runs = runs_io.list_runs(tmp_path / "runs")
    assert [(r.run_id, r.subject, r.state) for r in runs] == [("notebook-run", "toy", "finished")]
    assert runs[0].metrics["test_top1_image_to_neural"] == aligner.results_["test"]["image_to_neural"]["top1"]
    record = runs_io.load_run(run_dir)
    assert record.train_config() == aligner.config_ and record.test_outputs()["image_maps"].shape == (8, 16, 64)

    loaded = Aligner.load(run_dir, verbose=False)
    assert loaded.trainer_ is None and loaded.n_neurons_ == 24 and loaded.image_shape_ == (34, 136)
    assert loaded.get_params() == dict(aligner.get_params(), cache_dir=None)
    np.testing.assert_allclose(loaded.encode_images(images[:6]).embeddings, aligner.encode_images(images[:6]).embeddings,
                               atol=1e-5)
    np.testing.assert_allclose(loaded.encode_responses(responses[:6]).maps, aligner.encode_responses(responses[:6]).maps,
                               atol=1e-5)
    assert loaded.score() == aligner.score()
    np.testing.assert_array_equal(loaded.split_["test"], aligner.split_["test"])
    with pytest.raises(ValueError, match="given as arrays and is not stored"):
        loaded.score(baselines=True)  # the arrays were never written anywhere
    copy = loaded.save(tmp_path / "runs" / "notebook-run-2")  # a loaded run is copied
    assert json.loads((copy / "results.json").read_text()) == record.results
    assert [r.state for r in runs_io.list_runs(tmp_path / "runs")] == ["finished", "finished"]
    with pytest.raises(FileExistsError, match="not an empty folder"):
        aligner.save(copy)


def test_a_run_without_estimator_record_loads_with_the_same_config(fitted, tmp_path):
    aligner, _ = fitted
    run_dir = aligner.save(tmp_path / "run")
    record = json.loads((run_dir / "config.json").read_text())
    del record["estimator"]  # as the CLI and the dashboard write it
    (run_dir / "config.json").write_text(json.dumps(record))
    loaded = Aligner.load(run_dir, verbose=False)
    assert loaded.make_config().to_dict() == aligner.config_.to_dict()
    assert loaded.get_params()["image__backbone"] == "ds_net_tiny"


def test_fit_into_runs_dir_is_a_live_run_folder_and_split_is_honoured(data, tmp_path, one_torch_thread):
    images, responses, _ = data
    n = len(images)
    split = {"train": np.arange(0, 60), "val": np.arange(60, 70), "test": np.arange(70, n)}
    aligner = Aligner(verbose=False, runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache",
                      **dict(TINY, epochs=1)).fit(images, responses, split=split)
    np.testing.assert_array_equal(aligner.split_["test"], np.arange(70, n))
    assert aligner.results_["test"]["n"] == 10
    [info] = runs_io.list_runs(tmp_path / "runs")
    assert info.path == aligner.run_dir_ and info.state == "finished" and info.subject == "arrays"
    assert (aligner.run_dir_ / "last.pt").is_file() and runs_io.read_metrics(aligner.run_dir_)
    assert aligner.save() == aligner.run_dir_  # already written there


def test_run_training_and_aligner_fit_are_one_engine(tiny_subject_root, tmp_path, one_torch_thread):
    """run_training (the CLI's and the dashboard worker's path) and Aligner.fit on the same subject and
    settings train the same weights and score the same test numbers (one engine: train_subject)."""
    from neuroalign.data import load_subject
    from neuroalign.training.pipeline import run_training

    aligner = Aligner(verbose=False, runs_dir=tmp_path / "lib", cache_dir=tmp_path / "cache", **TINY)
    run = runs_io.load_run(run_training("tiny", aligner.make_config(), tiny_subject_root, tmp_path / "cli",
                                        cache_dir=tmp_path / "cache"))
    aligner.fit(load_subject(tiny_subject_root / "tiny"))
    lib = runs_io.load_run(aligner.run_dir_)
    for key in ("test", "val", "encoding"):
        assert run.results[key] == aligner.results_[key] == lib.results[key], key
    assert run.results["training"]["best_epoch"] == aligner.training_["best_epoch"]
    epochs = [[m["train_loss"] for m in r.metrics() if m.get("event") == "epoch"] for r in (run, lib)]
    assert epochs[0] == epochs[1] and len(epochs[0]) == TINY["epochs"]
    weights = [runs_io.load_checkpoint(r.path / runs_io.BEST_CKPT)["model"] for r in (run, lib)]
    for part, state in weights[0].items():
        for name, value in state.items():
            assert torch.equal(value, weights[1][part][name]), (part, name)
    assert run.config["config"] == lib.config["config"] and lib.config["estimator"]["preset"] == "recommended"
    assert "baselines" in run.results and "baselines" not in lib.results  # the library's default: on request
    assert (run.path / "importance.npz").is_file() == (lib.path / "importance.npz").is_file()


def test_baselines_on_request(fitted):
    aligner, _ = fitted
    score = aligner.score(baselines=True)
    assert {"ridge", "ridge_random", "repeat"} <= set(score["baselines"]) and "baselines" in aligner.results_
    assert aligner.score()["n"] == score["n"]


def test_params_round_trip_with_sklearn_clone():
    from sklearn.base import clone

    est = Aligner("attention", epochs=7, image__backbone="v1_gabor", loss__temperature=0.1, verbose=False)
    params = est.get_params()
    assert params == {"preset": "attention", "runs_dir": None, "cache_dir": None, "verbose": False, "epochs": 7,
                      "image__backbone": "v1_gabor", "loss__temperature": 0.1}
    twin = clone(est)
    assert twin is not est and twin.get_params() == params and not hasattr(twin, "config_")
    twin.set_params(epochs=9, neural__dropout=0.2, preset="recommended")
    assert twin.get_params()["epochs"] == 9 and twin.get_params()["preset"] == "recommended" and est.get_params()["epochs"] == 7
    cfg = twin.make_config()
    assert cfg.epochs == 9 and cfg.neural.dropout == 0.2 and cfg.image.backbone == "v1_gabor"
    assert repr(Aligner(epochs=3)) == "Aligner('recommended', epochs=3)"


def test_config_rules_match_the_cli():
    plain = Aligner().make_config()
    assert plain == preset("recommended")
    other = Aligner(neural__kind="transformer", neural__d_model=32).make_config()
    assert other.init == "random" and other.preset == "custom"  # no closed-form start for that tower
    assert Aligner(neural__block="transformer", neural__d_model=32).make_config() == other  # the old name
    with pytest.raises(ValueError, match="both 'neural.kind'"):
        Aligner(neural__kind="latent", neural__block="linear").make_config()
    assert Aligner(epochs=5, max_seconds=60).make_config().preset == "recommended"  # run control keeps the label
    gabor = Aligner(image__backbone="v1_gabor").make_config().image  # the CLI's --image-model rule
    assert (gabor.stage, gabor.block, gabor.transform) == (1, 1, "none")
    given = Aligner(image__backbone="efficientnet_lite0", image__stage=3, image__transform="square").make_config().image
    assert (given.stage, given.block, given.transform) == (3, 2, "square")


@pytest.mark.parametrize("kwargs, message", [
    ({"epoch": 3}, "unknown Aligner setting 'epoch'; did you mean epochs"),
    ({"image.backbone": "v1_gabor"}, "write section fields as image__backbone"),
    ({"image__colour": 1}, "unknown Aligner setting 'image__colour'"),
])
def test_unknown_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Aligner(**kwargs)
    with pytest.raises(ValueError, match=message):
        Aligner().set_params(**kwargs)


def test_bad_values_fail_at_fit_with_the_config_message(data):
    images, responses, _ = data
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        Aligner(epochs=0, verbose=False).fit(images, responses)
    with pytest.raises(ValueError, match="preset must be one of"):
        Aligner("fast", verbose=False).fit(images, responses)


def test_wrong_shapes_and_unfitted_use_are_one_line_errors(fitted, data):
    aligner, _ = fitted
    images, responses, _ = data
    fresh = Aligner(verbose=False)
    cases = [
        (lambda: fresh.fit(images[:, None, None], responses), r"images: got shape \(80, 1, 1, 34, 136\); expected \(N, H, W\) or \(N, 1, H, W\)"),
        (lambda: fresh.fit(images, responses[:50]), r"responses: got shape \(50, 24\); expected \(80, K\)"),
        (lambda: fresh.fit(images, responses[:, :, None]), r"responses: got shape \(80, 24, 1\); expected \(N, K\)"),
        (lambda: fresh.fit(images, responses, repeats=np.zeros((2, 80, 5))), r"repeats: got shape \(2, 80, 5\); expected \(R, 80, 24\)"),
        (lambda: fresh.fit(images.astype(complex), responses), "expected real numbers"),
        (lambda: fresh.fit(images, np.full_like(responses, np.nan)), "NaN or infinite"),
        (lambda: fresh.fit(images), "responses missing"),
        (lambda: fresh.encode_images(images), "not fitted yet"),
        (lambda: fresh.encode_responses(responses), "not fitted yet"),
        (lambda: fresh.score(), "not fitted yet"),
        (lambda: fresh.save(), "not fitted yet"),
        (lambda: aligner.encode_responses(responses[:, :20]), r"got shape \(80, 20\); expected \(n, 24\), the 24 neurons"),
        (lambda: aligner.encode_images(images[:, :20]), r"got shape \(80, 20, 136\); expected \(n, 34, 136\)"),
        (lambda: aligner.score(images[:5], responses[:4]), "5 images and 4 response rows"),
        (lambda: aligner.score(images[:5]), "give both"),
        (lambda: aligner.score(images[:5], responses[:5], baselines=True), "without data"),
        (lambda: fresh.fit(images, responses, split={"train": [0, 1]}), "'train', 'val' and 'test'"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_subject_and_train_config_refuse_bad_construction():
    good = np.zeros((4, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"images: got shape \(4, 8, 8\) float32; expected float32 \(N, 1, H, W\)"):
        Subject("s", good[:, 0], np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"images: got shape \(4, 1, 8, 8\) float64"):
        Subject("s", good.astype(np.float64), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"responses: got shape \(5, 3\) float32; expected float32 \(4, K\)"):
        Subject("s", good, np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"repeats: got shape \(2, 4, 2\) float32; expected float32 \(R, 4, 3\)"):
        Subject("s", good, np.zeros((4, 3), np.float32), np.zeros((2, 4, 2), np.float32))
    assert Subject("s", good, np.zeros((4, 3), np.float32)).n_neurons == 3
    with pytest.raises(ValueError, match=r"TrainConfig needs a preset: use neuroalign.config.preset\(name\)"):
        TrainConfig()
    assert TrainConfig(preset="reference") == preset("reference")
    assert TrainConfig.from_dict({"epochs": 3}).preset == "custom"


def _cells_of_script(text: str) -> list[tuple[str, str]]:
    """(kind, source) of each `# %%` cell of a percent-format script (markdown lines un-commented)."""
    import re

    cells = []
    for chunk in re.split(r"(?m)^# %%", text)[1:]:
        kind, _, body = chunk.partition("\n")
        body = body.strip("\n")
        if kind.strip() == "[markdown]":
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            cells.append(("markdown", body))
        else:
            cells.append(("code", body))
    return cells


def test_the_example_notebook_runs_top_to_bottom(tmp_path, monkeypatch, one_torch_thread):
    """examples/aligner_demo.ipynb equals examples/aligner_demo.py cell by cell, and its code cells run in
    order in one namespace (as a kernel would), leaving a run folder the Runs page lists."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "examples"
    notebook = json.loads((root / "aligner_demo.ipynb").read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    cells = [(c["cell_type"], "".join(c["source"])) for c in notebook["cells"]]
    assert cells == _cells_of_script((root / "aligner_demo.py").read_text(encoding="utf-8"))
    assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code")  # committed clean
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEUROALIGN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("NEUROALIGN_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict = {"__name__": "__main__"}
    for index, (kind, source) in enumerate(cells):
        if kind == "code":
            exec(compile(source, f"aligner_demo.ipynb cell {index}", "exec"), namespace)  # noqa: S102
    assert namespace["test"]["n"] == 16 and namespace["img"].maps.shape == (40, 16, 64)
    [info] = runs_io.list_runs(tmp_path / "runs")
    assert info.subject == "sim-demo" and info.state == "finished" and info.path == namespace["run_dir"]
