"""The benchmark's smallest configuration runs and honours its JSON contract (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Run the benchmark with the app-only packages made unimportable, as on the bare GPU machine.
_RUNNER = """
import runpy, sys
for name in ("streamlit", "plotly", "hdf5storage"):
    sys.modules[name] = None
sys.argv = ["benchmarks/run.py"] + sys.argv[1:]
runpy.run_path("benchmarks/run.py", run_name="__main__")
"""


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v >= 0


@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run([sys.executable, "-c", _RUNNER, "--smoke", "--timer", "cpu", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train_step" in proc.stdout and "neural tower" in proc.stdout  # the readable table
    result = json.loads(out.read_text())
    result["_table"] = proc.stdout
    return result


def test_train_step_contract(smoke_result: dict) -> None:
    ts = smoke_result["train_step"]
    for key in ("reference_samples_per_s", "neuroalign_samples_per_s"):
        assert _is_number(ts[key]) and ts[key] > 0
    assert ts["mode"] == "frozen"
    assert isinstance(ts["batch_size"], int) and isinstance(ts["n_neurons"], int)
    assert ts["speedup"] == pytest.approx(ts["neuroalign_samples_per_s"] / ts["reference_samples_per_s"])
    ft = smoke_result["finetune_step"]
    assert ft["mode"] == "finetune" and _is_number(ft["neuroalign_samples_per_s"]) and _is_number(ft["reference_samples_per_s"])


def test_neural_tower_contract(smoke_result: dict) -> None:
    nt = smoke_result["neural_tower"]
    ks = nt["n_neurons"]
    assert ks == sorted(ks) and all(isinstance(k, int) for k in ks)
    for key in ("reference_ms", "neuroalign_ms", "plain_ms", "folded_ms", "latent_ms"):
        assert len(nt[key]) == len(ks)
        assert all(v is None or _is_number(v) for v in nt[key])
    assert all(v is not None for v in nt["reference_ms"] + nt["folded_ms"])  # smoke sizes are all measured
    # the ratios are what the README quotes: each must be the quotient of the timings it names
    for ratio, num, den in (("speedup_vs_reference", "reference_ms", "folded_ms"),
                            ("speedup_vs_plain", "plain_ms", "folded_ms"),
                            ("plain_speedup_vs_reference", "reference_ms", "plain_ms"),
                            ("latent_speedup_vs_folded", "folded_ms", "latent_ms")):
        assert len(nt[ratio]) == len(ks), ratio
        for got, a, b in zip(nt[ratio], nt[num], nt[den]):
            assert (got is None) == (a is None or b is None), (ratio, got, a, b)
            assert got is None or got == pytest.approx(a / b), (ratio, got, a, b)
    rows = [line.split() for line in smoke_result["_table"].splitlines()]
    for k, folded_ms in zip(ks, nt["folded_ms"]):  # the readable table shows the same numbers
        assert any(row[:1] == [str(k)] and f"{folded_ms:.1f}" in row for row in rows), (k, folded_ms)


def test_folded_vs_plain_by_batch(smoke_result: dict) -> None:
    f = smoke_result["folded_vs_plain"]
    assert f["batch_size"] == sorted(f["batch_size"]) and len(f["batch_size"]) >= 2
    for key in ("plain_ms", "folded_ms", "folded_eager_ms", "speedup_vs_plain", "fused_speedup_vs_eager"):
        assert len(f[key]) == len(f["batch_size"]) and all(_is_number(v) and v > 0 for v in f[key])
    assert f["speedup_vs_plain"][0] == pytest.approx(f["plain_ms"][0] / f["folded_ms"][0])
    # whether the fused CPU kernels ran is recorded next to the numbers they produced
    assert set(f["native"]) == {"mode", "attempted", "loaded", "error"}
    assert smoke_result["native_kernels"]["attempted"] is True
    assert "folded vs plain" in smoke_result["_table"]


def test_eval_and_device(smoke_result: dict) -> None:
    ev = smoke_result["eval"]
    assert isinstance(ev["n_items"], int) and ev["n_items"] > 0 and _is_number(ev["seconds"])
    assert isinstance(smoke_result["device"], str) and smoke_result["device"].startswith("cpu")
    assert smoke_result["timer"] == "cpu"


def test_svg_plots_from_result(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.plots import line_chart_svg, write_scale_plots
    finally:
        sys.path.remove(str(ROOT))
    result = {"device": "cpu", "scale_neurons": {
        "n_neurons": [100, 1000], "batch_size": 8,
        "train_reference_ms": [50.0, 900.0], "train_neuroalign_ms": [5.0, 20.0],
        "train_reference_peak_mb": [10.0, 40.0], "train_neuroalign_peak_mb": [5.0, 9.0],
        "tower_reference_ms": [10.0, None], "tower_plain_ms": [3.0, 30.0], "tower_folded_ms": [1.0, 4.0],
        "tower_latent_ms": [2.0, 3.0], "tower_plain_peak_mb": [1.0, 8.0], "tower_folded_peak_mb": [1.0, 2.0]}}
    paths = write_scale_plots(result, tmp_path)
    assert sorted(Path(p).name for p in paths) == ["bench_neurons_memory.svg", "bench_neurons_time.svg",
                                                   "bench_tower_neurons.svg"]
    svg = (tmp_path / "bench_tower_neurons.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 4 and "per-neuron loop" in svg
    with pytest.raises(ValueError, match="no positive data"):
        line_chart_svg("t", "x", "y", [("a", [1, 2], [None, None])])


def test_scale_point_reports_time_and_memory() -> None:
    """One scale-curve point (what the full run does in a fresh process) measures time and RSS growth."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.run import TIMER, run_point
    finally:
        sys.path.remove(str(ROOT))
    saved = dict(TIMER)
    try:
        res = run_point({"kind": "tower", "method": "folded", "k": 64, "batch": 4, "n_images": 8,
                         "device": "cpu", "repeats": 1, "timer": "wall"})
    finally:
        TIMER.clear()
        TIMER.update(saved)
    assert _is_number(res["ms"]) and res["ms"] > 0
    assert res["peak_mb"] is None or _is_number(res["peak_mb"])
