"""Folded exact paths of the neural towers: the reference attention (embed -> multi-head attention ->
readout, below) and the latent tower's cross-attention (`folded_latent_cross_attention`).

In the reference form every neuron token is an affine function of one scalar,
``e_bi = r_bi * W_i + B_i``, and nothing nonlinear sits between the embedding, the q/k/v
projections, the attention and the per-neuron readout except the softmax. So, per head ``h``
(head slice of width ``d_h``, PyTorch ``nn.Linear`` convention ``y = x Wq^T + bq``)::

    q_bi = r_bi Aq_i + Cq_i      Aq = W Wq^T,  Cq = B Wq^T + bq     (K, d) once per step
    k_bj = r_bj Ak_j + Ck_j      (likewise k and v)
    s_bij = (r_bi r_bj M1_ij + r_bi M2_ij + r_bj M3_ij + M4_ij) / sqrt(d_h)
            M1 = Aq Ak^T, M2 = Aq Ck^T, M3 = Cq Ak^T, M4 = Cq Ck^T     (K, K) per head
    z_bi = sum_h sum_j softmax_j(s_b)_ij (r_bj N1_ij + N2_ij) + beta_i
            N1 = G Av^T, N2 = G Cv^T with G = R Wo_h (readout folded through the out-projection),
            beta = R bo + c

This is the same function as the plain computation, but it costs O(K^2) per sample instead of
O(K^2 d + K d^2): the d-dimensional work happens once per step in the K x K matrices.

The K x K matrices are built as two blocks, MM = [[M1, M2], [M3, M4]] and NN = [N1, N2]
(`fold_blocks`), by ordinary autograd matmuls, so gradients reach every parameter through them.
The per-sample part is a custom autograd function with three implementations: fused C++ kernels
on a CPU in float32 (`neuroalign.models.native`, csrc/folded_cpu.cpp), torch.compile'd chunk
functions (CUDA by default) and eager tiles (everything else, and the fallback of both); the
tensor maths of the last two is in `neuroalign.models.folded_tiles`, the choice between them here.
Nothing of size (B, K, K) is kept between forward and backward (the backward recomputes the
softmax), so memory stays bounded at any K.

Which path runs is decided per call: $NEUROALIGN_FOLDED_COMPILE and $NEUROALIGN_NATIVE are read at
each call unless the call passes `compile_mode=` / `native_mode=`; there is no module-level switch
a job could flip for another (`set_compile_mode` sets the environment variable, for benchmarks).
`config.head_dim` is the one check that d_model splits into n_heads heads. This module imports
nothing from the towers.
"""

from __future__ import annotations

import logging
import math
import os

import torch
from torch import Tensor

from neuroalign import settings
from neuroalign.config import head_dim
from neuroalign.models import native
from neuroalign.models.folded_tiles import chunk_backward, chunk_forward, eager_backward, eager_forward

logger = logging.getLogger(__name__)

# Elements of one (chunk, heads, rows, K) tile that the automatic sizes aim for. On a CPU the eager
# path is memory-bound, so tiles stay small enough for the L2 cache: at least _CPU_MIN_CHUNK samples
# per tile (to amortise the gradient accumulators) and as many softmax rows as fit. On a GPU tiles
# are whole rows and large (fewer launches).
_CHUNK_ELEMENTS = {"cpu": 1 << 17, "cuda": 1 << 27}
_COMPILED_CHUNK_ELEMENTS = {"cpu": 1 << 21, "cuda": 1 << 30}
_CPU_MIN_CHUNK = 16
_COMPILED_MAX_CHUNK = 64


def auto_chunk_size(batch: int, n_neurons: int, n_heads: int, device_type: str = "cpu",
                    compiled: bool = False) -> int:
    """Samples per chunk: whole (chunk, heads, K, K) tiles near the device's budget; on a CPU (eager)
    at least _CPU_MIN_CHUNK samples, with the rows tiled instead (`auto_row_block`). Compiled
    chunks do not depend on `batch`, so every batch of a run reuses one compiled shape."""
    budgets = _COMPILED_CHUNK_ELEMENTS if compiled else _CHUNK_ELEMENTS
    budget = budgets.get(device_type, budgets["cpu"])
    chunk = budget // max(1, n_heads * n_neurons * n_neurons)
    if compiled:  # independent of the batch size: one compiled shape per K (smaller batches are padded)
        return int(max(1, min(_COMPILED_MAX_CHUNK, chunk)))
    if device_type == "cpu":
        chunk = max(chunk, _CPU_MIN_CHUNK)
    return int(max(1, min(batch, chunk)))


def auto_row_block(chunk: int, n_neurons: int, n_heads: int, device_type: str = "cpu") -> int:
    """Softmax rows per tile of the eager path (all K rows off the CPU)."""
    if device_type != "cpu":
        return n_neurons
    rows = _CHUNK_ELEMENTS["cpu"] // max(1, chunk * n_heads * n_neurons)
    return int(max(1, min(n_neurons, rows)))


def fold_blocks(
    embed_weight: Tensor, embed_bias: Tensor,
    wq: Tensor, bq: Tensor, wk: Tensor, bk: Tensor, wv: Tensor, bv: Tensor,
    wo: Tensor, bo: Tensor, readout_weight: Tensor, readout_bias: Tensor, n_heads: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """The per-step folded matrices as two blocks: MM (h, 2K, 2K), NN (h, K, 2K) and beta (K,).

    With E = [W; B] (2K, d) the embedding rows (the first K multiply r, the last K are constant),
    MM = [[M1, M2], [M3, M4]] and NN = [N1, N2] (see the module docstring). M1..M4 already carry the
    1/sqrt(d_h) attention scale. Differentiable in all parameters.

    - One head (the reference): q.k = (E_I Wq^T + bq)(Wk E_J^T + bk), so MM = (E (Wq^T Wk) + bq Wk) E^T
      plus the key-bias term; Wq^T Wk is one d x d product, which saves computing both E Wq^T and
      E Wk^T. Likewise NN = (R (Wo Wv)) E^T.
    - The value bias adds R_i Wo bv to z_bi whatever the attention weights (they sum to 1), so it
      joins beta instead of NN.
    """
    k, d = embed_weight.shape
    dh = head_dim(d, n_heads)
    scale = 1.0 / math.sqrt(dh)
    e = torch.cat([embed_weight, embed_bias])  # (2K, d)

    def with_bias(x: Tensor, bias: Tensor) -> Tensor:  # the bias only on the constant (last K) rows
        return torch.cat([x[:k], x[k:] + bias])

    if n_heads == 1:
        x = with_bias(e @ (wq.T @ wk), bq @ wk)  # (2K, d)
        key_bias = with_bias(e @ (wq.T @ bk), bq @ bk)  # (2K,): q_I . bk, only in the last K columns
        const = torch.cat([e.new_zeros(k), e.new_ones(k)])
        # One GEMM with the key-bias term as an extra column, [x, q.bk] [E, const]^T, padded with zero
        # columns to a multiple of 8 so that GPU tensor cores get aligned rows (d + 1 is odd)
        pad = e.new_zeros(2 * k, (-(d + 1)) % 8)
        mm = (torch.cat([x, key_bias[:, None], pad], dim=1).mul(scale)
              @ torch.cat([e, const[:, None], pad], dim=1).T)
        nn = (readout_weight @ (wo @ wv)) @ e.T  # (K, 2K)
        mm, nn = mm[None], nn[None]
    else:
        def split(x: Tensor) -> Tensor:  # (n, d) -> (h, n, d_h)
            return x.reshape(x.shape[0], n_heads, dh).transpose(0, 1)

        x = split(with_bias(e @ wq.T, bq) * scale)
        y = split(with_bias(e @ wk.T, bk))
        mm = x @ y.transpose(1, 2)  # (h, 2K, 2K)
        nn = split(readout_weight @ wo) @ split(e @ wv.T).transpose(1, 2)  # (h, K, 2K)
    beta = readout_weight @ (bo + wo @ bv) + readout_bias
    return mm, nn, beta


def split_blocks(mm: Tensor, nn: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Views M1, M2, M3, M4, N1, N2, each (h, K, K), of the blocks MM (h, 2K, 2K) and NN (h, K, 2K)."""
    k = nn.shape[1]
    return (mm[:, :k, :k], mm[:, :k, k:], mm[:, k:, :k], mm[:, k:, k:], nn[:, :, :k], nn[:, :, k:])


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Per-sample work runs in float32 when the folded matrices are half/bfloat16 (autocast)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


COMPILE_ENV = "NEUROALIGN_FOLDED_COMPILE"
COMPILE_MODES = settings.COMPILE_MODES
# Process-wide caches, not switches: the compiled chunk functions, and whether compiling failed
# once (a broken toolchain is not retried on every step).
_compiled: dict[str, object] = {}
_compile_failed = False


def compile_mode(override: str | None = None) -> str:
    """The compile mode of one call: `override` when given, else $NEUROALIGN_FOLDED_COMPILE as it is
    now (default "auto"). "auto": compile on CUDA only; "on": also on a CPU; "off": always eager.
    Compilation takes tens of seconds once per shape, which pays off in a real training run but
    not in unit tests."""
    if override is None:
        return settings.get(COMPILE_ENV)
    return settings.check_choice(override, COMPILE_MODES, "compile mode")


def set_compile_mode(mode: str) -> None:
    """Set $NEUROALIGN_FOLDED_COMPILE for this process and the workers it starts (benchmarks and
    tests; nothing in the package calls it -- a run passes `compile_mode=` per call instead)."""
    os.environ[COMPILE_ENV] = compile_mode(mode)


def _use_compiled(device: torch.device, mode: str | None = None) -> bool:
    """Whether a call with compile mode `mode` (None: the environment's) on `device` compiles."""
    mode = compile_mode(mode)
    if _compile_failed or mode == "off":
        return False
    return mode == "on" or device.type == "cuda"


def _compiled_fn(name: str):
    if name not in _compiled:
        fn = chunk_forward if name == "forward" else chunk_backward
        _compiled[name] = torch.compile(fn, dynamic=False)
    return _compiled[name]


def _compiled_forward(r: Tensor, ms: tuple[Tensor, ...], chunk: int) -> Tensor:
    fwd = _compiled_fn("forward")
    out = r.new_empty(r.shape)
    for start in range(0, r.shape[0], chunk):
        rc = r[start:start + chunk]
        n = rc.shape[0]
        if n < chunk:  # zero-padded rows are valid inputs; their outputs are dropped
            rc = torch.cat([rc, rc.new_zeros(chunk - n, rc.shape[1])])
        out[start:start + n] = fwd(rc, *ms)[:n]
    return out


def _compiled_backward(r: Tensor, grad: Tensor, ms: tuple[Tensor, ...], chunk: int,
                       acc: list[Tensor]) -> None:
    bwd = _compiled_fn("backward")
    for start in range(0, r.shape[0], chunk):
        rc, gc = r[start:start + chunk], grad[start:start + chunk]
        n = rc.shape[0]
        if n < chunk:  # padded rows get zero output gradient, so they add nothing
            rc = torch.cat([rc, rc.new_zeros(chunk - n, rc.shape[1])])
            gc = torch.cat([gc, gc.new_zeros(chunk - n, gc.shape[1])])
        for a, g in zip(acc, bwd(rc, gc, *ms)):
            a += g


def _native_kernels(r: Tensor, need_r: bool, mode: str | None):
    """The fused CPU kernels when they apply: float32 on a CPU, no gradient for r (the responses are
    data in training; a gradient for r takes the eager path), native mode `mode` not "off"."""
    if need_r or r.device.type != "cpu" or r.dtype != torch.float32:
        return None
    return native.load(mode)


class _FoldedAttention(torch.autograd.Function):
    """z_bi = sum_h sum_j softmax_j(s_bh)_ij W_bhij over the batch (see module doc).

    Three implementations of the same per-sample part: the fused CPU kernels (float32 on a CPU,
    `neuroalign.models.native`), torch.compile'd chunk functions (CUDA by default) and the eager
    tiled path (everything else, and the fallback of both)."""

    @staticmethod
    def forward(ctx, r: Tensor, mm: Tensor, nn: Tensor, chunk: int, rows: int, compiled: bool,
                native_mode: str | None) -> Tensor:
        ctx.chunk, ctx.rows, ctx.compiled = chunk, rows, compiled
        with torch.autocast(r.device.type, enabled=False):
            ctx.kernels = _native_kernels(r, ctx.needs_input_grad[0], native_mode)
            if ctx.kernels is not None:
                mm32, nn32 = mm.to(r.dtype).contiguous(), nn.to(r.dtype).contiguous()
                z, lse, zh = ctx.kernels.folded_forward(r.contiguous(), mm32, nn32)
                ctx.save_for_backward(r, mm, nn, lse, zh)
                return z
            ctx.save_for_backward(r, mm, nn)
            ms = split_blocks(mm, nn)
            if compiled and not _compile_failed:
                try:
                    return _compiled_forward(r, ms, chunk)
                except Exception as exc:  # a broken compiler toolchain must not stop training
                    _disable_compile(exc)
            return eager_forward(r, _upcast(ms, r.dtype), chunk, rows)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        r, mm, nn, *stats = ctx.saved_tensors
        need_r = ctx.needs_input_grad[0]
        grad_out = grad_out.to(r.dtype).contiguous()
        dr = None
        with torch.autocast(r.device.type, enabled=False):
            if ctx.kernels is not None:  # the kernel writes every element of dmm and dnn
                dmm = torch.empty(mm.shape, dtype=r.dtype, device=r.device)
                dnn = torch.empty(nn.shape, dtype=r.dtype, device=r.device)
                ctx.kernels.folded_backward(r.contiguous(), grad_out, *stats, mm.to(r.dtype).contiguous(),
                                              nn.to(r.dtype).contiguous(), dmm, dnn)
            else:
                dmm = torch.zeros(mm.shape, dtype=r.dtype, device=r.device)
                dnn = torch.zeros(nn.shape, dtype=r.dtype, device=r.device)
                ms = split_blocks(mm, nn)
                acc = list(split_blocks(dmm, dnn))  # views: the paths add into dmm and dnn
                done = False
                if ctx.compiled and not _compile_failed and not need_r:
                    try:
                        _compiled_backward(r, grad_out, ms, ctx.chunk, acc)
                        done = True
                    except Exception as exc:
                        _disable_compile(exc)
                        dmm.zero_()
                        dnn.zero_()
                if not done:
                    dr = eager_backward(r, grad_out, _upcast(ms, r.dtype), ctx.chunk, ctx.rows, need_r, acc)
        return dr, dmm.to(mm.dtype), dnn.to(nn.dtype), None, None, None, None


def _upcast(ms: tuple[Tensor, ...], dtype: torch.dtype) -> tuple[Tensor, ...]:
    return tuple(m.to(dtype) for m in ms)


def _disable_compile(exc: Exception) -> None:
    global _compile_failed
    _compile_failed = True
    logger.warning("torch.compile of the folded attention failed (%s); using the eager path", exc)


def folded_attention_readout(
    r: Tensor, embed_weight: Tensor, embed_bias: Tensor,
    wq: Tensor, bq: Tensor, wk: Tensor, bk: Tensor, wv: Tensor, bv: Tensor,
    wo: Tensor, bo: Tensor, readout_weight: Tensor, readout_bias: Tensor,
    n_heads: int, chunk_size: int | None = None, row_block: int | None = None,
    compile_mode: str | None = None, native_mode: str | None = None,
) -> Tensor:
    """Per-neuron embed -> multi-head self-attention -> per-neuron readout, folded.

    r (B, K); embed_weight/embed_bias/readout_weight (K, d); wq..wo (d, d) and bq..bo (d,) in the
    ``nn.Linear`` convention; readout_bias (K,). Returns (B, K), the same function as the plain
    path (up to floating-point rounding), with gradients to every parameter (and to ``r`` when it
    requires grad). ``chunk_size`` samples and ``row_block`` softmax rows (eager path) are
    processed at a time (automatic when None) so temporaries stay bounded at large K. Under
    autocast the K x K matrices are built in the autocast dtype and the per-sample work runs in
    float32. ``compile_mode`` ("auto" | "on" | "off") and ``native_mode`` ("auto" | "off") override
    $NEUROALIGN_FOLDED_COMPILE and $NEUROALIGN_NATIVE, which are otherwise read at this call.
    """
    if r.dim() != 2:
        raise ValueError(f"responses must be (batch, neurons), got shape {tuple(r.shape)}")
    k = embed_weight.shape[0]
    if r.shape[1] != k:
        raise ValueError(f"responses have {r.shape[1]} neurons, the tower expects {k}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if row_block is not None and row_block < 1:
        raise ValueError(f"row_block must be >= 1, got {row_block}")
    mm, nn, beta = fold_blocks(
        embed_weight, embed_bias, wq, bq, wk, bk, wv, bv, wo, bo, readout_weight, readout_bias, n_heads)
    compiled = _use_compiled(r.device, compile_mode)
    native.native_mode(native_mode)  # a bad override or environment value fails here, not mid-step
    chunk = chunk_size or auto_chunk_size(r.shape[0], k, n_heads, r.device.type, compiled)
    rows = row_block or auto_row_block(chunk, k, n_heads, r.device.type)
    r = r.to(_compute_dtype(mm.dtype))
    z = _FoldedAttention.apply(r, mm, nn, chunk, rows, compiled, native_mode)
    return z + beta


def folded_latent_cross_attention(
    r: Tensor, query: Tensor, embed_weight: Tensor, embed_bias: Tensor,
    wk: Tensor, bk: Tensor, wv: Tensor, bv: Tensor, n_heads: int,
) -> Tensor:
    """Cross-attention of L sample-independent queries to the neuron tokens e_bj = r_bj W_j + B_j,
    without building the `(B, K, d)` tokens: `(B, L, d)` before the output projection.

    r (B, K); query (L, d) the projected queries (`q(LN(latents))`); embed_weight/embed_bias (K, d);
    wk, wv (d, d) and bk, bv (d,) in the ``nn.Linear`` convention. The tokens are affine in one scalar
    each and not normalised before the cross-attention, so per head logits_blj = r_bj P1_lj + P2_lj
    with P1 = q Ak^T, P2 = q Ck^T (Ak = W Wk^T, Ck = B Wk^T + bk, once per step), and the attended
    values are (P_b * r_b) Av + P_b Cv: two (B*L, K) x (K, d_h) products instead of K/V projections of
    B*K tokens (2*B*K*d^2). Linear in K, the same function as the plain computation."""
    b, k = r.shape
    n_lat, d = query.shape
    h = n_heads
    dh = head_dim(d, h)

    def heads(x: Tensor) -> Tensor:  # (n, d) -> (h, n, d_h)
        return x.reshape(x.shape[0], h, dh).transpose(0, 1)

    q = heads(query) / math.sqrt(dh)  # (h, L, d_h)
    ak, ck = heads(embed_weight @ wk.T), heads(embed_bias @ wk.T + bk)
    av, cv = heads(embed_weight @ wv.T), heads(embed_bias @ wv.T + bv)
    rj = r[None, :, None, :]  # (1, B, 1, K); head-major layout so the products below are plain bmm
    logits = torch.addcmul((q @ ck.transpose(1, 2))[:, None], (q @ ak.transpose(1, 2))[:, None], rj)
    p = torch.softmax(logits, dim=-1)  # (h, B, L, K)
    out = (p * rj).reshape(h, b * n_lat, k) @ av + p.reshape(h, b * n_lat, k) @ cv  # (h, B*L, d_h)
    return out.reshape(h, b, n_lat, dh).permute(1, 2, 0, 3).reshape(b, n_lat, d)
