"""The subject store: one folder per subject under a data root, in the reference layout.

    <root>/<subject>/Data/images.mat       variable `images` (or `imgs`)
    <root>/<subject>/Data/responses.mat    variable `responses` (+ optional `istim`, `responses_repeats`)
    <root>/<subject>/subject.json          sidecar written at import/generation (counts, format, ...)
    <root>/<subject>/ground_truth.npz      simulated subjects only: noiseless rates and repeats

A folder of the reference code (`M6/Data/...`) is a subject as is. `list()` reads the sidecar,
or peeks the MAT headers when there is none or the files changed since it was written.
"""

from __future__ import annotations

import logging
import os
import shutil
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
    """Return `name` if usable as a subject folder name, else raise ValueError saying why."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("subject name is empty; expected a name such as 'M6'")
    if name != name.strip():
        raise ValueError(f"subject name {name!r} has leading/trailing spaces")
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"subject name {name!r} contains a path separator; expected a plain folder name")
    if ".." in name or name.startswith("."):
        raise ValueError(f"subject name {name!r} starts with '.' or contains '..'; expected a plain folder name")
    if any(ord(c) < 32 for c in name) or len(name) > 100:
        raise ValueError(f"subject name {name!r} has control characters or more than 100 characters")
    return name


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

    def _candidate_folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        out = []
        for p in sorted(self.root.iterdir()):
            if not p.is_dir() or p.name.startswith("."):
                continue
            try:
                subject_files(p)
            except FileNotFoundError:
                continue
            out.append(p)
        return out

    def names(self) -> list[str]:
        """Names of the subject folders (those holding images.mat and responses.mat), sorted."""
        return [p.name for p in self._candidate_folders()]

    def exists(self, name: str) -> bool:
        return (self.root / check_subject_name(name)).exists()

    def path(self, name: str) -> Path:
        """Folder of subject `name` (FileNotFoundError when it is not a subject)."""
        folder = self.root / check_subject_name(name)
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
            return SubjectInfo(folder.name, str(folder), int(sidecar["n_images"]), int(sidecar["n_neurons"]),
                               tuple(sidecar["image_shape"]), bool(sidecar["has_repeats"]), str(sidecar["format"]),
                               bool(sidecar.get("simulated", False)), "sidecar")
        simulated = bool(sidecar.get("simulated", False)) if sidecar else False
        try:
            return self._info_from_headers(folder, simulated)
        except ValueError as exc:
            return SubjectInfo(folder.name, str(folder), 0, 0, (0, 0), False, "?", simulated, "header", str(exc))

    def list(self) -> list[SubjectInfo]:
        """Summaries of every subject, without loading any data."""
        return [self.info(p.name) for p in self._candidate_folders()]

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
        check_subject_name(name)
        target = self.root / name
        if target.exists():
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
        check_subject_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / name
        tmp = self.root / f"{_TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        try:
            data = tmp / "Data"
            data.mkdir(parents=True)
            imgs = subject.images[:, 0]
            if images_uint8:
                imgs = np.clip(np.round(imgs * 255.0), 0, 255).astype(np.uint8)
            save_mat(data / "images.mat", {"images": np.ascontiguousarray(imgs)})
            resp_vars = {"responses": subject.responses.astype(np.float32)}
            if subject.repeats is not None:
                resp_vars["responses_repeats"] = subject.repeats.astype(np.float32)
            save_mat(data / "responses.mat", resp_vars)
            for fname, writer in (extra_files or {}).items():
                writer(tmp / fname)
            written = load_subject(tmp)  # re-read: the sidecar describes what is really on disk
            write_sidecar(tmp, written, name=name, simulated=simulated, source=source, extra=sidecar_extra)
            _make_readable(tmp)
            if target.exists():
                raise FileExistsError(f"subject {name!r} already exists in {self.root}")
            try:
                os.rename(tmp, target)
            except OSError as exc:  # another process created the target in between
                if target.exists():
                    raise FileExistsError(f"subject {name!r} already exists in {self.root}") from exc
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target  # the rename keeps file sizes and mtimes: the sidecar stays current

    def delete(self, name: str) -> None:
        """Remove the folder of subject `name` (only ever inside the root)."""
        folder = (self.root / check_subject_name(name)).resolve()
        if folder.parent != self.root or not folder.is_dir():
            raise FileNotFoundError(f"subject {name!r} not found in {self.root}")
        shutil.rmtree(folder)
        logger.info("deleted subject %s from %s", name, self.root)

    def ensure_demo(self, size: str = "default", seed: int = 0) -> list[str]:
        """Create the simulated demo subjects when the root holds no subject; returns the names created."""
        if self.names():
            return []
        from neuroalign.data.simulate import make_demo_subjects

        return make_demo_subjects(self.root, size=size, seed=seed)
