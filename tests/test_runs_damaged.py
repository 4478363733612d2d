"""Damaged run files (issue 13 part 4): every file a run folder holds, truncated or corrupted, gives
one clear line naming the file from the `runs` readers and from the CLI (exit 2, no traceback),
`list_runs` lists the run with its error instead of failing, a torn last line of metrics.jsonl is
skipped with a warning, and checkpoints never unpickle arbitrary objects."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from neuroalign.cli import main
from neuroalign.config import TrainConfig
from neuroalign.training import pipeline, runs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request) -> dict[str, Path]:
    """One real, finished 2-epoch run of a tiny subject (copied per test, then damaged)."""
    from scipy.io import savemat

    from conftest import _tiny_arrays

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("damaged")
    arrays = _tiny_arrays(n_images=40, n_neurons=16)
    data = base / "data" / "tiny" / "Data"
    data.mkdir(parents=True)
    savemat(data / "images.mat", {"images": arrays["images"]})
    savemat(data / "responses.mat", {"responses": arrays["responses"], "responses_repeats": arrays["repeats"]})
    cfg = TrainConfig(preset="reference").replace(**{"epochs": 2, "batch_size": 16, "device": "cpu", "image.backbone": "ds_net_tiny",
                                   "image.stage": 1, "image.block": 1, "neural.d_model": 16,
                                   "checkpoint_every_epochs": 1})
    run = pipeline.run_training("tiny", cfg, base / "data", base / "runs", cache_dir=base / "cache")
    torch.set_num_threads(before)
    return {"run": run, "data": base / "data", "cache": base / "cache"}


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "runs" / trained["run"].name
    shutil.copytree(trained["run"], copy)
    return copy


def _truncate(path: Path, keep: float | int) -> int:
    raw = path.read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else keep
    path.write_bytes(raw[:n])
    return n


def _one_line_cli(capsys, argv: list[str], *needles: str) -> str:
    rc = main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2, (rc, err, captured.out)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err + captured.out
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# ---- JSON files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["half", "all but 1 byte", "empty", "garbage", "not utf-8", "a list"])
@pytest.mark.parametrize("name", [runs.CONFIG_FILE, runs.SPLIT_FILE, runs.STATUS_FILE, runs.RESULTS_FILE])
def test_damaged_json_is_one_clear_line(run, name, damage):
    path = run / name
    if damage == "half":
        _truncate(path, 0.5)
    elif damage == "all but 1 byte":  # the closing brace lost (a trailing newline would not matter)
        _truncate(path, len(path.read_bytes().rstrip()) - 1)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b'{"state": finished}')
    elif damage == "not utf-8":
        path.write_bytes(b'{"state": "\xff\xfe"}')
    else:
        path.write_text("[1, 2, 3]")
    expected = {"half": "truncated at byte", "all but 1 byte": "truncated at byte", "empty": "is empty",
                "garbage": "is not valid JSON", "not utf-8": "is not UTF-8", "a list": "expected a JSON object"}[damage]
    if name in (runs.CONFIG_FILE, runs.SPLIT_FILE):
        with pytest.raises(runs.RunFileError) as e:
            runs.load_run(run)
        msg = str(e.value)
    else:  # regenerable: read as empty, the message kept in `problems`
        record = runs.load_run(run)
        msg = record.problems[name]
        assert (record.status if name == runs.STATUS_FILE else record.results) in ({}, None)
    assert "\n" not in msg and f"{run.name}/{name}" in msg and expected in msg, msg
    if damage == "half":
        assert f"truncated at byte {path.stat().st_size}" in msg
    hint = {runs.RESULTS_FILE: "python -m neuroalign evaluate", runs.STATUS_FILE: "--resume",
            runs.CONFIG_FILE: "delete the run", runs.SPLIT_FILE: "delete the run"}[name]
    assert hint in msg
    # listing never fails and shows the run with its error
    [info] = runs.list_runs(run.parent)
    if name == runs.SPLIT_FILE:
        assert info.error is None and info.state == "finished"  # the listing does not read the split
    else:
        assert info.error and name in info.error and expected in info.error
        assert info.state == ("finished" if name == runs.RESULTS_FILE else "unreadable")


def test_a_json_document_cut_at_any_byte_reads_as_truncated(tmp_path):
    """Wherever a crash cuts a document (inside a key, a string, a literal, a number's fraction or
    exponent, after a minus sign, between the bytes of a character), the message says it was truncated and where; a document broken
    inside is not called truncated."""
    from neuroalign.training.run_files import RunFileError, read_json_file

    doc = json.dumps({"loss": -3.125e-05, "ok": True, "none": None, "name": "x \u00d7 y",
                      "rows": [1, 2.5, -7, 1e+300, False], "nested": {"a": [0.001, "b"]}}, ensure_ascii=False)
    raw = doc.encode("utf-8")
    path = tmp_path / "results.json"
    for n in range(1, len(raw)):
        path.write_bytes(raw[:n])
        with pytest.raises(RunFileError) as err:
            read_json_file(path)
        msg = str(err.value)
        assert f"truncated at byte {n}" in msg, (n, raw[:n], msg)
    path.write_text(doc.replace("2.5", "2.5.5"))
    with pytest.raises(RunFileError, match=r"is not valid JSON \(Expecting ',' delimiter at byte \d+\)"):
        read_json_file(path)


def test_truncated_results_json_in_the_cli_list_and_evaluate_rewrites_it(run, trained, capsys):
    n = _truncate(run / runs.RESULTS_FILE, 0.6)
    assert main(["runs", "--runs-dir", str(run.parent), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["state"] == "finished"
    assert runs.list_runs(run.parent)[0].error.endswith(f"results.json is not valid JSON (truncated at byte {n}); "
                                                        f"re-run `python -m neuroalign evaluate {runs.display_path(run)}` "
                                                        "to rewrite it")
    # the advice works: evaluate does not need the damaged results and rewrites them
    assert main(["evaluate", str(run), "--data-dir", str(trained["data"])]) == 0
    capsys.readouterr()
    assert runs.load_run(run).problems == {} and runs.list_runs(run.parent)[0].error is None


@pytest.mark.parametrize("name", [runs.CONFIG_FILE, runs.SPLIT_FILE, runs.NORMALISER_FILE])
def test_cli_evaluate_with_a_damaged_input_file(run, trained, capsys, name):
    _truncate(run / name, 0.5)
    _one_line_cli(capsys, ["evaluate", str(run), "--data-dir", str(trained["data"])], f"{run.name}/{name}",
                  "truncated at byte")


def test_cli_runs_lists_a_damaged_status_as_unreadable(run, capsys):
    _truncate(run / runs.STATUS_FILE, 0.5)
    assert main(["runs", "--runs-dir", str(run.parent)]) == 0
    out = capsys.readouterr()
    assert "unreadable" in out.out and "Traceback" not in out.err
    assert runs.read_status(run) == {}  # writers still merge into (and so replace) a damaged status
    runs.write_status(run, "interrupted", "rewritten")
    assert runs.list_runs(run.parent)[0].state == "interrupted"


def test_a_damaged_run_does_not_hide_the_others(run, trained, tmp_path):
    good = run.parent / (run.name[:-1] + "z")
    shutil.copytree(trained["run"], good)
    _truncate(run / runs.CONFIG_FILE, 0.3)
    (run.parent / "stray-file").write_text("x")
    infos = {i.run_id: i for i in runs.list_runs(run.parent)}
    assert infos[good.name].error is None and infos[good.name].state == "finished"
    assert infos[run.name].state == "unreadable" and "config.json" in infos[run.name].error
    assert runs.mark_interrupted(run.parent) == []  # an unreadable run is never marked


# ---- metrics.jsonl --------------------------------------------------------------------------------


def test_torn_last_metrics_line_is_skipped_with_a_warning(run, caplog):
    records = runs.read_metrics(run)
    path = run / runs.METRICS_FILE
    raw = path.read_bytes()
    path.write_bytes(raw[:-7])  # the last record cut short, as by a kill mid-write
    with caplog.at_level(logging.WARNING, logger="neuroalign.training.runs"):
        assert runs.read_metrics(run) == records[:-1]
    assert any("skipped the last line" in r.getMessage() and "metrics.jsonl" in r.getMessage() for r in caplog.records)
    runs.append_metrics(run, {"event": "epoch", "epoch": 99})  # a resumed run appends after the torn line
    assert runs.read_metrics(run) == records[:-1] + [{"event": "epoch", "epoch": 99}]


def test_metrics_that_are_not_a_metrics_log(run):
    (run / runs.METRICS_FILE).write_bytes(b"\x00\x01garbage\nmore garbage\n")
    with pytest.raises(runs.RunFileError, match=r"metrics.jsonl holds no metrics record in 2 lines"):
        runs.read_metrics(run)


# ---- checkpoints and test outputs ----------------------------------------------------------------


class _Payload:
    """Not a tensor or plain container: a pickle of it must never be loaded."""


def _damage_checkpoint(path: Path, damage: str) -> str:
    if damage == "half":
        _truncate(path, 0.5)
        return "is truncated or corrupt"
    if damage == "all but 100 bytes":
        _truncate(path, path.stat().st_size - 100)
        return "is truncated or corrupt"
    if damage == "empty":
        path.write_bytes(b"")
        return "is empty"
    if damage == "garbage":
        path.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
        return "is truncated or corrupt"
    if damage == "pickled object":
        torch.save({"model": {}, "epoch": 1, "val_loss": 0.0, "opt_image": {}, "opt_neural": {}, "global_step": 1,
                    "payload": _Payload()}, path)
        return "weights_only=True"
    if damage == "wrong keys":
        torch.save({"weights": torch.zeros(2)}, path)
        return "lacks model"
    raise AssertionError(damage)


DAMAGES = ["half", "all but 100 bytes", "empty", "garbage", "pickled object", "wrong keys"]


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", [runs.BEST_CKPT, runs.LAST_CKPT])
def test_damaged_checkpoint_is_one_clear_line(run, name, damage):
    expected = _damage_checkpoint(run / name, damage)
    with pytest.raises(runs.RunFileError) as e:
        runs.load_checkpoint(run / name)
    msg = str(e.value)
    assert "\n" not in msg and f"{run.name}/{name}" in msg and expected in msg, msg
    assert ("evaluate needs it" if name == runs.BEST_CKPT else "resume needs it") in msg


def test_intact_checkpoints_load(run):
    best, last = runs.load_checkpoint(run / runs.BEST_CKPT), runs.load_checkpoint(run / runs.LAST_CKPT)
    assert int(best["epoch"]) >= 1 and int(last["epoch"]) == 2 and isinstance(last["model"], dict)


@pytest.mark.parametrize("damage", ["half", "pickled object"])
def test_cli_evaluate_with_a_damaged_best_checkpoint(run, trained, capsys, damage):
    expected = _damage_checkpoint(run / runs.BEST_CKPT, damage)
    _one_line_cli(capsys, ["evaluate", str(run), "--data-dir", str(trained["data"])], "best.pt", expected)


@pytest.mark.parametrize("damage", ["half", "empty"])
def test_cli_resume_with_a_damaged_last_checkpoint(run, trained, capsys, damage):
    runs.write_status(run, "interrupted", "simulated crash")
    expected = _damage_checkpoint(run / runs.LAST_CKPT, damage)
    _one_line_cli(capsys, ["train", "--resume", str(run), "--data-dir", str(trained["data"])], "last.pt", expected)
    assert runs.read_status(run)["state"] == "interrupted"  # refused before anything was changed


def test_truncated_test_outputs(run):
    _truncate(run / runs.TEST_OUTPUTS, 0.5)
    with pytest.raises(runs.RunFileError, match=r"test_outputs.npz is truncated or corrupt .*evaluate"):
        runs.load_run(run).test_outputs()
