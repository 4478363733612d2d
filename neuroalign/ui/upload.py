"""Import of a new subject from the dashboard: a browser upload (a MAT pair or an NWB file) or files in
the server's import folders (`ui.server_import`), checked and staged, then saved.

Kept free of widgets so it can be tested directly: the Subjects page passes the uploaded file
objects (anything with `.name` and a binary `read`) and shows the report or the error.

Check goes through the import service (`neuroalign.data.imports.prepare`): the uploaded bytes are
copied to `<cache>/uploads`, parsed once in a short-lived worker process with memory and time limits
(`neuroalign.data.sandbox`; a pathological file is refused instead of taking the server down), which
writes the subject's canonical files into a hidden staging folder inside the data folder; the copies
are removed at once. Save only renames that folder into place (`imports.publish`), after checking
that the uploaders still hold the bytes that were checked. The subject's source records the
browser's file names (not the staging folder).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

_CHUNK = 16 * 1024 * 1024


class UploadedFileLike(Protocol):
    name: str

    def read(self, size: int = -1) -> bytes: ...

    def seek(self, offset: int, whence: int = 0) -> int: ...


@dataclass
class StagedUpload:
    """A checked import waiting for the user's confirmation: the subject already parsed and written by
    the sandboxed worker into a staging folder of the data folder (`prepared`, `folder`).

    `identity` is what the widgets held when the files were checked (see `upload_identity`): the
    page drops the preview as soon as the widgets hold anything else. `digests` are the SHA-256
    of the checked uploads (empty for files on the server); `save_staged` publishes only when the
    uploaders still hold exactly these bytes and the staged files are those the worker wrote.
    """

    name: str
    folder: Path
    prepared: Any = None  # neuroalign.data.imports.Prepared
    summary: list[str] = field(default_factory=list)
    identity: tuple = ()
    digests: tuple[str, ...] = ()
    preview: dict = field(default_factory=dict)  # see `preview_from_arrays`
    source_names: tuple[str, ...] = ()  # the file names as the browser gave them (or the server paths)
    kind: str = "mat"  # "mat" | "nwb"
    origin: str = "upload"  # "upload" (a browser's files) | "server" (files in the import folders)


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
                    responses_file: UploadedFileLike | None, *extra: Any) -> tuple:
    """What the import widgets hold now: the stripped name and each uploader's file (Streamlit's
    per-upload `file_id`, name, size), plus `extra` (an NWB upload's options, a server file's path
    and stamp). Cheap (reads no bytes); any change gives a different value."""
    return ((name or "").strip(), _file_identity(images_file), _file_identity(responses_file), *extra)


def is_current(staged: StagedUpload | None, name: str | None, images_file: UploadedFileLike | None,
               responses_file: UploadedFileLike | None, *extra: Any) -> bool:
    """Whether a preview still describes what the widgets hold."""
    return staged is not None and staged.identity == upload_identity(name, images_file, responses_file, *extra)


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
    """The stripped subject name, or ValueError saying what is wrong with it (incl. already taken).
    Form feedback before an upload is copied (gigabytes, possibly); the import service checks the
    name again when it claims the staging folder, and that check is the one that counts."""
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
    """Remove the staged subject when `staged` is dropped with its browser session (the tab closed and
    Streamlit let the session go): the finalizer holds the folder's path, not the object."""
    import weakref

    weakref.finalize(staged, shutil.rmtree, str(staged.folder), True)
    return staged


def _copy_uploads(files: list[tuple[UploadedFileLike, str]], staging_root: Path | None
                  ) -> tuple[Path, list[Path], tuple[str, ...], tuple[str, ...]]:
    """Copy uploads into a fresh folder of `staging_root`, each under the user's own name in its own
    sub-folder (two may be called data.mat), so that every message names the file the user picked.
    Returns (folder, paths, SHA-256 digests, display names)."""
    folder = Path(tempfile.mkdtemp(prefix="neuroalign-upload-", dir=staging_root))
    try:
        paths, digests, names = [], [], []
        for i, (f, default) in enumerate(files):
            shown = _display_name(f.name, default)
            path = folder / str(i) / _staged_name(shown, default)
            path.parent.mkdir()
            digests.append(_write(f, path))
            paths.append(path)
            names.append(shown)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, paths, tuple(digests), tuple(names)


def _prepare(store, name: str, source, source_names: tuple, preview_dir: Path):
    """The import service's check-and-stage (`imports.prepare`) with a preview; (Prepared, preview dict)."""
    from neuroalign.data import imports

    prepared = imports.prepare(store.root, name, source, source_names=source_names,
                               preview_path=preview_dir / "preview.npz")
    return prepared, preview_from_arrays(prepared.preview)


def stage_and_validate(store, name: str, images_file: UploadedFileLike | None,
                       responses_file: UploadedFileLike | None, staging_root: Path | None = None) -> StagedUpload:
    """Check and stage an uploaded MAT pair (see module docstring).

    Raises ValueError (one line) for a missing file, a bad name, content the import service rejects
    or a check that hit its limits; nothing is left behind in that case (the copies are always removed).
    """
    from neuroalign.data import imports

    if images_file is None or responses_file is None:
        missing = [n for n, f in (("images.mat", images_file), ("responses.mat", responses_file)) if f is None]
        raise ValueError(f"missing upload: {' and '.join(missing)}; expected both files")
    identity = upload_identity(name, images_file, responses_file)
    name = check_name(store, name)
    folder, paths, digests, names = _copy_uploads([(images_file, "images.mat"), (responses_file, "responses.mat")],
                                                  staging_root)
    try:
        prepared, preview = _prepare(store, name, imports.MatSource(*paths), names, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    logger.info("staged upload %s (%s, %s)", name, images_file.name, responses_file.name)
    return track(StagedUpload(name, prepared.folder, prepared, list(prepared.report.summary_lines()),
                              identity=identity, digests=digests, preview=preview, source_names=names))


def nwb_options_identity(options) -> tuple:
    """The part of an NWB import's identity its options make (a changed window drops the preview)."""
    return ("nwb", tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.to_dict().items())))


def stage_nwb(store, name: str, nwb_file: UploadedFileLike | None, images_file: UploadedFileLike | None = None,
              options=None, staging_root: Path | None = None) -> StagedUpload:
    """Check and stage an uploaded NWB file (with a .mat images file only when it has no stimulus
    templates); `options` a `neuroalign.data.nwb.NwbOptions`. Errors as `stage_and_validate`."""
    from neuroalign.data import imports
    from neuroalign.data.nwb import NwbOptions

    if nwb_file is None:
        raise ValueError("missing upload: the .nwb file")
    options = options or NwbOptions()
    identity = upload_identity(name, nwb_file, images_file, nwb_options_identity(options))
    name = check_name(store, name or default_name(nwb_file.name))
    files = [(nwb_file, "session.nwb")] + ([(images_file, "images.mat")] if images_file is not None else [])
    folder, paths, digests, names = _copy_uploads(files, staging_root)
    try:
        source = imports.NwbSource(paths[0], paths[1] if len(paths) > 1 else None, options)
        prepared, preview = _prepare(store, name, source, names, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    logger.info("staged NWB upload %s (%s)", name, nwb_file.name)
    return track(StagedUpload(name, prepared.folder, prepared, list(prepared.report.summary_lines()),
                              identity=identity, digests=digests, preview=preview, source_names=names, kind="nwb"))


def nwb_inventory(nwb_file: UploadedFileLike, staging_root: Path | None = None) -> dict:
    """What an uploaded NWB file offers (response series, presentations, templates), read in the sandbox;
    the copy is removed at once. One-line ValueError when it is not an NWB 2.x file."""
    from neuroalign.data import imports

    folder, paths, _, _ = _copy_uploads([(nwb_file, "session.nwb")], staging_root)
    try:
        return imports.inventory(paths[0])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def default_name(file_name: str) -> str:
    """A subject name from a file name (its stem): "sub-01_ses-02_ophys.nwb" -> "sub-01_ses-02_ophys"."""
    base = _display_name(file_name, "subject")
    for ext in (".nwb", ".mat"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
    return base.strip() or "subject"


def stage_files(store, name: str, source, source_names: tuple[str, ...], identity: tuple,
                preview_root: Path | None = None, origin: str = "server") -> StagedUpload:
    """Check and stage files already on the server (`ui.server_import`): no copies, the same service."""
    from neuroalign.data import imports

    name = check_name(store, name)
    folder = Path(tempfile.mkdtemp(prefix="neuroalign-upload-", dir=preview_root))
    try:
        prepared, preview = _prepare(store, name, source, source_names, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    kind = "nwb" if isinstance(source, imports.NwbSource) else "mat"
    return track(StagedUpload(name, prepared.folder, prepared, list(prepared.report.summary_lines()),
                              identity=identity, digests=(), preview=preview, source_names=source_names, kind=kind,
                              origin=origin))


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


def save_staged(store, staged: StagedUpload, *current: UploadedFileLike | None):
    """Publish the staged subject under `staged.name` (atomic in the store); always removes the staging
    folder. Returns the new subject's SubjectInfo.

    Imports exactly what was checked: the files in the uploaders now (`current`, in the order they were
    staged: images, responses; or the .nwb file and its images file) must hash to `staged.digests`,
    and the staged files must be those the worker wrote. Otherwise ValueError, and nothing is written.
    """
    from neuroalign.data import imports

    try:  # the name was checked when staging; publish's exclusive claim decides a name taken since
        for i, f in enumerate(current):
            if f is None or i >= len(staged.digests):
                continue
            if sha256_of(f) != staged.digests[i]:
                label = staged.source_names[i] if i < len(staged.source_names) else f.name
                raise ValueError(f"{label} in the uploader is not the file that was checked "
                                 f"({f.name}); check the files again")
        if staged.prepared is None or not staged.prepared.intact():
            raise ValueError("the staged subject changed after the check (or was removed); check the files again")
        imports.publish(staged.prepared)
        return store.info(staged.name)
    finally:
        discard(staged)


def discard(staged: StagedUpload | None) -> None:
    """Remove a staged import's folder (no error if it is already gone, e.g. saved)."""
    if staged is not None and Path(staged.folder).name.startswith(".tmp-"):
        shutil.rmtree(staged.folder, ignore_errors=True)
