"""User-controlled strings are shown as themselves (issue 20 items 9 and 10): the CLI prints
non-printable characters escaped, the dashboard never renders Markdown made of a name."""

from __future__ import annotations

import h5py
import numpy as np
from scipy.io import savemat

from neuroalign.cli import main
from neuroalign.text import markdown_literal, printable

TITLE = "\x1b]0;pwned\x07\x1b[2J"  # set the terminal title, clear the screen
LINK = "![x](http://127.0.0.1:9/p.png)[click](http://evil.example)"


def test_printable_and_markdown_literal():
    assert printable("plain name, é ö") == "plain name, é ö"
    assert printable("a" + TITLE + "\u200b\udcff") == "a\\x1b]0;pwned\\x07\\x1b[2J\\u200b\\udcff"
    md = markdown_literal(LINK + " *b* :red[x] # h")
    assert "](" not in md and "![" not in md and "*b*" not in md and ":red[" not in md
    # stripping the escapes gives the text back: it is shown as it is
    assert md.replace("\\", "") == (LINK + " *b* :red[x] # h").replace("\\", "")


def test_cli_prints_terminal_escapes_in_variable_names_escaped(tmp_path, capsys):
    images = tmp_path / "images.mat"
    with h5py.File(images, "w") as f:  # any name HDF5 allows, as a crafted upload would have
        f.create_dataset(TITLE + "imgs", data=np.zeros((12, 32, 32), np.uint8))
    savemat(tmp_path / "responses.mat", {"responses": np.random.default_rng(0).random((12, 5))})
    assert main(["validate", "--images", str(images), "--responses", str(tmp_path / "responses.mat")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err, repr(err)
    assert "found \\x1b]0;pwned\\x07\\x1b[2Jimgs (12, 32, 32) uint8 (hdf5)" in err and err.count("\n") == 1, err
