"""Per-neuron importance of a trained run (neuroalign.evaluation.importance) and the reliability
measures it is compared with (neuroalign.evaluation.reliability)."""

import math

import numpy as np
import pytest
import torch

import neurons_support as ns
from neuroalign.config import NeuralTowerConfig
from neuroalign.evaluation import importance as imp
from neuroalign.training.run_eval import run_importance
from neuroalign.evaluation.reliability import neuron_reliability, true_snr
from neuroalign.models import build_neural_tower
from neuroalign.models.neural import NEURAL_TOWER_CLASSES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return ns.trained_half_noise_run(tmp_path_factory.mktemp("importance"))


def test_importance_concentrates_on_the_neurons_that_carry_the_image(trained):
    """Half of the neurons are pure noise: the trained model's importance must sit on the other half,
    follow the repeat reliability, and the numbers must be finite and sum to one."""
    from neuroalign.data import load_subject

    data, run = trained
    res = run_importance(run)
    signal = np.zeros(ns.N_NEURONS, dtype=bool)
    signal[ns.SIGNAL] = True
    assert res.kind == "linear" and res.n_test == 30 and res.share.shape == (ns.N_NEURONS,)
    assert np.all(np.isfinite(res.importance)) and res.share.sum() == pytest.approx(1.0)
    assert res.share[signal].sum() > 0.7  # a plain gradient x input gives ~0.55 here (cosine is scale-blind)
    assert res.net[signal].sum() > 0 and res.net[signal].sum() > 10 * abs(res.net[~signal].sum())
    assert res.native is not None and res.native[signal].sum() > 0.6  # weight norm x SD agrees
    assert res.map_mismatch < 1e-4 and res.warnings == []
    reliability = neuron_reliability(load_subject(data / "half").repeats)
    stats = imp.compare_with(res.share, reliability)
    assert stats["spearman"] > 0.5 and stats["top_n"] == 4 and stats["top_share"] > stats["expected_share"]
    assert stats["half_share"] > 0.7
    assert imp.summary_line(stats, "repeat reliability").startswith("The model relies mostly on the neurons with high")


def test_run_importance_explains_a_damaged_or_changed_run(trained, tmp_path):
    import shutil

    data, run = trained
    copy = shutil.copytree(run, tmp_path / run.name)
    (copy / "best.pt").write_bytes((copy / "best.pt").read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match="best.pt"):
        run_importance(copy)
    (copy / "best.pt").unlink()
    with pytest.raises(FileNotFoundError, match="best checkpoint"):
        run_importance(copy)
    from neuroalign.data import Subject, load_subject

    original = load_subject(data / "half")
    changed = Subject("half", original.images, original.responses + 1.0, original.repeats)  # not the trained data
    shutil.copy(run / "best.pt", copy / "best.pt")
    with pytest.raises(ValueError, match="changed since the run"):
        run_importance(copy, subject=changed)
    assert run_importance(copy, subject=original).n_test == 30


def _tower(kind: str, k: int):
    cfg = NeuralTowerConfig(kind=kind, d_model=8, n_heads=1, n_latents=4)
    torch.manual_seed(0)
    return build_neural_tower(k, cfg, n_components=16).eval()


def _disconnect(tower, neurons):
    """Make the tower's output independent of the given neurons."""
    with torch.no_grad():
        if hasattr(tower, "encoder"):
            tower.encoder.weight[:, neurons] = 0.0
        else:
            tower.embed_weight[neurons] = 0.0


@pytest.mark.parametrize("block", sorted(NEURAL_TOWER_CLASSES))
def test_disconnected_neurons_get_no_importance_in_every_tower_kind(block):
    rng = np.random.default_rng(0)
    k, n = 12, 10
    tower = _tower(block, k)
    _disconnect(tower, list(range(6, 12)))
    r = rng.standard_normal((n, k)).astype(np.float32)
    img = rng.random((n, 16, 64)).astype(np.float32)
    att = imp.attribution_importance(tower, r, img, temperature=0.1, center=True, batch_size=4)
    magnitude, signed = att.magnitude, att.signed
    assert att.rows.tolist() == list(range(n))
    assert magnitude.shape == signed.shape == (k,)
    assert np.all(magnitude[:6] > 0)
    assert np.all(magnitude[6:] <= 1e-6 * magnitude[:6].max())
    native, label, used = imp.native_importance(tower, r)
    assert native.shape == (k,) and native.sum() == pytest.approx(1.0) and label and used == n


def test_attributions_add_up_to_the_log_probability_gain():
    """Expected gradients: per row, the attributions sum to log p(r_j) - log p(r_ref); averaged, the
    signed importance sums to the mean gain (up to the quadrature error of the path integral)."""
    from neuroalign.models import similarity_matrix

    rng = np.random.default_rng(1)
    k, n, draws = 7, 9, 3
    tower = _tower("linear", k)
    r = rng.standard_normal((n, k)).astype(np.float32)
    img = rng.random((n, 16, 64)).astype(np.float32)
    signed = imp.attribution_importance(tower, r, img, 0.2, False, steps=64, draws=draws, batch_size=4, seed=3).signed

    def log_p(x):
        with torch.no_grad():
            s = similarity_matrix(torch.from_numpy(img), tower(torch.from_numpy(x))[:, 0]) / 0.2
            return torch.log_softmax(s, dim=0).diagonal().numpy()

    refs = imp.reference_rows(n, draws, seed=3)
    assert not np.any(refs == np.arange(n)[None])  # never the row itself
    gain = np.mean([log_p(r) - np.diagonal(torch.log_softmax(
        similarity_matrix(torch.from_numpy(img), tower(torch.from_numpy(r[refs[d]]))[:, 0].detach()) / 0.2,
        dim=0).numpy()) for d in range(draws)])
    assert signed.sum() == pytest.approx(gain, rel=1e-3, abs=1e-4)


def test_compare_with_and_spearman():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(2)
    a, b = rng.random(50), rng.random(50)
    b[:5] = a[:5]  # some ties within b do not matter; ranks are averaged
    b[10:13] = 0.5
    assert imp.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    share = np.r_[np.full(10, 0.08), np.full(90, 0.2 / 90)]
    quality = np.r_[np.linspace(1, 0.9, 10), np.linspace(0.5, 0, 90)]
    quality[50] = np.nan
    stats = imp.compare_with(share, quality)
    assert stats["n"] == 99 and stats["top_n"] == 10 and stats["top_share"] == pytest.approx(0.8 / (1 - 0.2 / 90))
    assert stats["expected_share"] == pytest.approx(10 / 99) and stats["spearman"] > 0.5
    assert stats["half_share"] == pytest.approx(1 - 50 * 0.2 / 90 / (1 - 0.2 / 90))
    assert math.isnan(imp.compare_with(share, np.full(100, np.nan))["spearman"])
    assert "Too few" in imp.summary_line(imp.compare_with(share, np.full(100, np.nan)), "reliability")
    with pytest.raises(ValueError, match="one quality value per neuron"):
        imp.compare_with(share, quality[:5])


def test_true_snr_and_reliability():
    rng = np.random.default_rng(3)
    n, k, reps = 400, 3, 4
    rates = np.stack([rng.normal(0, 2, n), rng.normal(0, 1, n), np.full(n, 5.0)], axis=1)
    noise_sd = np.array([1.0, 1.0, 1.0])
    repeats = rates[None] + noise_sd * rng.standard_normal((reps, n, k))
    snr = true_snr(rates, repeats)
    # variance 4 (1, 0) over the trial-noise variance of the mean of 4 repeats (1 / 4)
    assert snr == pytest.approx([16.0, 4.0, 0.0], rel=0.15, abs=1e-9)
    with pytest.raises(ValueError, match="same N, K"):
        true_snr(rates, repeats[:, :10])
    rel = neuron_reliability(repeats)
    assert rel[0] > rel[1] > 0.5 and abs(rel[2]) < 0.3


def test_a_time_budget_averages_over_a_random_subset_of_at_least_min_rows():
    rng = np.random.default_rng(4)
    k, n = 6, 40
    tower = _tower("latent", k)
    r = rng.standard_normal((n, k)).astype(np.float32)
    img = rng.random((n, 16, 64)).astype(np.float32)
    cut = imp.attribution_importance(tower, r, img, 0.1, True, steps=2, draws=1, max_seconds=0.0, min_rows=16)
    assert len(cut.rows) == 16 and len(set(cut.rows.tolist())) == 16 and cut.rows.max() < n
    assert cut.rows.tolist() != list(range(16))  # a random subset, not the first rows
    assert np.all(np.isfinite(cut.magnitude)) and cut.magnitude.sum() > 0
    full = imp.attribution_importance(tower, r, img, 0.1, True, steps=2, draws=1, max_seconds=60.0, min_rows=16)
    assert full.rows.tolist() == list(range(n))  # a budget it never reaches changes nothing
    none = imp.attribution_importance(tower, r, img, 0.1, True, steps=2, draws=1)
    assert np.allclose(full.magnitude, none.magnitude, rtol=1e-5, atol=1e-9)
    native, _, used = imp.native_importance(tower, r, max_samples=20, batch_size=4, max_seconds=0.0)
    assert used == 4 and native.sum() == pytest.approx(1.0)  # at least one batch
