"""`neuroalign.Aligner`: the library's estimator, with scikit-learn conventions.

    from neuroalign import Aligner
    aligner = Aligner("recommended", epochs=20, image__backbone="v1_gabor")
    aligner.fit(images, responses)                  # (N, H, W) or (N, 1, H, W), and (N, K)
    aligner.score()                                 # retrieval on the held-out test images
    emb, maps = aligner.encode_images(new_images)   # (n, q), (n, 16, 64)
    run_dir = aligner.save()                        # a run folder the dashboard lists
    same = Aligner.load(run_dir)

Settings: `preset` (one of `neuroalign.config.PRESETS`) and overrides of its `TrainConfig` fields,
named as the field (`epochs`, `batch_size`, `max_seconds`, ...) or, inside a section,
`section__field` (scikit-learn's nested-parameter convention: `image__backbone`, `neural__kind`,
`loss__temperature`, `optim__image_lr`, `data__normaliser`). The constructor only stores them
(`get_params`/`set_params`, so `sklearn.base.clone` works); `fit` builds the config by the CLI's
rules (`preset_label`, `with_compatible_init`, and `with_image_model_layer` when `image__backbone`
is given) and validates it. Non-config settings: `runs_dir`
(fit trains into a new run folder there, live on the dashboard's Runs page; None: in memory until
`save`), `cache_dir` (backbone-feature cache) and `verbose` (a progress line on stderr).

Fitting is the one engine the CLI and the dashboard's worker use too (`training.pipeline.train_subject`,
which `run_training` calls): a `Subject` built in memory, the `Trainer` with the same split by image
identity and normaliser fitted on the training rows, the best epoch restored, then the evaluation on
the untouched test split (baselines only on request: `score(baselines=True)`). Fitted attributes end in `_`: `config_`, `split_`, `normaliser_`,
`results_`, `image_choice_`, `history_`, `run_dir_`, `n_neurons_`, `image_shape_`,
`embedding_dim_`, `subject_name_`, `trainer_` (None after `load`).

Embeddings: with the readout image head and the linear neural tower (the recommended preset) both
towers embed into `n_components` shared dimensions and their 16x64 maps are those embeddings drawn
through one orthonormal basis; other towers have no such vector, so the embedding is the flattened
map (1024 dimensions). Either way the cosine (centred when the config says so) of two embeddings is
the similarity the model was trained and scored with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from neuroalign.config import (PRESETS, RENAMED_PATHS, TrainConfig, preset as make_preset, preset_label, with_compatible_init,
                               with_image_model_layer)
from neuroalign.data import Normaliser, Subject
from neuroalign.data.subject import scale_images
from neuroalign.data.trainable import check_trainable_responses, check_trainable_shape
from neuroalign.evaluation.evaluate import N_WAY, N_WAY_DRAWS
from neuroalign.evaluation.retrieval import n_way_metrics, retrieval_metrics
from neuroalign.io_utils import atomic_torch_save, atomic_write_json
from neuroalign.models import CombinedLoss, ImageTower, build_neural_tower, similarity_matrix
from neuroalign.models.feature_cache import compute_features
from neuroalign.models.linear_tower import LinearNeuralTower
from neuroalign.progress import ProgressLine, format_seconds
from neuroalign.training import runs as runs_io
from neuroalign.training import state as state_io
from neuroalign.training.device import resolve_device
from neuroalign.training.pipeline import IN_MEMORY, save_loss_curves, train_subject, write_final_status
from neuroalign.training.run_eval import evaluate_trainer

__all__ = ["Aligner", "Encoded", "as_subject", "override_paths"]

logger = logging.getLogger(__name__)

#: the estimator's settings that are not TrainConfig fields
CONTROL_PARAMS = ("runs_dir", "cache_dir", "verbose")
ENCODE_BATCH = 256


class Encoded(NamedTuple):
    """What `encode_images` / `encode_responses` return: `embeddings (n, q)` float32 in the shared
    space and `maps (n, 16, 64)` float32 (the towers' maps, as on the Feature maps page)."""

    embeddings: np.ndarray
    maps: np.ndarray


# ---- settings ---------------------------------------------------------------------------------

def override_paths() -> dict[str, str]:
    """Every override name -> its dotted `TrainConfig` path: top-level fields by their name
    (`epochs`), section fields as `section__field` (`image__backbone` -> `image.backbone`)."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name == "preset":
            continue
        factory = f.default_factory
        if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory):
            for sub in dataclasses.fields(factory):
                out[f"{f.name}__{sub.name}"] = f"{f.name}.{sub.name}"
        else:
            out[f.name] = f.name
    return out


def _check_names(names) -> None:
    known = override_paths()
    for name in names:
        if name in known or name.replace("__", ".") in RENAMED_PATHS:  # an old name, e.g. neural__block
            continue
        if "." in name and name.replace(".", "__") in known:
            raise ValueError(f"Aligner setting {name!r}: write section fields as {name.replace('.', '__')} "
                             "(scikit-learn's section__field convention)")
        close = difflib.get_close_matches(name, list(known) + list(CONTROL_PARAMS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else \
            " (a TrainConfig field, e.g. epochs, or section__field, e.g. image__backbone)"
        raise ValueError(f"unknown Aligner setting {name!r}{hint}")


def _config_from_params(base: str, overrides: dict[str, Any]) -> TrainConfig:
    """The preset with the overrides on top, labelled and validated as the CLI does."""
    if base not in PRESETS:
        raise ValueError(f"Aligner preset must be one of {', '.join(PRESETS)}, got {base!r}")
    paths = override_paths()
    config = make_preset(base)
    if overrides:
        config = config.replace(**{paths.get(k, k.replace("__", ".")): v for k, v in overrides.items()})
    if "image__backbone" in overrides:  # another image model: a layer it has, as the CLI's --image-model
        config = with_image_model_layer(config, "image__stage" in overrides, "image__block" in overrides,
                                        "image__transform" in overrides)
    if "init" not in overrides:  # another tower on a preset with the closed-form start: no such start
        config = with_compatible_init(config)
    config = config.replace(preset=preset_label(config, base))
    config.validate()
    return config


def _overrides_between(base: TrainConfig, config: TrainConfig) -> dict[str, Any]:
    """The override names and values that turn `base` into `config` (preset label aside)."""
    a, b = base.to_dict(), config.to_dict()
    out: dict[str, Any] = {}
    for name, path in override_paths().items():
        section, _, field = path.partition(".")
        va = a[section][field] if field else a[section]
        vb = b[section][field] if field else b[section]
        if va != vb:
            out[name] = vb
    return out


# ---- inputs -----------------------------------------------------------------------------------

def _real(arr: np.ndarray, where: str) -> None:
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{where}: got dtype {arr.dtype}; expected real numbers")
    if arr.dtype.kind == "f" and arr.size and not bool(np.isfinite(arr).all()):
        raise ValueError(f"{where}: got NaN or infinite values in shape {tuple(arr.shape)}; expected finite numbers")


def _as_images(images: Any, where: str = "images") -> tuple[np.ndarray, str]:
    """`(N, H, W)` or `(N, 1, H, W)` real numbers -> float32 `(N, 1, H, W)` in [0, 1] (scaled by the
    import's rules: uint8 / 255, floats in [0, 1] kept, ...) and the scaling applied."""
    arr = np.asarray(images)
    _real(arr, where)
    if arr.ndim == 3:
        arr = arr[:, None]
    elif not (arr.ndim == 4 and arr.shape[1] == 1):
        raise ValueError(f"{where}: got shape {tuple(np.shape(images))}; expected (N, H, W) or (N, 1, H, W)")
    if arr.shape[0] == 0:
        raise ValueError(f"{where}: got shape {tuple(np.shape(images))}; expected at least one image")
    return scale_images(arr)


def _as_responses(responses: Any, where: str = "responses") -> np.ndarray:
    arr = np.asarray(responses)
    _real(arr, where)
    if arr.ndim != 2:
        raise ValueError(f"{where}: got shape {tuple(arr.shape)}; expected (N, K), one row per image")
    return np.ascontiguousarray(arr, dtype=np.float32)


def as_subject(images: Any, responses: Any = None, *, repeats: Any = None, name: str | None = None) -> Subject:
    """A `Subject` from arrays (images `(N, H, W)`/`(N, 1, H, W)`, responses `(N, K)`, optional repeats
    `(R, N, K)`), checked like an import: one-line ValueErrors naming the found and expected shapes.
    A `Subject` is returned as it is (then `responses` and `repeats` must be None)."""
    if isinstance(images, Subject):
        if responses is not None or repeats is not None:
            raise ValueError("fit(subject): the Subject holds its responses and repeats; pass them only with arrays")
        return images
    if responses is None:
        raise ValueError("fit(images, responses): responses missing; expected an (N, K) array or a Subject as images")
    imgs, scaling = _as_images(images)
    resp = _as_responses(responses)
    if resp.shape[0] != imgs.shape[0]:
        raise ValueError(f"responses: got shape {tuple(resp.shape)}; expected ({imgs.shape[0]}, K), one row per "
                         f"image of images {tuple(np.shape(images))}")
    reps = None
    if repeats is not None:
        reps = np.asarray(repeats)
        _real(reps, "repeats")
        if reps.ndim != 3 or reps.shape[1:] != resp.shape:
            raise ValueError(f"repeats: got shape {tuple(reps.shape)}; expected (R, {resp.shape[0]}, {resp.shape[1]}) "
                             f"matching responses {tuple(resp.shape)}")
        reps = np.ascontiguousarray(reps, dtype=np.float32)
    label = name or "arrays"
    check_trainable_shape(label, imgs.shape[0], imgs.shape[2:])
    check_trainable_responses(label, resp)
    meta = {"format": "arrays", "images_shape_original": list(np.shape(images)),
            "images_dtype": str(np.asarray(images).dtype), "responses_shape_original": list(resp.shape),
            "image_scaling": scaling, "n_images": int(imgs.shape[0]), "n_neurons": int(resp.shape[1]),
            "has_repeats": reps is not None, "simulated": False}
    return Subject(name=label, images=imgs, responses=resp, repeats=reps, meta=meta)


def _check_split(split: Any, n: int) -> dict[str, np.ndarray]:
    if not isinstance(split, dict) or not all(k in split for k in ("train", "val", "test")):
        raise ValueError("split: expected a dict with 'train', 'val' and 'test' index arrays "
                         f"(e.g. neuroalign.data.split_indices({n})), got {type(split).__name__}")
    out = {}
    for key in ("train", "val", "test"):
        idx = np.asarray(split[key])
        if idx.ndim != 1 or idx.dtype.kind not in "iu" or (idx.size and (idx.min() < 0 or idx.max() >= n)):
            raise ValueError(f"split[{key!r}]: expected 1-D integer indices in 0..{n - 1}, got shape "
                             f"{tuple(idx.shape)} {idx.dtype}")
        out[key] = np.sort(idx.astype(np.int64))
    return out


# ---- the estimator ----------------------------------------------------------------------------

class Aligner:
    """Align images and population responses in a shared space (see the module docstring)."""

    def __init__(self, preset: str = "recommended", *, runs_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, verbose: bool = True, **overrides: Any) -> None:
        _check_names(overrides)
        self.preset = preset
        self.runs_dir = runs_dir
        self.cache_dir = cache_dir
        self.verbose = verbose
        self._overrides = dict(overrides)

    # ---- parameters (scikit-learn) ------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"preset": self.preset, "runs_dir": self.runs_dir, "cache_dir": self.cache_dir,
                "verbose": self.verbose, **self._overrides}

    def set_params(self, **params: Any) -> "Aligner":
        _check_names(k for k in params if k != "preset" and k not in CONTROL_PARAMS)
        for key, value in params.items():
            if key == "preset" or key in CONTROL_PARAMS:
                setattr(self, key, value)
            else:
                self._overrides[key] = value
        return self

    def __repr__(self) -> str:
        parts = [repr(self.preset)] + [f"{k}={v!r}" for k, v in self.get_params().items()
                                        if k != "preset" and (k not in CONTROL_PARAMS or v != _DEFAULTS[k])]
        return f"Aligner({', '.join(parts)})"

    def make_config(self) -> TrainConfig:
        """The `TrainConfig` these settings give (validated; ValueError with a one-line reason)."""
        return _config_from_params(self.preset, self._overrides)

    # ---- fitting ------------------------------------------------------------------------------
    def fit(self, images: Any, responses: Any = None, *, repeats: Any = None, split: dict[str, Any] | None = None,
            callback: Callable[[str, dict[str, float]], None] | None = None, name: str | None = None) -> "Aligner":
        """Train on images `(N, H, W)`/`(N, 1, H, W)` and responses `(N, K)` (or a `Subject`); optional
        `repeats (R, N, K)` (single trials: repeat augmentation, the repeat baseline and FEVE), `split`
        (dict of train/val/test image indices; default: the honest split of the config's fractions
        and seed), `callback(event, values)` (the Trainer's "start"/"step"/"epoch" events), `name`
        (the subject's name in the run folder). Returns self."""
        subject = as_subject(images, responses, repeats=repeats, name=name)
        config = self.make_config()
        split = _check_split(split, subject.n_images) if split is not None else None
        run_dir = runs_io.new_run_dir(self.runs_dir, subject.name) if self.runs_dir is not None else None
        progress = ProgressLine(enabled=self.verbose, prefix=f"[{subject.name}] ")
        lock = runs_io.run_lock(run_dir, "train") if run_dir is not None else contextlib.nullcontext()
        try:
            with lock:  # train_subject records a failure in the run's status.json itself
                self._fit(subject, config, split, callback, run_dir, progress)
        except BaseException:
            progress.close()
            raise
        t = self.results_["test"]
        progress.close(f"done: {self.training_['stop_reason']} after epoch {self.training_['epochs_run']} "
                       f"(best {self.training_['best_epoch']}); test top-1 image->neural "
                       f"{t['image_to_neural']['top1']:.3f}, neural->image {t['neural_to_image']['top1']:.3f} "
                       f"(chance {t['chance_top1']:.3f})")
        return self

    def _fit(self, subject: Subject, config: TrainConfig, split, callback, run_dir: Path | None,
             progress: ProgressLine) -> None:
        """`pipeline.train_subject` -- the engine run_training and the dashboard's worker use -- without
        baselines (`score(baselines=True)` adds them) and without a time budget over the evaluation
        (`max_seconds` bounds the training loop); its progress on the progress line."""
        history: list[dict[str, Any]] = []
        epochs = config.epochs

        def on_event(event: str, values: dict[str, float]) -> None:
            if event in ("start", "epoch"):
                history.append({"event": event, **values})
            if event in ("step", "epoch"):
                loss = f"val loss {values['val_loss']:.3f}" if "val_loss" in values else f"loss {values['train_loss']:.3f}"
                progress.update(values.get("progress", 0.0), 1.0, f"epoch {int(values['epoch'])}/{epochs}  {loss}  "
                                f"eta {format_seconds(values.get('eta_s'))}", force=event == "epoch")
            if callback is not None:
                callback(event, values)

        extra = {"reproduce": f"neuroalign.Aligner(**estimator.params).fit(images, responses) ({self!r})",
                 "estimator": {"preset": self.preset, "overrides": _jsonable(self._overrides)}}
        subject_path = Path(subject.meta["path"]) if subject.meta.get("path") else None
        done = train_subject(subject, config, run_dir, subject_path=subject_path, split=split, cache_dir=self.cache_dir,
                             callback=on_event, on_status=progress.message, baselines=False, record_extra=extra)
        trainer, fit = done.trainer, done.fit
        self._set_model(trainer.config, trainer.image_tower, trainer.neural_tower, trainer.loss_fn, trainer.normaliser,
                        trainer.device, subject.n_neurons, subject.image_shape)
        self.trainer_ = trainer
        self.split_ = {k: np.asarray(v, dtype=np.int64) for k, v in trainer.split.items()}
        self.results_ = done.results
        self.training_ = {**done.results["training"], "train_loss_hist": list(fit.train_loss_hist),
                          "val_loss_hist": list(fit.val_loss_hist)}
        self.history_ = history
        self.image_choice_ = trainer.image_choice
        self.subject_name_ = subject.name
        self._record = done.record
        self._best = {"epoch": int(trainer.state.best_epoch), "val_loss": float(trainer.state.best_val)}
        self.run_dir_ = run_dir

    def _set_model(self, config: TrainConfig, image_tower: ImageTower, neural_tower: torch.nn.Module,
                   loss_fn: torch.nn.Module, normaliser: Normaliser, device: torch.device, n_neurons: int,
                   image_shape: tuple[int, int]) -> None:
        self.config_ = config
        self.normaliser_ = normaliser
        self.n_neurons_ = int(n_neurons)
        self.image_shape_ = (int(image_shape[0]), int(image_shape[1]))
        self._image_tower, self._neural_tower, self._loss_fn = image_tower, neural_tower, loss_fn
        self._device = device
        self._shared = config.image.head == "readout" and isinstance(neural_tower, LinearNeuralTower)
        self.embedding_dim_ = int(config.n_components) if self._shared else 16 * 64

    def _check_fitted(self) -> None:
        if not hasattr(self, "config_"):
            raise ValueError("this Aligner is not fitted yet; call fit(images, responses) or Aligner.load(run_dir) first")

    # ---- encoding -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, images: Any) -> Encoded:
        """Shared-space embeddings `(n, q)` and maps `(n, 16, 64)` of images `(n, H, W)`/`(n, 1, H, W)`
        of the size the model was fitted on (uint8 0-255 or floats in [0, 1])."""
        self._check_fitted()
        x, _ = _as_images(images)
        if tuple(x.shape[2:]) != self.image_shape_:
            raise ValueError(f"images: got shape {tuple(np.shape(images))}; expected (n, {self.image_shape_[0]}, "
                             f"{self.image_shape_[1]}) or (n, 1, {self.image_shape_[0]}, {self.image_shape_[1]}), "
                             "the image size the model was fitted on")
        tower, device = self._image_tower, self._device
        was = tower.training
        tower.eval()
        try:
            feats = compute_features(tower, x, device=device) if tower.frozen else None
            embs, maps = [], []
            for lo in range(0, len(x), ENCODE_BATCH):
                if feats is not None:
                    f = feats[lo:lo + ENCODE_BATCH].to(device)
                else:
                    f = tower.features(torch.from_numpy(x[lo:lo + ENCODE_BATCH]).to(device))
                m = tower.project(f).float()[:, 0]
                maps.append(m.cpu())
                embs.append((tower.embed(f).float() if self._shared else m.flatten(1)).cpu())
        finally:
            tower.train(was)
        return Encoded(torch.cat(embs).numpy(), torch.cat(maps).numpy())

    @torch.no_grad()
    def encode_responses(self, responses: Any) -> Encoded:
        """Shared-space embeddings `(n, q)` and maps `(n, 16, 64)` of population responses `(n, K)` (the
        K neurons the model was fitted on, in the same order, unnormalised: the fitted normaliser is
        applied)."""
        self._check_fitted()
        r = _as_responses(responses)
        if r.shape[1] != self.n_neurons_:
            raise ValueError(f"responses: got shape {tuple(r.shape)}; expected (n, {self.n_neurons_}), the "
                             f"{self.n_neurons_} neurons the model was fitted on")
        tower = self._neural_tower
        was = tower.training
        tower.eval()
        try:
            embs, maps = [], []
            for lo in range(0, len(r), ENCODE_BATCH):
                x = torch.from_numpy(self.normaliser_.transform(r[lo:lo + ENCODE_BATCH])).to(self._device)
                m = tower(x).float()[:, 0]
                maps.append(m.cpu())
                embs.append((tower.embed(x).float() if self._shared else m.flatten(1)).cpu())
        finally:
            tower.train(was)
        return Encoded(torch.cat(embs).numpy(), torch.cat(maps).numpy())

    # ---- scoring ------------------------------------------------------------------------------
    def score(self, images: Any = None, responses: Any = None, *, baselines: bool = False) -> dict[str, Any]:
        """Retrieval metrics (`image_to_neural` and `neural_to_image`: top1, top5, top10, mrr, ranks,
        top1_ci; `n`, chance levels; `n_way_300` from 300 items on).

        Without data: the fitted run's held-out TEST images (as in results.json); `baselines=True`
        adds `baselines` (ridge from pixels, random and backbone features, repeat decoder, oracle)
        and `comparison`, computing them once (and updating results.json of a saved run). With
        `images (n, ...)` and their `responses (n, K)`: retrieval among those n new pairs."""
        self._check_fitted()
        if images is None and responses is None:
            return self._score_test(baselines)
        if images is None or responses is None:
            raise ValueError("score(images, responses): give both (new pairs) or neither (the fitted test split)")
        if baselines:
            raise ValueError("score(images, responses, baselines=True): baselines are fitted on the training split; "
                             "call score(baselines=True) without data")
        img = self.encode_images(images).maps
        neu = self.encode_responses(responses).maps
        if len(img) != len(neu):
            raise ValueError(f"score: got {len(img)} images and {len(neu)} response rows; expected one row per image")
        if len(img) < 2:
            raise ValueError(f"score: got {len(img)} pair; expected at least 2 to rank")
        sim = similarity_matrix(torch.from_numpy(img), torch.from_numpy(neu),
                                center=self.config_.loss.center).numpy().astype(np.float64)
        metrics = retrieval_metrics(sim)
        nway = n_way_metrics(sim, n_way=N_WAY, draws=N_WAY_DRAWS, seed=0)
        if nway is not None:
            metrics[f"n_way_{N_WAY}"] = nway
        return metrics

    def _score_test(self, baselines: bool) -> dict[str, Any]:
        if baselines and "baselines" not in self.results_:
            trainer = self.trainer_ if self.trainer_ is not None else self._rebuild_trainer()
            lock = runs_io.run_lock(self.run_dir_, "evaluate") if self.run_dir_ is not None else contextlib.nullcontext()
            with lock:
                subject_path = None if self._record["subject"]["path"] == IN_MEMORY else self._record["subject"]["path"]
                self.results_ = evaluate_trainer(trainer, run_dir=self.run_dir_, subject_path=subject_path,
                                                 training=self.results_.get("training"), baselines=True)
        out = dict(self.results_["test"])
        if baselines:
            out["baselines"] = self.results_["baselines"]
            if "comparison" in self.results_:
                out["comparison"] = self.results_["comparison"]
        return out

    def _rebuild_trainer(self):
        """A loaded run's Trainer from its subject folder (for baselines); ValueError when its data is gone."""
        from neuroalign.training.rebuild import rebuild_trainer

        if self._record["subject"]["path"] == IN_MEMORY:
            raise ValueError(f"the data run {self.run_dir_} was fitted on was given as arrays and is not stored; "
                             "baselines need it: fit again, or score(images, responses) on new pairs")
        trainer, _ = rebuild_trainer(runs_io.load_run(self.run_dir_), cache_dir=self.cache_dir)
        trainer.load_model_state(state_io.model_state(self._holder()))
        self.trainer_ = trainer
        return trainer

    def _holder(self):
        from types import SimpleNamespace

        return SimpleNamespace(image_tower=self._image_tower, neural_tower=self._neural_tower, loss_fn=self._loss_fn)

    # ---- run folders --------------------------------------------------------------------------
    def _finish_run_dir(self, run_dir: Path) -> None:
        """The files `save` writes after the evaluation: loss_data.mat and the final status."""
        hist = self.training_
        save_loss_curves(run_dir, hist["train_loss_hist"], hist["val_loss_hist"])
        write_final_status(run_dir, hist, self.results_)

    def save(self, run_dir: str | Path | None = None) -> Path:
        """Write the fitted model as a run folder the dashboard reads (config.json, split.json,
        normaliser.json, best.pt, metrics.jsonl, results.json, test_outputs.npz, test_result.mat,
        loss_data.mat, status.json). `run_dir`: a new or empty folder; None: a new folder under
        `runs_dir` (or `neuroalign.paths.runs_dir()`, the dashboard's default). Returns the folder."""
        self._check_fitted()
        if run_dir is None:
            from neuroalign.paths import runs_dir as default_runs_dir

            run_dir = runs_io.new_run_dir(default_runs_dir(self.runs_dir), self.subject_name_)
        run_dir = Path(run_dir).expanduser().resolve()
        if self.run_dir_ is not None and run_dir == Path(self.run_dir_).resolve():
            return run_dir  # already written (fit with runs_dir, or saved before)
        if run_dir.exists() and (not run_dir.is_dir() or any(p.name != runs_io.LOCK_FILE for p in run_dir.iterdir())):
            raise FileExistsError(f"{run_dir} exists and is not an empty folder; expected a new folder for the run "
                                  "(or save() for a new one under the runs folder)")
        run_dir.mkdir(parents=True, exist_ok=True)
        with runs_io.run_lock(run_dir, "save"):
            if self.trainer_ is None:
                self._copy_run(run_dir)
            else:
                self._write_run(run_dir)
        self.run_dir_ = run_dir
        return run_dir

    def _write_run(self, run_dir: Path) -> None:
        record = dict(self._record, created=runs_io._utc_now())
        atomic_write_json(run_dir / runs_io.CONFIG_FILE, record)
        runs_io.write_split(run_dir, self.split_)
        atomic_write_json(run_dir / runs_io.NORMALISER_FILE, self.normaliser_.state_dict())
        atomic_torch_save(run_dir / runs_io.BEST_CKPT, {"model": state_io.model_state(self._holder()), **self._best})
        for item in self.history_:
            runs_io.append_metrics(run_dir, item)
        subject_path = None if record["subject"]["path"] == IN_MEMORY else record["subject"]["path"]
        # the same numbers again (deterministic), now with the files the dashboard's pages read
        self.results_ = evaluate_trainer(self.trainer_, run_dir=run_dir, subject_path=subject_path,
                                         training=self.results_.get("training"), baselines="baselines" in self.results_)
        self._finish_run_dir(run_dir)

    def _copy_run(self, run_dir: Path) -> None:
        """A loaded run saved elsewhere: its files copied (last.pt and the lock stay behind)."""
        source = Path(self.run_dir_)
        for name in (runs_io.CONFIG_FILE, runs_io.SPLIT_FILE, runs_io.NORMALISER_FILE, runs_io.BEST_CKPT,
                     runs_io.METRICS_FILE, runs_io.RESULTS_FILE, runs_io.TEST_OUTPUTS, runs_io.TEST_MAT,
                     runs_io.LOSS_MAT, runs_io.STATUS_FILE):
            if (source / name).is_file():
                shutil.copy2(source / name, run_dir / name)

    @classmethod
    def load(cls, run_dir: str | Path, *, device: str | None = None, cache_dir: str | Path | None = None,
             verbose: bool = True) -> "Aligner":
        """A fitted Aligner from a run folder (one written by `save`, by `fit(runs_dir=...)`, by the CLI or
        by the dashboard): its config, normaliser, split, best.pt weights and results. `device`
        overrides the recorded one ("cpu", "cuda")."""
        record = runs_io.load_run(run_dir)
        config = record.train_config()
        subject = record.config.get("subject") or {}
        if not isinstance(subject.get("n_neurons"), int) or not isinstance(subject.get("image_shape"), list):
            raise ValueError(f"{record.path / runs_io.CONFIG_FILE} lacks subject.n_neurons or subject.image_shape; "
                             "expected a run folder written by neuroalign")
        best = runs_io.load_checkpoint(record.path / runs_io.BEST_CKPT)
        norm_state = runs_io.read_json_file(record.path / runs_io.NORMALISER_FILE)
        if norm_state is None:
            raise FileNotFoundError(f"{record.path / runs_io.NORMALISER_FILE} not found; the run cannot encode responses")
        estimator = record.config.get("estimator") or {}
        if isinstance(estimator.get("overrides"), dict) and estimator.get("preset") in PRESETS:
            base, overrides = estimator["preset"], dict(estimator["overrides"])
        else:
            base = config.preset if config.preset in PRESETS else "recommended"
            overrides = _overrides_between(make_preset(base), config)
        self = cls(base, cache_dir=cache_dir, verbose=verbose, **overrides)
        torch_device = resolve_device(device or config.device)
        # every backbone tensor is in best.pt: no weights file is needed any more
        image_tower = ImageTower.from_config(dataclasses.replace(config.image, weights=None),
                                             n_components=config.n_components)
        neural_tower = build_neural_tower(subject["n_neurons"], config.neural, config.n_components)
        loss_fn = CombinedLoss(config.loss)
        self._set_model(config, image_tower, neural_tower, loss_fn, Normaliser.from_state_dict(norm_state),
                        torch_device, subject["n_neurons"], tuple(subject["image_shape"]))
        try:
            state_io.load_model_state(self._holder(), best["model"])
        except (RuntimeError, KeyError) as exc:
            raise ValueError(f"{record.path / runs_io.BEST_CKPT} does not fit the run's config: "
                             f"{' '.join(str(exc).split())[:200]}") from None
        for module in (image_tower, neural_tower, loss_fn):
            module.to(torch_device)
        self.trainer_ = None
        self.split_ = record.split
        self.results_ = record.results or {}
        self.training_ = dict(self.results_.get("training") or {})
        self.history_ = [m for m in record.metrics() if m.get("event") in ("start", "epoch")]
        self.image_choice_ = record.config.get("image_choice")
        self.subject_name_ = str(subject.get("name", "subject"))
        self._record = record.config
        self._best = {"epoch": int(best["epoch"]), "val_loss": float(best["val_loss"])}
        self.run_dir_ = record.path
        return self


_DEFAULTS = {"runs_dir": None, "cache_dir": None, "verbose": True}


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out
