"""Which neurons drive the alignment: per-neuron importance of a finished run, comparable across neural
tower kinds.

Primary measure (any neural tower: reference, transformer, latent, linear): attributions of the
contrastive log-probability of the true match. For the test response `r_j` (normalised as in
training), the neural -> image query scores every test image's map against the neural map of `r_j`:

    log p_j(r) = log softmax_i( sim(image_map_i, neural_map(r)) / T )[i = j]

which depends on the response alone (the image maps are fixed), so one backward pass over a batch
gives every sample's gradient. Attributions are expected gradients (integrated gradients with the
reference drawn from the data): for a reference response `r'` of another test image,
`(r_jk - r'_k) * mean_t d log p_j / d r_k` at `r' + t (r_j - r')`, which add up over neurons to
`log p_j(r_j) - log p_j(r')`: how much each neuron makes the response identify its own image rather
than another one. A neuron's importance is its mean absolute attribution over the TEST images and
the reference draws, in eval mode; `share` is importance / total, so runs with different neural towers
(and different numbers of neurons) compare. Vectorised over neurons and batched over samples.

Second measure, where a tower has a natural one: the attention towers' `neuron_importance` (attention
each neuron receives in the first layer, averaged over a few test samples), the linear tower's encoder
column norms times each neuron's response standard deviation over the test images.

The image side is not recomputed: the run's `test_outputs.npz` holds the image-tower test maps the
evaluation scored, and the neural maps recomputed here from `best.pt` are checked against the stored
ones (`map_mismatch`). Loading a run for this (`neuroalign.training.run_eval.run_importance`) is from
the run folder alone (config, split, normaliser, best.pt, test outputs) plus the subject's responses,
so no backbone runs (rebuilding the trainer would compute the backbone features of every image first);
this module holds the measures on towers and arrays.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from neuroalign.models import LinearNeuralTower, similarity_matrix
from neuroalign.models.neural.parts import AttentionTower

logger = logging.getLogger(__name__)

STEPS = 8  # quadrature points on the path from a reference response to the response
DRAWS = 2  # reference responses per test response
MIN_ROWS = 32  # a time budget never averages over fewer test images than this
MAX_SECONDS = 20.0  # the dashboard's time budget for the attribution (a linear tower never needs it)
NATIVE_SAMPLES = 64  # test samples the attention towers' own measure averages over (it costs B*K^2)
MISMATCH_TOLERANCE = 1e-2  # recomputed vs stored neural maps (relative max difference) above this: warn
TOP_FRACTION = 0.1


@dataclass
class NeuronImportance:
    """Per-neuron importance of one run (all arrays `(K,)`)."""

    kind: str  # the neural tower's kind ("read-in" for a shared run's per-subject read-in)
    importance: np.ndarray  # mean |attribution| of the true match's log-probability (see attribution_importance)
    share: np.ndarray  # importance / sum (sums to 1)
    net: np.ndarray  # mean signed attribution (sums to the mean log-probability gain over a reference response)
    n_test: int
    n_used: int  # test images the attribution averaged over (n_test unless a time budget cut it short)
    temperature: float
    native: np.ndarray | None = None  # the tower's own measure, normalised to sum to 1
    native_label: str = ""
    native_n: int = 0  # test samples the native measure averaged over
    map_mismatch: float = 0.0  # max |recomputed - stored neural map| / max |stored|
    warnings: list[str] = field(default_factory=list)


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
    tower (attention over 10,000 neurons) averages over a random subset of the test images.
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
    """The tower's own per-neuron measure `(K,)` summing to 1, its label and how many samples it used:
    linear -- encoder column norm x response SD over all rows; attention towers -- attention received
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
