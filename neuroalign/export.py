"""Export a trained run for use elsewhere (MATLAB, NumPy, another notebook): the shared-space
embedding of every image and every response of its subject, which split each image was in, the
per-neuron scores the run has, and a summary of its config -- as `.npz` or `.mat`.

    from neuroalign.export import export_run, write_export, load_export
    arrays = export_run("runs/2026-..._M1_ab12cd34")            # dict of arrays (below)
    write_export("runs/2026-..._M1_ab12cd34", "M1.mat")        # or .npz; `python -m neuroalign export`

The arrays (every name a valid MATLAB variable name; N images, K neurons, R repeats, q dimensions):

* `image_embedding (N, q)` float32: the image tower's embedding of each image (the subject's images,
  in their stored order); `response_embedding (N, q)`: the neural tower's embedding of each image's
  mean response (the run's normaliser applied first); `repeat_embedding (R, N, q)`: of every single
  presentation, when the subject stores repeats. The cosine (centred when the run's loss centres:
  `config_json` says) of an image and a response embedding is the similarity the run was scored with.
* `image_ids (N,)` int64: each image's 0-based index in the source file; `image_sha256 (N,)`: the
  sha256 of its pixels (what shared runs match images across subjects by).
* `split (N,)` int8: 0 train, 1 val, 2 test, -1 none (`split_labels` names them); `train_index`,
  `val_index`, `test_index`: the 0-based rows of each split.
* `neuron_ids (K,)` int64: each neuron's 0-based column in the responses; the per-neuron scores
  (float64, NaN where undefined), each only when the run has it: `feve` (the model's fraction of
  explainable variance explained on the test repeats, results.json), `importance` and
  `importance_share` (importance.npz, the Neurons page's measure), `reliability` (split-half,
  Spearman-Brown corrected, from the repeats).
* `run_id`, `subject`, `config_json` (JSON text: the run's config.json, its test metrics and what
  each array is).

Single-subject runs (CLI, dashboard, `Aligner`) are encoded through `Aligner.load`; shared and
adapted runs (`train --shared` / `--adapt-from`) through their saved `SharedModel`, one subject at a
time (`subject=`). The subject's data is read from the data root (or the path the run recorded) and
must be what the run was trained on (its data hash). NWB users: `neuroalign.export_nwb` writes the
same per-neuron scores as a table to add to an NWB file.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from neuroalign import __version__
from neuroalign.data import Subject, load_subject
from neuroalign.data.shared_split import image_hashes
from neuroalign.evaluation.reliability import neuron_reliability
from neuroalign.io_utils import atomic_write_bytes
from neuroalign.training import runs as runs_io
from neuroalign.training.run_files import display_path

__all__ = ["FORMATS", "SPLIT_LABELS", "export_bytes", "export_run", "load_export", "write_export"]

FORMATS = ("npz", "mat")
SPLIT_LABELS = ("train", "val", "test")
SHARED_KINDS = ("shared", "adapted")
#: a MATLAB variable name: a letter, then letters, digits or underscores, at most namelengthmax (63)
MATLAB_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")

DESCRIPTIONS = {
    "image_embedding": "(N, q) float32: image tower embedding of each image",
    "response_embedding": "(N, q) float32: neural tower embedding of each image's mean response",
    "repeat_embedding": "(R, N, q) float32: neural tower embedding of each presentation (repeats)",
    "image_ids": "(N,) int64: 0-based index of each image in the source file",
    "image_sha256": "(N,) text: sha256 of each image's pixels",
    "split": "(N,) int8: 0 train, 1 val, 2 test, -1 in no split",
    "split_labels": "names of the split codes 0, 1, 2",
    "train_index": "0-based rows of the training images",
    "val_index": "0-based rows of the validation images",
    "test_index": "0-based rows of the held-out test images",
    "neuron_ids": "(K,) int64: 0-based column of each neuron in the responses",
    "feve": "(K,) float64: the model's FEVE per neuron on the test repeats (NaN: undefined)",
    "importance": "(K,) float64: neuron importance (mean |attribution|), importance.npz",
    "importance_share": "(K,) float64: importance / its sum",
    "reliability": "(K,) float64: split-half reliability from the repeats (Spearman-Brown)",
    "run_id": "the run folder's name",
    "subject": "the subject's name",
    "config_json": "this summary",
}


# ---------------------------------------------------------------------------------------------
# what a run gives


def _subject_for(meta: dict[str, Any], run_dir: Path, data_dir: str | Path | None) -> Subject:
    """The subject `meta` (a config.json subject record) names, checked against the run's data hash."""
    from neuroalign.training.pipeline import IN_MEMORY
    from neuroalign.training.rebuild import subject_path

    name = str(meta.get("name"))
    if meta.get("path") == IN_MEMORY and data_dir is None:
        raise ValueError(f"run {run_dir.name} was fitted on arrays that were not stored (neuroalign.Aligner.fit); "
                         "export needs the subject's data: encode with Aligner.load(run).encode_images/"
                         "encode_responses instead")
    path = subject_path(data_dir, name) if data_dir is not None else Path(str(meta.get("path")))
    try:
        subject = load_subject(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"subject {name!r} of run {run_dir.name} is not at {path}; expected the data the run "
                                "was trained on (give the data folder with --data-dir)") from None
    if subject.data_hash != meta.get("data_hash"):
        raise ValueError(f"subject {name!r} at {path} changed since run {run_dir.name} (data hash "
                         f"{subject.data_hash[:12]}, the run used {str(meta.get('data_hash'))[:12]}); expected the "
                         "data the run was trained on")
    return subject


def _split_codes(split: dict[str, np.ndarray], n: int, where: Path) -> np.ndarray:
    codes = np.full(n, -1, dtype=np.int8)
    for code, label in enumerate(SPLIT_LABELS):
        rows = np.asarray(split[label], dtype=np.int64)
        if len(rows) and rows.max() >= n:
            raise ValueError(f"{display_path(where)} lists image {int(rows.max())} in {label!r}; the subject has "
                             f"{n} images")
        codes[rows] = code
    return codes


def _per_neuron(values: Any, k: int) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return arr if arr.shape == (k,) else None


def _feve(results: dict[str, Any] | None, k: int) -> np.ndarray | None:
    model = ((results or {}).get("encoding") or {}).get("model") if isinstance(results, dict) else None
    return _per_neuron(model.get("per_neuron"), k) if isinstance(model, dict) else None


def _test_summary(results: dict[str, Any] | None) -> dict[str, Any]:
    test = (results or {}).get("test") or {}
    out = {"n": test.get("n"), "chance_top1": test.get("chance_top1")}
    for d in ("image_to_neural", "neural_to_image"):
        out[f"top1_{d}"] = (test.get(d) or {}).get("top1")
    model = ((results or {}).get("encoding") or {}).get("model") or {}
    out["median_feve"] = model.get("median") if isinstance(model, dict) else None
    return out


def _single(record: runs_io.RunRecord, data_dir, cache_dir, device) -> tuple[Subject, dict[str, Any]]:
    from neuroalign.estimator import Aligner

    if record.split is None:
        raise FileNotFoundError(f"{display_path(record.path / runs_io.SPLIT_FILE)} not found; expected a trained run")
    meta = record.config.get("subject") or {}
    subject = _subject_for(meta, record.path, data_dir)
    aligner = Aligner.load(record.path, device=device, cache_dir=cache_dir, verbose=False)
    out: dict[str, Any] = {
        "image_embedding": aligner.encode_images(subject.images).embeddings,
        "response_embedding": aligner.encode_responses(subject.responses).embeddings,
    }
    if subject.repeats is not None:
        out["repeat_embedding"] = np.stack([aligner.encode_responses(r).embeddings for r in subject.repeats])
    from neuroalign.training.run_eval import load_importance

    imp = load_importance(record.path)
    if imp is not None and np.shape(imp.importance) == (subject.n_neurons,):
        out["importance"] = np.asarray(imp.importance, dtype=np.float64)
        out["importance_share"] = np.asarray(imp.share, dtype=np.float64)
    return subject, {"arrays": out, "split": record.split, "split_path": record.path / runs_io.SPLIT_FILE,
                     "results": record.results, "kind": "single", "embedding_dim": aligner.embedding_dim_,
                     "centred_cosine": bool(aligner.config_.loss.center)}


def _shared(record: runs_io.RunRecord, name: str | None, data_dir, cache_dir) -> tuple[Subject, dict[str, Any]]:
    from neuroalign.training.shared import SharedModel
    from neuroalign.training.shared_runs import SUBJECTS_DIR, subject_features

    metas = {str(m.get("name")): m for m in record.config.get("subjects") or [] if isinstance(m, dict)}
    model = SharedModel.load(record.path)
    known = [n for n in metas if n in model.readins]
    if name is None:
        if len(known) != 1:
            raise ValueError(f"run {record.path.name} is a {record.config.get('kind')} run of {len(known)} subjects "
                             f"({', '.join(known)}); choose one with --subject")
        name = known[0]
    if name not in known:
        raise ValueError(f"run {record.path.name} has no subject {name!r}; expected one of {', '.join(known) or '(none)'}")
    subject = _subject_for(metas[name], record.path, data_dir)
    folder = record.path / SUBJECTS_DIR / name
    readin = model.readin(name)
    out: dict[str, Any] = {
        "image_embedding": model.embed_features(subject_features(model.image, subject, cache_dir)).astype(np.float32),
        "response_embedding": readin.embed(subject.responses).astype(np.float32),
    }
    if subject.repeats is not None:
        out["repeat_embedding"] = np.stack([readin.embed(r) for r in subject.repeats]).astype(np.float32)
    return subject, {"arrays": out, "split": runs_io.read_split(folder), "split_path": folder / runs_io.SPLIT_FILE,
                     "results": runs_io.read_json_file(folder / runs_io.RESULTS_FILE), "kind": record.config["kind"],
                     "embedding_dim": model.n_components, "centred_cosine": False}


def single_subject_meta(record: runs_io.RunRecord, subject: str | None) -> dict[str, Any]:
    """config.json's subject record of a single-subject run; one-line errors when the run has none or
    `subject` names another subject (`--subject` chooses among a shared run's subjects)."""
    meta = record.config.get("subject")
    if not isinstance(meta, dict) or "config" not in record.config:
        raise FileNotFoundError(f"{display_path(record.path / runs_io.CONFIG_FILE)} is missing or incomplete; "
                                "expected a trained run")
    if subject is not None and subject != meta.get("name"):
        raise ValueError(f"run {record.path.name} is of subject {meta.get('name')!r}, not {subject!r}; --subject "
                         "chooses among the subjects of a shared run")
    return meta


def export_run(run_dir: str | Path, *, subject: str | None = None, data_dir: str | Path | None = None,
               cache_dir: str | Path | None = None, device: str = "auto") -> dict[str, Any]:
    """The arrays of a trained run (module docstring): a dict of numpy arrays and strings whose keys are
    valid MATLAB names. `subject` chooses the subject of a shared run (must be the run's own for a
    single-subject run); `data_dir` where the subject is read from (default: the path the run
    recorded). One-line errors (ValueError / FileNotFoundError) for anything missing or changed."""
    record = runs_io.load_run(run_dir)
    kind = record.config.get("kind")
    if kind in SHARED_KINDS:
        subj, got = _shared(record, subject, data_dir, cache_dir)
    else:
        meta = single_subject_meta(record, subject)
        if not (record.path / runs_io.BEST_CKPT).is_file():
            raise FileNotFoundError(f"{display_path(record.path / runs_io.BEST_CKPT)} not found; the run has not "
                                    "finished a first epoch (nothing to export yet)")
        subj, got = _single(record, data_dir, cache_dir, device)
    n, k = subj.n_images, subj.n_neurons
    arrays: dict[str, Any] = dict(got["arrays"])
    codes = _split_codes(got["split"], n, got["split_path"])
    arrays.update({
        "image_ids": np.asarray(subj.image_ids, dtype=np.int64),
        "image_sha256": np.asarray(image_hashes(subj.images)),
        "split": codes, "split_labels": np.asarray(SPLIT_LABELS),
        **{f"{label}_index": np.flatnonzero(codes == c).astype(np.int64) for c, label in enumerate(SPLIT_LABELS)},
        "neuron_ids": np.arange(k, dtype=np.int64),
    })
    feve = _feve(got["results"], k)
    if feve is not None:
        arrays["feve"] = feve
    if subj.repeats is not None and subj.repeats.shape[0] >= 2:
        arrays["reliability"] = neuron_reliability(subj.repeats)
    summary = {
        "run_id": record.path.name, "kind": got["kind"], "subject": subj.name,
        "n_images": n, "n_neurons": k, "n_repeats": 0 if subj.repeats is None else int(subj.repeats.shape[0]),
        "embedding_dim": int(got["embedding_dim"]), "similarity": "cosine" + (" of centred embeddings"
                                                                              if got["centred_cosine"] else ""),
        "test": _test_summary(got["results"]), "run": record.config, "neuroalign_version": __version__,
        "arrays": {k2: DESCRIPTIONS[k2] for k2 in DESCRIPTIONS if k2 in arrays or k2 in ("run_id", "subject",
                                                                                          "config_json")},
    }
    arrays.update({"run_id": record.path.name, "subject": subj.name,
                   "config_json": json.dumps(summary, default=str, indent=1)})
    return arrays


# ---------------------------------------------------------------------------------------------
# files


def _format_of(fmt: str | None, out: str | Path | None) -> str:
    if fmt is None:
        suffix = Path(out).suffix.lower().lstrip(".") if out is not None else ""
        fmt = suffix or "npz"
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def to_bytes(arrays: dict[str, Any], fmt: str) -> bytes:
    """`arrays` (from `export_run`) as the bytes of an `.npz` (no pickles) or a MATLAB v5 `.mat` file
    (1-D arrays as columns, text as char arrays)."""
    fmt = _format_of(fmt, None)
    buf = io.BytesIO()
    if fmt == "npz":
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    else:
        from scipy.io import savemat

        savemat(buf, arrays, oned_as="column", do_compression=True, long_field_names=False)
    return buf.getvalue()


def export_bytes(run_dir: str | Path, fmt: str = "npz", **kwargs: Any) -> bytes:
    """`export_run(run_dir, **kwargs)` as file bytes in `fmt` ("npz" or "mat"): what the Runs page offers."""
    fmt = _format_of(fmt, None)
    return to_bytes(export_run(run_dir, **kwargs), fmt)


def write_export(run_dir: str | Path, out: str | Path | None = None, fmt: str | None = None, **kwargs: Any) -> Path:
    """Write the export of `run_dir` to `out` (atomically; default `<run_dir>/export_<subject>.<fmt>`);
    `fmt` defaults to `out`'s suffix, else npz. Returns the path written."""
    fmt = _format_of(fmt, out)
    arrays = export_run(run_dir, **kwargs)
    if out is None:
        out = Path(run_dir) / f"export_{arrays['subject']}.{fmt}"
    out = Path(out).expanduser()
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder; expected a file name ending in .{fmt}")
    return atomic_write_bytes(out, to_bytes(arrays, fmt))


def load_export(path: str | Path) -> dict[str, Any]:
    """An export file read back: numpy arrays with the shapes `export_run` returned (the `.mat` file's
    columns flattened again, its char arrays as str / arrays of str)."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            out: dict[str, Any] = {k: z[k] for k in z.files}
        for key in ("run_id", "subject", "config_json"):
            out[key] = str(out[key])
        return out
    from scipy.io import loadmat

    raw = loadmat(path, chars_as_strings=True)
    out = {}
    for key, value in raw.items():
        if key.startswith("__"):
            continue
        if value.dtype.kind == "U":
            strings = [s.rstrip() for s in np.atleast_1d(value).ravel()]
            out[key] = strings[0] if key in ("run_id", "subject", "config_json") else np.asarray(strings)
        elif value.ndim == 2 and value.shape[1] == 1 and key not in ("image_embedding", "response_embedding"):
            out[key] = value[:, 0]
        else:
            out[key] = value
    return out
