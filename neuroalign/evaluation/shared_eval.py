"""Evaluation of a shared model (`training.shared`): per-subject results and cross-subject retrieval.

Per subject, on its own TEST images of the shared split, the same numbers as a single-subject run
(`evaluate.py`): retrieval both ways with Wilson intervals and chance (`retrieval_metrics`), the
300-way protocol when there are >= 300 test images, val scores, FEVE of the shared embedding
(`linear_feve`), the baselines on the same split (`compute_baselines`: ridge on pixels, on random
features, on the shared run's frozen features; repeat; oracle for simulated subjects) and whether
the model reaches the best linear readout. Similarity: cosine in the shared space (no 16x64 maps and
so no SSIM: the shared space is the embedding itself).

Cross-subject retrieval (`cross_subject`): for two subjects that share test images (by pixel hash),
the read-in embedding of subject A's response to an image identifies subject B's response to the
same image among all shared test images, both ways -- the direct test that the space is shared.
For scale, `repeat_scale` scores the same between the two repeats of one subject's test images.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from neuroalign.evaluation.baselines import compare_with_linear
from neuroalign.evaluation.feve import linear_feve
from neuroalign.evaluation.retrieval import n_way_metrics, retrieval_metrics

logger = logging.getLogger(__name__)

N_WAY = 300
N_WAY_DRAWS = 100


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity between every row of `a (n, q)` and of `b (m, q)`; zero rows give 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    a = np.divide(a, na, out=np.zeros_like(a), where=na > 0)
    b = np.divide(b, nb, out=np.zeros_like(b), where=nb > 0)
    return a @ b.T


def _metrics(sim: np.ndarray, hits: bool = False) -> dict[str, Any]:
    m = retrieval_metrics(sim, hits=hits)
    nway = n_way_metrics(sim, n_way=N_WAY, draws=N_WAY_DRAWS, seed=0)
    if nway is not None:
        m[f"n_way_{N_WAY}"] = nway
    return m


def subject_results(model, name: str, subject, split: Mapping[str, np.ndarray], features: np.ndarray,
                    subject_path: str | Path | None = None, baselines: bool = True,
                    training: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """`(results, outputs)` of subject `name` in the shared model: results.json's content (module
    docstring) and the test arrays (`test_indices`, `image_embedding`, `neural_embedding`, `similarity`)."""
    test = np.asarray(split["test"], dtype=np.int64)
    val = np.asarray(split["val"], dtype=np.int64)
    if len(test) < 2:
        raise ValueError(f"{name}: evaluation needs >= 2 test images, got {len(test)}")
    z = model.embed_features(features)
    readin = model.readin(name)
    e = readin.embed(subject.responses)
    sim = cosine_matrix(z[test], e[test])
    results: dict[str, Any] = {
        "test": _metrics(sim, hits=True),  # per-image hits: paired baseline comparison
        "val": _metrics(cosine_matrix(z[val], e[val])),
        "similarity": "cosine in the shared space",
        "model": "shared",
        "training": {"shared": model.report, "readin": readin.report, **(training or {})},
    }
    reps = subject.repeats
    if reps is not None and reps.shape[0] >= 2:
        norm = readin.normaliser
        feve = linear_feve(z, norm.transform(subject.responses), np.stack([norm.transform(r) for r in reps]), split)
        if feve is not None:
            results["encoding"] = {"metric": "FEVE", "model": feve}
    if baselines:
        from neuroalign.evaluation.evaluate import compute_baselines

        label = f"the shared run's frozen {model.image.get('backbone')} features"
        results["baselines"] = compute_baselines(subject, split, subject_path, np.asarray(features).reshape(len(features), -1),
                                                 label)
        comparison = compare_with_linear(results["test"], results["baselines"])
        if comparison is not None:
            results["comparison"] = comparison
    outputs = {"test_indices": test, "image_embedding": z[test].astype(np.float32),
               "neural_embedding": e[test].astype(np.float32), "similarity": sim.astype(np.float32)}
    return results, outputs


def _pair_metrics(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    m = retrieval_metrics(cosine_matrix(a, b))
    keys = ("top1", "top1_ci", "top5", "mrr", "mean_rank")
    return {"a_to_b": {k: m["image_to_neural"][k] for k in keys}, "b_to_a": {k: m["neural_to_image"][k] for k in keys},
            "n": m["n"], "chance_top1": m["chance_top1"]}


def cross_subject(model, subjects: Mapping[str, Any], splits: Mapping[str, Mapping[str, np.ndarray]],
                  hashes: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Cross-subject retrieval for every pair of `subjects` (name -> Subject) through the shared space
    over the test images they share (module docstring): `pairs` (mean responses, and single trials
    when both have repeats: repeat 1 of A against repeat 1 of B), `repeat_scale` per subject (its
    repeat 1 against its repeat 2, same test images, same space), `skipped` with reasons."""
    names = list(subjects)
    pairs, skipped = [], []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pos_a = {hashes[a][j]: j for j in splits[a]["test"]}
            pos_b = {hashes[b][j]: j for j in splits[b]["test"]}
            common = [h for h in pos_a if h in pos_b]
            if len(common) < 2:
                skipped.append({"a": a, "b": b, "reason": f"{len(common)} shared test images (need >= 2)"})
                continue
            ia = np.asarray([pos_a[h] for h in common])
            ib = np.asarray([pos_b[h] for h in common])
            ra, rb = model.readin(a), model.readin(b)
            entry = {"a": a, "b": b, **_pair_metrics(ra.embed(subjects[a].responses[ia]),
                                                    rb.embed(subjects[b].responses[ib]))}
            rep_a, rep_b = subjects[a].repeats, subjects[b].repeats
            if rep_a is not None and rep_b is not None:
                entry["single_trial"] = _pair_metrics(ra.embed(rep_a[0][ia]), rb.embed(rep_b[0][ib]))
            pairs.append(entry)
    scale = {}
    for name in names:
        reps = subjects[name].repeats
        test = np.asarray(splits[name]["test"], dtype=np.int64)
        if reps is None or reps.shape[0] < 2 or len(test) < 2:
            continue
        ri = model.readin(name)
        scale[name] = _pair_metrics(ri.embed(reps[0][test]), ri.embed(reps[1][test]))
        scale[name]["what"] = "repeat 1 -> repeat 2 of the same subject (single trials), its test images"
    return {"pairs": pairs, "repeat_scale": scale, "skipped": skipped,
            "what": "a subject's read-in embedding of its response to an image retrieves the other subject's "
                    "response to the same image among their shared test images (cosine in the shared space)"}
