"""The plain attention readout and random tower parameters that the folded-path tests
(`test_folded.py`, `test_native.py`) compare against."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Position of each parameter in `random_params(...)` (and after the response input `r` in
#: `[r, *params]`, shifted by one).
PARAM_NAMES = ("embed_weight", "embed_bias", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo",
               "readout_weight", "readout_bias")


def plain_readout(r, ew, eb, wq, bq, wk, bk, wv, bv, wo, bo, rw, rb, n_heads):
    """Straightforward reference: tokens, q/k/v per head, softmax attention, out-proj, readout."""
    b, k = r.shape
    d = ew.shape[1]
    dh = d // n_heads
    tokens = r[:, :, None] * ew + eb
    heads = lambda x: x.reshape(b, k, n_heads, dh).transpose(1, 2)  # noqa: E731
    q, kk, v = heads(F.linear(tokens, wq, bq)), heads(F.linear(tokens, wk, bk)), heads(F.linear(tokens, wv, bv))
    att = torch.softmax(q @ kk.transpose(-1, -2) / math.sqrt(dh), dim=-1)
    y = F.linear((att @ v).transpose(1, 2).reshape(b, k, d), wo, bo)
    return (y * rw).sum(-1) + rb


def random_params(k: int, d: int, seed: int = 0, dtype=torch.float64) -> list[torch.Tensor]:
    """Seeded parameters in the order of `PARAM_NAMES`, each requiring grad."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s, scale=1.0: (torch.randn(*s, generator=g, dtype=dtype) * scale).requires_grad_()  # noqa: E731
    ps = [rnd(k, d), rnd(k, d)]
    for _ in range(4):
        ps += [rnd(d, d, scale=d ** -0.5), rnd(d, scale=0.3)]
    return ps + [rnd(k, d, scale=0.3), rnd(k, scale=0.3)]
