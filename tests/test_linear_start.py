"""The readout image head, the linear neural tower and their closed-form start."""

import numpy as np
import pytest
import torch

from neuroalign.config import preset
from neuroalign.data import Subject
from neuroalign.models import ImageTower, LinearNeuralTower, build_neural_tower
from neuroalign.models.maps import dct_basis, synthesise_maps
from neuroalign.training.linear_start import apply_linear_start, fit_linear_start
from neuroalign.training.trainer import Trainer


def _linear_world(n=240, d=60, k=50, noise=1.0, seed=0):
    """Responses = a rank-5 linear function of the features plus noise."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, d))
    w = rng.normal(size=(d, 5)) @ rng.normal(size=(5, k))
    rates = feats @ w
    resp = rates + noise * rates.std() * rng.normal(size=rates.shape)
    return feats, resp


def _cos_top1(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    s = a @ b.T
    return float((s.argmax(axis=1) == np.arange(len(s))).mean())


def test_dct_basis_is_orthonormal_zero_mean_and_smooth_first():
    b = dct_basis(64).double()
    assert torch.allclose(b @ b.T, torch.eye(64, dtype=torch.float64), atol=1e-6)
    assert b.sum(dim=1).abs().max() < 1e-9  # no constant component: centring a map changes nothing
    first = b[0].view(16, 64)
    assert (first[:, 1:] - first[:, :-1]).abs().max() < 0.01  # the lowest frequency varies slowly
    with pytest.raises(ValueError, match="n_components"):
        dct_basis(1024)
    e = torch.randn(3, 64)
    maps = synthesise_maps(e, b.float())
    assert maps.shape == (3, 1, 16, 64)
    assert torch.allclose(maps.flatten(1).norm(dim=1), e.norm(dim=1), atol=1e-4)  # an isometry


def test_linear_start_identifies_held_out_items_and_reduces_rank():
    feats, resp = _linear_world()
    tr, va, te = np.arange(160), np.arange(160, 200), np.arange(200, 240)
    start = fit_linear_start(feats[tr], resp[tr], feats[va], resp[va], n_components=32)
    assert start.image_weight.shape == (32, 60) and start.neural_weight.shape == (32, 50)
    rank = start.report["rank"]
    assert 1 <= rank <= 32 and not start.image_weight[rank:].any()  # unused components stay zero
    x = (feats - start.feat_mean) / start.feat_scale
    img = x[te] @ start.image_weight.T
    neu = resp[te] @ start.neural_weight.T + start.neural_bias
    assert _cos_top1(img, neu) > 0.5  # chance 0.025
    # a random linear map from the same features does not identify anything
    rng = np.random.default_rng(1)
    assert _cos_top1(x[te] @ rng.normal(size=(60, 32)), neu) < 0.2


def test_linear_start_never_looks_at_test_rows():
    feats, resp = _linear_world()
    tr, va = np.arange(160), np.arange(160, 200)
    a = fit_linear_start(feats[tr], resp[tr], feats[va], resp[va], n_components=16)
    feats2, resp2 = feats.copy(), resp.copy()
    feats2[200:] = 1e3  # test rows are not an argument; changing them cannot matter
    resp2[200:] = -1e3
    b = fit_linear_start(feats2[tr], resp2[tr], feats2[va], resp2[va], n_components=16)
    assert np.array_equal(a.image_weight, b.image_weight) and a.report == b.report
    # the val rows do steer the choices
    c = fit_linear_start(feats[tr], resp[tr], feats[va], np.random.default_rng(3).normal(size=resp[va].shape), 16)
    assert c.report["val_top1_mean"] < a.report["val_top1_mean"]


def test_readout_tower_standardises_and_draws_the_embedding():
    tower = ImageTower("ds_net_tiny", stage=1, block=1, head="readout", grid=(4, 16), n_components=8, transform="abs")
    x = torch.rand(3, 1, 34, 136)
    feats = tower.features(x)
    assert feats.shape == (3, 64, 4, 16) and (feats >= 0).all()  # abs before pooling
    neural = LinearNeuralTower(20, n_components=8)
    start = fit_linear_start(np.random.rand(12, 64 * 64), np.random.rand(12, 20), np.random.rand(4, 64 * 64),
                             np.random.rand(4, 20), n_components=8)
    apply_linear_start(tower, neural, start)
    emb = tower.embed(feats)
    maps = tower.project(feats)
    assert maps.shape == (3, 1, 16, 64)
    assert torch.allclose(maps.flatten(1) @ tower.basis.T, emb, atol=1e-4)  # the map is the embedding
    with pytest.raises(ValueError, match="pooled features"):
        tower.project(torch.rand(3, 64, 5, 16))
    with pytest.raises(ValueError, match="readout head"):
        ImageTower("ds_net_tiny", stage=1, block=1, transform="abs")


def test_linear_neural_tower_dropout_is_per_neuron_and_train_only():
    tower = build_neural_tower(30, preset("recommended").neural.__class__(kind="linear", dropout=0.5), n_components=8)
    assert isinstance(tower, LinearNeuralTower)
    r = torch.rand(4, 30)
    tower.train()
    assert not torch.allclose(tower(r), tower(r))
    tower.eval()
    assert torch.equal(tower(r), tower(r))
    imp = tower.neuron_importance(r)
    assert imp.shape == (4, 30) and torch.allclose(imp.sum(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="responses of shape"):
        tower(torch.rand(4, 29))


def _subject(make_tiny_arrays, n=80, k=30):
    a = make_tiny_arrays(n_images=n, n_neurons=k, hw=(34, 136))
    return Subject("toy", a["images"][:, None].astype(np.float32) / 255, a["responses"], a["repeats"])


def _tiny_recommended(**changes):
    base = {"epochs": 4, "batch_size": 16, "device": "cpu", "image.backbone": "ds_net_tiny", "image.stage": 1,
            "image.block": 1, "image.grid": [4, 16], "n_components": 16}
    base.update(changes)
    return preset("recommended").replace(**base)


def test_trainer_starts_linear_and_restores_nothing_worse_than_the_start(make_tiny_arrays):
    subject = _subject(make_tiny_arrays)
    trainer = Trainer(_tiny_recommended(), subject)
    fit = trainer.fit()
    report = trainer.state.linear_start
    assert report is not None and report["n_train"] == len(trainer.split["train"])
    # the start is epoch 0 of the selection: the restored weights score at least the start's val MRR
    assert trainer.val_scores()["mrr"] >= report["val_mrr_mean"] - 1e-9
    assert fit.best_epoch >= 0 and trainer.state.best_score == pytest.approx(trainer.val_scores()["mrr"])


def test_repeat_augmentation_swaps_in_single_trials(make_tiny_arrays):
    subject = _subject(make_tiny_arrays)
    trainer = Trainer(_tiny_recommended(**{"data.repeat_augment": 1.0}), subject).prepare()
    idx = torch.arange(8)
    r = trainer.train_responses(idx, epoch=1, step=0)
    singles = trainer.repeats[:, idx]
    assert all(any(torch.equal(r[i], singles[j, i]) for j in range(singles.shape[0])) for i in range(8))
    plain = Trainer(_tiny_recommended(), subject).prepare()
    assert torch.equal(plain.train_responses(idx, 1, 0), plain.responses[idx])


def test_config_refuses_a_linear_start_for_other_towers():
    with pytest.raises(ValueError, match="init='linear'"):
        preset("recommended").replace(**{"neural.block": "transformer"}).validate()
    preset("recommended").replace(**{"neural.block": "transformer", "init": "random"}).validate()


def test_config_refuses_a_multi_layer_reference_block():
    with pytest.raises(ValueError, match="exactly 1 attention layer"):
        preset("reference").replace(**{"neural.n_layers": 2}).validate()


def test_epoch_throughput_counts_training_steps_only(make_tiny_arrays, monkeypatch):
    import time

    subject = _subject(make_tiny_arrays)
    trainer = Trainer(_tiny_recommended(epochs=2, select_by="val_loss", init="random"), subject)
    slow_val = trainer.val_loss

    def val_loss(*a, **k):
        time.sleep(0.5)  # validation stalls; the training rate must not include it
        return slow_val(*a, **k)

    monkeypatch.setattr(trainer, "val_loss", val_loss)
    epochs = []
    trainer.fit(callback=lambda ev, v: epochs.append(v) if ev == "epoch" else None)
    samples = sum(len(b) for e in (1, 2) for b in trainer.batches(e))
    # without the validation stalls (1 s in all) the elapsed time would be at least 0.9 s shorter
    assert epochs[-1]["samples_per_s"] > samples / (epochs[-1]["elapsed_s"] - 0.9)


def test_linear_start_refuses_constant_features_with_a_reason():
    with pytest.raises(ValueError, match="constant across the training images"):
        fit_linear_start(np.ones((10, 6)), np.random.rand(10, 4), np.ones((4, 6)), np.random.rand(4, 4), 8)


def test_preparation_reports_feature_progress_and_the_linear_start(tiny_subject_root, tmp_path, monkeypatch):
    from neuroalign.training import pipeline, runs

    messages = []
    real = runs.write_status

    def record(run_dir, state, message="", **fields):
        messages.append(message)
        return real(run_dir, state, message, **fields)

    monkeypatch.setattr(runs, "write_status", record)
    pipeline.run_training("tiny", _tiny_recommended(epochs=1), tiny_subject_root, tmp_path / "runs",
                          cache_dir=tmp_path / "cache")
    features = [m for m in messages if m.startswith("preparing: backbone features")]
    assert features and features[-1] == "preparing: backbone features 60/60 images"  # batches of 64: one step
    start = messages.index(next(m for m in messages if "closed-form linear start" in m))
    assert messages.index(features[-1]) < start < len(messages) - 1  # features, then the start, then training


def test_column_stats_equal_numpy_across_chunk_boundaries():
    """The chunked per-feature statistics the closed-form fits and FEVE use equal numpy's whole-matrix
    mean and std (to rounding: the summation order may differ), also when the width is not a multiple
    of the chunk, and constant columns get spread 0."""
    from neuroalign.linalg import column_stats

    x = np.random.default_rng(3).standard_normal((37, 1001)) ** 3
    x[:, 10] = 4.0
    for chunk in (1, 7, 1000, 5000):
        mean, std = column_stats(x, chunk=chunk)
        np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(std, x.std(axis=0), rtol=1e-12, atol=1e-12)
    assert std[10] == 0.0


def test_standardised_gram_and_products_equal_the_explicit_matrices_across_chunks():
    """The chunked products the closed-form fits, the profile and FEVE share equal the products of an
    explicitly standardised float64 copy, for every way of naming the second factor."""
    from neuroalign.linalg import standardised_gram, standardised_t_product, standardiser

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((30, 1003)) ** 3).astype(np.float32)
    x[:, 7] = 2.0  # constant: scale 1, stays 0
    rows = np.array([0, 3, 4, 9, 20, 21, 29])
    mean, scale = standardiser(x, rows=rows)
    ref_mean, ref_std = x[rows].astype(np.float64).mean(0), x[rows].astype(np.float64).std(0)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-12, atol=1e-12)
    assert scale[7] == 1.0 and np.allclose(scale[8:], ref_std[8:])
    z = (x.astype(np.float64) - mean) / scale
    other = rng.standard_normal((5, 1003)).astype(np.float32)
    zo = (other.astype(np.float64) - mean) / scale
    for chunk in (1, 100, 4096):
        np.testing.assert_allclose(standardised_gram(x, mean, scale, chunk=chunk), z @ z.T, rtol=1e-10, atol=1e-8)
        np.testing.assert_allclose(standardised_gram(x, mean, scale, b_rows=rows, chunk=chunk), z @ z[rows].T,
                                   rtol=1e-10, atol=1e-8)
        np.testing.assert_allclose(standardised_gram(other, mean, scale, b=x, chunk=chunk), zo @ z.T,
                                   rtol=1e-10, atol=1e-8)
        some = np.array([29, 1, 3, 17])
        np.testing.assert_allclose(standardised_gram(x, mean, scale, b_rows=rows, rows=some, chunk=chunk),
                                   z[some] @ z[rows].T, rtol=1e-10, atol=1e-8)
        np.testing.assert_allclose(standardised_gram(x, mean, scale, rows=some, chunk=chunk), z[some] @ z.T,
                                   rtol=1e-10, atol=1e-8)
        c = rng.standard_normal((30, 4))
        np.testing.assert_allclose(standardised_t_product(x, mean, scale, c, chunk=chunk), z.T @ c,
                                   rtol=1e-10, atol=1e-8)


def test_top_right_singular_vectors_through_either_gram_matrix():
    """Fewer neurons than train images (K x K Gram) and more (r x r Gram) give the SVD's top right
    singular vectors and values (up to sign)."""
    from neuroalign.training.linear_start import _top_right_singular

    rng = np.random.default_rng(2)
    for shape in ((40, 12), (12, 40)):
        a = rng.standard_normal(shape)
        v, sig = _top_right_singular(a, 5)
        _, s_ref, vt = np.linalg.svd(a, full_matrices=False)
        np.testing.assert_allclose(sig, s_ref[:5], rtol=1e-10)
        np.testing.assert_allclose(np.abs(np.sum(v * vt[:5].T, axis=0)), 1.0, rtol=1e-10)
        np.testing.assert_allclose(v.T @ v, np.eye(5), atol=1e-10)


def test_solve_start_on_gram_matrices_is_the_feature_space_start():
    """The dual start (what the profile scores) embeds images exactly as `fit_linear_start`'s weights."""
    from neuroalign.linalg import standardised_gram, standardiser
    from neuroalign.training.linear_start import solve_start

    rng = np.random.default_rng(4)
    feats = rng.standard_normal((90, 300)).astype(np.float32)
    resp = feats[:, :20].astype(np.float64) @ rng.standard_normal((20, 25)) + 0.3 * rng.standard_normal((90, 25))
    tr, va = np.arange(70), np.arange(70, 90)
    primal = fit_linear_start(feats[tr], resp[tr], feats[va], resp[va], n_components=16)
    mean, scale = standardiser(feats, rows=tr)
    gram = standardised_gram(feats, mean, scale, b_rows=tr)
    dual = solve_start(gram[tr], gram[va], resp[tr], resp[va], 16)
    assert dual.report == {k: v for k, v in primal.report.items() if k != "n_features"}
    z = (feats.astype(np.float64) - primal.feat_mean) / primal.feat_scale
    np.testing.assert_allclose(dual.image_embeddings(gram), z @ primal.image_weight.T, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(dual.neural_embeddings(resp), resp @ primal.neural_weight.T + primal.neural_bias,
                               rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="do not match"):
        solve_start(gram[tr], gram[va][:, :5], resp[tr], resp[va], 16)


def test_train_space_start_equals_the_neuron_space_start():
    """With more neurons than train images the start works in the train space (M M^T formed once);
    it chooses the same settings and gives the same embeddings, to rounding, as the K-space path --
    and so does the train-space path forced on a population smaller than the train set."""
    from neuroalign.linalg import standardised_gram, standardiser
    from neuroalign.training.linear_start import solve_start

    rng = np.random.default_rng(7)
    for k in (400, 30):  # wide (K > r: the automatic train-space path) and narrow
        feats = rng.standard_normal((110, 200)).astype(np.float32)
        resp = feats[:, :15].astype(np.float64) @ rng.standard_normal((15, k)) + 0.5 * rng.standard_normal((110, k))
        tr, va = np.arange(80), np.arange(80, 110)
        mean, scale = standardiser(feats, rows=tr)
        gram = standardised_gram(feats, mean, scale, b_rows=tr)
        starts = [solve_start(gram[tr], gram[va], resp[tr], resp[va], 24, train_space=flag) for flag in (True, False)]
        auto = solve_start(gram[tr], gram[va], resp[tr], resp[va], 24)
        assert auto.report == starts[0 if k > 80 else 1].report
        fast, slow = starts
        for key in ("alpha_relative", "rank", "whiten"):
            assert fast.report[key] == slow.report[key], (k, key)
        assert fast.report["val_mrr_mean"] == pytest.approx(slow.report["val_mrr_mean"], abs=1e-12)
        # embeddings agree up to the sign of each dimension (singular vectors' signs are arbitrary)
        img_f, img_s = fast.image_embeddings(gram), slow.image_embeddings(gram)
        neu_f, neu_s = fast.neural_embeddings(resp), slow.neural_embeddings(resp)
        signs = np.sign(np.sum(neu_f * neu_s, axis=0))
        signs[signs == 0] = 1
        np.testing.assert_allclose(img_f * signs, img_s, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(neu_f * signs, neu_s, rtol=1e-7, atol=1e-9)


def test_cross_validated_settings_score_every_fold_and_refit_on_train():
    """`folds`: each setting is scored by a fit on four fifths of train + val against the other fifth
    (checked here for the chosen setting by scoring the folds by hand), the best mean wins, and the
    start is then fitted on the train images with exactly that setting. Too few images for the folds
    fall back to the val split and say so; a missing val Gram matrix is a one-line error."""
    from neuroalign.linalg import standardised_gram, standardiser
    from neuroalign.training.linear_start import _solve, cv_settings, solve_start

    rng = np.random.default_rng(8)
    feats = rng.standard_normal((200, 120)).astype(np.float32)
    resp = feats[:, :12].astype(np.float64) @ rng.standard_normal((12, 30)) + 1.5 * rng.standard_normal((200, 30))
    tr, va = np.arange(160), np.arange(160, 200)
    mean, scale = standardiser(feats, rows=tr)
    g = standardised_gram(feats, mean, scale)
    trva = np.concatenate([tr, va])
    start = solve_start(g[np.ix_(tr, tr)], g[np.ix_(va, tr)], resp[tr], resp[va], 16,
                        gram_val_val=g[np.ix_(va, va)], folds=4)
    rep = start.report
    assert rep["selection"] == "4-fold cross-validation on the train and val images" and rep["folds"] == 4
    setting, key = cv_settings(g[np.ix_(trva, trva)], resp[trva], 16, 4)
    assert setting == (rep["alpha_relative"], rep["rank"], *rep["whiten"]) and key[0] == pytest.approx(rep["cv_mrr_mean"])
    # the chosen setting's mean over the four folds, by hand: each fold scored with only that setting
    one = dict(alphas=(setting[0],), ranks=(setting[1],), pairs=((setting[2], setting[3]),), train_space=None)
    parts = np.array_split(np.random.default_rng(0).permutation(200), 4)
    by_hand = []
    for held in parts:
        rest, hold = trva[np.setdiff1d(np.arange(200), held)], trva[held]
        fold = _solve(g[np.ix_(rest, rest)], g[np.ix_(hold, rest)], resp[rest], resp[hold], 16, **one)[0]
        by_hand.append(fold.report["val_mrr_mean"])
    assert np.mean(by_hand) == pytest.approx(key[0], abs=1e-12)
    # refitted on train with exactly that setting
    alone = _solve(g[np.ix_(tr, tr)], g[np.ix_(va, tr)], resp[tr], resp[va], 16, **one)[0]
    np.testing.assert_allclose(start.coef, alone.coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(start.neural_weight, alone.neural_weight, rtol=1e-10, atol=1e-12)
    assert rep["val_mrr_mean"] == alone.report["val_mrr_mean"]
    # few images: the val split, said in the report
    small = solve_start(g[:6, :6], g[6:8, :6], resp[:6], resp[6:8], 4, gram_val_val=g[6:8, 6:8], folds=5)
    assert small.report["selection"].startswith("val split (8 images are too few for 5 folds)")
    with pytest.raises(ValueError, match="need the val images' Gram matrix"):
        solve_start(g[np.ix_(tr, tr)], g[np.ix_(va, tr)], resp[tr], resp[va], 16, folds=5)


def _gain_world(n=400, d=40, k=120, gain=2.0, noise=1.0, seed=0):
    """Two trials per image: a linear function of the features (unit sd per neuron), independent noise
    per neuron (sd `noise`), and a shared fluctuation that moves every neuron at once (sd `gain`)."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, d))
    rates = feats @ rng.normal(size=(d, k)) / np.sqrt(d)
    trials = np.stack([rates + noise * rng.normal(size=rates.shape) + gain * rng.normal(size=(n, 1))
                       for _ in range(2)])
    return feats, trials


def test_population_shrink_is_one_for_independent_noise_and_damps_a_shared_fluctuation():
    from neuroalign.training.linear_start import population_shrink

    _, independent = _gain_world(gain=0.0)
    none = population_shrink(independent)
    assert none["share"] == pytest.approx(1.0, abs=0.15) and none["shrink"] > 0.9
    _, shared = _gain_world(gain=2.0)
    damped = population_shrink(shared)
    # per trial the shared part adds gain^2 * K to the variance along u and gain^2 to the rest: share ~ 1 + 4K/5
    assert damped["share"] > 50 and damped["shrink"] == pytest.approx(1 / np.sqrt(damped["share"]))
    assert population_shrink(shared, rows=np.arange(100))["share"] > 50  # the train rows alone
    assert population_shrink(shared[:1]) is None and population_shrink(None) is None


def test_damped_start_reads_the_raw_responses_and_identifies_better_under_a_shared_fluctuation():
    from neuroalign.linalg import standardised_gram, standardiser
    from neuroalign.training.linear_start import _damp_population, population_shrink, solve_start

    tr, va, te = np.arange(300), np.arange(300, 350), np.arange(350, 400)
    top1 = []
    for seed in range(3):
        feats, trials = _gain_world(gain=4.0, noise=3.0, seed=seed)
        resp = trials.mean(axis=0)
        mean, scale = standardiser(feats, rows=tr)
        gram = standardised_gram(feats, mean, scale, b_rows=tr)
        c = population_shrink(trials[:, tr])["shrink"]
        assert c < 0.2
        damped = solve_start(gram[tr], gram[va], resp[tr], resp[va], 32, shrink=c)
        assert damped.report["population_shrink"] == pytest.approx(c)
        if seed == 0:  # the same start as one fitted on damped responses: its neural weights take the raw ones
            on_damped = solve_start(gram[tr], gram[va], _damp_population(resp[tr], c), _damp_population(resp[va], c),
                                    32)
            np.testing.assert_allclose(damped.neural_embeddings(resp[te]),
                                       on_damped.neural_embeddings(_damp_population(resp[te], c)), rtol=1e-9,
                                       atol=1e-9)
            np.testing.assert_allclose(damped.image_embeddings(gram[te]), on_damped.image_embeddings(gram[te]),
                                       rtol=1e-9, atol=1e-9)
            with pytest.raises(ValueError, match="shrink must be in"):
                solve_start(gram[tr], gram[va], resp[tr], resp[va], 32, shrink=1.5)
        plain = solve_start(gram[tr], gram[va], resp[tr], resp[va], 32)
        top1.append([_cos_top1(s.image_embeddings(gram[te]), s.neural_embeddings(resp[te])) for s in (plain, damped)])
    plain_top1, damped_top1 = np.mean(top1, axis=0)
    assert damped_top1 > plain_top1 + 0.05, top1


def test_trainer_damps_the_start_by_the_repeats_noise(make_tiny_arrays):
    """The trainer estimates the damping from the train images' repeats and the start records it."""
    from neuroalign.training.linear_start import population_shrink

    subject = _subject(make_tiny_arrays)
    trainer = Trainer(_tiny_recommended(), subject).prepare()
    report = trainer.fit_linear_start()
    tr = trainer.split["train"]
    expected = population_shrink(np.stack([trainer.normaliser.transform(r[tr]) for r in subject.repeats]))
    assert report["population_shrink"] == pytest.approx(expected["shrink"])
    assert report["population_noise_share"] == pytest.approx(expected["share"])
