"""Issue 19 item 2: the NWB 2.x reader (`neuroalign.data.nwb`, h5py only) against the ground truth of files
written with pynwb (`tests/nwb_support.py`): images in presentation-index order, one response row per
image (the mean of its presentations' windows), repeats, image ids; every way a file can say it (Images
with a shuffled `order_of_images` or none, IndexSeries with time stamps or a rate, intervals tables with
blanks, planes, legacy ImageSeries, a separate images file, the series and window chosen); the ROI ids;
and one line for each file the reader refuses."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from nwb_support import expected_subject, write_nwb
from neuroalign.data import SubjectStore
from neuroalign.data.nwb import inventory, natural_key, read_nwb


def assert_matches(subject, truth, *, transform=lambda x: x) -> None:
    """The subject is what a correct reader gives for `truth` (responses through `transform`)."""
    images, means, repeats, ids = expected_subject(truth)
    np.testing.assert_array_equal(subject.image_ids, ids)
    assert subject.images.shape == (ids.size, 1, *images.shape[1:])
    np.testing.assert_allclose(subject.images[:, 0], images / 255.0, atol=1e-6)  # uint8 / 255, in index order
    np.testing.assert_allclose(subject.responses, transform(means), rtol=1e-5, atol=1e-5)
    if repeats is None:
        assert subject.repeats is None
    else:
        np.testing.assert_allclose(subject.repeats, transform(repeats), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw, order, pres_kind", [
    ({}, "order_of_images", "IndexSeries"),  # shuffled order_of_images, members in yet another order
    (dict(presentation="index_rate", series_rate=True), "order_of_images", "IndexSeries"),  # starting_time + rate
    (dict(presentation="intervals", blanks=7, index_column="frame"), "order_of_images", "intervals table"),
    (dict(planes=2, n_rois=41), "order_of_images", "IndexSeries"),  # planes sampled at different times
    (dict(templates="image_series"), "frames of the series", "IndexSeries"),  # legacy ImageSeries + soft link
    (dict(transpose=True), "order_of_images", "IndexSeries"),  # ROIs x frames, told by the timestamps
    (dict(transpose=True, series_rate=True), "order_of_images", "IndexSeries"),  # ROIs x frames, told by rois
    (dict(rgb="gray", repeats=3), "order_of_images", "IndexSeries"),  # RGB with equal channels; 3 repeats
], ids=["shuffled-order", "rate", "intervals-blanks", "two-planes", "image-series", "rois-x-frames",
                                  "rois-x-frames-by-rate", "rgb-gray"])
def test_reader_gives_the_ground_truth(tmp_path, kw, order, pres_kind):
    truth = write_nwb(tmp_path / "s.nwb", **kw)
    subject = read_nwb(tmp_path / "s.nwb")
    assert_matches(subject, truth)
    nwb = subject.meta["nwb"]
    assert nwb["image_order"] == order and nwb["presentations_kind"] == pres_kind
    assert nwb["n_presentations"] == truth["index"].size
    assert nwb["n_blank_dropped"] == kw.get("blanks", 0)
    planes = kw.get("planes", 1)
    assert len(nwb["series"]) == planes and sum(nwb["rois_per_series"]) == subject.n_neurons == kw.get("n_rois", 40)
    assert len(set(nwb["imaging_planes"])) == planes
    # each neuron's ROI: the PlaneSegmentation id of the row the series' rois region names
    assert nwb["roi_ids"] == truth["roi_ids"] and nwb["roi_tables"] == truth["roi_tables"]
    if kw.get("blanks"):
        assert any("blank presentations" in n for n in subject.meta["notes"])
    if kw.get("transpose"):
        said = "its rois region lists" if kw.get("series_rate") else "its timestamps say"
        assert any("ROIs x frames" in n and said in n for n in subject.meta["notes"])


def test_no_order_of_images_reads_natural_order_with_a_warning(tmp_path, caplog):
    """14 images NaturalScene0..13 without order_of_images: index 10 is NaturalScene10, not what a plain
    sort puts at 10 (NaturalScene2); the reader says what it assumed."""
    truth = write_nwb(tmp_path / "n.nwb", order="natural", n_images=14, repeats=2)
    assert truth["names_in_index_order"][10] == "NaturalScene10"
    assert sorted(truth["names_in_index_order"])[10] != "NaturalScene10"  # the pitfall is real for 14 images
    with caplog.at_level(logging.WARNING, logger="neuroalign.data.nwb"):
        subject = read_nwb(tmp_path / "n.nwb")
    assert_matches(subject, truth)
    assert subject.meta["nwb"]["image_order"].startswith("natural order")
    note = next(n for n in subject.meta["notes"] if "no order_of_images" in n)
    assert "natural order" in note and "a plain sort would give NaturalScene0, NaturalScene1, NaturalScene10" in note
    assert any("no order_of_images" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert sorted(["NaturalScene10", "NaturalScene2", "NaturalScene1"], key=natural_key) == [
        "NaturalScene1", "NaturalScene2", "NaturalScene10"]


@pytest.mark.parametrize("layout", ["NHW", "HWN"])
def test_no_templates_with_a_separate_images_file(tmp_path, layout):
    truth = write_nwb(tmp_path / "t.nwb", templates="none")
    images = truth["images"] if layout == "NHW" else np.moveaxis(truth["images"], 0, -1)  # MATLAB's H x W x N
    savemat(tmp_path / "images.mat", {"images": images})
    with pytest.raises(ValueError) as err:
        read_nwb(tmp_path / "t.nwb")
    assert str(err.value).startswith("t.nwb: no stimulus images") and "--images" in str(err.value)
    subject = read_nwb(tmp_path / "t.nwb", images=tmp_path / "images.mat")
    assert_matches(subject, truth)
    assert subject.meta["nwb"]["templates_kind"] == "images file"
    assert subject.meta["images_file"].endswith("images.mat")


def test_choosing_the_response_series(tmp_path):
    """DfOverF by default; Fluorescence or Deconvolved when named (container or container/series)."""
    truth = write_nwb(tmp_path / "m.nwb", extra=("Deconvolved", "Fluorescence"))  # extra series: 2 x dF/F + 1
    assert_matches(read_nwb(tmp_path / "m.nwb"), truth)
    for series in (("Fluorescence",), ("Deconvolved/plane0",)):
        subject = read_nwb(tmp_path / "m.nwb", series=series)
        assert_matches(subject, truth, transform=lambda x: x * 2 + 1)
        assert subject.meta["nwb"]["series"] == [f"{series[0].split('/')[0]}/plane0"]
    # without DfOverF the preference is Deconvolved, then Fluorescence
    truth = write_nwb(tmp_path / "d.nwb", container="Deconvolved", extra=("Fluorescence",))
    subject = read_nwb(tmp_path / "d.nwb")
    assert subject.meta["nwb"]["series"] == ["Deconvolved/plane0"]
    assert_matches(subject, truth)
    offered = inventory(tmp_path / "d.nwb")
    assert offered["series_default"] == "Deconvolved" and set(offered["series"]) == {"Deconvolved", "Fluorescence"}


def test_named_index_column(tmp_path):
    truth = write_nwb(tmp_path / "c.nwb", presentation="intervals", index_column="scene", blanks=3)
    with pytest.raises(ValueError, match=r"^c\.nwb: no stimulus presentation: expected .*\(no image-index column\)"):
        read_nwb(tmp_path / "c.nwb")
    subject = read_nwb(tmp_path / "c.nwb", index_column="scene")
    assert_matches(subject, truth)
    assert subject.meta["nwb"]["index_column"] == "scene"
    with pytest.raises(ValueError) as err:
        read_nwb(tmp_path / "c.nwb", index_column="nope")
    text = str(err.value)
    assert text.startswith("c.nwb: no intervals table has a column 'nope'") and "scene" in text and "\n" not in text


def test_response_window_is_recorded_in_subject_json(tmp_path):
    """A window of 0.1-0.4 s: the ground truth holds only there, so the default 0-0.5 s gives other
    numbers; the import through SubjectStore (the sandboxed service) records the window in subject.json."""
    truth = write_nwb(tmp_path / "w.nwb", window=(0.1, 0.4))
    default = read_nwb(tmp_path / "w.nwb")
    assert not np.allclose(default.responses, expected_subject(truth)[1], atol=1e-3)
    store = SubjectStore(tmp_path / "data")
    info = store.import_nwb("W1", tmp_path / "w.nwb", window=(0.1, 0.4))
    assert info.n_images == 30 and info.n_neurons == 40 and info.has_repeats
    subject = store.load("W1")
    assert_matches(subject, truth)
    sidecar = json.loads((store.root / "W1" / "subject.json").read_text())
    source = sidecar["source"]
    assert source["kind"] == "nwb" and source["response_window_s"] == [0.1, 0.4]
    assert source["nwb"]["response_window_s"] == [0.1, 0.4] and source["nwb"]["roi_ids"] == truth["roi_ids"]
    assert Path(source["nwb_file"]).name == "w.nwb"


def test_unknown_roi_ids_are_noted_not_refused(tmp_path):
    """A series without a rois region, or a region whose rows are not numbers: the responses are read, the
    ROI ids of that series are None and a note says why; the other plane keeps its ids."""
    truth = write_nwb(tmp_path / "r.nwb", planes=2)
    with h5py.File(tmp_path / "r.nwb", "r+") as f:
        del f["processing/ophys/DfOverF/plane0/rois"]
        region = f["processing/ophys/DfOverF/plane1/rois"]
        attrs = dict(region.attrs)
        del f["processing/ophys/DfOverF/plane1/rois"]
        bad = f.create_dataset("processing/ophys/DfOverF/plane1/rois", data=np.array([b"x"] * 20))
        for key, value in attrs.items():
            bad.attrs[key] = value
    subject = read_nwb(tmp_path / "r.nwb")
    assert_matches(subject, truth)
    assert subject.meta["nwb"]["roi_ids"] == [None, None]
    notes = " | ".join(subject.meta["notes"])
    assert "DfOverF/plane0 has no rois region: the ROI ids are unknown" in notes
    assert "DfOverF/plane1/rois has HDF5 type" in notes and "expected numbers: the ROI ids are unknown" in notes


# ---------------------------------------------------------------------------------------------
# refused files: one line, naming the file, saying what was expected


def _drop(path: Path, member: str) -> None:
    with h5py.File(path, "r+") as f:
        del f[member]


def _index_beyond(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        ds = f["stimulus/presentation/natural_scenes_presentations/data"]
        values = ds[()]
        values[3] = 99
        ds[...] = values


def _unsorted_stamps(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        ds = f["processing/ophys/DfOverF/plane0/timestamps"]
        values = ds[()]
        values[10], values[11] = values[11], values[10]
        ds[...] = values


BAD = {
    "no-ophys": ({}, lambda p: _drop(p, "processing/ophys"), {}, "no processing module 'ophys'"),
    "no-presentation": ({}, lambda p: _drop(p, "stimulus/presentation/natural_scenes_presentations"), {},
                        "no stimulus presentation"),
    "onsets-outside": (dict(frames=100), None, {}, "fall outside the recording of DfOverF/plane0"),
    "image-sizes": (dict(image_sizes=[(40, 60)]), None, {}, "images of different sizes"),
    "colour": (dict(rgb="colour"), None, {}, "holds colour images"),
    "two-series-one-plane": (dict(extra=("neuropil",)), None, {}, "DfOverF holds 2 series of imaging plane plane0"),
    "index-beyond-templates": ({}, _index_beyond, {}, "shows image index 99 but"),
    "empty-window": ({}, None, {"window": (0.0, 0.01)}, "holds no frame of DfOverF/plane0"),
    "unknown-series": ({}, None, {"series": ("Calcium",)}, "no response series 'Calcium' in processing/ophys"),
    "unsorted-timestamps": ({}, _unsorted_stamps, {}, "timestamps are not in increasing order"),
    "no-ophys-series": ({}, lambda p: _drop(p, "processing/ophys/DfOverF"), {},
                        "processing/ophys holds no RoiResponseSeries"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_nwb_files_give_one_line(tmp_path, case):
    kw, damage, options, needle = BAD[case]
    path = tmp_path / f"{case}.nwb"
    write_nwb(path, **kw)
    if damage is not None:
        damage(path)
    with pytest.raises(ValueError) as err:
        read_nwb(path, **options)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{case}.nwb: "), text
    assert needle in text and "expected" in text, text


def test_files_that_are_not_nwb_give_one_line(tmp_path):
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.zeros(3)
    savemat(tmp_path / "data.nwb", {"x": np.zeros(3)})
    (tmp_path / "empty.nwb").write_bytes(b"")
    (tmp_path / "text.nwb").write_text("not an nwb file\n")
    with h5py.File(tmp_path / "old.nwb", "w") as f:
        f.attrs["nwb_version"] = "NWB-1.0.6"
    for name, needle in (("plain.h5", "is an HDF5 file but not NWB"), ("data.nwb", "is a MATLAB v5 .mat file"),
                         ("empty.nwb", "the file is empty"), ("text.nwb", "is not an HDF5 file"),
                         ("old.nwb", "is an NWB NWB-1.0.6 file; expected NWB 2.x")):
        with pytest.raises(ValueError) as err:
            read_nwb(tmp_path / name)
        text = str(err.value)
        assert "\n" not in text and text.startswith(f"{name}: ") and needle in text and "expected" in text, text
    with pytest.raises(FileNotFoundError, match="missing.nwb: file not found"):
        read_nwb(tmp_path / "missing.nwb")
