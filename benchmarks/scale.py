"""Scale curves of the full benchmark run: time and peak memory vs neurons, epoch time vs images.

Every (series, neuron count) point runs in a fresh process (`run.py --point SPEC`), so its peak
memory is its own: on a CPU it is the growth of the resident set (VmHWM after resetting it,
minus VmRSS at the start), on a GPU `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    REFERENCE_TRAIN_FRACTION,
    TIMER,
    make_trainer,
    neural_tower_point,
    reference_step_fn,
    set_timer,
    synthetic_subject,
    time_fn,
    trainer_step_fn,
)
from neuroalign.training.device import resolve_device

logger = logging.getLogger("benchmarks.scale")

RUN_SCRIPT = Path(__file__).resolve().with_name("run.py")
ROOT = RUN_SCRIPT.parents[1]
SERIES = [("train", "reference"), ("train", "neuroalign"),
          ("tower", "reference"), ("tower", "plain"), ("tower", "folded"), ("tower", "latent")]


def _rss_mb(field: str) -> float | None:
    """VmRSS / VmHWM of this process from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0); ru_maxrss would include the parent's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def run_point(spec: dict[str, Any]) -> dict[str, Any]:
    """One scale-curve point: `{"kind": "train"|"tower", "method", "k", "batch", "device", ...}`."""
    device = resolve_device(spec["device"])
    set_timer(spec.get("timer", "wall"))
    TIMER["warmup"] = spec.get("warmup", 1)
    TIMER["slow_s"] = 30.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _reset_peak_rss()
    base = _rss_mb("VmRSS")
    if spec["kind"] == "tower":
        res = neural_tower_point(spec["method"], spec["k"], spec["batch"], device, spec["repeats"])
    else:
        subject = synthetic_subject(spec["n_images"], spec["k"])
        if spec["method"] == "reference":
            fn = reference_step_fn(subject, device, spec["batch"])
        else:
            fn = trainer_step_fn(make_trainer(subject, device, spec["batch"], "frozen"), spec["batch"])
        res = {"ms": 1e3 * time_fn(fn, device, spec["repeats"])["median_s"]}
    if device.type == "cuda":
        res["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = _rss_mb("VmHWM")
        res["peak_mb"] = None if peak is None or base is None else peak - base  # RSS growth of this point
    return res


def _subprocess_point(spec: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
    cmd = [sys.executable, str(RUN_SCRIPT), "--point", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        logger.warning("point %s exceeded %.0f s; skipped", spec, timeout_s)
        return None
    if proc.returncode != 0:
        logger.warning("point %s failed: %s", spec, proc.stderr.strip().splitlines()[-1:] or proc.returncode)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_series(kind: str, method: str, sizes: list[int], batch: int, n_images: int, repeats: int,
                   cap_s: float, device_type: str) -> tuple[list[float | None], list[float | None]]:
    """ms and peak MB per neuron count; once a point exceeds `cap_s` (or fails) larger ones are skipped."""
    ms: list[float | None] = []
    mb: list[float | None] = []
    skipping = False
    for k in sizes:
        res = None
        if not skipping:
            big = k >= 3000 and device_type == "cpu"  # one warm-up, one timed run: minutes each
            spec = {"kind": kind, "method": method, "k": k, "batch": batch, "n_images": n_images,
                    "device": device_type, "repeats": 1 if big else repeats, "warmup": 1, "timer": TIMER["name"]}
            res = _subprocess_point(spec, timeout_s=1800.0 if big else max(120.0, cap_s * (repeats + 2) * 4))
        ms.append(None if res is None else res["ms"])
        mb.append(None if res is None else res["peak_mb"])
        skipping = res is None or res["ms"] / 1e3 > cap_s
        logger.info("scale %s/%s K=%d: %s", kind, method, k, res)
    return ms, mb


def bench_scale_neurons(device: torch.device, sizes: list[int], batch: int, n_images: int, repeats: int,
                        cap_s: float, series: list[tuple[str, str]] | None = None,
                        previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train-step time and peak memory vs neurons (reference vs neuroalign frozen), and the tower alone.

    With `previous` (an earlier result with the same sizes and batch) only `series` are measured
    again; the other series are kept and the re-measured ones are listed under "remeasured"."""
    out: dict[str, Any] = dict(previous or {})
    if previous and (previous.get("n_neurons") != sizes or previous.get("batch_size") != batch):
        raise ValueError(f"previous scale result has sizes {previous.get('n_neurons')} / batch "
                         f"{previous.get('batch_size')}, expected {sizes} / {batch}")
    out.update({"n_neurons": sizes, "batch_size": batch, "n_images": n_images})
    todo = series or SERIES
    for kind, method in todo:
        out[f"{kind}_{method}_ms"], out[f"{kind}_{method}_peak_mb"] = measure_series(
            kind, method, sizes, batch, n_images, repeats, cap_s, device.type)
    if previous:
        out["remeasured"] = sorted(set(out.get("remeasured", [])) | {f"{k}/{m}" for k, m in todo})
    return out


def scale_images(train: dict[str, Any], image_counts: list[int]) -> dict[str, Any]:
    """Epoch time vs images, derived from the measured step times and per-image feature time."""
    ref_s, neu_s = train["reference_step_ms"] / 1e3, train["neuroalign_step_ms"] / 1e3
    per_image = train["feature_cache_ms_per_image"] / 1e3
    steps = [math.ceil(n * REFERENCE_TRAIN_FRACTION / train["batch_size"]) for n in image_counts]
    c, h, w = 128, 8, 33  # stage-2 block-4 feature of a 68x270 image
    return {
        "n_images": image_counts,
        "reference_epoch_s": [s * ref_s for s in steps],
        "neuroalign_epoch_s": [s * neu_s for s in steps],
        "neuroalign_feature_cache_once_s": [n * per_image for n in image_counts],
        "feature_cache_mb": [n * c * h * w * 4 / 2**20 for n in image_counts],
        "derived_from": "measured step times x steps per epoch (90% train); cache time = measured per-image time x N",
    }


# ------------------------------------------------------------------------------------------------
