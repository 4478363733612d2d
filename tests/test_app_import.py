"""Subjects page, Import tab, through AppTest (issue 19 items 2 and 3): an NWB upload with its choices,
preview and Save; an NWB file without stimulus templates and its images .mat; bad NWB files; import
from the server's import folders (NEUROALIGN_IMPORT_ROOTS), links that lead out of them, nothing typed."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

import app_support as s
import nwb_support as ns
from app_support import app_env  # noqa: F401 (fixture)

from neuroalign.data.store import SubjectStore
from neuroalign.ui import import_view, keys, server_import

PAGE = "pages/subjects.py"
OCTET = "application/octet-stream"


def _nwb_upload(at, name: str, data: bytes):
    at.radio(key=keys.UPLOAD_FORMAT).set_value(import_view.NWB).run()
    at.file_uploader(key=keys.UPLOAD_NWB).set_value((name, data, OCTET)).run()
    return at


def _everything(root) -> list[str]:
    """Every entry below `root`, hidden ones included (a staging folder left behind shows here)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_nwb_upload_choices_preview_and_save(app_env, tmp_path):
    nwb = tmp_path / "sub-07_ses-1.nwb"
    truth = ns.write_nwb(nwb, n_images=20, n_rois=12, planes=2, repeats=3, extra=("Fluorescence",))
    at = _nwb_upload(s.app_at(PAGE), nwb.name, nwb.read_bytes())
    s.no_exceptions(at)
    assert not at.error
    # the choices come from the file (read in the sandbox before any check)
    line = next(c.value for c in at.caption if c.value.startswith("In sub-07_ses-1.nwb: NWB 2."))
    for part in ("DfOverF (2 series)", "Fluorescence (2 series)", "(IndexSeries, 60)", "(Images, 20)"):
        assert part in line, (part, line)
    series = at.selectbox(key=keys.NWB_SERIES)
    assert series.value == import_view.AUTO  # automatic ...
    assert series.label == "Responses (processing/ophys) · automatic: DfOverF"  # ... says what it picks here
    assert {"DfOverF", "Fluorescence", "DfOverF/plane1"} <= set(series.options)  # a container or one plane
    assert at.selectbox(key=keys.NWB_PRESENTATIONS).options == [
        import_view.AUTO, "stimulus/presentation/natural_scenes_presentations"]
    assert at.selectbox(key=keys.NWB_TEMPLATES).label.endswith("automatic: stimulus/templates/natural_scenes")
    assert keys.NWB_INDEX_COLUMN not in [b.key for b in at.selectbox]  # an IndexSeries has no columns to pick
    assert at.text_input(key=keys.UPLOAD_NAME).proto.placeholder == "sub-07_ses-1"  # the default name
    at.number_input(key=keys.NWB_WINDOW_START).set_value(0.6).run()  # after its end: said once, no check
    assert [w.value for w in at.warning] == ["response window 0.6 to 0.5 s: expected finite START \\< END in seconds "
                                             "after each onset (e.g. 0 0.5)"]
    assert at.button(key=keys.UPLOAD_CHECK).disabled and not at.error
    # not the automatic series, and a window inside the one the responses were written for
    at.selectbox(key=keys.NWB_SERIES).set_value("Fluorescence")
    at.number_input(key=keys.NWB_WINDOW_START).set_value(0.1)
    at.number_input(key=keys.NWB_WINDOW_END).set_value(0.4).run()
    at.button(key=keys.UPLOAD_CHECK).click().run()
    s.no_exceptions(at)
    assert not at.error and at.success[0].value == "Ready to import as **sub-07_ses-1**:"
    summary = at.code[0].value
    for part in ("20 images of 68 x 270", "Fluorescence/plane0", "Fluorescence/plane1", "→ 12 neurons",
                 "0.1 to 0.4 s after each onset", "repeats: yes, 3", "60 presentations"):
        assert part in summary, (part, summary)
    assert len(at.get("image")) == 8  # the preview's stimuli
    assert s.arr(next(sp for sp in s.chart_specs(at) if "upload" in sp["layout"]["title"]["text"])
                 ["data"][0]["z"]).shape == (12, 20)
    assert [p.name for p in app_env["data"].iterdir() if not p.name.startswith(".")] == []  # nothing saved yet
    # a changed window drops the preview: Save imports only what was checked
    at.number_input(key=keys.NWB_WINDOW_END).set_value(0.45).run()
    assert keys.UPLOAD_SAVE not in [b.key for b in at.button]
    assert any("changed since the check" in i.value for i in at.info)
    at.number_input(key=keys.NWB_WINDOW_END).set_value(0.4)
    at.button(key=keys.UPLOAD_CHECK).click().run()
    at.button(key=keys.UPLOAD_SAVE).click().run()
    s.no_exceptions(at)
    assert _everything(app_env["data"]) == ["sub-07_ses-1", "sub-07_ses-1/Data", "sub-07_ses-1/Data/images.mat",
                                            "sub-07_ses-1/Data/responses.mat", "sub-07_ses-1/subject.json"]
    subject = SubjectStore(app_env["data"]).load("sub-07_ses-1")
    images, means, repeats, _ = ns.expected_subject(truth)
    assert (subject.n_images, subject.n_neurons) == (20, 12)
    np.testing.assert_allclose(subject.responses, 2 * means + 1, rtol=1e-5, atol=1e-5)  # Fluorescence = 2 dF/F + 1
    assert subject.repeats.shape == (3, 20, 12)
    np.testing.assert_allclose(subject.repeats, 2 * repeats + 1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(subject.images[:, 0], images / 255.0, atol=1e-6)
    block = json.loads((app_env["data"] / "sub-07_ses-1" / "subject.json").read_text())["source"]["nwb"]
    assert block["response_window_s"] == [0.1, 0.4]
    assert block["series"] == ["Fluorescence/plane0", "Fluorescence/plane1"]
    assert block["presentations_per_image"] == [3, 3] and block["n_presentations"] == 60
    # Browse opens the new subject and says how its responses were made
    assert at.selectbox(key=keys.SUBJECT_PICK).value == "sub-07_ses-1"
    assert [m.value for m in at.metric][:3] == ["20", "12", "3"]
    caption = next(c.value for c in at.caption if c.value.startswith("Imported from"))
    assert "`sub-07_ses-1.nwb`" in caption and "the mean 0.1–0.4 s after each onset" in caption
    assert "3 presentations per image" in caption


def test_nwb_without_templates_asks_for_an_images_mat(app_env, tmp_path):
    nwb = tmp_path / "bare.nwb"
    truth = ns.write_nwb(nwb, n_images=20, n_rois=10, templates="none", presentation="intervals", repeats=2)
    at = _nwb_upload(s.app_at(PAGE), nwb.name, nwb.read_bytes())
    s.no_exceptions(at)
    assert not at.error
    ask = [i.value for i in at.info if "no stimulus images" in i.value]
    assert len(ask) == 1 and "images.mat uploader" in ask[0]
    assert "stimulus images: none in the file" in next(c.value for c in at.caption if c.value.startswith("In bare"))
    assert keys.NWB_TEMPLATES not in [b.key for b in at.selectbox]  # nothing to choose among
    assert at.selectbox(key=keys.NWB_INDEX_COLUMN).label.endswith("automatic: frame")
    at.button(key=keys.UPLOAD_CHECK).click().run()  # without the images: refused in one line
    assert len(at.error) == 1 and "no stimulus images" in at.error[0].value
    assert keys.UPLOAD_SAVE not in [b.key for b in at.button]
    at.file_uploader(key=keys.UPLOAD_NWB_IMAGES).set_value(
        ("stimuli.mat", s.mat_bytes({"images": truth["images"]}), OCTET)).run()
    assert not [i for i in at.info if "no stimulus images" in i.value]
    at.button(key=keys.UPLOAD_CHECK).click().run()
    s.no_exceptions(at)
    assert not at.error and "images: stimuli.mat (images file), 20 images" in at.code[0].value
    at.button(key=keys.UPLOAD_SAVE).click().run()
    s.no_exceptions(at)
    subject = SubjectStore(app_env["data"]).load("bare")
    images, means, _, _ = ns.expected_subject(truth)
    np.testing.assert_allclose(subject.images[:, 0], images / 255.0, atol=1e-6)
    np.testing.assert_allclose(subject.responses, means, rtol=1e-5, atol=1e-5)
    source = json.loads((app_env["data"] / "bare" / "subject.json").read_text())["source"]
    assert source["nwb"]["presentations_kind"] == "intervals table"
    caption = next(c.value for c in at.caption if c.value.startswith("Imported from"))
    assert "`bare.nwb` + `stimuli.mat`" in caption


@pytest.mark.parametrize("kind", ["no_ophys", "not_hdf5"])
def test_bad_nwb_one_error_line_and_nothing_written(app_env, tmp_path, kind):
    nwb = tmp_path / "bad.nwb"
    if kind == "no_ophys":
        ns.write_nwb(nwb, n_images=12, n_rois=6)
        with h5py.File(nwb, "r+") as f:
            del f["processing/ophys"]
        expected = "no processing module 'ophys'"
    else:
        nwb.write_bytes(b"\x89HDF but not really" * 50)
        expected = "is not an HDF5 file"
    at = _nwb_upload(s.app_at(PAGE), nwb.name, nwb.read_bytes())
    s.no_exceptions(at)
    assert len(at.error) == 1, _errors(at)
    line = at.error[0].value
    assert line.startswith("Not importable: bad.nwb") and expected in line and "\n" not in line
    assert at.button(key=keys.UPLOAD_CHECK).disabled  # a check could only say it again
    assert not at.success and keys.UPLOAD_SAVE not in [b.key for b in at.button]
    at.run()  # read once per file: the same single line on every rerun
    assert _errors(at) == [line]
    assert _everything(app_env["data"]) == []  # no subject, no staging folder
    assert list((app_env["cache"] / "uploads").iterdir()) == []  # the sandbox's copy is gone
    # the page is still usable: a good file replaces the bad one
    good = tmp_path / "good.nwb"
    ns.write_nwb(good, n_images=12, n_rois=6)
    at.file_uploader(key=keys.UPLOAD_NWB).set_value((good.name, good.read_bytes(), OCTET)).run()
    assert not at.error and not at.button(key=keys.UPLOAD_CHECK).disabled


# ---- import from the server -------------------------------------------------------------------


@pytest.fixture
def server(app_env, tmp_path, monkeypatch):
    """An import folder (NEUROALIGN_IMPORT_ROOTS) holding a subject folder `m7` (MAT pair), `rec.nwb`, `bare.nwb`
    (no stimulus templates), a
    loose `extra.mat`, and two links out of it: `evil.nwb` (a file) and `linked` (a subject folder)."""
    from scipy.io import savemat

    inc, out = tmp_path / "incoming", tmp_path / "outside"
    inc.mkdir()
    out.mkdir()
    monkeypatch.setenv("NEUROALIGN_IMPORT_ROOTS", str(inc))
    images, responses = s.tiny_pair(n_images=30, n_neurons=9)
    (inc / "m7" / "Data").mkdir(parents=True)
    savemat(inc / "m7" / "Data" / "images.mat", images)
    savemat(inc / "m7" / "Data" / "responses.mat", responses)
    savemat(inc / "extra.mat", images)
    truth = ns.write_nwb(inc / "rec.nwb", n_images=16, n_rois=8, repeats=2)
    ns.write_nwb(inc / "bare.nwb", n_images=12, n_rois=6, templates="none", presentation="intervals")
    ns.write_nwb(out / "secret.nwb", n_images=16, n_rois=8)
    (out / "pair").mkdir()
    savemat(out / "pair" / "images.mat", images)
    savemat(out / "pair" / "responses.mat", responses)
    (inc / "evil.nwb").symlink_to(out / "secret.nwb")
    (inc / "linked").symlink_to(out / "pair", target_is_directory=True)
    return {**app_env, "incoming": inc, "outside": out, "truth": truth}


def _pair_size(folder) -> int:
    return sum((folder / "Data" / f).stat().st_size for f in ("images.mat", "responses.mat"))


def _server_tab(at):
    at.radio(key=keys.IMPORT_FROM).set_value(import_view.SERVER).run()
    return at


def test_server_offers_what_is_inside_and_imports_it(server):
    inc = server["incoming"]
    at = _server_tab(s.app_at(PAGE))
    s.no_exceptions(at)
    assert not at.error
    pick = at.selectbox(key=keys.SERVER_PICK)
    # shown relative to the (single) import folder, named above the list
    assert [o.split("  (")[0] for o in pick.options] == ["bare.nwb", "m7", "rec.nwb",
                                                         "two .mat files picked by hand"]
    assert "(MAT pair," in pick.options[1] and "(NWB file," in pick.options[2]
    assert pick.value.startswith(f"{inc}/bare.nwb  (NWB file")
    # an NWB file without templates: its images are picked among the .mat files inside the folders
    images_box = at.selectbox(key=keys.SERVER_NWB_IMAGES)
    assert images_box.options[1:] == ["extra.mat", "m7/Data/images.mat", "m7/Data/responses.mat"]  # inside only
    assert any("no stimulus images" in i.value and "Images .mat" in i.value for i in at.info)
    at.selectbox(key=keys.SERVER_PICK).set_value(f"{inc}/m7  (MAT pair, "
                                                 f"{server_import.human(_pair_size(inc / 'm7'))})").run()
    assert not [o for o in pick.options if "evil" in o or "linked" in o or "secret" in o]
    assert any(c.value == "2 symbolic links lead outside the import folders and are not offered" for c in at.caption)
    assert any(f"`{inc}`" in m.value and "NEUROALIGN_IMPORT_ROOTS" in m.value for m in at.markdown)  # not escaped
    # the MAT pair (the first offer), under its folder's name
    assert at.text_input(key=keys.SERVER_NAME).proto.placeholder == "m7"
    at.button(key=keys.SERVER_CHECK).click().run()
    s.no_exceptions(at)
    assert at.success[0].value == "Ready to import as **m7**:" and "9 neurons" in at.code[0].value
    at.button(key=keys.UPLOAD_SAVE).click().run()
    s.no_exceptions(at)
    assert SubjectStore(server["data"]).load("m7").n_neurons == 9
    assert [m.value for m in at.success] == ["Imported **m7**: it is open in **Browse**."]  # the toast goes
    assert (inc / "m7" / "Data" / "images.mat").is_file()  # the server's files are read, never moved
    # the NWB file, under another name
    at.switch_page(PAGE).run()
    _server_tab(at)
    at.selectbox(key=keys.SERVER_PICK).set_value(f"{inc}/rec.nwb  (NWB file, "
                                                 f"{server_import.human((inc / 'rec.nwb').stat().st_size)})").run()
    assert at.selectbox(key=keys.NWB_SERIES).options == [import_view.AUTO, "DfOverF"]
    assert keys.SERVER_NWB_IMAGES not in [b.key for b in at.selectbox]  # its images are in the file
    name_key = keys.upload_widget(keys.SERVER_NAME, 1)  # a Save empties the name
    assert at.text_input(key=name_key).proto.placeholder == "rec"
    at.text_input(key=name_key).set_value("mouse rec")
    at.number_input(key=keys.NWB_WINDOW_END).set_value(0.3)
    at.button(key=keys.SERVER_CHECK).click().run()
    s.no_exceptions(at)
    assert not at.error and "0 to 0.3 s after each onset" in at.code[0].value
    at.button(key=keys.UPLOAD_SAVE).click().run()
    s.no_exceptions(at)
    subject = SubjectStore(server["data"]).load("mouse rec")
    _, means, repeats, _ = ns.expected_subject(server["truth"])
    np.testing.assert_allclose(subject.responses, means, rtol=1e-5, atol=1e-5)
    assert subject.repeats.shape == (2, 16, 8)
    sidecar = json.loads((server["data"] / "mouse rec" / "subject.json").read_text())
    assert sidecar["source"]["nwb"]["response_window_s"] == [0.0, 0.3]
    assert sorted(p.name for p in server["data"].iterdir()) == ["m7", "mouse rec"]  # nothing else left


def test_server_import_takes_no_path_from_the_browser(server):
    inc, out = server["incoming"], server["outside"]
    at = _server_tab(s.app_at(PAGE))
    assert [t.key for t in at.text_input] == [keys.SERVER_NAME]  # a name, never a path
    first = at.selectbox(key=keys.SERVER_PICK).value
    for forged in (str(out / "secret.nwb"), f"{inc}/evil.nwb  (NWB file, 1 KiB)", "/etc/passwd"):
        at.radio(key=keys.IMPORT_FROM).set_value(import_view.UPLOAD).run()
        at.session_state[keys.SERVER_PICK] = forged  # what a crafted widget message could hold
        _server_tab(at)
        s.no_exceptions(at)
        assert at.selectbox(key=keys.SERVER_PICK).value == first
    # a name is a name: no folder parts
    at.text_input(key=keys.SERVER_NAME).set_value("../escape")
    at.button(key=keys.SERVER_CHECK).click().run()
    assert len(at.error) == 1 and at.error[0].value.startswith("Not importable:")
    assert sorted(p.name for p in server["data"].iterdir()) == []
    assert not (server["data"].parent / "escape").exists()
    # a file replaced by a link out of the folders after the scan is no longer offered ...
    os.replace(inc / "evil.nwb", inc / "rec.nwb")
    at.run()
    assert not [o for o in at.selectbox(key=keys.SERVER_PICK).options if "rec.nwb" in o]
    assert any(c.value.startswith("2 symbolic links lead outside") for c in at.caption)
    # ... and refused when used (each path is resolved again when it is read)
    with pytest.raises(ValueError, match="not inside the import folders"):
        server_import.resolve(inc / "rec.nwb", server_import.paths.import_roots())
    with pytest.raises(ValueError, match="not inside the import folders"):
        server_import.resolve(inc / "linked" / "images.mat", server_import.paths.import_roots())


def test_a_check_made_in_the_other_section_goes_quietly(server):
    nwb = server["incoming"] / "rec.nwb"
    at = _nwb_upload(s.app_at(PAGE), nwb.name, nwb.read_bytes())
    at.button(key=keys.UPLOAD_CHECK).click().run()
    assert at.success and [p.name for p in server["data"].iterdir()][0].startswith(".tmp-rec-")  # staged
    _server_tab(at)
    s.no_exceptions(at)
    assert not at.success and not [i for i in at.info if "changed since the check" in i.value]
    assert list(server["data"].iterdir()) == []  # the staged subject is removed
    inc = server["incoming"]
    at.selectbox(key=keys.SERVER_PICK).set_value(f"{inc}/m7  (MAT pair, {server_import.human(_pair_size(inc / 'm7'))})")
    at.button(key=keys.SERVER_CHECK).click().run()
    assert at.success and "Responses of the recording" in s.chart_specs(at)[0]["layout"]["title"]["text"]
    at.radio(key=keys.IMPORT_FROM).set_value(import_view.UPLOAD).run()
    assert not at.success and list(server["data"].iterdir()) == []


def test_server_default_folder_and_empty_folder(app_env, monkeypatch):
    monkeypatch.delenv("NEUROALIGN_IMPORT_ROOTS", raising=False)
    at = _server_tab(s.app_at(PAGE))
    s.no_exceptions(at)
    default = app_env["data"] / "incoming"
    assert any(f"`{default}`" in m.value for m in at.markdown)
    assert any("does not exist" in c.value for c in at.caption)
    assert any(i.value.startswith("Nothing to import in the import folders yet") for i in at.info)
    assert keys.SERVER_CHECK not in [b.key for b in at.button]
    default.mkdir()
    at.button(key=keys.SERVER_RESCAN).click().run()
    assert not any("does not exist" in c.value for c in at.caption)
    assert any(i.value.startswith("Nothing to import in the import folders yet") for i in at.info)
    # a MAT pair copied straight into <data>/incoming: offered for import, never taken for a subject itself
    images, responses = s.tiny_pair(n_images=20, n_neurons=5)
    (default / "images.mat").write_bytes(s.mat_bytes(images))
    (default / "responses.mat").write_bytes(s.mat_bytes(responses))
    at.button(key=keys.SERVER_RESCAN).click().run()
    s.no_exceptions(at)
    assert at.selectbox(key=keys.SERVER_PICK).value.startswith(f"{default}  (MAT pair")
    assert any(i.value.startswith("No subjects in the data folder yet") for i in at.info)  # Browse
    assert SubjectStore(app_env["data"]).names() == []
    with pytest.raises(FileNotFoundError, match="import folder"):
        SubjectStore(app_env["data"]).delete("incoming")
    at.text_input(key=keys.SERVER_NAME).set_value("incoming")
    at.button(key=keys.SERVER_CHECK).click().run()
    assert len(at.error) == 1 and "import folder" in at.error[0].value
    at.text_input(key=keys.SERVER_NAME).set_value("")
    at.button(key=keys.SERVER_CHECK).click().run()  # the default name
    at.button(key=keys.UPLOAD_SAVE).click().run()
    s.no_exceptions(at)
    assert SubjectStore(app_env["data"]).names() == ["subject"]
    assert (default / "images.mat").is_file() and (default / "responses.mat").is_file()


def test_the_import_folder_name_is_one_name():
    from neuroalign import paths
    from neuroalign.data import names

    assert paths.INCOMING == names.IMPORT_FOLDER


def test_names_from_an_nwb_file_are_shown_as_text(app_env, tmp_path):
    """Group names inside an uploaded NWB file are the uploader's text: the label that says what
    'automatic' picks shows a crafted container name escaped, never as an image or a link."""
    nwb = tmp_path / "crafted.nwb"
    ns.write_nwb(nwb, n_images=12, n_rois=6)
    crafted = "![x](x.png)[y](e.example) **b**"  # no "/": HDF5 would read it as nested groups
    with h5py.File(nwb, "r+") as f:
        f.move("stimulus/presentation/natural_scenes_presentations", f"stimulus/presentation/{crafted}")
    at = _nwb_upload(s.app_at(PAGE), nwb.name, nwb.read_bytes())
    s.no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    label = at.selectbox(key=keys.NWB_PRESENTATIONS).label
    assert crafted not in label and "\\[x\\](x.png)\\[y\\]" in label and "\\*\\*b\\*\\*" in label, label
