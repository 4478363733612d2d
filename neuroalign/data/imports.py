"""The import service: one way a subject enters the data folder, for the CLI, the dashboard and the library.

    source = MatSource(images, responses)           # or NwbSource(file.nwb, images=None, options=NwbOptions())
    check(source)                                   # -> CheckResult: the report (and preview), nothing written
    prepared = prepare(root, name, source)          # parsed once, in the sandbox, written into a staging folder
    publish(prepared)                               # the server only renames it into <root>/<name>
    import_subject(root, name, source)              # prepare + publish

* The name is checked once, when the staging folder `<root>/.tmp-<name>-<pid>-<random>` is made
  (`writer.new_staging_folder`); at `publish` the exclusive claim of `<root>/<name>` decides a race.
* The source is parsed once, in the sandboxed worker (`sandbox`, `check_worker` `op: "stage"`: memory
  and time limits, no torch), which also writes the canonical MAT files and `subject.json` (with the
  `source` record, `report.source_record`) into the staging folder. The server never parses an import.
* `publish` checks that the staged files are the ones the worker wrote (the inode stamps in
  `subject.json`), then claims the name and renames. A refused, failed or interrupted import leaves
  nothing behind; `discard` removes a prepared folder nobody publishes (the dashboard does when a
  check is dropped). Staging folders of a server that died go after an hour (`writer.remove_stale_tmp`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from neuroalign.data.folder_check import WRITTEN_KEY, file_stamps
from neuroalign.data.nwb import NwbOptions
from neuroalign.data.report import ValidationReport
from neuroalign.data.sandbox import CheckResult, run_request
from neuroalign.data.subject import read_sidecar, subject_files
from neuroalign.data.writer import new_staging_folder, publish_folder

__all__ = ["MatSource", "NwbSource", "Prepared", "Source", "check", "discard", "import_subject", "inventory",
           "prepare", "publish"]


@dataclass(frozen=True)
class MatSource:
    """A pair of MAT files: `images` (variable images/imgs) and `responses` (responses, istim, ...)."""

    images: Path
    responses: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", Path(self.images))
        object.__setattr__(self, "responses", Path(self.responses))

    def request(self) -> dict[str, Any]:
        return {"kind": "mat", "images": os.fspath(self.images), "responses": os.fspath(self.responses)}

    def names(self) -> list[str]:
        return [self.images.name, self.responses.name]


@dataclass(frozen=True)
class NwbSource:
    """An NWB 2.x file (`neuroalign.data.nwb`), with a .mat `images` file when it has no stimulus templates."""

    nwb: Path
    images: Path | None = None
    options: NwbOptions = field(default_factory=NwbOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nwb", Path(self.nwb))
        if self.images is not None:
            object.__setattr__(self, "images", Path(self.images))
        if isinstance(self.options, dict):
            object.__setattr__(self, "options", NwbOptions.from_dict(self.options))

    def request(self) -> dict[str, Any]:
        return {"kind": "nwb", "nwb": os.fspath(self.nwb),
                "images": None if self.images is None else os.fspath(self.images), "options": self.options.to_dict()}

    def names(self) -> list[str]:
        return [self.nwb.name] + ([self.images.name] if self.images is not None else [])


Source = Union[MatSource, NwbSource]


def _min_side() -> int:
    from neuroalign.data.trainable import min_image_side

    return min_image_side()


def check(source: Source, *, preview_path: str | os.PathLike | None = None, require_trainable: bool = True,
          memory_mb: int | None = None, seconds: float | None = None) -> CheckResult:
    """Check a source in the sandboxed worker: its ValidationReport (and preview arrays with `preview_path`);
    nothing is written. One-line ValueError / FileNotFoundError when it cannot be imported."""
    request = {"op": "check", **source.request(), "min_side": _min_side(), "trainable": bool(require_trainable)}
    return run_request(request, source.names(), preview_path=preview_path, memory_mb=memory_mb, seconds=seconds)[1]


def inventory(nwb: str | os.PathLike, *, memory_mb: int | None = None, seconds: float | None = None) -> dict[str, Any]:
    """What an NWB file offers (`nwb.inventory`: response series, presentations, templates), read in the sandbox."""
    request = {"op": "inventory", "kind": "nwb", "nwb": os.fspath(nwb), "min_side": _min_side()}
    return run_request(request, [Path(nwb).name], memory_mb=memory_mb, seconds=seconds)[0]["inventory"]


@dataclass
class Prepared:
    """A subject parsed and written by the worker into `folder` (a staging folder inside `root`),
    waiting to be published as `<root>/<name>`."""

    root: Path
    name: str
    folder: Path
    report: ValidationReport
    preview: dict | None = None
    peak_rss_bytes: int | None = None
    elapsed_s: float = 0.0
    #: the written files' stamps (size, mtime, inode, device) as the worker recorded them
    stamps: dict = field(default_factory=dict)

    def intact(self) -> bool:
        """Whether the staged files are still exactly those the worker wrote."""
        try:
            return bool(self.stamps) and file_stamps(self.folder) == self.stamps
        except (OSError, FileNotFoundError):
            return False


def prepare(root: str | os.PathLike, name: str, source: Source, *, source_names: Any = None,
            preview_path: str | os.PathLike | None = None, memory_mb: int | None = None,
            seconds: float | None = None) -> Prepared:
    """Check `name` and `source` and stage the subject (see module docstring); nothing is visible in the
    data folder until `publish`. `source_names` replaces the file paths recorded as the subject's source
    (e.g. the names a browser gave to an upload). Raises one-line ValueError / FileNotFoundError /
    FileExistsError (the name is taken), or OSError (a full disk: naming the file as it would have been)."""
    root = Path(root).expanduser().resolve()
    folder, name = new_staging_folder(root, name)  # the name is checked there, once
    try:
        request = {"op": "stage", **source.request(), "min_side": _min_side(), "trainable": True,
                   "stage": {"folder": os.fspath(folder), "name": name, "final": os.fspath(root / name),
                             "source_names": None if source_names is None else [str(n) if n else None
                                                                                 for n in source_names]}}
        _, result = run_request(request, source.names(), preview_path=preview_path, memory_mb=memory_mb,
                                seconds=seconds)
        subject_files(folder)  # the worker wrote both files
        sidecar = read_sidecar(folder) or {}
        stamps = sidecar.get(WRITTEN_KEY) or {}
        prepared = Prepared(root, name, folder, result.report, result.preview, result.peak_rss_bytes,
                            result.elapsed_s, stamps)
        if not prepared.intact():
            raise ValueError(f"the staged subject {name!r} is not what the import check wrote; import it again")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return prepared


def publish(prepared: Prepared) -> Path:
    """Rename a prepared subject into `<root>/<name>` (the exclusive claim of the name decides a race);
    refuses a staging folder whose files changed since the worker wrote them. Returns the subject folder."""
    if not prepared.intact():
        discard(prepared)
        raise ValueError(f"the staged files of {prepared.name!r} changed after the check (or were removed); "
                         "check the files again")
    return publish_folder(prepared.folder, prepared.root, prepared.name)


def discard(prepared: Prepared | None) -> None:
    """Remove a prepared subject's staging folder (no error when it is gone, e.g. published)."""
    if prepared is not None and prepared.folder.name.startswith(".tmp-"):
        shutil.rmtree(prepared.folder, ignore_errors=True)


def import_subject(root: str | os.PathLike, name: str, source: Source, *, source_names: Any = None,
                   memory_mb: int | None = None, seconds: float | None = None) -> Path:
    """`prepare` + `publish`: the subject folder `<root>/<name>`."""
    prepared = prepare(root, name, source, source_names=source_names, memory_mb=memory_mb, seconds=seconds)
    return publish(prepared)
