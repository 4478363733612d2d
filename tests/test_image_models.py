"""The image-model registry, the fixed filter banks, FEVE, the alignment profile and image model "auto"."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from neuroalign.config import IMAGE_MODEL_DEPTHS, preset
from neuroalign.data import load_subject
from neuroalign.evaluation.baselines import random_rectified_features
from neuroalign.evaluation.feve import fev_feve, linear_feve, summarise
from neuroalign.models import ImageTower, cached_features
from neuroalign.models.feature_cache import clear_memory_cache
from neuroalign.models.filter_banks import GaborBank, gabor_pair_kernels
from neuroalign.models.image_models import build_image_model, check_catalog, image_model_spec, registered_models
from neuroalign.training.image_choice import AUTO_CANDIDATES, Candidate, candidate_tower, choose_image_features
from neuroalign.training.linear_start import fit_linear_start
from neuroalign.training.profile import alignment_profile, load_profile, save_profile, cosine_metrics


def test_registry_matches_the_torch_free_catalog():
    check_catalog()
    assert set(registered_models()) == set(IMAGE_MODEL_DEPTHS)


def test_every_table_names_a_layer_the_same_way():
    """One rule (`config.layer_label`) names a layer in auto's candidates, shared runs, the profile's
    chart and table and the baselines: a pyramid level by its resolution, a one-layer bank by its name,
    any other layer by stage and block, a transform other than none appended."""
    from neuroalign.config import layer_label
    from neuroalign.training.profile_file import ProfileRow
    from neuroalign.ui.profile_view import layer_name

    assert Candidate("random_rectified", 2, 1, "none").label == "random_rectified stage 2 (1/2 resolution)"
    assert Candidate("random_rectified", 3, 1, "none").label == "random_rectified stage 3 (1/4 resolution)"
    assert Candidate("v1_gabor", 1, 1, "none").label == "v1_gabor"
    assert Candidate("ds_net_small", 1, 3, "square").label == "ds_net_small stage 1 block 3, square"
    assert Candidate("efficientnet_lite0", 2, 2, "none").label == "efficientnet_lite0 stage 2 block 2"
    assert layer_label("pkg.mod:factory", 2, 1) == "pkg.mod:factory stage 2 block 1"  # a user's model
    row = ProfileRow.from_json({"model": "random_rectified", "stage": 2, "block": 1})
    assert layer_name(row) == "stage 2 (1/2 resolution)"
    assert row.name == "random_rectified stage 2 (1/2 resolution)"  # the charts' hover names
    assert layer_name(ProfileRow.from_json({"model": "v1_gabor", "stage": 1, "block": 1})) == "(one layer)"


@pytest.mark.parametrize("name", sorted(IMAGE_MODEL_DEPTHS))
def test_every_model_gives_its_declared_channels_at_every_stage_end(name):
    spec = image_model_spec(name)
    x = torch.rand(2, 1, 68, 270)
    for stage, block in spec.stage_ends():
        model, _ = build_image_model(name, stage, block)
        out = model.features_at(x, stage, block)
        assert out.shape[:2] == (2, spec.channels[stage - 1]), (name, stage, block, out.shape)
        assert torch.isfinite(out).all()


def test_unknown_model_and_layer_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown image model 'resnet9000'.*efficientnet_lite0"):
        image_model_spec("resnet9000")
    with pytest.raises(ValueError, match="efficientnet_lite0 has stages 1..7, got stage 9"):
        build_image_model("efficientnet_lite0", 9, 1)
    with pytest.raises(ValueError, match="ds_net_small stage 2 has blocks 1..4, got block 5"):
        build_image_model("ds_net_small", 2, 5)
    # the torch-free config says the same before anything is built
    with pytest.raises(ValueError, match="v1_gabor has stages 1..1, got stage 2"):
        preset("recommended").replace(**{"image.backbone": "v1_gabor", "image.stage": 2, "image.block": 1}).validate()


def test_banks_refuse_a_weights_file(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="fixed filter bank and takes no weights file"):
        build_image_model("v1_gabor", 1, 1, weights=path)


def test_random_bank_is_the_baselines_feature_set():
    images = np.random.default_rng(0).random((3, 1, 40, 60)).astype(np.float32)
    model, _ = build_image_model("random_rectified", 1, 1)
    ours = torch.nn.functional.avg_pool2d(model.features_at(torch.from_numpy(images), 1, 1), 4).flatten(1).numpy()
    np.testing.assert_allclose(ours, random_rectified_features(images, pool=4), rtol=2e-5, atol=1e-6)


def test_random_bank_stages_filter_a_pyramid_of_the_image():
    """Stage s of random_rectified is the same bank on the image block-averaged by 2^(s-1) (trailing
    rows/columns that fill no block dropped); one forward pass gives several stages; a stage whose
    block-averaged image is smaller than the filters says so."""
    images = np.random.default_rng(1).random((2, 1, 41, 75)).astype(np.float32)
    model, _ = build_image_model("random_rectified", 3, 1)
    assert model.depths == (1, 1, 1) and model.stage_channels == (64, 64, 64)
    x = torch.from_numpy(images)
    s1, s2, s3 = model.forward_intermediates(x, [(1, 1), (2, 1), (3, 1)])
    for stage, got in ((2, s2), (3, s3)):
        f = 2 ** (stage - 1)
        h, w = 41 // f, 75 // f
        blocks = images[:, :, :h * f, :w * f].reshape(2, 1, h, f, w, f).mean(axis=(3, 5))
        want = random_rectified_features(blocks.astype(np.float32), pool=1)
        np.testing.assert_allclose(got.flatten(1).numpy(), want, rtol=2e-5, atol=1e-6)
        assert got.shape[-2:] == (h - 8, w - 8)
    torch.testing.assert_close(s1, model.features_at(x, 1, 1))
    with pytest.raises(ValueError, match="stage 3 filters the image block-averaged by 4: images must be at least "
                                         "36x36 px, got \\(30, 75\\)"):
        model.features_at(x[:, :, :30], 3, 1)
    with pytest.raises(ValueError, match="random_rectified has stages 1..3, got stage 4"):
        build_image_model("random_rectified", 4, 1)


def test_gabor_kernels_are_a_quadrature_bank():
    k = gabor_pair_kernels(8.0, n_orient=4)[:, 0]
    assert k.shape[0] == 8
    for kern in k:
        assert abs(float(kern.sum())) < 1e-4 and float(kern.norm()) == pytest.approx(1.0, abs=1e-5)
    even, odd = k[0], k[1]
    assert abs(float((even * odd).sum())) < 0.05  # quadrature pair: (nearly) orthogonal


def test_gabor_bank_prefers_the_matching_grating_orientation_and_scale():
    h, w = 64, 256
    yy, xx = np.mgrid[0:h, 0:w]
    bank = GaborBank()
    energies = []
    for theta in (0.0, np.pi / 2):  # grating varying along x (theta 0) or along y
        u = xx * np.cos(theta) + yy * np.sin(theta)
        img = 0.5 + 0.4 * np.cos(2 * np.pi * u / 8.0)
        out = bank(torch.tensor(img, dtype=torch.float32)[None, None])[0]
        # channels: scale-major, then orientation, then (even, odd) x (+, -) halves
        per = out.mean(dim=(1, 2)).reshape(len(bank.wavelengths), 2, bank.n_orient, 2).sum(dim=(1, 3))
        energies.append(per)
    scale_8 = 1  # wavelengths (4, 8, 16, 32)
    assert int(energies[0][scale_8].argmax()) == 0
    assert int(energies[1][scale_8].argmax()) == bank.n_orient // 2
    assert int(energies[0].sum(dim=1).argmax()) == scale_8


def test_user_factory_model(tmp_path, monkeypatch):
    (tmp_path / "mylab_models.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        class Tiny(nn.Module):
            depths = (2,)
            stage_channels = (4,)
            def __init__(self, in_chans=1):
                super().__init__()
                self.convs = nn.ModuleList([nn.Conv2d(in_chans, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)])
            def forward_intermediates(self, x, indices, stop_early=True, intermediates_only=True):
                outs = []
                for conv in self.convs:
                    x = torch.relu(conv(x)); outs.append(x)
                return [outs[b - 1] for _, b in indices]
            def features_at(self, x, stage, block):
                return self.forward_intermediates(x, [(stage, block)])[0]
            def config(self):
                return {"kind": "tiny"}

        def build(in_chans=1):
            return Tiny(in_chans)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    tower = ImageTower("mylab_models:build", 1, 2, head="readout", grid=(4, 8), transform="none")
    assert tower.extract(torch.rand(2, 1, 32, 64)).shape == (2, 4, 4, 8)
    # weights from a local file: every tensor must be there with its shape
    good = tmp_path / "good.pt"
    torch.save(tower.backbone.state_dict(), good)
    ImageTower("mylab_models:build", 1, 2, head="readout", weights=good)
    bad = tmp_path / "bad.pt"
    state = dict(tower.backbone.state_dict())
    state["convs.1.weight"] = torch.zeros(4, 4, 5, 5)
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"'convs.1.weight' has shape \(4, 4, 5, 5\) in the file, the model expects \(4, 4, 3, 3\)"):
        ImageTower("mylab_models:build", 1, 2, head="readout", weights=bad)
    with pytest.raises(ValueError, match="could not import 'nope_module'"):
        image_model_spec("nope_module:build")
    assert preset("recommended").replace(**{"image.backbone": "mylab_models:build", "image.block": 2}).image.backbone


def test_feve_is_one_for_the_true_mean_and_zero_for_a_constant():
    rng = np.random.default_rng(0)
    mean = rng.random((50, 6))
    trials = mean[None] + 0.3 * rng.standard_normal((2, 50, 6))
    fev, feve = fev_feve(mean, np.repeat(mean[None], 2, axis=0))  # noiseless repeats, perfect prediction
    np.testing.assert_allclose(feve, 1.0)
    np.testing.assert_allclose(fev, 1.0)
    _, feve_const = fev_feve(np.broadcast_to(trials.mean(axis=(0, 1)), (50, 6)), trials)
    np.testing.assert_allclose(feve_const, 0.0, atol=1e-12)
    # pure noise: nothing is explainable, so FEV ~ 0 and no neuron enters the median
    noise = rng.standard_normal((2, 2000, 5))
    fev_n, feve_n = fev_feve(np.zeros((2000, 5)), noise)
    assert np.all(np.abs(fev_n) < 0.1)
    assert summarise(fev_n, feve_n)["n_included"] == 0
    with pytest.raises(ValueError, match="R >= 2"):
        fev_feve(mean, trials[:1])


def test_linear_feve_ranks_a_good_encoding_model_above_a_bad_one():
    rng = np.random.default_rng(1)
    n, d, k = 300, 20, 10
    x = rng.standard_normal((n, d))
    mean = x @ rng.standard_normal((d, k))
    trials = mean[None] + 1.0 * rng.standard_normal((2, n, k))
    split = {"train": np.arange(0, 200), "val": np.arange(200, 250), "test": np.arange(250, 300)}
    good = linear_feve(x, trials.mean(axis=0), trials, split)
    bad = linear_feve(rng.standard_normal((n, d)), trials.mean(axis=0), trials, split)
    assert good["median"] > 0.8 and bad["median"] < 0.2
    assert linear_feve(x, trials.mean(axis=0), None, split) is None


def _tiny_subject(sim_root):
    return load_subject(sim_root / "sim-M1")


def test_profile_layer_score_equals_a_separate_closed_form_start(sim_root, tmp_path):
    clear_memory_cache()
    sub = _tiny_subject(sim_root)
    cfg = preset("recommended")
    prof = alignment_profile(sub, cfg, models=["random_rectified", "ds_net_tiny"], cache_dir=tmp_path)
    labels = [r["label"] for r in prof["rows"]]
    assert labels[:3] == ["random_rectified stage 1 (full resolution)", "random_rectified stage 2 (1/2 resolution)",
                          "random_rectified stage 3 (1/4 resolution)"] and len(labels) == 3 + 4
    # recompute one layer by hand: features, normaliser on train, start on train/val, test metrics
    from neuroalign.data import Normaliser
    from neuroalign.training.profile import subject_split

    split = subject_split(sub, cfg)
    norm = Normaliser(cfg.data.normaliser).fit(sub.responses[split["train"]])
    resp = norm.transform(sub.responses).astype(np.float64)
    row = prof["rows"][4]  # ds_net_tiny stage 2
    tower = candidate_tower(cfg, Candidate("ds_net_tiny", row["stage"], row["block"], row["transform"]))
    feats = cached_features(tower, sub.images, sub.data_hash).flatten(1).numpy()
    # the start damps the population-mean direction by the train images' repeat noise, as a training run's
    from neuroalign.training.linear_start import population_shrink

    reps = np.stack([norm.transform(r[split["train"]]) for r in sub.repeats])
    shrink = population_shrink(reps)["shrink"]
    assert row["start"]["population_shrink"] == pytest.approx(shrink)
    start = fit_linear_start(feats[split["train"]], resp[split["train"]], feats[split["val"]], resp[split["val"]],
                             cfg.n_components, shrink=shrink)
    # the start's own weights in feature space, applied by hand (the profile works in the dual form)
    img = ((feats.astype(np.float64) - start.feat_mean) / start.feat_scale) @ start.image_weight.T
    neu = resp @ start.neural_weight.T + start.neural_bias
    test = cosine_metrics(img[split["test"]], neu[split["test"]])
    for d in ("image_to_neural", "neural_to_image"):
        assert row["test"][d]["top1"] == pytest.approx(test[d]["top1"])
        assert row["test"][d]["mrr"] == pytest.approx(test[d]["mrr"])
    assert row["val_mrr"] == pytest.approx(start.report["val_mrr_mean"])
    assert "feve" in row and row["feve"]["n_neurons"] == sub.n_neurons
    assert {"ridge", "ridge_random", "repeat"} <= set(prof["reference"])
    best = prof["best"]["overall"]
    assert prof["rows"][best]["val_mrr"] == max(r["val_mrr"] for r in prof["rows"])
    # kept with the subject; refused for other data
    folder = tmp_path / "subj"
    folder.mkdir()
    save_profile(folder, prof)
    assert load_profile(folder, sub.data_hash)["rows"] == json.loads(json.dumps(prof["rows"]))
    assert load_profile(folder, "another-hash") is None


def _auto_inputs(sim_root):
    """The tiny subject, the default config with image model "auto", its split and its responses
    normalised on the train images: what `choose_image_features` takes."""
    from neuroalign.data import Normaliser, split_indices

    clear_memory_cache()
    sub = _tiny_subject(sim_root)
    cfg = preset("recommended").replace(**{"image.backbone": "auto"})
    split = split_indices(sub.n_images, 0.1, 0.1, cfg.data.split_seed)
    resp = Normaliser("zscore").fit(sub.responses[split["train"]]).transform(sub.responses)
    return sub, cfg, split, resp


@pytest.mark.parametrize("combine_top", [2, 3])
def test_auto_picks_the_best_val_candidate_and_records_every_score(sim_root, tmp_path, monkeypatch, combine_top):
    from neuroalign.training import image_choice

    monkeypatch.setattr(image_choice, "COMBINE_TOP", combine_top)  # 2, the default; 3 adds the best three
    sub, cfg, split, resp = _auto_inputs(sim_root)
    cands = (Candidate("random_rectified", 1, 1, "none"), Candidate("ds_net_tiny", 1, 1, "square"),
             Candidate("v1_gabor", 1, 1, "none"))
    choice = choose_image_features(cfg, sub, split, resp, cache_dir=tmp_path, candidates=cands)
    rows = choice.report["candidates"]
    assert [r["model"] for r in rows[:3]] == [c.label for c in cands]
    # the best two (and with COMBINE_TOP 3 then all three) read side by side compete too, their features
    # concatenated; each combination names its parts in candidate order
    order = sorted(range(3), key=lambda i: (rows[i]["val_mrr"], rows[i]["val_top1"], -i), reverse=True)
    groups = [sorted(order[:2]), [0, 1, 2]][:combine_top - 1]
    names = ["random_rectified@1.1:none", "ds_net_tiny@1.1:square", "v1_gabor@1.1:none"]
    assert [r["backbone"] for r in rows[3:]] == ["+".join(names[i] for i in g) for g in groups]
    for row, g in zip(rows[3:], groups):
        assert row["n_features"] == sum(rows[i]["n_features"] for i in g)
    winner = max(rows, key=lambda r: (r["val_mrr"], r["val_top1"]))
    assert choice.report["backbone"] == winner["backbone"]
    tower = candidate_tower(cfg, choice.candidate)
    assert tower.n_inputs == winner["n_features"]
    assert all(c.backbone in IMAGE_MODEL_DEPTHS for c in AUTO_CANDIDATES)
    # every score is the closed-form start fitted on that candidate's features (a combination: its
    # parts side by side), and the winner's start has the feature-space weights of that fit
    tr, va = split["train"], split["val"]
    feats = [cached_features(candidate_tower(cfg, c), sub.images, sub.data_hash, cache_dir=tmp_path).flatten(1).numpy()
             for c in cands]
    feats += [np.concatenate([feats[i] for i in g], axis=1) for g in groups]
    refs = [fit_linear_start(x[tr], resp[tr], x[va], resp[va], cfg.n_components) for x in feats]
    assert len(rows) == len(refs) == 3 + combine_top - 1
    for row, ref in zip(rows, refs):
        assert row["val_mrr"] == pytest.approx(ref.report["val_mrr_mean"], abs=1e-9), row["model"]
        assert row["val_top1"] == pytest.approx(ref.report["val_top1_mean"], abs=1e-9), row["model"]
    from neuroalign.training.linear_start import CV_FOLDS

    x = feats[rows.index(winner)]
    ref = fit_linear_start(x[tr], resp[tr], x[va], resp[va], cfg.n_components, folds=CV_FOLDS)
    assert choice.start.report["selection"] == ref.report["selection"] == "5-fold cross-validation on the train and val images"
    assert choice.start.report["cv_mrr_mean"] == pytest.approx(ref.report["cv_mrr_mean"], abs=1e-9)
    assert choice.start.report["rank"] == ref.report["rank"] and choice.start.report["whiten"] == ref.report["whiten"]
    np.testing.assert_allclose(choice.start.feat_scale, ref.feat_scale, rtol=1e-9)
    np.testing.assert_allclose(choice.start.image_weight, ref.image_weight, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(choice.start.neural_weight, ref.neural_weight, rtol=1e-6, atol=1e-9)


def test_auto_training_run_records_the_choice(sim_root, tmp_path, monkeypatch):
    from neuroalign.training import image_choice
    from neuroalign.training.pipeline import run_training

    monkeypatch.setattr(image_choice, "AUTO_CANDIDATES", (Candidate("random_rectified", 1, 1, "none"),
                                                          Candidate("v1_gabor", 1, 1, "none")))
    cfg = preset("recommended").replace(epochs=1, device="cpu", batch_size=32, **{"image.backbone": "auto"})
    run = run_training("sim-M1", cfg, sim_root, tmp_path / "runs", cache_dir=tmp_path / "cache")
    record = json.loads((run / "config.json").read_text())
    chosen = record["image_choice"]
    assert record["config"]["image"]["backbone"] == chosen["backbone"] in (
        "random_rectified", "v1_gabor", "random_rectified@1.1:none+v1_gabor@1.1:none")
    assert len(chosen["candidates"]) == 3  # the two, then both side by side
    results = json.loads((run / "results.json").read_text())
    start = results["training"]["linear_start"]  # the winner's start, its settings cross-validated
    assert start["selection"].startswith("5-fold cross-validation") and 0 < start["cv_mrr_mean"] <= 1
    assert start["val_mrr_mean"] <= max(r["val_mrr"] for r in chosen["candidates"]) + 1e-9
    assert results["encoding"]["model"]["n_neurons"] == 48


def test_one_pass_layer_features_equal_each_layer_computed_alone():
    """A profile computes a model's stage ends in one forward pass: every layer's features equal what
    its own (truncated) tower computes, bit for bit -- for the pretrained EfficientNet-Lite0 and for
    DS-Net's random init, drawn stage by stage so that each truncated build is the first part of the
    deeper one. Towers of different models are refused."""
    from neuroalign.models.feature_cache import compute_features, compute_layer_features, shares_prefix
    from neuroalign.training.profile import profile_layers

    cfg = preset("recommended")
    images = np.random.default_rng(0).random((6, 1, 68, 270)).astype(np.float32)
    for model, n in (("efficientnet_lite0", 4), ("ds_net_tiny", 4)):
        towers = [candidate_tower(cfg, c) for c in profile_layers([model])[:n]]
        together = compute_layer_features(towers, images, batch_size=4)
        for tower, feats in zip(towers, together):
            alone = compute_features(tower, images, batch_size=4)
            assert feats.shape == alone.shape and torch.equal(feats, alone), (model, tower.stage, tower.block)
        assert compute_layer_features(towers, images, should_stop=lambda: True) is None
    mixed = [candidate_tower(cfg, c) for c in (profile_layers(["ds_net_tiny"])[0], profile_layers(["ds_net_small"])[1])]
    assert not shares_prefix(mixed[0], mixed[1])
    with pytest.raises(ValueError, match="not a prefix"):
        compute_layer_features(mixed, images)


def test_dsnet_random_init_is_drawn_stage_by_stage():
    """Every truncation of a DS-Net is the first part of the full network (same seed); a whole first
    stage draws exactly what a one-stage network seeded the same way drew (so the `auto` default's
    DS-Net candidate, stage 1 block 3, reads the features it was chosen on); stages and seeds differ."""
    from neuroalign.models.dsnet import DSNet
    from neuroalign.models.dsnet_models import seeded_dsnet

    for name, depths in (("ds_net_tiny", (2, 2, 4, 1)), ("ds_net_small", (3, 4, 12, 3))):
        full = build_image_model(name, len(depths), depths[-1])[0].state_dict()
        for stage, block in ((1, 1), (1, depths[0]), (2, 1), (3, depths[2]), (4, 1)):
            part = build_image_model(name, stage, block)[0].state_dict()
            assert all(torch.equal(t, full[k]) for k, t in part.items()), (name, stage, block)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            legacy = DSNet((depths[0],)).state_dict()
        first = build_image_model(name, 1, depths[0])[0].state_dict()
        assert legacy.keys() == first.keys() and all(torch.equal(legacy[k], first[k]) for k in legacy)
    small = build_image_model("ds_net_small", 2, 1)[0]
    other = build_image_model("ds_net_small", 2, 1, seed=1)[0]
    for key in ("blocks1.0.conv1.weight", "blocks2.0.conv1.weight"):
        assert not torch.equal(other.state_dict()[key], small.state_dict()[key])
    state = torch.random.get_rng_state()
    build_image_model("ds_net_small", 2, 1)
    assert torch.equal(state, torch.random.get_rng_state())
    assert seeded_dsnet((3, 2), (3, 4, 12, 3)).depths == (3, 2)  # the last stage may be cut short
    for bad in ((2, 4), (3, 5), (3, 4, 12, 3, 1)):
        with pytest.raises(ValueError, match="not a prefix"):
            seeded_dsnet(bad, (3, 4, 12, 3))


def test_rectified_power_equals_the_general_power_to_rounding():
    """The fast paths (x * sqrt(x) in slices for 1.5, square for 2) equal cat([relu(z), relu(-z)]) ** p."""
    from neuroalign.models.filter_banks import rectified_power

    z = torch.randn(3, 5, 700, 701) * 3  # more than one slice of 2^20 values
    for p in (1.0, 1.5, 2.0, 1.25):
        ref = torch.cat([torch.relu(z), torch.relu(-z)], dim=1).pow(p)
        torch.testing.assert_close(rectified_power(z.clone(), p), ref, rtol=1e-6, atol=1e-6)


def test_auto_starts_only_what_is_expected_to_end_within_its_budget(sim_root, tmp_path, monkeypatch):
    """On a clock the test drives, each candidate costs what the test says (features + fit). A candidate
    is started only when the time left is at least the costliest candidate's so far; the best two read
    side by side only when one more fit fits; the winner's settings are cross-validated only when
    `CV_FOLDS` fits end before `cv_deadline`, else the val split's are kept and the report says why."""
    from neuroalign.training import image_choice

    clock = [1000.0]
    monkeypatch.setattr(image_choice.time, "monotonic", lambda: clock[0])
    costs = {"random_rectified": {2: 5.0, 1: 4.0, 3: 12.0}, "v1_gabor": {1: 2.0}}  # features, by model and stage
    real_features, real_solve = image_choice.cached_features, image_choice._solve

    def features(tower, *args, **kwargs):
        clock[0] += costs[tower.backbone_name][tower.stage]
        return real_features(tower, *args, **kwargs)

    def solve(*args, **kwargs):
        clock[0] += 1.0  # every closed-form fit on the val split costs 1 s
        return real_solve(*args, **kwargs)

    monkeypatch.setattr(image_choice, "cached_features", features)
    monkeypatch.setattr(image_choice, "_solve", solve)
    sub, cfg, split, resp = _auto_inputs(sim_root)
    cands = (Candidate("random_rectified", 2, 1, "none"), Candidate("random_rectified", 1, 1, "none"),
             Candidate("random_rectified", 3, 1, "none"), Candidate("v1_gabor", 1, 1, "none"))
    # 1st: 0 -> 6 s; 2nd: 6 + 6 <= 15, started, -> 11 s; 3rd: 11 + 6 > 15, skipped (it would have ended
    # at 24 s), and so is the 4th; the pair: 11 + 1 <= 15, scored -> 12 s; CV: 12 + 5 x 1 > 14: not run
    choice = choose_image_features(cfg, sub, split, resp, cache_dir=tmp_path, candidates=cands,
                                   deadline=1015.0, cv_deadline=1014.0)
    rows = choice.report["candidates"]
    assert ["val_mrr" in r for r in rows] == [True, True, False, False, True]
    assert [r.get("skipped") for r in rows[2:4]] == ["time budget", "time budget"]
    assert clock[0] == 1012.0
    assert choice.start.report["selection"] == "val split (the time budget left no time for cross-validation)"
    # with room for the folds the winner's settings are cross-validated (the features are cached now)
    clock[0] = 2000.0
    costs["random_rectified"] = {2: 0.0, 1: 0.0, 3: 0.0}
    choice = choose_image_features(cfg, sub, split, resp, cache_dir=tmp_path, candidates=cands[:2],
                                   deadline=2100.0, cv_deadline=2100.0)
    assert choice.start.report["selection"].endswith("cross-validation on the train and val images")
