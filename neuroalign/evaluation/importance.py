"""Which neurons drive the alignment: per-neuron importance of a finished run, comparable across blocks.

Primary measure (any neural block: reference, transformer, latent, linear): attributions of the
contrastive log-probability of the true match. For the test response `r_j` (normalised as in
training), the neural -> image query scores every test image's map against the neural map of `r_j`:

    log p_j(r) = log softmax_i( sim(image_map_i, neural_map(r)) / T )[i = j]

which depends on the response alone (the image maps are fixed), so one backward pass over a batch
gives every sample's gradient. Attributions are expected gradients (integrated gradients with the
reference drawn from the data): for a reference response `r'` of another test image,
`(r_jk - r'_k) * mean_t d log p_j / d r_k` at `r' + t (r_j - r')`, which add up over neurons to
`log p_j(r_j) - log p_j(r')`: how much each neuron makes the response identify its own image rather
than another one. A neuron's importance is its mean absolute attribution over the TEST images and
the reference draws, in eval mode; `share` is importance / total, so runs with different blocks (and
different numbers of neurons) compare. Vectorised over neurons and batched over samples.

Second measure, where a block has a natural one: the attention blocks' `neuron_importance` (attention
each neuron receives in the first layer, averaged over a few test samples), the linear block's encoder
column norms times each neuron's response standard deviation over the test images.

The image side is not recomputed: the run's `test_outputs.npz` holds the image-tower test maps the
evaluation scored, and the neural maps recomputed here from `best.pt` are checked against the stored
ones (`map_mismatch`). Loading is from the run folder alone (config, split, normaliser, best.pt,
test outputs) plus the subject's responses, so no backbone runs (rebuilding the trainer would
compute the backbone features of every image first).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuroalign.data import Normaliser, Subject, load_subject
from neuroalign.models import CombinedLoss, LinearNeuralTower, build_neural_tower, similarity_matrix
from neuroalign.models.neural.parts import AttentionTower
from neuroalign.training import runs as runs_io

logger = logging.getLogger(__name__)

STEPS = 8  # quadrature points on the path from a reference response to the response
DRAWS = 2  # reference responses per test response
MIN_ROWS = 32  # a time budget never averages over fewer test images than this
MAX_SECONDS = 20.0  # the dashboard's time budget for the attribution (a linear block never needs it)
NATIVE_SAMPLES = 64  # test samples the attention blocks' own measure averages over (it costs B*K^2)
MISMATCH_TOLERANCE = 1e-2  # recomputed vs stored neural maps (relative max difference) above this: warn
TOP_FRACTION = 0.1


@dataclass
class TrainedNeuralSide:
    """What importance needs of a run: the neural tower with its best weights (eval mode), the
    normalised test responses, the stored image-tower test maps and the contrastive temperature."""

    run_dir: Path
    block: str
    tower: torch.nn.Module
    responses: np.ndarray  # (n, K) normalised test responses
    image_maps: np.ndarray  # (n, 16, 64)
    neural_maps: np.ndarray  # (n, 16, 64) as stored by the evaluation
    test_indices: np.ndarray  # (n,)
    temperature: float
    center: bool
    subject: Subject


@dataclass
class NeuronImportance:
    """Per-neuron importance of one run (all arrays `(K,)`)."""

    block: str
    importance: np.ndarray  # mean |attribution| of the true match's log-probability (see attribution_importance)
    share: np.ndarray  # importance / sum (sums to 1)
    net: np.ndarray  # mean signed attribution (sums to the mean log-probability gain over a reference response)
    n_test: int
    n_used: int  # test images the attribution averaged over (n_test unless a time budget cut it short)
    temperature: float
    native: np.ndarray | None = None  # the block's own measure, normalised to sum to 1
    native_label: str = ""
    native_n: int = 0  # test samples the native measure averaged over
    map_mismatch: float = 0.0  # max |recomputed - stored neural map| / max |stored|
    warnings: list[str] = field(default_factory=list)


def _read_normaliser(run_dir: Path) -> Normaliser:
    path = run_dir / runs_io.NORMALISER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the run has no normaliser (was it trained with this version?)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        return Normaliser.from_state_dict(state)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable normaliser state ({type(exc).__name__}: {exc})") from None


def load_trained_neural_side(run_dir: str | Path, subject: Subject | None = None,
                             data_dir: str | Path | None = None) -> TrainedNeuralSide:
    """The neural side of a finished run, from its folder (config, split, normaliser, best.pt, test
    outputs) and its subject (`subject` when given, else loaded from `data_dir`/name or the recorded
    path). ValueError / FileNotFoundError with a one-line reason for anything missing or mismatched."""
    run_dir = Path(run_dir)
    record = runs_io.load_run(run_dir)
    if "config" not in record.config or "subject" not in record.config:
        raise FileNotFoundError(f"{run_dir / runs_io.CONFIG_FILE} is missing or incomplete")
    config = record.train_config()
    meta = record.config["subject"]
    if record.split is None:
        raise FileNotFoundError(f"{run_dir / runs_io.SPLIT_FILE} not found")
    outputs = record.test_outputs()
    if not outputs or not {"test_indices", "image_maps", "neural_maps"} <= set(outputs):
        raise FileNotFoundError(f"{run_dir / runs_io.TEST_OUTPUTS} is missing or incomplete; evaluate the run first")
    best_path = run_dir / runs_io.BEST_CKPT
    if not best_path.is_file():
        raise FileNotFoundError(f"{best_path} not found; the run has no best checkpoint")
    best = runs_io.load_checkpoint(best_path)  # RunFileError (a ValueError, one line) when damaged
    if subject is None:
        if data_dir is not None:
            subject = load_subject(Path(data_dir) / meta["name"])
        else:
            subject = load_subject(meta["path"])
    if meta.get("data_hash") and subject.data_hash != meta["data_hash"]:
        raise ValueError(f"subject {meta.get('name')} changed since the run (data hash {subject.data_hash[:12]}, "
                         f"the run used {str(meta['data_hash'])[:12]}); importance needs the original responses")
    test_idx = np.asarray(outputs["test_indices"], dtype=np.int64)
    if not np.array_equal(test_idx, np.asarray(record.split["test"], dtype=np.int64)):
        raise ValueError(f"{runs_io.TEST_OUTPUTS} of {run_dir.name} does not match its split.json test rows; "
                         "re-evaluate the run")
    normaliser = _read_normaliser(run_dir)
    state = best["model"]
    if "neural_tower" not in state:
        raise ValueError(f"{best_path} holds no neural-tower weights (expected a 'model' entry with 'neural_tower')")
    tower = build_neural_tower(subject.n_neurons, config.neural, config.n_components)
    try:
        tower.load_state_dict(state["neural_tower"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{best_path} does not fit the run's {config.neural.block} block over "
                         f"{subject.n_neurons} neurons: {first}") from None
    tower.eval()
    loss = CombinedLoss(config.loss)
    if "loss" in state:
        loss.load_state_dict(state["loss"])
    return TrainedNeuralSide(
        run_dir=run_dir, block=config.neural.block, tower=tower,
        responses=np.ascontiguousarray(normaliser.transform(subject.responses[test_idx]), dtype=np.float32),
        image_maps=np.asarray(outputs["image_maps"], dtype=np.float32),
        neural_maps=np.asarray(outputs["neural_maps"], dtype=np.float32),
        test_indices=test_idx, temperature=float(torch.as_tensor(loss.temperature).detach()), center=bool(config.loss.center), subject=subject)


def reference_rows(n: int, draws: int, seed: int = 0) -> np.ndarray:
    """`(draws, n)` indices: for every row j, `draws` other rows (never j itself) drawn at random."""
    if n < 2:
        raise ValueError(f"importance needs >= 2 test samples, got {n}")
    rng = np.random.default_rng(seed)
    offset = rng.integers(1, n, size=(draws, n))  # 1..n-1: never the row itself
    return (np.arange(n)[None] + offset) % n


@dataclass
class Attribution:
    """`attribution_importance` output: mean |attribution| and mean signed attribution `(K,)` over the
    rows used, and those rows (all of them unless a time budget cut the average short)."""

    magnitude: np.ndarray
    signed: np.ndarray
    rows: np.ndarray


def attribution_importance(tower: torch.nn.Module, responses: np.ndarray, image_maps: np.ndarray,
                           temperature: float, center: bool, steps: int = STEPS, draws: int = DRAWS,
                           batch_size: int = 256, seed: int = 0, max_seconds: float | None = None,
                           min_rows: int = MIN_ROWS) -> Attribution:
    """Per-neuron attributions of log p(true image | neural response), averaged over the rows of
    `responses (n, K)` (row j's true image is row j of `image_maps (n, h, w)`).

    Expected gradients: for each row j and each of `draws` other rows j' (reference responses drawn
    from the same test set), `(r_j - r_j') * mean over t of grad log p_j at r_j' + t (r_j - r_j')`,
    t on `steps` midpoints of [0, 1]. The attributions of a row add up to log p_j(r_j) - log p_j(r_j')
    (up to the quadrature error), so they say which neurons make a response pick its own image rather
    than another test image's. A plain gradient x input would not do: the maps are compared by cosine,
    which is blind to the responses' scale, so gradient x input sums to zero for every sample and
    splits evenly between the neurons that help and those that hurt. The tower must be in eval mode.

    Work: `steps * draws` forward and backward passes over the rows, in batches of up to `batch_size`,
    the rows taken in a random (seeded) order. With `max_seconds`, no new batch starts after that
    time once `min_rows` rows are done (batches are sized from the measured cost per row), so a slow
    block (attention over 10,000 neurons) averages over a random subset of the test images.
    """
    r_all = torch.as_tensor(np.asarray(responses, dtype=np.float32))
    n, k = r_all.shape
    if len(image_maps) != n:
        raise ValueError(f"expected one image map per response row, got {len(image_maps)} maps for {n} rows")
    img = torch.as_tensor(np.asarray(image_maps, dtype=np.float32))
    refs = torch.as_tensor(reference_rows(n, draws, seed))
    order = torch.as_tensor(np.random.default_rng(seed).permutation(n))
    ts = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    magnitude = torch.zeros(k, dtype=torch.float64)
    signed = torch.zeros(k, dtype=torch.float64)
    start, done = time.monotonic(), 0
    while done < n:
        elapsed = time.monotonic() - start
        size = batch_size
        if max_seconds is not None:
            if done >= min_rows and elapsed >= max_seconds:
                break
            per_row = elapsed / done if done else None
            left = max(max_seconds - elapsed, 0.0)
            size = min(batch_size, 8) if per_row is None else int(np.clip(left / max(per_row, 1e-9), 8, batch_size))
            if done < min_rows:
                size = max(size, min(min_rows - done, batch_size))
        rows = order[done:done + size]
        r = r_all[rows]
        for d in range(draws):
            r_ref = r_all[refs[d, rows]]
            grad_sum = torch.zeros_like(r)
            for t in ts:
                x = (r_ref + t * (r - r_ref)).requires_grad_(True)
                logits = similarity_matrix(img, tower(x)[:, 0].float(), center=center) / temperature  # (n, B)
                log_p = torch.log_softmax(logits, dim=0)[rows, torch.arange(len(rows))]
                (grad,) = torch.autograd.grad(log_p.sum(), x)
                grad_sum += grad
            attribution = (r - r_ref) * grad_sum / steps  # (B, K)
            magnitude += attribution.abs().sum(dim=0, dtype=torch.float64)
            signed += attribution.sum(dim=0, dtype=torch.float64)
        done += len(rows)
    used = np.sort(order[:done].numpy())
    return Attribution((magnitude / (done * draws)).numpy(), (signed / (done * draws)).numpy(), used)


@torch.no_grad()
def neural_maps(tower: torch.nn.Module, responses: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The tower's maps `(n, h, w)` of `responses (n, K)` (eval mode expected)."""
    r = torch.as_tensor(np.asarray(responses, dtype=np.float32))
    return torch.cat([tower(chunk)[:, 0].float() for chunk in r.split(batch_size)]).numpy()


@torch.no_grad()
def native_importance(tower: torch.nn.Module, responses: np.ndarray, max_samples: int = NATIVE_SAMPLES,
                      batch_size: int = 4, max_seconds: float | None = None) -> tuple[np.ndarray, str, int]:
    """The block's own per-neuron measure `(K,)` summing to 1, its label and how many samples it used:
    linear -- encoder column norm x response SD over all rows; attention blocks -- attention received
    in the first layer, averaged over the first `max_samples` rows (with `max_seconds`: no new batch
    after that time, at least one batch)."""
    r = torch.as_tensor(np.asarray(responses, dtype=np.float32))
    if isinstance(tower, LinearNeuralTower):
        v = tower.encoder.weight.float().norm(dim=0) * r.std(dim=0)
        out = v.double() / v.double().sum().clamp_min(1e-300)
        return out.numpy(), "weight norm × response SD", len(r)
    if isinstance(tower, AttentionTower):
        acc = torch.zeros(r.shape[1], dtype=torch.float64)
        start, used = time.monotonic(), 0
        for chunk in r[:max_samples].split(batch_size):
            if used and max_seconds is not None and time.monotonic() - start >= max_seconds:
                break
            acc += tower.neuron_importance(chunk).double().sum(dim=0)
            used += len(chunk)
        return (acc / acc.sum().clamp_min(1e-300)).numpy(), "attention received", used
    raise ValueError(f"no native importance for {type(tower).__name__}")


def run_importance(run_dir: str | Path, subject: Subject | None = None, data_dir: str | Path | None = None,
                   steps: int = STEPS, draws: int = DRAWS, batch_size: int = 256,
                   native_samples: int = NATIVE_SAMPLES, max_seconds: float | None = None) -> NeuronImportance:
    """Per-neuron importance of a finished run on its test split (see the module docstring). With
    `max_seconds`, the attribution and the block's own measure each stop starting new batches after
    that time (`n_used` says over how many test images the attribution averaged)."""
    side = load_trained_neural_side(run_dir, subject=subject, data_dir=data_dir)
    att = attribution_importance(side.tower, side.responses, side.image_maps, side.temperature, side.center,
                                 steps=steps, draws=draws, batch_size=batch_size, max_seconds=max_seconds)
    importance, net = att.magnitude, att.signed
    total = float(importance.sum())
    share = importance / total if total > 0 else np.full_like(importance, 1.0 / len(importance))
    maps = neural_maps(side.tower, side.responses[att.rows], batch_size=batch_size)
    stored = side.neural_maps[att.rows]
    scale = float(np.abs(stored).max()) or 1.0
    mismatch = float(np.abs(maps - stored).max()) / scale if maps.shape == stored.shape else math.inf
    warnings = []
    if mismatch > MISMATCH_TOLERANCE:
        warnings.append(f"best.pt does not reproduce the stored test maps (largest difference {mismatch:.2g} of the "
                        "map range); the run may have been re-trained or evaluated elsewhere — re-evaluate it")
        logger.warning("%s: %s", side.run_dir.name, warnings[-1])
    if total == 0:
        warnings.append("every attribution is 0 (the model's output does not depend on the responses)")
    native, label, native_n = native_importance(side.tower, side.responses, max_samples=native_samples,
                                                max_seconds=max_seconds)
    return NeuronImportance(block=side.block, importance=importance, share=share, net=net, n_test=len(side.responses),
                            n_used=len(att.rows), temperature=side.temperature, native=native, native_label=label,
                            native_n=native_n, map_mismatch=mismatch, warnings=warnings)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), vectorised."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    _, first, counts = np.unique(sorted_x, return_index=True, return_counts=True)
    mean_rank = first + (counts + 1) / 2.0  # mean of positions first+1 .. first+count
    ranks[order] = np.repeat(mean_rank, counts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation over the entries finite in both (NaN with < 3 such entries or a
    constant side)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return math.nan
    ra, rb = _ranks(a[ok]), _ranks(b[ok])
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else math.nan


def compare_with(share: np.ndarray, quality: np.ndarray, top_fraction: float = TOP_FRACTION) -> dict[str, Any]:
    """How importance relates to a per-neuron quality (reliability, true SNR), over the neurons where
    the quality is finite: Spearman correlation, the share of importance on the `top_fraction` best
    neurons by quality (`top_share`; `expected_share` is what a model blind to quality would give)
    and on the better half (`half_share`)."""
    share = np.asarray(share, dtype=np.float64)
    quality = np.asarray(quality, dtype=np.float64)
    if share.shape != quality.shape:
        raise ValueError(f"expected one quality value per neuron ({share.shape}), got {quality.shape}")
    ok = np.isfinite(quality) & np.isfinite(share)
    n = int(ok.sum())
    out: dict[str, Any] = {"n": n, "spearman": spearman(share, quality), "top_fraction": top_fraction,
                           "top_n": 0, "top_share": math.nan, "expected_share": math.nan, "half_share": math.nan}
    if n == 0:
        return out
    s, q = share[ok], quality[ok]
    order = np.argsort(-q, kind="stable")
    top_n = max(1, int(round(top_fraction * n)))
    total = float(s.sum())
    if total > 0:
        out.update(top_share=float(s[order[:top_n]].sum() / total), half_share=float(s[order[:n // 2]].sum() / total))
    out.update(top_n=top_n, expected_share=top_n / n)
    return out


def verdict_of(stats: dict[str, Any]) -> str:
    """"relies mostly on" | "leans towards" | "does not clearly favour" (from `compare_with` stats)."""
    rho, half = stats.get("spearman", math.nan), stats.get("half_share", math.nan)
    if rho > 0.3 and half >= 0.7:
        return "relies mostly on"
    if rho > 0.2 and half > 0.55:
        return "leans towards"
    return "does not clearly favour"


def summary_line(stats: dict[str, Any], what: str, measure: str = "importance") -> str:
    """One sentence for a page: does the model rely on the neurons that are best by `what` (by the
    given measure's shares)?"""
    if not stats or stats.get("n", 0) < 3 or not math.isfinite(stats.get("spearman", math.nan)):
        return f"Too few neurons with a finite {what} to compare."
    rho, half = stats["spearman"], stats["half_share"]
    verdict = verdict_of(stats)
    return (f"The model {verdict} the neurons with high {what}: Spearman ρ = {rho:.2f} between {measure} and "
            f"{what}. The {stats['top_n']:,} neurons with the highest {what} (top {stats['top_fraction']:.0%}) carry "
            f"{stats['top_share']:.0%} of the {measure}, the better half {half:.0%} (a model blind to {what} would "
            f"give them {stats['expected_share']:.0%} and 50\u00a0%).")


IMPORTANCE_FILE = "importance.npz"
_ARRAYS = ("importance", "share", "net", "native")


def save_importance(run_dir: str | Path, imp: NeuronImportance) -> Path:
    """Keep a run's importance in its folder (`importance.npz`, atomic): the job computes it once after
    training over ALL test images, so what the Neurons page shows never depends on machine load."""
    from neuroalign.io_utils import atomic_savez

    meta = {k: v for k, v in vars(imp).items() if k not in _ARRAYS}
    arrays = {k: np.asarray(getattr(imp, k), dtype=np.float64) for k in _ARRAYS if getattr(imp, k) is not None}
    path = Path(run_dir) / IMPORTANCE_FILE
    atomic_savez(path, meta=np.asarray(json.dumps(meta, default=float)), **arrays)
    return path


def load_importance(run_dir: str | Path) -> NeuronImportance | None:
    """The stored importance of a run, or None when absent, unreadable, or older than its best.pt."""
    path = Path(run_dir) / IMPORTANCE_FILE
    best = Path(run_dir) / runs_io.BEST_CKPT
    try:
        if not path.is_file() or (best.is_file() and best.stat().st_mtime > path.stat().st_mtime):
            return None
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in _ARRAYS if k in z.files}
        return NeuronImportance(**meta, **{k: arrays.get(k) for k in _ARRAYS})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable %s (%s)", path, exc)
        return None
