"""Where data and runs live: CLI flag > environment variable > ./data, ./runs."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "NEUROALIGN_DATA_DIR"
RUNS_DIR_ENV = "NEUROALIGN_RUNS_DIR"
CACHE_DIR_ENV = "NEUROALIGN_CACHE_DIR"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The subject data root: `explicit`, else $NEUROALIGN_DATA_DIR, else ./data."""
    return Path(explicit or os.environ.get(DATA_DIR_ENV) or "data").expanduser().resolve()


def runs_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The runs root: `explicit`, else $NEUROALIGN_RUNS_DIR, else ./runs."""
    return Path(explicit or os.environ.get(RUNS_DIR_ENV) or "runs").expanduser().resolve()


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Feature cache root: `explicit`, else $NEUROALIGN_CACHE_DIR, else ./.neuroalign-cache."""
    return Path(explicit or os.environ.get(CACHE_DIR_ENV) or ".neuroalign-cache").expanduser().resolve()
