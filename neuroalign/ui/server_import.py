"""Import from the server: what the configured import folders hold, offered as a list to pick from.

Recordings too large for a browser upload (a 10,000-neuron NWB session is gigabytes) are copied to
an import folder on the server (`NEUROALIGN_IMPORT_ROOTS`, default `<data folder>/incoming`,
`paths.import_roots`) and imported from there through the same check, preview and Save as an upload
(`ui.upload.stage_files`, the import service). Kept free of widgets so it can be tested directly.

Only what `scan` finds is offered, and every path is checked again when it is used (`resolve`):
a path must lie inside an import folder with its links followed (`paths.inside_roots`), so a
symbolic link that leads out of the import folders is neither listed nor read. The page never
takes a typed path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from neuroalign import paths
from neuroalign.data.matio.common import human

#: how deep below an import folder the scan looks, and how many entries it visits at most
MAX_DEPTH = 4
MAX_ENTRIES = 5000


@dataclass(frozen=True)
class Candidate:
    """Something importable in an import folder: an NWB file or a subject folder (a MAT pair)."""

    kind: str  # "nwb" | "mat"
    label: str  # what the page shows: "<import folder>/<relative path>"
    paths: tuple[Path, ...]  # (file.nwb,) or (images.mat, responses.mat), links resolved
    size: int
    name: str  # the default subject name (file stem or folder name)

    def describe(self) -> str:
        what = "NWB file" if self.kind == "nwb" else "MAT pair"
        return f"{self.label}  ({what}, {human(self.size)})"


@dataclass
class Scan:
    """What `scan` found: candidates, every .mat file (for a pair picked by hand, or an NWB file's images),
    and notes (links leading outside, a scan cut short, missing folders)."""

    candidates: list[Candidate] = field(default_factory=list)
    mat_files: list[tuple[str, Path]] = field(default_factory=list)  # (label, resolved path)
    notes: list[str] = field(default_factory=list)
    roots: dict[str, Path] = field(default_factory=dict)


def _inside(path: Path, roots: dict[str, Path]) -> Path | None:
    try:
        return paths.inside_roots(path, roots, follow_links=True)
    except ValueError:
        return None


def _size(p: Path) -> int:
    try:
        return int(p.stat().st_size)
    except OSError:
        return 0


def scan(roots: dict[str, Path] | None = None, *, max_depth: int = MAX_DEPTH, max_entries: int = MAX_ENTRIES) -> Scan:
    """Walk the import folders (not following links into folders; hidden entries skipped) for `.nwb`
    files and subject folders (`images.mat` + `responses.mat` in the folder or its `Data/`)."""
    roots = paths.import_roots() if roots is None else roots
    out = Scan(roots=roots)
    outside, visited = 0, 0
    seen: set[Path] = set()
    for label, root in roots.items():
        if not root.is_dir():
            out.notes.append(f"the import folder {label} does not exist (create it and copy recordings there)")
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            here = Path(dirpath)
            depth = len(here.relative_to(root).parts)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < max_depth else []
            visited += len(dirnames) + len(filenames)
            if visited > max_entries:
                out.notes.append(f"the scan stopped after {max_entries} entries; put recordings nearer the top of "
                                 "an import folder")
                return _sorted(out, outside)
            names = set(filenames)
            for d in list(dirnames):
                if (here / d).is_symlink() and _inside(here / d, roots) is None:
                    outside += 1
                    dirnames.remove(d)
            for folder in (here / "Data", here):  # the reference layout first; os.walk visits parents first
                if not ((folder / "images.mat").is_file() and (folder / "responses.mat").is_file()):
                    continue
                pair = tuple(_inside(folder / f, roots) for f in ("images.mat", "responses.mat"))
                if None in pair:
                    outside += 1
                elif pair[0] not in seen:
                    seen.add(pair[0])
                    rel = here.relative_to(root)
                    shown = f"{label}/{rel}" if str(rel) != "." else label
                    out.candidates.append(Candidate("mat", shown, pair, sum(_size(q) for q in pair),
                                                    here.name if str(rel) != "." else "subject"))
                break
            for f in sorted(names):
                if f.startswith("."):
                    continue
                p = here / f
                low = f.lower()
                if not (low.endswith(".nwb") or low.endswith(".mat")):
                    continue
                resolved = _inside(p, roots)
                if resolved is None or not resolved.is_file():
                    outside += resolved is None
                    continue
                shown = f"{label}/{p.relative_to(root)}"
                if low.endswith(".nwb"):
                    out.candidates.append(Candidate("nwb", shown, (resolved,), _size(resolved), f[:-4] or "subject"))
                else:
                    out.mat_files.append((shown, resolved))
    return _sorted(out, outside)


def _sorted(out: Scan, outside: int) -> Scan:
    if outside:
        out.notes.append(f"{outside} symbolic link{'s' if outside > 1 else ''} lead{'' if outside > 1 else 's'} "
                         "outside the import folders and {} not offered".format("are" if outside > 1 else "is"))
    out.candidates.sort(key=lambda c: c.label.lower())
    out.mat_files.sort(key=lambda m: m[0].lower())
    return out


def resolve(path: str | os.PathLike, roots: dict[str, Path] | None = None) -> Path:
    """`path` with its links followed, when it is a file inside an import folder; else a one-line ValueError
    (checked again when used: a link changed after the scan cannot lead out)."""
    roots = paths.import_roots() if roots is None else roots
    try:
        resolved = paths.inside_roots(path, roots, follow_links=True)
    except ValueError:
        raise ValueError(f"{Path(path).name} is not inside the import folders ({', '.join(roots)}); only files "
                         "there can be imported from the server") from None
    if not resolved.is_file():
        raise FileNotFoundError(f"{Path(path).name}: not found in the import folders (moved or removed?); scan again")
    return resolved


def stamp(p: Path) -> tuple:
    """(path, size, mtime) of a file: part of a staged import's identity (a file replaced since its check
    drops the preview)."""
    try:
        st = p.stat()
        return (str(p), int(st.st_size), int(st.st_mtime_ns))
    except OSError:
        return (str(p), None, None)
