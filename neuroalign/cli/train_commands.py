"""Training commands: `train` (one run per subject), `evaluate RUN_DIR`, `runs` (list runs)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from neuroalign.config import (DEVICES, PRESETS, TrainConfig, preset, preset_label, with_compatible_init,
                               with_image_model_layer)
from neuroalign.config_fields import FIELDS, SECTIONS, ConfigField, preset_defaults
from neuroalign.data import SubjectStore
from neuroalign.data.simulate import DEMO_SUBJECTS, make_demo_subjects
from neuroalign.cli import shared_train_commands
from neuroalign.paths import cache_dir, data_dir, runs_dir
from neuroalign.text import printable
from neuroalign.training import runs


def _add_dirs(p: argparse.ArgumentParser, with_runs: bool = True) -> None:
    p.add_argument("--data-dir", default=None, help="subject data root (default: $NEUROALIGN_DATA_DIR or ./data)")
    if with_runs:
        p.add_argument("--runs-dir", default=None, help="runs root (default: $NEUROALIGN_RUNS_DIR or ./runs)")


def add_config_flags(p: argparse.ArgumentParser, fields: tuple[ConfigField, ...] = FIELDS) -> None:
    """One flag per entry of the field table, in argument groups by section. Every flag defaults to
    None (= the preset's value); its help names where it applies and the presets' defaults. A field's
    `hidden_aliases` (old flag names) are accepted with their own dest and left out of --help."""
    groups = {section: p.add_argument_group(section.lower()) for section in SECTIONS}
    for f in fields:
        notes = [f"0 = {f.zero}"] if f.zero and f.cli_zero else []
        if f.scope():
            notes.append(f"{f.scope()} only")
        notes.append(preset_defaults(f))
        help_text = f"{f.help} ({'; '.join(notes)})".replace("%", "%%")
        kw: dict[str, Any] = {"dest": f.dest, "default": None, "help": help_text}
        if f.kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = {"int": int, "float": float, "sci": float, "seconds": float}.get(f.kind, str)
            if f.choices and not f.open_choices:
                kw["choices"] = f.choices
            if f.metavar:
                kw["metavar"] = f.metavar
        groups[f.section].add_argument(f.flag, *f.aliases, **kw)
        for alias in f.hidden_aliases:
            groups[f.section].add_argument(alias, **{**kw, "dest": _alias_dest(alias), "help": argparse.SUPPRESS})


def _alias_dest(alias: str) -> str:
    """The argparse attribute of an old flag name (kept apart from the new flag's, so the two can be compared)."""
    return "old_" + alias[2:].replace("-", "_")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `train`, `evaluate` and `runs` to the CLI."""
    p = sub.add_parser("train", help="train one run per subject; prints each run directory",
                       description="Train the dual-tower model, evaluate it on the held-out test split and "
                                   "write all artifacts. Options not given come from the preset.")
    p.add_argument("--subjects", nargs="+", metavar="NAME", help="subject names in the data root")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue an interrupted run from its last.pt")
    shared_train_commands.add_flags(p)
    _add_dirs(p)
    p.add_argument("--cache-dir", default=None, help="feature cache (default: $NEUROALIGN_CACHE_DIR or ./.neuroalign-cache)")
    p.add_argument("--preset", choices=PRESETS, default="recommended",
                   help="recommended (default): measured best on val; reference: the research code's choices; "
                        "attention: the attention neural tower")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_config_flags(p)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("evaluate", help="recompute results.json of a run from its best checkpoint")
    p.add_argument("run_dir", metavar="RUN_DIR")
    _add_dirs(p, with_runs=False)
    p.add_argument("--device", choices=DEVICES, default=None)
    p.add_argument("--json", action="store_true", help="print the whole results.json")
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("runs", help="list runs with their state and key test metrics")
    _add_dirs(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_runs)


def given_fields(args: argparse.Namespace, fields: tuple[ConfigField, ...] = FIELDS) -> dict[ConfigField, Any]:
    """The table fields whose flags were given, with the config value each one sets (an old flag name
    counts as the field's flag; ValueError when both are given with different values)."""
    out = {}
    for f in fields:
        value = getattr(args, f.dest, None)
        for alias in f.hidden_aliases:
            old = getattr(args, _alias_dest(alias), None)
            if old is not None and value is not None and old != value:
                raise ValueError(f"{f.flag} {value} and its old name {alias} {old} disagree; give {f.flag} only")
            value = old if value is None else value
        if value is None:
            continue
        if f.cli_zero and value == 0:
            value = None
        out[f] = value
    return out


def build_config(args: argparse.Namespace, fields: tuple[ConfigField, ...] = FIELDS) -> TrainConfig:
    """The preset with every explicitly given flag applied on top, validated."""
    cfg = preset(args.preset)
    changes = {f.path: value for f, value in given_fields(args, fields).items()}
    if changes:
        cfg = cfg.replace(**changes)
    if args.image_model is not None:  # another image model on a preset whose layer it lacks
        cfg = with_image_model_layer(cfg, stage_given=args.stage is not None, block_given=args.block is not None,
                                     transform_given=args.feature_transform is not None)
    if getattr(args, "init", None) is None:  # another tower on the default preset: no closed-form start
        cfg = with_compatible_init(cfg)
    cfg = cfg.replace(preset=preset_label(cfg, args.preset))
    cfg.validate()
    return cfg


def ignored_flags(args: argparse.Namespace, cfg: TrainConfig, fields: tuple[ConfigField, ...] = FIELDS) -> list[str]:
    """Given flags that have no effect on the towers of `cfg` (e.g. --heads with the linear neural tower)."""
    return [f.flag for f in given_fields(args, fields) if not f.applies(cfg.neural.kind, cfg.image.head)]


def _status_printer(subject: str, quiet: bool):
    """Print each phase message of a run (loading, features, image-model choice, closed-form start,
    evaluation) once, with the seconds since the run started: nothing is silent for minutes."""
    t0, last = time.monotonic(), {"kind": None, "t": 0.0}

    def show(message: str) -> None:
        now = time.monotonic()
        # nothing in the first second: a run refused at once says so in its one error line alone
        if quiet or message.startswith("epoch ") or now - t0 < 1.0:
            return
        kind = re.split(r"\d", message, maxsplit=1)[0]  # counters change, the phase does not
        if kind == last["kind"] and now - last["t"] < 5.0:
            return
        last["kind"], last["t"] = kind, now
        print(f"[{subject}] {time.monotonic() - t0:.0f} s: {message}", file=sys.stderr, flush=True)
    return show


def _progress_printer(subject: str, quiet: bool):
    last = {"t": 0.0}

    def callback(event: str, values: dict[str, float]) -> None:
        if quiet or event != "epoch":
            return
        now = time.monotonic()
        if now - last["t"] < 5.0:
            return
        last["t"] = now
        print(f"[{subject}] epoch {int(values['epoch'])}: train {values['train_loss']:.4f}, val {values['val_loss']:.4f}, "
              f"{values['elapsed_s']:.0f} s", file=sys.stderr, flush=True)
    return callback


READOUT_NAMES = {"ridge": "ridge on pixels", "ridge_random": "ridge on random features",
                 "ridge_backbone": "ridge on backbone features"}
STOP_REASONS = {"completed": "ran every epoch", "time_budget": "reached its time budget",
                "early_stopping": "stopped early (validation stopped improving)", "stopped": "stopped on request"}


def stop_reason_text(reason: Any) -> str:
    """The words for a run's `training.stop_reason` (never the internal token, e.g. `time_budget`)."""
    return STOP_REASONS.get(str(reason), str(reason).replace("_", " ") if reason else "ended")


def _summary(results: dict[str, Any]) -> str:
    """One line: the model's test top-1 both ways, chance, and the best linear readout (the yardstick
    README and the dashboard compare with) with whether the model beats it."""
    t = results["test"]
    parts = [f"test n={t['n']}: top-1 image→neural {t['image_to_neural']['top1']:.3f}, "
             f"neural→image {t['neural_to_image']['top1']:.3f} (chance {t['chance_top1']:.3f})"]
    best = runs.best_linear(results.get("baselines") or {})
    linear = []
    for direction, arrow in (("image_to_neural", "image→neural"), ("neural_to_image", "neural→image")):
        value, name = best[f"best_linear_top1_{direction}"], best[f"best_linear_{direction}"]
        if value is None:
            continue
        word = "beats" if t[direction]["top1"] >= value else "does not beat"
        row = (results.get("comparison") or {}).get(direction) or {}
        paired = ""
        if word != "beats" and isinstance(row.get("p_value"), float) and row.get("best_name") == name:
            paired = f", paired p = {row['p_value']:.2g}" + (": within noise" if row["p_value"] >= 0.05 else "")
        linear.append(f"{arrow} {word} {value:.3f} ({READOUT_NAMES.get(name, name)}{paired})")
    if linear:
        parts.append("best linear readout: model " + ", ".join(linear))
    return "; ".join(parts)


def cmd_train(args: argparse.Namespace) -> int:
    # torch and the training engine load only when a run starts, not for `--help` or `runs`
    import torch

    from neuroalign.training import pipeline
    from neuroalign.training.device import dist_info_from_env
    from neuroalign.training.trainer import TrainingDiverged

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    cache = cache_dir(args.cache_dir)
    if shared_train_commands.wanted(args):  # --shared / --adapt-from: one model over several subjects
        return shared_train_commands.cmd_shared(args, build_config, cache, _status_printer)
    if args.resume:
        subject = (runs.load_run(args.resume).config.get("subject") or {}).get("name") or Path(args.resume).name
        run_dir = pipeline.resume_training(args.resume, data_dir=args.data_dir, cache_dir=cache,
                                           callback=_progress_printer(subject, args.quiet), threads=args.threads)
        print(run_dir)
        return 0
    if not args.subjects:
        raise ValueError("train needs --subjects NAME [NAME ...] (or --resume RUN_DIR)")
    cfg = build_config(args)
    for flag in ignored_flags(args, cfg):
        print(f"note: {flag} has no effect with the {cfg.neural.kind} neural tower and the {cfg.image.head} "
              "image head; ignored", file=sys.stderr)
    root, out = data_dir(args.data_dir), runs_dir(args.runs_dir)
    is_main = dist_info_from_env().is_main  # under torchrun only rank 0 writes and prints
    if is_main:  # other torchrun ranks must find the subjects already there
        _ensure_demo_subjects(root, args.subjects)
    failures = 0
    for name in args.subjects:
        try:
            run_dir = pipeline.run_training(name, cfg, root, out, callback=_progress_printer(name, args.quiet),
                                            cache_dir=cache, on_status=_status_printer(name, args.quiet))
        except TrainingDiverged as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            failures += 1
            continue
        if not is_main:
            continue
        print(run_dir, flush=True)
        rec = runs.load_run(run_dir)
        if rec.results and not args.quiet:
            tr = rec.results.get("training") or {}
            print(f"[{name}] {stop_reason_text(tr.get('stop_reason'))} after epoch {tr.get('epochs_run', '?')} "
                  f"(best {tr.get('best_epoch', '?')}); {_summary(rec.results)}", file=sys.stderr)
    return 1 if failures else 0


def _ensure_demo_subjects(root, names: list[str]) -> None:
    """Create the embedded simulated subjects on first use when one of them is requested."""
    store = SubjectStore(root)
    if any(n in DEMO_SUBJECTS and not store.exists(n) for n in names):
        print(f"creating the simulated demo subjects in {root} (first use)", file=sys.stderr)
        make_demo_subjects(root)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from neuroalign.training.run_eval import evaluate_run  # torch: only for this command

    if shared_train_commands.is_shared_run(args.run_dir):
        return shared_train_commands.cmd_evaluate_shared(args, cache_dir(None))
    results = evaluate_run(args.run_dir, data_dir=args.data_dir, device=args.device,
                           cache_dir=cache_dir(None))
    if args.json:
        print(json.dumps(results, indent=2, default=float))
    else:
        print(_summary(results))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    root = runs_dir(args.runs_dir)
    runs.mark_interrupted(root)
    infos = runs.list_runs(root)
    if args.json:
        print(json.dumps([{"run_id": i.run_id, "path": str(i.path), "subject": i.subject, "state": i.state,
                           "message": i.message, "preset": i.preset, "created": i.created, **i.metrics}
                          for i in infos], indent=2))
        return 0
    if not infos:
        print(f"no runs in {root}")
        return 0

    def fmt(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    header = (f"{'RUN':<40} {'SUBJECT':<10} {'STATE':<12} {'PRESET':<12} {'TOP1 I→N':>9} {'TOP1 N→I':>9} "
              f"{'CHANCE':>7} {'LINEAR I→N':>10} {'LINEAR N→I':>10}  BEST LINEAR")
    print(header)
    for i in infos:
        m = i.metrics
        names = [READOUT_NAMES.get(n, n) for n in dict.fromkeys(
            (m.get("best_linear_image_to_neural"), m.get("best_linear_neural_to_image"))) if n]
        print(f"{i.run_id:<40} {i.subject:<10} {i.state:<12} {str(i.preset or '-'):<12} "
              f"{fmt(m.get('test_top1_image_to_neural')):>9} {fmt(m.get('test_top1_neural_to_image')):>9} "
              f"{fmt(m.get('chance_top1')):>7} {fmt(m.get('best_linear_top1_image_to_neural')):>10} "
              f"{fmt(m.get('best_linear_top1_neural_to_image')):>10}  {', '.join(names) or '-'}")
        if i.error:  # a damaged file: the state above is "unreadable" (or what could be read) and this says why
            print(printable(f"  {i.error}"))
    return 0
