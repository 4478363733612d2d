"""`train --shared` (one model over several subjects) and `train --adapt-from RUN_DIR` (a new subject's
read-in on a fixed shared model), and `evaluate` of a shared run; flags added to `train` by
`train_commands` (see `neuroalign.training.shared_runs` for the run folder layout)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from neuroalign.paths import data_dir, runs_dir


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shared", action="store_true",
                   help="one shared model over all --subjects (shared image side, one read-in per subject, "
                        "splits by image identity shared across subjects); one run folder with "
                        "subjects/<name>/results.json and cross-subject retrieval in shared_results.json")
    p.add_argument("--adapt-from", metavar="RUN_DIR", default=None,
                   help="adapt each of --subjects to the shared run RUN_DIR: only its read-in is fitted "
                        "(closed form), the shared parts stay fixed; one run folder per subject")
    p.add_argument("--no-baselines", action="store_true",
                   help="with --shared / --adapt-from: skip the ridge/repeat/oracle baselines (faster)")


def wanted(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "shared", False) or getattr(args, "adapt_from", None))


def is_shared_run(run_dir: str) -> bool:
    try:
        kind = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return False
    return kind == "shared"


def _print_summary(run_dir: Path, quiet: bool) -> None:
    from neuroalign.training.device import dist_info_from_env

    if not dist_info_from_env().is_main:  # under torchrun rank 0 prints
        return
    print(run_dir, flush=True)
    if quiet:
        return
    try:
        res = json.loads((run_dir / "shared_results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for name, s in (res.get("subjects") or {}).items():
        print(f"[{name}] test n={s['n_test']}: top-1 image→neural {s['top1_image_to_neural']:.3f}, "
              f"neural→image {s['top1_neural_to_image']:.3f} (chance {s['chance_top1']:.3f})", file=sys.stderr)
    for p in (res.get("cross_subject") or {}).get("pairs", []):
        print(f"[{p['a']}↔{p['b']}] cross-subject top-1 {p['a_to_b']['top1']:.3f} / {p['b_to_a']['top1']:.3f} "
              f"over {p['n']} shared test images (chance {p['chance_top1']:.3f})", file=sys.stderr)


def cmd_shared(args: argparse.Namespace, build_config: Callable[[argparse.Namespace], Any], cache: Path,
               status_printer: Callable[[str, bool], Callable[[str], None]]) -> int:
    from neuroalign.training.shared_runs import adapt_from_run, train_shared

    if args.shared and args.adapt_from:
        raise ValueError("give either --shared (train a shared model) or --adapt-from RUN_DIR (adapt to one), not both")
    if args.resume:
        raise ValueError("--resume continues a single-subject run; shared runs are closed form and are not resumed")
    if not args.subjects:
        raise ValueError("--shared / --adapt-from need --subjects NAME [NAME ...]")
    root, out = data_dir(args.data_dir), runs_dir(args.runs_dir)
    if args.adapt_from:
        show = status_printer("adapt", args.quiet)
        for run_dir in adapt_from_run(args.adapt_from, args.subjects, root, out, cache_dir=cache, on_status=show,
                                      baselines=not args.no_baselines):
            _print_summary(run_dir, args.quiet)
        return 0
    cfg = build_config(args)
    run_dir = train_shared(args.subjects, cfg, root, out, cache_dir=cache, on_status=status_printer("shared", args.quiet),
                           baselines=not args.no_baselines)
    _print_summary(run_dir, args.quiet)
    return 0


def cmd_evaluate_shared(args: argparse.Namespace, cache: Path) -> int:
    from neuroalign.training.shared_runs import evaluate_shared_run

    result = evaluate_shared_run(args.run_dir, data_dir=data_dir(args.data_dir) if args.data_dir else None,
                                 cache_dir=cache)
    if args.json:
        print(json.dumps(result, indent=2, default=float))
    else:
        for name, s in result["subjects"].items():
            print(f"{name}: test top-1 image→neural {s['top1_image_to_neural']:.3f}, neural→image "
                  f"{s['top1_neural_to_image']:.3f} (chance {s['chance_top1']:.3f})")
    return 0
