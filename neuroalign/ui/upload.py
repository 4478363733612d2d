"""Upload of a new subject from the browser: stage the two files, validate, then import atomically.

Kept free of widgets so it can be tested directly: the Subjects page passes the uploaded file
objects (anything with `.name` and a binary `read`) and shows the report or the error.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

_CHUNK = 16 * 1024 * 1024


class UploadedFileLike(Protocol):
    name: str

    def read(self, size: int = -1) -> bytes: ...

    def seek(self, offset: int, whence: int = 0) -> int: ...


@dataclass
class StagedUpload:
    """Two validated files waiting in a private temp folder for the user's confirmation."""

    name: str
    folder: Path
    images_path: Path
    responses_path: Path
    summary: list[str] = field(default_factory=list)


def check_name(store, name: str) -> str:
    """The stripped subject name, or ValueError saying what is wrong with it (incl. already taken)."""
    from neuroalign.data.store import check_subject_name

    name = check_subject_name((name or "").strip())
    if store.exists(name):
        raise ValueError(f"a subject named {name!r} already exists; pick another name or delete it first")
    return name


def _write(src: UploadedFileLike, dst: Path) -> None:
    src.seek(0)
    with open(dst, "wb") as out:
        shutil.copyfileobj(src, out, _CHUNK)  # type: ignore[arg-type]


def stage_and_validate(store, name: str, images_file: UploadedFileLike | None,
                       responses_file: UploadedFileLike | None, staging_root: Path | None = None) -> StagedUpload:
    """Write both uploads to a temp folder and validate them with `store.validate`.

    Raises ValueError (one line) for a missing file, a bad name or content the store rejects;
    the temp folder is removed in that case, so nothing is left behind.
    """
    if images_file is None or responses_file is None:
        missing = [n for n, f in (("images.mat", images_file), ("responses.mat", responses_file)) if f is None]
        raise ValueError(f"missing upload: {' and '.join(missing)}; expected both files")
    name = check_name(store, name)
    folder = Path(tempfile.mkdtemp(prefix="neuroalign-upload-", dir=staging_root))
    try:
        images_path = folder / "images.mat"
        responses_path = folder / "responses.mat"
        _write(images_file, images_path)
        _write(responses_file, responses_path)
        report = store.validate(images_path, responses_path)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    logger.info("staged upload %s (%s, %s)", name, images_file.name, responses_file.name)
    return StagedUpload(name, folder, images_path, responses_path, list(report.summary_lines()))


def save_staged(store, staged: StagedUpload):
    """Import the staged files under `staged.name` (atomic in the store); always removes the temp folder."""
    try:
        check_name(store, staged.name)
        return store.import_subject(staged.name, staged.images_path, staged.responses_path)
    finally:
        discard(staged)


def discard(staged: StagedUpload | None) -> None:
    """Remove a staged upload's temp folder (no error if it is already gone)."""
    if staged is not None:
        shutil.rmtree(staged.folder, ignore_errors=True)
