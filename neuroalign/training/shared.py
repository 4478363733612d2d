"""Several subjects, one model: a shared image side and one linear read-in per subject, in closed form.

The shared model (`SharedModel`) has

* one image side for every subject: the frozen features of one image model (pooled to the readout
  grid, as the single-subject readout tower reads them), standardised with the statistics of the
  pooled TRAIN images, and one linear readout `image_weight (q, D)` into a q-dimensional shared space;
* one read-in per subject (`ReadIn`): its own normaliser fitted on its own train images (any neuron
  count) and a linear map `(K_s -> q)` from its normalised responses into the same space.

Fit (`fit_shared`), generalising `linear_start` to several subjects:

1. Every subject's responses are predicted from the shared features by dual-form ridge fitted on its
   own train images, at every pooled image (also images it never saw); the predictions are reduced
   to their top-q right singular directions (the subject's *predictable subspace*) and scaled to unit
   total train variance, so a subject with 10x the neurons does not outweigh the others.
2. The subjects' reduced predictions are stacked side by side and the top q left singular directions
   on the pooled train images are the shared image embedding (optionally whitened per dimension).
   It is linear in the features: `image_weight` is formed without any D x K matrix.
3. Each subject's read-in is fitted on its own train images only (`fit_readin`): either the
   reduced-rank inverse of a ridge *encoder* from the q shared dimensions to its neurons (few
   parameters: works from a hundred images), or a dual-form ridge *decoder* from its responses to
   the shared embedding; the kind, strength and rank are chosen on that subject's val images.
4. With repeats, each subject's responses have their population-mean direction damped by its share
   of that subject's trial-to-trial noise before steps 1-3, as in a single-subject start
   (`linear_start.population_shrink`, module docstring step 5): a shared gain or arousal fluctuation
   no image predicts. The read-in's weights absorb the linear map, so a read-in still takes the raw
   responses; its report keeps `population_shrink` and `population_noise_share`.

The ridge strength `alpha`, the shared rank `q` and the whitening are chosen on the pooled val MRR
(mean over subjects of both retrieval directions, cosine similarity, ties: top-1). Test images take
no part. Splits are by image identity and shared across subjects (`neuroalign.data.shared_split`).

`adapt(model, name, features, responses, split)` fits only a new subject's read-in (the shared
arrays are neither copied nor written: they stay bit-identical), in seconds on a CPU.

No contrastive fine-tuning follows (the single-subject default's restored epoch is almost always the
closed-form start itself); retrieval negatives would come from one subject only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from neuroalign.data.splits import Normaliser
from neuroalign.io_utils import atomic_savez, atomic_write_json
from neuroalign.linalg import eigh, standardised_gram, standardised_t_product, standardiser
from neuroalign.training.linear_start import _cosine_key, _damp_population, train_population

logger = logging.getLogger(__name__)

ALPHAS = tuple(float(a) for a in np.logspace(-4, 0, 5))
RANKS = (8, 16, 32, 64, 128, 256)
WHITEN = (0.0, 0.5, 1.0)
READIN_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0)  # encoder ridge (relative to the largest eigenvalue)
READIN_BETAS = (1e-2, 1e-1, 1.0, 10.0)  # decoder ridge (relative to the mean eigenvalue)
# while choosing alpha / rank / whitening, each read-in is scored with this smaller grid (the final
# read-ins use the full one): the choice of the shared space needs a fair read-in, not the best one
SELECT_READIN = {"alphas": (1e-2,), "betas": (0.1, 1.0), "ranks": (), "whiten": (0.0, 1.0)}
MODEL_NPZ = "shared_model.npz"
MODEL_JSON = "shared_model.json"


# ---------------------------------------------------------------------------------------------
# the model


@dataclass
class ReadIn:
    """One subject's read-in: `embedding = (normaliser(r) - centre) @ weight + offset`."""

    normaliser: Normaliser
    weight: np.ndarray  # (K, q)
    centre: np.ndarray  # (K,) mean normalised train response
    offset: np.ndarray  # (q,) mean shared embedding of the subject's train images
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def n_neurons(self) -> int:
        return int(self.weight.shape[0])

    def embed(self, responses: np.ndarray) -> np.ndarray:
        """Raw responses `(n, K)` (as stored) -> shared-space embeddings `(n, q)`."""
        r = np.asarray(responses)
        if r.ndim != 2 or r.shape[1] != self.n_neurons:
            raise ValueError(f"this read-in takes responses (n, {self.n_neurons}), got shape {r.shape}")
        y = self.normaliser.transform(r).astype(np.float64)
        return (y - self.centre) @ self.weight + self.offset


@dataclass
class SharedModel:
    """The shared image side (`image`: how its features are computed; `feat_mean`, `feat_scale`,
    `image_weight (q, D)`) and the per-subject read-ins; `split_rule` is the hash rule of the splits."""

    image: dict[str, Any]
    feat_mean: np.ndarray
    feat_scale: np.ndarray
    image_weight: np.ndarray
    readins: dict[str, ReadIn]
    split_rule: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return int(self.image_weight.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.image_weight.shape[1])

    def embed_features(self, features: np.ndarray) -> np.ndarray:
        """Image features `(n, D)` (or `(n, C, h, w)`) -> shared-space embeddings `(n, q)`."""
        x = np.asarray(features).reshape(len(features), -1)
        if x.shape[1] != self.n_features:
            raise ValueError(f"the shared image side reads {self.n_features} features per image, got {x.shape[1]} "
                             f"(images of another size than the shared run's {self.image.get('image_shape')}?)")
        return ((x.astype(np.float64) - self.feat_mean) / self.feat_scale) @ self.image_weight.T

    def readin(self, name: str) -> ReadIn:
        if name not in self.readins:
            raise ValueError(f"subject {name!r} has no read-in in this shared model; expected one of "
                             f"{', '.join(self.readins)}")
        return self.readins[name]

    def embed_responses(self, name: str, responses: np.ndarray) -> np.ndarray:
        return self.readin(name).embed(responses)

    def shared_fingerprint(self) -> str:
        """sha256 of the shared parts (image settings, standardiser, readout): equal before and after
        an adaptation."""
        h = hashlib.sha256(json.dumps(self.image, sort_keys=True, default=str).encode())
        for a in (self.feat_mean, self.feat_scale, self.image_weight):
            a = np.ascontiguousarray(a)
            h.update(str((a.shape, a.dtype)).encode())
            h.update(memoryview(a).cast("B"))
        return h.hexdigest()

    # ---- files -------------------------------------------------------------------------
    def save(self, folder: str | Path, subjects: Sequence[str] | None = None) -> None:
        """`shared_model.npz` (arrays) and `shared_model.json` (settings) in `folder`; only the
        read-ins of `subjects` when given (an adapted run stores its own read-in, not the others')."""
        folder = Path(folder)
        names = list(self.readins) if subjects is None else list(subjects)
        arrays: dict[str, np.ndarray] = {"feat_mean": self.feat_mean, "feat_scale": self.feat_scale,
                                         "image_weight": self.image_weight}
        meta_readins = []
        for i, name in enumerate(names):
            ri = self.readin(name)
            arrays.update({f"readin{i}_weight": ri.weight, f"readin{i}_centre": ri.centre,
                           f"readin{i}_offset": ri.offset, f"readin{i}_norm_offset": ri.normaliser.offset,
                           f"readin{i}_norm_scale": ri.normaliser.scale})
            meta_readins.append({"name": name, "normaliser": ri.normaliser.kind, "report": ri.report})
        atomic_savez(folder / MODEL_NPZ, **arrays)
        atomic_write_json(folder / MODEL_JSON, {"image": self.image, "split_rule": self.split_rule,
                                                "readins": meta_readins, "report": self.report,
                                                "shared_fingerprint": self.shared_fingerprint()})

    @classmethod
    def load(cls, folder: str | Path) -> "SharedModel":
        """The model saved in `folder`; one-line errors when its files are missing or do not agree."""
        folder = Path(folder)
        npz, js = folder / MODEL_NPZ, folder / MODEL_JSON
        for p in (npz, js):
            if not p.is_file():
                raise FileNotFoundError(f"{p} not found; expected a shared run (train --shared) with {MODEL_NPZ} "
                                        f"and {MODEL_JSON}")
        try:
            meta = json.loads(js.read_text(encoding="utf-8"))
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            readins = {}
            for i, r in enumerate(meta["readins"]):
                norm = Normaliser(r["normaliser"])
                norm.offset, norm.scale = arrays[f"readin{i}_norm_offset"], arrays[f"readin{i}_norm_scale"]
                readins[r["name"]] = ReadIn(norm, arrays[f"readin{i}_weight"], arrays[f"readin{i}_centre"],
                                            arrays[f"readin{i}_offset"], r.get("report") or {})
            model = cls(meta["image"], arrays["feat_mean"], arrays["feat_scale"], arrays["image_weight"], readins,
                        meta["split_rule"], meta.get("report") or {})
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(f"{folder} holds a damaged shared model ({type(exc).__name__}: {exc}); expected the "
                             f"files train --shared writes") from None
        want = meta.get("shared_fingerprint")
        if want and model.shared_fingerprint() != want:
            raise ValueError(f"{npz} does not match {js} (shared fingerprint {model.shared_fingerprint()[:12]}, "
                             f"recorded {str(want)[:12]}); expected the files of one run")
        return model


# ---------------------------------------------------------------------------------------------
# read-ins


def _centred(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = y.mean(axis=0)
    return y - m, m


class ReadinProblem:
    """One subject's normalised train/val responses with the response-side factorisations that do not
    depend on the shared embedding, so `fit` can be called for many candidate embeddings cheaply."""

    def __init__(self, y_tr: np.ndarray, y_va: np.ndarray) -> None:
        y_tr, y_va = np.asarray(y_tr, np.float64), np.asarray(y_va, np.float64)
        self.yc, self.y_mean = _centred(y_tr)
        self.yv = y_va - self.y_mean
        e, v = eigh(self.yc @ self.yc.T)
        self.e, self.v = np.maximum(e, 0.0), v
        self.yv_dual = (self.yv @ self.yc.T) @ v  # val responses in the train responses' dual basis
        self.mean_e = max(float(self.e.mean()), 1e-300)

    def fit(self, z_tr: np.ndarray, z_va: np.ndarray, alphas: Sequence[float] = READIN_ALPHAS,
            betas: Sequence[float] = READIN_BETAS, ranks: Sequence[int] = RANKS, with_weight: bool = True,
            whiten: Sequence[float] = (0.0, 0.5, 1.0)) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, dict[str, Any]]:
        """`fit_readin` on these responses (see there); `with_weight=False` only scores (weight None)."""
        z_tr, z_va = np.asarray(z_tr, np.float64), np.asarray(z_va, np.float64)
        yc, yv = self.yc, self.yv
        n, k = yc.shape
        q = z_tr.shape[1]
        zc, z_mean = _centred(z_tr)
        best: tuple[tuple[float, float], Callable[[], np.ndarray], dict[str, Any]] | None = None

        z_sd = np.maximum(zc.std(axis=0), 1e-12)

        def consider(val_embedding: np.ndarray, train_embedding: np.ndarray, make_weight: Callable[[], np.ndarray],
                     info: dict[str, Any]) -> None:
            # a regression shrinks poorly predicted dimensions: optionally give each its train spread back
            # (exponent p of z's sd over the embedding's sd), as linear_start whitens each side
            ratio = z_sd / np.maximum(train_embedding.std(axis=0), 1e-12)
            nonlocal best
            for p in whiten:
                scale = ratio**p
                key = _cosine_key(z_va, val_embedding * scale + z_mean)
                if best is None or key > best[0]:
                    best = (key, lambda mw=make_weight, sc=scale: mw() * sc,
                            {**info, "rescale": float(p), "val_mrr_mean": key[0], "val_top1_mean": key[1]})

        # encoder: zc = Uz Sz Vz^T; ridge prediction of yc in Uz coordinates; its right singular vectors Q
        uz, sz, _ = np.linalg.svd(zc, full_matrices=False)
        keep = sz > 1e-10 * max(float(sz.max(initial=0.0)), 1e-300)
        uz, sz = uz[:, keep], sz[keep]
        uty = uz.T @ yc  # (r, K)
        for a_rel in alphas:
            a = a_rel * float(sz.max() ** 2)
            h = ((sz**2) / (sz**2 + a))[:, None] * uty
            ev, evec = eigh(h @ h.T)  # right singular vectors of h through its small Gram matrix
            ev, evec = ev[::-1], evec[:, ::-1]
            good = ev > 1e-12 * max(float(ev.max(initial=0.0)), 1e-300)
            qt = (evec[:, good].T @ h) / np.sqrt(ev[good])[:, None]  # (r, K), orthonormal rows
            proj_all, val_all = yc @ qt.T, yv @ qt.T
            for r in sorted({min(int(x), len(qt)) for x in ranks} | {len(qt)}):
                if r < 1:
                    continue
                proj = proj_all[:, :r]
                gram = proj.T @ proj
                lam = 1e-6 * max(float(np.trace(gram)) / r, 1e-300)
                lmat = np.linalg.solve(gram + lam * np.eye(r), proj.T @ zc)  # (r, q)
                consider(val_all[:, :r] @ lmat, proj @ lmat, lambda qt=qt, r=r, lmat=lmat: qt[:r].T @ lmat,
                         {"kind": "encoder", "alpha_relative": float(a_rel), "rank": int(r)})
        # decoder: W = yc^T V diag(1/(e+beta)) V^T zc
        vtz = self.v.T @ zc
        for b_rel in betas:
            coef = vtz / (self.e + b_rel * self.mean_e)[:, None]
            consider(self.yv_dual @ coef, self.v @ (self.e[:, None] * coef), lambda coef=coef: yc.T @ (self.v @ coef),
                     {"kind": "decoder", "beta_relative": float(b_rel)})
        assert best is not None
        _, make_weight, info = best
        info.update({"n_train": int(n), "n_neurons": int(k), "n_components": int(q)})
        return (make_weight() if with_weight else None), self.y_mean, z_mean, info


def fit_readin(z_tr: np.ndarray, y_tr: np.ndarray, z_va: np.ndarray, y_va: np.ndarray,
               alphas: Sequence[float] = READIN_ALPHAS, betas: Sequence[float] = READIN_BETAS,
               ranks: Sequence[int] = RANKS) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """One subject's read-in from its normalised responses `y (n, K)` to the shared embeddings `z (n, q)`
    of the same images; train rows fit, val rows choose. Candidates (module docstring):

    * "encoder": ridge `z -> y` (strength `alpha` relative to the largest eigenvalue of z's Gram), the
      top-r right singular directions Q of its train prediction, then least squares `y Q -> z`;
    * "decoder": dual-form ridge `y -> z` (strength `beta` relative to the mean eigenvalue of y's Gram).

    Returns `(weight (K, q), centre (K,), offset (q,), report)`, chosen by val MRR (ties: top-1)."""
    return ReadinProblem(y_tr, y_va).fit(z_tr, z_va, alphas, betas, ranks)


def make_readin(z: np.ndarray, raw_responses: np.ndarray, split: Mapping[str, np.ndarray],
                normaliser_kind: str = "zscore", repeats: np.ndarray | None = None,
                population: dict[str, float] | None = None) -> ReadIn:
    """A subject's read-in: its normaliser fitted on its train rows, `fit_readin` on train, chosen on val.
    `z (N, q)`: the shared embeddings of its N images; `raw_responses (N, K)` as stored; `repeats
    (R, N, K)` (optional, as stored): the population-mean direction is damped by its share of the
    train images' trial-to-trial noise (module docstring, step 4), folded into the weights; `population`:
    that estimate (`linear_start.train_population`) when the caller has made it already."""
    tr, va = (np.asarray(split[s], dtype=np.int64) for s in ("train", "val"))
    norm = Normaliser(normaliser_kind).fit(np.asarray(raw_responses)[tr])
    y = norm.transform(raw_responses).astype(np.float64)
    if population is None:
        population = train_population(norm, repeats, tr)
    shrink = 1.0 if population is None else float(population["shrink"])
    damped = _damp_population(y, shrink)
    weight, _, offset, info = fit_readin(z[tr], damped[tr], z[va], damped[va])
    # (y' - mean y'_tr) W with y' = y D, D = I - (1 - c) 1 1^T / K symmetric: = (y - mean y_tr) (D W)
    weight = weight - (1.0 - shrink) * weight.mean(axis=0, keepdims=True)
    info.update({"population_shrink": shrink,
                 "population_noise_share": None if population is None else float(population["share"])})
    return ReadIn(norm, weight, y[tr].mean(axis=0), offset, info)


# ---------------------------------------------------------------------------------------------
# the shared fit


@dataclass
class _SubjectSolve:
    rows_tr: np.ndarray  # union rows of its train images
    rows_va: np.ndarray
    s2: np.ndarray
    u: np.ndarray  # (n_s, r)
    ku_all: np.ndarray  # (n_all, r): Gram of all images against its train images, in its basis
    m: np.ndarray  # (r, K) U^T y_train (centred)
    mmt: np.ndarray
    y_tr: np.ndarray
    y_va: np.ndarray
    readin: ReadinProblem | None = None


def fit_shared(features: np.ndarray, responses: Mapping[str, np.ndarray], rows: Mapping[str, np.ndarray],
               splits: Mapping[str, Mapping[str, np.ndarray]], n_components: int = 256,
               alphas: Sequence[float] = ALPHAS, ranks: Sequence[int] = RANKS, whiten: Sequence[float] = WHITEN,
               status: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The closed-form shared fit (module docstring).

    `features (n_all, D)`: one row per distinct image of all subjects; `responses[name] (N_s, K_s)`:
    normalised (train statistics); `rows[name] (N_s,)`: each of its images' row in `features`;
    `splits[name]`: its train/val/test indices (shared by image identity). Returns a dict with
    `feat_mean`, `feat_scale`, `image_weight (q, D)`, `z_all (n_all, q)` and `report`."""
    t0 = time.monotonic()
    names = list(responses)
    if not names:
        raise ValueError("a shared fit needs at least one subject, got none")
    x = np.asarray(features).reshape(len(features), -1)
    train_rows = np.unique(np.concatenate([rows[n][splits[n]["train"]] for n in names]))
    mean, scale = standardiser(x, rows=train_rows)
    if status:
        status(f"shared fit: Gram matrix of {len(x):,} images x {x.shape[1]:,} features")
    g = standardised_gram(x, mean, scale)  # (n_all, n_all), no standardised copy of the features
    solves: dict[str, _SubjectSolve] = {}
    for name in names:
        tr, va = splits[name]["train"], splits[name]["val"]
        r_tr, r_va = rows[name][tr], rows[name][va]
        y = np.asarray(responses[name], dtype=np.float64)
        y_tr, y_va = y[tr], y[va]
        yc = y_tr - y_tr.mean(axis=0)
        s2, u = eigh(g[np.ix_(r_tr, r_tr)])
        keep = s2 > 1e-10 * max(float(s2.max()), 1e-300)
        s2, u = s2[keep][::-1], u[:, keep][:, ::-1]
        if len(s2) == 0:
            raise ValueError(f"{name}: the image features are constant across its training images; expected "
                             "features that vary between images")
        m = u.T @ yc
        solves[name] = _SubjectSolve(r_tr, r_va, s2, u, g[:, r_tr] @ u, m, m @ m.T, y_tr, y_va,
                                     ReadinProblem(y_tr, y_va))
    # each subject keeps at most its own rank (neurons, train images); the shared space at most the sum
    caps = {n: int(min(n_components, len(s.s2), s.m.shape[1])) for n, s in solves.items()}
    q_cap = int(min(n_components, sum(caps.values()), len(train_rows)))
    rank_grid = sorted({min(int(r), q_cap) for r in ranks if r >= 1} | {q_cap})
    best: tuple[tuple[float, float], dict[str, Any]] | None = None
    for a_i, alpha_rel in enumerate(alphas):
        if status:
            status(f"shared fit: ridge strength {a_i + 1}/{len(alphas)}")
        blocks, block_info = [], []
        for name in names:
            s = solves[name]
            alpha = alpha_rel * float(s.s2.max())
            gsh = s.s2 / (s.s2 + alpha)
            sig2, e = eigh(gsh[:, None] * s.mmt * gsh[None, :], top=caps[name])
            sig2, e = np.maximum(sig2[::-1], 1e-300), e[:, ::-1]
            sig = np.sqrt(sig2)
            qmat = ((gsh[:, None] * s.m).T @ e) / sig  # (K, q_cap)
            coef = (s.m @ qmat) / (s.s2 + alpha)[:, None]  # (r, q_cap): predictions = ku_all @ coef
            block_info.append((coef, sig))
            blocks.append(s.ku_all @ coef)
        for q in rank_grid:
            cols, pieces = [], []
            for (coef, sig), blk, name in zip(block_info, blocks, names):
                c = 1.0 / np.sqrt(max(float((sig[:q] ** 2).sum()) / len(solves[name].s2), 1e-300))
                cols.append(blk[:, :q] * c)
                pieces.append((coef[:, :q] * c))
            cmat = np.concatenate(cols, axis=1)
            _, sv, vt = np.linalg.svd(cmat[train_rows], full_matrices=False)
            qq = min(q, len(sv))
            sv = np.maximum(sv[:qq], 1e-300)
            base = cmat @ vt[:qq].T  # (n_all, qq)
            train_sd = np.maximum(sv / np.sqrt(len(train_rows)), 1e-12)
            for p in whiten:
                z = base / train_sd**p
                per = {}
                for name in names:
                    s = solves[name]
                    *_, info = s.readin.fit(z[s.rows_tr], z[s.rows_va], with_weight=False, **SELECT_READIN)
                    per[name] = (info["val_mrr_mean"], info["val_top1_mean"])
                key = (float(np.mean([v[0] for v in per.values()])), float(np.mean([v[1] for v in per.values()])))
                if best is None or key > best[0]:
                    best = (key, {"alpha_relative": float(alpha_rel), "rank": int(qq), "whiten": float(p),
                                  "pieces": pieces, "vt": vt[:qq].copy(), "train_sd": train_sd, "per": per})
    assert best is not None
    key, ch = best
    # image_weight^T = Z^T C with C (n_all, q) the dual coefficients: each subject's U_s coef_s V_s on
    # its train rows, summed where subjects share images, / sd^p  (D, q): never a D x K matrix
    q = ch["rank"]
    coef = np.zeros((len(x), q))
    off = 0
    for name, piece in zip(names, ch["pieces"]):
        s = solves[name]
        width = piece.shape[1]
        coef[s.rows_tr] += s.u @ (piece @ ch["vt"][:, off:off + width].T)  # rows_tr: distinct rows
        off += width
    coef /= ch["train_sd"] ** ch["whiten"]
    wt = standardised_t_product(x, mean, scale, coef)
    z_all = g @ coef  # = Z @ wt
    report = {"alpha_relative": ch["alpha_relative"], "rank": q, "whiten": ch["whiten"],
              "val_mrr_pooled": key[0], "val_top1_pooled": key[1],
              "val_per_subject": {n: {"val_mrr_mean": v[0], "val_top1_mean": v[1]} for n, v in ch["per"].items()},
              "criterion": "pooled val MRR (mean over subjects of both directions, cosine)",
              "n_images_distinct": int(len(x)), "n_train_images_pooled": int(len(train_rows)),
              "n_features": int(x.shape[1]), "elapsed_s": round(time.monotonic() - t0, 2)}
    logger.info("shared fit: alpha %.2g, rank %d, whiten %.1f, pooled val MRR %.3f", ch["alpha_relative"], q,
                ch["whiten"], key[0])
    return {"feat_mean": mean, "feat_scale": scale, "image_weight": wt.T.copy(), "z_all": z_all, "report": report}


# ---------------------------------------------------------------------------------------------
# subjects -> model


@dataclass
class SubjectData:
    """What the shared fit needs of one subject: its features `(N, D)`, raw responses `(N, K)`, the
    hashes of its images and its split (by those hashes); its raw repeats `(R, N, K)` when it has
    them (the damping of the population-mean direction, module docstring step 4)."""

    name: str
    features: np.ndarray
    responses: np.ndarray
    hashes: list[str]
    split: dict[str, np.ndarray]
    repeats: np.ndarray | None = None


def fit_shared_model(data: Sequence[SubjectData], image: dict[str, Any], split_rule: dict[str, Any],
                     n_components: int = 256, normaliser_kind: str = "zscore",
                     status: Callable[[str], None] | None = None, **grid: Any) -> SharedModel:
    """A `SharedModel` over `data` (see `fit_shared`); read-ins refitted on the final embedding."""
    from neuroalign.data.shared_split import check_sides_agree, union_index

    names = [d.name for d in data]
    dims = {d.name: int(np.prod(d.features.shape[1:])) for d in data}
    if len(set(dims.values())) > 1:
        raise ValueError("the subjects' image features differ in size (" + ", ".join(f"{n}: {v}" for n, v in dims.items())
                         + "); expected one image size for a shared model")
    hashes = {d.name: d.hashes for d in data}
    splits = {d.name: d.split for d in data}
    check_sides_agree(hashes, splits)
    distinct, rows = union_index(hashes)
    feats = np.zeros((len(distinct), dims[names[0]]), dtype=np.float32)
    for d in data:
        feats[rows[d.name]] = np.asarray(d.features, dtype=np.float32).reshape(len(d.features), -1)
    norms = {d.name: Normaliser(normaliser_kind).fit(np.asarray(d.responses)[d.split["train"]]) for d in data}
    populations = {d.name: train_population(norms[d.name], d.repeats, d.split["train"]) for d in data}
    responses = {d.name: _damp_population(norms[d.name].transform(d.responses).astype(np.float64),
                                          1.0 if populations[d.name] is None else populations[d.name]["shrink"])
                 for d in data}
    fit = fit_shared(feats, responses, rows, splits, n_components=n_components, status=status, **grid)
    model = SharedModel(dict(image), fit["feat_mean"], fit["feat_scale"], fit["image_weight"], {}, dict(split_rule),
                        fit["report"])
    for d in data:
        z = model.embed_features(d.features)
        model.readins[d.name] = make_readin(z, d.responses, d.split, normaliser_kind, d.repeats,
                                            populations[d.name])
    return model


def adapt(model: SharedModel, name: str, features: np.ndarray, responses: np.ndarray,
          split: Mapping[str, np.ndarray], normaliser_kind: str | None = None,
          repeats: np.ndarray | None = None) -> SharedModel:
    """A new subject's read-in on a fixed shared model: a new `SharedModel` that holds the SAME shared
    arrays (not copies; never written) and the old read-ins plus the new one. Closed form, seconds.
    `repeats (R, N, K)` (optional): its population-mean direction damped as in `make_readin`."""
    if name in model.readins:
        raise ValueError(f"subject {name!r} is already part of this shared model; adapt a new subject, or "
                         "train the shared run again")
    kind = normaliser_kind or (next(iter(model.readins.values())).normaliser.kind if model.readins else "zscore")
    z = model.embed_features(features)
    readin = make_readin(z, responses, split, kind, repeats)
    readin.report["adapted"] = True
    return replace(model, readins={**model.readins, name: readin})
