"""Several subjects, one model (issue 21): shared splits by image hash, the shared closed-form run
with per-subject results and cross-subject retrieval, adaptation that fits only the new read-in,
the CLI and its one-line errors. Tiny subjects (90 images of 36x64 px, tens of neurons): seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared_support import HW, population_responses, write_subject

from neuroalign.config import preset
from neuroalign.data import load_subject
from neuroalign.data.shared_split import check_sides_agree, hash_side, image_hashes, shared_splits, split_by_hash


@pytest.fixture
def shared_root(tmp_path: Path, make_tiny_arrays) -> Path:
    """Subjects A, B, C see the same 90 images (B and C in other orders; C with 10x the neurons of A),
    D sees 90 other images (for adaptation), E has other-sized images."""
    root = tmp_path / "data"
    base = make_tiny_arrays(n_images=90, n_neurons=4, seed=0, hw=HW)["images"]
    other = make_tiny_arrays(n_images=90, n_neurons=4, seed=7, hw=HW)["images"]
    rng = np.random.default_rng(3)
    for name, k, seed, perm in (("A", 12, 1, np.arange(90)), ("B", 30, 2, rng.permutation(90)),
                                ("C", 120, 3, rng.permutation(90))):
        mean, reps = population_responses(base, k, seed)
        write_subject(root, name, base[perm], mean[perm], reps[:, perm])
    mean, reps = population_responses(other, 25, 4)
    write_subject(root, "D", other, mean, reps)
    small = make_tiny_arrays(n_images=90, n_neurons=4, seed=9, hw=(32, 48))["images"]
    mean, reps = population_responses(small, 10, 5)
    write_subject(root, "E", small, mean, reps)
    return root


def _config():
    return preset("recommended").replace(**{"image.backbone": "random_rectified", "image.stage": 1, "image.block": 1,
                                            "image.transform": "none", "n_components": 32})


def test_shared_splits_keep_every_image_on_one_side(shared_root: Path) -> None:
    subjects = {n: load_subject(shared_root / n) for n in "ABC"}
    hashes = {n: image_hashes(s.images) for n, s in subjects.items()}
    assert set(hashes["A"]) == set(hashes["B"]) == set(hashes["C"])  # the same images, other orders
    assert hashes["A"] != hashes["B"]
    splits = shared_splits(hashes)
    check_sides_agree(hashes, splits)  # raises when some image is on two sides
    for side in ("train", "val", "test"):
        sets = [{hashes[n][i] for i in splits[n][side]} for n in "ABC"]
        assert sets[0] == sets[1] == sets[2] and sets[0]
    # a subject seen later gets the same side for every image, by the hash alone
    later = split_by_hash(hashes["B"][::-1], name="later")
    for side in ("train", "val", "test"):
        assert {hashes["B"][::-1][i] for i in later[side]} == {hashes["A"][i] for i in splits["A"][side]}
    assert all(hash_side(h) == "test" for h in np.asarray(hashes["A"])[splits["A"]["test"]])


def test_shared_run_adapt_and_cli(shared_root: Path, tmp_path: Path, one_torch_thread) -> None:
    from neuroalign.training.shared import SharedModel
    from neuroalign.training.shared_runs import adapt_from_run, train_shared

    runs_dir, cache = tmp_path / "runs", tmp_path / "cache"
    run = train_shared(["A", "B", "C"], _config(), shared_root, runs_dir, cache_dir=cache)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished", status
    top1 = []
    for name in "ABC":
        res = json.loads((run / "subjects" / name / "results.json").read_text())
        t = res["test"]
        assert {"image_to_neural", "neural_to_image", "chance_top1", "n"} <= set(t)
        assert len(t["image_to_neural"]["top1_ci"]) == 2
        top1 += [t["image_to_neural"]["top1"], t["neural_to_image"]["top1"]]
        assert {"ridge", "ridge_random", "repeat"} <= set(res["baselines"])
        assert res["encoding"]["metric"] == "FEVE"
    assert np.mean(top1) > 2 * t["chance_top1"]  # learns something (10 test images each)
    shared = json.loads((run / "shared_results.json").read_text())
    pairs = shared["cross_subject"]["pairs"]
    assert {(p["a"], p["b"]) for p in pairs} == {("A", "B"), ("A", "C"), ("B", "C")}
    for p in pairs:
        assert len(p["a_to_b"]["top1_ci"]) == 2 and "single_trial" in p and p["n"] >= 2
    assert np.mean([p[d]["top1"] for p in pairs for d in ("a_to_b", "b_to_a")]) > 1.5 * pairs[0]["chance_top1"]
    assert set(shared["cross_subject"]["repeat_scale"]) == {"A", "B", "C"}

    model = SharedModel.load(run)
    before = {k: np.array(getattr(model, k), copy=True) for k in ("feat_mean", "feat_scale", "image_weight")}
    before_readins = {n: model.readins[n].weight.copy() for n in model.readins}
    files_before = {p.name: p.read_bytes() for p in run.glob("shared_model.*")}
    adapted_dirs = adapt_from_run(run, ["D"], shared_root, runs_dir, cache_dir=cache)
    # the shared run is untouched, and the adapted model holds the same shared arrays bit for bit
    assert {p.name: p.read_bytes() for p in run.glob("shared_model.*")} == files_before
    adapted = SharedModel.load(adapted_dirs[0])
    for k, v in before.items():
        assert getattr(adapted, k).tobytes() == v.tobytes()
    assert adapted.shared_fingerprint() == model.shared_fingerprint()
    assert set(adapted.readins) == {"D"}
    # every subject here has repeats: each read-in (the adapted one too) records its own damping
    for ri in (*model.readins.values(), adapted.readins["D"]):
        assert 0.0 < ri.report["population_shrink"] <= 1.0 and ri.report["population_noise_share"] > 0
    for n, w in before_readins.items():
        assert model.readins[n].weight.tobytes() == w.tobytes()
    res_d = json.loads((adapted_dirs[0] / "subjects" / "D" / "results.json").read_text())
    assert res_d["test"]["image_to_neural"]["top1"] >= 0
    cross_d = json.loads((adapted_dirs[0] / "shared_results.json").read_text())["cross_subject"]
    assert cross_d["pairs"] == []  # D saw other images: nothing to retrieve across subjects, said so
    assert {s["b"] for s in cross_d["skipped"]} == {"A", "B", "C"}

    # library adapt: the new read-in only
    from neuroalign.data.shared_split import image_hashes as hashes_of
    from neuroalign.training.shared import adapt
    from neuroalign.training.shared_runs import subject_features

    sub_d = load_subject(shared_root / "D")
    feats = subject_features(model.image, sub_d, cache)
    new = adapt(model, "D", feats, sub_d.responses, split_by_hash(hashes_of(sub_d.images), name="D"))
    assert new.image_weight is model.image_weight and set(new.readins) == {"A", "B", "C", "D"}
    assert "D" not in model.readins
    with pytest.raises(ValueError, match="already part"):
        adapt(new, "D", feats, sub_d.responses, split_by_hash(hashes_of(sub_d.images), name="D"))


def test_cli_shared_and_bad_input(shared_root: Path, tmp_path: Path, capsys, one_torch_thread) -> None:
    from neuroalign.cli import main

    runs_dir = tmp_path / "runs"
    common = ["--data-dir", str(shared_root), "--runs-dir", str(runs_dir), "--cache-dir", str(tmp_path / "cache"),
              "--image-model", "random_rectified", "--components", "16", "--quiet"]
    # different image sizes: one line, nothing written
    assert main(["train", "--shared", "--subjects", "A", "E", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert "differ in size" in err and "A: 36x64" in err and "E: 32x48" in err and "\n" not in err
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
    assert main(["train", "--shared", "--subjects", "A", "B", *common, "--no-baselines"]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert (run / "subjects" / "A" / "results.json").is_file() and (run / "subjects" / "B" / "results.json").is_file()
    # adapting a subject with other-sized images, or one already in the run: one line each
    assert main(["train", "--adapt-from", str(run), "--subjects", "E", *common]) == 2
    assert "32x48" in capsys.readouterr().err
    assert main(["train", "--adapt-from", str(run), "--subjects", "A", *common]) == 2
    assert "already part" in capsys.readouterr().err
    assert main(["train", "--adapt-from", str(run), "--subjects", "C", *common, "--no-baselines"]) == 0
    adapted = Path(capsys.readouterr().out.strip().splitlines()[-1])
    cross = json.loads((adapted / "shared_results.json").read_text())["cross_subject"]
    assert {(p["a"], p["b"]) for p in cross["pairs"]} == {("C", "A"), ("C", "B")}
    # a subject removed after the shared run: evaluating the run says so in one line
    import shutil

    shutil.rmtree(shared_root / "B")
    assert main(["evaluate", str(run), "--data-dir", str(shared_root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "'B'" in err and "cannot be loaded" in err and "\n" not in err


def test_torchrun_shared_and_adapt_two_processes_match_one(shared_root: Path, tmp_path: Path) -> None:
    """`torchrun --nproc_per_node=2 -m neuroalign train --shared` (and `--adapt-from`) on the CPU: one run
    folder (rank 0 fits and writes, rank 1 waits), printed once, with the results of a 1-process run."""
    import os
    import subprocess
    import sys

    from neuroalign.cli import main

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    common = ["--data-dir", str(shared_root), "--cache-dir", str(tmp_path / "cache"), "--image-model",
              "random_rectified", "--components", "16", "--quiet", "--no-baselines", "--device", "cpu"]

    def torchrun(*args: str) -> Path:
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "neuroalign", "train", *args, *common], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines = proc.stdout.strip().splitlines()
        assert len(lines) == 1, proc.stdout  # rank 0 prints its folder; rank 1 prints nothing
        return Path(lines[0])

    two = torchrun("--shared", "--subjects", "A", "B", "--runs-dir", str(tmp_path / "two"))
    assert [p.name for p in (tmp_path / "two").iterdir()] == [two.name]
    assert main(["train", "--shared", "--subjects", "A", "B", *common, "--runs-dir", str(tmp_path / "one")]) == 0
    one = next((tmp_path / "one").iterdir())
    for name in ("A", "B"):
        r2, r1 = (json.loads((d / "subjects" / name / "results.json").read_text())["test"] for d in (two, one))
        assert r2 == r1, name
    with np.load(two / "shared_model.npz") as a, np.load(one / "shared_model.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:  # the same closed form (BLAS threads may differ: float64 rounding only)
            np.testing.assert_allclose(a[key], b[key], rtol=1e-9, atol=1e-12)
    adapted = torchrun("--adapt-from", str(two), "--subjects", "D", "--runs-dir", str(tmp_path / "two-adapt"))
    assert json.loads((adapted / "status.json").read_text())["state"] == "finished"
    assert [p.name for p in (tmp_path / "two-adapt").iterdir()] == [adapted.name]


def test_fit_shared_embeddings_are_the_standardised_features_times_the_weights() -> None:
    """The shared fit's image embeddings of all images (from the Gram matrix and the dual
    coefficients) equal the train-standardised features times its feature-space weights, also where
    two subjects share images; the standardisation uses the pooled train images only."""
    from neuroalign.training.shared import fit_shared

    rng = np.random.default_rng(11)
    n_all, d = 70, 300
    x = (rng.standard_normal((n_all, d)) ** 2).astype(np.float32)
    rows = {"a": np.arange(50), "b": np.arange(20, 70)}  # images 20..49 seen by both
    responses = {s: x[r][:, :10].astype(np.float64) @ rng.standard_normal((10, k)) + rng.standard_normal((50, k))
                 for s, r, k in (("a", rows["a"], 15), ("b", rows["b"], 40))}
    splits = {s: {"train": np.arange(36), "val": np.arange(36, 43), "test": np.arange(43, 50)} for s in rows}
    out = fit_shared(x, responses, rows, splits, n_components=8)
    train_rows = np.unique(np.concatenate([rows[s][splits[s]["train"]] for s in rows]))
    z = (x.astype(np.float64) - x[train_rows].astype(np.float64).mean(0)) / x[train_rows].astype(np.float64).std(0)
    np.testing.assert_allclose(out["feat_mean"], x[train_rows].astype(np.float64).mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["z_all"], z @ out["image_weight"].T, rtol=1e-7, atol=1e-8)
    assert out["image_weight"].shape == (out["report"]["rank"], d)


def test_shared_auto_keeps_the_time_budget(shared_root: Path, tmp_path: Path, one_torch_thread) -> None:
    """A shared run with image model "auto" starts no candidate after half its time budget (as a
    single-subject run): with 1 ms of budget only the first candidate is fitted, the others are
    recorded as skipped; before, a 30 s shared run on two CPU cores fitted all six (over 300 s)."""
    from neuroalign.training.image_choice import AUTO_CANDIDATES
    from neuroalign.training.shared_runs import train_shared

    cfg = preset("recommended").replace(n_components=32, max_seconds=0.001)
    assert cfg.image.backbone == "auto"
    run = train_shared(["A", "B"], cfg, shared_root, tmp_path / "runs", cache_dir=tmp_path / "cache",
                       baselines=False)
    choice = json.loads((run / "config.json").read_text())["image_choice"]
    rows = choice["candidates"]
    assert len(rows) == len(AUTO_CANDIDATES)
    assert "val_mrr_pooled" in rows[0] and choice["chosen"] == AUTO_CANDIDATES[0].backbone
    assert all(r.get("skipped") == "time budget" for r in rows[1:])
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def _gain_subject(seed: int, n: int = 300, q: int = 16, k: int = 80, gain: float = 4.0, noise: float = 2.0):
    """Shared embeddings `z (n, q)` of n images, and two trials per image of k neurons driven linearly by
    z, with independent noise and a fluctuation that moves every neuron at once (sd `gain`)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, q))
    rates = z @ rng.normal(size=(q, k)) / np.sqrt(q)
    trials = np.stack([rates + noise * rng.normal(size=rates.shape) + gain * rng.normal(size=(n, 1))
                       for _ in range(2)])
    return z, trials.mean(axis=0), trials


def _top1(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((np.argmax(a @ b.T, axis=1) == np.arange(len(a))).mean())


def test_readin_damps_a_shared_fluctuation_and_still_reads_the_raw_responses() -> None:
    """With repeats, a read-in damps its subject's population-mean direction by its share of the repeat
    noise (as the single-subject start does): its weights take the raw responses and equal a read-in
    fitted on damped responses; under a shared gain fluctuation it identifies test images better."""
    from neuroalign.data.splits import Normaliser
    from neuroalign.training.linear_start import _damp_population, population_shrink
    from neuroalign.training.shared import fit_readin, make_readin

    split = {"train": np.arange(60), "val": np.arange(60, 110), "test": np.arange(110, 160)}
    tr, va, te = split["train"], split["val"], split["test"]
    top1 = []
    for seed in range(8):  # few train images for many neurons: the read-in's regression alone lets the gain in
        z, resp, trials = _gain_subject(seed, n=160, k=200, gain=4.0, noise=3.0)
        damped = make_readin(z, resp, split, "zscore", trials)
        plain = make_readin(z, resp, split, "zscore")
        norm = Normaliser("zscore").fit(resp[tr])
        c = population_shrink(np.stack([norm.transform(t[tr]) for t in trials]))["shrink"]
        assert c < 0.3 and damped.report["population_shrink"] == pytest.approx(c)
        assert damped.report["population_noise_share"] > 10
        assert plain.report["population_shrink"] == 1.0 and plain.report["population_noise_share"] is None
        if seed == 0:  # = the read-in fitted on damped normalised responses, applied to damped responses
            y = _damp_population(norm.transform(resp).astype(np.float64), c)
            weight, centre, offset, _ = fit_readin(z[tr], y[tr], z[va], y[va])
            np.testing.assert_allclose(damped.embed(resp[te]), (y[te] - centre) @ weight + offset, rtol=1e-8, atol=1e-9)
        top1.append([_top1(r.embed(resp[te]), z[te]) for r in (plain, damped)])
    plain_top1, damped_top1 = np.mean(top1, axis=0)
    assert damped_top1 > plain_top1 + 0.03, top1


def test_shared_model_damps_each_subject_by_its_own_repeats() -> None:
    """`fit_shared_model` damps each subject that has repeats by its own noise share (recorded in its
    read-in's report); a subject without repeats is not damped."""
    from neuroalign.training.shared import SubjectData, fit_shared_model

    rng = np.random.default_rng(5)
    n, d = 120, 60
    feats = rng.normal(size=(n, d)).astype(np.float32)
    hashes = [f"img{i:03d}" for i in range(n)]
    split = {"train": np.arange(80), "val": np.arange(80, 100), "test": np.arange(100, 120)}
    data = []
    for name, gain, with_reps in (("gain", 4.0, True), ("even", 0.0, True), ("none", 4.0, False)):
        rates = feats[:, :12].astype(np.float64) @ rng.normal(size=(12, 40)) / np.sqrt(12)
        trials = np.stack([rates + rng.normal(size=rates.shape) + gain * rng.normal(size=(n, 1)) for _ in range(2)])
        data.append(SubjectData(name, feats, trials.mean(axis=0), hashes, split, trials if with_reps else None))
    model = fit_shared_model(data, {"backbone": "test"}, {"rule": "test"}, n_components=8)
    shrink = {name: model.readin(name).report["population_shrink"] for name in ("gain", "even", "none")}
    assert shrink["gain"] < 0.3 and shrink["even"] > 0.8 and shrink["none"] == 1.0, shrink
    # the raw responses go in: the damping is part of the weights (each column sums as the damped map says)
    ri = model.readin("gain")
    y = ri.normaliser.transform(data[0].responses[split["test"]])
    np.testing.assert_allclose(ri.embed(data[0].responses[split["test"]]), (y - ri.centre) @ ri.weight + ri.offset)
