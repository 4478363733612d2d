"""Closed-form start for the readout image tower and the linear neural tower.

Before any gradient step, both towers are set to a regularised linear solution between the frozen
image features and the responses of the TRAIN images, with its two choices made on the VAL images:

1. Standardise the pooled features with train statistics (`X`, n x D) and centre the responses
   (`Y`, n x K; already normalised with train statistics by the trainer).
2. Ridge regression X -> Y for a grid of strengths `alpha` (relative to the largest squared
   singular value of X), in the dual form (n x n Gram matrices, never a D x K matrix).
3. Reduced-rank step: the top right singular vectors `Q (K, q)` of the ridge prediction on train
   span the *predictable* part of the responses. The image tower embeds an image as its
   predicted responses projected on Q; the neural tower embeds a response as its projection on
   Q, so the neurons are weighted by how well images predict them and the unpredictable part of
   the recorded response (noise) is dropped.
4. Optionally each of the q dimensions is scaled towards unit train variance, on each side with
   its own exponent (divided by its train std to the power 0, 0.5 or 1: a canonical-correlation-
   like whitening, which keeps a few dominant shared dimensions from making some images the
   nearest neighbour of every response; the two retrieval directions favour different amounts).
5. With repeats, the population-mean direction of the responses (all neurons together, `u = 1/sqrt(K)`)
   is damped by how much more than its share of the trial-to-trial noise it carries
   (`population_shrink`): a shared gain or arousal fluctuation that moves every neuron at once is
   noise the images cannot predict, and identification by cosine is then dominated by it. The
   responses enter steps 2-4 as `r - (1 - c) (r.u) u`, and the neural weights absorb the same linear
   map, so the neural tower still reads the raw (normalised) responses. `c = 1` (nothing changes)
   when the noise along `u` is no larger than along an average direction, and without repeats.
`alpha`, the number of dimensions kept and the whitening are picked by the mean MRR of both
retrieval directions (ties: top-1; the MRR is much less noisy than top-1), with the same cosine
similarity the model is scored by, as RidgeCV picks alpha: for a training run by 5-fold
cross-validation on the train and val images together (`CV_FOLDS`, `cv_settings`), then fitted on
the train images; for the profile and for comparing image models, by the val split alone (one fit
instead of six). On ~100 val images the single split's winner among the 648 settings is partly luck:
on the three selection subjects the cross-validated settings gave higher test MRR in both directions
(docs/RESULTS.md). Training then starts here, and since the start is scored as epoch 0 under
`select_by` val_top1 / val_mrr, the restored model is never worse on val than its own linear start.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from neuroalign.linalg import eigh, standardised_gram, standardised_t_product, standardiser


logger = logging.getLogger(__name__)

ALPHAS = tuple(float(a) for a in np.logspace(-4, 0, 9))
RANKS = (8, 16, 32, 64, 128, 256, 512, 1023)
WHITEN = (0.0, 0.5, 1.0)  # exponents of the per-dimension scaling to unit train variance, per side (0 = none)
CV_FOLDS = 5  # a training run's start: settings by 5-fold cross-validation on train + val (`solve_start`)


@dataclass
class LinearStart:
    """Weights of the start: image `embedding = image_weight @ ((f - feat_mean) / feat_scale)`,
    neural `embedding = neural_weight @ r + neural_bias`; `report` says what was chosen."""

    feat_mean: np.ndarray
    feat_scale: np.ndarray
    image_weight: np.ndarray  # (q, D)
    neural_weight: np.ndarray  # (q, K)
    neural_bias: np.ndarray  # (q,)
    report: dict[str, Any] = field(default_factory=dict)


def _cosine_key(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean MRR, mean top-1) of both directions for cosine identification of rows of a vs b. The MRR
    leads: on a val split of ~100 images it is a far less noisy choice criterion than top-1. Computed
    with `evaluation.retrieval`'s tie rule (rank 1 + #greater + #ties/2), without the rest of its
    metrics: this runs hundreds of times per fit."""
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    s = an @ bn.T
    correct = np.diag(s)
    mrr = top1 = 0.0
    for m, c in ((s, correct[:, None]), (s.T, correct[:, None])):
        greater = (m > c).sum(axis=1)
        ties = (m == c).sum(axis=1) - 1.0
        mrr += float((1.0 / (1.0 + greater + ties / 2.0)).mean())
        top1 += float(np.clip((1.0 - greater) / (ties + 1.0), 0.0, 1.0).mean())
    return 0.5 * mrr, 0.5 * top1


def fit_linear_start(train_features: np.ndarray, train_responses: np.ndarray, val_features: np.ndarray,
                     val_responses: np.ndarray, n_components: int, alphas: tuple[float, ...] = ALPHAS,
                     ranks: tuple[int, ...] = RANKS, whiten: tuple[float, ...] = WHITEN,
                     folds: int | None = None, shrink: float = 1.0) -> LinearStart:
    """Closed-form start (see the module docstring). Features `(n, D)`, responses `(n, K)`; val the same
    with its own row count. Returns weights for `n_components` dimensions (those beyond the chosen
    rank are zero). `folds`: settings by cross-validation on train + val (`solve_start`); None: on val.
    `shrink`: the population-mean damping (`population_shrink`; 1 = none)."""
    x_tr = np.asarray(train_features).reshape(len(train_features), -1)
    x_va = np.asarray(val_features).reshape(len(val_features), -1)
    _check_sizes(len(x_tr), len(x_va))
    mean, scale = standardiser(x_tr)
    dual = solve_start(standardised_gram(x_tr, mean, scale), standardised_gram(x_va, mean, scale, b=x_tr),
                       train_responses, val_responses, n_components, alphas, ranks, whiten,
                       gram_val_val=standardised_gram(x_va, mean, scale) if folds else None, folds=folds,
                       shrink=shrink)
    return dual.primal(x_tr, mean, scale)


def population_shrink(repeats: np.ndarray | None, rows: np.ndarray | None = None) -> dict[str, float] | None:
    """How much to damp the responses' population-mean direction `u = 1/sqrt(K)` (module docstring,
    step 5), from the trial-to-trial noise of `repeats (R, N, K)` (normalised single trials; `rows`:
    the images to use, the train split's). The noise is each trial minus the mean of its image's
    trials; `share` is the fraction of its variance along `u` times K (1 for noise spread evenly
    over the neurons, K when every neuron moves together), and `shrink = min(1, 1 / sqrt(share))`:
    the noise along `u` is scaled to that of an average direction, never amplified. None without
    >= 2 repeats of >= 2 images (nothing to estimate from: no damping)."""
    if repeats is None:
        return None
    reps = np.asarray(repeats)
    if reps.ndim != 3 or reps.shape[0] < 2:
        return None
    if rows is not None:
        reps = reps[:, np.asarray(rows, dtype=np.int64)]
    r, n, k = reps.shape
    if n < 2 or k < 2:
        return None
    along = total = 0.0
    for lo in range(0, n, 1024):  # chunks of images: no (R, N, K) float64 copy of a wide recording
        chunk = np.asarray(reps[:, lo:lo + 1024], dtype=np.float64)
        noise = chunk - chunk.mean(axis=0, keepdims=True)
        finite = np.isfinite(noise).all(axis=(0, 2))
        noise = noise[:, finite]
        along += float((noise.sum(axis=2) ** 2).sum()) / k
        total += float((noise ** 2).sum())
    if not total > 0.0:
        return None
    share = along / total * k
    return {"share": share, "shrink": float(min(1.0, 1.0 / np.sqrt(max(share, 1e-12))))}


def train_population(normaliser, repeats: np.ndarray | None, train: np.ndarray) -> dict[str, float] | None:
    """`population_shrink` of a subject's stored repeats `(R, N, K)` on its `train` images, each trial
    normalised with `normaliser` (fitted on the train responses, `.transform`); None without repeats.
    What a training run's start, a shared fit and an adapted read-in estimate."""
    if repeats is None:
        return None
    train = np.asarray(train, dtype=np.int64)
    return population_shrink(np.stack([normaliser.transform(np.asarray(rep)[train]) for rep in repeats]))


def _damp_population(y: np.ndarray, shrink: float) -> np.ndarray:
    """`y - (1 - shrink) (y.u) u` with `u = 1/sqrt(K)`: the population mean of each row scaled by `shrink`."""
    if shrink >= 1.0:
        return y
    return y - (1.0 - shrink) * y.mean(axis=1, keepdims=True)


def _check_sizes(n_train: int, n_val: int) -> None:
    if n_train < 3 or n_val < 2:
        raise ValueError(f"the linear start needs >= 3 train and >= 2 val images, got {n_train} and {n_val}")


@dataclass
class DualStart:
    """The closed-form start in the dual form: the image embedding of an image is `k @ coef`, with `k`
    its standardised features' products with the train images' (`linalg.standardised_gram`); the
    neural side as in `LinearStart`. `primal` turns it into feature-space weights (one D x n x q
    product); the profile needs only the embeddings."""

    coef: np.ndarray  # (n_train, q): whitening included
    neural_weight: np.ndarray  # (n_components, K)
    neural_bias: np.ndarray  # (n_components,)
    report: dict[str, Any]

    def image_embeddings(self, gram_rows: np.ndarray) -> np.ndarray:
        """`(m, n_components)` embeddings of the images whose Gram rows (against train) are given."""
        out = np.zeros((len(gram_rows), len(self.neural_bias)))
        out[:, :self.coef.shape[1]] = np.asarray(gram_rows, dtype=np.float64) @ self.coef
        return out

    def neural_embeddings(self, responses: np.ndarray) -> np.ndarray:
        return np.asarray(responses, dtype=np.float64) @ self.neural_weight.T + self.neural_bias

    def primal(self, train_features: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> LinearStart:
        """The same start with image weights in feature space (`image_weight (n_components, D)`)."""
        x_tr = np.asarray(train_features).reshape(len(train_features), -1)
        q = self.coef.shape[1]
        image_weight = np.zeros((len(self.neural_bias), x_tr.shape[1]))
        image_weight[:q] = standardised_t_product(x_tr, mean, scale, self.coef).T
        report = {**self.report, "n_features": int(x_tr.shape[1])}
        return LinearStart(mean, scale, image_weight, self.neural_weight, self.neural_bias, report)


def _top_right_singular(a: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray]:
    """The top `q` right singular vectors `(K, q)` and singular values of `a (r, K)`, through the
    smaller of its two Gram matrices (r x r or K x K: a few hundred neurons against a thousand train
    images, or ten thousand neurons against it). Signs are arbitrary (the start's embeddings use the
    same vectors on both sides, so cosines do not depend on them)."""
    r, k = a.shape
    if k <= r:
        sig2, v = eigh(a.T @ a, top=q)
        sig2, v = np.maximum(sig2[::-1], 1e-300), v[:, ::-1]
        return v, np.sqrt(sig2)
    sig2, e = eigh(a @ a.T, top=q)
    sig2, e = np.maximum(sig2[::-1], 1e-300), e[:, ::-1]
    sig = np.sqrt(sig2)
    return (a.T @ e) / sig, sig


def solve_start(gram_train: np.ndarray, gram_val: np.ndarray, train_responses: np.ndarray,
                val_responses: np.ndarray, n_components: int, alphas: tuple[float, ...] = ALPHAS,
                ranks: tuple[int, ...] = RANKS, whiten: tuple[float, ...] = WHITEN,
                train_space: bool | None = None, gram_val_val: np.ndarray | None = None,
                folds: int | None = None, shrink: float = 1.0) -> DualStart:
    """The closed-form start from the standardised Gram matrices of the train images `(n, n)` and of
    the val images against them `(n_val, n)` (module docstring, steps 2-4).

    Its settings (alpha, rank, whitening) are those with the best val score of a fit on the train
    images; with `folds` (and `gram_val_val`, the val images' Gram matrix among themselves) those with
    the best mean score over `folds`-fold cross-validation on the train and val images together
    (`cv_settings`), after which the start is fitted on the train images with them. The report says
    which (`selection`) and keeps the train fit's val scores either way. `shrink` < 1 damps the
    responses' population-mean direction (module docstring, step 5); the returned neural weights
    include it, so they apply to the responses as given."""
    if not 0.0 <= shrink <= 1.0:
        raise ValueError(f"shrink must be in [0, 1] (1 = no damping), got {shrink}")
    start = _solve_start(gram_train, gram_val, _damp_population(np.asarray(train_responses, dtype=np.float64), shrink),
                         _damp_population(np.asarray(val_responses, dtype=np.float64), shrink), n_components, alphas,
                         ranks, whiten, train_space, gram_val_val, folds)
    if shrink < 1.0:  # embedding = W' (r - (1 - c)(r.u)u) + b = (W' - (1 - c)(W'u)u^T) r + b
        w = start.neural_weight
        start.neural_weight = w - (1.0 - shrink) * w.mean(axis=1, keepdims=True)
    start.report["population_shrink"] = float(shrink)
    return start


def _solve_start(gram_train, gram_val, y_tr, y_va, n_components, alphas, ranks, whiten, train_space,
                 gram_val_val, folds) -> DualStart:
    """`solve_start` on responses already damped."""
    pairs = tuple(itertools.product(whiten, whiten))
    if not folds:
        return _solve(gram_train, gram_val, y_tr, y_va, n_components, alphas, ranks, pairs, train_space)[0]
    if gram_val_val is None or gram_val_val.shape != (len(y_va), len(y_va)):
        raise ValueError(f"cross-validated settings need the val images' Gram matrix ({len(y_va)}, {len(y_va)}), "
                         f"got {None if gram_val_val is None else gram_val_val.shape}")
    gram = np.block([[gram_train, np.asarray(gram_val).T], [gram_val, gram_val_val]])
    cv = cv_settings(gram, np.concatenate([y_tr, y_va]), n_components, folds, alphas, ranks, pairs, train_space)
    if cv is None:  # too few images for the folds: the val split alone
        start = _solve(gram_train, gram_val, y_tr, y_va, n_components, alphas, ranks, pairs, train_space)[0]
        start.report["selection"] = f"val split ({len(y_tr) + len(y_va)} images are too few for {folds} folds)"
        return start
    (alpha_rel, q, p_img, p_neu), key = cv
    start = _solve(gram_train, gram_val, y_tr, y_va, n_components, (alpha_rel,), (q,), ((p_img, p_neu),),
                   train_space)[0]
    start.report.update({"selection": f"{folds}-fold cross-validation on the train and val images",
                         "cv_mrr_mean": key[0], "cv_top1_mean": key[1], "folds": int(folds)})
    return start


def cv_settings(gram: np.ndarray, responses: np.ndarray, n_components: int, folds: int,
                alphas: tuple[float, ...] = ALPHAS, ranks: tuple[int, ...] = RANKS,
                pairs: tuple[tuple[float, float], ...] | None = None, train_space: bool | None = None,
                seed: int = 0) -> tuple[tuple[float, int, float, float], tuple[float, float]] | None:
    """The start's settings `(alpha_relative, rank, whiten_img, whiten_neu)` with the best mean
    (MRR, top-1) over `folds` folds of the images of `gram (n, n)` / `responses (n, K)` (a fixed
    random partition; each fold is scored by a fit on the others, exactly as the val split scores a
    fit on train), and that mean. A setting counts only if every fold scored it (a fold with fewer
    dimensions clips larger ranks). None when a fold would have fewer than 2 images or its
    complement fewer than 3. On ~100 val images the single split's winner among the 648 settings
    is partly luck; five folds score every setting on all train and val images."""
    n = len(responses)
    if folds < 2 or n // folds < 2 or n - (n + folds - 1) // folds < 3:
        return None
    pairs = tuple(itertools.product(WHITEN, WHITEN)) if pairs is None else pairs
    parts = np.array_split(np.random.default_rng(seed).permutation(n), folds)
    totals: dict[tuple[float, int, float, float], list[tuple[float, float]]] = {}
    for held in parts:
        rest = np.setdiff1d(np.arange(n), held)
        keys = _solve(gram[np.ix_(rest, rest)], gram[np.ix_(held, rest)], responses[rest], responses[held],
                      n_components, alphas, ranks, pairs, train_space, all_keys=True)[1]
        for setting, key in keys.items():
            totals.setdefault(setting, []).append(key)
    scored = {s: tuple(np.mean(v, axis=0)) for s, v in totals.items() if len(v) == folds}
    best = max(scored, key=lambda s: scored[s])  # dict order = scan order: ties go to the first scanned
    return best, (float(scored[best][0]), float(scored[best][1]))


def _solve(gram_train: np.ndarray, gram_val: np.ndarray, y_tr: np.ndarray, y_va: np.ndarray, n_components: int,
           alphas: tuple[float, ...], ranks: tuple[int, ...], pairs: tuple[tuple[float, float], ...],
           train_space: bool | None, all_keys: bool = False
           ) -> tuple[DualStart | None, dict[tuple[float, int, float, float], tuple[float, float]]]:
    """The train fit scored on val for every setting; the best setting's start (None with
    `all_keys`, which returns every setting's val (MRR, top-1) instead).

    With more neurons than train dimensions (`train_space` None: K > r) every step before the last
    works in the r-dimensional train space: the shrunk prediction `diag(g) M` (r x K) has its top
    singular vectors from `diag(g) M M^T diag(g)`, and `M M^T` (with the responses' products with
    it) is formed ONCE instead of one K-wide product per alpha; only the chosen basis is turned into
    K-dimensional neural weights. Same numbers to rounding (`train_space=False` forces the K-space
    path; a test compares the two)."""
    n, k = y_tr.shape
    _check_sizes(n, len(y_va))
    if gram_train.shape != (n, n) or gram_val.shape != (len(y_va), n):
        raise ValueError(f"Gram matrices {gram_train.shape} and {gram_val.shape} do not match {n} train and "
                         f"{len(y_va)} val responses; expected ({n}, {n}) and ({len(y_va)}, {n})")
    y_mean = y_tr.mean(axis=0)
    yc_tr, yc_va = y_tr - y_mean, y_va - y_mean

    s2, u = eigh(gram_train)  # X = U S V^T through the n x n Gram matrix
    keep = s2 > 1e-10 * max(float(s2.max()), 1e-300)
    s2, u = s2[keep][::-1], u[:, keep][:, ::-1]
    kv_u = gram_val @ u  # (n_val, r): val features against the train basis
    m = u.T @ yc_tr  # (r, K)
    r = len(s2)
    if r == 0:
        raise ValueError("the image features are constant across the training images (nothing to align); "
                         "expected features that vary between images -- check the images or the backbone block")
    q_max = int(min(n_components, r, k))
    # the grid's ranks always include the largest possible; a given setting (the CV's) is kept as it is
    ranks = tuple(sorted({min(int(q), q_max) for q in ranks if q >= 1} | ({q_max} if len(ranks) > 1 else set())))
    wide = k > r if train_space is None else bool(train_space)
    if wide:  # products with the K neurons, once: Y Y^T (n x n), M M^T = U^T Y Y^T U, Y_tr M^T, Y_val M^T
        p_tr = (yc_tr @ yc_tr.T) @ u  # (n, r)
        mmt = u.T @ p_tr
        mmt = 0.5 * (mmt + mmt.T)  # (r, r), symmetric to rounding
        p_va = yc_va @ m.T  # (n_val, r)
    best: tuple[float, float] | None = None
    chosen: dict[str, Any] = {}
    keys: dict[tuple[float, int, float, float], tuple[float, float]] = {}
    for alpha_rel in alphas:
        alpha = alpha_rel * float(s2.max())
        g = s2 / (s2 + alpha)  # shrinkage of the train prediction U diag(g) M
        if wide:  # Q = M^T diag(g) E / sig, from the eigenvectors E of diag(g) M M^T diag(g)
            sig2, e = eigh(g[:, None] * mmt * g[None, :], top=q_max)
            sig = np.sqrt(np.maximum(sig2[::-1], 1e-300))
            basis = (g[:, None] * e[:, ::-1]) / sig  # (r, q_max): Q = M^T basis
            m_q, neu_va, neu_tr = mmt @ basis, p_va @ basis, p_tr @ basis
        else:
            basis, sig = _top_right_singular(g[:, None] * m, q_max)  # Q itself: (K, q_max), orthonormal
            m_q, neu_va, neu_tr = m @ basis, yc_va @ basis, yc_tr @ basis
        img_va = (kv_u / (s2 + alpha)) @ m_q  # val predictions projected on Q
        neu_tr_std = np.maximum(neu_tr.std(axis=0), 1e-12)
        img_tr_std = np.maximum(sig / np.sqrt(n), 1e-12)
        for q in ranks:
            for p_img, p_neu in pairs:
                a = img_va[:, :q] / img_tr_std[:q] ** p_img
                b = neu_va[:, :q] / neu_tr_std[:q] ** p_neu
                mrr, top1 = _cosine_key(a, b)
                key = (mrr, top1)
                if all_keys:
                    keys.setdefault((float(alpha_rel), int(q), float(p_img), float(p_neu)), key)
                    continue
                if best is None or key > best:
                    best = key
                    chosen = {"alpha_relative": alpha_rel, "rank": q, "whiten": [float(p_img), float(p_neu)],
                              "val_top1_mean": top1,
                              "val_mrr_mean": mrr, "alpha": alpha, "basis": basis[:, :q].copy(),
                              "m_q": m_q[:, :q].copy(),
                              "img_std": img_tr_std[:q].copy(), "neu_std": neu_tr_std[:q].copy()}
    if all_keys:
        return None, keys
    q = chosen["rank"]
    q_mat = m.T @ chosen["basis"] if wide else chosen["basis"]  # (K, q)
    p_img, p_neu = chosen["whiten"]
    # image embedding = K U diag(1/(s2+alpha)) M Q (whitened): weights in feature space are X^T of it
    coef = ((u / (s2 + chosen["alpha"])) @ chosen["m_q"]) / chosen["img_std"] ** p_img
    neural_weight = np.zeros((n_components, k))
    neural_weight[:q] = (q_mat / chosen["neu_std"] ** p_neu).T
    neural_bias = -neural_weight @ y_mean
    report = {k_: chosen[k_] for k_ in ("alpha_relative", "rank", "whiten", "val_top1_mean", "val_mrr_mean")}
    report.update({"n_train": int(n), "n_neurons": int(k), "selection": "val split"})
    logger.info("linear start: alpha %.2g (relative), rank %d, whiten %s, val top-1 %.3f", report["alpha_relative"],
                q, report["whiten"], report["val_top1_mean"])
    return DualStart(coef, neural_weight, neural_bias, report), keys


def apply_linear_start(image_tower, neural_tower, start: LinearStart) -> None:
    """Copy the start into a readout `ImageTower` and a `LinearNeuralTower` (in place)."""
    with torch.no_grad():
        image_tower.feat_mean.copy_(torch.as_tensor(start.feat_mean, dtype=image_tower.feat_mean.dtype))
        image_tower.feat_scale.copy_(torch.as_tensor(start.feat_scale, dtype=image_tower.feat_scale.dtype))
        image_tower.readout.weight.copy_(torch.as_tensor(start.image_weight, dtype=image_tower.readout.weight.dtype))
        image_tower.readout.bias.zero_()
        neural_tower.encoder.weight.copy_(torch.as_tensor(start.neural_weight, dtype=neural_tower.encoder.weight.dtype))
        neural_tower.encoder.bias.copy_(torch.as_tensor(start.neural_bias, dtype=neural_tower.encoder.bias.dtype))
