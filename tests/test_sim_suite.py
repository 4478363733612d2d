"""The independent simulated-subject suite of benchmarks/sim_suite.py: files load as written, noise
is calibrated, baselines are ordered chance < repeat decoder < oracle, generators differ."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from benchmarks import sim_images, sim_neurons
from benchmarks.sim_suite import GENERATORS, HELD_OUT_GENERATORS, QUICK_SUITE, SUITE, SubjectSpec, build_suite, generate, write_subject
from neuroalign.data import load_ground_truth, load_subject, split_indices
from neuroalign.evaluation.baselines import oracle_baseline, repeat_baseline


@pytest.fixture(scope="module")
def quick_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sim_suite")
    build_suite(root, QUICK_SUITE)
    return root


def _top1(m: dict) -> float:
    return 0.5 * (m["image_to_neural"]["top1"] + m["neural_to_image"]["top1"])


def test_suite_composition() -> None:
    assert len(SUITE) >= 9 and len({s.name for s in SUITE}) == len(SUITE)
    for gen in GENERATORS:
        roles = {s.role for s in SUITE if s.generator == gen}
        assert roles == ({"report"} if gen in HELD_OUT_GENERATORS else {"selection", "report"}), gen
    assert set(HELD_OUT_GENERATORS) < set(GENERATORS)
    assert sum(s.role == "selection" for s in SUITE) >= 3 and sum(s.role == "report" for s in SUITE) >= 5
    assert min(s.n_images for s in SUITE) == 450 and max(s.n_images for s in SUITE) == 2800
    assert min(s.n_neurons for s in SUITE) == 200 and max(s.n_neurons for s in SUITE) == 10000
    assert len({s.seed for s in SUITE + QUICK_SUITE}) == len(SUITE + QUICK_SUITE)
    a, b = next(s for s in SUITE if s.name == "report-A"), next(s for s in SUITE if s.name == "report-B")
    assert (a.generator, a.n_images, a.n_neurons, a.fmt) == ("gabor_ln", 1000, 400, "v5")
    assert (b.generator, b.n_images, b.n_neurons, b.fmt, b.frac_unreliable) == ("subunit_texture", 1200, 800, "v7.3", 0.25)
    assert b.nb_shape is not None and b.gain_sd > 0
    assert 2 <= len(QUICK_SUITE) <= 3 and len({s.generator for s in QUICK_SUITE}) == len(QUICK_SUITE)
    assert [s.role for s in QUICK_SUITE].count("selection") == 1
    assert all(s.n_images <= 600 and s.n_neurons <= 300 for s in QUICK_SUITE)


def test_quick_suite_loads_as_written(quick_root: Path) -> None:
    for spec in QUICK_SUITE:
        n, k = spec.n_images, spec.n_neurons
        subject = load_subject(quick_root / spec.name)
        assert subject.n_images == n and subject.n_neurons == k
        assert subject.images.shape == (n, 1, 68, 270)
        assert subject.repeats is not None and subject.repeats.shape == (2, n, k)
        assert subject.meta["format"] == spec.fmt and subject.meta["repeats_source"] == spec.repeats_as
        assert subject.meta["simulated"] is True
        np.testing.assert_allclose(subject.responses, subject.repeats.mean(axis=0), rtol=1e-5, atol=1e-5)
        rates = load_ground_truth(quick_root / spec.name)["rates"]
        assert rates.shape == (n, k) and rates.dtype == np.float32 and rates.min() >= 0
        assert 0.0 <= subject.images.min() and subject.images.max() <= 1.0 and subject.images.std() > 0.05
        r = sim_neurons.repeat_r(subject.repeats)
        assert abs(np.median(r) - spec.target_r) < 0.06, (spec.name, np.median(r))


def test_baselines_ordered(quick_root: Path) -> None:
    for spec in QUICK_SUITE:
        subject = load_subject(quick_root / spec.name)
        rates = load_ground_truth(quick_root / spec.name)["rates"]
        split = split_indices(subject.n_images, 0.1, 0.1, 1234)
        rep = repeat_baseline(subject.repeats, split)
        ora = oracle_baseline(rates, subject.responses, split)
        chance = rep["chance_top1"]
        assert _top1(ora) > max(0.6, 20 * chance), (spec.name, _top1(ora))
        assert 3 * chance < _top1(rep) < _top1(ora) - 0.15, (spec.name, _top1(rep), _top1(ora))
        # rates shuffled across images identify nothing
        shuffled = oracle_baseline(rates[np.random.default_rng(0).permutation(len(rates))], subject.responses, split)
        assert _top1(shuffled) < 5 * chance


def test_unreliable_neurons_have_no_repeat_correlation(quick_root: Path) -> None:
    spec = next(s for s in QUICK_SUITE if s.generator == "subunit_texture")
    truth = load_ground_truth(quick_root / spec.name)
    subject = load_subject(quick_root / spec.name)
    unreliable = truth["unreliable"]
    assert unreliable.sum() == round(spec.frac_unreliable * spec.n_neurons)
    r = sim_neurons.repeat_r(subject.repeats)
    assert np.median(np.abs(r[unreliable])) < 0.06 and np.percentile(np.abs(r[unreliable]), 95) < 0.15
    assert np.median(r[~unreliable]) > 0.25
    # overdispersed: Fano factor of the two repeats above 1 for most reliable cells
    diff_var = 0.5 * ((subject.repeats[0] - subject.repeats[1]) ** 2).mean(0)
    assert np.median(diff_var / subject.responses.mean(0)) > 1.1


def test_generators_differ_in_image_statistics() -> None:
    slopes = {name: np.median(sim_images.spectral_slope(fn(np.random.default_rng(7), 120)))
              for name, fn in (("powerlaw", sim_images.powerlaw_edges), ("texture", sim_images.textures),
                               ("photo", sim_images.photo_gratings), ("objects", sim_images.shaded_objects))}
    assert -1.6 < slopes["powerlaw"] < -1.1
    assert slopes["photo"] > slopes["powerlaw"] + 0.1
    assert slopes["texture"] > slopes["photo"] + 0.1
    assert slopes["objects"] < slopes["photo"] - 0.1  # smooth surfaces and a low-pass background


def test_generation_is_deterministic_and_seeded(tmp_path: Path) -> None:
    tiny = SubjectSpec("tiny", "subunit_texture", 60, 24, 5, "report", "v7.3", "istim", target_r=0.3, nb_shape=3.0)
    a, b = generate(tiny), generate(tiny)
    for key in ("images", "rates", "repeats", "unreliable"):
        assert np.array_equal(a[key], b[key]), key
    c = generate(dataclasses.replace(tiny, seed=6))
    assert not np.array_equal(a["images"], c["images"]) and not np.allclose(a["rates"], c["rates"])
    # build_suite keeps a subject written with the same spec, rewrites it when the spec changes
    folder = write_subject(tiny, tmp_path)
    stamp = (folder / "ground_truth.npz").stat().st_mtime_ns
    assert build_suite(tmp_path, [tiny]) == [folder]
    assert (folder / "ground_truth.npz").stat().st_mtime_ns == stamp
    build_suite(tmp_path, [dataclasses.replace(tiny, target_r=0.2)])
    assert (folder / "ground_truth.npz").stat().st_mtime_ns != stamp
    np.testing.assert_array_equal(load_ground_truth(folder)["rates"].shape, (60, 24))


def test_held_out_generator_makes_both_unit_kinds_with_shift_tolerant_higher_order_units() -> None:
    """higher_order_objects: `mix` sets the pooled-energy fraction; rates are finite and positive; a
    higher-order unit keeps most of its response when the image moves by 4 px (it takes the maximum of
    its parts' sum over five nearby positions), more than a rectified Gabor simple cell does."""
    spec = SubjectSpec("ho", "higher_order_objects", 80, 300, 9, "report", "v5", "istim", target_r=0.3, mix=0.3)
    g = generate(spec)
    assert g["rates"].shape == (80, 300) and np.isfinite(g["rates"]).all() and g["rates"].min() > 0
    assert 0.2 < g["cell_type"].mean() < 0.4
    rng = np.random.default_rng(3)
    images = sim_images.shaded_objects(rng, 200)
    region = (34.0, 135.0, 8.0, 30.0)
    shifted = np.roll(images, 4, axis=2)
    rel, lab = sim_neurons.higher_order_population(sim_neurons.half_res(images), np.random.default_rng(1), 200, region, 0.0)
    rel_s, _ = sim_neurons.higher_order_population(sim_neurons.half_res(shifted), np.random.default_rng(1), 200, region, 0.0)
    assert (lab["cell_type"] == 0).all()
    r = [np.corrcoef(rel[:, j], rel_s[:, j])[0, 1] for j in range(200) if rel[:, j].std() > 0 and rel_s[:, j].std() > 0]
    k = 50  # Gabor simple cells of the parts' finer wavelength (8 px), same region
    cy, cx = sim_neurons.rf_centres(np.random.default_rng(2), k, region)
    even, _ = sim_neurons.gabor_filters(cy, cx, np.full(k, 1 / 8), np.full(k, 4.0), np.ones(k),
                                        np.random.default_rng(4).uniform(0, np.pi, k), np.zeros(k))
    lin, lin_s = (np.maximum(sim_neurons.half_res(im).numpy() @ even.T, 0) for im in (images, shifted))
    r_lin = [np.corrcoef(lin[:, j], lin_s[:, j])[0, 1] for j in range(k) if lin[:, j].std() > 0 and lin_s[:, j].std() > 0]
    assert np.median(r) > np.median(r_lin) + 0.1, (np.median(r), np.median(r_lin))


def test_noise_calibration_matches_closed_form() -> None:
    rel = np.random.default_rng(0).gamma(2.0, 0.5, (3000, 50)).astype(np.float32)
    for noise in (sim_neurons.NoiseModel(0.3), sim_neurons.NoiseModel(0.2, gain_sd=0.3, nb_shape=2.0),
                  sim_neurons.NoiseModel(0.4, gauss_sd=1.5)):
        g = sim_neurons.calibrate_gain(rel, noise)
        assert abs(np.median(sim_neurons.expected_repeat_r(rel, noise, g)) - noise.target_r) < 1e-3
        reps = sim_neurons.sample_repeats(rel * np.float32(g), noise, np.random.default_rng(1))
        measured = np.median(sim_neurons.repeat_r(reps))
        assert abs(measured - noise.target_r) < 0.03, (noise, measured)
