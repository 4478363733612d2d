"""Subject folders this package did not write are checked once in the sandbox before any in-process read.

A folder copied into the data folder by hand (e.g. a reference-code `M6/Data/...`) holds untrusted
MAT files like any upload: a pathological file could crash the process that parses it. So every
in-process read of a subject folder (`load_subject`, and `SubjectStore.info`/`list`, which peek its
headers) first asks `ensure_checked(folder)`:

* a folder written by this package (`writer.write_subject_folder`: imports, after their own sandbox
  check, and the simulator) stamps its files in `subject.json` (`written_files`) and is trusted
  while they are exactly those files;
* any other folder is loaded once by the sandboxed check worker (`sandbox.check_pair` with its
  memory and time limits, `require_trainable=False`); the result, passed or refused with its
  one-line reason, is recorded;
* a record counts only while both MAT files keep the size, mtime, inode and device it recorded:
  a file replaced, edited or copied elsewhere is checked again. A refusal caused by a limit is
  checked again when the limits change.

Check records are small JSON files in `<root>/.neuroalign-checks/` (one per folder name; a hidden
folder, never listed as a subject, created only when a folder was checked), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from neuroalign.io_utils import atomic_write_json

logger = logging.getLogger(__name__)

CHECKS_DIR = ".neuroalign-checks"
#: the `subject.json` key where `writer.write_subject_folder` stamps the files it wrote
WRITTEN_KEY = "written_files"
_VERSION = 1


def _files(folder: Path) -> tuple[Path, Path]:
    from neuroalign.data.subject import subject_files

    return subject_files(folder)


def _stamp(path: Path) -> list[int]:
    """[size, mtime ns, inode, device] of a file (following links): a copy or an edit changes it."""
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ino), int(st.st_dev)]


def file_stamps(folder: Path) -> dict[str, list[int]]:
    """The stamps of both MAT files of `folder`, as records (and `subject.json`'s `written`) keep them."""
    images, responses = _files(folder)
    return {"images.mat": _stamp(images), "responses.mat": _stamp(responses)}


def record_file(folder: Path) -> Path:
    """Where the record of `folder` (`<root>/<name>`) is kept."""
    digest = hashlib.sha256(os.fsencode(folder.name)).hexdigest()[:32]
    return folder.parent / CHECKS_DIR / f"{digest}.json"


def _written(folder: Path, stamps: dict[str, list[int]]) -> bool:
    """Whether `subject.json` says this package wrote exactly these files (same inodes: not a copy)."""
    from neuroalign.data.subject import read_sidecar

    sidecar = read_sidecar(folder)
    return bool(sidecar) and sidecar.get(WRITTEN_KEY) == stamps


def current_record(folder: Path) -> dict[str, Any] | None:
    """The record of `folder` while its files are the ones recorded, else None."""
    try:
        stamps = file_stamps(folder)
    except OSError:
        return None
    if _written(folder, stamps):
        return {"ok": True, "how": "written", "error": None}
    try:
        data = json.loads(record_file(folder).read_text("utf-8"))
    except (OSError, ValueError):  # no record, an unreadable one, or files missing
        return None
    if not isinstance(data, dict) or data.get("version") != _VERSION or data.get("name") != folder.name:
        return None
    if data.get("files") != stamps or not isinstance(data.get("ok"), bool):
        return None
    if not data["ok"] and data.get("limits"):
        from neuroalign.data.sandbox import check_limits

        try:
            limits = check_limits()
        except ValueError:
            return data
        if data["limits"] != [limits.memory_mb, limits.seconds]:
            return None  # refused at a limit that has changed since: check again
    return data


def _write(folder: Path, ok: bool, how: str, error: str | None = None, limits: list | None = None) -> None:
    target = record_file(folder)
    try:
        record = {"version": _VERSION, "name": folder.name, "files": file_stamps(folder), "ok": ok, "how": how,
                  "error": error, "limits": limits, "checked": time.strftime("%Y-%m-%dT%H:%M:%S")}
        target.parent.mkdir(exist_ok=True)
        atomic_write_json(target, record)
    except OSError as exc:  # a read-only data folder: the check is simply run again next time
        logger.warning("cannot record the check of %s in %s: %s", folder.name, target.parent, exc)


def forget(folder: Path) -> None:
    """Remove the record of `folder` (and the records folder when it is left empty)."""
    target = record_file(folder)
    try:
        target.unlink()
    except OSError:
        return
    try:
        target.parent.rmdir()
    except OSError:
        pass


def folder_error(folder: Path) -> str | None:
    """None when `folder` may be read in-process; else the one-line reason its files were refused.

    Runs the sandboxed check when the folder has no current record (see module docstring).
    FileNotFoundError when its MAT files are missing.
    """
    from neuroalign.data.sandbox import CheckLimitExceeded, check_limits, check_pair

    folder = Path(folder)
    record = current_record(folder)
    if record is not None:
        return None if record["ok"] else str(record.get("error") or "refused by the sandboxed check")
    images, responses = _files(folder)
    limits = check_limits()
    t0 = time.perf_counter()
    error, at_limit = None, None
    try:
        check_pair(images, responses, require_trainable=False, memory_mb=limits.memory_mb, seconds=limits.seconds)
    except CheckLimitExceeded as exc:
        error, at_limit = " ".join(str(exc).split()), [limits.memory_mb, limits.seconds]
    except FileNotFoundError:
        raise
    except ValueError as exc:
        error = " ".join(str(exc).split())
    logger.info("checked subject folder %s in the sandbox in %.1f s: %s", folder, time.perf_counter() - t0,
                error or "passed")
    _write(folder, error is None, "sandbox", error, at_limit)
    return error


def ensure_checked(folder: Path) -> None:
    """ValueError (one line naming the folder and the reason) unless `folder` may be read in-process."""
    error = folder_error(folder)
    if error is not None:
        raise ValueError(f"subject folder {Path(folder).name!r} was refused by the sandboxed check of its files "
                         f"({error}); fix or replace them")
