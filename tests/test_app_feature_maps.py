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
    assert f"image {test_idx[0]}" in panel["layout"]["title"]["text"]
    assert len(panel["data"]) == 4
    diff = s.arr(panel["data"][3]["z"])
    assert np.allclose(diff, out["image_maps"][0] - out["neural_maps"][0], atol=1e-6)
    at.button(key=keys.MAPS_BEST).click().run()
    assert at.session_state[keys.MAPS_SAMPLE] == int(np.argmax(ssim))
    assert f"SSIM {ssim.max():.3f}" in _panel(at)["layout"]["title"]["text"]
    at.button(key=keys.MAPS_WORST).click().run()
    assert at.session_state[keys.MAPS_SAMPLE] == int(np.argmin(ssim))
    at.number_input(key=keys.MAPS_SAMPLE).set_value(len(ssim) - 1).run()
    at.button(key=keys.MAPS_NEXT).click().run()
    assert at.session_state[keys.MAPS_SAMPLE] == 0  # wraps around
    at.toggle(key=keys.MAPS_OVERLAY).set_value(True).run()
    s.no_exceptions(at)
    assert len(_panel(at)["data"]) == 6  # stimulus under both maps
    titles = [sp["layout"].get("title", {}).get("text", "") for sp in s.chart_specs(at)]
    assert any("Per-sample SSIM" in t for t in titles)
    assert [m.value for m in at.metric][1] == f"{np.nanmean(ssim):.3f}"
