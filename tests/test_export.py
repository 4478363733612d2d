"""Issue 19 item 4: export a trained run's shared-space embeddings, splits and per-neuron scores as .npz
and .mat (library, CLI), read back equal to what the run's model gives on those images and responses;
shared runs one subject at a time; one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, whosmat

from neuroalign import Aligner
from neuroalign.cli import main
from neuroalign.data import load_subject
from neuroalign.evaluation.reliability import neuron_reliability
from neuroalign.export import MATLAB_NAME, export_run, load_export, write_export
from neuroalign.training import runs as runs_io
from neuroalign.training.run_eval import load_importance

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(sim_root, tmp_path_factory) -> dict[str, Path]:
    import torch

    from neuroalign.config import preset
    from neuroalign.training.pipeline import run_training

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("export")
    cfg = preset("recommended").replace(epochs=1, device="cpu", batch_size=32, **{
        "image.backbone": "random_rectified", "image.block": 1, "image.transform": "none"})
    run = run_training("sim-M1", cfg, sim_root, base / "runs", cache_dir=base / "cache")
    torch.set_num_threads(before)
    return {"run": run, "data": sim_root, "cache": base / "cache"}


@pytest.fixture(scope="module")
def exported(trained) -> dict:
    return export_run(trained["run"], data_dir=trained["data"], cache_dir=trained["cache"], device="cpu")


def test_export_equals_the_runs_model_on_every_image_and_response(trained, exported):
    run, data, got = trained["run"], trained["data"], exported
    subject = load_subject(data / "sim-M1")
    aligner = Aligner.load(run, device="cpu", verbose=False)
    n, k, q = subject.n_images, subject.n_neurons, aligner.embedding_dim_
    np.testing.assert_allclose(got["image_embedding"], aligner.encode_images(subject.images).embeddings, atol=1e-5)
    np.testing.assert_allclose(got["response_embedding"], aligner.encode_responses(subject.responses).embeddings,
                               atol=1e-5)
    assert got["image_embedding"].shape == got["response_embedding"].shape == (n, q)
    assert got["repeat_embedding"].shape == (subject.repeats.shape[0], n, q)
    np.testing.assert_allclose(got["repeat_embedding"][1], aligner.encode_responses(subject.repeats[1]).embeddings,
                               atol=1e-5)
    # splits: the run's own, as codes and as row lists
    split = runs_io.read_split(run)
    for code, label in enumerate(("train", "val", "test")):
        np.testing.assert_array_equal(np.sort(split[label]), got[f"{label}_index"])
        assert (got["split"][split[label]] == code).all()
    assert (got["split"] >= 0).sum() == sum(len(v) for v in split.values())
    np.testing.assert_array_equal(got["image_ids"], subject.image_ids)
    np.testing.assert_array_equal(got["neuron_ids"], np.arange(k))
    # per-neuron scores: FEVE from results.json, importance.npz, reliability from the repeats
    results = json.loads((run / "results.json").read_text())
    feve = [np.nan if v is None else v for v in results["encoding"]["model"]["per_neuron"]]
    np.testing.assert_allclose(got["feve"], feve)
    np.testing.assert_allclose(got["importance_share"], load_importance(run).share)
    np.testing.assert_allclose(got["reliability"], neuron_reliability(subject.repeats))
    summary = json.loads(got["config_json"])
    assert summary["run"]["config"]["image"]["backbone"] == "random_rectified" and summary["embedding_dim"] == q
    assert summary["test"]["top1_image_to_neural"] == results["test"]["image_to_neural"]["top1"]
    assert got["run_id"] == run.name and got["subject"] == "sim-M1"
    assert all(MATLAB_NAME.match(key) for key in got), sorted(got)
    # the test split's embeddings give the run's test numbers: cosine of the embeddings = the scored similarity
    test = np.asarray(runs_io.load_run(run).test_outputs()["test_indices"])
    score = aligner.score(subject.images[test], subject.responses[test])
    assert score["image_to_neural"]["top1"] == results["test"]["image_to_neural"]["top1"]


@pytest.mark.parametrize("fmt", ["npz", "mat"])
def test_file_round_trip(trained, exported, tmp_path, fmt):
    run, data, got = trained["run"], trained["data"], exported
    path = write_export(run, tmp_path / f"out.{fmt}", data_dir=data, cache_dir=trained["cache"], device="cpu")
    back = load_export(path)
    assert sorted(back) == sorted(got)
    for key, value in got.items():
        if isinstance(value, str):
            assert back[key] == value, key
        elif value.dtype.kind == "U":
            assert list(back[key]) == list(value), key
        else:
            assert back[key].shape == value.shape and back[key].dtype == value.dtype, key
            np.testing.assert_array_equal(back[key], value, err_msg=key)
    assert path.read_bytes()[:4] == (b"PK\x03\x04" if fmt == "npz" else b"MATL")
    if fmt == "mat":  # what MATLAB sees: valid names, column vectors, char arrays
        names = {name: (shape, cls) for name, shape, cls in whosmat(path)}
        assert all(MATLAB_NAME.match(name) for name in names)
        n = len(got["image_ids"])
        assert names["image_ids"] == ((n, 1), "int64") and names["split"] == ((n, 1), "int8")
        assert names["image_embedding"][0] == got["image_embedding"].shape and names["config_json"][1] == "char"
        assert json.loads(str(loadmat(path)["config_json"][0]))["subject"] == "sim-M1"


def test_cli_export(trained, tmp_path, capsys):
    run = tmp_path / "runs" / trained["run"].name
    shutil.copytree(trained["run"], run)
    assert main(["export", str(run), "--format", "mat", "--data-dir", str(trained["data"]), "--device", "cpu",
                 "--cache-dir", str(trained["cache"])]) == 0
    out = run / "export_sim-M1.mat"  # the default file: in the run folder, in the format asked for
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}: sim-M1, 160 images x 48 neurons") and "feve, importance, reliability" in line
    assert load_export(out)["image_embedding"].shape[0] == 160


@pytest.mark.parametrize("argv_extra, needle", [
    (["--subject", "sim-M2"], "run {run} is of subject 'sim-M1', not 'sim-M2'"),
    (["--format", "mat", "--out", "x.npz"], "--out x.npz does not end in .mat"),
    (["--out", "x.txt"], "export format 'txt' (from --out x.txt); expected one of npz, mat, csv"),
])
def test_cli_export_errors_are_one_line(trained, capsys, argv_extra, needle):
    run = trained["run"]
    rc = main(["export", str(run), "--data-dir", str(trained["data"]), "--device", "cpu", *argv_extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and needle.format(run=run.name) in err, err


def test_export_refuses_changed_or_missing_data(trained, tmp_path, capsys):
    run = tmp_path / "runs" / trained["run"].name
    shutil.copytree(trained["run"], run)
    record = json.loads((run / "config.json").read_text())
    record["subject"]["data_hash"] = "0" * 64  # the run was trained on other data than the subject holds now
    (run / "config.json").write_text(json.dumps(record))
    rc = main(["export", str(run), "--data-dir", str(trained["data"]), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "changed since run" in err and "000000000000" in err, err
    rc = main(["export", str(run), "--data-dir", str(tmp_path / "nowhere"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "not found in" in err, err
    assert not list(Path.cwd().glob("export_*")) and sorted(p.name for p in run.glob("export_*")) == []


def test_shared_run_exports_one_subject_at_a_time(tmp_path, make_tiny_arrays, capsys):
    """A shared run (train --shared) through its SharedModel: --subject chooses, the embeddings are the
    model's, the split is the subject's own (by image hash)."""
    from scipy.io import savemat

    from neuroalign.config import preset
    from neuroalign.training.shared import SharedModel
    from neuroalign.training.shared_runs import subject_features, train_shared

    root = tmp_path / "data"
    images = make_tiny_arrays(n_images=80, n_neurons=4, seed=0, hw=(36, 64))["images"]
    for name, k, seed in (("A", 10, 1), ("B", 14, 2)):
        arrays = make_tiny_arrays(n_images=80, n_neurons=k, seed=seed, hw=(36, 64))
        data = root / name / "Data"
        data.mkdir(parents=True)
        savemat(data / "images.mat", {"images": images})
        savemat(data / "responses.mat", {"responses": arrays["responses"], "responses_repeats": arrays["repeats"]})
    cfg = preset("recommended").replace(**{"image.backbone": "random_rectified", "image.stage": 1, "image.block": 1,
                                           "image.transform": "none", "n_components": 16})
    run = train_shared(["A", "B"], cfg, root, tmp_path / "runs", cache_dir=tmp_path / "cache")

    rc = main(["export", str(run), "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2 and "run of 2 subjects (A, B); choose one with --subject" in err, err
    rc = main(["export", str(run), "--subject", "C", "--data-dir", str(root)])
    assert rc == 2 and "has no subject 'C'; expected one of A, B" in capsys.readouterr().err

    got = export_run(run, subject="B", data_dir=root, cache_dir=tmp_path / "cache")
    model = SharedModel.load(run)
    subject = load_subject(root / "B")
    np.testing.assert_allclose(got["image_embedding"],
                               model.embed_features(subject_features(model.image, subject, tmp_path / "cache")),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["response_embedding"], model.embed_responses("B", subject.responses),
                               rtol=1e-5, atol=1e-6)
    q = model.n_components  # the shared fit chooses its rank
    assert got["repeat_embedding"].shape == (2, 80, q) and got["neuron_ids"].shape == (14,)
    assert json.loads(got["config_json"])["embedding_dim"] == q
    split = runs_io.read_split(run / "subjects" / "B")
    np.testing.assert_array_equal(got["test_index"], np.sort(split["test"]))
    results = json.loads((run / "subjects" / "B" / "results.json").read_text())
    np.testing.assert_allclose(got["feve"], [np.nan if v is None else v
                                             for v in results["encoding"]["model"]["per_neuron"]])
    assert "importance" not in got and json.loads(got["config_json"])["kind"] == "shared"
