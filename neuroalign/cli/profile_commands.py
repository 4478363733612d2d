"""`profile`: the layer-by-layer alignment profile of image models against a subject's population, and
`image-models`: the registered image models and their layers."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from neuroalign.cli.train_commands import _add_dirs
from neuroalign.config import IMAGE_MODEL_DEPTHS, preset
from neuroalign.data import SubjectStore
from neuroalign.paths import cache_dir, data_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="which image model and layer align with a subject: closed-form start per "
                                       "layer, val/test identification both ways, FEVE per neuron",
                       description="For every image model and layer: the closed-form start's validation and test "
                                   "identification both ways and the encoding score (FEVE), with the pixel and "
                                   "random-feature baselines and the noise ceiling. Kept with the subject "
                                   "(<data>/<subject>/profile.json) for the dashboard.")
    p.add_argument("--subjects", nargs="+", metavar="NAME", required=True)
    p.add_argument("--image-models", nargs="+", metavar="MODEL", default=None,
                   help=f"image models to profile (default: all registered: {', '.join(IMAGE_MODEL_DEPTHS)}; "
                        "a model of your own as package.module:factory)")
    p.add_argument("--layers", choices=("stages", "all"), default="stages",
                   help="stages: the last block of every stage (default); all: every block")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop after the layer running when this many seconds have passed (the rows so far are kept)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads torch uses")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: $NEUROALIGN_CACHE_DIR or ./.neuroalign-cache)")
    p.add_argument("--json", action="store_true", help="print the whole profile as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    _add_dirs(p, with_runs=False)
    p.set_defaults(handler=cmd_profile)

    p = sub.add_parser("image-models", help="list the registered image models and their layers")
    p.set_defaults(handler=cmd_image_models)


def format_table(profile) -> str:
    """The profile (a dict or `Profile`) as an aligned text table, best layer per model marked; read
    through `Profile` like the dashboard's table, so a missing score prints "—"."""
    from neuroalign.training.profile_file import Profile

    profile = Profile.from_json(profile)

    def num(v: float | None, width: int, left: bool = False) -> str:
        text = "—" if v is None else f"{v:.2f}"
        return f"{text:<{width}s}" if left else f"{text:>{width}s}"

    lines = [f"{'model / layer':44s} {'val top-1 i→n/n→i':>18s} {'test top-1 i→n/n→i':>19s} {'median FEVE':>11s}"]
    for i, row in enumerate(profile.rows):
        label = row.label or row.name
        if row.error:
            lines.append(f"{label:44s} {row.error}")
            continue
        v, t = row.val, row.test
        feve = None if row.feve is None else row.feve.median
        mark = " ◀ best" if i == profile.best_overall else (" ◀" if i in profile.best_per_model.values() else "")
        lines.append(f"{label:44s} {num(v.image_to_neural, 8)} / {num(v.neural_to_image, 7, True)} "
                     f"{num(t.image_to_neural, 9)} / {num(t.neural_to_image, 7, True)} {num(feve, 11)}{mark}")
    names = {"ridge": "ridge on pixels", "ridge_random": "ridge on random rectified features",
             "repeat": "repeat decoder", "oracle": "oracle (noiseless rates)"}
    for key, label in names.items():
        if key in profile.reference:
            lines.append(f"{label:44s} {'':18s} {num(profile.reference_top1(key, 'image_to_neural'), 9)} / "
                         f"{num(profile.reference_top1(key, 'neural_to_image'), 7, True)}")
    n_test, n_val = profile.split.get("test"), profile.split.get("val")
    chance = f" (chance top-1 {1 / n_test:.3f})" if n_test else ""
    lines.append(f"test n = {n_test if n_test is not None else '?'}{chance}; val n = "
                 f"{n_val if n_val is not None else '?'}; best = highest val MRR")
    return "\n".join(lines)


def cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from neuroalign.data.subject import load_ground_truth
    from neuroalign.training.profile import alignment_profile, profile_layers, save_profile

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise ValueError(f"--max-seconds must be > 0, got {args.max_seconds}")
    profile_layers(args.image_models, args.layers)  # unknown models: one line before any work
    store = SubjectStore(data_dir(args.data_dir))
    for name in args.subjects:
        if not store.exists(name):
            raise ValueError(f"no subject {name!r} in {store.root}; expected one of {', '.join(store.names()) or '(none)'}")
    out = []
    for name in args.subjects:
        subject = store.load(name)
        t0 = time.monotonic()

        def progress(done: int, total: int, message: str, name=name, t0=t0) -> None:
            if not args.quiet:
                print(f"[{name}] profile {done}/{total} layers, {time.monotonic() - t0:.0f} s: {message}",
                      file=sys.stderr, flush=True)

        try:
            truth = load_ground_truth(store.path(name))
        except (OSError, ValueError):
            truth = None
        profile = alignment_profile(subject, preset("recommended"), models=args.image_models, layers=args.layers,
                                    cache_dir=cache_dir(args.cache_dir), progress=progress,
                                    stop_event=threading.Event(), max_seconds=args.max_seconds, ground_truth=truth)
        path = save_profile(store.path(name), profile)
        out.append(profile)
        if not args.json:
            print(f"{name}: {path}")
            print(format_table(profile))
            if not profile["complete"]:
                print(f"(incomplete: {profile['stopped']})")
    if args.json:
        print(json.dumps(out if len(out) > 1 else out[0], indent=1))
    return 0


def cmd_image_models(args: argparse.Namespace) -> int:
    from neuroalign.models.image_models import registered_models

    for name, spec in registered_models().items():
        layers = ", ".join(f"{s}.{b}" for s, b in spec.layers())
        print(f"{name:20s} {'pretrained' if spec.pretrained else 'no weights':11s} {spec.description}\n"
              f"{'':20s} layers (stage.block): {layers}; default nonlinearity {spec.transform}")
    return 0
