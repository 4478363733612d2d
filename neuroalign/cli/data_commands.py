"""Data commands: `demo-data`, `list`, `validate`, `import` (all take `--data-dir`).

Every failure a user can meet here (bad files, bad names, a full or read-only disk, too little
memory) reaches the CLI entry point as a one-line ValueError/FileNotFoundError/FileExistsError,
which prints it and exits with code 2: never a traceback.

`validate` and `import` take a MAT pair (`--images I.mat --responses R.mat`) or an NWB file
(`--nwb F.nwb`, with `--images I.mat` only when it has no stimulus templates, and the NWB choices
`--series`, `--presentations`, `--templates`, `--index-column`, `--window START END`). Both go
through the import service (`neuroalign.data.imports`): the source is parsed once, in the sandboxed
worker (memory and time limits, $NEUROALIGN_CHECK_MEMORY_MB / $NEUROALIGN_CHECK_SECONDS; a file
that makes it hit a limit is refused like any other bad file), which stages the subject's canonical
files; `import` then renames them into place, recording the absolute paths it was given as the source.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Callable

from neuroalign.data import SubjectStore, imports
from neuroalign.data.names import check_subject_name
from neuroalign.data.nwb import DEFAULT_WINDOW, INDEX_COLUMNS, SERIES_PREFERENCE, NwbOptions
from neuroalign.data.simulate import SIZES, make_demo_subjects
from neuroalign.paths import data_dir
from neuroalign.text import printable


def _one_line_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn OSError (no space, read-only, name too long, ...) and MemoryError into one-line ValueErrors."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (ValueError, FileNotFoundError, FileExistsError, KeyboardInterrupt):
            raise
        except MemoryError as exc:
            raise ValueError("not enough memory for this command; free memory or use a larger machine") from exc
        except OSError as exc:
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            raise ValueError(f"{exc.strerror or type(exc).__name__}{where}") from exc

    return wrapped


def _out(text: str) -> None:
    """print() that never fails on characters the terminal cannot encode (e.g. odd folder names) and
    prints non-printable ones (terminal escape sequences in a variable name) escaped."""
    enc = getattr(sys.stdout, "encoding", None) or "utf-8"
    print(printable(text).encode(enc, errors="backslashreplace").decode(enc, errors="replace"))


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="subject data root (default: $NEUROALIGN_DATA_DIR or ./data)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the data sub-commands to the CLI."""
    p = sub.add_parser("demo-data", help="create the embedded simulated subjects (sim-M1, sim-M2)")
    _add_data_dir(p)
    p.add_argument("--size", choices=list(SIZES), default="default",
                   help="tiny: 160 images x 48 neurons (tests); default: 1,400 x 450 (~20 s); large: 2,800 x 2,000; "
                        "full: 2,800 x 10,000 (the real scale: minutes, ~0.7 GB per subject)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    p.add_argument("--force", action="store_true", help="replace existing simulated subjects of the same name")
    p.set_defaults(handler=cmd_demo_data)

    p = sub.add_parser("list", help="list subjects: images, neurons, repeats, format")
    _add_data_dir(p)
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("validate", help="check an images/responses .mat pair or an NWB file (exit 0 if importable)")
    _add_data_dir(p)
    _add_source(p)
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("import", help="validate, then add a subject to the data root (atomically)")
    _add_data_dir(p)
    p.add_argument("--name", default=None,
                   help="subject name (a plain folder name, e.g. M6; required for .mat, default for --nwb: the file "
                        "name without .nwb)")
    _add_source(p)
    p.set_defaults(handler=cmd_import)


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", default=None,
                   help="images .mat file (variable images or imgs); with --nwb only for a file without stimulus "
                        "templates")
    p.add_argument("--responses", default=None, help="responses .mat file (variable responses, optional istim)")
    g = p.add_argument_group("NWB files (calcium imaging; README: NWB files)")
    g.add_argument("--nwb", default=None, metavar="FILE", help="an NWB 2.x file instead of --images/--responses")
    g.add_argument("--series", nargs="+", default=None, metavar="NAME",
                   help="responses in processing/ophys: a container (one series per imaging plane, concatenated) or "
                        "CONTAINER/SERIES names (default: the first of " + ", ".join(SERIES_PREFERENCE) + ")")
    g.add_argument("--presentations", default=None, metavar="NAME",
                   help="the IndexSeries or intervals table of the presentations (default: the only one)")
    g.add_argument("--templates", default=None, metavar="NAME",
                   help="the stimulus templates the presentations index (default: the linked or only one)")
    g.add_argument("--index-column", default=None, metavar="NAME",
                   help="image-index column of an intervals table (default: the first of " + ", ".join(INDEX_COLUMNS)
                        + ")")
    g.add_argument("--window", nargs=2, type=float, default=None, metavar=("START", "END"),
                   help=f"response window in seconds after each onset: the mean of the frames in [START, END) "
                        f"(default {DEFAULT_WINDOW[0]:g} {DEFAULT_WINDOW[1]:g})")


def _source(args: argparse.Namespace) -> imports.Source:
    """The import source the flags name: an NWB file, or a MAT pair (one-line ValueError otherwise)."""
    nwb_flags = [f"--{k.replace('_', '-')}" for k in ("series", "presentations", "templates", "index_column", "window")
                 if getattr(args, k) is not None]
    if args.nwb is not None:
        if args.responses is not None:
            raise ValueError("--responses is for .mat pairs; an NWB file holds its responses (use --nwb alone, with "
                             "--images only for a file without stimulus templates)")
        options = NwbOptions(series=tuple(args.series or ()), presentations=args.presentations,
                             templates=args.templates, index_column=args.index_column,
                             window=tuple(args.window) if args.window is not None else DEFAULT_WINDOW)
        return imports.NwbSource(args.nwb, args.images, options)
    if nwb_flags:
        raise ValueError(f"{' '.join(nwb_flags)} only apply to NWB files (--nwb FILE)")
    if args.images is None or args.responses is None:
        raise ValueError("expected --images I.mat --responses R.mat, or --nwb FILE.nwb")
    return imports.MatSource(args.images, args.responses)


@_one_line_errors
def cmd_demo_data(args: argparse.Namespace) -> int:
    root = data_dir(args.data_dir)
    t0 = time.perf_counter()
    names = make_demo_subjects(root, size=args.size, seed=args.seed, overwrite=args.force)
    if names:
        _out(f"created {', '.join(names)} in {root} ({time.perf_counter() - t0:.1f} s)")
    else:
        _out(f"demo subjects already exist in {root} (use --force to regenerate)")
    return 0


@_one_line_errors
def cmd_list(args: argparse.Namespace) -> int:
    store = SubjectStore(data_dir(args.data_dir))
    infos = store.list()
    if not infos:
        _out(f"no subjects in {store.root} (run `python -m neuroalign demo-data` or `import`)")
        return 0
    header = f"{'name':<20} {'images':>7} {'neurons':>8} {'image':>9} {'repeats':>7}  {'format':<8} {'kind':<9} source"
    _out(header)
    for i in infos:
        if i.error:
            _out(f"{i.name:<20} unreadable: {i.error}")
            continue
        shape = f"{i.image_shape[0]}x{i.image_shape[1]}"
        # format: what the subject was imported from (the stored files are canonical v5 or v7.3)
        source = " + ".join(Path(f).name for f in i.source_files) if i.source_files else "-"
        _out(f"{i.name:<20} {i.n_images:>7} {i.n_neurons:>8} {shape:>9} {'yes' if i.has_repeats else 'no':>7}  "
             f"{i.format:<8} {'simulated' if i.simulated else 'recorded':<9} {source}")
    return 0


@_one_line_errors
def cmd_validate(args: argparse.Namespace) -> int:
    report = imports.check(_source(args)).report
    _out("ok: importable")
    for line in report.summary_lines():
        _out(f"  {line}")
    return 0


def _default_name(source: imports.Source) -> str:
    """The subject name for an NWB file given without --name: its file name without .nwb."""
    stem = source.nwb.name[:-4] if source.nwb.name.lower().endswith(".nwb") else source.nwb.stem
    try:
        return check_subject_name(stem)
    except ValueError as exc:
        raise ValueError(f"{exc} (from the file name {source.nwb.name}); give one with --name") from None


@_one_line_errors
def cmd_import(args: argparse.Namespace) -> int:
    source = _source(args)
    if args.name is None and not isinstance(source, imports.NwbSource):
        raise ValueError("--name is required for a .mat pair (e.g. --name M6)")
    store = SubjectStore(data_dir(args.data_dir))
    name = args.name if args.name is not None else _default_name(source)
    # the import service checks the name (once, before anything is read); the sandboxed worker parses
    # the source once and stages the canonical files; nothing is visible until the rename
    folder = imports.import_subject(store.root, name, source)
    info = store.info(folder.name)
    _out(f"imported {info.name}: {info.n_images} images x {info.n_neurons} neurons "
         f"({'with' if info.has_repeats else 'no'} repeats) into {info.path}")
    return 0
