"""Command-line interface: `python -m neuroalign <command>`.

Each command group lives in its own module with a `register(subparsers)` function that adds its
sub-commands; a sub-command's handler takes the parsed args and returns an exit code. User-fixable
errors (ValueError, FileNotFoundError, FileExistsError) become a one-line message on stderr and exit
code 2 -- never a traceback. Messages are printed with non-printable characters escaped
(`neuroalign.text.printable`): a variable or file name cannot send terminal escape sequences.
"""

from __future__ import annotations

import argparse
import logging
import sys

from neuroalign import __version__
from neuroalign.cli import data_commands, export_commands, profile_commands, train_commands
from neuroalign.text import printable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m neuroalign", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"neuroalign {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    data_commands.register(sub)
    train_commands.register(sub)
    profile_commands.register(sub)
    export_commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError) as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a read-only folder, ...: one line naming the path, no traceback
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(printable(f"error: {exc.strerror or type(exc).__name__}{where}"), file=sys.stderr)
        return 1
