"""Header decisions of a MAT pair are public in `neuroalign.data.layout` (issue 22 item 3): the
sandboxed import check and `load_pair` use the same functions, and no module imports a private
helper of another in neuroalign.data."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from neuroalign.data import layout
from neuroalign.data.matio import peek_mat

PACKAGE = Path(__file__).resolve().parents[1] / "neuroalign"


def _pair(tmp_path, images, responses, image_name="images"):
    savemat(tmp_path / "images.mat", {image_name: images})
    savemat(tmp_path / "responses.mat", responses)
    return tmp_path / "images.mat", tmp_path / "responses.mat"


def _decide(img, resp, require=False):
    img_info, resp_info = peek_mat(img), peek_mat(resp)
    var = layout.pick_image_variable(img, img_info)
    return var, layout.decide_from_headers(img, resp, img_info, var, resp_info, require)


def test_the_image_variable_and_the_layout_are_decided_from_the_headers(tmp_path):
    images = np.zeros((12, 68, 270), np.float32)
    img, resp = _pair(tmp_path, images, {"responses": np.ones((12, 5), np.float32)}, image_name="imgs")
    assert _decide(img, resp) == ("imgs", None)
    istim = np.array([[1, 2, 3, 13, 1]], dtype=np.float64)  # 13: a gray screen
    img, resp = _pair(tmp_path, images, {"responses": np.ones((5, 5), np.float32), "istim": istim})
    var, found = _decide(img, resp)
    assert var == "images" and found.ravel().tolist() == [1, 2, 3, 13, 1]


def test_what_the_headers_show_is_refused_in_one_line(tmp_path):
    img, resp = _pair(tmp_path, np.zeros((12, 68, 270), np.float32), {"responses": np.ones((7, 5), np.float32)})
    with pytest.raises(ValueError, match="images.mat|responses.mat") as err:
        _decide(img, resp)
    assert "\n" not in str(err.value)
    savemat(tmp_path / "images.mat", {"pictures": np.zeros((3, 4, 4))})
    with pytest.raises(ValueError, match="no image variable"):
        layout.pick_image_variable(tmp_path / "images.mat", peek_mat(tmp_path / "images.mat"))
    img, resp = _pair(tmp_path, np.zeros((12, 68, 270), np.float32),
                      {"responses": np.ones((3, 5)), "istim": np.array([[1.0, np.nan, 2.0]])})
    with pytest.raises(ValueError, match="istim.*NaN"):
        _decide(img, resp)


def test_no_data_module_imports_a_private_name_of_another():
    """check_worker imported subject._decide_from_headers and _pick_image_variable before."""
    offenders = []
    for path in sorted((PACKAGE / "data").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("neuroalign"):
                offenders += [f"{path.relative_to(PACKAGE)}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, offenders
