"""Figure builders and the small summaries they draw (synthetic arrays, no streamlit)."""

import numpy as np
import pytest

from neuroalign import plots
from neuroalign.evaluation.retrieval import retrieval_metrics


def test_ema_smooth_debiased_and_skips_nan():
    assert np.allclose(plots.ema_smooth([3.0, 3.0, 3.0], 0.9), 3.0)  # debiasing: no pull towards 0
    out = plots.ema_smooth([1.0, 0.0, np.nan, 0.0], 0.5)
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx(0.25 / 0.75)
    assert np.isnan(out[2])
    assert out[3] == pytest.approx(0.125 / 0.875)
    assert np.array_equal(plots.ema_smooth([1.0, 2.0], 0.0), [1.0, 2.0])
    with pytest.raises(ValueError, match="smoothing"):
        plots.ema_smooth([1.0], 1.0)


def test_true_match_ranks_match_brute_force_and_package_metrics():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(9, 9))
    s[2, 2] = 5.0  # query 2 is retrieved first in both directions
    ranks = plots.true_match_ranks(s)
    for i in range(9):
        assert ranks["image_to_neural"][i] == 1 + sum(s[i, j] > s[i, i] for j in range(9))
        assert ranks["neural_to_image"][i] == 1 + sum(s[j, i] > s[i, i] for j in range(9))
    assert ranks["image_to_neural"][2] == 1 and ranks["neural_to_image"][2] == 1
    m = retrieval_metrics(s)
    assert ranks["image_to_neural"].mean() == pytest.approx(m["image_to_neural"]["mean_rank"])
    assert ranks["neural_to_image"].mean() == pytest.approx(m["neural_to_image"]["mean_rank"])
    with pytest.raises(ValueError, match="square"):
        plots.true_match_ranks(np.zeros((2, 3)))


def test_top_k_both_directions():
    s = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.8], [0.7, 0.0, 0.4]])
    idx, scores = plots.top_k(s, 0, 2, "image_to_neural")
    assert idx.tolist() == [1, 2] and scores.tolist() == [0.9, 0.5]
    idx, _ = plots.top_k(s, 0, 10, "neural_to_image")  # column 0, k clipped to n
    assert idx.tolist() == [2, 1, 0]
    with pytest.raises(ValueError, match="direction"):
        plots.top_k(s, 0, 1, "sideways")


def test_neuron_reliability():
    rng = np.random.default_rng(1)
    signal = rng.normal(size=(200, 3))
    reps = np.stack([signal, signal])
    reps[:, :, 1] = rng.normal(size=(2, 200))  # pure noise neuron
    reps[:, :, 2] = 1.0  # constant neuron
    rel = plots.neuron_reliability(reps)
    assert rel[0] == pytest.approx(1.0)
    assert abs(rel[1]) < 0.3
    assert np.isnan(rel[2])
    rel32 = plots.neuron_reliability(reps.astype(np.float32))  # float32 recordings stay float32 inside
    assert np.allclose(rel32[:2], rel[:2], atol=1e-5)
    with pytest.raises(ValueError, match="R>=2"):
        plots.neuron_reliability(reps[:1])


def test_raster_order_caps_and_sorts_by_preferred_image():
    rng = np.random.default_rng(2)
    x = rng.random((500, 50))
    img, neu = plots.raster_order(x, max_images=100, max_neurons=20)
    assert len(img) == 100 and len(neu) == 20 and len(set(neu)) == 20
    sub = x[np.ix_(img, neu)]
    assert np.all(np.diff(sub.mean(axis=1)) <= 1e-12)  # images: population mean descending
    assert np.all(np.diff(np.argmax(sub, axis=0)) >= 0)  # neurons: preferred image ascending


def _history():
    h = []
    for step in range(1, 21):
        h.append({"event": "step", "epoch": step // 10, "step": step, "train_loss": 1.0 / step,
                  "lr_image": 1e-3, "lr_neural": 1e-4})
        if step % 10 == 0:
            h.append({"event": "epoch", "epoch": step // 10, "step": step, "train_loss": 0.5, "val_loss": 2.0 / step})
    return h


def test_loss_curves_train_from_steps_val_from_epochs():
    fig = plots.loss_curves({"m1": _history()}, smoothing=0.0, log_y=True)
    names = [t.name for t in fig.data]
    assert names == ["m1 train", "m1 val"]
    train, val = fig.data
    assert len(train.x) == 20 and train.y[0] == pytest.approx(1.0)  # epoch summaries not mixed in
    assert list(train.x) == pytest.approx([s / 10 for s in range(1, 21)])  # steps at their fractional epoch
    assert list(val.x) == [1, 2] and list(val.y) == pytest.approx([0.2, 0.1])
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.type == "log"
    assert fig.layout.xaxis2.title.text == "epoch"
    smoothed = plots.loss_curves({"m1": _history(), "m2": _history()}, smoothing=0.8)
    assert len(smoothed.data) == 6  # raw + smoothed train and val per history
    assert smoothed.data[1].y[-1] > smoothed.data[0].y[-1]  # smoothing lags a falling curve


def test_lr_curves_log_axis_two_sides():
    fig = plots.lr_curves({"a": _history()})
    assert [t.name for t in fig.data] == ["a image lr", "a neural lr"]
    assert fig.layout.yaxis.type == "log"


def test_loss_chart_reads_in_epochs_with_the_start_and_separate_scales():
    """Issue 23 item 9: train and val loss on their own axes (they differ ~30x), epoch 0 (the start the
    run may restore) plotted, a 3-epoch run drawn with markers, the x axis in epochs; the lr chart of a
    constant rate shared by both sides is one line with readable ticks and room around it."""
    h = [{"event": "start", "epoch": 0, "step": 0, "val_loss": 1.9}]
    for epoch in (1, 2, 3):
        h.append({"event": "step", "epoch": epoch, "step": 2 * epoch, "train_loss": 0.05 / epoch,
                  "lr_image": 1e-4, "lr_neural": 1e-4})
        h.append({"event": "epoch", "epoch": epoch, "step": 2 * epoch, "train_loss": 0.05 / epoch,
                  "val_loss": 1.7 - 0.1 * epoch})
    fig = plots.loss_curves({"m1": h})
    train, val = fig.data
    assert train.yaxis == "y" and val.yaxis == "y2"  # two panels, each with its own scale
    assert list(val.x) == [0, 1, 2, 3] and val.y[0] == pytest.approx(1.9)  # epoch 0 = the start
    assert list(val.marker.symbol)[0] == "diamond"
    assert "markers" in train.mode and list(train.x) == [1, 2, 3]
    assert fig.layout.xaxis2.title.text == "epoch" and fig.layout.xaxis.dtick == 1
    lr = plots.lr_curves({"m1": h})
    assert [t.name for t in lr.data] == ["m1 image = neural lr"] and "markers" in lr.data[0].mode
    assert lr.layout.yaxis.exponentformat == "e" and lr.layout.yaxis.range == pytest.approx((-4.5, -3.5))


def test_feature_map_panel_difference_and_overlay():
    rng = np.random.default_rng(3)
    stim = rng.random((1, 68, 270))
    a, b = rng.random((16, 64)), 2 * rng.random((16, 64))
    fig = plots.feature_map_panel(stim, a, b)
    assert len(fig.data) == 4
    assert [tr.xaxis for tr in fig.data] == ["x", "x2", "x3", "x4"]  # one row, left to right
    assert np.allclose(np.asarray(fig.data[3].z), a - b)
    assert np.asarray(fig.data[0].z).shape == (68, 270)
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    for tr in fig.data[1:3]:  # both maps on the joint range of the two
        assert (tr.zmin, tr.zmax) == pytest.approx((lo, hi))
    assert fig.data[3].zmin == -fig.data[3].zmax
    fixed = plots.feature_map_panel(stim, a, b, zrange=(0.0, 1.0))
    assert (fixed.data[1].zmin, fixed.data[2].zmax) == (0.0, 1.0)
    over = plots.feature_map_panel(stim, a, b, overlay=True)
    assert len(over.data) == 6 and np.asarray(over.data[1].z).shape == (16, 64)
    with pytest.raises(ValueError, match="one shape"):
        plots.feature_map_panel(stim, a, b[:8])


def _all_figures():
    rng = np.random.default_rng(4)
    s = rng.normal(size=(12, 12))
    maps = rng.random((3, 16, 64))
    return {
        "raster": plots.response_raster(rng.random((30, 10)), np.arange(30), np.arange(10)),
        "neuron_stats": plots.neuron_stats(rng.random(10) + 0.1, rng.random(10) + 0.1, rng.random(10)),
        "similarity": plots.similarity_heatmap(s, list(range(100, 112))),
        "ranks": plots.rank_histogram(plots.true_match_ranks(s)),
        "panel": plots.feature_map_panel(rng.random((68, 270)), maps[0], maps[1], overlay=True),
        "mean_maps": plots.mean_maps(maps, maps),
        "hist": plots.histogram(rng.random(20), "t", "x", vline=0.5),
        "top1_bars": plots.top1_bars({"model": {"image_to_neural": (0.4, 0.3, 0.5)}}, chance=0.1),
        "loss": plots.loss_curves({"a": _history()}, smoothing=0.5),
        "lr": plots.lr_curves({"a": _history()}),
        "ranked": plots.importance_ranked(rng.random(300)),
        "importance": plots.importance_scatter(rng.random(10), rng.random(10), "reliability", "t",
                                               color=rng.random(10), color_title="own"),
    }


def test_no_figure_uses_colours_that_streamlits_theme_replaces():
    """Issue 12 item 3: #000001-#000040 in a figure's JSON are repainted by Streamlit's theme (Magma and
    Inferno start at #000004); every scale is sent as explicit stops with the intended colours."""
    import plotly.colors

    assert plots.THEME_PLACEHOLDER.fullmatch("#000004") and plots.THEME_PLACEHOLDER.fullmatch("#000040")
    assert not plots.THEME_PLACEHOLDER.fullmatch("#000000") and not plots.THEME_PLACEHOLDER.fullmatch("#000041")
    for name, fig in _all_figures().items():
        assert plots.THEME_PLACEHOLDER.findall(fig.to_json()) == [], name
    expected = {"raster": plots.RASTER_COLORSCALE, "similarity": plots.MAP_COLORSCALE}
    figs = _all_figures()
    for name, scale in expected.items():
        assert [list(x) for x in figs[name].data[0].colorscale] == scale, name
    assert [list(x) for x in figs["neuron_stats"].data[0].marker.colorscale] == plots.MAP_COLORSCALE
    assert [list(x) for x in figs["importance"].data[0].marker.colorscale] == plots.MAP_COLORSCALE
    panel = figs["panel"]
    assert [list(x) for x in panel.data[0].colorscale] == plots.GRAY_COLORSCALE
    assert [list(x) for x in panel.data[2].colorscale] == plots.MAP_COLORSCALE
    assert [list(x) for x in panel.data[-1].colorscale] == plots.DIFF_COLORSCALE
    to_rgb = lambda c: plotly.colors.unlabel_rgb(plotly.colors.convert_colors_to_same_type(c, "rgb")[0][0])  # noqa: E731
    for scale, name in ((plots.RASTER_COLORSCALE, "Magma"), (plots.MAP_COLORSCALE, "Viridis")):
        assert [to_rgb(c) for _, c in scale] == [to_rgb(c) for _, c in plotly.colors.get_colorscale(name)]
    assert plots.RASTER_COLORSCALE[0] == [0.0, "rgb(0, 0, 4)"]  # Magma's darkest, not a placeholder


def test_similarity_rank_histogram_mean_maps_bars():
    s = np.eye(5) + 0.01
    fig = plots.similarity_heatmap(s, [10, 11, 12, 13, 14])
    assert np.allclose(np.asarray(fig.data[0].z), s) and list(fig.data[0].x) == ["10", "11", "12", "13", "14"]
    hist = plots.rank_histogram(plots.true_match_ranks(s))
    assert len(hist.data) == 3 and len(hist.data[0].x) == 5
    assert hist.data[2].name.startswith("chance") and np.allclose(hist.data[2].y, 1.0)  # 5 ranks, 5 queries
    wide = plots.rank_histogram(plots.true_match_ranks(np.random.default_rng(0).normal(size=(200, 200))))
    chance = np.asarray(wide.data[2].y)
    bin_size = wide.data[0].xbins.size
    assert np.allclose(chance, 200 * bin_size / 200)  # uniform ranks: queries per bin = bin width
    heat = plots.similarity_heatmap(s, [10, 11, 12, 13, 14])
    assert heat.data[1].name == "true pairs" and list(heat.data[1].x) == list(heat.data[1].y) == list(heat.data[0].x)
    assert list(heat.layout.xaxis.tickvals) == ["10", "11", "12", "13", "14"]
    bars = plots.top1_bars({"model": {"image_to_neural": (0.5, 0.4, 0.7), "neural_to_image": (0.3, None, None)},
                            "ridge": {"image_to_neural": (0.2, 0.1, 0.3)}}, chance=0.01)
    assert list(bars.data[0].y) == ["model", "ridge"] and bars.data[0].orientation == "h"  # names stay readable
    assert list(bars.data[0].x) == [0.5, 0.2] and list(bars.data[0].error_x.array) == pytest.approx([0.2, 0.1])
    assert list(bars.data[0].error_x.arrayminus) == pytest.approx([0.1, 0.1])
    assert bars.data[1].x[0] == 0.3 and np.isnan(bars.data[1].x[1])
    maps = np.stack([np.zeros((16, 64)), np.ones((16, 64))])
    mm = plots.mean_maps(maps, 2 * maps)
    assert np.allclose(np.asarray(mm.data[0].z), 0.5) and np.allclose(np.asarray(mm.data[1].z), 1.0)
    h = plots.histogram(np.array([0.1, np.nan, 0.3]), "t", "x", vline=0.2)
    assert list(h.data[0].x) == [0.1, 0.3]


def test_display_image_and_frame():
    x = np.linspace(0, 1, 68 * 270).reshape(1, 68, 270)
    img = plots.as_display_image(x)
    assert img.dtype == np.uint8 and img.shape == (68, 270) and img.min() == 0 and img.max() == 255
    other = plots.as_display_image(np.full((4, 4), 7.0))  # constant, outside [0, 1]: black, no NaN
    assert other.max() == 0
    with pytest.raises(ValueError, match="grayscale"):
        plots.as_display_image(np.zeros((2, 4, 4)))
    f = plots.framed(img, color=(1, 2, 3), width=2)
    assert f.shape == (68, 270, 3)
    assert tuple(f[0, 100]) == (1, 2, 3) and tuple(f[30, -1]) == (1, 2, 3)
    assert tuple(f[30, 100]) == (img[30, 100],) * 3


def test_importance_figures_rank_and_drop_what_cannot_be_drawn():
    share = np.array([0.1, 0.5, 0.0, 0.4])
    fig = plots.importance_ranked(share, neuron_ids=np.array([10, 11, 12, 13]))
    bars, cumulative = fig.data
    assert list(bars.x) == [1, 2, 3, 4] and list(bars.y[:3]) == [0.5, 0.4, 0.1] and np.isnan(bars.y[3])  # log: no 0
    assert list(bars.text) == ["neuron 11", "neuron 13", "neuron 10", "neuron 12"] and bars.textposition == "none"
    assert np.allclose(cumulative.y, [0.5, 0.9, 1.0, 1.0]) and fig.layout.yaxis.type == "log"
    signed = plots.importance_ranked(np.array([0.7, -0.2, 0.5]), log_y=False, title="by net")
    assert list(signed.data[0].y) == [0.7, 0.5, -0.2] and signed.layout.yaxis.type == "linear"
    assert signed.layout.title.text == "by net"
    many = plots.importance_ranked(np.random.default_rng(0).random(30_000))
    assert many.data[0].type == "scattergl" and len(many.data[0].x) <= 20_000  # subsampled for the browser
    quality = np.array([0.9, np.nan, 0.5, -0.1])
    sc = plots.importance_scatter(share, quality, "reliability", "t")
    assert list(sc.data[0].x) == [0.9, -0.1] and list(sc.data[0].text) == ["neuron 0", "neuron 3"]  # no NaN, no 0
    sc = plots.importance_scatter(share, quality, "snr", "t", log_x=True, log_y=False)
    assert list(sc.data[0].x) == [0.9, 0.5] and sc.layout.xaxis.type == "log"


def test_retrieval_figures_keep_the_diagonal_and_labels_clear():
    """Issue 23 item 10: the true-pair marks never cover the diagonal (frames for a small test set, two
    lines beside it for a large one), the matrix is not forced square (it shrank to ~110 px at 1,024 px),
    the chance line is named in the legend (its label sat on the model's bar), and chance's top-1
    interval is a number, not None."""
    from neuroalign.ui import results_view

    small = plots.similarity_heatmap(np.eye(6), list(range(6)))
    assert small.data[1].mode == "markers" and small.data[1].marker.symbol == "square-open"
    assert small.layout.yaxis.scaleanchor is None
    big = plots.similarity_heatmap(np.eye(100), list(range(100)))
    assert big.data[1].visible == "legendonly" and len(big.layout.shapes) == 2
    for shape in big.layout.shapes:  # parallel to the diagonal, off it
        assert abs((shape.x1 - shape.y1) - (shape.x0 - shape.y0)) < 1e-9 and abs(shape.x0 - shape.y0) >= 1.5
    assert len(big.layout.xaxis.tickvals) <= 8
    bars = plots.top1_bars({"model": {"image_to_neural": (0.4, 0.3, 0.5)}}, chance=0.1)
    assert not bars.layout.annotations and bars.data[-1].name == "chance (0.100)"
    results = {"test": {"n": 40, "chance_top1": 0.025, "image_to_neural": {"top1": 0.5, "mrr": 0.6}}}
    table = results_view.metrics_table(results, "image_to_neural").set_index("metric")
    lo, hi = table.loc["top1 95% lo", "chance"], table.loc["top1 95% hi", "chance"]
    assert 0 <= lo < 0.025 < hi and table["chance"].dtype == float
