"""Data commands: `demo-data`, `list`, `validate`, `import` (all take `--data-dir`).

Every failure a user can meet here (bad files, bad names, a full or read-only disk, too little
memory) reaches the CLI entry point as a one-line ValueError/FileNotFoundError/FileExistsError,
which prints it and exits with code 2: never a traceback.

`validate` and `import` decide in the sandboxed check (`neuroalign.data.sandbox`: a worker
process with memory and time limits, $NEUROALIGN_CHECK_MEMORY_MB / $NEUROALIGN_CHECK_SECONDS);
a file that makes the check hit a limit is refused like any other bad file. `import` then writes
the subject (atomically) in this process, recording the absolute paths it was given as the source.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Callable

from neuroalign.data import SubjectStore
from neuroalign.data.names import check_subject_name
from neuroalign.data.sandbox import check_pair
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

    p = sub.add_parser("validate", help="check an images/responses .mat pair (exit 0 if importable)")
    _add_data_dir(p)
    p.add_argument("--images", required=True, help="images .mat file (variable images or imgs)")
    p.add_argument("--responses", required=True, help="responses .mat file (variable responses, optional istim)")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("import", help="validate, then add a subject to the data root (atomically)")
    _add_data_dir(p)
    p.add_argument("--name", required=True, help="subject name (a plain folder name, e.g. M6)")
    p.add_argument("--images", required=True, help="images .mat file")
    p.add_argument("--responses", required=True, help="responses .mat file")
    p.set_defaults(handler=cmd_import)


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
    report = check_pair(args.images, args.responses).report
    _out("ok: importable")
    for line in report.summary_lines():
        _out(f"  {line}")
    return 0


@_one_line_errors
def cmd_import(args: argparse.Namespace) -> int:
    store = SubjectStore(data_dir(args.data_dir))
    name = check_subject_name(args.name)
    if store.exists(name):
        raise FileExistsError(f"subject {name!r} already exists in {store.root}; choose another name or delete it")
    check_pair(args.images, args.responses)  # decides, under memory and time limits, before anything is written
    info = store.import_subject(name, args.images, args.responses)
    _out(f"imported {info.name}: {info.n_images} images x {info.n_neurons} neurons "
          f"({'with' if info.has_repeats else 'no'} repeats) into {info.path}")
    return 0
