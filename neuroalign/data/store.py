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

Subject names for new subjects follow `neuroalign.data.names.check_subject_name`; a name is
taken when anything uses it in the root (`exists`). Writes are atomic (`neuroalign.data.writer`).

Demo subjects: `ensure_demo` creates the simulated subjects when the root `is_empty` (does not
exist or has no entry at all: the dashboard's first start); `make_demo_subjects` writes each
demo subject whose name is not taken. Those are the only two rules.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neuroalign.data.folder_check import CHECKS_DIR, folder_error, forget
from neuroalign.data.layout import decide_layout, istim_presentations
from neuroalign.data.matio import peek_mat, read_mat_variables
from neuroalign.data.names import IMPORT_FOLDER, check_subject_name, folder_name, name_taken
from neuroalign.data.simulate import make_demo_subjects
from neuroalign.data.subject import (IMAGE_VARIABLES, SIDECAR, Subject, load_pair, load_subject, read_sidecar,
                                     source_of, subject_files)
from neuroalign.data.report import ValidationReport
from neuroalign.data.writer import check_root, file_stamp, write_subject_folder

__all__ = ["SubjectInfo", "SubjectStore", "ValidationReport", "check_subject_name"]

logger = logging.getLogger(__name__)


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
    #: how this summary was read: "sidecar" | "header" | "load" (no header shortcut: fully loaded) |
    #: "check" (refused by the sandboxed check). Not the sidecar's `source` record (where the data came from).
    read_from: str = "sidecar"
    error: str | None = None  # set when the folder looks like a subject but cannot be read
    #: the MAT format of the files on disk; `format` is the format the subject was imported from
    #: (an imported v7.3 upload is stored as canonical v5 files: format "v7.3", stored_format "v5")
    stored_format: str = ""
    #: the user's original file names (browser upload) or paths (CLI) the subject was imported from
    source_files: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """The old name of `read_from` (it read as the sidecar's `source`, which it is not)."""
        return self.read_from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class SubjectStore:
    """Subjects under a data root (see module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()

    # -- queries ---------------------------------------------------------------------------------

    def _check_root(self) -> bool:
        """False when the root does not exist; ValueError when it is not a folder."""
        return check_root(self.root)

    def is_empty(self) -> bool:
        """True when the root does not exist or holds no entry at all (when the demo is created)."""
        if not self._check_root():
            return True
        try:
            return next((p for p in self.root.iterdir() if p.name != CHECKS_DIR), None) is None
        except OSError as exc:
            raise ValueError(f"cannot list the data root {self.root} ({exc.strerror or exc})") from exc

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
                if p.name.startswith(".") or p.name == IMPORT_FOLDER or not p.is_dir():
                    continue  # hidden (staging, checks), or the import folder: recordings waiting, not a subject
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
        return name_taken(self.root, name)

    def path(self, name: str) -> Path:
        """Folder of subject `name` (FileNotFoundError when it is not a subject)."""
        folder = self.root / folder_name(name)
        if not folder.is_dir():
            available = ", ".join(self.names()) or "none"
            raise FileNotFoundError(f"subject {name!r} not found in {self.root} (available: {available})")
        subject_files(folder)
        return folder

    def info(self, name: str) -> SubjectInfo:
        """Cheap summary of one subject: sidecar if current, else MAT header peek."""
        folder = self.path(name)
        sidecar = read_sidecar(folder)
        refused = folder_error(folder)  # a folder this package did not write: checked once in the sandbox
        if refused is not None:
            return SubjectInfo(folder.name, str(folder), 0, 0, (0, 0), False, "?",
                               bool((sidecar or {}).get("simulated", False)), "check",
                               f"refused by the sandboxed check of its files: {refused}")
        if sidecar is not None and self._sidecar_current(folder, sidecar):
            try:
                stored = str(sidecar["format"])
                source_format, files = source_of(sidecar)
                return SubjectInfo(folder.name, str(folder), int(sidecar["n_images"]), int(sidecar["n_neurons"]),
                                   tuple(int(v) for v in sidecar["image_shape"]), bool(sidecar["has_repeats"]),
                                   source_format or stored, bool(sidecar.get("simulated", False)), "sidecar",
                                   stored_format=stored, source_files=files)
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("ignoring malformed %s in %s: %s", SIDECAR, folder, exc)
        simulated = bool(sidecar.get("simulated", False)) if sidecar else False
        try:
            info = self._info_from_headers(folder, simulated)
        except (ValueError, OSError, MemoryError) as exc:
            return SubjectInfo(folder.name, str(folder), 0, 0, (0, 0), False, "?", simulated, "header",
                               _one_line(exc))
        info.stored_format = info.format
        return info

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
            return (list(files["images.mat"]) == file_stamp(images_path)
                    and list(files["responses.mat"]) == file_stamp(responses_path)
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
            _, _, shown, counts = istim_presentations(responses_path, istim, decision.n_images)
            n_images, has_repeats = int(shown.size), bool(counts.min() >= 2)
        fmt = img.format if img.format == resp.format else f"images {img.format}, responses {resp.format}"
        return SubjectInfo(folder.name, str(folder), n_images, decision.n_neurons, decision.image_hw,
                           has_repeats, fmt, simulated, "header")

    def load(self, name: str) -> Subject:
        """Full load of subject `name` (see `load_subject`)."""
        return load_subject(self.path(name))

    # -- changes ---------------------------------------------------------------------------------

    def validate(self, images_path: str | os.PathLike, responses_path: str | os.PathLike) -> ValidationReport:
        """Load and check a pair of files; ValueError/FileNotFoundError with a one-line reason when unusable
        or untrainable (`neuroalign.data.trainable`)."""
        return ValidationReport.from_subject(load_pair(images_path, responses_path, name="validate",
                                                       require_trainable=True))

    def import_subject(self, name: str, images_path: str | os.PathLike, responses_path: str | os.PathLike,
                       *, source_names: tuple[str, str] | None = None) -> SubjectInfo:
        """Check a MAT pair in the sandbox and write `<root>/<name>/Data/{images,responses}.mat` atomically
        (the import service, `neuroalign.data.imports`: parsed once, in the sandboxed worker).

        The stored files are canonical, reference-compatible MAT files (v5, or v7.3 beyond 2 GiB):
        `images` (N, H, W) float32 in [0, 1] and `responses` (N, K) float32, one row per image
        (+ `responses_repeats` (R, N, K) when repeats exist). The sidecar's `source` records where
        the data came from: `images_file` / `responses_file` (`source_names` when given, e.g. the
        names of a browser upload staged in a temporary folder, else the absolute paths read),
        `format` (the source format, e.g. "v7.3"), and the original layout, dtypes and scaling.
        Refuses unusable names, existing subjects and subjects that cannot be trained
        (`neuroalign.data.trainable`).
        """
        from neuroalign.data import imports

        self._check_root()
        imports.import_subject(self.root, name, imports.MatSource(images_path, responses_path),
                               source_names=source_names)
        info = self.info(check_subject_name(name))
        logger.info("imported subject %s (%d images x %d neurons) into %s", info.name, info.n_images,
                    info.n_neurons, self.root)
        return info

    def import_nwb(self, name: str, nwb_path: str | os.PathLike, *, images_path: str | os.PathLike | None = None,
                   options: Any = None, source_names: tuple[str, ...] | None = None, **option_fields: Any
                   ) -> SubjectInfo:
        """Import an NWB 2.x calcium-imaging session (`neuroalign.data.nwb`) as subject `name`, through the
        sandboxed import service like a MAT pair. `options` is a `NwbOptions` (or its fields as keywords:
        `series=`, `presentations=`, `templates=`, `index_column=`, `window=(start, end)`); `images_path`
        a .mat images file for an NWB file without stimulus templates."""
        from neuroalign.data import imports
        from neuroalign.data.nwb import NwbOptions

        if option_fields:
            base = (options or NwbOptions()).to_dict()
            base.update(option_fields)
            options = NwbOptions.from_dict(base)
        self._check_root()
        imports.import_subject(self.root, name, imports.NwbSource(nwb_path, images_path, options or NwbOptions()),
                               source_names=source_names)
        info = self.info(check_subject_name(name))
        logger.info("imported NWB subject %s (%d images x %d neurons) into %s", info.name, info.n_images,
                    info.n_neurons, self.root)
        return info

    def write_subject(self, name: str, subject: Subject, *, images_uint8: bool = False, simulated: bool = False,
                      source: dict[str, Any] | None = None, extra_files: dict[str, Any] | None = None,
                      sidecar_extra: dict[str, Any] | None = None) -> Path:
        """Write a Subject as `<root>/<name>` atomically (see `neuroalign.data.writer.write_subject_folder`).

        `extra_files` maps a file name to a callable(path) that writes it inside the new folder
        (e.g. the simulator's ground_truth.npz). Raises FileExistsError when `name` exists.
        """
        return write_subject_folder(self.root, name, subject, images_uint8=images_uint8, simulated=simulated,
                                    source=source, extra_files=extra_files, sidecar_extra=sidecar_extra)

    def delete(self, name: str) -> None:
        """Remove the folder of subject `name` (only ever inside the root; never follows a link)."""
        link = self.root / folder_name(name)
        if name == IMPORT_FOLDER:
            raise FileNotFoundError(f"{name!r} in {self.root} is the import folder (recordings waiting to be "
                                    "imported), not a subject; not deleting it")
        if link.is_symlink():
            raise FileNotFoundError(f"subject {name!r} in {self.root} is a symbolic link to {os.readlink(link)}; "
                                    "not deleting data outside the data root (remove the link yourself)")
        folder = link.resolve()
        if folder.parent != self.root or not folder.is_dir():
            raise FileNotFoundError(f"subject {name!r} not found in {self.root}")
        shutil.rmtree(folder)
        forget(folder)
        logger.info("deleted subject %s from %s", name, self.root)

    def ensure_demo(self, size: str = "default", seed: int = 0) -> list[str]:
        """Create the simulated demo subjects when the root `is_empty`; returns the names created."""
        if not self.is_empty():
            return []
        return make_demo_subjects(self.root, size=size, seed=seed)
