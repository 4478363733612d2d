"""load_subject/load_pair: every stored layout and encoding gives the same Subject; bad files are explained."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import savemat

from neuroalign.data import load_ground_truth, load_pair, load_subject
from neuroalign.data.matio import write_mat_v73
from neuroalign.data.layout import decide_layout
from neuroalign.data.subject import scale_images

N, H, W, K = 12, 68, 270, 7


@pytest.fixture
def base():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, H, W)).astype(np.uint8)  # N x H x W
    responses = rng.random((N, K)).astype(np.float32)
    return images, responses


def _write(path, variables, fmt):
    (savemat if fmt == "v5" else write_mat_v73)(path, variables)


LAYOUTS = {
    "HWN": lambda x: np.moveaxis(x, 0, 2),
    "NHW": lambda x: x,
    "N1HW": lambda x: x[:, None],
    "HW1N": lambda x: np.moveaxis(x, 0, 2)[:, :, None, :],
    "NHW1": lambda x: x[..., None],
}


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("var", ["images", "imgs"])
def test_layouts_and_formats_give_same_subject(tmp_path, base, fmt, layout, var):
    images, responses = base
    _write(tmp_path / "images.mat", {var: LAYOUTS[layout](images)}, fmt)
    _write(tmp_path / "responses.mat", {"responses": responses}, fmt)
    s = load_pair(tmp_path / "images.mat", tmp_path / "responses.mat", name="x")
    assert s.images.shape == (N, 1, H, W) and s.images.dtype == np.float32
    np.testing.assert_allclose(s.images[:, 0], images / 255.0, atol=1e-6)
    np.testing.assert_array_equal(s.responses, responses)
    assert s.meta["format"] == fmt and s.meta["image_layout"] == layout and s.meta["images_variable"] == var
    assert s.meta["images_dtype"] == "uint8" and s.meta["has_repeats"] is False and s.repeats is None


@pytest.mark.parametrize("dtype,scale,expect", [
    ("uint8", 255, "uint8 / 255"),
    ("uint16", 65535, "uint16 / 65535"),
    ("float32", 1.0, "within [0, 1]"),
    ("float64", 255.0, "within [0, 255]"),
])
def test_intensity_scaling_keeps_relative_intensities(dtype, scale, expect):
    x = np.array([[0.0, 0.25], [0.5, 1.0]])
    raw = (x * scale).astype(dtype)
    out, how = scale_images(raw)
    assert out.dtype == np.float32 and expect in how
    np.testing.assert_allclose(out, raw.astype(np.float64) / scale, atol=1e-6)


def test_other_float_ranges_are_min_max_scaled_globally():
    raw = np.array([[-2.0, 0.0], [2.0, 6.0]])
    out, how = scale_images(raw)
    np.testing.assert_allclose(out, (raw + 2) / 8)
    assert "min-max" in how
    # a dark image stays darker than a bright one (one scale for the whole array, not per image)
    low_uint8, _ = scale_images(np.array([[10, 20]], dtype=np.uint8))
    assert low_uint8.max() < 0.1


def test_neurons_by_trials_is_transposed(tmp_path, base):
    images, responses = base
    savemat(tmp_path / "i.mat", {"images": images})
    savemat(tmp_path / "r.mat", {"responses": responses.T})
    s = load_pair(tmp_path / "i.mat", tmp_path / "r.mat")
    assert s.meta["response_orientation"] == "neurons x trials"
    np.testing.assert_array_equal(s.responses, responses)


def test_square_responses_prefer_trials_by_neurons_and_say_so(tmp_path, base):
    images, _ = base
    sq = np.random.default_rng(1).random((N, N))
    savemat(tmp_path / "i.mat", {"images": images})
    savemat(tmp_path / "r.mat", {"responses": sq})
    s = load_pair(tmp_path / "i.mat", tmp_path / "r.mat")
    assert s.meta["response_orientation"] == "trials x neurons"
    assert any("assumed trials x neurons" in n for n in s.meta["notes"])
    np.testing.assert_allclose(s.responses, sq, rtol=1e-6)


def test_ambiguous_rank3_uses_the_68x270_aspect():
    # 68 x 270 x 68 with 68 trials: both H x W x N and N x H x W match; HWN gives 68 x 270 images
    d = decide_layout((68, 270, 68), (68, 5))
    assert d.image_layout == "HWN" and d.image_hw == (68, 270) and d.notes
    # 270 x 68 x 270 ... N x H x W = 270 x (68 x 270) wins over H x W x N = (270 x 68) x 270
    d = decide_layout((270, 68, 270), (270, 5))
    assert d.image_layout == "NHW" and d.image_hw == (68, 270)


def test_istim_trials_are_averaged_per_image_and_gray_screens_dropped(tmp_path, base):
    images, _ = base
    rng = np.random.default_rng(2)
    ids = np.concatenate([rng.permutation(N) + 1, rng.permutation(N) + 1, [N + 1, N + 1, N + 1]])
    trials = rng.random((ids.size, K)).astype(np.float32)
    savemat(tmp_path / "i.mat", {"imgs": np.moveaxis(images, 0, 2)})
    savemat(tmp_path / "r.mat", {"responses": trials.T, "istim": ids[:, None].astype(np.float64)})
    s = load_pair(tmp_path / "i.mat", tmp_path / "r.mat")
    assert s.responses.shape == (N, K) and s.repeats.shape == (2, N, K)
    for img in range(N):
        rows = np.flatnonzero(ids == img + 1)
        np.testing.assert_allclose(s.responses[img], trials[rows].mean(axis=0), rtol=1e-6)
        np.testing.assert_array_equal(s.repeats[0, img], trials[rows[0]])
        np.testing.assert_array_equal(s.repeats[1, img], trials[rows[1]])
    assert s.meta["n_gray_trials_dropped"] == 3 and s.meta["repeats_source"] == "istim"
    assert s.meta["response_orientation"] == "neurons x trials"
    # issue 23 item 12: the check's summary says what istim did with the trials
    assert f"istim: {ids.size} trials (3 gray/blank dropped) → {N} images × 2 presentations" in " ".join(s.meta["notes"])


def test_istim_with_single_presentations_has_no_repeats_and_drops_unshown(tmp_path, base):
    images, _ = base
    ids = np.array([1, 2, 3, 5, 2, 3])  # image 4 and 6..12 never shown, image 1 and 5 once
    trials = np.arange(ids.size * K, dtype=np.float64).reshape(ids.size, K)
    savemat(tmp_path / "i.mat", {"images": images})
    savemat(tmp_path / "r.mat", {"responses": trials, "istim": ids})
    s = load_pair(tmp_path / "i.mat", tmp_path / "r.mat")
    np.testing.assert_array_equal(s.image_ids, [0, 1, 2, 4])
    assert s.repeats is None and s.n_images == 4 and s.meta["n_images_unshown"] == N - 4
    assert "istim: 6 trials → 4 images × 1–2 presentations" in " ".join(s.meta["notes"])
    np.testing.assert_allclose(s.images[3, 0], images[4] / 255.0, atol=1e-6)


def test_responses_repeats_variable(tmp_path, base):
    images, _ = base
    rep = np.random.default_rng(3).random((2, N, K)).astype(np.float32)
    savemat(tmp_path / "i.mat", {"images": images})
    write_mat_v73(tmp_path / "r.mat", {"responses": rep.mean(0), "responses_repeats": rep})
    s = load_pair(tmp_path / "i.mat", tmp_path / "r.mat")
    np.testing.assert_array_equal(s.repeats, rep)
    assert s.meta["format"] == "images v5, responses v7.3" and s.meta["repeats_source"] == "responses_repeats"


def test_subject_folder_in_reference_layout(tiny_subject_root):
    s = load_subject(tiny_subject_root / "tiny")
    assert s.name == "tiny" and s.images.shape == (60, 1, 68, 270) and s.responses.shape == (60, 40)
    assert s.repeats.shape == (2, 60, 40) and s.meta["simulated"] is False
    assert load_ground_truth(tiny_subject_root / "tiny") is None
    h = s.data_hash
    assert len(h) == 64 and h == load_subject(tiny_subject_root / "tiny").data_hash
    s2 = load_subject(tiny_subject_root / "tiny")
    s2.responses[0, 0] += 1
    s2.__dict__.pop("data_hash", None)
    assert s2.data_hash != h


def test_missing_subject_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected Data/images.mat and Data/responses.mat"):
        load_subject(tmp_path / "empty")


@pytest.mark.parametrize("case,pattern", [
    ("no_images_var", r"images\.mat: no image variable \('images' or 'imgs'\); found pictures \(12, 68, 270\) uint8"),
    ("no_responses_var", r"responses\.mat: no variable 'responses'; found resp \(12, 7\) float32"),
    ("count_mismatch", r"responses\.mat: responses have shape \(11, 7\) but images\.mat holds images of shape "
                       r"\(12, 68, 270\); expected one responses axis to equal the image count \(12, reading N x H x W "
                       r"images of 68 x 270; or 270, reading H x W x N images of 12 x 68\)"),
    ("nan", r"responses\.mat: variable 'responses' \(12, 7\) float32 contains 1 NaN and 1 Inf"),
    ("rank_images", r"images\.mat: images have shape \(12, 18360\) \(rank 2\); expected grayscale H x W x N"),
    ("rank_responses", r"responses\.mat: responses have shape \(12, 7, 1, 2\) \(rank 4\); expected a 2-D"),
    ("non_numeric", r"responses\.mat: variable 'responses' is .*expected a numeric array"),
    ("empty", r"responses\.mat: variable 'responses' is empty"),
    ("not_mat", r"responses\.mat: not a MATLAB \.mat file"),
    ("bad_istim", r"responses\.mat: istim must hold 1-based integer image ids"),
])
def test_bad_files_are_explained(tmp_path, base, case, pattern):
    images, responses = base
    img_vars, resp_vars = {"images": images}, {"responses": responses}
    if case == "no_images_var":
        img_vars = {"pictures": images}
    elif case == "no_responses_var":
        resp_vars = {"resp": responses}
    elif case == "count_mismatch":
        resp_vars = {"responses": responses[:11]}
    elif case == "nan":
        bad = responses.copy()
        bad[0, 0], bad[1, 1] = np.nan, np.inf
        resp_vars = {"responses": bad}
    elif case == "rank_images":
        img_vars = {"images": images.reshape(N, -1)}
    elif case == "rank_responses":
        resp_vars = {"responses": np.zeros((N, K, 1, 2))}
    elif case == "non_numeric":
        resp_vars = {"responses": np.array(["a", "b"], dtype=object)}
    elif case == "empty":
        resp_vars = {"responses": np.zeros((0, 0))}
    elif case == "bad_istim":
        resp_vars = {"responses": responses, "istim": np.full(N, 0.5)}
    savemat(tmp_path / "images.mat", img_vars)
    if case == "not_mat":
        (tmp_path / "responses.mat").write_text("neuron,trial,value\n" * 50)
    else:
        savemat(tmp_path / "responses.mat", resp_vars)
    with pytest.raises(ValueError, match=pattern):
        load_pair(tmp_path / "images.mat", tmp_path / "responses.mat")


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_stringer_recording_struct(tmp_path, base, fmt):
    import hdf5storage

    images, _ = base
    ids = np.concatenate([np.arange(1, N + 1), np.arange(N, 0, -1), [N + 1]]).astype(np.float64)
    trials = np.random.default_rng(4).random((ids.size, K))
    stim = {"resp": trials, "istim": ids[:, None], "spont": np.zeros((4, K))}
    savemat(tmp_path / "i.mat", {"imgs": np.moveaxis(images, 0, 2)})
    if fmt == "v5":
        savemat(tmp_path / "r.mat", {"stim": stim, "med": np.zeros((K, 3))})
    else:
        hdf5storage.savemat(str(tmp_path / "r.mat"), {"stim": stim}, format="7.3", matlab_compatible=True)
    s = load_pair(tmp_path / "i.mat", tmp_path / "r.mat")
    assert s.responses.shape == (N, K) and s.repeats.shape == (2, N, K)
    np.testing.assert_allclose(s.responses[0], (trials[0] + trials[2 * N - 1]) / 2, rtol=1e-6)
    assert s.meta["n_gray_trials_dropped"] == 1


def test_count_mismatch_names_what_each_candidate_count_means():
    """A 68 x 270 x 300 stack against 250 trials: the message says which reading gives which count, so 68
    (the image height under the other reading) is not offered as a bare image count."""
    from neuroalign.data.layout import decide_layout

    with pytest.raises(ValueError) as err:
        decide_layout((68, 270, 300), (250, 40))
    msg = str(err.value)
    assert "300, reading H x W x N images of 68 x 270" in msg and "68, reading N x H x W images of 270 x 300" in msg
    assert "(68 or 300)" not in msg
