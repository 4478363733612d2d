"""The per-sample part of the folded attention as plain tensor functions (the maths is in
`neuroalign.models.folded`'s docstring): the eager tiles, in place on one `(c, h, R, K)` buffer at a
time, and the pure chunk functions that torch.compile fuses. `folded._FoldedAttention` picks between
them and the fused CPU kernels (`neuroalign.models.native`).

Every function takes the six `(h, K, K)` blocks `ms = (M1, M2, M3, M4, N1, N2)` of
`folded.split_blocks`; nothing here holds state.
"""

from __future__ import annotations

import torch
from torch import Tensor


# ---------------------------------------------------------------------------------------------
# Eager path: in-place operations on one (c, h, K, K) buffer at a time (lean memory, any shape).
# ---------------------------------------------------------------------------------------------

def chunk_probs_and_values(rc: Tensor, m1: Tensor, m2: Tensor, m3: Tensor, m4: Tensor,
                           n1: Tensor, n2: Tensor, r_rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Softmax P and values W_bij = r_bj N1_ij + N2_ij, each (c, h, R, K), of one tile.

    rc (c, K) are the tile's samples (all columns j); the matrices are the tile's row slices
    (h, R, K) and r_rows (c, R) the responses of those rows (default: all rows, R = K)."""
    rj = rc[:, None, None, :]
    s = torch.addcmul(m2, m1, rj)  # r_j M1 + M2
    s.mul_((rc if r_rows is None else r_rows)[:, None, :, None])
    s.addcmul_(m3, rj)
    s.add_(m4)
    p = torch.softmax(s, dim=-1)
    del s
    return p, torch.addcmul(n2, n1, rj)


def _tiles(n: int, chunk: int, k: int, rows: int):
    """(sample slice, row slice) of each tile: softmax rows are independent, so rows tile freely."""
    for start in range(0, n, chunk):
        for i0 in range(0, k, rows):
            yield slice(start, start + chunk), slice(i0, i0 + rows)


def eager_forward(r: Tensor, ms: tuple[Tensor, ...], chunk: int, rows: int) -> Tensor:
    out = r.new_empty(r.shape)
    for bs, rs in _tiles(r.shape[0], chunk, r.shape[1], rows):
        p, w = chunk_probs_and_values(r[bs], *(m[:, rs] for m in ms), r_rows=r[bs, rs])
        out[bs, rs] = p.mul_(w).sum(dim=(1, 3))
        del p, w
    return out


def eager_backward(r: Tensor, grad: Tensor, ms: tuple[Tensor, ...], chunk: int, rows: int, need_r: bool,
                    acc: list[Tensor]) -> Tensor | None:
    """Adds this batch's gradients into acc = [dM1, dM2, dM3, dM4, dN1, dN2]; returns dr if asked."""
    dr = torch.zeros_like(r) if need_r else None
    for bs, rs in _tiles(r.shape[0], chunk, r.shape[1], rows):
        rc, rr, gc = r[bs], r[bs, rs], grad[bs, rs]
        m1, m2, m3, m4, n1, n2 = (m[:, rs] for m in ms)
        dm1, dm2, dm3, dm4, dn1, dn2 = (a[:, rs] for a in acc)  # views: += writes into acc
        rj, ri = rc[:, None, None, :], rr[:, None, :, None]
        p, w = chunk_probs_and_values(rc, m1, m2, m3, m4, n1, n2, r_rows=rr)
        zp = (p * w).sum(-1, keepdim=True)  # per-head output before the head sum
        q = p.mul_(gc[:, None, :, None])  # dL/dW_bij = g_bi P_bij
        dn2 += q.sum(0)
        if need_r:
            dr[bs] += torch.einsum("chij,hij->cj", q, n1)
        ds = w.sub_(zp).mul_(q)  # softmax backward: P * (dP - sum_j P dP), dP_ij = g_i W_ij
        dn1 += q.mul_(rj).sum(0)
        del q, p
        if need_r:
            # s_bij depends on r_bi through (r_bj M1 + M2) and on r_bj through (r_bi M1 + M3).
            dr[bs, rs] += torch.einsum("chij,hij,cj->ci", ds, m1, rc) + torch.einsum("chij,hij->ci", ds, m2)
            dr[bs] += torch.einsum("chij,hij,ci->cj", ds, m1, rr) + torch.einsum("chij,hij->cj", ds, m3)
        dm4 += ds.sum(0)
        t = ds * rj
        dm3 += t.sum(0)
        dm2 += ds.mul_(ri).sum(0)
        dm1 += t.mul_(ri).sum(0)
        del ds, t, w
    return dr


# ---------------------------------------------------------------------------------------------
# Compiled path: the same chunk maths as pure functions, fused by torch.compile (Triton on a GPU,
# vectorised C++ on a CPU). Chunks have a fixed size (the last one is zero-padded) so one
# compilation serves a whole run.
# ---------------------------------------------------------------------------------------------

def chunk_forward(rc: Tensor, m1: Tensor, m2: Tensor, m3: Tensor, m4: Tensor, n1: Tensor,
                  n2: Tensor) -> Tensor:
    """z (c, K) of one chunk rc (c, K), without beta; pure (the function torch.compile fuses)."""
    dt = rc.dtype
    rj, ri = rc[:, None, None, :], rc[:, None, :, None]
    s = ri * (rj * m1.to(dt) + m2.to(dt)) + rj * m3.to(dt) + m4.to(dt)
    p = torch.softmax(s, dim=-1)
    return (p * (rj * n1.to(dt) + n2.to(dt))).sum(dim=(1, 3))


def chunk_backward(rc: Tensor, gc: Tensor, m1: Tensor, m2: Tensor, m3: Tensor, m4: Tensor,
                   n1: Tensor, n2: Tensor) -> tuple[Tensor, ...]:
    """(dM1, dM2, dM3, dM4, dN1, dN2), each (h, K, K), of one chunk for output gradient gc (c, K)."""
    dt = rc.dtype
    rj, ri = rc[:, None, None, :], rc[:, None, :, None]
    s = ri * (rj * m1.to(dt) + m2.to(dt)) + rj * m3.to(dt) + m4.to(dt)
    p = torch.softmax(s, dim=-1)
    w = rj * n1.to(dt) + n2.to(dt)
    zp = (p * w).sum(-1, keepdim=True)
    q = p * gc[:, None, :, None]
    ds = q * (w - zp)
    return ((ds * ri * rj).sum(0), (ds * ri).sum(0), (ds * rj).sum(0), ds.sum(0),
            (q * rj).sum(0), q.sum(0))
