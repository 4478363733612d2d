"""`export RUN_DIR`: a trained run's shared-space embeddings of every image and response, split
membership and per-neuron scores as `.npz` or `.mat` (`neuroalign.export`); `--format csv`: the
per-neuron table alone, with each neuron's NWB identity (series, imaging plane, ROI table and id) for
a subject imported from an NWB file, to add back to that file (`neuroalign.export_nwb`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuroalign.config import DEVICES
from neuroalign.paths import cache_dir
from neuroalign.text import printable


def register(sub: argparse._SubParsersAction) -> None:
    """Add `export` to the CLI."""
    p = sub.add_parser("export", help="write a run's embeddings of every image and response, splits and per-neuron "
                                      "scores as .npz or .mat",
                       description="Write a trained run's shared-space embeddings of every image (image tower) and "
                                   "every response (neural tower: mean responses, and repeats when stored), image ids "
                                   "and split membership, per-neuron scores (FEVE, importance, reliability, where the "
                                   "run has them) and its config summary, as .npz or a MATLAB .mat file; or, with "
                                   "--format csv, the per-neuron table alone (neuron, and for NWB subjects series, "
                                   "imaging_plane, roi_table, roi_id; then the scores) to add back to the NWB file.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--subject", default=None, help="the subject to export from a shared or adapted run (required "
                                                   "when it has several)")
    p.add_argument("--format", choices=("npz", "mat", "csv"), default=None,
                   help="file format (default: from --out's suffix, else npz); csv: the per-neuron table only")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="file to write (default: RUN_DIR/export_<subject>.<format>)")
    p.add_argument("--data-dir", default=None,
                   help="subject data root to read the subject from (default: the path the run recorded)")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: $NEUROALIGN_CACHE_DIR or ./.neuroalign-cache)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="where to encode (default auto)")
    p.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from neuroalign.export import load_export, write_export  # torch: only for this command

    if args.out is not None and args.format is not None and not str(args.out).lower().endswith(f".{args.format}"):
        raise ValueError(f"--out {args.out} does not end in .{args.format}; expected a file name for --format "
                         f"{args.format}")
    suffix = Path(args.out).suffix.lower().lstrip(".") if args.out is not None else ""
    if args.format is None and suffix and suffix not in ("npz", "mat", "csv"):
        raise ValueError(f"export format {suffix!r} (from --out {args.out}); expected one of npz, mat, csv")
    if args.format == "csv" or (args.format is None and suffix == "csv"):
        return _export_table(args)
    out = write_export(args.run_dir, args.out, args.format, subject=args.subject, data_dir=args.data_dir,
                       cache_dir=cache_dir(args.cache_dir), device=args.device)
    got = load_export(out)
    scores = [k for k in ("feve", "importance", "reliability") if k in got]
    print(printable(f"wrote {out}: {got['subject']}, {len(got['image_ids'])} images x {len(got['neuron_ids'])} "
                    f"neurons, {got['image_embedding'].shape[1]}-d embeddings"
                    f"{', repeats' if 'repeat_embedding' in got else ''}; per-neuron scores: "
                    f"{', '.join(scores) or 'none'}"), file=sys.stdout)
    return 0


def _export_table(args: argparse.Namespace) -> int:
    from neuroalign.export_nwb import IDENTITY_COLUMNS, read_neuron_table, write_neuron_table

    out = write_neuron_table(args.run_dir, args.out, subject=args.subject, data_dir=args.data_dir)
    got = read_neuron_table(out)
    scores = [k for k in got if k != "neuron" and k not in IDENTITY_COLUMNS]
    ident = "with NWB ROI ids" if "roi_id" in got else "no NWB identity (not imported from an NWB file)"
    print(printable(f"wrote {out}: {len(got['neuron'])} neurons, {ident}; per-neuron scores: "
                    f"{', '.join(scores) or 'none'}"), file=sys.stdout)
    return 0
