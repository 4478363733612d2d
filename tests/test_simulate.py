"""Simulated subjects: deterministic, diverse stimuli, V1-like neurons, Stringer-like reliability, learnable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neuroalign.data import SubjectStore, load_ground_truth, load_subject
from neuroalign.data.simulate import (DEMO_SUBJECTS, PATCHES, make_demo_subjects, normalised_drive, repeat_correlation,
                                      repeat_snr, sample_neurons, simulate_responses)
from neuroalign.data.stimuli import KINDS, MAX_CORRELATION, make_stimuli, max_abs_correlation


@pytest.fixture(scope="module")
def medium():
    """800 stimuli x 300 neurons, as the demo generates them (no files)."""
    images, kinds = make_stimuli(800, seed=0)
    images = np.round(images * 255) / 255
    return images.astype(np.float32), kinds, simulate_responses(images, 300, PATCHES["sim-M1"], seed=0)


def test_stimuli_are_deterministic_diverse_and_in_range(medium):
    images, kinds, _ = medium
    assert images.shape == (800, 68, 270) and images.min() >= 0 and images.max() <= 1
    assert set(kinds) == set(KINDS)
    assert max_abs_correlation(images) <= MAX_CORRELATION + 1e-4  # no near-duplicates
    assert images.std(axis=(1, 2)).min() > 0.02  # no blank frames
    a, ka = make_stimuli(40, seed=5)
    b, kb = make_stimuli(40, seed=5)
    c, _ = make_stimuli(40, seed=6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ka, kb)
    assert not np.array_equal(a, c)


def test_neuron_parameters_follow_the_spec():
    rng = np.random.default_rng(0)
    p1 = sample_neurons(2000, PATCHES["sim-M1"], rng)
    p2 = sample_neurons(2000, PATCHES["sim-M2"], rng)
    assert p1["rf_sigma"].min() >= 3 and p1["rf_sigma"].max() <= 12
    assert p1["sf"].min() >= 0.02 and p1["sf"].max() <= 0.12
    assert 0.4 < p1["is_complex"].mean() < 0.7
    # receptive fields cluster in a subject-specific patch
    assert abs(np.median(p1["rf_x"]) - PATCHES["sim-M1"][0][0]) < 5
    assert abs(np.median(p2["rf_x"]) - np.median(p1["rf_x"])) > 50


def test_model_neurons_prefer_their_orientation():
    p = sample_neurons(40, ((135.0, 34.0), (5.0, 3.0)), np.random.default_rng(1))
    p["luminance_weight"][:] = 0
    p["is_complex"][:] = True
    yy, xx = np.mgrid[0:68, 0:270].astype(np.float32)
    gratings = []
    for theta in np.linspace(0, np.pi, 8, endpoint=False):
        for phase in np.linspace(0, 2 * np.pi, 4, endpoint=False):
            gratings.append(0.5 + 0.4 * np.cos(2 * np.pi * 0.05 * (xx * np.cos(theta) + yy * np.sin(theta)) + phase))
    drive = normalised_drive(np.stack(gratings), p).reshape(8, 4, -1).mean(axis=1)  # (orientations, K)
    preferred = np.argmin(np.abs(np.angle(np.exp(2j * (np.linspace(0, np.pi, 8, endpoint=False)[:, None]
                                                         - p["orientation"][None])))), axis=0)
    orthogonal = (preferred + 4) % 8
    k = np.arange(40)
    assert np.mean(drive[preferred, k] > drive[orthogonal, k]) > 0.85


def test_reliability_is_stringer_like(medium):
    _, _, sim = medium
    snr = repeat_snr(sim["repeats"])
    assert 0.1 <= np.median(snr) <= 0.3
    assert 0.08 <= np.median(repeat_correlation(sim["repeats"])) <= 0.25
    assert np.percentile(snr, 90) > 2 * np.percentile(snr, 10)  # heterogeneous neurons
    assert sim["repeats"].shape == (2, 800, 300) and sim["rates"].shape == (800, 300)
    assert np.all(sim["rates"] > 0)


def _identification(pred, actual, ref):
    mu, sd = ref.mean(0), ref.std(0) + 1e-6
    a, p = (actual - mu) / sd, (pred - mu) / sd
    a -= a.mean(1, keepdims=True)
    p -= p.mean(1, keepdims=True)
    s = (p / np.linalg.norm(p, axis=1, keepdims=True)) @ (a / np.linalg.norm(a, axis=1, keepdims=True)).T
    ranks = (s > np.diag(s)[:, None]).sum(1)
    return float((ranks == 0).mean()), float(ranks.mean() / len(s))


def test_task_is_learnable_but_not_trivial(medium):
    images, _, sim = medium
    resp = sim["repeats"].mean(0)
    perm = np.random.default_rng(0).permutation(len(images))
    test, train = perm[:80], perm[80:]
    x = images[:, :68, :268].reshape(-1, 17, 4, 67, 4).mean(axis=(2, 4)).reshape(len(images), -1)
    x = x - x[train].mean(0)
    gram = x[train] @ x[train].T
    alpha = np.linalg.solve(gram + 100 * np.eye(len(train)), resp[train] - resp[train].mean(0))
    pred = x[test] @ x[train].T @ alpha + resp[train].mean(0)
    ridge_top1, ridge_rank = _identification(pred, resp[test], resp[train])
    oracle_top1, oracle_rank = _identification(sim["rates"][test], resp[test], resp[train])
    assert ridge_rank < 0.35  # a linear pixel model is well above chance (mean rank 0.5) ...
    assert ridge_top1 < 0.9  # ... but far from perfect
    assert oracle_top1 > 0.5 and oracle_top1 > ridge_top1 and oracle_rank < ridge_rank


def test_demo_subjects_on_disk(sim_root):
    names = SubjectStore(sim_root).names()
    assert names == sorted(DEMO_SUBJECTS)
    infos = {i.name: i for i in SubjectStore(sim_root).list()}
    a = load_subject(sim_root / "sim-M1")
    b = load_subject(sim_root / "sim-M2")
    for s in (a, b):
        info = infos[s.name]
        assert (info.n_images, info.n_neurons, info.simulated, info.read_from) == (160, 48, True, "sidecar")
        assert s.meta["simulated"] and s.meta["images_dtype"] == "uint8" and s.meta["image_layout"] == "NHW"
        np.testing.assert_allclose(s.responses, s.repeats.mean(0), rtol=1e-5, atol=1e-5)
        gt = load_ground_truth(sim_root / s.name)
        assert gt["rates"].shape == (160, 48) and gt["repeats"].shape == (2, 160, 48)
        np.testing.assert_array_equal(gt["repeats"], s.repeats)
        assert set(gt["image_kind"]) <= set(KINDS)
    np.testing.assert_array_equal(a.images, b.images)  # same stimulus set, different neurons
    assert not np.allclose(a.responses.mean(0)[:10], b.responses.mean(0)[:10])
    side = json.loads((sim_root / "sim-M1" / "subject.json").read_text())
    assert side["name"] == "sim-M1" and side["simulation"]["size"] == "tiny"
    assert make_demo_subjects(sim_root, size="tiny") == []  # existing subjects are kept


def test_generation_is_deterministic_and_ensure_demo(tmp_path, sim_root):
    store = SubjectStore(tmp_path / "fresh")
    assert store.ensure_demo(size="tiny") == list(DEMO_SUBJECTS)
    assert store.ensure_demo(size="tiny") == []
    again = store.load("sim-M2")
    assert again.data_hash == load_subject(sim_root / "sim-M2").data_hash
    with pytest.raises(ValueError, match="unknown demo size 'huge'"):
        make_demo_subjects(tmp_path / "x", size="huge")
