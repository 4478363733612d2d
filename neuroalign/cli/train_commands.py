"""Training commands: `train` (one run per subject), `evaluate RUN_DIR`, `runs` (list runs)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from neuroalign.paths import cache_dir, data_dir, runs_dir


def _add_dirs(p: argparse.ArgumentParser, runs: bool = True) -> None:
    p.add_argument("--data-dir", default=None, help="subject data root (default: $NEUROALIGN_DATA_DIR or ./data)")
    if runs:
        p.add_argument("--runs-dir", default=None, help="runs root (default: $NEUROALIGN_RUNS_DIR or ./runs)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `train`, `evaluate` and `runs` to the CLI."""
    from neuroalign.config import (ACTIVATIONS, BACKBONE_MODES, BACKBONES, DEVICES, FEATURE_TRANSFORMS, IMAGE_HEADS, INITS, NEURAL_BLOCKS, NORMALISERS,
                                   PRESETS, SELECT_BY)

    p = sub.add_parser("train", help="train one run per subject; prints each run directory",
                       description="Train the dual-tower model, evaluate it on the held-out test split and "
                                   "write all artifacts. Options not given come from the preset.")
    p.add_argument("--subjects", nargs="+", metavar="NAME", help="subject names in the data root")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue an interrupted run from its last.pt")
    _add_dirs(p)
    p.add_argument("--cache-dir", default=None, help="feature cache (default: $NEUROALIGN_CACHE_DIR or ./.neuroalign-cache)")
    p.add_argument("--preset", choices=PRESETS, default="recommended",
                   help="reference: the research code's choices; recommended (default): measured best on val")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: from the preset)")
    g.add_argument("--batch-size", type=int, default=None, help="images per step, the contrastive negatives (default: from the preset)")
    g.add_argument("--device", choices=DEVICES, default=None, help="auto (CUDA if present), cpu or cuda")
    g.add_argument("--seed", type=int, default=None, help="training seed (init, batch order); the split has its own")
    g.add_argument("--max-seconds", type=float, default=None, help="wall-clock budget; ends training cleanly")
    g.add_argument("--early-stopping", type=int, default=None, metavar="EPOCHS",
                   help="stop after this many epochs without improvement of the --select-by score (0 = off)")
    g.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (CUDA only)")
    g = p.add_argument_group("model")
    g.add_argument("--backbone", choices=BACKBONES, default=None)
    g.add_argument("--stage", type=int, default=None, help="backbone stage of the image feature (default: from the preset)")
    g.add_argument("--block", type=int, default=None,
                   help="block within the stage (default: from the preset; with --backbone ds_net_tiny at most the stage's last block)")
    g.add_argument("--backbone-mode", choices=BACKBONE_MODES, default=None,
                   help="frozen: cached features, only the 1x1 conv learns; finetune: train the backbone too")
    g.add_argument("--backbone-weights", default=None, metavar="PATH", help="local DS-Net state dict (nothing is downloaded)")
    g.add_argument("--neural-block", choices=NEURAL_BLOCKS, default=None,
                   help="reference: one attention layer (exact folded path); transformer: residual blocks "
                        "with LayerNorm and FFN; latent: learned queries, linear in the number of neurons")
    g.add_argument("--latents", type=int, default=None, metavar="N", help="learned queries of the latent block")
    g.add_argument("--d-model", type=int, default=None, help="neural-tower token width")
    g.add_argument("--heads", type=int, default=None, help="attention heads of the neural tower")
    g.add_argument("--mlp-activation", choices=ACTIVATIONS, default=None, help="neural-tower MLP nonlinearity")
    g.add_argument("--image-head", choices=IMAGE_HEADS, default=None,
                   help="conv1x1 (reference: one channel) or readout (linear readout of all channels, DCT map)")
    g.add_argument("--feature-transform", choices=FEATURE_TRANSFORMS, default=None,
                   help="readout head: fixed nonlinearity on the backbone features before pooling (square = local energy)")
    g.add_argument("--init", choices=INITS, default=None,
                   help="linear: closed-form start (readout head + linear block + frozen backbone; picking other "
                        "towers switches this to random unless given)")
    g.add_argument("--select-by", choices=SELECT_BY, default=None, help="val score that picks the restored epoch")
    g.add_argument("--components", type=int, default=None, metavar="Q", help="shared-space dimensions (readout/linear)")
    g.add_argument("--dropout", type=float, default=None, help="MLP dropout, or neuron dropout of the linear block")
    g.add_argument("--folded", action=argparse.BooleanOptionalAction, default=None,
                   help="exact folded attention (reference and latent blocks)")
    g.add_argument("--layers", type=int, default=None, help="attention layers (transformer / latent blocks)")
    g.add_argument("--normaliser", choices=NORMALISERS, default=None, help="per-neuron response scaling, fitted on train")
    g.add_argument("--w-clip", type=float, default=None, help="weight of the contrastive loss")
    g.add_argument("--w-rmse", type=float, default=None, help="weight of the RMSE between the maps")
    g.add_argument("--w-ssim", type=float, default=None, help="weight of 1 - SSIM between the maps")
    g.add_argument("--repeat-augment", type=float, default=None, metavar="P",
                   help="probability that a training sample is one single-trial repeat")
    g = p.add_argument_group("loss and optimizer")
    g.add_argument("--center", action=argparse.BooleanOptionalAction, default=None,
                   help="centred (correlation) similarity instead of plain cosine")
    g.add_argument("--temperature", type=float, default=None, help="softmax temperature of the contrastive loss (start value when learnable)")
    g.add_argument("--learnable-temperature", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--lr-image", type=float, default=None, help="AdamW learning rate of the image side")
    g.add_argument("--lr-neural", type=float, default=None, help="learning rate of the neural side")
    g.add_argument("--neural-optimizer", choices=("rmsprop", "adamw"), default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is much faster on a busy shared CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("evaluate", help="recompute results.json of a run from its best checkpoint")
    p.add_argument("run_dir", metavar="RUN_DIR")
    _add_dirs(p, runs=False)
    p.add_argument("--device", choices=DEVICES, default=None)
    p.add_argument("--json", action="store_true", help="print the whole results.json")
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("runs", help="list runs with their state and key test metrics")
    _add_dirs(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_runs)


def build_config(args: argparse.Namespace):
    """The preset with every explicitly given flag applied on top."""
    from neuroalign.config import preset

    cfg = preset(args.preset)
    changes: dict[str, Any] = {}
    flag_to_field = {
        "epochs": "epochs", "batch_size": "batch_size", "device": "device", "seed": "seed",
        "max_seconds": "max_seconds", "threads": "threads", "bf16": "bf16", "backbone": "image.backbone", "stage": "image.stage",
        "block": "image.block", "backbone_mode": "image.mode",
        "backbone_weights": "image.weights", "neural_block": "neural.block", "latents": "neural.n_latents",
        "d_model": "neural.d_model", "heads": "neural.n_heads",
        "mlp_activation": "neural.mlp_activation", "center": "loss.center",
        "temperature": "loss.temperature", "learnable_temperature": "loss.learnable_temperature",
        "lr_image": "optim.image_lr", "lr_neural": "optim.neural_lr", "neural_optimizer": "optim.neural_optimizer",
        "image_head": "image.head", "feature_transform": "image.transform", "init": "init", "select_by": "select_by", "components": "n_components",
        "dropout": "neural.dropout", "repeat_augment": "data.repeat_augment", "layers": "neural.n_layers", "folded": "neural.folded",
        "normaliser": "data.normaliser", "w_clip": "loss.w_clip", "w_rmse": "loss.w_rmse", "w_ssim": "loss.w_ssim",
    }
    for flag, key in flag_to_field.items():
        value = getattr(args, flag, None)
        if value is not None:
            changes[key] = value
    if args.early_stopping is not None:
        changes["early_stopping_patience"] = args.early_stopping or None
    if args.backbone is not None and args.block is None:
        from neuroalign.models.dsnet import VARIANT_DEPTHS

        depths = VARIANT_DEPTHS[args.backbone]
        stage = args.stage or cfg.image.stage
        if 1 <= stage <= len(depths) and cfg.image.block > depths[stage - 1]:
            changes["image.block"] = depths[stage - 1]
    if changes:
        cfg = cfg.replace(**changes)
    from neuroalign.config import preset_label, with_compatible_init

    if getattr(args, "init", None) is None:  # another tower on the default preset: no closed-form start
        cfg = with_compatible_init(cfg)
    cfg = cfg.replace(preset=preset_label(cfg, args.preset))
    cfg.validate()
    return cfg


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


def _summary(results: dict[str, Any]) -> str:
    t = results["test"]
    parts = [f"test n={t['n']}: top-1 image->neural {t['image_to_neural']['top1']:.3f}, "
             f"neural->image {t['neural_to_image']['top1']:.3f} (chance {t['chance_top1']:.3f})"]
    ridge = (results.get("baselines") or {}).get("ridge")
    if ridge:
        parts.append(f"ridge {ridge['image_to_neural']['top1']:.3f}/{ridge['neural_to_image']['top1']:.3f}")
    return "; ".join(parts)


def cmd_train(args: argparse.Namespace) -> int:
    from neuroalign.training import pipeline, runs
    from neuroalign.training.device import dist_info_from_env
    from neuroalign.training.trainer import TrainingDiverged

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    cache = cache_dir(args.cache_dir)
    if args.resume:
        run_dir = pipeline.resume_training(args.resume, data_dir=args.data_dir, cache_dir=cache,
                                           callback=_progress_printer("resume", args.quiet), threads=args.threads)
        print(run_dir)
        return 0
    if not args.subjects:
        raise ValueError("train needs --subjects NAME [NAME ...] (or --resume RUN_DIR)")
    cfg = build_config(args)
    root, out = data_dir(args.data_dir), runs_dir(args.runs_dir)
    is_main = dist_info_from_env().is_main  # under torchrun only rank 0 writes and prints
    if is_main:  # other torchrun ranks must find the subjects already there
        _ensure_demo_subjects(root, args.subjects)
    failures = 0
    for name in args.subjects:
        try:
            run_dir = pipeline.run_training(name, cfg, root, out, callback=_progress_printer(name, args.quiet),
                                            cache_dir=cache)
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
            print(f"[{name}] {tr.get('stop_reason', '?')} after epoch {tr.get('epochs_run', '?')} "
                  f"(best {tr.get('best_epoch', '?')}); {_summary(rec.results)}", file=sys.stderr)
    return 1 if failures else 0


def _ensure_demo_subjects(root, names: list[str]) -> None:
    """Create the embedded simulated subjects on first use when one of them is requested."""
    from neuroalign.data import SubjectStore
    from neuroalign.data.simulate import DEMO_SUBJECTS

    store = SubjectStore(root)
    if any(n in DEMO_SUBJECTS and not store.exists(n) for n in names):
        from neuroalign.data.simulate import make_demo_subjects

        print(f"creating the simulated demo subjects in {root} (first use)", file=sys.stderr)
        make_demo_subjects(root)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from neuroalign.evaluation.evaluate import evaluate_run

    results = evaluate_run(args.run_dir, data_dir=args.data_dir, device=args.device,
                           cache_dir=cache_dir(None))
    if args.json:
        print(json.dumps(results, indent=2, default=float))
    else:
        print(_summary(results))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from neuroalign.training.runs import list_runs, mark_interrupted

    root = runs_dir(args.runs_dir)
    mark_interrupted(root)
    infos = list_runs(root)
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

    header = f"{'RUN':<40} {'SUBJECT':<10} {'STATE':<12} {'PRESET':<12} {'TOP1 I->N':>9} {'TOP1 N->I':>9} {'CHANCE':>7} {'RIDGE':>7}"
    print(header)
    for i in infos:
        m = i.metrics
        print(f"{i.run_id:<40} {i.subject:<10} {i.state:<12} {str(i.preset or '-'):<12} "
              f"{fmt(m.get('test_top1_image_to_neural')):>9} {fmt(m.get('test_top1_neural_to_image')):>9} "
              f"{fmt(m.get('chance_top1')):>7} {fmt(m.get('ridge_top1_image_to_neural')):>7}")
    return 0
