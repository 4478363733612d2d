"""benchmarks/quality.py end to end on one small suite subject: real runs through the engine, rows
and table built from their results.json (what docs/RESULTS.md quotes)."""

import json

import pytest

from benchmarks import quality
from benchmarks.sim_suite import QUICK_SUITE


def test_quality_benchmark_rows_come_from_the_runs(tmp_path, one_torch_thread):
    out, md = tmp_path / "q.json", tmp_path / "q.md"
    name = QUICK_SUITE[0].name
    code = quality.main(["--quick", "--only", name, "--max-seconds", "4", "--threads", "1", "--root", str(tmp_path / "suite"),
                         "--json", str(out), "--md", str(md), "--set", "epochs=3"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["budget_s"] == 4 and data["changes"] == {"epochs": 3}
    (row,) = data["rows"]
    results = json.loads((tmp_path / "suite" / "runs" / row["run_dir"].rsplit("/", 1)[-1] / "results.json").read_text())
    assert row["subject"] == name and row["role"] == QUICK_SUITE[0].role and row["epochs"] <= 3
    assert row["top1"] == [results["test"][d]["top1"] for d in quality.DIRECTIONS]
    for key in ("ridge", "ridge_random", "ridge_backbone", "repeat", "oracle"):
        assert row[key] == [results["baselines"][key][d]["top1"] for d in quality.DIRECTIONS], key
    assert row["best_linear"] == [max(row[k][i] for k in quality.LINEAR) for i in range(2)]
    assert row["beats_best_linear"] == [row["top1"][i] >= row["best_linear"][i] for i in range(2)]
    assert row["linear_start"]["rank"] >= 1  # the default preset starts from its closed form
    paired = row["paired_vs_best_linear"]  # paired on the same test images, from results.json's comparison
    assert [p["p_value"] for p in paired] == [results["comparison"][d]["p_value"] for d in quality.DIRECTIONS]
    assert all((p["verdict"] == "reaches") == b for p, b in zip(paired, row["beats_best_linear"]))
    table = md.read_text()
    assert name in table and f"{row['top1'][0]:.2f}" in table and table.count("\n") == 3


def test_parse_sets_reads_json_values():
    assert quality.parse_sets(["image.stage=2", "loss.center=false", "init=linear", "image.grid=[4, 16]"]) == {
        "image.stage": 2, "loss.center": False, "init": "linear", "image.grid": [4, 16]}


def test_table_says_whether_a_shortfall_is_within_noise():
    row = {"beats_best_linear": [True, False],
           "paired_vs_best_linear": [{"p_value": 0.5, "verdict": "reaches"}, {"p_value": 0.21, "verdict": "below, within noise"}]}
    assert quality._verdict(row) == "yes / no, within noise (p = 0.21)"
    row["paired_vs_best_linear"][1]["p_value"] = 0.004
    assert quality._verdict(row) == "yes / **no** (p = 0.004)"
    del row["paired_vs_best_linear"]
    assert quality._verdict(row) == "yes / **no**"


def test_over_splits_pairs_each_split_with_its_own_baselines():
    """The table over splits: means per direction, and the default minus the best linear readout of
    the same split (mean, standard error, splits that reached it)."""
    def row(seed, top1, ridge, rb):
        best = [max(ridge[i], rb[i]) for i in range(2)]
        return {"subject": "s", "role": "report", "preset": "recommended", "split_seed": seed, "n_test": 50,
                "top1": top1, "ridge": ridge, "ridge_random": [0.0, 0.0], "ridge_backbone": rb, "best_linear": best}

    rows = [row(1, [0.5, 0.6], [0.4, 0.7], [0.5, 0.5]), row(2, [0.3, 0.6], [0.4, 0.5], [0.35, 0.5]),
            row(3, [0.4, 0.6], [0.2, 0.4], [0.45, 0.6])]
    (e,) = quality.over_splits(rows)
    assert e["split_seeds"] == [1, 2, 3] and e["top1"] == pytest.approx([0.4, 0.6])
    d = e["minus_best_linear"]  # per split: (0, -0.1), (-0.1, +0.1), (-0.05, 0)
    assert d["mean"] == pytest.approx([-0.05, 0.0]) and d["reached"] == [1, 2] and d["splits"] == 3
    assert d["se"][0] == pytest.approx(0.05 / 3 ** 0.5)
    assert e["minus_ridge_backbone"]["mean"] == pytest.approx([-0.0333333, 0.0666667], abs=1e-6)
    table = quality.markdown_over_splits([e])
    assert "| s | recommended | 3 | 0.40 / 0.60 |" in table and "-0.050 ± 0.029 (1/3)" in table
