"""The fused CPU kernels of the folded attention give the same function and gradients as the plain
path, do not depend on the thread count, and the folded path falls back to eager PyTorch when they
cannot be built."""

from __future__ import annotations

import shutil

import pytest
import torch
from attention_reference import plain_readout, random_params

from neuroalign.models import folded, folded_tiles, native
from neuroalign.models.folded import fold_blocks, folded_attention_readout
from neuroalign.models.neural_tower import make_neural_tower

HAS_COMPILER = shutil.which("c++") is not None or shutil.which("g++") is not None


@pytest.fixture(scope="module")
def kernels():
    if native.native_mode() == "off":
        pytest.skip("NEUROALIGN_NATIVE=off")
    module = native.load()
    if module is None and not HAS_COMPILER:
        pytest.skip("no C++ compiler on this machine: the folded path runs eager")
    assert module is not None, f"the fused CPU kernels did not build: {native.status()['error']}"
    return module


def _problem(b: int, k: int, d: int, h: int, seed: int):
    ps64 = random_params(k, d, seed=seed)
    r = torch.rand(b, k, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1)) * 2 - 0.5
    g = torch.randn(b, k, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 2))
    return ps64, r, g


@pytest.mark.parametrize("b,k,d,h", [(5, 150, 16, 1), (4, 37, 12, 3), (1, 9, 8, 1), (6, 130, 8, 2)])
def test_native_matches_plain_in_float64(kernels, b: int, k: int, d: int, h: int) -> None:
    """float32 kernels against the float64 plain computation: outputs and every parameter gradient.
    Sizes cover odd batches (the one-sample tail), K across the 128-column tiles, several heads."""
    ps64, r64, g64 = _problem(b, k, d, h, seed=10 * h + b)
    want = plain_readout(r64, *ps64, h)
    want_grads = torch.autograd.grad(want, ps64, g64)

    ps32 = [p.detach().float().requires_grad_() for p in ps64]
    calls = []
    real_forward = kernels.folded_forward

    class Spy:  # records that the fused forward (and so the fused backward) really ran
        def __getattr__(self, name):
            return getattr(kernels, name)

        def folded_forward(self, *args):
            calls.append(args[0].shape)
            return real_forward(*args)

    native._state["module"] = Spy()
    try:
        got = folded_attention_readout(r64.float(), *ps32, h)
        got_grads = torch.autograd.grad(got, ps32, g64.float())
    finally:
        native._state["module"] = kernels
    assert calls == [(b, k)]
    scale = want.abs().max()
    assert (got.double() - want).abs().max() <= 1e-5 * scale
    largest = max(gw.abs().max().item() for gw in want_grads)
    for name, gw, gg in zip(["ew", "eb", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "rw", "rb"],
                            want_grads, got_grads):
        # float32 rounding relative to this gradient, plus a floor for the key bias, whose exact
        # gradient is 0 (softmax ignores it) and which float32 only reaches up to cancellation
        tol = 1e-4 * gw.abs().max().item() + 1e-6 * largest
        assert (gg.double() - gw).abs().max() <= tol, name


def test_kernels_on_their_own_match_eager(kernels) -> None:
    """The kernel pair against the eager tiled path on the same folded blocks (float32 inputs,
    float64 eager reference): forward values and all six gradient blocks."""
    b, k, d, h = 7, 140, 8, 2
    ps, r64, g64 = _problem(b, k, d, h, seed=3)
    mm, nn, _ = (t.detach() for t in fold_blocks(*ps, h))
    z, lse, zh = kernels.folded_forward(r64.float(), mm.float(), nn.float())
    ms64 = folded.split_blocks(mm, nn)
    want = folded_tiles.eager_forward(r64, ms64, 4, 16)
    torch.testing.assert_close(z.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    dmm = torch.full_like(mm, float("nan"), dtype=torch.float32)  # the kernel must write every element
    dnn = torch.full_like(nn, float("nan"), dtype=torch.float32)
    kernels.folded_backward(r64.float(), g64.float(), lse, zh, mm.float(), nn.float(), dmm, dnn)
    acc = [torch.zeros_like(m) for m in ms64]
    folded_tiles.eager_backward(r64, g64, ms64, 4, 16, False, acc)
    for got, want in zip(folded.split_blocks(dmm, dnn), acc):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_result_does_not_depend_on_thread_count(kernels) -> None:
    ps, r64, g64 = _problem(9, 200, 8, 1, seed=4)
    mm, nn, _ = (t.detach().float() for t in fold_blocks(*ps, 1))
    r, g = r64.float(), g64.float()
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            z, lse, zh = kernels.folded_forward(r, mm, nn)
            dmm, dnn = torch.empty_like(mm), torch.empty_like(nn)
            kernels.folded_backward(r, g, lse, zh, mm, nn, dmm, dnn)
            outs.append((z, dmm, dnn))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_non_finite_logits_give_nan_not_a_silent_number(kernels) -> None:
    """A diverged model (inf in the folded blocks) must surface as NaN, which the trainer's NaN
    guard catches, not as a plausible finite output."""
    k = 20
    mm = torch.zeros(1, 2 * k, 2 * k)
    nn = torch.rand(1, k, 2 * k)
    mm[0, 3, 5] = float("inf")
    z, _, _ = kernels.folded_forward(torch.rand(4, k), mm, nn)
    assert torch.isnan(z[:, 3]).all()
    assert torch.isfinite(z[:, :3]).all() and torch.isfinite(z[:, 4:]).all()


def test_kernel_input_checks(kernels) -> None:
    k = 6
    with pytest.raises(RuntimeError, match="MM must be"):
        kernels.folded_forward(torch.rand(2, k), torch.rand(1, k, k), torch.rand(1, k, 2 * k))
    with pytest.raises(RuntimeError, match="float32"):
        kernels.folded_forward(torch.rand(2, k, dtype=torch.float64), torch.rand(1, 2 * k, 2 * k),
                               torch.rand(1, k, 2 * k))


def test_float64_and_grad_for_responses_take_the_eager_path(kernels, monkeypatch) -> None:
    """The kernels are float32-only and give no gradient for r: those cases must not reach them."""
    def refuse():
        raise AssertionError("native kernels used where they do not apply")

    monkeypatch.setattr(native, "load", refuse)
    ps, r64, _ = _problem(3, 10, 8, 1, seed=5)
    torch.testing.assert_close(folded_attention_readout(r64, *ps, 1), plain_readout(r64, *ps, 1))
    ps32 = [p.detach().float() for p in ps]
    r32 = r64.float().requires_grad_()
    z = folded_attention_readout(r32, *ps32, 1)
    (dr,) = torch.autograd.grad(z.sum(), r32)
    r64.requires_grad_()
    (want,) = torch.autograd.grad(plain_readout(r64, *ps, 1).sum(), r64)
    torch.testing.assert_close(dr.double(), want, rtol=1e-4, atol=1e-5)


def test_build_failure_falls_back_to_eager(monkeypatch, caplog) -> None:
    def broken(**kwargs):
        raise RuntimeError("Error building extension 'neuroalign_folded': c++: not found")

    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", broken)
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv(native.NATIVE_ENV, "auto")
    with caplog.at_level("WARNING", logger="neuroalign.models.native"):
        assert native.load() is None
        assert native.load() is None  # tried once, not on every step
    assert caplog.text.count("unavailable") == 1 and "c++: not found" in caplog.text
    assert native.status() == {"mode": "auto", "attempted": True, "loaded": False,
                               "error": "RuntimeError: Error building extension 'neuroalign_folded': c++: not found"}
    torch.manual_seed(0)
    tower = make_neural_tower(n_neurons=12, d_model=8)
    r = torch.rand(5, 12)
    maps = tower(r)
    tower.use_folded = False
    torch.testing.assert_close(maps, tower(r), rtol=1e-4, atol=1e-5)


def test_mode_and_build_name(monkeypatch) -> None:
    monkeypatch.setenv(native.NATIVE_ENV, "auto")
    native.set_native_mode("off")
    assert native.load() is None and native.native_mode() == "off"
    with pytest.raises(ValueError, match="native mode"):
        native.set_native_mode("fast")
    monkeypatch.setenv(native.NATIVE_ENV, "fast")
    with pytest.raises(ValueError, match=r"NEUROALIGN_NATIVE.*'fast'"):
        native.native_mode()
    # the build name changes with the CPU it was compiled for (-march=native), so a shared cache
    # never hands one machine another machine's binary
    monkeypatch.setattr(native, "_cpu_identity", lambda: "model name: A\nflags: avx2")
    a = native.build_name()
    monkeypatch.setattr(native, "_cpu_identity", lambda: "model name: B\nflags: avx512f")
    assert native.build_name() != a and native.build_name().startswith("neuroalign_folded_")


def test_ninja_from_the_pypi_package_is_found_off_path(monkeypatch) -> None:
    """pip puts ninja next to the interpreter, which need not be on PATH (pyenv, unactivated venv);
    the build must still find it."""
    ninja = pytest.importorskip("ninja")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert shutil.which("ninja") is None
    native._ensure_ninja_on_path()
    found = shutil.which("ninja")
    assert found is not None and found.startswith(ninja.BIN_DIR)


def test_stale_build_lock_is_removed_fresh_one_kept(tmp_path, monkeypatch, caplog) -> None:
    """A build killed half-way leaves torch's `lock` file; torch would then wait for ever."""
    import os
    import time

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    name = native.build_name()
    lock = tmp_path / name / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    native._clear_stale_lock(name)
    assert lock.exists()  # another process may be building right now
    old = time.time() - native.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    with caplog.at_level("WARNING", logger="neuroalign.models.native"):
        native._clear_stale_lock(name)
    assert not lock.exists() and "interrupted build" in caplog.text
