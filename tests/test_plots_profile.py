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


def test_charts_read_a_damaged_profile_by_the_tables_rules():
    """The charts read profile.json through `Profile`, as the page's table does: a score of the wrong
    type draws no point, a bad interval leaves the hover without one, a row that is not an object or a
    best index out of range draws nothing, a reference line that is not a number is left out."""
    prof = make_profile()
    prof["rows"][0]["test"]["image_to_neural"]["top1"] = "0.3"
    prof["rows"][1]["test"]["image_to_neural"]["top1_ci"] = [0.1]
    prof["rows"][3]["feve"] = {"median": None}
    prof["rows"].append("garbage")
    prof["best"]["overall"] = 99
    prof["reference"]["ridge"] = {"image_to_neural": "high", "neural_to_image": 0.16}
    fig = plots.profile_chart(prof)
    (tiny,) = _traces(fig, "ds_net_tiny", 1)
    assert list(tiny.x) == [4.0, 8.0, 9.0]
    assert "[" not in tiny.text[0] and "[" in tiny.text[1]
    assert not [t for t in fig.data if t.name == "best layer (highest val MRR)"]
    assert not _traces(fig, "ridge on pixels (test)", 1) and _traces(fig, "ridge on pixels (test)", 2)
    feve = plots.profile_feve_chart(prof)
    (tiny,) = [t for t in feve.data if t.name == "ds_net_tiny"]
    assert len(tiny.y) == 3 and not [t for t in feve.data if t.name == "best layer (highest val MRR)"]


def test_cli_table_marks_the_best_layers_and_prints_a_dash_for_a_missing_score():
    from neuroalign.cli.profile_commands import format_table

    prof = make_profile()
    lines = format_table(prof).splitlines()
    assert lines[3].startswith("ds_net_tiny stage 3 block 4, square") and lines[3].endswith("◀ best")
    assert lines[5].startswith("random_rectified") and lines[5].endswith("◀")  # its model's best
    assert "0.60 / 0.55" in lines[3] and "0.55 / 0.50" in lines[3]
    assert lines[-1] == "test n = 25 (chance top-1 0.040); val n = 20; best = highest val MRR"
    prof["rows"][0]["test"]["image_to_neural"]["top1"] = None
    prof["rows"].append({"model": "efficientnet_lite0", "stage": 7, "block": 1, "label": "effnet deep",
                         "error": "images too small"})
    del prof["split"]["test"]
    lines = format_table(prof).splitlines()
    assert "— / 0.20" in lines[1] and lines[6].startswith("effnet deep") and lines[6].endswith("images too small")
    assert lines[-1].startswith("test n = ?;")
