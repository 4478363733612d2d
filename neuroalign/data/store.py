"""The subject store: one folder per subject under a data root, in the reference layout.

    <root>/<subject>/Data/images.mat       variable `images` (or `imgs`)
    <root>/<subject>/Data/responses.mat    variable `responses` (+ optional `istim`, `responses_repeats`)
    <root>/<subject>/subject.json          sidecar written at import/generation (counts, format, ...)
    <root>/<subject>/ground_truth.npz      simulated subjects only: noiseless rates and repeats

A folder of the reference code (`M6/Data/...`) is a subject as is. `list()` reads the sidecar,
or peeks the MAT headers when there is none or the files changed since it was written.

Robustness: `list()` never raises for what is inside the root. Stray files, hidden folders and
folders without MAT files are skipped; a folder that looks like a subject (a `Data/` folder, or
one of the two files) but cannot be read is listed with `error` set. A root that does not exist
lists nothing; a root that is a file is a ValueError. Subject folders may be symbolic links (e.g.
to a reference-code data folder elsewhere); `delete` never follows them.

Subject names (`check_subject_name`, for new subjects): 1-100 characters and at most 200 UTF-8
bytes, normalised to Unicode NFC; any script is fine (e.g. "Maus-Zoë", "鼠1"), but not: empty or
surrounding spaces, path separators, a leading '.', '..' anywhere, a trailing '.', control or
invisible format characters, the characters < > : " | ? * (not allowed on Windows) or a Windows
device name (CON, PRN, AUX, NUL, COM1-9, LPT1-9, also with an extension). Existing folders with
other names are still listed and loadable.

Writes are atomic: the subject is written into `<root>/.tmp-<name>-<pid>-<random>`, the name is
claimed with an exclusive `mkdir` (so two concurrent imports of one name cannot both win, and a
folder someone else is creating is never replaced), then the temporary folder is renamed over
the empty claim. Any exception (including KeyboardInterrupt) removes both; temporary folders
left by a killed process are removed by a later write once that process is gone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import unicodedata
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neuroalign.data.matio import peek_mat, read_mat_variables, save_mat
from neuroalign.data.subject import (SIDECAR, IMAGE_VARIABLES, Subject, decide_layout, load_pair,
                                     load_subject, read_sidecar, subject_files)
from neuroalign.io_utils import atomic_write_json

logger = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"
_TMP_PATTERN = re.compile(r"^\.tmp-.+-(\d+)-[0-9a-f]{8}$")
_STALE_TMP_S = 3600.0
_MAX_NAME_CHARS = 100
_MAX_NAME_BYTES = 200
_WINDOWS_FORBIDDEN = set('<>:"|?*')
_WINDOWS_DEVICES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                    *(f"lpt{i}" for i in range(1, 10))}


@dataclass
class SubjectInfo:
    """Cheap summary of a stored subject (from the sidecar or the MAT headers)."""

    name: str
    path: str
    n_images: int
    n_neurons: int
    image_shape: tuple[int, int]
    has_repeats: bool
    format: str
    simulated: bool = False
    source: str = "sidecar"  # "sidecar" | "header" | "load" (no header shortcut: fully loaded)
    error: str | None = None  # set when the folder looks like a subject but cannot be read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ValidationReport:
    """What `SubjectStore.validate` found and decided for a pair of files."""

    images_path: str
    responses_path: str
    format: str
    images_variable: str
    images_shape: tuple[int, ...]
    images_dtype: str
    responses_shape: tuple[int, ...]
    responses_dtype: str
    image_layout: str
    response_orientation: str
    image_scaling: str
    n_images: int
    n_neurons: int
    image_shape: tuple[int, int]
    has_repeats: bool
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_subject(cls, subject: Subject) -> "ValidationReport":
        m = subject.meta
        return cls(m["images_file"], m["responses_file"], m["format"], m["images_variable"],
                   tuple(m["images_shape_original"]), m["images_dtype"], tuple(m["responses_shape_original"]),
                   m["responses_dtype"], m["image_layout"], m["response_orientation"], m["image_scaling"],
                   subject.n_images, subject.n_neurons, subject.image_shape, subject.repeats is not None,
                   list(m.get("notes", [])))

    def summary_lines(self) -> list[str]:
        """Human-readable lines for the CLI and the upload page."""
        lines = [
            f"format: {self.format}",
            f"images: {self.images_variable} {self.images_shape} {self.images_dtype}, layout {self.image_layout}, "
            f"{self.n_images} images of {self.image_shape[0]} x {self.image_shape[1]}",
            f"image scaling: {self.image_scaling}",
            f"responses: {self.responses_shape} {self.responses_dtype}, {self.response_orientation}, "
            f"{self.n_neurons} neurons",
            f"repeats: {'yes' if self.has_repeats else 'no'}",
        ]
        return lines + [f"note: {n}" for n in self.notes]


def check_subject_name(name: str) -> str:
    """Return `name` (NFC-normalised) if usable as a new subject folder name, else raise ValueError.

    The rules are in the module docstring.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("subject name is empty; expected a name such as 'M6'")
    name = unicodedata.normalize("NFC", name)
    if name != name.strip():
        raise ValueError(f"subject name {name!r} has leading/trailing spaces; expected a plain folder name")
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"subject name {name!r} contains a path separator; expected a plain folder name")
    if ".." in name or name.startswith("."):
        raise ValueError(f"subject name {name!r} starts with '.' or contains '..'; expected a plain folder name")
    if name.endswith("."):
        raise ValueError(f"subject name {name!r} ends with '.'; expected a plain folder name")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in name):
        raise ValueError(f"subject name {name!r} has control, invisible or undecodable characters; "
                         "expected visible characters")
    bad = sorted(set(name) & _WINDOWS_FORBIDDEN)
    if bad:
        raise ValueError(f"subject name {name!r} contains {' '.join(bad)}; expected a plain folder name "
                         f"without any of < > : \" | ? *")
    if name.split(".")[0].strip().lower() in _WINDOWS_DEVICES:
        raise ValueError(f"subject name {name!r} is a reserved device name on Windows; expected another name")
    if len(name) > _MAX_NAME_CHARS or len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        raise ValueError(f"subject name of {len(name)} characters ({len(name.encode('utf-8'))} UTF-8 bytes) is too "
                         f"long; expected at most {_MAX_NAME_CHARS} characters and {_MAX_NAME_BYTES} bytes")
    return name


def _folder_name(name: str) -> str:
    """Lenient check for names of existing folders: one path component inside the root."""
    if not isinstance(name, str) or not name or name in (".", "..") or "\0" in name \
            or "/" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"subject name {name!r} is not a plain folder name")
    return name


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _file_stamp(path: Path) -> list[int]:
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
        "files": {"images.mat": _file_stamp(images_path), "responses.mat": _file_stamp(responses_path)},
        "source": source or {}, **(extra or {}),
    }
    atomic_write_json(folder / SIDECAR, sidecar)
    return sidecar


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _check_written(data: Path, images_shape: tuple[int, ...], responses_shape: tuple[int, ...]) -> None:
    """Compare the headers of the files just written with what was meant to be written."""
    found = (peek_mat(data / "images.mat").variables.get("images", ((), ""))[0],
             peek_mat(data / "responses.mat").variables.get("responses", ((), ""))[0])
    if found != (tuple(images_shape), tuple(responses_shape)):
        raise ValueError(f"written files hold images {found[0]} and responses {found[1]}; expected "
                         f"{tuple(images_shape)} and {tuple(responses_shape)} (disk full or failing?)")


def _make_readable(folder: Path) -> None:
    """Atomic writes create 0600 files; give subject files the usual umask-based permissions."""
    umask = os.umask(0)
    os.umask(umask)
    for p in folder.rglob("*"):
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


class SubjectStore:
    """Subjects under a data root (see module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()

    # -- queries ---------------------------------------------------------------------------------

    def _check_root(self) -> bool:
        """False when the root does not exist; ValueError when it is not a folder."""
        if not self.root.exists():
            return False
        if not self.root.is_dir():
            raise ValueError(f"data root {self.root} is not a folder; expected a folder of subjects "
                             "(set --data-dir or NEUROALIGN_DATA_DIR)")
        return True

    def _entries(self) -> list[tuple[Path, bool]]:
        """(folder, complete) for every non-hidden folder that looks like a subject, sorted by name."""
        if not self._check_root():
            return []
        try:
            children = sorted(self.root.iterdir())
        except OSError as exc:
            raise ValueError(f"cannot list the data root {self.root} ({exc.strerror or exc})") from exc
        out = []
        for p in children:
            try:
                if p.name.startswith(".") or not p.is_dir():
                    continue
                try:
                    subject_files(p)
                    out.append((p, True))
                except FileNotFoundError:
                    if (p / "Data").is_dir() or any((p / f).exists() for f in ("images.mat", "responses.mat")):
                        out.append((p, False))  # looks like a subject but is incomplete: reported
            except OSError as exc:  # unreadable entry (permissions, I/O error): skip, never crash
                logger.warning("skipping %s in the data root: %s", p.name, exc)
        return out

    def _candidate_folders(self) -> list[Path]:
        return [p for p, complete in self._entries() if complete]

    def names(self) -> list[str]:
        """Names of the subject folders (those holding images.mat and responses.mat), sorted."""
        return [p.name for p in self._candidate_folders()]

    def exists(self, name: str) -> bool:
        """Whether anything (a folder, a file, even a dangling link) already uses `name` in the root."""
        return os.path.lexists(self.root / _folder_name(name))

    def path(self, name: str) -> Path:
        """Folder of subject `name` (FileNotFoundError when it is not a subject)."""
        folder = self.root / _folder_name(name)
        if not folder.is_dir():
            available = ", ".join(self.names()) or "none"
            raise FileNotFoundError(f"subject {name!r} not found in {self.root} (available: {available})")
        subject_files(folder)
        return folder

    def info(self, name: str) -> SubjectInfo:
        """Cheap summary of one subject: sidecar if current, else MAT header peek."""
        folder = self.path(name)
        sidecar = read_sidecar(folder)
        if sidecar is not None and self._sidecar_current(folder, sidecar):
            try:
                return SubjectInfo(folder.name, str(folder), int(sidecar["n_images"]), int(sidecar["n_neurons"]),
                                   tuple(int(v) for v in sidecar["image_shape"]), bool(sidecar["has_repeats"]),
                                   str(sidecar["format"]), bool(sidecar.get("simulated", False)), "sidecar")
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("ignoring malformed %s in %s: %s", SIDECAR, folder, exc)
        simulated = bool(sidecar.get("simulated", False)) if sidecar else False
        try:
            return self._info_from_headers(folder, simulated)
        except (ValueError, OSError, MemoryError) as exc:
            return SubjectInfo(folder.name, str(folder), 0, 0, (0, 0), False, "?", simulated, "header",
                               _one_line(exc))

    def list(self) -> list[SubjectInfo]:
        """Summaries of every subject, without loading any data (never raises for the root's contents)."""
        out = []
        for folder, complete in self._entries():
            if complete:
                try:
                    out.append(self.info(folder.name))
                    continue
                except Exception as exc:  # noqa: BLE001 - one bad folder must not hide the others
                    error = _one_line(exc)
            else:
                error = "incomplete subject folder: expected Data/images.mat and Data/responses.mat"
            out.append(SubjectInfo(folder.name, str(folder), 0, 0, (0, 0), False, "?", False, "header", error))
        return out

    @staticmethod
    def _sidecar_current(folder: Path, sidecar: dict[str, Any]) -> bool:
        try:
            images_path, responses_path = subject_files(folder)
            files = sidecar["files"]
            return (list(files["images.mat"]) == _file_stamp(images_path)
                    and list(files["responses.mat"]) == _file_stamp(responses_path)
                    and all(k in sidecar for k in ("n_images", "n_neurons", "image_shape", "has_repeats", "format")))
        except (KeyError, TypeError, OSError):
            return False

    @staticmethod
    def _info_from_headers(folder: Path, simulated: bool) -> SubjectInfo:
        images_path, responses_path = subject_files(folder)
        img = peek_mat(images_path)
        resp = peek_mat(responses_path)
        var = next((v for v in IMAGE_VARIABLES if v in img.variables), None)
        if var is None:
            raise ValueError(f"{images_path.name}: no 'images' or 'imgs'; found {img.describe()}")
        n_trials = None
        has_repeats = "responses_repeats" in resp.variables
        if "responses" not in resp.variables:
            # e.g. a Stringer et al. recording (struct `stim`): no header shortcut, load it once
            s = load_pair(images_path, responses_path, name=folder.name)
            return SubjectInfo(folder.name, str(folder), s.n_images, s.n_neurons, s.image_shape,
                               s.repeats is not None, s.meta["format"], simulated, "load")
        if "istim" in resp.variables:
            # istim is small (one id per trial): read it to count trials and presentations
            istim = read_mat_variables(responses_path, ["istim"])[0]["istim"].reshape(-1)
            n_trials = int(istim.size)
        decision = decide_layout(img.variables[var][0], resp.variables["responses"][0], n_trials,
                                 images_path.name, responses_path.name)
        n_images = decision.n_images
        if n_trials is not None:
            ids = istim[(istim >= 1) & (istim <= decision.n_images)].astype(np.int64)
            counts = np.bincount(ids, minlength=decision.n_images + 1)[1:]
            n_images = int((counts > 0).sum())
            has_repeats = bool(counts[counts > 0].min() >= 2) if n_images else False
        fmt = img.format if img.format == resp.format else f"images {img.format}, responses {resp.format}"
        return SubjectInfo(folder.name, str(folder), n_images, decision.n_neurons, decision.image_hw,
                           has_repeats, fmt, simulated, "header")

    def load(self, name: str) -> Subject:
        """Full load of subject `name` (see `load_subject`)."""
        return load_subject(self.path(name))

    # -- changes ---------------------------------------------------------------------------------

    def validate(self, images_path: str | os.PathLike, responses_path: str | os.PathLike) -> ValidationReport:
        """Load and check a pair of files; ValueError/FileNotFoundError with a one-line reason when unusable."""
        return ValidationReport.from_subject(load_pair(images_path, responses_path, name="validate"))

    def import_subject(self, name: str, images_path: str | os.PathLike, responses_path: str | os.PathLike) -> SubjectInfo:
        """Validate, then write `<root>/<name>/Data/{images,responses}.mat` atomically.

        The stored files are canonical, reference-compatible MAT files (v5, or v7.3 beyond 2 GiB):
        `images` (N, H, W) float32 in [0, 1] and `responses` (N, K) float32, one row per image
        (+ `responses_repeats` (R, N, K) when repeats exist). The original layout, dtypes and
        scaling are recorded in the sidecar. Refuses unusable names and existing subjects.
        """
        name = check_subject_name(name)
        self._check_root()
        if self.exists(name):
            raise FileExistsError(f"subject {name!r} already exists in {self.root}; choose another name or delete it")
        subject = load_pair(images_path, responses_path, name=name)
        source = {k: subject.meta[k] for k in ("images_file", "responses_file", "format", "images_variable",
                                               "images_shape_original", "images_dtype", "responses_shape_original",
                                               "responses_dtype", "image_layout", "response_orientation",
                                               "image_scaling", "notes")}
        self.write_subject(name, subject, source=source)
        logger.info("imported subject %s (%d images x %d neurons) into %s", name, subject.n_images,
                    subject.n_neurons, self.root)
        return self.info(name)

    def write_subject(self, name: str, subject: Subject, *, images_uint8: bool = False, simulated: bool = False,
                      source: dict[str, Any] | None = None, extra_files: dict[str, Any] | None = None,
                      sidecar_extra: dict[str, Any] | None = None) -> Path:
        """Write a Subject as `<root>/<name>` through a temporary folder inside the root and a rename.

        `extra_files` maps a file name to a callable(path) that writes it inside the new folder
        (e.g. the simulator's ground_truth.npz). Raises FileExistsError when `name` exists.
        """
        name = check_subject_name(name)
        self._check_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_tmp()
        target = self.root / name
        if self.exists(name):
            raise FileExistsError(f"subject {name!r} already exists in {self.root}; choose another name or delete it")
        tmp = self.root / f"{_TMP_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        claimed = False
        try:
            data = tmp / "Data"
            data.mkdir(parents=True)
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
            write_sidecar(tmp, subject, name=name, simulated=simulated, source=source,
                          extra={"format": fmt, **(sidecar_extra or {})})
            _make_readable(tmp)
            try:
                os.mkdir(target)  # exclusive claim: fails when anything (even an empty folder) has the name
            except FileExistsError:
                raise FileExistsError(f"subject {name!r} already exists in {self.root} (created meanwhile); "
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
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if claimed:
                try:
                    os.rmdir(target)  # only if still our empty claim
                except OSError:
                    pass
            raise
        return target  # the rename keeps file sizes and mtimes: the sidecar stays current

    def delete(self, name: str) -> None:
        """Remove the folder of subject `name` (only ever inside the root; never follows a link)."""
        link = self.root / _folder_name(name)
        if link.is_symlink():
            raise FileNotFoundError(f"subject {name!r} in {self.root} is a symbolic link to {os.readlink(link)}; "
                                    "not deleting data outside the data root (remove the link yourself)")
        folder = link.resolve()
        if folder.parent != self.root or not folder.is_dir():
            raise FileNotFoundError(f"subject {name!r} not found in {self.root}")
        shutil.rmtree(folder)
        logger.info("deleted subject %s from %s", name, self.root)

    def _remove_stale_tmp(self) -> None:
        """Remove temporary folders of writes whose process is gone (killed mid-write) and are old."""
        try:
            entries = list(self.root.iterdir())
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
            if old and not _pid_alive(int(m.group(1))):
                logger.info("removing stale temporary folder %s", p)
                shutil.rmtree(p, ignore_errors=True)

    def ensure_demo(self, size: str = "default", seed: int = 0) -> list[str]:
        """Create the simulated demo subjects when the root holds no subject; returns the names created."""
        if self.names():
            return []
        from neuroalign.data.simulate import make_demo_subjects

        return make_demo_subjects(self.root, size=size, seed=seed)
