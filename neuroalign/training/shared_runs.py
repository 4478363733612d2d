"""Shared runs: one model over several subjects (`train_shared`) and a new subject adapted from one
(`adapt_from_run`), each in one run folder. What the CLI's `train --shared` / `--adapt-from` call.

Run folder of a shared run (`<runs>/<UTC time>_shared-A+B+C_<hex>/`):

* `status.json`, `config.json` (`"kind": "shared"`, the config, `"subjects"`: name, path, data hash,
  images, neurons, image size of each; `"split_rule"`; `"overlap"`: distinct images, pairs sharing
  images; `"image_choice"` when the image model was "auto");
* `shared_model.npz` + `shared_model.json`: the shared image side and every read-in
  (`training.shared.SharedModel.save`);
* `shared_results.json`: per-subject test top-1 both ways, the fit's choices, and `cross_subject`
  (`evaluation.shared_eval.cross_subject`);
* `subjects/<name>/results.json` (the same metrics, baselines and intervals as a single-subject run's
  results.json), `split.json`, `normaliser.json`, `test_outputs.npz` (`test_indices`,
  `image_embedding`, `neural_embedding`, `similarity`).

An adapted run (`<runs>/<time>_adapt-NEW_<hex>/`) has the same files with `"kind": "adapted"`,
`"adapted_from"` (the shared run folder) and `"shared_fingerprint"` (equal to the shared run's:
the shared parts are not refitted), its `shared_model.*` holding the shared parts and the new
read-in only, and cross-subject retrieval against the shared run's subjects that share test images
with it (subjects no longer in the data root are listed under `skipped`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from neuroalign.config import AUTO, TrainConfig, layer_label
from neuroalign.data import SubjectStore, load_subject
from neuroalign.data.shared_split import image_hashes, overlap_report, split_by_hash
from neuroalign.io_utils import atomic_savez, atomic_write_json
from neuroalign.training import runs as runs_io
from neuroalign.training.shared import SharedModel, SubjectData, adapt, fit_shared_model

logger = logging.getLogger(__name__)

SHARED_RESULTS = "shared_results.json"
SUBJECTS_DIR = "subjects"
Status = Callable[[str], None]


def image_settings(config: TrainConfig, backbone: str | None = None, stage: int | None = None,
                   block: int | None = None, transform: str | None = None) -> dict[str, Any]:
    """The frozen readout features a shared model reads (from `config.image`, or a candidate's layer)."""
    c = config.image
    return {"backbone": backbone or c.backbone, "stage": int(stage or c.stage), "block": int(block or c.block),
            "transform": transform or c.transform, "grid": [int(g) for g in c.grid], "init_seed": int(c.init_seed),
            "weights": c.weights}


def subject_features(image: dict[str, Any], subject, cache_dir: str | Path | None = None) -> np.ndarray:
    """Frozen features `(N, D)` float32 of a subject's images for `image` settings (feature cache reused)."""
    from neuroalign.models import ImageTower, cached_features

    tower = ImageTower(backbone=image["backbone"], stage=image["stage"], block=image["block"], mode="frozen",
                       weights=image.get("weights"), init_seed=image.get("init_seed", 0), head="readout",
                       grid=tuple(image["grid"]), n_components=8, transform=image["transform"])
    feats = cached_features(tower, subject.images, subject.data_hash, cache_dir=cache_dir, device="cpu")
    return feats.flatten(1).numpy()


def load_subjects(names: Sequence[str], data_dir: str | Path) -> dict[str, tuple[Any, Path]]:
    """Each named subject loaded, with its folder; one-line errors for duplicates and differing image sizes."""
    names = list(names)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"subject {dup[0]!r} is listed twice; expected distinct subjects")
    store = SubjectStore(data_dir)
    out = {}
    for name in names:
        path = store.path(name)
        out[name] = (load_subject(path), path)
    sizes = {n: s.image_shape for n, (s, _) in out.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError("the subjects' images differ in size (" + ", ".join(f"{n}: {h}x{w}" for n, (h, w) in sizes.items())
                         + "); expected one image size for a shared model (train them separately)")
    return out


def split_rule(config: TrainConfig) -> dict[str, Any]:
    d = config.data
    return {"by": "sha256 of each image's pixels", "val_fraction": d.val_fraction, "test_fraction": d.test_fraction,
            "seed": d.split_seed}


def _split_for(rule: dict[str, Any], hashes: list[str], name: str) -> dict[str, np.ndarray]:
    return split_by_hash(hashes, rule["val_fraction"], rule["test_fraction"], rule["seed"], name)


def _subject_record(name: str, subject, path: Path) -> dict[str, Any]:
    return {"name": name, "path": str(path), "data_hash": subject.data_hash, "n_images": subject.n_images,
            "n_neurons": subject.n_neurons, "image_shape": list(subject.image_shape)}


def _fit(config: TrainConfig, loaded: dict[str, tuple[Any, Path]], hashes: dict[str, list[str]],
         splits: dict[str, dict[str, np.ndarray]], cache_dir, status: Status,
         deadline: float | None = None) -> tuple[SharedModel, dict, dict | None]:
    """The shared model for the config's image model, or for each "auto" candidate (best pooled val MRR).
    `deadline` (time.monotonic()): an "auto" candidate is started only when it is expected to end by
    then (as costly as the costliest so far, `image_choice.ChoiceBudget`), as in a single-subject run
    (at least one is always fitted)."""
    from neuroalign.training.image_choice import AUTO_CANDIDATES, ChoiceBudget

    if config.image.backbone == AUTO:
        candidates = [image_settings(config, c.backbone, c.stage, c.block, c.transform) for c in AUTO_CANDIDATES]
    else:
        candidates = [image_settings(config)]
    rows, best = [], None
    budget = ChoiceBudget(deadline)
    for i, image in enumerate(candidates):
        label = layer_label(image["backbone"], image["stage"], image["block"], image.get("transform"))
        if best is not None and not budget.allows(budget.candidate_s):
            rows.append({"model": label, "skipped": "time budget"})
            continue
        t0 = time.monotonic()
        try:
            data = []
            for name, (subject, _) in loaded.items():
                status(f"features: {label}, {name} ({i + 1}/{len(candidates)})")
                data.append(SubjectData(name, subject_features(image, subject, cache_dir), subject.responses,
                                        hashes[name], splits[name], subject.repeats))
        except ValueError as exc:
            if len(candidates) == 1:
                raise
            rows.append({"model": label, "error": str(exc)})
            continue
        image = {**image, "image_shape": list(next(iter(loaded.values()))[0].image_shape)}
        t_fit = time.monotonic()
        model = fit_shared_model(data, image, split_rule(config), n_components=config.n_components,
                                 normaliser_kind=config.data.normaliser, status=status)
        budget.spent(time.monotonic() - t0, time.monotonic() - t_fit)
        key = (model.report["val_mrr_pooled"], model.report["val_top1_pooled"], -i)
        rows.append({"model": label, "val_mrr_pooled": key[0], "val_top1_pooled": key[1]})
        if best is None or key > best[0]:
            best = (key, model, {d.name: d.features for d in data})
    if best is None:
        raise ValueError("no image model could read these images: " + "; ".join(f"{r['model']}: {r['error']}" for r in rows))
    choice = {"criterion": "pooled val MRR of the shared fit", "candidates": rows,
              "chosen": best[1].image["backbone"]} if len(candidates) > 1 else None
    return best[1], best[2], choice


def _write_subject(run_dir: Path, name: str, results: dict, outputs: dict, split: dict, model: SharedModel) -> None:
    folder = run_dir / SUBJECTS_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / runs_io.RESULTS_FILE, results)
    runs_io.write_split(folder, split)
    atomic_write_json(folder / runs_io.NORMALISER_FILE, model.readin(name).normaliser.state_dict())
    atomic_savez(folder / runs_io.TEST_OUTPUTS, **outputs)


def _summary_line(name: str, results: dict) -> str:
    t = results["test"]
    return (f"{name}: test top-1 image->neural {t['image_to_neural']['top1']:.3f}, neural->image "
            f"{t['neural_to_image']['top1']:.3f} (n={t['n']}, chance {t['chance_top1']:.3f})")


def _per_subject(name: str, results: dict) -> dict[str, Any]:
    t = results["test"]
    return {"n_test": t["n"], "chance_top1": t["chance_top1"],
            "top1_image_to_neural": t["image_to_neural"]["top1"], "top1_neural_to_image": t["neural_to_image"]["top1"],
            "top1_ci_image_to_neural": t["image_to_neural"]["top1_ci"],
            "top1_ci_neural_to_image": t["neural_to_image"]["top1_ci"],
            "results": f"{SUBJECTS_DIR}/{name}/{runs_io.RESULTS_FILE}"}


def on_rank_zero(work: Callable[[], Any], config: TrainConfig | None = None) -> Any:
    """`work()` once per job: under torchrun the shared fit (closed form, one process's work) runs on
    rank 0 only, which alone writes the run folders; the other ranks join the process group, wait,
    and return rank 0's result, so `torchrun ... train --shared` gives one run, equal to one process's.
    A failure on rank 0 is raised there; the other ranks exit with status 1 without repeating it."""
    from neuroalign.training import distributed as dist_ops
    from neuroalign.training.device import dist_info_from_env

    dist = dist_info_from_env()
    if not dist.enabled:
        return work()
    from neuroalign.config import preset

    dist_ops.setup(config or preset("recommended"))
    result, error = None, None
    if dist.is_main:
        try:
            result = work()
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            dist_ops.broadcast_object((None, error), dist)
            raise
    result, error = dist_ops.broadcast_object((result, error), dist)
    if error is not None:
        raise SystemExit(1)
    return result


def _run(run_dir: Path, body: Callable[[Status], str], on_status: Status | None) -> Path:
    def status(message: str) -> None:
        runs_io.write_status(run_dir, "running", message, progress=0.0)
        if on_status is not None:
            on_status(message)

    with runs_io.run_lock(run_dir, "train --shared"):
        try:
            summary = body(status)
        except BaseException as exc:
            runs_io.write_status(run_dir, "failed", f"{type(exc).__name__}: {exc}")
            raise
        runs_io.write_status(run_dir, "finished", summary, progress=1.0)
    return run_dir


def train_shared(names: Sequence[str], config: TrainConfig, data_dir: str | Path, runs_dir: str | Path,
                 cache_dir: str | Path | None = None, on_status: Status | None = None,
                 baselines: bool = True, run_dir: str | Path | None = None) -> Path:
    """One shared model over `names` into a new run folder (module docstring); returns the folder.
    `run_dir`: an existing empty run folder to write into instead (the dashboard's job creates it).
    Under torchrun rank 0 fits and writes, the other ranks return its folder (`on_rank_zero`)."""
    config.validate()
    return on_rank_zero(lambda: _train_shared(names, config, data_dir, runs_dir, cache_dir, on_status, baselines,
                                              run_dir), config)


def _train_shared(names: Sequence[str], config: TrainConfig, data_dir: str | Path, runs_dir: str | Path,
                  cache_dir: str | Path | None, on_status: Status | None, baselines: bool,
                  run_dir: str | Path | None) -> Path:
    names = list(names)
    if len(names) < 2:
        raise ValueError(f"a shared model needs >= 2 subjects, got {len(names)}; train one subject without --shared")
    loaded = load_subjects(names, data_dir)  # one-line errors before any folder is made
    run_dir = Path(run_dir) if run_dir is not None else runs_io.new_run_dir(runs_dir, shared_run_label(names))

    def body(status: Status) -> str:
        t0 = time.monotonic()
        status("hashing images (splits by image identity, shared)")
        hashes = {n: image_hashes(s.images) for n, (s, _) in loaded.items()}
        rule = split_rule(config)
        splits = {n: _split_for(rule, hashes[n], n) for n in names}
        overlap = overlap_report(hashes, splits)
        # like a single-subject run, "auto" starts no candidate after half the time budget
        choose_by = t0 + 0.5 * config.max_seconds if config.max_seconds else None
        model, feats, choice = _fit(config, loaded, hashes, splits, cache_dir, status, choose_by)
        record = {"kind": "shared", "config": config.to_dict(), "subject": {"name": "+".join(names)},
                  "subjects": [_subject_record(n, s, p) for n, (s, p) in loaded.items()], "split_rule": rule,
                  "overlap": overlap, "image": model.image, "image_choice": choice,
                  "shared_fingerprint": model.shared_fingerprint(),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "reproduce": "python -m neuroalign train --shared --subjects " + " ".join(names)}
        atomic_write_json(run_dir / runs_io.CONFIG_FILE, record)
        model.save(run_dir)
        per, lines = {}, []
        from neuroalign.evaluation.shared_eval import cross_subject, subject_results

        for n, (subject, path) in loaded.items():
            status(f"evaluating {n} on its test images (retrieval, baselines, FEVE)")
            res, out = subject_results(model, n, subject, splits[n], feats[n], path, baselines=baselines)
            _write_subject(run_dir, n, res, out, splits[n], model)
            per[n] = _per_subject(n, res)
            lines.append(_summary_line(n, res))
        cross = cross_subject(model, {n: s for n, (s, _) in loaded.items()}, splits, hashes)
        atomic_write_json(run_dir / SHARED_RESULTS, {"kind": "shared", "subjects": per, "cross_subject": cross,
                                                     "fit": model.report, "overlap": overlap,
                                                     "elapsed_s": round(time.monotonic() - t0, 2)})
        return "shared model finished; " + "; ".join(lines)

    return _run(run_dir, body, on_status)


def shared_run_label(names: Sequence[str]) -> str:
    """The subject part of a shared run's folder name (`<time>_shared-A-B-C_<hex>`)."""
    return "shared-" + "+".join(names)[:60]


def read_shared_record(run_dir: str | Path) -> dict[str, Any]:
    """config.json of a shared run; one-line errors when `run_dir` is not one."""
    rec = runs_io.load_run(run_dir)
    if rec.config.get("kind") != "shared":
        raise ValueError(f"{run_dir} is not a shared run (config.json kind {rec.config.get('kind')!r}); expected a "
                         "folder written by train --shared")
    return rec.config


def adapt_from_run(from_dir: str | Path, names: Sequence[str], data_dir: str | Path, runs_dir: str | Path,
                   cache_dir: str | Path | None = None, on_status: Status | None = None,
                   baselines: bool = True, run_dir: str | Path | None = None) -> list[Path]:
    """Adapt each new subject of `names` to the shared run `from_dir` (only its read-in is fitted; the
    shared run is read, never written). One run folder per new subject; returns them. `run_dir`: an
    existing empty run folder to write into (one subject only; the dashboard's job creates it). Under
    torchrun rank 0 adapts and writes, the other ranks return its folders (`on_rank_zero`)."""
    return on_rank_zero(lambda: _adapt_from_run(from_dir, names, data_dir, runs_dir, cache_dir, on_status, baselines,
                                                run_dir))


def _adapt_from_run(from_dir: str | Path, names: Sequence[str], data_dir: str | Path, runs_dir: str | Path,
                    cache_dir: str | Path | None, on_status: Status | None, baselines: bool,
                    run_dir: str | Path | None) -> list[Path]:
    record = read_shared_record(from_dir)
    model = SharedModel.load(from_dir)
    fingerprint = model.shared_fingerprint()
    if record.get("shared_fingerprint") not in (None, fingerprint):
        raise ValueError(f"{from_dir}: shared_model.* do not match config.json (fingerprint {fingerprint[:12]}); "
                         "expected the files of one run")
    names = list(names)
    if run_dir is not None and len(names) != 1:
        raise ValueError(f"one run folder was given for {len(names)} subjects; expected one subject per folder")
    known = [n for n in names if n in model.readins]
    if known:
        raise ValueError(f"subject {known[0]!r} is already part of the shared run {Path(from_dir).name}; expected a "
                         "new subject")
    loaded = load_subjects(names, data_dir)
    want = tuple(model.image.get("image_shape") or ())
    for n, (s, _) in loaded.items():
        if want and tuple(s.image_shape) != want:
            raise ValueError(f"{n} has {s.image_shape[0]}x{s.image_shape[1]} images, the shared run "
                             f"{Path(from_dir).name} was trained on {want[0]}x{want[1]}; expected the same image size")
    rule = model.split_rule
    out = []
    given = run_dir
    for name, (subject, path) in loaded.items():
        run_dir = Path(given) if given is not None else runs_io.new_run_dir(runs_dir, f"adapt-{name}")

        def body(status: Status, name=name, subject=subject, path=path, run_dir=run_dir) -> str:
            status(f"features of {name} ({model.image['backbone']})")
            hashes = image_hashes(subject.images)
            split = _split_for(rule, hashes, name)
            feats = subject_features(model.image, subject, cache_dir)
            status(f"fitting the read-in of {name} (the shared parts stay fixed)")
            t0 = time.monotonic()
            adapted = adapt(model, name, feats, subject.responses, split, repeats=subject.repeats)
            fit_s = time.monotonic() - t0
            if adapted.shared_fingerprint() != fingerprint:  # pragma: no cover - guarded by construction
                raise RuntimeError("the shared parts changed during adaptation")
            atomic_write_json(run_dir / runs_io.CONFIG_FILE, {
                "kind": "adapted", "adapted_from": str(Path(from_dir).resolve()), "shared_fingerprint": fingerprint,
                "config": (record.get("config") or {}), "subject": _subject_record(name, subject, path),
                "split_rule": rule, "image": model.image, "readin_fit_s": round(fit_s, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "reproduce": f"python -m neuroalign train --adapt-from {from_dir} --subjects {name}"})
            adapted.save(run_dir, subjects=[name])
            from neuroalign.evaluation.shared_eval import cross_subject, subject_results

            status(f"evaluating {name} on its test images")
            res, outputs = subject_results(adapted, name, subject, split, feats, path, baselines=baselines,
                                           training={"adapted_from": str(from_dir), "readin_fit_s": round(fit_s, 3)})
            _write_subject(run_dir, name, res, outputs, split, adapted)
            others, skipped = {name: subject}, []
            splits, hashes_all = {name: split}, {name: hashes}
            for old in (record.get("subjects") or []):
                try:
                    s_old = load_subject(SubjectStore(data_dir).path(old["name"]))
                except (FileNotFoundError, ValueError) as exc:
                    skipped.append({"a": name, "b": old["name"], "reason": f"not loadable any more ({exc})"})
                    continue
                if s_old.data_hash != old.get("data_hash"):
                    skipped.append({"a": name, "b": old["name"], "reason": "its data changed since the shared run"})
                    continue
                h_old = image_hashes(s_old.images)
                others[old["name"]], hashes_all[old["name"]] = s_old, h_old
                splits[old["name"]] = _split_for(rule, h_old, old["name"])
            cross = cross_subject(adapted, others, splits, hashes_all)
            cross["pairs"] = [p for p in cross["pairs"] if name in (p["a"], p["b"])]
            cross["skipped"] = [p for p in cross["skipped"] if name in (p["a"], p["b"])] + skipped
            atomic_write_json(run_dir / SHARED_RESULTS, {"kind": "adapted", "subjects": {name: _per_subject(name, res)},
                                                         "cross_subject": cross, "readin_fit_s": round(fit_s, 3)})
            return f"adapted from {Path(from_dir).name} (read-in fitted in {fit_s:.1f} s); " + _summary_line(name, res)

        out.append(_run(run_dir, body, on_status))
    return out


def evaluate_shared_run(run_dir: str | Path, data_dir: str | Path | None = None, cache_dir: str | Path | None = None
                        ) -> dict[str, Any]:
    """Recompute the per-subject results and cross-subject retrieval of a shared run from its saved
    model. Every subject must still be in the data root with the data it was trained on: one-line
    errors otherwise (a subject removed after training cannot be evaluated; the model still adapts)."""
    run_dir = Path(run_dir)
    record = read_shared_record(run_dir)
    model = SharedModel.load(run_dir)
    loaded = {}
    for meta in record.get("subjects") or []:
        name = meta["name"]
        try:
            path = SubjectStore(data_dir).path(name) if data_dir is not None else Path(meta["path"])
            subject = load_subject(path)
        except (FileNotFoundError, ValueError) as exc:
            raise ValueError(f"subject {name!r} of shared run {run_dir.name} cannot be loaded any more ({exc}); "
                             "restore it to evaluate the run (adapting new subjects does not need it)") from None
        if subject.data_hash != meta.get("data_hash"):
            raise ValueError(f"subject {name!r} changed since shared run {run_dir.name} was trained (hash "
                             f"{subject.data_hash[:12]}, run used {str(meta.get('data_hash'))[:12]}); expected the "
                             "original data")
        loaded[name] = (subject, path)
    from neuroalign.evaluation.shared_eval import cross_subject, subject_results

    with runs_io.run_lock(run_dir, "evaluate"):
        hashes = {n: image_hashes(s.images) for n, (s, _) in loaded.items()}
        splits = {n: _split_for(model.split_rule, hashes[n], n) for n in loaded}
        per = {}
        for n, (s, p) in loaded.items():
            res, out = subject_results(model, n, s, splits[n], subject_features(model.image, s, cache_dir), p)
            _write_subject(run_dir, n, res, out, splits[n], model)
            per[n] = _per_subject(n, res)
        cross = cross_subject(model, {n: s for n, (s, _) in loaded.items()}, splits, hashes)
        result = {"kind": "shared", "subjects": per, "cross_subject": cross, "fit": model.report,
                  "overlap": record.get("overlap")}
        atomic_write_json(run_dir / SHARED_RESULTS, result)
    return result
