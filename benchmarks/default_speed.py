"""Training throughput of the default preset side by side with the previous default (attention).

    python benchmarks/default_speed.py [--images 1200] [--neurons 800] [--threads 1] [--steps 20] [--json PATH]

Both presets train on the same synthetic subject (68x270 images, the given counts) through the
product's own `Trainer`: the frozen backbone features are computed once (timed separately, as
"prepare"), then `--steps` optimizer steps of each preset's batch size are timed after two
warm-up steps, on `--threads` CPU threads. Reported: samples/s of training steps only (no
preparation, no evaluation), and the ratio recommended / attention -- the number to quote. The
closed-form start of the recommended preset is timed on its own line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import synthetic_subject, trainer_step_fn  # noqa: E402
from neuroalign.config import preset  # noqa: E402
from neuroalign.training.trainer import Trainer  # noqa: E402


def step_rate(trainer: Trainer, steps: int) -> float:
    """Samples per second of plain training steps (`common.trainer_step_fn`: forward, backward, both
    optimizers), after two warm-up steps."""
    bs = trainer.config.batch_size
    step = trainer_step_fn(trainer, bs)
    trainer.core.train()
    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * bs / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1200)
    ap.add_argument("--neurons", type=int, default=800)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    subject = synthetic_subject(args.images, args.neurons)
    out: dict[str, dict[str, float]] = {}
    for name in ("recommended", "attention"):
        cfg = preset(name).replace(device="cpu", threads=args.threads)
        t0 = time.perf_counter()
        trainer = Trainer(cfg, subject).prepare()
        prepare = time.perf_counter() - t0
        row = {"prepare_s": prepare, "batch_size": cfg.batch_size}
        if cfg.init == "linear":
            t0 = time.perf_counter()
            trainer.fit_linear_start()
            row["linear_start_s"] = time.perf_counter() - t0
        row["samples_per_s"] = step_rate(trainer, args.steps)
        out[name] = row
        print(f"{name:<12} batch {cfg.batch_size:>3}  {row['samples_per_s']:8.0f} samples/s  prepare {prepare:5.1f} s"
              + (f"  linear start {row['linear_start_s']:.1f} s" if "linear_start_s" in row else ""), flush=True)
    ratio = out["recommended"]["samples_per_s"] / out["attention"]["samples_per_s"]
    print(f"recommended / attention: {ratio:.1f}x ({args.images} images x {args.neurons} neurons, {args.threads} thread(s))")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "presets": out, "ratio": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
