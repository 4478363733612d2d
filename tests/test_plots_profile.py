"""The alignment-profile figures (neuroalign.plots.profile) on a made-up profile: one line per model and
panel at the blocks' places, the reference lines at their values, the best layer marked, val/test."""

import pytest

from neuroalign import plots
from neuroalign.plots.profile import has_feve, layer_positions
from profile_support import make_profile


def _traces(fig, name, panel):
    axis = "x" if panel == 1 else "x2"
    return [t for t in fig.data if t.name == name and (t.xaxis or "x") == axis]


def test_layer_positions_follow_the_registry_depths():
    rows = make_profile()["rows"]
    # ds_net_tiny depths (2, 2, 4, 1); random_rectified stage 1 of its three one-block stages
    assert layer_positions(rows) == [2.0, 4.0, 8.0, 9.0, 1.0]
    assert layer_positions(rows, "relative") == pytest.approx([2 / 9, 4 / 9, 8 / 9, 1.0, 1 / 3])
    own = [{"model": "pkg.mod:factory", "stage": 1, "block": 1}, {"model": "pkg.mod:factory", "stage": 2, "block": 1}]
    assert layer_positions(own) == [1.0, 2.0] and layer_positions(own, "relative") == [0.5, 1.0]
    with pytest.raises(ValueError, match="x must be"):
        layer_positions(rows, "depth")


@pytest.mark.parametrize("split", ["test", "val"])
def test_profile_chart_lines_references_and_best(split):
    prof = make_profile()
    fig = plots.profile_chart(prof, split=split)
    for panel, direction in ((1, "image_to_neural"), (2, "neural_to_image")):
        (tiny,) = _traces(fig, "ds_net_tiny", panel)
        assert list(tiny.x) == [2.0, 4.0, 8.0, 9.0]
        assert list(tiny.y) == [r[split][direction]["top1"] for r in prof["rows"][:4]]
        (bank,) = _traces(fig, "random_rectified", panel)
        assert list(bank.x) == [1.0]
        (best,) = _traces(fig, "best layer (highest val MRR)", panel)
        assert list(best.x) == [8.0] and list(best.y) == [prof["rows"][2][split][direction]["top1"]]
        assert best.marker.symbol == "star"
        (own_best,) = _traces(fig, "best layer of its model", panel)
        assert list(own_best.x) == [1.0]  # the bank's row; ds_net_tiny's best is the overall star
        for key, name in (("ridge", "ridge on pixels (test)"), ("ridge_random", "ridge on random features (test)"),
                          ("repeat", "repeat decoder (test)"), ("oracle", "oracle (noiseless rates) (test)")):
            (line,) = _traces(fig, name, panel)
            assert set(line.y) == {prof["reference"][key][direction]}
        (chance,) = _traces(fig, "chance", panel)
        assert set(chance.y) == {1 / prof["split"][split]}
    assert sum(bool(t.showlegend) for t in fig.data if t.name == "ds_net_tiny") == 1  # one legend entry per model
    assert ("validation" if split == "val" else "test") in fig.layout.title.text


def test_profile_chart_without_references_or_with_failed_rows():
    prof = make_profile()
    prof["reference"] = {}
    prof["rows"].append({"model": "efficientnet_lite0", "stage": 7, "block": 1, "label": "effnet deep",
                         "error": "images too small"})
    fig = plots.profile_chart(prof, x="relative")
    assert not [t for t in fig.data if "ridge" in (t.name or "")]
    assert not [t for t in fig.data if t.name == "efficientnet_lite0"]  # a row without scores draws nothing
    assert fig.layout.xaxis.range == (0.0, 1.05)
    with pytest.raises(ValueError, match="split"):
        plots.profile_chart(prof, split="train")


def test_feve_chart_median_quartiles_and_best():
    prof = make_profile()
    assert has_feve(prof) and not has_feve(make_profile(feve=False))
    fig = plots.profile_feve_chart(prof)
    (tiny,) = [t for t in fig.data if t.name == "ds_net_tiny"]
    feve = [r["feve"] for r in prof["rows"][:4]]
    assert list(tiny.y) == [f["median"] for f in feve]
    assert list(tiny.error_y.array) == pytest.approx([f["q75"] - f["median"] for f in feve])
    assert list(tiny.error_y.arrayminus) == pytest.approx([f["median"] - f["q25"] for f in feve])
    (best,) = [t for t in fig.data if t.name == "best layer (highest val MRR)"]
    assert list(best.y) == [feve[2]["median"]] and list(best.x) == list(tiny.x)[2:3]
    (bank,) = [t for t in fig.data if t.name == "random_rectified"]
    assert list(tiny.x) == pytest.approx([2 - 0.04, 4 - 0.04, 8 - 0.04, 9 - 0.04])  # side by side at a shared x
    assert list(bank.x) == pytest.approx([1 + 0.04])
