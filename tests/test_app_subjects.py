"""Subjects page through AppTest: browse, upload (good / bad pair, bad name), delete; and the
upload handler directly."""

import io

import numpy as np
import pytest

import app_support as s
from app_support import app_env, app_populated  # noqa: F401 (fixtures)

from neuroalign.data.store import SubjectStore
from neuroalign.ui import keys, upload

PAGE = "pages/subjects.py"


def _upload(at, name, images: bytes, responses: bytes):
    at.text_input(key=keys.UPLOAD_NAME).set_value(name)
    at.file_uploader(key=keys.UPLOAD_IMAGES).set_value(("images.mat", images, "application/octet-stream"))
    at.file_uploader(key=keys.UPLOAD_RESPONSES).set_value(("responses.mat", responses, "application/octet-stream"))
    at.button(key=keys.UPLOAD_CHECK).click().run()
    return at


def test_empty_root(app_env):
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert any("No subjects in the data folder" in i.value for i in at.info)
    assert len(at.file_uploader) == 2


def test_populated_browse(app_populated):
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    assert at.dataframe[0].value["subject"].tolist() == ["m1"]
    assert [m.value for m in at.metric] == ["48", "24", "2", "68×270"]
    assert len(at.get("imgs")) == 16 or len(at.get("image")) == 16
    specs = s.chart_specs(at)
    assert len(specs) == 3  # mean/variance, reliability histogram, raster
    assert len(s.arr(specs[0]["data"][0]["x"])) == 24  # one point per neuron
    at.select_slider(key=keys.GRID_COUNT).set_value(32).run()
    assert len(at.get("image")) == 32


def test_raster_colour_scale_reaches_the_browser_intact(app_populated):
    """Issue 12 item 3: Streamlit's theme rewrites #000004 (Magma's first stop) into a theme colour."""
    import plotly.colors

    at = s.app_at(PAGE)
    assert s.theme_placeholders(at) == []
    raster = next(sp for sp in s.chart_specs(at) if sp["layout"]["title"]["text"].startswith("Responses"))
    scale = raster["data"][0]["colorscale"]
    magma = plotly.colors.get_colorscale("Magma")
    assert [p for p, _ in scale] == [p for p, _ in magma]
    assert [plotly.colors.unlabel_rgb(plotly.colors.convert_colors_to_same_type(c, "rgb")[0][0]) for _, c in scale] \
        == [plotly.colors.hex_to_rgb(c) for _, c in magma]  # the same colours, darkest first
    assert scale[0][1] == "rgb(0, 0, 4)"


def test_upload_good_pair_previews_then_saves(app_env):
    images, responses = s.tiny_pair(n_images=30, n_neurons=12)
    at = _upload(s.app_at(PAGE), "new_one", s.mat_bytes(images), s.mat_bytes(responses))
    s.no_exceptions(at)
    assert not at.error
    summary = at.code[0].value
    assert "30" in summary and "12" in summary  # images and neurons found
    assert not (app_env["data"] / "new_one").exists()  # nothing saved before confirmation
    at.button(key=keys.UPLOAD_SAVE).click().run()
    s.no_exceptions(at)
    assert (app_env["data"] / "new_one" / "Data" / "responses.mat").is_file()
    assert SubjectStore(app_env["data"]).load("new_one").n_neurons == 12
    at.switch_page(PAGE).run()
    assert at.dataframe[0].value["subject"].tolist() == ["new_one"]


def test_changed_upload_invalidates_the_preview(app_env):
    """Issue 12 item 1: after a check, replacing a file (or the name) must drop the preview; Save
    imports exactly the checked bytes."""
    images, responses = s.tiny_pair(n_images=30, n_neurons=12)
    _, short = s.tiny_pair(n_images=25, n_neurons=12)  # fails the check: 25 rows for 30 images
    at = _upload(s.app_at(PAGE), "first", s.mat_bytes(images), s.mat_bytes(responses))
    assert at.success and keys.UPLOAD_SAVE in [b.key for b in at.button]
    at.file_uploader(key=keys.UPLOAD_RESPONSES).set_value(("responses.mat", s.mat_bytes(short),
                                                           "application/octet-stream")).run()
    s.no_exceptions(at)
    assert not at.success and keys.UPLOAD_SAVE not in [b.key for b in at.button]
    assert any("changed since the check" in i.value for i in at.info)
    at.button(key=keys.UPLOAD_CHECK).click().run()  # checking the new file refuses it
    assert at.error[0].value.startswith("Not importable:") and keys.UPLOAD_SAVE not in [b.key for b in at.button]
    # a valid but different responses file after a good check: the preview goes too
    _, other = s.tiny_pair(n_images=30, n_neurons=7, seed=3)
    at.file_uploader(key=keys.UPLOAD_RESPONSES).set_value(("responses.mat", s.mat_bytes(responses),
                                                           "application/octet-stream"))
    at.button(key=keys.UPLOAD_CHECK).click().run()
    assert at.success
    at.file_uploader(key=keys.UPLOAD_RESPONSES).set_value(("responses.mat", s.mat_bytes(other),
                                                           "application/octet-stream")).run()
    assert keys.UPLOAD_SAVE not in [b.key for b in at.button]
    at.button(key=keys.UPLOAD_CHECK).click().run()
    assert "7" in at.code[0].value
    at.text_input(key=keys.UPLOAD_NAME).set_value("renamed").run()  # the name is part of the check
    assert keys.UPLOAD_SAVE not in [b.key for b in at.button]
    at.button(key=keys.UPLOAD_CHECK).click().run()
    at.button(key=keys.UPLOAD_SAVE).click().run()
    s.no_exceptions(at)
    assert [p.name for p in app_env["data"].iterdir()] == ["renamed"]
    assert SubjectStore(app_env["data"]).load("renamed").n_neurons == 7  # the file that was checked
    assert at.selectbox(key=keys.SUBJECT_PICK).value == "renamed"  # Browse opens the new subject


def test_save_refuses_bytes_that_were_not_checked(app_env, tmp_path):
    store = SubjectStore(app_env["data"])
    images, responses = s.tiny_pair(n_images=20, n_neurons=5, repeats=1)
    _, other = s.tiny_pair(n_images=20, n_neurons=4, repeats=1, seed=1)
    img, resp = _File("i.mat", s.mat_bytes(images)), _File("r.mat", s.mat_bytes(responses))
    staged = upload.stage_and_validate(store, "x", img, resp, staging_root=tmp_path)
    assert upload.is_current(staged, "x ", img, resp)
    swapped = _File("r.mat", s.mat_bytes(other))
    assert not upload.is_current(staged, "x", img, swapped) and not upload.is_current(staged, "y", img, resp)
    with pytest.raises(ValueError, match="not the file that was checked"):
        upload.save_staged(store, staged, img, swapped)
    assert not store.exists("x") and not staged.folder.exists()
    staged = upload.stage_and_validate(store, "x", img, resp, staging_root=tmp_path)
    assert list(tmp_path.glob("neuroalign-upload-*")) == []  # the copies go once the worker staged the subject
    (staged.folder / "Data" / "responses.mat").write_bytes(s.mat_bytes(other))  # altered behind our back
    with pytest.raises(ValueError, match="changed after the check"):
        upload.save_staged(store, staged, img, resp)
    assert not store.exists("x") and list(store.root.iterdir()) == []
    staged = upload.stage_and_validate(store, "x", img, resp, staging_root=tmp_path)
    assert upload.save_staged(store, staged, img, resp).n_neurons == 5


def test_upload_preview_shows_stimuli_and_responses(app_env):
    """Issue 12 item 13: the check shows stimulus thumbnails (as imported, e.g. from MATLAB's H×W×N
    order) and a response heatmap before anything is saved."""
    images, responses = s.tiny_pair(n_images=30, n_neurons=12)
    matlab = {"images": np.transpose(images["images"], (1, 2, 0))}  # 68 x 270 x 30
    at = _upload(s.app_at(PAGE), "preview", s.mat_bytes(matlab), s.mat_bytes(responses))
    s.no_exceptions(at)
    pictures = at.get("image")
    assert len(pictures) == upload.PREVIEW_IMAGES
    captions = [el.proto.imgs[0].caption for el in pictures]
    assert captions[0] == "image 0" and captions[-1] == "image 29"
    staged = at.session_state[keys.UPLOAD_STAGED]
    assert staged.preview["images"].shape == (upload.PREVIEW_IMAGES, 68, 270)
    expected = np.round(images["images"][29] * 255).astype(np.uint8)
    assert np.abs(staged.preview["images"][-1].astype(int) - expected).max() <= 1  # not transposed or flipped
    raster = next(sp for sp in s.chart_specs(at) if "upload" in sp["layout"]["title"]["text"])
    assert s.arr(raster["data"][0]["z"]).shape == (12, 30)  # neurons x images
    assert not (app_env["data"] / "preview").exists()


def test_upload_bad_pair_errors_and_saves_nothing(app_env):
    images, _ = s.tiny_pair(n_images=30, n_neurons=12)
    _, responses = s.tiny_pair(n_images=17, n_neurons=12)  # 17 response rows for 30 images
    at = _upload(s.app_at(PAGE), "bad", s.mat_bytes(images), s.mat_bytes(responses))
    s.no_exceptions(at)
    assert len(at.error) == 1 and at.error[0].value.startswith("Not importable:")
    assert "\n" not in at.error[0].value.strip()
    assert list(app_env["data"].iterdir()) == []
    assert keys.UPLOAD_SAVE not in [b.key for b in at.button]  # no way to save a bad pair


def test_upload_garbage_and_missing_file(app_env):
    at = _upload(s.app_at(PAGE), "junk", b"not a mat file at all", b"nor this")
    s.no_exceptions(at)
    assert at.error[0].value.startswith("Not importable:")
    at = s.app_at(PAGE)
    at.text_input(key=keys.UPLOAD_NAME).set_value("x")
    at.button(key=keys.UPLOAD_CHECK).click().run()
    assert "missing upload" in at.error[0].value


def test_upload_existing_name_refused(app_populated):
    images, responses = s.tiny_pair(n_images=30, n_neurons=12)
    at = _upload(s.app_at(PAGE), "m1", s.mat_bytes(images), s.mat_bytes(responses))
    assert "already exists" in at.error[0].value


def test_delete_needs_confirmation(app_populated):
    at = s.app_at(PAGE)
    assert at.button(key=keys.DELETE_BUTTON).disabled
    assert any(c.value.startswith("m1 has 1 run in the runs folder") for c in at.caption)  # issue 12 item 14
    s.write_finished_run(app_populated["runs"], "m1", app_populated["subject_dir"], seed=3)
    at.run()
    assert any(c.value.startswith("m1 has 2 runs") for c in at.caption)
    at.checkbox(key=keys.delete_confirm(keys.DELETE_CONFIRM, "m1")).check().run()
    at.button(key=keys.DELETE_BUTTON).click().run()
    s.no_exceptions(at)
    assert not (app_populated["data"] / "m1").exists()
    assert any("No subjects" in i.value for i in at.info)


def test_delete_confirmation_does_not_carry_over_to_the_next_subject(app_populated):
    """Issue 23 item 3: after deleting one subject the box for the one shown next is unticked."""
    s.write_subject(app_populated["data"], "m2")
    at = s.app_at(PAGE)
    at.selectbox(key=keys.DELETE_PICK).set_value("m1").run()
    at.checkbox(key=keys.delete_confirm(keys.DELETE_CONFIRM, "m1")).check().run()
    at.button(key=keys.DELETE_BUTTON).click().run()
    s.no_exceptions(at)
    assert not (app_populated["data"] / "m1").exists()
    (box,) = at.checkbox
    assert box.label.startswith("Yes, delete m2") and box.value is False
    # keyed by the subject: the browser keeps a widget's value per key, so a shared key stays ticked
    assert box.key == keys.delete_confirm(keys.DELETE_CONFIRM, "m2") != keys.delete_confirm(keys.DELETE_CONFIRM, "m1")
    assert at.button(key=keys.DELETE_BUTTON).disabled
    at.run()
    assert at.checkbox[0].value is False and (app_populated["data"] / "m2").exists()


class _File(io.BytesIO):
    def __init__(self, name, data):
        super().__init__(data)
        self.name = name


def test_stage_and_validate_cleans_up(app_env, tmp_path):
    store = SubjectStore(app_env["data"])
    staging = tmp_path / "staging"
    staging.mkdir()
    images, responses = s.tiny_pair(n_images=20, n_neurons=5, repeats=1)
    staged = upload.stage_and_validate(store, " ok ", _File("i.mat", s.mat_bytes(images)),
                                       _File("r.mat", s.mat_bytes(responses)), staging_root=staging)
    assert staged.name == "ok" and staged.folder.is_dir() and staged.summary
    assert staged.folder.parent == store.root and staged.folder.name.startswith(".tmp-ok-")  # staged in the data
    assert store.names() == [] and list(staging.iterdir()) == []  # folder, hidden; the copies are gone
    info = upload.save_staged(store, staged)
    assert info.n_images == 20 and not staged.folder.exists()
    with pytest.raises(ValueError):
        upload.stage_and_validate(store, "bad", _File("i.mat", b"junk"), _File("r.mat", b"junk"),
                                  staging_root=staging)
    assert list(staging.iterdir()) == []  # the failed upload's temp folder is gone
    with pytest.raises(ValueError, match="empty"):
        upload.check_name(store, "  ")
    with pytest.raises(ValueError, match="already exists"):
        upload.check_name(store, "ok")
    assert np.isfinite(info.n_neurons)


def _v73_bytes(tmp_path, name, variables) -> bytes:
    from neuroalign.data import write_mat_v73

    path = write_mat_v73(tmp_path / name, variables)
    return path.read_bytes()


def test_v73_upload_shows_its_source_format_and_file_names(app_env, tmp_path):
    """Issue 12 item 2: a v7.3 upload is stored as canonical v5 files, but the table, subject.json
    and the Browse tab say v7.3 and name the user's files, not the staging folder."""
    import json

    images, responses = s.tiny_pair(n_images=30, n_neurons=12)
    at = s.app_at(PAGE)
    at.text_input(key=keys.UPLOAD_NAME).set_value("v73")
    at.file_uploader(key=keys.UPLOAD_IMAGES).set_value(
        ("stimuli_session3.mat", _v73_bytes(tmp_path, "a.mat", images), "application/octet-stream"))
    at.file_uploader(key=keys.UPLOAD_RESPONSES).set_value(
        ("spikes_session3.mat", _v73_bytes(tmp_path, "b.mat", responses), "application/octet-stream"))
    at.button(key=keys.UPLOAD_CHECK).click().run()
    s.no_exceptions(at)
    assert "format: v7.3" in at.code[0].value
    at.button(key=keys.UPLOAD_SAVE).click().run()
    s.no_exceptions(at)
    assert at.dataframe[0].value["format"].tolist() == ["v7.3"]
    sidecar = json.loads((app_env["data"] / "v73" / "subject.json").read_text())
    assert sidecar["source"]["images_file"] == "stimuli_session3.mat"
    assert sidecar["source"]["responses_file"] == "spikes_session3.mat"
    assert sidecar["source"]["format"] == "v7.3" and sidecar["format"] == "v5"  # stored canonical
    assert "neuroalign-upload" not in json.dumps(sidecar)  # no temporary path anywhere
    caption = " ".join(c.value for c in at.caption)
    assert "`stimuli_session3.mat` + `spikes_session3.mat` (MAT v7.3, stored as MAT v5)" in caption
    info = SubjectStore(app_env["data"]).info("v73")
    assert (info.format, info.stored_format) == ("v7.3", "v5")


def test_upload_errors_name_the_users_file(app_env):
    images, _ = s.tiny_pair(n_images=30, n_neurons=12)
    at = s.app_at(PAGE)
    at.text_input(key=keys.UPLOAD_NAME).set_value("x")
    at.file_uploader(key=keys.UPLOAD_IMAGES).set_value(("stim.mat", s.mat_bytes(images), "application/octet-stream"))
    at.file_uploader(key=keys.UPLOAD_RESPONSES).set_value(("my_resp.mat", b"junk" * 50, "application/octet-stream"))
    at.button(key=keys.UPLOAD_CHECK).click().run()
    assert at.error[0].value.startswith("Not importable: my_resp.mat:")


def test_upload_check_hitting_its_limit_is_a_rejection(app_env, monkeypatch):
    """Issue 13: the upload is parsed in the sandboxed worker; a limit hit is one line, the app stays up."""
    monkeypatch.setenv("NEUROALIGN_CHECK_SECONDS", "0.05")
    images, responses = s.tiny_pair(n_images=30, n_neurons=12)
    at = _upload(s.app_at(PAGE), "slow", s.mat_bytes(images), s.mat_bytes(responses))
    s.no_exceptions(at)
    msg = at.error[0].value
    assert msg.startswith("Not importable: the check of") and "0.05 s time limit" in msg and "\n" not in msg
    assert keys.UPLOAD_SAVE not in [b.key for b in at.button] and list(app_env["data"].iterdir()) == []
    assert list((app_env["cache"] / "uploads").iterdir()) == []  # the staged copies are gone


def test_a_refused_hand_placed_folder_is_listed_with_its_reason(app_populated):
    """Issue 20 item 2: a folder copied into the data folder is checked in the sandbox, never loaded
    in the server when refused; the table says why and picking it is a one-line error."""
    bad = s.write_subject(app_populated["data"], "bad")
    from scipy.io import savemat

    savemat(bad / "Data" / "images.mat", {"images": np.full((48, 68, 270), np.nan)})
    at = s.app_at(PAGE)
    s.no_exceptions(at)
    table = at.dataframe[0].value.set_index("subject")
    assert table.loc["m1", "problem"] == ""
    assert table.loc["bad", "problem"].startswith("refused by the sandboxed check of its files: images.mat:")
    assert "NaN" in table.loc["bad", "problem"]
    at.selectbox(key=keys.SUBJECT_PICK).set_value("bad").run()
    s.no_exceptions(at)
    assert len(at.error) == 1 and at.error[0].value.startswith(
        "Cannot load subject bad: subject folder 'bad' was refused by the sandboxed check of its files")


def test_save_empties_the_import_tab_and_leaving_drops_a_check(app_env):
    """Issue 23 item 12: after Save the Import tab starts empty (Check again said "already exists");
    a check left unsaved is removed when the user goes to another page."""
    images, responses = s.tiny_pair(n_images=30, n_neurons=12)
    at = _upload(s.app_at(PAGE), "kept", s.mat_bytes(images), s.mat_bytes(responses))
    at.button(key=keys.UPLOAD_SAVE).click().run()
    s.no_exceptions(at)
    assert (app_env["data"] / "kept").is_dir()
    (name,) = at.text_input
    assert name.key != keys.UPLOAD_NAME and name.value == ""  # a fresh widget: the browser shows it empty
    assert all(u.key not in (keys.UPLOAD_IMAGES, keys.UPLOAD_RESPONSES) for u in at.file_uploader)
    generation = at.session_state[keys.UPLOAD_GENERATION]
    at.run()  # AppTest: the tree after the page's st.rerun() holds other widget ids than the next run
    at.text_input(key=keys.upload_widget(keys.UPLOAD_NAME, generation)).set_value("left")
    at.file_uploader(key=keys.upload_widget(keys.UPLOAD_IMAGES, generation)).set_value(
        ("images.mat", s.mat_bytes(images), "application/octet-stream"))
    at.file_uploader(key=keys.upload_widget(keys.UPLOAD_RESPONSES, generation)).set_value(
        ("responses.mat", s.mat_bytes(responses), "application/octet-stream"))
    at.button(key=keys.UPLOAD_CHECK).click().run()
    assert not at.error, [e.value for e in at.error] + [i.value for i in at.info]
    staged = at.session_state[keys.UPLOAD_STAGED]
    assert staged.folder.is_dir() and not at.error
    at.switch_page("pages/runs.py").run()  # navigates away without saving
    assert not staged.folder.exists() and keys.UPLOAD_STAGED not in at.session_state


def test_staged_copies_go_with_their_session_and_the_folder_is_capped(app_env, tmp_path):
    """Issue 23 item 12: a closed tab's staged copies are removed when its session is dropped, and the
    staging folder never grows past its cap (oldest checks first)."""
    import gc
    import os
    import time

    images, responses = s.tiny_pair(n_images=30, n_neurons=12)
    store = SubjectStore(app_env["data"])
    staged = upload.stage_and_validate(store, "gone", _File("images.mat", s.mat_bytes(images)),
                                       _File("responses.mat", s.mat_bytes(responses)),
                                       staging_root=upload.staging_root())
    folder = staged.folder
    assert folder.is_dir()
    del staged
    gc.collect()
    assert not folder.exists()
    root = upload.staging_root()
    old, new = root / "neuroalign-upload-old", root / "neuroalign-upload-new"
    for i, p in enumerate((old, new)):
        p.mkdir()
        (p / "x.mat").write_bytes(b"0" * 1000)
        os.utime(p, (time.time() - 100 + i * 50,) * 2)
    upload.staging_root(cap_bytes=1500)
    assert not old.exists() and new.exists()
