"""Feature maps page through AppTest: the panel, stepping best/worst/next, overlay, distributions."""

import numpy as np

import app_support as s
from app_support import app_env, app_populated  # noqa: F401 (fixtures)

from neuroalign.ui import keys

PAGE = "pages/feature_maps.py"


def _panel(at):
    return next(sp for sp in s.chart_specs(at) if "SSIM" in sp["layout"].get("title", {}).get("text", ""))


def test_empty_root(app_env):
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert any("No finished run yet" in i.value for i in at.info)


def test_panel_steps_and_overlay(app_populated):
    out = np.load(app_populated["run"] / "test_outputs.npz")
    ssim, test_idx = out["ssim"], out["test_indices"]
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    panel = _panel(at)
    assert panel["layout"]["title"]["text"].startswith(f"test image {test_idx[0]} ·")
    assert at.selectbox(key=keys.MAPS_SAMPLE).format_func(0) == f"test image {test_idx[0]}"
    assert len(panel["data"]) == 4
    centred = (out["image_maps"][0] - out["image_maps"].mean(0)) - (out["neural_maps"][0] - out["neural_maps"].mean(0))
    assert np.allclose(s.arr(panel["data"][3]["z"]), centred, atol=1e-5)  # mean maps subtracted by default
    at.toggle(key=keys.MAPS_CENTRE).set_value(False).run()
    diff = s.arr(_panel(at)["data"][3]["z"])
    assert np.allclose(diff, out["image_maps"][0] - out["neural_maps"][0], atol=1e-6)
    at.button(key=keys.MAPS_BEST).click().run()
    assert at.session_state[keys.MAPS_SAMPLE] == int(np.argmax(ssim))
    assert f"SSIM {ssim.max():.3f}" in _panel(at)["layout"]["title"]["text"]
    assert f"test image {test_idx[np.argmax(ssim)]}" in _panel(at)["layout"]["title"]["text"]
    at.button(key=keys.MAPS_WORST).click().run()
    assert at.session_state[keys.MAPS_SAMPLE] == int(np.argmin(ssim))
    at.selectbox(key=keys.MAPS_SAMPLE).set_value(len(ssim) - 1).run()
    at.button(key=keys.MAPS_NEXT).click().run()
    assert at.session_state[keys.MAPS_SAMPLE] == 0  # wraps around
    at.toggle(key=keys.MAPS_OVERLAY).set_value(True).run()
    s.no_exceptions(at)
    assert len(_panel(at)["data"]) == 6  # stimulus under both maps
    titles = [sp["layout"].get("title", {}).get("text", "") for sp in s.chart_specs(at)]
    assert any("Per-sample SSIM" in t for t in titles)
    assert [m.value for m in at.metric][1] == f"{np.nanmean(ssim):.3f}"


def test_panel_is_two_by_two_with_one_map_scale(app_populated):
    """Issue 12 item 4: stimulus | image map | neural map | difference in reading order, equal size,
    the two maps on one colour scale; issue 23 item 15: two rows of two (one row of four left each map
    ~120 px wide at 1,024 px)."""
    at = s.app_at(PAGE)
    panel = _panel(at)
    layout = panel["layout"]
    axes = [tr.get("xaxis", "x") for tr in panel["data"]]
    assert axes == ["x", "x2", "x3", "x4"]
    names = [tr["name"] for tr in panel["data"]]
    assert names == ["stimulus", "image", "neural", "difference"]
    xdom = [layout[f"xaxis{c}"]["domain"] for c in ("", "2", "3", "4")]
    ydom = [layout[f"yaxis{c}"]["domain"] for c in ("", "2", "3", "4")]
    assert ydom[0] == ydom[1] and ydom[2] == ydom[3] and ydom[2][1] < ydom[0][0]  # two rows, top first
    assert xdom[0] == xdom[2] and xdom[1] == xdom[3] and xdom[0][1] < xdom[1][0]  # two columns, left first
    widths = [d[1] - d[0] for d in xdom]
    assert max(widths) - min(widths) < 1e-9 and widths[0] > 0.45  # each panel about half the width
    image, neural = panel["data"][1], panel["data"][2]
    assert (image["zmin"], image["zmax"]) == (neural["zmin"], neural["zmax"])
    assert image["colorscale"] == neural["colorscale"]
    assert [a["text"] for a in layout["annotations"]][:4] == ["stimulus", "image-tower map", "neural-tower map",
                                                              "image − neural"]
