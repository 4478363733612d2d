"""Writing a subject folder atomically: `<root>/<name>/Data/{images,responses}.mat` + `subject.json`.

The subject is written into `<root>/.tmp-<name>-<pid>-<random>`, the name is claimed with an
exclusive `mkdir` (so two concurrent writes of one name cannot both win, and a folder someone
else is creating is never replaced), then the temporary folder is renamed over the empty claim.
Any exception (including KeyboardInterrupt) removes both; temporary folders left by a killed
process are removed by a later write once that process is gone and the folder is an hour old.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from neuroalign.data.folder_check import WRITTEN_KEY, file_stamps
from neuroalign.data.matio import peek_mat, save_mat
from neuroalign.data.names import check_subject_name, name_taken
from neuroalign.data.subject import SIDECAR, Subject, subject_files
from neuroalign.io_utils import atomic_write_json, default_mode, disk_full_error, is_disk_full, pid_alive

logger = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"
_TMP_PATTERN = re.compile(r"^\.tmp-.+-(\d+)-[0-9a-f]{8}$")
_STALE_TMP_S = 3600.0


def file_stamp(path: Path) -> list[int]:
    """[size, mtime in ns] of a file: what `subject.json` records to tell whether it is still current."""
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def write_sidecar(folder: Path, subject: Subject, *, name: str | None = None, simulated: bool = False,
                  source: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `<folder>/subject.json` describing `subject` and stamping the MAT files it was read from."""
    images_path, responses_path = subject_files(folder)
    meta = subject.meta
    sidecar = {
        "name": name or folder.name, "n_images": subject.n_images, "n_neurons": subject.n_neurons,
        "image_shape": list(subject.image_shape), "has_repeats": subject.repeats is not None,
        "n_repeats": 0 if subject.repeats is None else int(subject.repeats.shape[0]),
        "format": meta.get("format"), "simulated": simulated,
        "files": {"images.mat": file_stamp(images_path), "responses.mat": file_stamp(responses_path)},
        "source": source or {}, **(extra or {}),
    }
    atomic_write_json(folder / SIDECAR, sidecar)
    return sidecar


def _check_written(data: Path, images_shape: tuple[int, ...], responses_shape: tuple[int, ...]) -> None:
    """Compare the headers of the files just written with what was meant to be written."""
    found = (peek_mat(data / "images.mat").variables.get("images", ((), ""))[0],
             peek_mat(data / "responses.mat").variables.get("responses", ((), ""))[0])
    if found != (tuple(images_shape), tuple(responses_shape)):
        raise ValueError(f"written files hold images {found[0]} and responses {found[1]}; expected "
                         f"{tuple(images_shape)} and {tuple(responses_shape)} (disk full or failing?)")


def _make_readable(folder: Path) -> None:
    """Atomic writes create 0600 files; give subject files the usual umask-based permissions."""
    for p in folder.rglob("*"):
        os.chmod(p, default_mode(directory=p.is_dir()))


def remove_stale_tmp(root: Path) -> None:
    """Remove temporary folders of writes whose process is gone (killed mid-write) and are old."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for p in entries:
        m = _TMP_PATTERN.match(p.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            old = time.time() - p.lstat().st_mtime > _STALE_TMP_S
        except OSError:
            continue
        if old and not pid_alive(int(m.group(1))):
            logger.info("removing stale temporary folder %s", p)
            shutil.rmtree(p, ignore_errors=True)


def check_root(root: Path) -> bool:
    """False when the data root does not exist; ValueError when it is not a folder."""
    if not root.exists():
        return False
    if not root.is_dir():
        raise ValueError(f"data root {root} is not a folder; expected a folder of subjects "
                         "(set --data-dir or NEUROALIGN_DATA_DIR)")
    return True


def _final_path(written: Any, tmp: Path, target: Path) -> Path:
    """Where `written` (a path inside the temporary folder `tmp`, or None) would have ended up."""
    try:
        return target / Path(str(written)).relative_to(tmp)
    except (TypeError, ValueError):
        return target


class Staging(NamedTuple):
    """A claimed staging folder and the checked (NFC-normalised) subject name it is for."""

    folder: Path
    name: str


def new_staging_folder(root: Path, name: str) -> Staging:
    """An empty temporary folder `<root>/.tmp-<name>-<pid>-<random>` to write subject `name` into.

    The one place a new subject's name is checked (`names.check_subject_name`; FileExistsError when it
    is taken) -- callers use the returned `Staging.name` -- and the root (created when missing);
    temporary folders of writers that are gone are removed first. The folder belongs to this process:
    `remove_stale_tmp` leaves it alone while this process runs (an import worker writing into it is
    its child). Publish it with `publish_folder`, or remove it.
    """
    name = check_subject_name(name)
    check_root(root)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(root)
    if name_taken(root, name):
        raise FileExistsError(f"subject {name!r} already exists in {root}; choose another name or delete it")
    tmp = root / f"{_TMP_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return Staging(tmp, name)


def stage_subject(tmp: Path, name: str, subject: Subject, *, final: Path | None = None, images_uint8: bool = False,
                  simulated: bool = False, source: dict[str, Any] | None = None,
                  extra_files: dict[str, Callable[[Path], Any]] | None = None,
                  sidecar_extra: dict[str, Any] | None = None) -> Path:
    """Write a Subject's canonical files and sidecar into the empty folder `tmp` (see `write_subject_folder`).

    Any exception removes `tmp`; a full disk is one line naming the file as it would have been
    (`final`, default `<tmp's parent>/<name>`, e.g. `<root>/M6/Data/images.mat`).
    """
    final = final or tmp.parent / name
    try:
        data = tmp / "Data"
        data.mkdir(exist_ok=True)  # never re-creates `tmp` once it is removed (an import abandoned meanwhile)
        imgs = subject.images[:, 0]
        if images_uint8:
            imgs = np.clip(np.round(imgs * 255.0), 0, 255).astype(np.uint8)
        _, fmt_images = save_mat(data / "images.mat", {"images": np.ascontiguousarray(imgs)})
        resp_vars = {"responses": np.ascontiguousarray(subject.responses, dtype=np.float32)}
        if subject.repeats is not None:
            resp_vars["responses_repeats"] = np.ascontiguousarray(subject.repeats, dtype=np.float32)
        _, fmt_resp = save_mat(data / "responses.mat", resp_vars)
        for fname, writer in (extra_files or {}).items():
            writer(tmp / fname)
        _check_written(data, imgs.shape, subject.responses.shape)  # headers only: no second full load
        fmt = fmt_images if fmt_images == fmt_resp else f"images {fmt_images}, responses {fmt_resp}"
        # our own canonical files, stamped with their inodes: never checked in the sandbox (`folder_check`)
        write_sidecar(tmp, subject, name=name, simulated=simulated, source=source,
                      extra={"format": fmt, **(sidecar_extra or {}), WRITTEN_KEY: file_stamps(tmp)})
        _make_readable(tmp)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):  # one line naming the file as it would have been (the temporary folder is gone)
            raise disk_full_error(_final_path(getattr(exc, "filename", None), tmp, final), exc) from None
        raise
    return tmp


def publish_folder(tmp: Path, root: Path, name: str) -> Path:
    """Move the staged folder `tmp` to `<root>/<name>`: an exclusive claim of the name, then a rename.

    FileExistsError when anything has the name (also when it was created meanwhile: a folder someone
    else is creating is never replaced). Any exception removes `tmp` and the claim.
    """
    target = root / name
    claimed = False
    try:
        try:
            os.mkdir(target)  # exclusive claim: fails when anything (even an empty folder) has the name
        except FileExistsError:
            raise FileExistsError(f"subject {name!r} already exists in {root} (created meanwhile); "
                                  "choose another name") from None
        claimed = True
        try:
            os.rename(tmp, target)  # POSIX: atomically replaces our own empty claim
        except OSError:
            if os.name != "nt":
                raise
            os.rmdir(target)  # Windows cannot rename over a folder
            os.rename(tmp, target)
        claimed = False
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if claimed:
            try:
                os.rmdir(target)  # only if still our empty claim
            except OSError:
                pass
        if is_disk_full(exc):
            raise disk_full_error(target, exc) from None
        raise
    return target  # the rename keeps file sizes and mtimes (and inodes): the sidecar stays current


def write_subject_folder(root: Path, name: str, subject: Subject, *, images_uint8: bool = False,
                         simulated: bool = False, source: dict[str, Any] | None = None,
                         extra_files: dict[str, Callable[[Path], Any]] | None = None,
                         sidecar_extra: dict[str, Any] | None = None) -> Path:
    """Write a Subject as `<root>/<name>` through a temporary folder inside `root` and a rename.

    The files are canonical, reference-compatible MAT files (v5, or v7.3 beyond 2 GiB): `images`
    (N, H, W) float32 in [0, 1] (uint8 when `images_uint8`) and `responses` (N, K) float32 (+
    `responses_repeats` (R, N, K)). `extra_files` maps a file name to a callable(path) that writes
    it inside the new folder (e.g. the simulator's ground_truth.npz). Raises FileExistsError when
    `name` is taken (`name_taken`). The three steps -- `new_staging_folder`, `stage_subject`,
    `publish_folder` -- are separate so that the import service can stage in its sandboxed worker
    and publish in the server (`neuroalign.data.imports`).
    """
    tmp, name = new_staging_folder(root, name)
    stage_subject(tmp, name, subject, final=root / name, images_uint8=images_uint8, simulated=simulated,
                  source=source, extra_files=extra_files, sidecar_extra=sidecar_extra)
    return publish_folder(tmp, root, name)
