"""Issue 19 items 2 and 4 for NWB inputs: `import --nwb` / `validate --nwb` through the CLI entry point;
an NWB session trains to the same metrics as the same data written as a MAT pair; the per-neuron table
(`export --format csv`, `neuroalign.export_nwb`) carries each neuron's ROI identity and goes back into
the NWB file as a DynamicTable with pynwb, read back equal."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

from nwb_support import expected_subject, write_mat_twin, write_nwb
from neuroalign.cli import main
from neuroalign.data import SubjectStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cli_validate_and_import_nwb(tmp_path, capsys):
    path = tmp_path / "session-7.nwb"
    truth = write_nwb(path, extra=("Fluorescence",), window=(0.1, 0.4))
    data = tmp_path / "data"
    assert main(["validate", "--nwb", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: importable") and "format: NWB" in out and "DfOverF/plane0 (40 ROIs" in out
    # the name defaults to the file name without .nwb; the NWB choices reach the reader
    assert main(["import", "--nwb", str(path), "--data-dir", str(data), "--series", "Fluorescence",
                 "--window", "0.1", "0.4"]) == 0
    assert "imported session-7: 30 images x 40 neurons (with repeats)" in capsys.readouterr().out
    store = SubjectStore(data)
    images, means, repeats, ids = expected_subject(truth)
    subject = store.load("session-7")
    np.testing.assert_allclose(subject.responses, means * 2 + 1, rtol=1e-5, atol=1e-5)  # Fluorescence: 2 dF/F + 1
    np.testing.assert_array_equal(subject.image_ids, ids)
    sidecar = json.loads((data / "session-7" / "subject.json").read_text())
    assert sidecar["source"]["nwb"]["series"] == ["Fluorescence/plane0"]
    assert sidecar["source"]["response_window_s"] == [0.1, 0.4]
    # the same name again, a bad file, a flag that needs --nwb: exit 2, one line on stderr
    assert main(["import", "--nwb", str(path), "--data-dir", str(data)]) == 2
    assert "already exists" in capsys.readouterr().err
    bad = tmp_path / "bad.nwb"
    write_nwb(bad, frames=100)  # the onsets fall after the recording
    for argv in (["import", "--nwb", str(bad), "--data-dir", str(data)],):
        assert main(argv) == 2
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert "\n" not in err and err.startswith("error: bad.nwb: ") and "outside the recording" in err, err
        assert "Traceback" not in captured.err
    assert not store.exists("bad")
    assert main(["validate", "--images", str(path), "--responses", str(path), "--window", "0", "1"]) == 2
    assert "--window only apply to NWB files" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# training and export


@pytest.fixture(scope="module")
def nwb_runs(tmp_path_factory) -> dict:
    """An NWB session (two planes) and its MAT twin imported as two subjects, each trained with a tiny config."""
    import torch

    from neuroalign.config import preset
    from neuroalign.training.pipeline import run_training

    base = tmp_path_factory.mktemp("nwb-runs")
    truth = write_nwb(base / "session.nwb", n_images=60, n_rois=30, planes=2)
    store = SubjectStore(base / "data")
    store.import_nwb("nwb-M1", base / "session.nwb")
    store.import_subject("mat-M1", *write_mat_twin(base / "mat", truth))
    cfg = preset("recommended").replace(epochs=1, device="cpu", batch_size=32, **{
        "image.backbone": "random_rectified", "image.block": 1, "image.transform": "none"})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    runs = {name: run_training(name, cfg, store.root, base / "runs", cache_dir=base / "cache")
            for name in ("nwb-M1", "mat-M1")}
    torch.set_num_threads(before)
    return {"truth": truth, "store": store, "runs": runs, "base": base}


def test_nwb_trains_to_the_same_metrics_as_its_mat_twin(nwb_runs):
    store, runs = nwb_runs["store"], nwb_runs["runs"]
    a, b = store.load("nwb-M1"), store.load("mat-M1")
    for key in ("images", "responses", "repeats", "image_ids"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    results = {name: json.loads((run / "results.json").read_text()) for name, run in runs.items()}
    nwb, mat = results["nwb-M1"], results["mat-M1"]
    assert nwb["test"]["n"] == mat["test"]["n"] == 6
    for direction in ("image_to_neural", "neural_to_image"):
        for metric in ("top1", "top5", "mrr", "mean_rank"):
            assert nwb["test"][direction][metric] == pytest.approx(mat["test"][direction][metric], abs=1e-9)
    np.testing.assert_allclose(np.asarray(nwb["encoding"]["model"]["per_neuron"], dtype=float),
                               np.asarray(mat["encoding"]["model"]["per_neuron"], dtype=float), atol=1e-9)


def test_neuron_table_round_trips_through_the_nwb_file(nwb_runs, tmp_path, capsys):
    """`export RUN --format csv`, then the table added to a copy of the NWB file with pynwb (append mode)
    as a DynamicTable in processing/ophys, read back with pynwb: ROI ids, planes and scores as exported,
    and the scores equal to the .npz/.mat export's."""
    from pynwb import NWBHDF5IO
    from hdmf.common import DynamicTable

    from neuroalign.export import export_run
    from neuroalign.export_nwb import COLUMN_DESCRIPTIONS, neuron_table, read_neuron_table

    truth, store, base = nwb_runs["truth"], nwb_runs["store"], nwb_runs["base"]
    run = tmp_path / "runs" / nwb_runs["runs"]["nwb-M1"].name
    shutil.copytree(nwb_runs["runs"]["nwb-M1"], run)
    assert main(["export", str(run), "--format", "csv", "--data-dir", str(store.root)]) == 0
    out = run / "export_nwb-M1.csv"
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}: 30 neurons, with NWB ROI ids") and "feve" in line and "reliability" in line
    table = read_neuron_table(out)
    assert list(table)[:5] == ["neuron", "series", "imaging_plane", "roi_table", "roi_id"]
    roi_ids = np.concatenate(truth["roi_ids"])
    np.testing.assert_array_equal(table["roi_id"], roi_ids)
    np.testing.assert_array_equal(table["neuron"], np.arange(30))
    assert list(table["series"]) == ["DfOverF/plane0"] * 15 + ["DfOverF/plane1"] * 15
    assert list(table["imaging_plane"]) == ["plane0"] * 15 + ["plane1"] * 15
    assert list(table["roi_table"]) == [truth["roi_tables"][0]] * 15 + [truth["roi_tables"][1]] * 15
    # the scores are the library's and the .npz/.mat export's, to the last digit
    direct = neuron_table(run, data_dir=store.root)
    exported = export_run(run, data_dir=store.root, cache_dir=base / "cache", device="cpu")
    for key in ("feve", "importance", "importance_share", "reliability"):
        if key in exported:
            np.testing.assert_array_equal(table[key], exported[key], err_msg=key)
        np.testing.assert_array_equal(table[key], direct[key], err_msg=key)
    assert np.isfinite(table["reliability"]).all()

    # add it to a copy of the NWB file, as README "NWB files" shows
    nwb_path = tmp_path / "session.nwb"
    shutil.copy(base / "session.nwb", nwb_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(nwb_path), "a") as io:
            nwb = io.read()
            scores = DynamicTable(name="neuroalign_scores", description=f"neuroalign run {run.name}")
            for column in table:
                scores.add_column(name=column, description=COLUMN_DESCRIPTIONS[column])
            for i in range(len(table["neuron"])):
                scores.add_row(**{c: table[c][i].item() for c in table})
            nwb.processing["ophys"].add(scores)
            io.write(nwb)
        with NWBHDF5IO(str(nwb_path), "r") as io:
            back = io.read().processing["ophys"]["neuroalign_scores"]
            got = {c: np.asarray(back[c].data[:]) for c in table}
            # the ROI ids name rows of the file's own PlaneSegmentation tables
            segs = io.read().processing["ophys"]["ImageSegmentation"]
            plane_ids = {f"processing/ophys/ImageSegmentation/{name}": set(np.asarray(seg.id.data[:]).tolist())
                         for name, seg in segs.plane_segmentations.items()}
    np.testing.assert_array_equal(got["roi_id"], roi_ids)
    assert all(int(i) in plane_ids[str(t)] for i, t in zip(got["roi_id"], got["roi_table"]))
    for key in ("feve", "importance", "importance_share", "reliability"):
        np.testing.assert_array_equal(got[key], table[key], err_msg=key)
    assert [str(s) for s in got["series"]] == list(table["series"])
    # the subject's data still reads the same from the file with the table added
    from neuroalign.data.nwb import read_nwb

    np.testing.assert_array_equal(read_nwb(nwb_path).responses, store.load("nwb-M1").responses)


def test_neuron_table_of_a_mat_subject_and_errors(nwb_runs, tmp_path, capsys):
    from neuroalign.export_nwb import neuron_table, read_neuron_table

    store, run = nwb_runs["store"], nwb_runs["runs"]["mat-M1"]
    table = neuron_table(run, data_dir=store.root)
    assert list(table)[0] == "neuron" and "roi_id" not in table and "feve" in table  # no NWB identity
    out = tmp_path / "m.csv"
    assert main(["export", str(run), "--out", str(out), "--data-dir", str(store.root)]) == 0  # csv from the suffix
    assert "no NWB identity" in capsys.readouterr().out
    np.testing.assert_array_equal(read_neuron_table(out)["feve"], table["feve"])
    with pytest.raises(ValueError, match=r"^session\.nwb: not UTF-8 text; expected a neuroalign neuron table"):
        read_neuron_table(nwb_runs["base"] / "session.nwb")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"^other\.csv: starts with 'a,b'; expected a neuroalign neuron table"):
        read_neuron_table(tmp_path / "other.csv")
    assert main(["export", str(run), "--format", "csv", "--out", str(tmp_path / "x.mat")]) == 2
    assert "does not end in .csv" in capsys.readouterr().err


def test_identity_columns_from_the_nwb_record():
    """ROI ids a file did not give are -1; a record that does not cover the neurons is refused in one line."""
    from neuroalign.export_nwb import _identity

    record = {"series": ["DfOverF/plane0", "DfOverF/plane1"], "rois_per_series": [2, 3],
              "imaging_planes": ["general/optophysiology/plane0", "processing/ophys/DfOverF/plane1"],
              "roi_tables": ["processing/ophys/ImageSegmentation/rois_plane0", None], "roi_ids": [[5, 7], None]}
    got = _identity(record, 5, "M/subject.json")
    np.testing.assert_array_equal(got["roi_id"], [5, 7, -1, -1, -1])
    assert list(got["imaging_plane"]) == ["plane0"] * 2 + ["plane1"] * 3
    assert list(got["roi_table"]) == ["processing/ophys/ImageSegmentation/rois_plane0"] * 2 + [""] * 3
    with pytest.raises(ValueError, match=r"^M/subject\.json: the NWB record lists 5 ROIs in 2 series for 6 neurons; "
                                         r"expected one ROI per neuron"):
        _identity(record, 6, "M/subject.json")
