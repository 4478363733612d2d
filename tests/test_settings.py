"""The `NEUROALIGN_*` environment settings (issue 22): one table, parsed in one place, listed in README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from neuroalign import settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_variable_the_package_names_is_in_the_table_and_in_readme():
    named = set()
    for path in (ROOT / "neuroalign").rglob("*.py"):
        named.update(re.findall(r"NEUROALIGN_[A-Z_]+[A-Z]", path.read_text()))
    assert named == set(settings.SETTINGS)
    readme = (ROOT / "README.md").read_text()
    assert [name for name in settings.SETTINGS if f"`{name}`" not in readme] == []


def test_only_settings_reads_them():
    pattern = re.compile(r"os\.(environ\.get|getenv)\([^)]*(NEUROALIGN_|_ENV\b)")
    readers = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "neuroalign").rglob("*.py")
                     if p.name != "settings.py" and pattern.search(p.read_text()))
    assert readers == []


def test_defaults_parsers_and_messages(monkeypatch):
    for name in settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert settings.get("NEUROALIGN_DATA_DIR") == "data" and settings.get("NEUROALIGN_JOB_PROCESSES") is None
    assert settings.get("NEUROALIGN_NO_DEMO") is False and settings.get("NEUROALIGN_CHECK_SECONDS") == 60.0
    monkeypatch.setenv("NEUROALIGN_NO_DEMO", "1")
    monkeypatch.setenv("NEUROALIGN_JOBS_OUTLIVE_SERVER", " Yes ")
    monkeypatch.setenv("NEUROALIGN_MAX_IMPORT_BYTES", "2e9")
    monkeypatch.setenv("NEUROALIGN_NATIVE", "OFF")
    assert settings.get("NEUROALIGN_NO_DEMO") and settings.get("NEUROALIGN_JOBS_OUTLIVE_SERVER")
    assert settings.get("NEUROALIGN_MAX_IMPORT_BYTES") == 2_000_000_000 and settings.get("NEUROALIGN_NATIVE") == "off"
    monkeypatch.setenv("NEUROALIGN_NO_DEMO", "0")
    monkeypatch.setenv("NEUROALIGN_JOB_PROCESSES", "0")
    assert not settings.get("NEUROALIGN_NO_DEMO")
    with pytest.raises(ValueError, match="NEUROALIGN_JOB_PROCESSES must be a whole number >= 1, got '0'"):
        settings.get("NEUROALIGN_JOB_PROCESSES")
    monkeypatch.setenv("NEUROALIGN_FOLDED_COMPILE", "sometimes")
    with pytest.raises(ValueError, match=r"compile mode \(\$NEUROALIGN_FOLDED_COMPILE\) must be one of auto, on, off"):
        settings.get("NEUROALIGN_FOLDED_COMPILE")
