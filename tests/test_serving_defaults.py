"""Serving defaults (issue 13 part 3): the shipped Streamlit config binds to this machine only, keeps
XSRF/CORS protection on and caps uploads consistently with the import size cap; no page can hand
the library a filesystem path outside the configured folders."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from neuroalign import paths
from neuroalign.data.matio.common import MAX_VARIABLE_BYTES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server() -> dict:
    with open(ROOT / ".streamlit" / "config.toml", "rb") as fh:
        return tomllib.load(fh)["server"]


def test_binds_to_localhost_with_xsrf_and_cors(server):
    assert server["address"] == "127.0.0.1"
    assert server["enableXsrfProtection"] is True and server["enableCORS"] is True
    assert server["headless"] is True


def test_upload_cap_is_consistent_with_the_import_cap(server):
    cap_mb = server["maxUploadSize"]
    assert isinstance(cap_mb, int) and 200 <= cap_mb
    assert cap_mb * 1024**2 <= MAX_VARIABLE_BYTES  # an uncompressed file the uploader accepts can be imported


def test_the_option_names_exist_in_the_installed_streamlit(server):
    from streamlit import config

    for key in ("address", "enableXsrfProtection", "enableCORS", "maxUploadSize", "headless", "fileWatcherType"):
        assert f"server.{key}" in config._config_options_template, key


def test_inside_roots(tmp_path, monkeypatch):
    for var, sub in ((paths.DATA_DIR_ENV, "data"), (paths.RUNS_DIR_ENV, "runs"), (paths.CACHE_DIR_ENV, "cache")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    assert paths.inside_roots(tmp_path / "runs" / "r1") == tmp_path / "runs" / "r1"
    assert paths.inside_roots(tmp_path / "data") == tmp_path / "data"
    monkeypatch.chdir(tmp_path)
    assert paths.inside_roots("cache/uploads/x") == tmp_path / "cache" / "uploads" / "x"  # relative: from cwd
    for bad in [tmp_path / "runs" / ".." / "elsewhere", "/etc/passwd", tmp_path / "runsX" / "r", "..", "",
                "runs\0x", tmp_path]:
        with pytest.raises(ValueError) as e:
            paths.inside_roots(bad)
        msg = str(e.value)
        assert "\n" not in msg and ("outside the configured folders" in msg or "not usable" in msg), msg
    # a link inside a root that points elsewhere: the normalised path is inside; following it is not
    (tmp_path / "runs").mkdir()
    os.symlink("/etc", tmp_path / "runs" / "link")
    assert paths.inside_roots(tmp_path / "runs" / "link") == tmp_path / "runs" / "link"
    with pytest.raises(ValueError, match="outside the configured folders"):
        paths.inside_roots(tmp_path / "runs" / "link", follow_links=True)


def test_no_page_takes_a_typed_path():
    """Pages take subject names and picks from lists, never typed filesystem paths: the only free
    text inputs are the ones listed here (a subject name, checked by `check_subject_name`)."""
    import re

    allowed = {("neuroalign/ui/import_view.py", '"Name"')}  # the upload's and the server import's
    found = set()
    for f in sorted(list((ROOT / "pages").glob("*.py")) + list((ROOT / "neuroalign" / "ui").glob("*.py")) + [ROOT / "app.py"]):
        for m in re.finditer(r"\.(text_input|text_area|chat_input)\(\s*([^,)]+)", f.read_text()):
            found.add((str(f.relative_to(ROOT)), m.group(2).strip()))
    assert found == allowed, found - allowed


def test_uploads_are_staged_inside_the_cache_folder(tmp_path, monkeypatch):
    from neuroalign.ui import upload

    monkeypatch.setenv(paths.CACHE_DIR_ENV, str(tmp_path / "cache"))
    root = upload.staging_root()
    assert root == tmp_path / "cache" / "uploads" and root.is_dir()
    old = root / "neuroalign-upload-old"
    old.mkdir()
    os.utime(old, (1, 1))  # left by a browser session that never saved: removed after a day
    fresh = root / "neuroalign-upload-fresh"
    fresh.mkdir()
    upload.staging_root()
    assert not old.exists() and fresh.exists()
