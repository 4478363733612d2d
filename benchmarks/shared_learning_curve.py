"""Several mice, one model (issue 21): the learning curve of a held-out mouse.

Two simulated cohorts (`benchmarks/sim_suite` generators; neurons, receptive-field region and noise
drawn per mouse from its own seed, as `sim_suite.generate` does):

* `same-images`: 6 mice of `gabor_ln` seeing the SAME images (one image seed);
* `different-images`: 6 mice of `subunit_texture`, each seeing its OWN images.

Mice 1-2 of each cohort are *selection* mice, 3-6 *report* mice. For a held-out report mouse, a
shared model (`neuroalign.training.shared`) is fitted on the other five mice (every choice on their
val images, pooled); then with 100, 200, 400, 800 and all of the held-out mouse's training images
(nested random subsets of its train split by image hash; its own val images for its choices) we score
on its untouched test images, 100-way top-1 (mean of 100 random draws), both directions:

(a) `adapt`: the shared model fixed, only the mouse's read-in fitted (closed form);
(b) `single`: the single-subject closed-form default (`linear_start.fit_linear_start`) on the same
    frozen features, fitted on the same images;
(c) `ridge`: the product's strongest simple baseline, ridge from random rectified features
    (`evaluation.baselines.random_features_baseline`'s features), on the same images.

All three read the same images and the same split; the shared model never saw a test image of
anyone (splits by image hash are shared). Features: `random_rectified` (32 random 9x9 filters,
both signs, pooled to the 8x32 readout grid, 16,384 numbers per image) for (a) and (b) -- the
single-subject default's "auto" image model is not run here (it would compute every candidate bank
per mouse; CPU time), so (b) is the closed-form default on the same bank as (a).

    python benchmarks/shared_learning_curve.py --out docs/shared_learning_curve.json

writes the JSON and prints the markdown table (docs/RESULTS.md, "Several mice, one model").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import sim_neurons  # noqa: E402
from benchmarks.sim_suite import GENERATORS  # noqa: E402
from neuroalign.data import Normaliser, Subject  # noqa: E402
from neuroalign.data.shared_split import image_hashes, split_by_hash  # noqa: E402
from neuroalign.evaluation.baselines import random_rectified_features  # noqa: E402
from neuroalign.evaluation.retrieval import n_way_metrics  # noqa: E402
from neuroalign.evaluation.shared_eval import cosine_matrix  # noqa: E402
from neuroalign.training.linear_start import fit_linear_start  # noqa: E402
from neuroalign.training.shared import SubjectData, adapt, fit_shared_model  # noqa: E402

SIZES = (100, 200, 400, 800, None)  # None: all training images
RULE = {"by": "sha256 of each image's pixels", "val_fraction": 0.1, "test_fraction": 0.12, "seed": 1234}
IMAGE = {"backbone": "random_rectified", "stage": 1, "block": 1, "transform": "none", "grid": [8, 32], "init_seed": 0,
         "weights": None, "image_shape": [68, 270]}
N_WAY = 100


def images_for(generator: str, n: int, seed: int) -> np.ndarray:
    img_fn, _ = GENERATORS[generator]
    return np.round(img_fn(np.random.default_rng(seed), n) * 255).astype(np.uint8)


CACHE = Path("/tmp/neuroalign-shared-curve")


def mouse(name: str, generator: str, images_u8: np.ndarray, n_neurons: int, seed: int, target_r: float) -> Subject:
    """A simulated mouse on given images: its own neurons, RF region and noise (from `seed`); cached
    in /tmp by its parameters (generation dominates a rerun on a busy CPU)."""
    key = CACHE / f"{generator}-{len(images_u8)}-{n_neurons}-{seed}-{target_r}-{image_hashes(images_u8[:1, None] / 255.0)[0]}.npz"
    if key.is_file():
        with np.load(key) as z:
            reps = z["repeats"]
        return Subject(name, (images_u8[:, None].astype(np.float32) / 255.0), reps.mean(axis=0).astype(np.float32), reps)
    _, pop_fn = GENERATORS[generator]
    r_pop, r_noise = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    x = sim_neurons.half_res(images_u8.astype(np.float32) / 255.0)
    rel, _ = pop_fn(x, r_pop, n_neurons, sim_neurons.random_region(r_pop))
    noise = sim_neurons.NoiseModel(target_r)
    rates = (rel * np.float32(sim_neurons.calibrate_gain(rel, noise))).astype(np.float32)
    reps = sim_neurons.sample_repeats(rates, noise, r_noise)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(key, repeats=reps)
    return Subject(name, (images_u8[:, None].astype(np.float32) / 255.0), reps.mean(axis=0).astype(np.float32), reps)


def readout_features(images_u8: np.ndarray) -> np.ndarray:
    from neuroalign.models import ImageTower
    from neuroalign.models.feature_cache import compute_features

    tower = ImageTower(backbone="random_rectified", stage=1, block=1, mode="frozen", head="readout", grid=(8, 32),
                       n_components=8, transform="none")
    return compute_features(tower, images_u8[:, None].astype(np.float32) / 255.0).flatten(1).numpy()


def _nway(sim: np.ndarray) -> tuple[float, float]:
    m = n_way_metrics(sim, n_way=N_WAY, draws=100, seed=0)
    if m is None:
        raise ValueError(f"{N_WAY}-way needs >= {N_WAY} test images, got {len(sim)}")
    return m["image_to_neural"]["top1"], m["neural_to_image"]["top1"]


def _ridge_nway(features: np.ndarray, responses: np.ndarray, split: dict) -> tuple[float, float]:
    """`evaluation.baselines.ridge_identification` (dual ridge, z-scored with train statistics, alpha
    chosen on val by mean top-1, correlation), scored with the 100-way protocol on test."""
    from neuroalign.evaluation.baselines import _zscore_with
    from neuroalign.evaluation.retrieval import correlation_matrix, retrieval_metrics
    from neuroalign.linalg import eigh

    tr, va, te = split["train"], split["val"], split["test"]
    x, y = _zscore_with(features, tr), _zscore_with(responses, tr)
    xt = x[tr]
    s2, u = eigh(xt @ xt.T)
    keep = s2 > 1e-10 * max(float(s2.max()), 1e-300)
    s2, u = s2[keep], u[:, keep]
    uty = u.T @ y[tr]
    kv, kt = (x[va] @ xt.T) @ u, (x[te] @ xt.T) @ u
    best = None
    for i, alpha in enumerate(float(s2.max()) * np.logspace(-5, 1, 13)):
        m = retrieval_metrics(correlation_matrix((kv / (s2 + alpha)) @ uty, y[va]))
        key = (0.5 * (m["image_to_neural"]["top1"] + m["neural_to_image"]["top1"]),
               -0.5 * (m["image_to_neural"]["mean_rank"] + m["neural_to_image"]["mean_rank"]), -i)
        if best is None or key > best[0]:
            best = (key, alpha)
    return _nway(correlation_matrix((kt / (s2 + best[1])) @ uty, y[te]))


def curve(model, sub: Subject, feats: np.ndarray, rr_feats: np.ndarray, split: dict, seed: int) -> list[dict]:
    tr, va, te = split["train"], split["val"], split["test"]
    order = np.random.default_rng(seed).permutation(tr)
    rows = []
    for size in SIZES:
        n = len(order) if size is None else size
        if n > len(order):
            continue
        sub_tr = np.sort(order[:n])
        s = {"train": sub_tr, "val": va, "test": te}
        row: dict = {"n_train": int(n), "all": size is None}
        t0 = time.monotonic()
        adapted = adapt(model, "held-out", feats, sub.responses, s)
        z, e = adapted.embed_features(feats), adapted.embed_responses("held-out", sub.responses)
        row["adapt"] = _nway(cosine_matrix(z[te], e[te]))
        row["adapt_s"] = round(time.monotonic() - t0, 2)
        norm = Normaliser("zscore").fit(sub.responses[sub_tr])
        y = norm.transform(sub.responses)
        st = fit_linear_start(feats[sub_tr], y[sub_tr], feats[va], y[va], 256)
        zi = ((feats - st.feat_mean) / st.feat_scale) @ st.image_weight.T
        en = y @ st.neural_weight.T + st.neural_bias
        row["single"] = _nway(cosine_matrix(zi[te], en[te]))
        row["ridge"] = _ridge_nway(rr_feats, sub.responses, s)
        rows.append(row)
        print(f"    n={n}: adapt {row['adapt'][0]:.3f}/{row['adapt'][1]:.3f}  single {row['single'][0]:.3f}/"
              f"{row['single'][1]:.3f}  ridge {row['ridge'][0]:.3f}/{row['ridge'][1]:.3f}", flush=True)
    return rows


def cohort(name: str, generator: str, same_images: bool, n_images: int, n_neurons: int, held_out: list[int],
           base_seed: int, other_images: int) -> dict:
    t0 = time.monotonic()
    seeds = [base_seed + 10 * i for i in range(6)]
    targets = [0.3, 0.25, 0.3, 0.25, 0.35, 0.2]
    mice, feats, rrf = [], [], []
    shared_imgs = images_for(generator, n_images, base_seed) if same_images else None
    for i, seed in enumerate(seeds):
        n = n_images if (same_images or i + 1 in held_out) else other_images
        imgs = shared_imgs if same_images else images_for(generator, n, seed + 1)
        mice.append(mouse(f"{name}-m{i + 1}", generator, imgs, n_neurons, seed + 2, targets[i]))
        if same_images and i > 0:
            feats.append(feats[0]), rrf.append(rrf[0])
        else:
            feats.append(readout_features(imgs))
            rrf.append(random_rectified_features(imgs[:, None].astype(np.float32) / 255.0) if i + 1 in held_out or same_images
                       else None)
    hashes = [image_hashes(m.images) for m in mice]
    splits = [split_by_hash(h, RULE["val_fraction"], RULE["test_fraction"], RULE["seed"], m.name)
              for h, m in zip(hashes, mice)]
    print(f"{name}: {len(mice)} mice generated in {time.monotonic() - t0:.0f} s", flush=True)
    out = {"generator": generator, "same_images": same_images, "n_neurons": n_neurons,
           "selection_mice": [m.name for m in mice[:2]], "report_mice": [m.name for m in mice[2:]], "held_out": {}}
    for h in held_out:
        i = h - 1
        t1 = time.monotonic()
        data = [SubjectData(m.name, f, m.responses, hs, sp) for j, (m, f, hs, sp) in
                enumerate(zip(mice, feats, hashes, splits)) if j != i]
        model = fit_shared_model(data, IMAGE, RULE, n_components=256)
        fit_s = time.monotonic() - t1
        print(f"  held out {mice[i].name}: shared fit on {len(data)} mice in {fit_s:.0f} s "
              f"(alpha {model.report['alpha_relative']:.0e}, rank {model.report['rank']}, "
              f"pooled val MRR {model.report['val_mrr_pooled']:.3f})", flush=True)
        rows = curve(model, mice[i], feats[i], rrf[i], splits[i], seed=h)
        out["held_out"][mice[i].name] = {"n_images": mice[i].n_images, "n_test": int(len(splits[i]["test"])),
                                         "n_train_all": int(len(splits[i]["train"])), "shared_fit_s": round(fit_s, 1),
                                         "shared_fit": {k: model.report[k] for k in ("alpha_relative", "rank", "whiten",
                                                                                     "val_mrr_pooled")},
                                         "curve": rows}
    return out


def markdown(result: dict) -> str:
    lines = ["| cohort | held-out mouse | train images | (a) adapt i→n / n→i | (b) single default i→n / n→i | "
             "(c) ridge i→n / n→i |", "|---|---|---|---|---|---|"]
    for cname, c in result["cohorts"].items():
        for mname, h in c["held_out"].items():
            for r in h["curve"]:
                n = f"all ({r['n_train']})" if r["all"] else str(r["n_train"])

                def cell(key: str) -> str:
                    return f"{r[key][0]:.3f} / {r[key][1]:.3f}"

                lines.append(f"| {cname} | {mname} | {n} | {cell('adapt')} | {cell('single')} | {cell('ridge')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/shared_learning_curve.json")
    ap.add_argument("--neurons", type=int, default=300)
    ap.add_argument("--images", type=int, default=1200)
    ap.add_argument("--quick", action="store_true", help="one held-out mouse per cohort")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    held_same, held_diff = ([3], [3]) if args.quick else ([3, 4, 5], [3, 4])
    result = {"n_way": N_WAY, "split_rule": RULE, "features": IMAGE, "sizes": [s or "all" for s in SIZES],
              "command": "python benchmarks/shared_learning_curve.py" + (" --quick" if args.quick else ""),
              "cohorts": {}}
    result["cohorts"]["same-images"] = cohort("same", "gabor_ln", True, args.images, args.neurons, held_same, 5101, 0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    result["cohorts"]["different-images"] = cohort("diff", "subunit_texture", False, args.images, args.neurons,
                                                   held_diff, 6101, 400)
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
