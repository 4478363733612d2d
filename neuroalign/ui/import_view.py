"""The Subjects page's Import tab: upload (a MAT pair or an NWB file) or pick a file in the server's import
folders; the same check, preview and Save for all of them (`ui.upload`, the import service)."""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from neuroalign import paths, plots
from neuroalign.data.nwb import DEFAULT_WINDOW, INDEX_COLUMNS, SERIES_PREFERENCE, NwbOptions
from neuroalign.text import markdown_code, markdown_literal as md
from neuroalign.ui import keys, server_import, upload

UPLOAD = "This computer (upload)"
SERVER = "The server (import folders)"
MAT = "MAT files (images + responses)"
NWB = "NWB file (.nwb)"
AUTO = "automatic"


def render(store) -> None:
    """The whole Import tab."""
    where = st.radio("Import from", [UPLOAD, SERVER], horizontal=True, key=keys.IMPORT_FROM,
                     help="Upload through the browser (up to the server's upload limit), or pick a recording "
                          "copied to the server's import folders (large NWB files, whole lab folders).")
    generation = st.session_state.get(keys.UPLOAD_GENERATION, 0)  # a Save empties the widgets
    imported = st.session_state.pop(keys.IMPORTED, None)
    if imported:
        st.success(f"Imported **{md(imported)}**: it is open in **Browse**.", icon=":material/check_circle:")
    section = "server" if where == SERVER else ("upload", "nwb" if st.session_state.get(keys.UPLOAD_FORMAT) == NWB
                                                else "mat")
    staged = st.session_state.get(keys.UPLOAD_STAGED)
    if staged is not None and _section_of(staged) != section:  # a check made elsewhere: not this section's to explain
        upload.discard(st.session_state.pop(keys.UPLOAD_STAGED))
    if where == UPLOAD:
        staged, current = _upload_section(store, generation)
    else:
        staged, current = _server_section(store, generation)
    if staged is not None:
        _show_staged(store, staged, current, generation)


def _section_of(staged) -> Any:
    return "server" if staged.origin == "server" else ("upload", staged.kind)


# ---------------------------------------------------------------------------------------------
# upload


def _upload_section(store, generation: int) -> tuple[Any, tuple]:
    fmt = st.radio("Format", [MAT, NWB], horizontal=True, key=keys.UPLOAD_FORMAT)
    if fmt == MAT:
        st.markdown("Upload `images.mat` (stimuli, e.g. N×68×270 or 68×270×N) and `responses.mat` "
                    "(images×neurons, optionally with repeats). They are checked and previewed before anything is "
                    "saved.")
    else:
        st.markdown("Upload an NWB 2.x calcium-imaging session: stimulus images (`stimulus/templates`), their "
                    "presentations (an `IndexSeries` or an intervals table) and `processing/ophys` responses. "
                    "Each presentation's response is the mean over a window after its onset; repeats are kept. "
                    "For files larger than the upload limit, use **The server**.")
    chosen = st.session_state.get(keys.upload_widget(keys.UPLOAD_NWB, generation)) if fmt == NWB else None
    placeholder = ("e.g. mouse7" if fmt == MAT else
                   upload.default_name(chosen.name) if chosen is not None else "default: the file name")
    new_name = st.text_input("Name", key=keys.upload_widget(keys.UPLOAD_NAME, generation), placeholder=placeholder)
    c1, c2 = st.columns(2)
    if fmt == MAT:
        images_file = c1.file_uploader("images.mat", type=["mat"],
                                       key=keys.upload_widget(keys.UPLOAD_IMAGES, generation))
        responses_file = c2.file_uploader("responses.mat", type=["mat"],
                                          key=keys.upload_widget(keys.UPLOAD_RESPONSES, generation))
        current: tuple = (images_file, responses_file)
        extra: tuple = ()
        problem = None
    else:
        nwb_file = c1.file_uploader("session.nwb", type=["nwb"], key=keys.upload_widget(keys.UPLOAD_NWB, generation))
        nwb_images = c2.file_uploader("images.mat (only for an NWB file without stimulus images)", type=["mat"],
                                      key=keys.upload_widget(keys.UPLOAD_NWB_IMAGES, generation))
        inventory, problem = None, None
        if nwb_file is not None:
            inventory, problem = _inventory(("upload",) + upload.upload_identity("", nwb_file, None),
                                            lambda: upload.nwb_inventory(nwb_file, staging_root=upload.staging_root()))
            problem = _nwb_status(inventory, problem, nwb_images is not None, "the images.mat uploader",
                                  nwb_file.name)
        options = _nwb_options(inventory) if problem is None else None
        if options is None and problem is None:  # a window that is not valid: said above the button
            problem = st.session_state.get("_nwb_options_error", "the NWB options are not valid")
        current = (nwb_file, nwb_images)
        extra = (upload.nwb_options_identity(options) if options is not None else ("nwb", "invalid"),)
    def stage():
        if fmt == MAT:
            return upload.stage_and_validate(store, new_name, *current, staging_root=upload.staging_root())
        if options is None:
            raise ValueError(st.session_state.get("_nwb_options_error", "the NWB options are not valid"))
        return upload.stage_nwb(store, new_name, *current, options=options, staging_root=upload.staging_root())

    staged = _check_step(keys.UPLOAD_CHECK, problem, lambda checked: upload.is_current(checked, new_name, *current, *extra),
                         "The name, a file or an option changed since the check", stage)
    return staged, current


def _check_step(key: str, problem: str | None, is_current, changed: str, stage):
    """The staged check of either section: drop a check that no longer describes the choices (saying
    `changed`), then the Check files button (disabled while `problem`), which runs `stage()` in a spinner
    and keeps what it staged; a refusal is one error line. Returns the current staged check or None."""
    staged = st.session_state.get(keys.UPLOAD_STAGED)
    if staged is not None and not is_current(staged):
        upload.discard(st.session_state.pop(keys.UPLOAD_STAGED))  # the preview described other files
        staged = None
        st.info(f"{changed}: press **Check files** again.")
    if st.button("Check files", key=key, type="primary", disabled=problem is not None,
                 help="Not possible yet: see the message above" if problem is not None else None):
        upload.discard(st.session_state.pop(keys.UPLOAD_STAGED, None))
        staged = None
        try:
            with st.spinner("Reading and validating…"):
                staged = stage()
            st.session_state[keys.UPLOAD_STAGED] = staged
        except (ValueError, FileNotFoundError, OSError) as exc:
            st.error(f"Not importable: {md(exc)}")
    return staged


# ---------------------------------------------------------------------------------------------
# NWB choices


def _inventory(identity: tuple, read) -> tuple[dict | None, str | None]:
    """What an NWB file offers, read once per file (in the sandbox) and kept in the session:
    (inventory, None), or (None, the one-line reason) when it is not an NWB file the reader can open."""
    cache = st.session_state.setdefault(keys.NWB_INVENTORY, {})
    if identity not in cache:
        try:
            with st.spinner("Reading the NWB file's contents…"):
                cache.clear()  # one file at a time
                cache[identity] = {"ok": read()}
        except (ValueError, FileNotFoundError, OSError) as exc:
            cache[identity] = {"error": " ".join(str(exc).split())}
    entry = cache[identity]
    return entry.get("ok"), entry.get("error")


def _nwb_status(inventory: dict | None, error: str | None, images_given: bool, images_where: str,
                file_name: str) -> str | None:
    """Say, before any check, what the NWB file `file_name` holds (one line) and what keeps it from importing;
    returns the blocking reason (shown as the one error line; Check is then disabled: it could only repeat it),
    else None.

    A file that is not NWB, or has no response series (no `processing/ophys`, nothing in it), cannot be
    fixed by any choice on the page. A file without stimulus templates needs the images as a .mat file:
    an info line says where to give it (the check would refuse the file without it)."""
    if inventory is not None:
        st.caption(_inventory_line(inventory, file_name))
    if error is None and inventory is not None and not inventory.get("series") and inventory.get("series_error"):
        error = " ".join(str(inventory["series_error"]).split())
    if error is not None:
        st.error(f"Not importable: {md(error)}")
        return error
    if inventory is not None and not inventory.get("templates") and not images_given:
        st.info("This NWB file has no stimulus images (nothing in `stimulus/templates`): give them as a .mat "
                f"file ({images_where}; variable `images`, in the order the presentations index them).",
                icon=":material/image:")
    return None


def _choice(label: str, options: list[str], key: str, help: str, default: str | None = None) -> str | None:
    """A selectbox of `automatic` + options; None for automatic (and when the value is not offered).
    `default`: what automatic picks in this file, said in the label ("Responses · automatic: DfOverF"); not
    in the option itself: the browser keeps showing a selected option's old text when only its text changes."""
    values = [AUTO] + options
    if st.session_state.get(key) not in values:
        st.session_state.pop(key, None)
    picked = st.selectbox(f"{label} · automatic: {md(default)}" if default else label, values, key=key, help=help)
    return None if picked == AUTO else picked


def _inventory_line(inv: dict, file_name: str) -> str:
    """What an NWB file holds, in one line: "In x.nwb: NWB 2.7.0 · responses: DfOverF (2 series), Fluorescence ·
    presentations: natural_scenes (IndexSeries, 120) · stimulus images: natural_scenes (Images, 40)"."""
    series = inv.get("series") or {}
    responses = ", ".join(f"{name} ({len(members)} series)" if len(members) > 1 else name
                          for name, members in series.items()) or "none"
    pres = ", ".join(f"{p['name'].rsplit('/', 1)[-1]} ({p['kind']}, {p['n']})"
                     for p in inv.get("presentations") or []) or "none"
    tpl = ", ".join(f"{t['name'].rsplit('/', 1)[-1]} ({t['kind']}, {t['n']})" for t in inv.get("templates") or []) \
        or "none in the file"
    return md(f"In {file_name}: NWB {inv.get('nwb_version') or '?'} · responses: {responses} · presentations: {pres} · "
              f"stimulus images: {tpl}")


def _nwb_options(inventory: dict | None) -> NwbOptions | None:
    """The NWB choices (response series, presentations, templates, index column, window), from what the
    file offers; None (and a message) when the window is not valid."""
    inv = inventory or {}
    with st.expander("NWB choices (responses, presentations, response window)", expanded=inventory is not None):
        series = inv.get("series") or {}
        series_options = []
        for container, members in series.items():
            series_options.append(container)
            if members != [container] and len(members) > 1:
                series_options += members
        default = inv.get("series_default")
        picked_series = _choice("Responses (processing/ophys)", series_options, keys.NWB_SERIES,
                                help="A container (one series per imaging plane, concatenated along the neurons) "
                                     "or one series. Automatic: the first of " + ", ".join(SERIES_PREFERENCE)
                                     + " the file has" + (f" (here {md(default)})" if default else ""),
                                default=default)
        pres = inv.get("presentations") or []
        picked_pres = _choice("Presentations", [p["name"] for p in pres], keys.NWB_PRESENTATIONS,
                              help="An IndexSeries (onsets from its timestamps or rate) or an intervals table with "
                                   "an image-index column. Automatic: the only one"
                                   + (f" (here {md(inv.get('presentations_default'))})"
                                      if inv.get("presentations_default") else ""),
                              default=inv.get("presentations_default"))
        tpl = inv.get("templates") or []
        picked_tpl = None
        if tpl or inventory is None:  # none in the file: the images come from a .mat file
            picked_tpl = _choice("Stimulus images", [t["name"] for t in tpl], keys.NWB_TEMPLATES,
                                 help="The stimulus templates the presentations index. Automatic: the ones the "
                                      "IndexSeries links to, or the only ones.",
                                 default=tpl[0]["name"] if len(tpl) == 1 else None)
        table = next((p for p in pres if p["name"] == (picked_pres or inv.get("presentations_default"))), None)
        picked_col = None
        if inventory is None or any(p["kind"] != "IndexSeries" for p in pres):  # only an intervals table has columns
            columns = [c for c in (table or {}).get("columns", []) if c not in ("start_time", "stop_time")]
            picked_col = _choice("Image-index column (intervals table)", columns, keys.NWB_INDEX_COLUMN,
                                 help="Automatic: the first of " + ", ".join(INDEX_COLUMNS) + ". Negative values "
                                      "are blanks and are dropped.",
                                 default=(table or {}).get("index_column"))
        w1, w2 = st.columns(2)
        start = w1.number_input("Response window from (s after onset)", value=float(DEFAULT_WINDOW[0]), step=0.05,
                                format="%.3f", key=keys.NWB_WINDOW_START)
        end = w2.number_input("to (s after onset)", value=float(DEFAULT_WINDOW[1]), step=0.05, format="%.3f",
                              key=keys.NWB_WINDOW_END,
                              help="Each presentation's response is the mean of the frames whose timestamps t "
                                   "satisfy onset + from ≤ t < onset + to (per imaging plane, from its own "
                                   "timestamps).")
    try:
        options = NwbOptions(series=(picked_series,) if picked_series else (), presentations=picked_pres,
                             templates=picked_tpl, index_column=picked_col, window=(start, end))
    except ValueError as exc:
        st.session_state["_nwb_options_error"] = str(exc)
        st.warning(md(exc))
        return None
    return options


# ---------------------------------------------------------------------------------------------
# server


def _server_section(store, generation: int) -> tuple[Any, tuple]:
    try:
        roots = paths.import_roots()
    except ValueError as exc:
        st.error(md(exc))
        return None, ()
    st.markdown("Recordings copied to the server's import folders, for files too large for the browser: "
                + ", ".join(markdown_code(label) for label in roots)
                + " (`NEUROALIGN_IMPORT_ROOTS`). The same check, preview and Save as an upload; nothing outside "
                  "these folders is offered or read.")
    if st.button("Scan again", key=keys.SERVER_RESCAN):
        st.session_state.pop(keys.NWB_INVENTORY, None)
    found = server_import.scan(roots)
    for note in found.notes:
        st.caption(md(note))
    labels = {c.describe(): c for c in found.candidates}
    pair_label = "two .mat files picked by hand"
    options = list(labels) + ([pair_label] if len(found.mat_files) >= 2 else [])
    if not options:
        st.info("Nothing to import in the import folders yet: copy an `.nwb` file or a subject folder "
                "(`images.mat` + `responses.mat`) there, then **Scan again**.")
        return None, ()
    if st.session_state.get(keys.SERVER_PICK) not in options:
        st.session_state.pop(keys.SERVER_PICK, None)
    shown = _relative_labels(roots)
    picked = st.selectbox("Recording", options, key=keys.SERVER_PICK, format_func=shown)
    candidate = labels.get(picked)
    mat_labels = {label: p for label, p in found.mat_files}
    nwb_options = None
    images_path = None
    problem = None
    if candidate is None:  # a pair picked by hand
        c1, c2 = st.columns(2)
        img_label = c1.selectbox("Images .mat", list(mat_labels), key=keys.SERVER_IMAGES, format_func=shown)
        resp_label = c2.selectbox("Responses .mat", list(mat_labels), key=keys.SERVER_RESPONSES,
                                  index=min(1, len(mat_labels) - 1), format_func=shown)
        files = (mat_labels[img_label], mat_labels[resp_label])
        default_name = upload.default_name(files[0].parent.name)
        kind = "mat"
    elif candidate.kind == "nwb":
        files = candidate.paths
        inventory, problem = _inventory(("server",) + server_import.stamp(files[0]),
                                        lambda: _server_inventory(files[0], roots))
        if inventory is not None and not inventory.get("templates"):  # only then are the images in a .mat file
            none = "none picked yet"
            img = st.selectbox("Images .mat (this NWB file has no stimulus images)", [none] + list(mat_labels),
                               key=keys.SERVER_NWB_IMAGES, format_func=shown)
            images_path = mat_labels.get(img)
        problem = _nwb_status(inventory, problem, images_path is not None, "pick it in **Images .mat** above",
                              files[0].name)
        nwb_options = _nwb_options(inventory) if problem is None else None
        if nwb_options is None and problem is None:  # a window that is not valid: said above the button
            problem = st.session_state.get("_nwb_options_error", "the NWB options are not valid")
        default_name = candidate.name
        kind = "nwb"
    else:
        files = candidate.paths
        default_name = candidate.name
        kind = "mat"
    name = st.text_input("Name", key=keys.upload_widget(keys.SERVER_NAME, generation), placeholder=default_name,
                         help="Default: " + md(default_name))
    identity = ("server", kind, tuple(server_import.stamp(p) for p in files),
                server_import.stamp(images_path) if images_path else None,
                upload.nwb_options_identity(nwb_options) if nwb_options is not None else None)
    staged = _check_step(keys.SERVER_CHECK, problem,
                         lambda checked: upload.is_current(checked, name or default_name, None, None, identity),
                         "The recording, the name or an option changed since the check",
                         lambda: _stage_server(store, name or default_name, kind, files, images_path, nwb_options,
                                               roots, identity))
    return staged, ()


def _relative_labels(roots: dict):
    """How the scan's labels ("<import folder>/<relative path>") are shown: relative to the folder when there is
    only one (the folder is named above the list; a long server path would cut the file names)."""
    if len(roots) != 1:
        return lambda label: label
    prefix = next(iter(roots)).rstrip("/") + "/"
    return lambda label: label[len(prefix):] if label.startswith(prefix) else label


def _server_inventory(nwb, roots) -> dict:
    from neuroalign.data import imports

    return imports.inventory(server_import.resolve(nwb, roots))


def _stage_server(store, name: str, kind: str, files, images_path, nwb_options, roots, identity):
    from neuroalign.data import imports

    resolved = [server_import.resolve(p, roots) for p in files]  # again: a link changed since the scan
    if kind == "nwb":
        if nwb_options is None:
            raise ValueError(st.session_state.get("_nwb_options_error", "the NWB options are not valid"))
        images = server_import.resolve(images_path, roots) if images_path is not None else None
        source = imports.NwbSource(resolved[0], images, nwb_options)
        names = (str(resolved[0]),) + ((str(images),) if images is not None else ())
    else:
        source = imports.MatSource(*resolved)
        names = tuple(str(p) for p in resolved)
    staged = upload.stage_files(store, name, source, names, (), preview_root=upload.staging_root(), origin="server")
    staged.identity = upload.upload_identity(name, None, None, identity)
    return staged


# ---------------------------------------------------------------------------------------------
# preview and Save


def _show_staged(store, staged, current: tuple, generation: int) -> None:
    st.success(f"Ready to import as **{md(staged.name)}**:")
    st.code("\n".join(staged.summary), language=None, wrap_lines=True)
    preview = staged.preview
    if preview:
        st.markdown("**Preview** (as they will be imported: check orientation and that images and responses "
                    "belong together)")
        cols = st.columns(4)
        for j, (picture, image_id) in enumerate(zip(preview["images"], preview["image_ids"])):
            cols[j % 4].image(picture, caption=f"image {int(image_id)}", width="stretch")
        raster = preview["raster"]
        st.plotly_chart(plots.response_raster(raster, np.arange(raster.shape[0]), np.arange(raster.shape[1]),
                                              preview["raster_images"], preview["raster_neurons"],
                                              title=("Responses of the recording" if staged.origin == "server"
                                                     else "Responses of the upload")
                                              + " (z-scored; neurons sorted by preferred image)", height=320),
                        key="subjects.upload_raster")
    if st.button(f"Save subject {md(staged.name)}", key=keys.UPLOAD_SAVE, type="primary"):
        st.session_state.pop(keys.UPLOAD_STAGED, None)
        try:
            info = upload.save_staged(store, staged, *current)
        except (ValueError, FileNotFoundError, OSError) as exc:
            st.error(f"Import failed, nothing saved: {md(exc)}")
        else:
            st.session_state[keys.SELECTED_SUBJECT] = info.name
            st.session_state[keys.IMPORTED] = info.name
            st.session_state[keys.UPLOAD_GENERATION] = generation + 1
            st.toast(f"Imported {md(info.name)}")
            st.rerun()


def nwb_caption(folder) -> str:
    """For a subject imported from NWB: ". Responses: DfOverF/plane0, mean 0–0.5 s after each onset, ..."."""
    from neuroalign.data.subject import read_sidecar

    source = (read_sidecar(folder) or {}).get("source") or {}
    nwb = source.get("nwb") if isinstance(source, dict) else None
    if not isinstance(nwb, dict):
        return ""
    try:
        start, end = (float(v) for v in nwb.get("response_window_s") or ())
        series = ", ".join(str(s) for s in nwb.get("series") or ())
        lo, hi = nwb.get("presentations_per_image") or (0, 0)
        return (f". Responses: {md(series)}, the mean {start:g}–{end:g} s after each onset, "
                f"{lo if lo == hi else f'{lo}–{hi}'} presentation{'s' if hi != 1 else ''} per image")
    except (TypeError, ValueError):
        return ""
