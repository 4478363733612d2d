"""End-to-end CUDA check (benchmarks/gpu_check.sh step 4): what a user does, on the GPU.

1. the CLI: `demo-data`, `train --device cuda` with the default preset (image model `auto`) and with
   `efficientnet_lite0`, then `evaluate` of that run;
2. the dashboard's path: a `JobManager` worker process training with `device="cuda"`;
3. a shared run (`train --shared`) over both demo subjects on CUDA.

Writes a JSON summary (device recorded in each run's config/results, test top-1 both ways, wall
time) to the path given. Imports only the core package (no streamlit), like benchmarks/run.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEVICE = os.environ.get("GPU_E2E_DEVICE", "cuda")  # cpu: try the script here first
BUDGET = os.environ.get("GPU_E2E_SECONDS", "60")


def cli(*args: str, timeout: int = 300) -> tuple[int, str, float]:
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "neuroalign", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, (p.stdout + p.stderr)[-3000:], time.time() - t0


def headline(run_dir: Path) -> dict:
    """Where it ran and what it scored: config.json's device, the chosen image model, test top-1."""
    res = json.loads((run_dir / "results.json").read_text())
    cfg = json.loads((run_dir / "config.json").read_text())
    test = res.get("test", {})
    return {"device": cfg.get("device"), "device_description": cfg.get("device_description"),
            "image_model": (cfg.get("config") or {}).get("image", {}).get("backbone"),
            "training": {k: v for k, v in (res.get("training") or {}).items() if not isinstance(v, (list, dict))},
            "test_top1": {d: (test.get(d) or {}).get("top1") for d in ("image_to_neural", "neural_to_image")},
            "chance_top1": test.get("chance_top1")}


def main(out_path: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="na_gpu_"))
    data, runs, cache = tmp / "data", tmp / "runs", tmp / "cache"
    summary: dict = {}
    common = ["--data-dir", str(data), "--runs-dir", str(runs), "--cache-dir", str(cache)]
    rc, log, s = cli("demo-data", "--data-dir", str(data))
    summary["demo_data"] = {"rc": rc, "s": round(s, 1), "log": log[-500:]}
    for name, extra in (("default_auto", []), ("efficientnet_lite0", ["--image-model", "efficientnet_lite0"])):
        before = set(runs.glob("*")) if runs.exists() else set()
        rc, log, s = cli("train", "--subjects", "sim-M1", "--device", DEVICE, "--max-seconds", BUDGET, *extra, *common)
        new = sorted(set(runs.glob("*")) - before)
        entry = {"rc": rc, "s": round(s, 1), "log": log[-1500:]}
        if new and (new[-1] / "results.json").exists():
            entry.update(headline(new[-1]))
            if name == "efficientnet_lite0":
                rc2, log2, s2 = cli("evaluate", str(new[-1]), "--data-dir", str(data), "--device", DEVICE)
                entry["evaluate"] = {"rc": rc2, "s": round(s2, 1), "log": log2[-800:]}
        summary[name] = entry
        print(name, json.dumps(entry)[:1500], flush=True)

    from neuroalign.config import preset
    from neuroalign.jobs.manager import JobManager

    mgr = JobManager(max_parallel=1)
    cfg = preset("recommended").replace(device=DEVICE, max_seconds=float(BUDGET))
    t0 = time.time()
    job = mgr.start("sim-M2", cfg, data, runs)
    snap = mgr.get(job)
    while snap.state in ("queued", "running") and time.time() - t0 < 240:
        time.sleep(1)
        snap = mgr.get(job)
    entry = {"state": snap.state, "message": snap.message, "error": snap.error, "s": round(time.time() - t0, 1),
             "epochs": snap.epoch, "nproc": snap.nproc, "kind": snap.kind}
    if (snap.run_dir / "results.json").exists():
        entry.update(headline(snap.run_dir))
    summary["dashboard_worker"] = entry
    print("dashboard_worker", json.dumps(entry)[:1500], flush=True)

    rc, log, s = cli("train", "--shared", "--subjects", "sim-M1", "sim-M2", "--device", DEVICE, "--max-seconds", BUDGET,
                     "--no-baselines", *common)
    summary["shared"] = {"rc": rc, "s": round(s, 1), "log": log[-1500:]}
    print("shared", json.dumps(summary["shared"])[:1500], flush=True)
    Path(out_path).write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
