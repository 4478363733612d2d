"""Imports refuse what cannot be trained (too small or too few images, constant responses) with the
reason in one line, through the store and the CLI, and write nothing; plain loading still works."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import savemat

from neuroalign.cli import main
from neuroalign.data import SubjectStore, load_pair
from neuroalign.data.trainable import MIN_IMAGES, min_image_side


def _pair(tmp_path, n=12, h=34, w=40, k=6, responses=None, **extra):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    savemat(src / "images.mat", {"images": rng.integers(0, 256, (n, h, w), dtype=np.uint8)})
    resp = rng.random((n, k)) if responses is None else responses
    savemat(src / "responses.mat", {"responses": resp, **extra})
    return src / "images.mat", src / "responses.mat"


UNTRAINABLE = {
    "2 x 2 px images": (dict(h=2, w=2), ["images are 2 x 2 px", "at least 32 x 32"]),
    "31 px high": (dict(h=31, w=200), ["images are 31 x 200 px", "at least 32 x 32"]),
    "9 images": (dict(n=9), ["9 image(s)", "at least 10"]),
    "constant responses": (dict(responses=np.full((12, 6), 3.0)), ["constant across all 12 images",
                                                                  "every one of the 6 neurons"]),
    "9 of 12 images shown (istim)": (dict(n=12, w=136, responses=np.random.default_rng(1).random((18, 6)),
                                          istim=np.repeat(np.arange(1, 10), 2).astype(np.float64)),
                                     ["9 image(s)", "at least 10"]),
}


def test_the_minimum_is_the_backbone_constant():
    from neuroalign.models.dsnet import MIN_INPUT

    assert min_image_side() == MIN_INPUT == 32 and MIN_IMAGES == 10


@pytest.mark.parametrize("case", list(UNTRAINABLE))
def test_untrainable_subjects_are_refused_at_import(tmp_path, case, capsys):
    kwargs, words = UNTRAINABLE[case]
    images, responses = _pair(tmp_path, **kwargs)
    root = tmp_path / "root"
    store = SubjectStore(root)
    for call in (lambda: store.validate(images, responses), lambda: store.import_subject("x", images, responses)):
        with pytest.raises(ValueError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith("images.mat + responses.mat: "), msg
        for word in words:
            assert word in msg, (word, msg)
    assert not root.exists() or list(root.iterdir()) == []  # nothing written
    for cmd in (["validate"], ["import", "--name", "x"]):
        assert main([*cmd, "--data-dir", str(root), "--images", str(images), "--responses", str(responses)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words[0] in err, err
    assert not root.exists() or list(root.iterdir()) == []
    assert load_pair(images, responses).n_images >= 9  # loading (existing folders) is not refused


@pytest.mark.parametrize("kwargs", [dict(h=32, w=32), dict(n=10),
                                    dict(responses=np.column_stack([np.full(12, 3.0), np.arange(12.0)]))],
                         ids=["32 x 32 px", "10 images", "one neuron varies"])
def test_the_limits_themselves_are_accepted(tmp_path, kwargs):
    images, responses = _pair(tmp_path, **kwargs)
    info = SubjectStore(tmp_path / "root").import_subject("ok", images, responses)
    assert info.n_images >= 10


def test_small_images_are_refused_before_responses_are_read(tmp_path, monkeypatch):
    import neuroalign.data.matio as matio

    images, responses = _pair(tmp_path, h=2, w=2)
    read = []
    real = matio.read_v5
    monkeypatch.setattr(matio, "read_v5", lambda path, info, names: read.append(list(names)) or real(path, info, names))
    with pytest.raises(ValueError, match="2 x 2 px"):
        SubjectStore(tmp_path / "root").validate(images, responses)
    assert read == []  # decided from the headers: no variable was read
