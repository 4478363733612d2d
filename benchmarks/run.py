"""Benchmark: neuroalign side by side with a faithful re-creation of the reference training loop.

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--timer wall|cpu] --json PATH [--profile DIR]
    python benchmarks/run.py --update FULL.json --series tower/folded ...   # re-measure some scale series

The train steps, tower timings and evaluation run in this process on the same synthetic data of
the demo subject's shape (68x270 images, 450 neurons; batch 128, or 32 with --quick on a CPU).
Warm-up runs are excluded and the medians of repeats reported. Ratios are the numbers to quote;
absolute times only from a quiet GPU. ``--timer cpu`` times one thread's CPU time, which
tolerates a shared machine. The full run (no ``--quick``) adds scale curves
(`benchmarks/scale.py`: train-step time and peak memory vs neurons, each point in a fresh
process; epoch time vs images) and writes SVG plots into ``assets/`` (`benchmarks/plots.py`).
With ``--device cuda`` it adds the full-scale synthetic subject (2,800 images x 10,000 neurons,
batch 128, bf16 autocast). See docs/PERFORMANCE.md for results.

Imports only the core package (no streamlit/plotly/hdf5storage), so it runs on a bare GPU box.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    BATCH,
    DEMO_NEURONS,
    IMAGE_HW,
    NEURAL_METHODS,
    QUICK_BATCH,
    REFERENCE_EPOCHS,
    REFERENCE_TRAIN_FRACTION,
    TIMER,
    _sync,
    _tower_step,
    make_trainer,
    neural_tower_point,
    reference_step_fn,
    set_timer,
    synthetic_subject,
    time_fn,
    trainer_step_fn,
)
from benchmarks.scale import SERIES, bench_scale_neurons, run_point, scale_images  # noqa: E402
from neuroalign.models import NeuralTower  # noqa: E402
from neuroalign.models import folded as folded_mod  # noqa: E402
from neuroalign.models import native  # noqa: E402
from neuroalign.training.device import describe_device, resolve_device  # noqa: E402

logger = logging.getLogger("benchmarks.run")

# sections
# ------------------------------------------------------------------------------------------------

def bench_train_steps(device: torch.device, n_images: int, n_neurons: int, batch: int, repeats: int,
                      image_hw: tuple[int, int] = IMAGE_HW) -> dict[str, Any]:
    """Frozen and fine-tune neuroalign steps vs the reference step, same data, same batch."""
    subject = synthetic_subject(n_images, n_neurons, image_hw=image_hw)
    t = time.perf_counter()
    trainer = make_trainer(subject, device, batch, "frozen")
    init_s = time.perf_counter() - t
    neu = time_fn(trainer_step_fn(trainer, batch), device, repeats)
    ref = time_fn(reference_step_fn(subject, device, batch), device, repeats)
    ft_trainer = make_trainer(subject, device, batch, "finetune")
    ft = time_fn(trainer_step_fn(ft_trainer, batch), device, repeats)
    ref_sps, neu_sps, ft_sps = batch / ref["median_s"], batch / neu["median_s"], batch / ft["median_s"]
    common = {"batch_size": batch, "n_neurons": n_neurons, "n_images": n_images, "image_hw": list(image_hw)}
    return {
        "train_step": {
            "reference_samples_per_s": ref_sps, "neuroalign_samples_per_s": neu_sps,
            "speedup": neu_sps / ref_sps, "mode": "frozen", **common,
            "reference_step_ms": 1e3 * ref["median_s"], "neuroalign_step_ms": 1e3 * neu["median_s"],
            "reference_times_s": ref["times_s"], "neuroalign_times_s": neu["times_s"],
            # one-off: trainer construction incl. backbone features of all images (the cache)
            "feature_cache_s": init_s, "feature_cache_ms_per_image": 1e3 * init_s / n_images,
            "neuroalign_source": "neuroalign.training.trainer.Trainer (per-step body of fit)",
        },
        "finetune_step": {
            "reference_samples_per_s": ref_sps, "neuroalign_samples_per_s": ft_sps,
            "speedup": ft_sps / ref_sps, "mode": "finetune", **common,
            "neuroalign_step_ms": 1e3 * ft["median_s"], "neuroalign_times_s": ft["times_s"],
        },
        "_trainer": trainer,
    }


def bench_neural_tower(device: torch.device, sizes: list[int], batch: int, repeats: int,
                       cap_s: float) -> dict[str, Any]:
    """ms per forward+backward vs n_neurons; a method whose step exceeds `cap_s` skips larger K."""
    out: dict[str, Any] = {"n_neurons": sizes, "batch_size": batch, "what": "forward+backward of the neural tower"}
    for method in NEURAL_METHODS:
        values: list[float | None] = []
        skipping = False
        for k in sizes:
            if skipping:
                values.append(None)
                continue
            try:
                ms = neural_tower_point(method, k, batch, device, repeats)["ms"]
            except torch.OutOfMemoryError:
                logger.warning("neural tower %s K=%d: out of memory", method, k)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                values.append(None)
                skipping = True
                continue
            values.append(ms)
            logger.info("neural tower %-9s K=%-6d %10.1f ms", method, k, ms)
            skipping = ms / 1e3 > cap_s
        out[f"{method}_ms"] = values
    return _with_ratios(out)


def _with_ratios(out: dict[str, Any]) -> dict[str, Any]:
    out["neuroalign_ms"] = out["folded_ms"]
    out["speedup_vs_reference"] = _ratios(out["reference_ms"], out["folded_ms"])
    out["speedup_vs_plain"] = _ratios(out["plain_ms"], out["folded_ms"])
    out["plain_speedup_vs_reference"] = _ratios(out["reference_ms"], out["plain_ms"])
    out["latent_speedup_vs_folded"] = _ratios(out["folded_ms"], out["latent_ms"])
    return out


def _ratios(num: list[float | None], den: list[float | None]) -> list[float | None]:
    return [a / b if a is not None and b else None for a, b in zip(num, den)]


def bench_folded_vs_plain(device: torch.device, k: int, batches: list[int], repeats: int) -> dict[str, Any]:
    """Folded vs plain vectorised tower at one K for several batch sizes (CPU).

    The folded path has a per-step cost that does not grow with the batch (building the K x K
    blocks and their gradients, 18 K^2 d multiply-adds) plus a small per-sample part; the plain
    path is all per-sample work. So the ratio grows with the batch. "folded_eager" is the same
    folded maths without the fused CPU kernels (NEUROALIGN_NATIVE=off)."""
    out: dict[str, Any] = {"n_neurons": k, "batch_size": batches, "plain_ms": [], "folded_ms": [],
                           "folded_eager_ms": [], "native": native.status()}
    for b in batches:
        out["plain_ms"].append(neural_tower_point("plain", k, b, device, repeats)["ms"])
        out["folded_ms"].append(neural_tower_point("folded", k, b, device, repeats)["ms"])
        previous = native.native_mode()
        native.set_native_mode("off")
        try:
            out["folded_eager_ms"].append(neural_tower_point("folded", k, b, device, repeats)["ms"])
        finally:
            native.set_native_mode(previous)
        logger.info("folded vs plain K=%d B=%d: plain %.0f ms, folded %.0f ms (eager %.0f ms)", k, b,
                    out["plain_ms"][-1], out["folded_ms"][-1], out["folded_eager_ms"][-1])
    out["native"] = native.status()
    out["speedup_vs_plain"] = _ratios(out["plain_ms"], out["folded_ms"])
    out["eager_speedup_vs_plain"] = _ratios(out["plain_ms"], out["folded_eager_ms"])
    out["fused_speedup_vs_eager"] = _ratios(out["folded_eager_ms"], out["folded_ms"])
    return out


def bench_compiled_folded(device: torch.device, k: int, batch: int, repeats: int) -> dict[str, Any]:
    """The folded tower with torch.compile'd chunk kernels (compile time reported separately)."""
    folded_mod.set_compile_mode("on")
    try:
        torch.manual_seed(0)
        tower = NeuralTower(k).to(device).train()
        responses = torch.rand(batch, k, device=device)
        step = _tower_step(tower, responses, device)
        t = time.perf_counter()
        step()
        _sync(device)
        compile_s = time.perf_counter() - t
        res = time_fn(step, device, repeats, warmup=0)
    finally:
        folded_mod.set_compile_mode("auto")
    return {"n_neurons": k, "batch_size": batch, "ms": 1e3 * res["median_s"], "compile_s": compile_s,
            "compile_failed": folded_mod._compile_failed}


def bench_eval(trainer, device: torch.device, n_items: int, repeats: int) -> dict[str, Any]:
    """A test set of `n_items`: maps of both towers, similarity, retrieval metrics and SSIM."""
    from neuroalign.evaluation.retrieval import retrieval_metrics
    from neuroalign.models.feature_cache import compute_features
    from neuroalign.models.losses import similarity_matrix, ssim_per_sample

    idx = torch.arange(n_items, device=trainer.inputs.device)
    images = trainer.subject.images[:n_items]

    def evaluate(features: torch.Tensor) -> None:
        trainer.core.eval()
        with torch.no_grad():
            img, neu = trainer.core.maps(features, trainer.responses[idx])
            sim = similarity_matrix(img, neu, center=trainer.config.loss.center).cpu().numpy()
            retrieval_metrics(sim)
            ssim_per_sample(img, neu).cpu()
        trainer.core.train()

    warm = time_fn(lambda: evaluate(trainer.inputs[idx]), device, repeats)
    cold = time_fn(lambda: evaluate(compute_features(trainer.image_tower, images, device=device).to(device)),
                   device, repeats=1, warmup=0)
    return {"n_items": n_items, "seconds": warm["median_s"], "cold_seconds": cold["median_s"],
            "what": "image+neural maps, similarity, retrieval metrics, SSIM; cold = backbone features too"}


# ------------------------------------------------------------------------------------------------
# GPU full scale
# ------------------------------------------------------------------------------------------------

def bench_gpu_full_scale(device: torch.device, n_images: int, n_neurons: int, batch: int, repeats: int,
                         with_plain: bool = True, chunk_sizes: tuple[int, ...] = ()) -> dict[str, Any]:
    """2,800 x 10,000 synthetic subject, batch 128, bf16 autocast: samples/s, memory, schedule time."""
    torch.cuda.reset_peak_memory_stats(device)
    subject = synthetic_subject(n_images, n_neurons)
    t = time.perf_counter()
    trainer = make_trainer(subject, device, batch, "frozen")
    init_s = time.perf_counter() - t
    step = trainer_step_fn(trainer, batch)
    t = time.perf_counter()
    step()  # compile happens here
    _sync(device)
    first_s = time.perf_counter() - t
    res = time_fn(step, device, repeats, warmup=1)
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    steps_per_epoch = math.ceil(n_images * REFERENCE_TRAIN_FRACTION / batch)
    out = {"n_images": n_images, "n_neurons": n_neurons, "batch_size": batch, "precision": "bf16 autocast",
           "samples_per_s": batch / res["median_s"], "step_ms": 1e3 * res["median_s"], "peak_gib": peak,
           "first_step_s": first_s, "feature_cache_s": init_s, "steps_per_epoch": steps_per_epoch,
           "schedule_5000_epochs_min": REFERENCE_EPOCHS * steps_per_epoch * res["median_s"] / 60,
           "folded_compiled": folded_mod._use_compiled(device), "compile_failed": folded_mod._compile_failed,
           "chunk_size": folded_mod.auto_chunk_size(batch, n_neurons, 1, "cuda", folded_mod._use_compiled(device))}
    del trainer, step
    torch.cuda.empty_cache()
    for c in chunk_sizes:
        out[f"tower_folded_chunk{c}_ms"] = _gpu_tower_ms(device, n_neurons, batch, repeats, chunk=c)
    if with_plain:
        out["tower_folded_ms"] = _gpu_tower_ms(device, n_neurons, batch, repeats)
        out["tower_plain_ms"] = _gpu_tower_ms(device, n_neurons, batch, repeats, folded=False)
        out["plain_schedule_5000_epochs_min"] = (REFERENCE_EPOCHS * steps_per_epoch
                                                 * out["tower_plain_ms"] / 1e3 / 60)
    return out


def _gpu_tower_ms(device: torch.device, k: int, batch: int, repeats: int, folded: bool = True,
                  chunk: int | None = None) -> float | None:
    try:
        torch.manual_seed(0)
        tower = NeuralTower(k, folded=folded).to(device).train()
        if chunk is not None:
            orig = folded_mod.auto_chunk_size
            folded_mod.auto_chunk_size = lambda *a, **kw: chunk  # noqa: E731
        try:
            res = time_fn(_tower_step(tower, torch.rand(batch, k, device=device), device, bf16=True), device, repeats)
        finally:
            if chunk is not None:
                folded_mod.auto_chunk_size = orig
        return 1e3 * res["median_s"]
    except torch.OutOfMemoryError:
        return None
    finally:
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------
# profile, table, plots, main
# ------------------------------------------------------------------------------------------------

def profile_steps(trainer, device: torch.device, batch: int, out_dir: Path) -> dict[str, str]:
    """torch.profiler tables (top ops by self time) of one neuroalign and one reference step."""
    from torch.profiler import ProfilerActivity, profile

    out_dir.mkdir(parents=True, exist_ok=True)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    paths = {}
    steps = {"neuroalign": trainer_step_fn(trainer, batch),
             "reference": reference_step_fn(trainer.subject, device, batch)}
    for name, fn in steps.items():
        fn()
        with profile(activities=acts) as prof:
            fn()
            _sync(device)
        path = out_dir / f"profile_{name}_{device.type}.txt"
        try:
            table = prof.key_averages().table(sort_by=sort, row_limit=25)
        except (KeyError, AttributeError, ValueError):
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        path.write_text(table)
        paths[name] = str(path)
    return paths


def format_table(result: dict[str, Any]) -> str:
    lines = [f"device: {result['device']} (timer: {result.get('timer', 'wall')})"]
    for key in ("train_step", "finetune_step"):
        if key not in result:
            continue
        r = result[key]
        lines.append(f"{key:14s} ({r['mode']}, B={r['batch_size']}, K={r['n_neurons']}): reference "
                     f"{r['reference_samples_per_s']:8.1f} samples/s | neuroalign {r['neuroalign_samples_per_s']:8.1f}"
                     f" samples/s | x{r['speedup']:.1f}")
    nt = result.get("neural_tower", {"n_neurons": [], "batch_size": "-"})
    lines.append(f"neural tower fwd+bwd ms (B={nt['batch_size']}):")
    lines.append("  K        reference     plain    folded    latent   folded/ref  folded/plain")
    fmt = lambda v: "       -" if v is None else f"{v:9.1f}"  # noqa: E731
    fr = lambda v: "      -" if v is None else f"{v:8.1f}x"  # noqa: E731
    for i, k in enumerate(nt["n_neurons"]):
        lines.append(f"  {k:<7d}{fmt(nt['reference_ms'][i])} {fmt(nt['plain_ms'][i])} {fmt(nt['folded_ms'][i])}"
                     f" {fmt(nt['latent_ms'][i])}   {fr(nt['speedup_vs_reference'][i])}   {fr(nt['speedup_vs_plain'][i])}")
    if "folded_vs_plain" in result:
        f = result["folded_vs_plain"]
        lines.append(f"folded vs plain tower at K={f['n_neurons']} (fused CPU kernels: "
                     f"{'on' if f['native']['loaded'] else 'off'}):")
        lines.append("  batch     plain    folded  folded-eager  folded/plain")
        for i, b in enumerate(f["batch_size"]):
            lines.append(f"  {b:<6d}{fmt(f['plain_ms'][i])} {fmt(f['folded_ms'][i])}    {fmt(f['folded_eager_ms'][i])}"
                         f"     {fr(f['speedup_vs_plain'][i])}")
    if "folded_compiled" in result:
        c = result["folded_compiled"]
        lines.append(f"folded + torch.compile at K={c['n_neurons']}: {c['ms']:.1f} ms (compile {c['compile_s']:.0f} s)")
    if "eval" in result:
        e = result["eval"]
        lines.append(f"eval ({e['n_items']} items): {e['seconds'] * 1e3:.0f} ms warm, "
                     f"{e['cold_seconds'] * 1e3:.0f} ms cold")
    if "gpu_full_scale" in result:
        g = result["gpu_full_scale"]
        lines.append(f"GPU full scale ({g['n_images']}x{g['n_neurons']}, B={g['batch_size']}, bf16): "
                     f"{g['samples_per_s']:.0f} samples/s, peak {g['peak_gib']:.1f} GiB, 5000 epochs ~ "
                     f"{g['schedule_5000_epochs_min']:.0f} min")
    for name, err in result.get("errors", {}).items():
        lines.append(f"FAILED {name}: {err}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small configuration, < 5 min on 2 CPU cores")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", type=Path, required=False, help="write the results here")
    parser.add_argument("--profile", type=Path, default=None, help="write torch.profiler tables into this folder")
    parser.add_argument("--assets", type=Path, default=ROOT / "assets", help="folder for the scale-curve SVGs")
    parser.add_argument("--neurons", type=int, nargs="*", default=None, help="neuron counts of the tower curve")
    parser.add_argument("--batch", type=int, default=None, help=f"default {BATCH} ({QUICK_BATCH} with --quick)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile'd folded path")
    parser.add_argument("--timer", default="wall", choices=("wall", "cpu"),
                        help="cpu: single-thread CPU time (use on a shared/noisy machine)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, seconds (tests only)")
    parser.add_argument("--keep-going", action="store_true", help="record a failing part in 'errors' and go on")
    parser.add_argument("--update", type=Path, default=None,
                        help="re-measure only --series of the scale curves of this earlier full-run JSON")
    parser.add_argument("--series", nargs="*", default=None, help="kind/method, e.g. tower/folded train/neuroalign")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only these sections (e.g. folded_vs_plain; steps feeds eval and profiles)")
    parser.add_argument("--batches", type=int, nargs="*", default=None,
                        help="batch sizes of the folded-vs-plain section (CPU)")
    parser.add_argument("--point", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.point:  # internal: one scale-curve point in a fresh process
        print(json.dumps(run_point(json.loads(args.point))))
        return 0

    device = resolve_device(args.device)
    set_timer(args.timer if device.type == "cpu" else "wall")
    if args.update is not None:
        return update_scale(args, device)
    smoke, quick = args.smoke, args.quick or args.smoke
    repeats = args.repeats or (1 if smoke else 2)
    TIMER["warmup"] = 1
    TIMER["slow_s"] = 10.0 if quick else 60.0
    batch = args.batch or (8 if smoke else QUICK_BATCH if quick and device.type == "cpu" else BATCH)
    n_neurons = 24 if smoke else DEMO_NEURONS
    n_images = 40 if smoke else (300 if quick else 1400)
    sizes = args.neurons or ([16, 32] if smoke else [100, 300, 1000] if quick else [100, 300, 1000, 3000])
    cap_s = 2.0 if smoke else 30.0
    if device.type == "cuda":
        sizes = args.neurons or ([1000, 10000] if quick else [100, 1000, 3000, 10000])

    t_start = time.perf_counter()
    result: dict[str, Any] = {"device": describe_device(device), "torch": torch.__version__,
                              "quick": bool(quick), "repeats": repeats, "threads": torch.get_num_threads(),
                              "timer": TIMER["name"]}
    state: dict[str, Any] = {}

    def section(name: str, fn: Callable[[], Any]) -> None:
        """Run one part; write the JSON after each so a time limit still leaves results."""
        if args.only is not None and name not in args.only:
            return
        t = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - with --keep-going a failed part is recorded, not fatal
            if not args.keep_going:
                raise
            logger.exception("section %s failed", name)
            result.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
            return
        if isinstance(value, dict) and name == "steps":
            state["trainer"] = value.pop("_trainer")
            result.update(value)
        else:
            result[name] = value
        logger.info("[%s done in %.0f s]", name, time.perf_counter() - t)
        result["wall_s"] = time.perf_counter() - t_start
        if args.json:
            _write_json(args.json, result)

    image_hw = (32, 96) if smoke else IMAGE_HW
    section("steps", lambda: bench_train_steps(device, n_images, n_neurons, batch, repeats, image_hw))
    if device.type == "cuda":
        section("gpu_full_scale", lambda: bench_gpu_full_scale(device, 2800, 10000, batch, repeats))
    if quick or device.type == "cuda":
        section("neural_tower", lambda: bench_neural_tower(device, sizes, batch, repeats, cap_s))
    if device.type == "cpu":
        fvp_batches = args.batches or ([4, 8] if smoke else [QUICK_BATCH, BATCH] if quick
                                       else [QUICK_BATCH, BATCH, 2 * BATCH])
        section("folded_vs_plain", lambda: bench_folded_vs_plain(device, 32 if smoke else 1000, fvp_batches, repeats))
    if "trainer" in state:
        section("eval", lambda: bench_eval(state["trainer"], device, min(300, n_images), repeats))
        if args.profile is not None:
            section("profiles", lambda: profile_steps(state["trainer"], device, batch, args.profile))
    if args.compile:
        section("folded_compiled", lambda: bench_compiled_folded(device, 32 if smoke else 1000, batch, repeats))
    if not quick:
        if "train_step" in result:
            section("scale_images", lambda: scale_images(result["train_step"], [350, 700, 1400, 2800]))
        scale_batch = 32 if device.type == "cpu" else batch
        section("scale_neurons", lambda: bench_scale_neurons(
            device, [100, 300, 1000, 3000, 10000], scale_batch, 256, repeats, cap_s))
        if "neural_tower" not in result and "scale_neurons" in result:
            # on a CPU the tower curve comes from the scale run (same measurement, fresh processes)
            section("neural_tower", lambda: _tower_from_scale(result["scale_neurons"]))

        def plots() -> list[str]:
            from benchmarks.plots import write_scale_plots

            return write_scale_plots(result, args.assets)

        section("plots", plots)
    result["native_kernels"] = native.status()
    if args.json:
        _write_json(args.json, result)
    print(format_table(result))
    return 0


def update_scale(args: argparse.Namespace, device: torch.device) -> int:
    """Re-measure some scale series of an earlier full run (e.g. after a change to one path)."""
    result = json.loads(args.update.read_text())
    previous = result.get("scale_neurons")
    if previous is None:
        raise ValueError(f"{args.update} has no scale_neurons section; expected a full-run JSON")
    series = [tuple(s.split("/")) for s in (args.series or [])]
    unknown = [s for s in series if s not in SERIES]
    if unknown or not series:
        raise ValueError(f"--series must name some of {['/'.join(s) for s in SERIES]}, got {args.series}")
    TIMER["warmup"] = 1
    result["scale_neurons"] = bench_scale_neurons(
        device, previous["n_neurons"], previous["batch_size"], previous["n_images"], args.repeats or 2,
        30.0, series=series, previous=previous)
    result["neural_tower"] = _tower_from_scale(result["scale_neurons"])
    from benchmarks.plots import write_scale_plots

    result["plots"] = write_scale_plots(result, args.assets)
    _write_json(args.json or args.update, result)
    print(format_table(result))
    return 0


def _tower_from_scale(sn: dict[str, Any]) -> dict[str, Any]:
    nt = {"n_neurons": sn["n_neurons"], "batch_size": sn["batch_size"],
          "what": "forward+backward of the neural tower (from scale_neurons)"}
    nt.update({f"{m}_ms": sn[f"tower_{m}_ms"] for m in NEURAL_METHODS})
    return _with_ratios(nt)


def _write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
