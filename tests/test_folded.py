"""The folded attention path computes exactly the plain embed -> MHA -> readout function."""

from __future__ import annotations

import pytest
import torch
from attention_reference import PARAM_NAMES, plain_readout, random_params

from neuroalign.models import folded, folded_tiles
from neuroalign.models.folded import (
    auto_chunk_size,
    auto_row_block,
    fold_blocks,
    folded_attention_readout,
    set_compile_mode,
)
from neuroalign.models.folded_tiles import chunk_backward, chunk_forward
from neuroalign.models.neural_tower import make_neural_tower


@pytest.mark.parametrize("n_heads,chunk,rows", [(1, None, None), (3, 2, None), (4, 5, 4), (2, 3, 1)])
def test_folded_equals_plain_outputs_and_gradients(n_heads: int, chunk: int | None, rows: int | None) -> None:
    b, k, d = 7, 9, 12
    ps = random_params(k, d, seed=n_heads)
    r = torch.rand(b, k, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 0.5
    r.requires_grad_()
    z_plain = plain_readout(r, *ps, n_heads)
    z_fold = folded_attention_readout(r, *ps, n_heads, chunk_size=chunk, row_block=rows)
    assert z_fold.shape == (b, k)
    torch.testing.assert_close(z_fold, z_plain, rtol=1e-10, atol=1e-10)
    g = torch.randn(b, k, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grads_plain = torch.autograd.grad(z_plain, [r, *ps], g)
    grads_fold = torch.autograd.grad(z_fold, [r, *ps], g)
    scale = max(gp.abs().max().item() for gp in grads_plain)
    for name, gp, gf in zip(("r", *PARAM_NAMES), grads_plain, grads_fold):
        torch.testing.assert_close(gf, gp, rtol=1e-9, atol=1e-10)
        if name == "bk":
            # softmax is shift-invariant per query row, and the key bias shifts every logit of a row by
            # q . bk: its exact gradient is 0, both paths give at most rounding noise
            assert gp.abs().max() <= 1e-13 * scale and gf.abs().max() <= 1e-13 * scale, (gp, gf)
        else:
            assert gf.abs().max() > 1e-6 * scale, f"{name}: gradient vanished"


def test_gradcheck_small() -> None:
    """Finite differences agree with the hand-written backward (a few inputs keep it fast)."""
    ps = [p.detach() for p in random_params(3, 4, seed=5)]
    for i in (0, 2, 6, 8, 10):  # embed_weight, wq, wv, wo, readout_weight
        ps[i].requires_grad_()
    r = torch.rand(3, 3, dtype=torch.float64).requires_grad_()
    fn = lambda r_, *p: folded_attention_readout(r_, *p, 2, chunk_size=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (r, *ps), fast_mode=True)


def test_chunk_functions_match_autograd() -> None:
    """The pure chunk functions (what torch.compile fuses) give the same values and M/N gradients."""
    k, d, h = 6, 8, 2
    mm, nn, _ = fold_blocks(*random_params(k, d, seed=3), h)
    ms = [m.detach().requires_grad_() for m in folded.split_blocks(mm, nn)]
    rc = torch.rand(4, k, dtype=torch.float64)
    gc = torch.randn(4, k, dtype=torch.float64)
    z = chunk_forward(rc, *ms)
    p, w = folded_tiles.chunk_probs_and_values(rc, *[m.detach() for m in ms])
    torch.testing.assert_close(z.detach(), (p * w).sum(dim=(1, 3)))
    expected = torch.autograd.grad(z, ms, gc)
    for got, want in zip(chunk_backward(rc, gc, *[m.detach() for m in ms]), expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_compiled_driver_pads_last_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixed-size-chunk driver (padding + accumulation) is exact; compile itself is swapped for
    the eager pure functions so the test stays fast."""
    monkeypatch.setattr(folded, "_compiled_fn", lambda name: chunk_forward if name == "forward" else chunk_backward)
    monkeypatch.setenv(folded.COMPILE_ENV, "on")
    b, k, d = 7, 5, 8
    ps = random_params(k, d, seed=7)
    r = torch.rand(b, k, dtype=torch.float64)
    z = folded_attention_readout(r, *ps, 2, chunk_size=3)  # chunks 3, 3, 1 (padded to 3)
    torch.testing.assert_close(z, plain_readout(r, *ps, 2))
    grads = torch.autograd.grad(z.sum(), ps)
    expected = torch.autograd.grad(plain_readout(r, *ps, 2).sum(), ps)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_compile_failure_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    def broken(name):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(folded, "_compiled_fn", broken)
    monkeypatch.setenv(folded.COMPILE_ENV, "on")
    monkeypatch.setattr(folded, "_compile_failed", False)
    ps = random_params(4, 6, seed=8)
    r = torch.rand(3, 4, dtype=torch.float64)
    with caplog.at_level("WARNING", logger="neuroalign.models.folded"):
        z = folded_attention_readout(r, *ps, 1)
    torch.testing.assert_close(z, plain_readout(r, *ps, 1))
    assert folded._compile_failed and "eager" in caplog.text


def test_memory_saved_for_backward_is_independent_of_batch() -> None:
    """Nothing of size (B, K, K) is kept for backward: only the inputs and the K x K matrices."""
    k, d, h, b = 20, 8, 2, 64
    ps = [p.detach().float().requires_grad_() for p in random_params(k, d)]
    r = torch.rand(b, k)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        folded_attention_readout(r, *ps, h, chunk_size=4).sum().backward()
    assert max(saved) <= max(h * (2 * k) ** 2, b * k)  # the folded blocks MM (h, 2K, 2K), or (B, K) inputs
    assert max(saved) < b * k * k


def test_tower_folded_matches_plain_path() -> None:
    torch.manual_seed(0)
    tower = make_neural_tower(n_neurons=11, d_model=16, n_heads=2).double()
    assert tower.is_reference_form and tower.use_folded
    r = torch.rand(6, 11, dtype=torch.float64)
    z_plain = tower._plain_attention_readout(r)
    z_fold = tower._folded_attention_readout(r)
    torch.testing.assert_close(z_fold, z_plain, rtol=1e-10, atol=1e-10)
    params = [p for n, p in tower.named_parameters() if not n.startswith("mlp")]
    g_plain = torch.autograd.grad(z_plain.square().sum(), params)
    g_fold = torch.autograd.grad(z_fold.square().sum(), params)
    for gp, gf in zip(g_plain, g_fold):
        torch.testing.assert_close(gf, gp, rtol=1e-9, atol=1e-10)
    maps_fold = tower(r)
    tower.use_folded = False
    torch.testing.assert_close(maps_fold, tower(r), rtol=1e-9, atol=1e-10)


def test_autocast_bf16_stays_close_to_float32() -> None:
    ps = [p.detach().float().requires_grad_() for p in random_params(10, 16, seed=4)]
    r = torch.rand(5, 10)
    exact = plain_readout(r, *ps, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = folded_attention_readout(r, *ps, 2)
    assert z.dtype == torch.float32
    assert (z - exact).abs().max() < 0.05 * exact.abs().max()
    z.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in ps)


def test_errors_and_chunk_size() -> None:
    ps = random_params(4, 6)
    with pytest.raises(ValueError, match="4"):
        folded_attention_readout(torch.rand(2, 5, dtype=torch.float64), *ps, 1)
    with pytest.raises(ValueError, match="divisible"):
        folded_attention_readout(torch.rand(2, 4, dtype=torch.float64), *ps, 4)
    with pytest.raises(ValueError, match="chunk_size"):
        folded_attention_readout(torch.rand(2, 4, dtype=torch.float64), *ps, 1, chunk_size=0)
    with pytest.raises(ValueError, match="compile mode"):
        set_compile_mode("sometimes")
    with pytest.raises(ValueError, match="compile mode"):
        folded_attention_readout(torch.rand(2, 4, dtype=torch.float64), *ps, 1, compile_mode="sometimes")
    with pytest.raises(ValueError, match="row_block"):
        folded_attention_readout(torch.rand(2, 4, dtype=torch.float64), *ps, 1, row_block=0)
    # GPU: whole-row tiles within the budget; CPU eager: >= 16 samples, rows tiled to fit the cache
    assert auto_chunk_size(128, 10_000, 1, "cuda") == 1
    assert auto_chunk_size(128, 100, 1, "cuda") == 128
    assert auto_chunk_size(128, 10_000, 1, "cpu") == 16
    assert auto_row_block(16, 10_000, 1, "cuda") == 10_000
    rows = auto_row_block(16, 3000, 1, "cpu")
    assert 1 <= rows < 3000 and 16 * rows * 3000 <= folded._CHUNK_ELEMENTS["cpu"]
    assert auto_row_block(16, 10**6, 1, "cpu") == 1
    assert auto_row_block(4, 20, 1, "cpu") == 20
    # compiled kernels: one chunk shape per K whatever the batch (short batches are zero-padded)
    assert auto_chunk_size(12, 450, 1, "cuda", compiled=True) == auto_chunk_size(128, 450, 1, "cuda", compiled=True)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's own imports (torch.jit)
def test_torch_compile_path_really_compiles_and_matchesplain_readout(monkeypatch) -> None:
    """The compiled chunk functions (the default on CUDA) through a real torch.compile, here with
    inductor's CPU backend: same outputs and gradients as the plain path, no fallback taken."""
    from neuroalign.models import native

    monkeypatch.setenv(folded.COMPILE_ENV, "on")
    monkeypatch.setattr(folded, "_compile_failed", False)
    monkeypatch.setattr(folded, "_compiled", {})
    monkeypatch.setenv(native.NATIVE_ENV, "off")  # keep the fused CPU kernels out of the way
    ps = [p.detach().float().requires_grad_() for p in random_params(40, 16, seed=2)]
    r = torch.rand(10, 40, generator=torch.Generator().manual_seed(3))
    z = folded_attention_readout(r, *ps, 2, chunk_size=4)  # chunks 4, 4, 2 (padded)
    grads = torch.autograd.grad(z.square().sum(), ps)
    assert not folded._compile_failed and set(folded._compiled) == {"forward", "backward"}
    z_plain = plain_readout(r, *ps, 2)
    torch.testing.assert_close(z, z_plain, rtol=1e-4, atol=1e-4 * z_plain.abs().max().item())
    wants = torch.autograd.grad(z_plain.square().sum(), ps)
    largest = max(w.abs().max().item() for w in wants)  # floor for the key bias, whose exact gradient is 0
    for got, want in zip(grads, wants):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item() + 1e-5 * largest)


def test_compile_and_native_modes_are_read_per_call(monkeypatch) -> None:
    """No module-level switch: the environment is read at each call, an argument overrides it for
    that call only, and nothing in the package sets either mode (a job cannot change another's)."""
    from pathlib import Path

    from neuroalign.models import native

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(folded, "_compile_failed", False)
    monkeypatch.setenv(folded.COMPILE_ENV, "off")
    assert not folded._use_compiled(cuda) and folded._use_compiled(cuda, "auto")
    monkeypatch.setenv(folded.COMPILE_ENV, "auto")
    assert folded._use_compiled(cuda) and not folded._use_compiled(cpu) and folded._use_compiled(cpu, "on")
    monkeypatch.delenv(folded.COMPILE_ENV)
    assert folded.compile_mode() == "auto"
    monkeypatch.setenv(folded.COMPILE_ENV, "sometimes")
    with pytest.raises(ValueError, match=r"NEUROALIGN_FOLDED_COMPILE.*'sometimes'"):
        folded.compile_mode()
    monkeypatch.setenv(native.NATIVE_ENV, "off")
    assert native.native_mode() == "off" and native.native_mode("auto") == "auto"
    assert native.load() is None
    root = Path(folded.__file__).parents[1]
    setters = [str(p.relative_to(root)) for p in root.rglob("*.py")
               if p.name not in ("folded.py", "native.py") and ("set_compile_mode(" in p.read_text()
                                                                or "set_native_mode(" in p.read_text())]
    assert not setters, f"package modules that change the process-wide folded/native modes: {setters}"
