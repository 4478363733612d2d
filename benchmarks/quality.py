"""Quality benchmark: the presets against the strongest simple baselines on simulated subjects that
share nothing with the built-in simulator (`benchmarks/sim_suite.py`: three generators that differ
in images, neuron models, counts and noise).

    python benchmarks/quality.py [--quick] [--roles selection report] [--presets recommended attention reference]
                                 [--max-seconds 150] [--threads 2] [--set key=value ...]
                                 [--json PATH] [--md PATH] [--root DIR] [--runs-dir DIR]

Every run goes through the product's own engine (`run_training`: split by image identity,
normaliser fitted on train, best epoch picked on val, test scored once in eval mode), so each
`results.json` carries the model's test metrics next to chance, ridge from pixels, ridge from
random rectified features, ridge from the run's own backbone features, the repeat decoder and the
oracle -- all on the same test split.

*Selection* subjects are the only ones any default was chosen on, by their VAL numbers (the
`val_top1` column); *report* subjects were never used for a choice and their test numbers are
what README quotes. `--set key=value` (dotted config keys, e.g. `image.stage=2`) measures a
variant; values are parsed as JSON when they can be (numbers, true/false, null, lists).
`--quick` runs the three small quick-suite subjects with a short budget (CI-sized).

`--split-seeds S1 S2 ...` repeats every run on other train/val/test splits (`data.split_seed`) and
adds a table over the splits (`over_splits`): per subject and direction, the mean test top-1 of the
default and of each linear baseline, and the paired difference to the best linear readout of the
same split (mean, its standard error, and in how many splits the default reached it). One test split
of 50 to 150 images cannot tell a 0.03 gap from noise; several splits can. The best linear readout is
the best of three per split, so it is an upward-biased bar: the default is also compared with the
ridge on its own features alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.sim_suite import QUICK_SUITE, SUITE, build_suite  # noqa: E402
from neuroalign.config import preset  # noqa: E402
from neuroalign.training.pipeline import run_training  # noqa: E402

DIRECTIONS = ("image_to_neural", "neural_to_image")
BASELINES = ("ridge", "ridge_random", "ridge_backbone", "repeat", "oracle")
LINEAR = ("ridge", "ridge_random", "ridge_backbone")


def parse_sets(items: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=x"]` -> `{"a.b": 1, "c": "x"}` (JSON values where they parse)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


def _pair(metrics: dict[str, Any] | None, key: str = "top1") -> list[float] | None:
    if not metrics:
        return None
    return [float(metrics[d][key]) for d in DIRECTIONS]


def summarise(spec, preset_name: str, run_dir: Path, wall_s: float) -> dict[str, Any]:
    """One row of the table from a finished run's results.json."""
    results = json.loads((run_dir / "results.json").read_text())
    test, val, base = results["test"], results.get("val") or {}, results.get("baselines") or {}
    training = results.get("training") or {}
    row: dict[str, Any] = {
        "subject": spec.name, "role": spec.role, "generator": spec.generator, "n_images": spec.n_images,
        "n_neurons": spec.n_neurons, "preset": preset_name, "run_dir": str(run_dir), "n_test": test["n"],
        "chance_top1": test["chance_top1"], "top1": _pair(test), "top5": _pair(test, "top5"),
        "mean_rank": _pair(test, "mean_rank"), "top1_ci": [test[d]["top1_ci"] for d in DIRECTIONS],
        "val_top1": _pair(val), "epochs": training.get("epochs_run"), "best_epoch": training.get("best_epoch"),
        "train_s": training.get("elapsed_s"), "wall_s": wall_s, "linear_start": training.get("linear_start"),
    }
    for name in BASELINES:
        row[name] = _pair(base.get(name))
    record = json.loads((run_dir / "config.json").read_text())
    image = record["config"]["image"]
    choice = record.get("image_choice") or {}
    row["image_model"] = choice.get("chosen") or f"{image['backbone']} {image['stage']}.{image['block']}"
    row["image_candidates"] = choice.get("candidates")
    enc = (results.get("encoding") or {}).get("model") or {}
    row["feve_median"] = enc.get("median")
    linear = [row[n] for n in LINEAR if row[n] is not None]
    if linear:
        best = [max(v[i] for v in linear) for i in range(2)]
        row["best_linear"] = best
        row["beats_best_linear"] = [row["top1"][i] >= best[i] for i in range(2)]
    comparison = results.get("comparison") or {}
    if all(isinstance(comparison.get(d), dict) and "p_value" in comparison[d] for d in DIRECTIONS):
        # paired on the same test images (baselines.compare_with_linear): difference, 95 % interval, p
        row["paired_vs_best_linear"] = [{k: comparison[d][k] for k in ("best_name", "difference", "difference_ci",
                                                                        "p_value", "verdict")} for d in DIRECTIONS]
    return row


def over_splits(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (subject, preset) over its splits: mean test top-1 of the default and of each
    linear baseline per direction, and the paired difference to the best linear readout of the same
    split and to the ridge on the run's own features (mean, standard error over splits, how many
    splits reached it)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("top1") and r.get("best_linear"):
            groups.setdefault((r["subject"], r["preset"]), []).append(r)
    out = []
    for (subject, preset_name), rs in groups.items():
        entry: dict[str, Any] = {"subject": subject, "role": rs[0]["role"], "preset": preset_name,
                                 "split_seeds": [r.get("split_seed") for r in rs], "n_test": [r["n_test"] for r in rs]}
        for key in ("top1", *LINEAR, "best_linear"):
            vals = [r[key] for r in rs if r.get(key)]
            entry[key] = [sum(v[i] for v in vals) / len(vals) for i in range(2)] if vals else None
        for ref in ("best_linear", "ridge_backbone"):
            diffs = [[r["top1"][i] - r[ref][i] for i in range(2)] for r in rs if r.get(ref)]
            if not diffs:
                continue
            n = len(diffs)
            mean = [sum(d[i] for d in diffs) / n for i in range(2)]
            se = [((sum((d[i] - mean[i]) ** 2 for d in diffs) / (n - 1)) ** 0.5 / n ** 0.5) if n > 1 else None
                  for i in range(2)]
            entry[f"minus_{ref}"] = {"mean": mean, "se": se, "reached": [sum(d[i] >= 0 for d in diffs) for i in range(2)],
                                     "splits": n}
        out.append(entry)
    return out


def markdown_over_splits(over: list[dict[str, Any]]) -> str:
    """The table over splits: mean test top-1 both ways, the best linear readout's mean, and the paired
    difference (mean ± standard error; splits that reached it)."""
    def diff(d: dict[str, Any] | None, i: int) -> str:
        if not d:
            return "—"
        se = d["se"][i]
        return f"{d['mean'][i]:+.3f}" + (f" ± {se:.3f}" if se is not None else "") + f" ({d['reached'][i]}/{d['splits']})"

    lines = ["| subject | preset | splits | test top-1 (mean) | best linear (mean) | − best linear, image→neural | "
             "− best linear, neural→image | − ridge on own features, image→neural | − ridge on own features, neural→image |",
             "|---|---|---:|---|---|---|---|---|---|"]
    for e in over:
        lines.append(f"| {e['subject']} | {e['preset']} | {len(e['split_seeds'])} | {_fmt(e['top1'])} | "
                     f"{_fmt(e['best_linear'])} | {diff(e.get('minus_best_linear'), 0)} | "
                     f"{diff(e.get('minus_best_linear'), 1)} | {diff(e.get('minus_ridge_backbone'), 0)} | "
                     f"{diff(e.get('minus_ridge_backbone'), 1)} |")
    return "\n".join(lines)


def _verdict(r: dict[str, Any]) -> str:
    """Per direction: yes, or no with the paired sign test's p (within noise when p >= 0.05)."""
    beats = r.get("beats_best_linear")
    if beats is None:
        return "—"
    paired = r.get("paired_vs_best_linear")
    words = []
    for i, b in enumerate(beats):
        if b:
            words.append("yes")
        elif paired:
            p = paired[i]["p_value"]
            words.append(f"no, within noise (p = {p:.2f})" if p >= 0.05 else f"**no** (p = {p:.2g})")
        else:
            words.append("**no**")
    return " / ".join(words)


def _fmt(pair: list[float] | None) -> str:
    return "—" if pair is None else f"{pair[0]:.2f} / {pair[1]:.2f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """Report subjects first (their test numbers are the claim), then selection subjects."""
    head = ("| subject | role | N × K | preset | image model | model top-1 (95 % CI) | top-5 | mean rank | "
            "median FEVE | ridge pixels | ridge random feat. | ridge backbone | repeat | oracle | ≥ best linear | "
            "epochs (best) | train / wall s |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    order = sorted(rows, key=lambda r: (r["role"] != "report", r["subject"], r["preset"]))
    for r in order:
        ci = r["top1_ci"]
        model = (f"**{r['top1'][0]:.2f}** [{ci[0][0]:.2f}, {ci[0][1]:.2f}] / **{r['top1'][1]:.2f}** "
                 f"[{ci[1][0]:.2f}, {ci[1][1]:.2f}]")
        verdict = _verdict(r)
        if r["role"] == "selection":
            model += f" (val {_fmt(r['val_top1'])})"
        lines.append(
            f"| {r['subject']} | {r['role']} | {r['n_images']:,} × {r['n_neurons']:,} | {r['preset']} | "
            f"{r.get('image_model', '—')} | {model} | "
            f"{_fmt(r['top5'])} | {r['mean_rank'][0]:.1f} / {r['mean_rank'][1]:.1f} | "
            f"{'—' if r.get('feve_median') is None else format(r['feve_median'], '.2f')} | {_fmt(r['ridge'])} | "
            f"{_fmt(r['ridge_random'])} | {_fmt(r['ridge_backbone'])} | {_fmt(r['repeat'])} | {_fmt(r['oracle'])} | "
            f"{verdict} | {r['epochs']} ({r['best_epoch']}) | {r['train_s']:.0f} / {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the small quick suite with a short budget (CI)")
    ap.add_argument("--roles", nargs="+", choices=("selection", "report"), default=["selection", "report"])
    ap.add_argument("--only", nargs="*", help="subject names to restrict to")
    ap.add_argument("--presets", nargs="+", default=None, help="default: recommended (quick) or recommended attention reference")
    ap.add_argument("--max-seconds", type=float, default=None, help="training budget per run (default 150, quick 15)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config change for a variant")
    ap.add_argument("--root", default=str(ROOT / ".neuroalign-cache" / "quality-suite"), help="where subjects are written")
    ap.add_argument("--runs-dir", default=None, help="default: <root>/runs")
    ap.add_argument("--cache-dir", default=None, help="feature cache (default: <root>/cache)")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--md", default=None, help="write the markdown table here")
    ap.add_argument("--split-seeds", nargs="+", type=int, default=None, metavar="SEED",
                    help="repeat every run on these splits (data.split_seed) and add the table over splits")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    specs = [s for s in (QUICK_SUITE if args.quick else SUITE) if s.role in args.roles]
    if args.only:
        specs = [s for s in specs if s.name in set(args.only)]
    presets = args.presets or (["recommended"] if args.quick else ["recommended", "attention", "reference"])
    budget = args.max_seconds if args.max_seconds is not None else (15.0 if args.quick else 150.0)
    changes = parse_sets(args.set)
    root = Path(args.root)
    runs_dir = Path(args.runs_dir) if args.runs_dir else root / "runs"
    cache_dir = Path(args.cache_dir) if args.cache_dir else root / "cache"
    build_suite(root, specs)
    rows = []
    seeds = args.split_seeds or [None]
    for spec in specs:
        for name in presets:
            for seed in seeds:
                cfg = preset(name).replace(max_seconds=budget, threads=args.threads, device="cpu", **changes)
                if seed is not None:
                    cfg = cfg.replace(**{"data.split_seed": seed})
                label = name if not changes else f"{name} + " + ", ".join(f"{k}={v}" for k, v in changes.items())
                t0 = time.monotonic()
                run_dir = run_training(spec.name, cfg, root, runs_dir, cache_dir=cache_dir)
                row = summarise(spec, label, run_dir, time.monotonic() - t0)
                row["split_seed"] = cfg.data.split_seed
                rows.append(row)
                print(f"{spec.name:<20} {spec.role:<9} {label:<30} split {row['split_seed']}  test {_fmt(row['top1'])}  "
                      f"val {_fmt(row['val_top1'])}  best linear {_fmt(row.get('best_linear'))}  "
                      f"repeat {_fmt(row['repeat'])}  epochs {row['epochs']} ({row['best_epoch']})  {row['wall_s']:.0f} s",
                      flush=True)
    table = markdown(rows)
    over = over_splits(rows) if args.split_seeds else None
    if over:
        table += "\n\n" + markdown_over_splits(over)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"budget_s": budget, "threads": args.threads, "changes": changes,
                                               "split_seeds": args.split_seeds, "rows": rows, "over_splits": over},
                                              indent=1, default=float))
    if args.md:
        Path(args.md).write_text(table + "\n")
    failed = [r for r in rows if r["role"] == "report" and r.get("beats_best_linear") and not all(r["beats_best_linear"])
              and r["preset"] == "recommended"]
    if failed:
        print("below the best linear readout on report subjects: " + ", ".join(r["subject"] for r in failed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
