"""Where data and runs live: CLI flag > environment variable > ./data, ./runs."""

from __future__ import annotations

import os
from pathlib import Path

from neuroalign import settings

DATA_DIR_ENV = "NEUROALIGN_DATA_DIR"
RUNS_DIR_ENV = "NEUROALIGN_RUNS_DIR"
CACHE_DIR_ENV = "NEUROALIGN_CACHE_DIR"
IMPORT_ROOTS_ENV = "NEUROALIGN_IMPORT_ROOTS"
#: the import folder inside the data folder when $NEUROALIGN_IMPORT_ROOTS is not set
INCOMING = "incoming"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The subject data root: `explicit`, else $NEUROALIGN_DATA_DIR, else ./data."""
    return Path(explicit or settings.get(DATA_DIR_ENV)).expanduser().resolve()


def runs_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The runs root: `explicit`, else $NEUROALIGN_RUNS_DIR, else ./runs."""
    return Path(explicit or settings.get(RUNS_DIR_ENV)).expanduser().resolve()


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Feature cache root: `explicit`, else $NEUROALIGN_CACHE_DIR, else ./.neuroalign-cache."""
    return Path(explicit or settings.get(CACHE_DIR_ENV)).expanduser().resolve()


def import_roots() -> dict[str, Path]:
    """The server folders the dashboard may import subjects from (`paths.inside_roots` roots): the folders
    in $NEUROALIGN_IMPORT_ROOTS (separated by `os.pathsep`), else `<data folder>/incoming`. Keys are
    the folders as written (what the page shows); values absolute, with links resolved."""
    text = settings.get(IMPORT_ROOTS_ENV)
    parts = [p.strip() for p in text.split(os.pathsep) if p.strip()] if text else []
    if not parts:
        return {str(data_dir() / INCOMING): (data_dir() / INCOMING).resolve()}
    return {p: Path(p).expanduser().resolve() for p in parts}


def configured_roots() -> dict[str, Path]:
    """The folders the dashboard may read and write: {"data": ..., "runs": ..., "cache": ...}."""
    return {"data": data_dir(), "runs": runs_dir(), "cache": cache_dir()}


def inside_roots(path: str | os.PathLike, roots: dict[str, Path] | None = None, *, follow_links: bool = False) -> Path:
    """`path` made absolute (".." removed) when it lies inside one of `roots` (default: the configured
    data, runs and cache folders), else ValueError in one line.

    Every filesystem path a page hands to the library goes through this, so that no page acts on a
    path outside the configured folders (e.g. "../../etc" or "/home/x" sent from a browser).
    Without `follow_links` the check is on the normalised path itself (a subject folder may be a
    symbolic link the user made on purpose, e.g. to a reference-code data folder); with it, the
    link's target must lie inside too.
    """
    roots = configured_roots() if roots is None else roots
    text = os.fspath(path)
    if not text or "\0" in text:
        raise ValueError(f"path {text!r} is not usable; expected a folder inside the data, runs or cache folder")
    p = Path(os.path.abspath(Path(text).expanduser()))
    if follow_links:
        p = p.resolve()
    for root in roots.values():
        base = Path(os.path.abspath(root))
        if follow_links:
            base = base.resolve()
        if p == base or base in p.parents:
            return p
    listed = ", ".join(f"{k} {v}" for k, v in roots.items())
    raise ValueError(f"path {p} is outside the configured folders ({listed}); expected a path inside one of them")
