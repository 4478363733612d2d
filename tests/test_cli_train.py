"""End to end: `python -m neuroalign train/evaluate/runs` on a tiny subject, every artifact checked;
resume, graceful stop through the job manager, NaN -> failed status."""

import json
import threading

import numpy as np
import pytest
import torch
from scipy.io import loadmat

from neuroalign.cli import main
from neuroalign.config import TrainConfig
from neuroalign.evaluation.retrieval import retrieval_metrics
from neuroalign.models import similarity_matrix
from neuroalign.training import pipeline, runs
from neuroalign.jobs.manager import JobManager

TINY_FLAGS = ["--backbone", "ds_net_tiny", "--stage", "1", "--block", "1", "--device", "cpu", "--batch-size", "16"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**changes) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 16, "device": "cpu", "image.backbone": "ds_net_tiny", "image.stage": 1,
            "image.block": 1, "neural.d_model": 16, "checkpoint_every_epochs": 1}
    base.update(changes)
    return TrainConfig(preset="reference").replace(**base)


def test_cli_train_writes_every_artifact(tiny_subject_root, tmp_path, capsys):
    runs_root = tmp_path / "runs"
    code = main(["train", "--subjects", "tiny", "--data-dir", str(tiny_subject_root), "--runs-dir", str(runs_root),
                 "--epochs", "3", "--cache-dir", str(tmp_path / "cache"), "--quiet", *TINY_FLAGS])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 1
    run_dir = runs_root / out[0].rsplit("/", 1)[-1]
    for name in ("config.json", "split.json", "normaliser.json", "metrics.jsonl", "status.json", "best.pt", "last.pt",
                 "results.json", "test_outputs.npz", "loss_data.mat", "test_result.mat"):
        assert (run_dir / name).is_file(), name
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["config"]["preset"] == "custom" and cfg["config"]["epochs"] == 3  # tiny backbone: not the preset
    assert cfg["subject"]["data_hash"] and cfg["world_size"] == 1 and cfg["device"] == "cpu"
    assert isinstance(cfg["fused_cpu_kernels"], bool)
    assert runs.read_status(run_dir)["state"] == "finished"

    split = json.loads((run_dir / "split.json").read_text())
    all_idx = split["train"] + split["val"] + split["test"]
    assert sorted(all_idx) == list(range(60))  # disjoint and covering
    results = json.loads((run_dir / "results.json").read_text())
    test = results["test"]
    n = len(split["test"])
    assert test["n"] == n and test["chance_top1"] == pytest.approx(1 / n)
    for d in ("image_to_neural", "neural_to_image"):
        assert set(test[d]) >= {"top1", "top5", "top10", "mean_rank", "median_rank"}
    assert {"ridge", "ridge_random", "ridge_backbone", "repeat"} <= set(results["baselines"])
    assert "val" in results and "mean" in results["ssim"]
    for d in ("image_to_neural", "neural_to_image"):  # a 95 % interval around every top-1
        lo, hi = test[d]["top1_ci"]
        assert lo <= test[d]["top1"] <= hi
        comp = results["comparison"][d]
        best = max(results["baselines"][k][d]["top1"] for k in ("ridge", "ridge_random", "ridge_backbone"))
        assert comp["best_linear"] == best and comp["beats"] == (test[d]["top1"] >= best)

    # results.json is exactly what the saved maps give (test rows, centred similarity of the recommended preset)
    with np.load(run_dir / "test_outputs.npz") as z:
        assert z["test_indices"].tolist() == split["test"]
        sim = similarity_matrix(torch.from_numpy(z["image_maps"]), torch.from_numpy(z["neural_maps"]), center=True).numpy()
        np.testing.assert_allclose(z["similarity"], sim, atol=1e-5)
        ref = retrieval_metrics(z["similarity"])
        assert ref["image_to_neural"]["top1"] == pytest.approx(test["image_to_neural"]["top1"])
        assert ref["neural_to_image"]["mean_rank"] == pytest.approx(test["neural_to_image"]["mean_rank"])

    mat = loadmat(run_dir / "test_result.mat")
    assert mat["z_img"].shape == (n, 16, 64) and mat["z_neu"].shape == (n, 16, 64)
    assert mat["ssim_list"].shape == (1, n)
    assert mat["mean_ssim"].item() == pytest.approx(results["ssim"]["mean"], rel=1e-6)
    loss = loadmat(run_dir / "loss_data.mat")
    assert loss["train_loss_hist"].shape == (1, 3) and loss["test_loss_hist"].shape == (1, 3)
    epochs = [m for m in runs.read_metrics(run_dir) if m["event"] == "epoch"]
    np.testing.assert_allclose(loss["test_loss_hist"][0], [m["val_loss"] for m in epochs])

    # normaliser: fitted on train rows only
    norm = json.loads((run_dir / "normaliser.json").read_text())
    from neuroalign.data import load_subject
    sub = load_subject(tiny_subject_root / "tiny")
    assert norm["kind"] == cfg["config"]["data"]["normaliser"] == "zscore"  # the recommended preset's choice
    np.testing.assert_allclose(norm["offset"], sub.responses[split["train"]].astype(np.float64).mean(axis=0), rtol=1e-6)
    assert not np.allclose(norm["offset"], sub.responses.astype(np.float64).mean(axis=0), rtol=1e-6)

    # evaluate recomputes the same numbers from best.pt
    (run_dir / "results.json").unlink()
    assert main(["evaluate", str(run_dir)]) == 0
    again = json.loads((run_dir / "results.json").read_text())
    # every number of both directions, flattened (pytest.approx refuses nested dicts such as top1_ci)
    for direction in ("image_to_neural", "neural_to_image"):
        got, want = again["test"][direction], test[direction]
        assert set(got) == set(want)
        for key, value in want.items():
            np.testing.assert_allclose(np.asarray(got[key], dtype=float), np.asarray(value, dtype=float),
                                       rtol=1e-6, err_msg=f"{direction}.{key}")
    capsys.readouterr()
    assert main(["runs", "--runs-dir", str(runs_root), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["subject"] == "tiny" and listed[0]["state"] == "finished"


def test_cli_errors_are_one_line(tiny_subject_root, tmp_path, capsys):
    assert main(["train", "--subjects", "nobody", "--data-dir", str(tiny_subject_root), "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nobody" in err[0]
    assert main(["train", "--subjects", "tiny", "--data-dir", str(tiny_subject_root), "--epochs", "0"]) == 2
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    if not torch.cuda.is_available():
        assert main(["train", "--subjects", "tiny", "--data-dir", str(tiny_subject_root), "--runs-dir", str(tmp_path),
                     "--device", "cuda"]) == 2
        assert "cuda" in capsys.readouterr().err


def test_cli_flags_override_preset():
    from neuroalign.cli import build_parser
    from neuroalign.cli.train_commands import build_config

    args = build_parser().parse_args(["train", "--subjects", "x", "--preset", "reference", "--center",
                                      "--temperature", "0.1", "--lr-image", "1e-3", "--lr-neural", "2e-4",
                                      "--early-stopping", "7", "--backbone-mode", "finetune", "--backbone", "ds_net_tiny"])
    cfg = build_config(args)
    assert cfg.preset == "custom" and cfg.loss.center and cfg.loss.temperature == 0.1
    assert cfg.optim.image_lr == 1e-3 and cfg.optim.neural_lr == 2e-4 and cfg.early_stopping_patience == 7
    assert cfg.image.mode == "finetune" and cfg.image.block == 2  # clamped to ds_net_tiny's stage-2 depth
    assert build_config(build_parser().parse_args(["train", "--subjects", "x"])).preset == "recommended"
    kept = build_config(build_parser().parse_args(["train", "--subjects", "x", "--preset", "reference", "--epochs", "5",
                                                   "--max-seconds", "60", "--device", "cpu", "--seed", "3"]))
    assert kept.preset == "reference" and kept.epochs == 5  # run-control flags keep the preset's name
    latent = build_config(build_parser().parse_args(["train", "--subjects", "x", "--neural-kind", "latent",
                                                     "--latents", "16", "--d-model", "32", "--heads", "2"]))
    assert build_config(build_parser().parse_args(["train", "--subjects", "x", "--threads", "3"])).threads == 3
    n = latent.neural
    assert (n.kind, n.n_latents, n.d_model, n.n_heads, latent.preset) == ("latent", 16, 32, 2, "custom")
    with pytest.raises(ValueError, match="divisible"):  # validated like any other config
        build_config(build_parser().parse_args(["train", "--subjects", "x", "--d-model", "30", "--heads", "4"]))


def test_cli_threads_flag_validated(tiny_subject_root, tmp_path):
    assert main(["train", "--subjects", "tiny", "--data-dir", str(tiny_subject_root), "--runs-dir", str(tmp_path),
                 "--threads", "0"]) == 2


def test_resume_continues_exactly(tiny_subject_root, tmp_path):
    straight = pipeline.run_training("tiny", tiny_config(epochs=4), tiny_subject_root, tmp_path / "a")
    stop = threading.Event()

    def cb(event, values):
        if event == "epoch" and values["epoch"] == 2:
            stop.set()

    first = pipeline.run_training("tiny", tiny_config(epochs=4), tiny_subject_root, tmp_path / "b",
                                  callback=cb, stop_event=stop)
    assert runs.read_status(first)["state"] == "stopped"
    assert (first / "results.json").is_file()  # a stopped run is still evaluated
    runs.write_status(first, "interrupted", "simulated crash")
    pipeline.resume_training(first)
    assert runs.read_status(first)["state"] == "finished"
    a = loadmat(straight / "loss_data.mat")["train_loss_hist"][0]
    b = loadmat(first / "loss_data.mat")["train_loss_hist"][0]
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_job_manager_real_pipeline_stop_and_nan(tiny_subject_root, tmp_path, monkeypatch):
    mgr = JobManager()
    job = mgr.start("tiny", tiny_config(epochs=10_000), tiny_subject_root, tmp_path / "runs")
    for _ in range(600):
        snap = mgr.get(job)
        if any(h["event"] == "epoch" for h in snap.history):
            break
        threading.Event().wait(0.05)
    mgr.stop(job)
    snap = mgr.wait(job, 60)
    assert snap.state == "stopped" and snap.epoch < 10_000
    assert (snap.run_dir / "results.json").is_file() and (snap.run_dir / "best.pt").is_file()

    from neuroalign.models import CombinedLoss
    orig = CombinedLoss.forward
    monkeypatch.setattr(CombinedLoss, "forward", lambda self, a, b: (orig(self, a, b)[0] * float("inf"), orig(self, a, b)[1]))
    mgr = JobManager(runner=pipeline.run_training)  # in this process, where the patched loss is
    job = mgr.start("tiny", tiny_config(epochs=3), tiny_subject_root, tmp_path / "runs")
    snap = mgr.wait(job, 60)
    assert snap.state == "failed" and "inf" in snap.error
    status = runs.read_status(snap.run_dir)
    assert status["state"] == "failed" and "loss became inf" in status["message"]
    assert not (snap.run_dir / "results.json").exists()


def test_every_train_form_field_is_a_cli_flag():
    """Each TrainConfig field the dashboard form exposes can be set from the command line too: both
    come from one table, and each form field's flag sets exactly its config path."""
    from neuroalign.cli import build_parser
    from neuroalign.cli.train_commands import build_config, given_fields
    from neuroalign.config_fields import lookup
    from neuroalign.ui.train_form import FORM_FIELDS

    parser = build_parser()
    args = parser.parse_args(["train", "--subjects", "x", "--layers", "2", "--normaliser", "minmax", "--w-rmse", "0.5",
                              "--w-ssim", "0.25", "--dropout", "0.2", "--repeat-augment", "0.3", "--select-by", "val_top1",
                              "--components", "64", "--feature-transform", "abs", "--neural-kind", "transformer"])
    cfg = build_config(args)
    assert (cfg.neural.n_layers, cfg.data.normaliser, cfg.loss.w_rmse, cfg.loss.w_ssim) == (2, "minmax", 0.5, 0.25)
    assert (cfg.neural.dropout, cfg.data.repeat_augment, cfg.select_by, cfg.n_components) == (0.2, 0.3, "val_top1", 64)
    assert cfg.init == "random"  # another neural tower on the default preset: no closed-form start
    base = build_config(parser.parse_args(["train", "--subjects", "x", "--preset", "reference"])).to_dict()
    for f in FORM_FIELDS:  # a value unlike the reference preset's, given by the field's own flag
        old = lookup(base, f.path)
        if f.kind == "bool":
            argv = [f.flag if not old else "--no-" + f.flag[2:]]
            want = not old
        elif f.kind == "choice":
            want = next(c for c in f.choices if c != old)
            argv = [f.flag, want]
        else:
            want = 1 if old in (None, 0) else (old + 1 if f.kind == "int" else old / 2)
            argv = [f.flag, str(want)]
        ns = parser.parse_args(["train", "--subjects", "x", "--preset", "reference", *argv])
        (field, value), = given_fields(ns).items()
        assert field.path == f.path and value == want, f.flag


def test_cli_summary_and_runs_show_the_best_linear_readout(tmp_path, capsys):
    """Issue 23 item 13: `runs`, `evaluate` and the `train` summary name the best linear readout (not
    only the pixel ridge), and the stop reason is words, not the internal token `time_budget`."""
    from neuroalign.cli import train_commands
    from neuroalign.io_utils import atomic_write_json

    def both(a, b):
        return {"image_to_neural": {"top1": a}, "neural_to_image": {"top1": b}}

    results = {"test": {"n": 40, "chance_top1": 0.025, **both(0.5, 0.2)},
               "baselines": {"ridge": both(0.1, 0.1), "ridge_backbone": both(0.4, 0.3), "ridge_random": both(0.2, 0.1)}}
    line = train_commands._summary(results)
    assert "best linear readout: model image→neural beats 0.400 (ridge on backbone features)" in line
    assert "neural→image does not beat 0.300 (ridge on backbone features)" in line
    results["comparison"] = {"neural_to_image": {"best_name": "ridge_backbone", "p_value": 0.21}}
    assert "does not beat 0.300 (ridge on backbone features, paired p = 0.21: within noise)" in train_commands._summary(results)
    del results["comparison"]
    assert train_commands.stop_reason_text("time_budget") == "reached its time budget"
    assert "time_budget" not in train_commands.stop_reason_text("time_budget")
    run_dir = runs.new_run_dir(tmp_path, "m1")
    atomic_write_json(run_dir / "config.json", {"config": TrainConfig(preset="reference").to_dict(), "subject": {"name": "m1"}})
    atomic_write_json(run_dir / "results.json", results)
    runs.write_status(run_dir, "finished", "done")
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "LINEAR I→N" in out[0] and "BEST LINEAR" in out[0] and "RIDGE " not in out[0]
    assert "0.400" in out[1] and "0.300" in out[1] and out[1].rstrip().endswith("ridge on backbone features")
    assert main(["runs", "--runs-dir", str(tmp_path), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["best_linear_top1_image_to_neural"] == 0.4 and listed["best_linear_image_to_neural"] == "ridge_backbone"


def test_cli_resume_lines_name_the_subject(tmp_path, capsys, monkeypatch):
    """Issue 23 item 13: `train --resume` labels its progress lines with the run's subject."""
    from neuroalign.io_utils import atomic_write_json

    run_dir = runs.new_run_dir(tmp_path, "mouse7")
    atomic_write_json(run_dir / "config.json", {"config": TrainConfig(preset="reference").to_dict(), "subject": {"name": "mouse7"}})

    def fake_resume(path, data_dir=None, cache_dir=None, callback=None, threads=None):
        callback("epoch", {"epoch": 4.0, "train_loss": 0.1, "val_loss": 0.2, "elapsed_s": 3.0})
        return path

    monkeypatch.setattr(pipeline, "resume_training", fake_resume)
    assert main(["train", "--resume", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "[mouse7] epoch 4" in err and "[resume]" not in err
