"""Upload of a new subject from the browser: stage the two files, validate, then import atomically.

Kept free of widgets so it can be tested directly: the Subjects page passes the uploaded file
objects (anything with `.name` and a binary `read`) and shows the report or the error.

The check parses the uploaded bytes in a short-lived worker process with memory and time limits
(`neuroalign.data.sandbox`), so a pathological file is refused instead of taking the server down.
The import records the browser's file names (not the staging folder) as the subject's source.
"""

from __future__ import annotations

import hashlib
import logging
import os
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
    """Two validated files waiting in a private temp folder for the user's confirmation.

    `identity` is what the widgets held when the files were checked (see `upload_identity`): the
    page drops the preview as soon as the widgets hold anything else. `digests` are the SHA-256
    of the checked bytes (images, responses); `save_staged` imports only when the staged files
    and the files in the uploaders still have exactly these contents.
    """

    name: str
    folder: Path
    images_path: Path
    responses_path: Path
    summary: list[str] = field(default_factory=list)
    identity: tuple = ()
    digests: tuple[str, str] = ("", "")
    preview: dict = field(default_factory=dict)  # see `preview_from_arrays`
    source_names: tuple[str, str] = ("", "")  # the file names as the browser gave them


PREVIEW_IMAGES = 8


def preview_from_arrays(arrays: dict) -> dict:
    """Small arrays to look at before saving, as the importer decided them (layout, orientation), from
    the sandboxed check's `check_worker.preview_arrays` (images picked and <= 200 response rows evenly
    spread: the rows `plots.raster_order` would keep of the whole subject): `images` (k, H, W) uint8
    evenly spread over the file with their `image_ids`, and a response raster `raster` (images ×
    neurons, display order) with `raster_images` / `raster_neurons` ids."""
    import numpy as np

    from neuroalign import plots

    images = np.stack([plots.as_display_image(im) for im in arrays["images"]])
    rows = np.asarray(arrays["rows"], dtype=np.float32)
    img, neu = plots.raster_order(rows, max_images=200, max_neurons=200)
    return {"images": images, "image_ids": np.asarray(arrays["image_ids"]),
            "raster": rows[np.ix_(img, neu)].astype(np.float32),
            "raster_images": np.asarray(arrays["row_ids"])[img], "raster_neurons": neu}


def _file_identity(f: UploadedFileLike | None) -> tuple | None:
    if f is None:
        return None
    size = getattr(f, "size", None)
    return (getattr(f, "file_id", None) or id(f), f.name, size)


def upload_identity(name: str | None, images_file: UploadedFileLike | None,
                    responses_file: UploadedFileLike | None) -> tuple:
    """What the upload widgets hold now: the stripped name and each uploader's file (Streamlit's
    per-upload `file_id`, name, size). Cheap (reads no bytes); any change to either uploader or
    the name gives a different value."""
    return ((name or "").strip(), _file_identity(images_file), _file_identity(responses_file))


def is_current(staged: StagedUpload | None, name: str | None, images_file: UploadedFileLike | None,
               responses_file: UploadedFileLike | None) -> bool:
    """Whether a preview still describes what the widgets hold."""
    return staged is not None and staged.identity == upload_identity(name, images_file, responses_file)


def sha256_of(src: UploadedFileLike | Path) -> str:
    """SHA-256 hex digest of an uploaded file's full contents (or of a file on disk)."""
    h = hashlib.sha256()
    if isinstance(src, Path):
        with open(src, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        return h.hexdigest()
    src.seek(0)
    for chunk in iter(lambda: src.read(_CHUNK), b""):
        h.update(chunk)
    src.seek(0)
    return h.hexdigest()


def check_name(store, name: str) -> str:
    """The stripped subject name, or ValueError saying what is wrong with it (incl. already taken)."""
    from neuroalign.data.store import check_subject_name

    name = check_subject_name((name or "").strip())
    if store.exists(name):
        raise ValueError(f"a subject named {name!r} already exists; pick another name or delete it first")
    return name


def _write(src: UploadedFileLike, dst: Path) -> str:
    """Copy an upload to `dst`; returns the SHA-256 of the bytes written."""
    h = hashlib.sha256()
    src.seek(0)
    with open(dst, "wb") as out:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            h.update(chunk)
            out.write(chunk)
    src.seek(0)
    return h.hexdigest()


STAGING_FOLDER = "uploads"
_STALE_STAGING_S = 3600.0  # a check nobody saved or dropped within an hour is abandoned
STAGING_CAP_BYTES = 4 * 1024**3  # the staging folder never holds more: the oldest checks go first


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def staging_root(cap_bytes: int | None = None) -> Path:
    """Where uploads wait for the user's confirmation: `<cache dir>/uploads` (inside the configured
    folders and on their disk, not in a RAM-backed /tmp). A staged check is removed when its session
    drops it (Save, a new check, another page, the browser tab closed: `track`); what is left behind
    anyway (a server killed) goes after an hour, and the folder is capped at `cap_bytes` (default
    `STAGING_CAP_BYTES`), oldest first."""
    import time

    from neuroalign import paths

    root = paths.inside_roots(paths.cache_dir() / STAGING_FOLDER)
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    kept = []
    for p in root.glob("neuroalign-upload-*"):
        try:
            mtime = p.stat().st_mtime
            if now - mtime > _STALE_STAGING_S:
                shutil.rmtree(p, ignore_errors=True)
            else:
                kept.append((mtime, p))
        except OSError as exc:  # removed meanwhile by another session, or unreadable: keep going
            logger.debug("not removing staged upload %s: %s", p, exc)
    cap = STAGING_CAP_BYTES if cap_bytes is None else cap_bytes
    sizes = [(mtime, p, _folder_bytes(p)) for mtime, p in sorted(kept)]
    total = sum(size for _, _, size in sizes)
    for _, p, size in sizes:
        if total <= cap:
            break
        logger.info("staging folder over its cap: removing the oldest staged upload %s", p.name)
        shutil.rmtree(p, ignore_errors=True)
        total -= size
    return root


def track(staged: StagedUpload) -> StagedUpload:
    """Remove the staged files when `staged` is dropped with its browser session (the tab closed and
    Streamlit let the session go): the finalizer holds the folder's path, not the object."""
    import weakref

    weakref.finalize(staged, shutil.rmtree, str(staged.folder), True)
    return staged


def stage_and_validate(store, name: str, images_file: UploadedFileLike | None,
                       responses_file: UploadedFileLike | None, staging_root: Path | None = None) -> StagedUpload:
    """Write both uploads to a temp folder and check them in the sandboxed worker
    (`neuroalign.data.sandbox.check_pair`: the same checks as `store.validate`, under memory and
    time limits).

    Raises ValueError (one line) for a missing file, a bad name, content the store rejects or a
    check that hit its limits; the temp folder is removed in that case, so nothing is left behind.
    """
    if images_file is None or responses_file is None:
        missing = [n for n, f in (("images.mat", images_file), ("responses.mat", responses_file)) if f is None]
        raise ValueError(f"missing upload: {' and '.join(missing)}; expected both files")
    identity = upload_identity(name, images_file, responses_file)
    name = check_name(store, name)
    folder = Path(tempfile.mkdtemp(prefix="neuroalign-upload-", dir=staging_root))
    source_names = (_display_name(images_file.name, "images.mat"), _display_name(responses_file.name, "responses.mat"))
    try:
        # each file under the user's own name (in its own sub-folder: both may be called data.mat),
        # so that every message names the file the user picked
        images_path = folder / "images" / _staged_name(source_names[0], "images.mat")
        responses_path = folder / "responses" / _staged_name(source_names[1], "responses.mat")
        for p in (images_path, responses_path):
            p.parent.mkdir()
        digests = (_write(images_file, images_path), _write(responses_file, responses_path))
        report, preview = _check_with_preview(images_path, responses_path, folder / "preview.npz")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    logger.info("staged upload %s (%s, %s)", name, images_file.name, responses_file.name)
    return track(StagedUpload(name, folder, images_path, responses_path, list(report.summary_lines()),
                              identity=identity, digests=digests, preview=preview, source_names=source_names))


def _display_name(name: str | None, default: str) -> str:
    """The browser's file name without any folder part and control characters (browsers send base
    names; be sure)."""
    base = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c if c.isprintable() else "_" for c in base).strip()
    return base if base not in ("", ".", "..") else default


def _staged_name(name: str, default: str) -> str:
    """`name` as a file name on this file system (at most 200 UTF-8 bytes, encodable), else `default`."""
    try:
        encoded = os.fsencode(name)
    except UnicodeError:
        return default
    return name if 0 < len(encoded) <= 200 else default


def _check_with_preview(images_path: Path, responses_path: Path, preview_path: Path):
    """The validation report and a preview from the sandboxed check (one read of the files, in the worker)."""
    from neuroalign.data.sandbox import check_pair

    result = check_pair(images_path, responses_path, preview_path=preview_path)
    return result.report, preview_from_arrays(result.preview)


def save_staged(store, staged: StagedUpload, images_file: UploadedFileLike | None = None,
                responses_file: UploadedFileLike | None = None):
    """Import the staged files under `staged.name` (atomic in the store); always removes the temp folder.

    Imports exactly the bytes that were checked: the staged copies must still hash to
    `staged.digests`, and so must `images_file` / `responses_file` when given (what the uploaders
    hold at the moment of saving). Otherwise ValueError, and nothing is written.
    """
    try:
        check_name(store, staged.name)
        for label, path, current, digest in (("images.mat", staged.images_path, images_file, staged.digests[0]),
                                             ("responses.mat", staged.responses_path, responses_file,
                                              staged.digests[1])):
            if not digest:
                raise ValueError(f"{label} was never checked; press 'Check files' first")
            if sha256_of(Path(path)) != digest:
                raise ValueError(f"the staged copy of {label} changed after the check; check the files again")
            if current is not None and sha256_of(current) != digest:
                raise ValueError(f"{label} in the uploader is not the file that was checked "
                                 f"({current.name}); check the files again")
        names = staged.source_names if all(staged.source_names) else None
        return store.import_subject(staged.name, staged.images_path, staged.responses_path, source_names=names)
    finally:
        discard(staged)


def discard(staged: StagedUpload | None) -> None:
    """Remove a staged upload's temp folder (no error if it is already gone)."""
    if staged is not None:
        shutil.rmtree(staged.folder, ignore_errors=True)
