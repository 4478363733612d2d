"""The closed-form start's solve paths side by side, as ratios.

    python benchmarks/start_speed.py [--train 2240] [--val 280] [--neurons 10000] [--features 3000]
                                     [--components 256] [--json PATH]

On a synthetic problem (a standardised Gram matrix of `--features` random features, responses that
are a rank-50 function of them plus noise): `linear_start.solve_start` with the settings chosen on
the val split, through the neuron space (`train_space=False`, one K-wide product per ridge strength)
and through the train space (`train_space=True`, `M M^T` formed once: the automatic path when there
are more neurons than train dimensions); and with the settings cross-validated (`folds=5`, what a
training run does). Reported: seconds of each (one run each, wall clock), the ratio neuron space /
train space (the speed-up of the automatic path) and the ratio cross-validated / val split (what
cross-validation costs), and whether both paths chose the same settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from neuroalign.training.linear_start import CV_FOLDS, solve_start  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=2240)
    ap.add_argument("--val", type=int, default=280)
    ap.add_argument("--neurons", type=int, default=10000)
    ap.add_argument("--features", type=int, default=3000)
    ap.add_argument("--components", type=int, default=256)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    n, nv = args.train, args.val
    x = rng.standard_normal((n + nv, args.features))
    gram = x @ x[:n + nv].T
    y = x[:, :50] @ rng.standard_normal((50, args.neurons)) + 3.0 * rng.standard_normal((n + nv, args.neurons))
    tr, va = slice(0, n), slice(n, n + nv)
    runs = {}
    for name, kw in (("neuron_space", {"train_space": False}), ("train_space", {"train_space": True}),
                     ("cross_validated", {"gram_val_val": gram[va, va], "folds": CV_FOLDS})):
        t0 = time.perf_counter()
        start = solve_start(gram[tr, tr], gram[va, tr], y[tr], y[va], args.components, **kw)
        runs[name] = {"seconds": round(time.perf_counter() - t0, 2),
                      "settings": [start.report[k] for k in ("alpha_relative", "rank", "whiten")]}
        print(f"{name:16s} {runs[name]['seconds']:8.2f} s  settings {runs[name]['settings']}", flush=True)
    out = {"train": n, "val": nv, "neurons": args.neurons, "features": args.features, "runs": runs,
           "speedup_train_space": round(runs["neuron_space"]["seconds"] / runs["train_space"]["seconds"], 2),
           "cost_of_cross_validation": round(runs["cross_validated"]["seconds"] / runs["train_space"]["seconds"], 2),
           "same_settings": runs["neuron_space"]["settings"] == runs["train_space"]["settings"]}
    print(f"neuron space / train space: {out['speedup_train_space']}x; cross-validated / val split: "
          f"{out['cost_of_cross_validation']}x; same settings: {out['same_settings']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
