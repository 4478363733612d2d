"""Per-neuron scores of a trained run as a table to add back to the subject's NWB file (issue 19 item 4).

    from neuroalign.export_nwb import neuron_table, write_neuron_table, read_neuron_table
    table = neuron_table("runs/2026-..._M1_ab12cd34")           # {column: array}, one row per neuron
    write_neuron_table("runs/2026-..._M1_ab12cd34", "M1.csv")  # or `python -m neuroalign export RUN --format csv`

One row per neuron, in the subject's column order. Columns (`COLUMN_DESCRIPTIONS`; the identity
columns only for a subject imported from an NWB file, the scores only where the run has them):

* `neuron` -- the 0-based column of the neuron in the subject's responses (`neuron_ids` of the
  `.npz`/`.mat` export);
* `series` -- the RoiResponseSeries it was read from, relative to processing/ophys ("DfOverF/plane0");
  `imaging_plane` -- that series' imaging plane (its name, "plane0"); `roi_table` -- the HDF5 path of
  the PlaneSegmentation its `rois` region refers to; `roi_id` -- the `id` of the neuron's row in that
  table (-1 where the file did not say: `subject.json` has a note);
* `feve`, `importance`, `importance_share`, `reliability` -- as in `neuroalign.export` (the same
  numbers: FEVE on the test repeats, importance.npz, split-half reliability), NaN where undefined.

The file is CSV (a header row; integers as integers, numbers with every digit, NaN as `NaN`), which
pandas, MATLAB's `readtable` and the `csv` module read as is; README "NWB files" shows how to add it
to the NWB file as a `DynamicTable` in processing/ophys with pynwb. Nothing here encodes images: the
scores come from the run's files and the subject's data, checked against the run's data hash.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from neuroalign.evaluation.reliability import neuron_reliability
from neuroalign.io_utils import atomic_write_bytes
from neuroalign.training import runs as runs_io
from neuroalign.training.run_files import display_path

__all__ = ["COLUMN_DESCRIPTIONS", "IDENTITY_COLUMNS", "SCORE_COLUMNS", "neuron_table", "read_neuron_table",
           "table_bytes", "write_neuron_table"]

IDENTITY_COLUMNS = ("series", "imaging_plane", "roi_table", "roi_id")
SCORE_COLUMNS = ("feve", "importance", "importance_share", "reliability")
COLUMN_DESCRIPTIONS = {
    "neuron": "0-based column of the neuron in the subject's responses (neuroalign)",
    "series": "RoiResponseSeries the neuron was read from, relative to processing/ophys",
    "imaging_plane": "imaging plane of that series",
    "roi_table": "HDF5 path of the PlaneSegmentation the series' rois region refers to",
    "roi_id": "id of the neuron's row in roi_table (-1: unknown)",
    "feve": "fraction of explainable variance explained by the model on the test repeats (NaN: undefined)",
    "importance": "neuron importance (mean |attribution|) of the run",
    "importance_share": "importance / its sum",
    "reliability": "split-half reliability from the repeats (Spearman-Brown corrected)",
}
_INT_COLUMNS = ("neuron", "roi_id")
_TEXT_COLUMNS = ("series", "imaging_plane", "roi_table")


def _subject_record(record: runs_io.RunRecord, subject: str | None) -> tuple[dict[str, Any], dict | None, Path | None]:
    """(the config.json record of the run's subject, its results, the run's importance folder or None)."""
    kind = record.config.get("kind")
    if kind in ("shared", "adapted"):
        from neuroalign.training.shared_runs import SUBJECTS_DIR

        metas = {str(m.get("name")): m for m in record.config.get("subjects") or [] if isinstance(m, dict)}
        if subject is None:
            if len(metas) != 1:
                raise ValueError(f"run {record.path.name} is a {kind} run of {len(metas)} subjects "
                                 f"({', '.join(metas)}); choose one with --subject")
            subject = next(iter(metas))
        if subject not in metas:
            raise ValueError(f"run {record.path.name} has no subject {subject!r}; expected one of "
                             f"{', '.join(metas) or '(none)'}")
        folder = record.path / SUBJECTS_DIR / subject
        return metas[subject], runs_io.read_json_file(folder / runs_io.RESULTS_FILE), None
    from neuroalign.export import single_subject_meta

    meta = single_subject_meta(record, subject)
    if record.results is None:
        raise FileNotFoundError(f"{display_path(record.path / runs_io.RESULTS_FILE)} not found; the run has not "
                                "been evaluated (nothing to export yet)")
    return meta, record.results, record.path


def _identity(nwb: dict[str, Any], k: int, where: str) -> dict[str, np.ndarray]:
    """The identity columns from a subject's `source.nwb` record (see neuroalign.data.nwb)."""
    series = list(nwb.get("series") or [])
    counts = [int(c) for c in nwb.get("rois_per_series") or []]
    if len(counts) != len(series) or sum(counts) != k:
        raise ValueError(f"{where}: the NWB record lists {sum(counts)} ROIs in {len(series)} series for {k} neurons; "
                         "expected one ROI per neuron (import the NWB file again)")
    planes = list(nwb.get("imaging_planes") or [""] * len(series))
    tables = list(nwb.get("roi_tables") or [None] * len(series))
    ids = list(nwb.get("roi_ids") or [None] * len(series))
    out: dict[str, list] = {c: [] for c in IDENTITY_COLUMNS}
    for s, n, plane, table, roi_ids in zip(series, counts, planes, tables, ids):
        out["series"] += [str(s)] * n
        out["imaging_plane"] += [str(plane or "").rsplit("/", 1)[-1]] * n
        out["roi_table"] += [str(table or "")] * n
        out["roi_id"] += [int(v) for v in roi_ids] if roi_ids is not None and len(roi_ids) == n else [-1] * n
    columns: dict[str, np.ndarray] = {c: np.asarray(out[c], dtype=str) for c in _TEXT_COLUMNS}
    return {**columns, "roi_id": np.asarray(out["roi_id"], dtype=np.int64)}


def neuron_table(run_dir: str | os.PathLike, *, subject: str | None = None,
                 data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """{column: (K,) array} of a trained run's subject, in `COLUMN_DESCRIPTIONS` order (module docstring).
    `subject` chooses the subject of a shared run; `data_dir` where the subject is read from (default:
    the path the run recorded). One-line ValueError / FileNotFoundError when something is missing or
    the subject changed since the run."""
    from neuroalign.data.subject import read_sidecar
    from neuroalign.export import _feve, _per_neuron, _subject_for
    from neuroalign.training.rebuild import subject_path

    record = runs_io.load_run(run_dir)
    meta, results, importance_dir = _subject_record(record, subject)
    subj = _subject_for(meta, record.path, data_dir)
    folder = subject_path(data_dir, str(meta.get("name"))) if data_dir is not None else Path(str(meta.get("path")))
    k = subj.n_neurons
    table: dict[str, np.ndarray] = {"neuron": np.arange(k, dtype=np.int64)}
    source = (read_sidecar(folder) or {}).get("source") or {}
    if source.get("kind") == "nwb" and isinstance(source.get("nwb"), dict):
        table.update(_identity(source["nwb"], k, display_path(folder / "subject.json")))
    feve = _feve(results, k)
    if feve is not None:
        table["feve"] = feve
    if importance_dir is not None:
        from neuroalign.training.run_eval import load_importance

        imp = load_importance(importance_dir)
        if imp is not None and np.shape(imp.importance) == (k,):
            table["importance"] = np.asarray(imp.importance, dtype=np.float64)
            table["importance_share"] = _per_neuron(imp.share, k)
    if subj.repeats is not None and subj.repeats.shape[0] >= 2:
        table["reliability"] = np.asarray(neuron_reliability(subj.repeats), dtype=np.float64)
    return table


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return "NaN" if math.isnan(v) else repr(v)
    return str(value)


def table_bytes(table: dict[str, np.ndarray]) -> bytes:
    """A table from `neuron_table` as CSV bytes (UTF-8, a header row)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = list(table)
    writer.writerow(columns)
    for row in zip(*(table[c].tolist() for c in columns)):
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue().encode("utf-8")


def write_neuron_table(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, **kwargs: Any) -> Path:
    """Write `neuron_table(run_dir, **kwargs)` as CSV to `out` (atomically; default
    `<run_dir>/export_<subject>.csv`). Returns the path written."""
    table = neuron_table(run_dir, **kwargs)
    if out is None:
        record = runs_io.load_run(run_dir)
        name = kwargs.get("subject") or (record.config.get("subject") or {}).get("name") or \
            str((record.config.get("subjects") or [{}])[0].get("name"))
        out = Path(run_dir) / f"export_{name}.csv"
    out = Path(out).expanduser()
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder; expected a file name ending in .csv")
    return atomic_write_bytes(out, table_bytes(table))


def read_neuron_table(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A CSV written by `write_neuron_table` read back: {column: array} (int64 for `neuron` and `roi_id`,
    str for the identity text, float64 for the scores). One-line ValueError for another kind of file."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error):
        raise ValueError(f"{path.name}: not UTF-8 text; expected a neuroalign neuron table (CSV with a header row "
                         "beginning with 'neuron')") from None
    if not rows or not rows[0] or rows[0][0] != "neuron":
        found = ",".join(rows[0])[:80] if rows and rows[0] else "nothing"
        raise ValueError(f"{path.name}: starts with {found!r}; expected a neuroalign neuron table (a header row "
                         "beginning with 'neuron')")
    header, body = rows[0], rows[1:]
    if any(len(r) != len(header) for r in body):
        raise ValueError(f"{path.name}: rows of different lengths; expected {len(header)} columns in every row")
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        values = [r[j] for r in body]
        if name in _INT_COLUMNS:
            out[name] = np.asarray([int(v) for v in values], dtype=np.int64)
        elif name in _TEXT_COLUMNS:
            out[name] = np.asarray(values, dtype=str)
        else:
            out[name] = np.asarray([float(v) for v in values], dtype=np.float64)
    return out
