"""Issue 20 item 14 (run files): accurate one-line messages for a `best.pt` of random bytes (not a
PyTorch checkpoint) and a plain pickle (refused unread, no torch warnings), a `split.json` whose splits
overlap (named), and `runs` showing a valid-JSON status with an impossible state as damaged, with the
reason, instead of the state it read."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from neuroalign.cli import main
from neuroalign.config import TrainConfig
from neuroalign.training import pipeline, runs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """One real, finished 1-epoch run of a tiny subject (copied per test, then damaged)."""
    from scipy.io import savemat

    from conftest import _tiny_arrays

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("messages")
    arrays = _tiny_arrays(n_images=40, n_neurons=16)
    data = base / "data" / "tiny" / "Data"
    data.mkdir(parents=True)
    savemat(data / "images.mat", {"images": arrays["images"]})
    savemat(data / "responses.mat", {"responses": arrays["responses"], "responses_repeats": arrays["repeats"]})
    cfg = TrainConfig(preset="reference").replace(**{
        "epochs": 1, "batch_size": 16, "device": "cpu", "image.backbone": "ds_net_tiny", "image.stage": 1,
        "image.block": 1, "neural.d_model": 16})
    run = pipeline.run_training("tiny", cfg, base / "data", base / "runs", cache_dir=base / "cache")
    torch.set_num_threads(before)
    return {"run": run, "data": base / "data"}


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "runs" / trained["run"].name
    shutil.copytree(trained["run"], copy)
    return copy


def _cli(capsys, argv):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err, [str(w.message) for w in caught]


def test_random_bytes_are_not_a_pytorch_checkpoint(run, trained, capsys):
    (run / runs.BEST_CKPT).write_bytes(os.urandom(4096).replace(b"\x80", b"\x81"))  # no pickle header by chance
    with pytest.raises(runs.RunFileError) as e:
        runs.load_checkpoint(run / runs.BEST_CKPT)
    msg = str(e.value)
    assert f"{run.name}/best.pt is not a PyTorch checkpoint" in msg and "other than tensors" not in msg, msg
    rc, _, err, caught = _cli(capsys, ["evaluate", str(run), "--data-dir", str(trained["data"])])
    assert rc == 2 and err.count("\n") == 1 and "best.pt is not a PyTorch checkpoint" in err and not caught, err


def test_a_plain_pickle_is_refused_unread_in_one_line(run, trained, capfd):
    ckpt = torch.load(run / runs.BEST_CKPT, weights_only=True)
    with open(run / runs.BEST_CKPT, "wb") as fh:  # what pickle.dump writes, not torch.save
        pickle.dump({"model": {k: {n: t.tolist() for n, t in v.items()} for k, v in ckpt["model"].items()},
                     "epoch": 1, "val_loss": 0.5}, fh, protocol=4)
    rc, _, err, caught = _cli(capfd, ["evaluate", str(run), "--data-dir", str(trained["data"])])  # fd-level stderr
    assert rc == 2 and err.count("\n") == 1, err  # torch's "Detected pickle protocol 4" warning is not printed
    assert "best.pt is a plain Python pickle (protocol 4), not a PyTorch checkpoint" in err and not caught, (err, caught)


def test_an_object_in_a_torch_checkpoint_is_named(run):
    torch.save({"model": {}, "epoch": 1, "val_loss": 0.0, "payload": Path("x")}, run / runs.BEST_CKPT)
    with pytest.raises(runs.RunFileError, match=r"best.pt holds objects other than tensors and plain containers "
                                                r"\(pathlib\.\w*Path; refused"):
        runs.load_checkpoint(run / runs.BEST_CKPT)


def test_a_legacy_torch_checkpoint_still_loads(run):
    ckpt = torch.load(run / runs.BEST_CKPT, weights_only=True)
    torch.save(ckpt, run / runs.BEST_CKPT, _use_new_zipfile_serialization=False)
    assert runs.load_checkpoint(run / runs.BEST_CKPT)["epoch"] == ckpt["epoch"]


@pytest.mark.parametrize("edit, expected", [
    (lambda s: dict(s, val=s["val"] + s["test"][:2]), "has 2 image(s) in both 'val' and 'test'"),
    (lambda s: dict(s, train=s["train"] + s["train"][:1]), "lists an image twice in 'train'"),
])
def test_overlapping_splits_name_split_json(run, trained, capsys, edit, expected):
    split = json.loads((run / runs.SPLIT_FILE).read_text())
    (run / runs.SPLIT_FILE).write_text(json.dumps(edit(split)))
    rc, _, err, _ = _cli(capsys, ["evaluate", str(run), "--data-dir", str(trained["data"])])
    assert rc == 2 and err.count("\n") == 1 and f"{run.name}/split.json {expected}" in err, err


@pytest.mark.parametrize("status, expected", [
    ({"state": "bogus", "message": "", "progress": 1.0}, 'status.json has state "bogus"; expected one of queued'),
    ({"state": 7}, "status.json has state 7; expected one of"),
    ({"message": "no state"}, "status.json lacks a state; expected one of"),
])
def test_runs_shows_an_impossible_state_as_damaged_with_the_reason(run, capsys, status, expected):
    (run / runs.STATUS_FILE).write_text(json.dumps(status))
    [info] = runs.list_runs(run.parent)
    assert info.state == "unreadable" and expected in info.error, info
    assert runs.load_run(run).status == {} and expected in runs.load_run(run).problems[runs.STATUS_FILE]
    rc, out, _, _ = _cli(capsys, ["runs", "--runs-dir", str(run.parent)])
    lines = out.splitlines()
    assert rc == 0 and "bogus" not in lines[1] and " unreadable " in lines[1] and expected in lines[2], out
