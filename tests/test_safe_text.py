"""User-controlled strings are shown as themselves (issue 20 items 9 and 10): the CLI prints
non-printable characters escaped, the dashboard never renders Markdown made of a name."""

from __future__ import annotations

import re

import h5py
import numpy as np
from scipy.io import savemat

from neuroalign.cli import main
from neuroalign.text import markdown_literal, printable
from app_support import app_env  # noqa: F401 (fixture)

TITLE = "\x1b]0;pwned\x07\x1b[2J"  # set the terminal title, clear the screen
LINK = "![x](http://127.0.0.1:9/p.png)[click](http://evil.example)"


def test_printable_and_markdown_literal():
    assert printable("plain name, é ö") == "plain name, é ö"
    assert printable("a" + TITLE + "\u200b\udcff") == "a\\x1b]0;pwned\\x07\\x1b[2J\\u200b\\udcff"
    md = markdown_literal(LINK + " *b* :red[x] _e_")
    assert re.search(r"(?<!\\)[\[\]*]", md) is None, md  # every bracket and star escaped
    assert "http\\://" in md and "\\:red" in md and "\\_e\\_" in md
    # stripping the escapes gives the text back: it is shown as it is
    assert md.replace("\\", "") == LINK + " *b* :red[x] _e_"


def test_cli_prints_terminal_escapes_in_variable_names_escaped(tmp_path, capsys):
    images = tmp_path / "images.mat"
    with h5py.File(images, "w") as f:  # any name HDF5 allows, as a crafted upload would have
        f.create_dataset(TITLE + "imgs", data=np.zeros((12, 32, 32), np.uint8))
    savemat(tmp_path / "responses.mat", {"responses": np.random.default_rng(0).random((12, 5))})
    assert main(["validate", "--images", str(images), "--responses", str(tmp_path / "responses.mat")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err, repr(err)
    assert "found \\x1b]0;pwned\\x07\\x1b[2Jimgs (12, 32, 32) uint8 (hdf5)" in err and err.count("\n") == 1, err


def test_plain_messages_are_unchanged_by_markdown_literal():
    msg = "my_resp.mat: variable 'x' (12, 5) float64 (set NEUROALIGN_CHECK_MEMORY_MB to allow more)"
    assert markdown_literal(msg) == msg


def test_dashboard_shows_a_crafted_variable_name_as_text(app_env):
    """The upload check's refusal names the variables it found: no image or link is rendered from them."""
    import io

    import app_support as s

    images = io.BytesIO()
    with h5py.File(images, "w") as f:
        f.create_dataset("![x](mailto:a@b.example)[click](mailto:x@evil.example)", data=np.zeros((12, 32, 32), np.uint8))
    responses = io.BytesIO()
    savemat(responses, {"responses": np.random.default_rng(0).random((12, 5))})
    from test_app_subjects import _upload

    at = _upload(s.app_at("pages/subjects.py"), "m", images.getvalue(), responses.getvalue())
    s.no_exceptions(at)
    body = at.error[0].value
    assert body.startswith("Not importable: images.mat: no image variable"), body
    assert "![" not in body and "[click](" not in body and "\\[click\\](mailto\\:x@evil.example)" in body, body
