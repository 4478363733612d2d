"""Neural tower: parameter layout, equality with a per-neuron loop reference, options, inspection."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neuroalign.config import NeuralTowerConfig
from neuroalign.models import LinearNeuralTower, build_neural_tower
from neuroalign.models.neural import (NEURAL_TOWER_CLASSES, LatentTower, ReferenceAttentionTower, TransformerTower,
                                      neural_tower_class, register)
from neuroalign.models.neural_tower import make_neural_tower


def _loop_reference(tower: ReferenceAttentionTower, r: torch.Tensor) -> torch.Tensor:
    """The reference tower written the straightforward way: a ModuleList of per-neuron Linear
    layers looped in Python and torch's nn.MultiheadAttention, sharing `tower`'s weights."""
    k, d = tower.embed_weight.shape
    dtype = tower.embed_weight.dtype
    embeds = nn.ModuleList(nn.Linear(1, d) for _ in range(k)).to(dtype)
    reads = nn.ModuleList(nn.Linear(d, 1) for _ in range(k)).to(dtype)
    mha = nn.MultiheadAttention(d, tower.n_heads, batch_first=True).to(dtype)
    with torch.no_grad():
        for i in range(k):
            embeds[i].weight.copy_(tower.embed_weight[i].view(d, 1))
            embeds[i].bias.copy_(tower.embed_bias[i])
            reads[i].weight.copy_(tower.readout_weight[i].view(1, d))
            reads[i].bias.copy_(tower.readout_bias[i].view(1))
        a = tower.attn
        mha.in_proj_weight.copy_(torch.cat([a.q.weight, a.k.weight, a.v.weight]))
        mha.in_proj_bias.copy_(torch.cat([a.q.bias, a.k.bias, a.v.bias]))
        mha.out_proj.weight.copy_(a.o.weight)
        mha.out_proj.bias.copy_(a.o.bias)
    tokens = torch.stack([embeds[i](r[:, i:i + 1]) for i in range(k)], dim=1)
    att, _ = mha(tokens, tokens, tokens, need_weights=False)
    per_neuron = torch.cat([reads[i](att[:, i]) for i in range(k)], dim=1)
    z = tower.mlp(per_neuron).view(-1, 1, 8, 32)
    z = F.interpolate(z, size=(16, 64), mode="bilinear", align_corners=False)
    flat = z.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo)).view_as(z)


@pytest.mark.parametrize("k", [1, 7, 50])
def test_reference_parameter_count(k):
    tower = make_neural_tower(k)
    assert sum(p.numel() for p in tower.parameters()) == 3585 * k + 2_233_088
    shapes = {n: tuple(p.shape) for n, p in tower.named_parameters()}
    assert shapes["embed_weight"] == (k, 512) and shapes["embed_bias"] == (k, 512)
    assert shapes["readout_weight"] == (k, 512) and shapes["readout_bias"] == (k,)
    assert shapes["attn.q.weight"] == (512, 512) and shapes["mlp.0.weight"] == (2048, k)
    assert tower.is_reference_form


@pytest.mark.parametrize("use_folded", [False, True])
@pytest.mark.parametrize("n_heads", [1, 2])
def test_vectorised_equals_per_neuron_loop(use_folded, n_heads):
    torch.manual_seed(0)
    tower = make_neural_tower(9, d_model=16, n_heads=n_heads).double()
    tower.use_folded = use_folded
    r = torch.rand(5, 9, dtype=torch.float64)
    expected = _loop_reference(tower, r)
    out = tower(r)
    assert out.shape == (5, 1, 16, 64)
    torch.testing.assert_close(out, expected, atol=1e-9, rtol=1e-7)
    assert out.amin(dim=(1, 2, 3)).abs().max() < 1e-12 and (out.amax(dim=(1, 2, 3)) - 1).abs().max() < 1e-12


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    for kwargs in ({}, {"kind": "transformer", "n_layers": 2}, {"kind": "latent", "n_latents": 4, "n_layers": 2}):
        tower = make_neural_tower(6, d_model=8, n_heads=2, mlp_activation="gelu", **kwargs)
        out = tower(torch.rand(3, 6))
        (out * torch.randn_like(out)).sum().backward()
        for name, p in tower.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (kwargs, name)


def test_mlp_activation_and_dropout_options():
    tower = make_neural_tower(5, d_model=8, mlp_activation="relu", dropout=0.2)
    kinds = [type(m).__name__ for m in tower.mlp]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert [type(m).__name__ for m in make_neural_tower(5, d_model=8).mlp] == ["Linear"] * 3
    # dropout makes train-mode outputs stochastic, eval deterministic
    torch.manual_seed(0)
    r = torch.rand(2, 5)
    tower.train()
    assert not torch.allclose(tower(r), tower(r))
    tower.eval()
    torch.testing.assert_close(tower(r), tower(r))
    with pytest.raises(ValueError, match="activation"):
        make_neural_tower(5, mlp_activation="tanh")


def test_transformer_block_layout_and_shapes():
    torch.manual_seed(0)
    tower = make_neural_tower(10, d_model=16, n_heads=4, n_layers=2, kind="transformer")
    assert not tower.is_reference_form
    r = torch.rand(3, 10)
    out = tower(r)
    assert out.shape == (3, 1, 16, 64) and out.min() >= 0 and out.max() <= 1
    w = tower.attention_weights(r)
    assert w.shape == (3, 4, 10, 10)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 10))
    assert tower.attention_weights(r, layer=1).shape == (3, 4, 10, 10)
    torch.testing.assert_close(tower.neuron_importance(r, query_chunk=4), w.mean(dim=(1, 2)))


def test_latent_tower_scales_linearly_in_neurons():
    small = make_neural_tower(10, d_model=16, kind="latent", n_latents=4)
    big = make_neural_tower(1010, d_model=16, kind="latent", n_latents=4)
    n_small = sum(p.numel() for p in small.parameters())
    n_big = sum(p.numel() for p in big.parameters())
    assert n_big - n_small == 1000 * 2 * 16  # only the per-neuron embedding grows with K
    r = torch.rand(2, 1010)
    assert big(r).shape == (2, 1, 16, 64)
    w = big.attention_weights(r)
    assert w.shape == (2, 1, 4, 1010)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 1, 4))
    torch.testing.assert_close(big.neuron_importance(r, query_chunk=3), w.mean(dim=(1, 2)))


def test_attention_weights_match_manual_softmax():
    torch.manual_seed(0)
    tower = make_neural_tower(7, d_model=8, n_heads=2)
    r = torch.rand(3, 7)
    e = r.unsqueeze(-1) * tower.embed_weight + tower.embed_bias
    q = tower.attn.q(e).view(3, 7, 2, 4).transpose(1, 2)
    k = tower.attn.k(e).view(3, 7, 2, 4).transpose(1, 2)
    expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)
    torch.testing.assert_close(tower.attention_weights(r), expected)
    imp = tower.neuron_importance(r)
    torch.testing.assert_close(imp, expected.mean(dim=(1, 2)))
    torch.testing.assert_close(tower.neuron_importance(r, query_chunk=3), imp)
    torch.testing.assert_close(imp.sum(1), torch.ones(3))


def test_from_config_and_input_validation():
    cfg = NeuralTowerConfig(d_model=32, n_heads=4, n_layers=2, kind="transformer", mlp_activation="gelu",
                            dropout=0.1, folded=False)
    tower = build_neural_tower(12, cfg)
    assert isinstance(tower, TransformerTower)
    assert (tower.d_model, tower.n_heads, tower.n_layers, tower.kind) == (32, 4, 2, "transformer")
    assert build_neural_tower(12, NeuralTowerConfig(kind="latent", folded=False)).use_folded is False
    with pytest.raises(ValueError, match=r"\(B, 12\)"):
        tower(torch.rand(2, 11))
    with pytest.raises(ValueError, match="divisible"):
        make_neural_tower(4, d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="neural tower kind"):
        make_neural_tower(4, kind="lstm")


def test_constant_output_map_is_zero_not_nan():
    tower = make_neural_tower(4, d_model=8)
    with torch.no_grad():
        for p in tower.mlp.parameters():
            p.zero_()
    out = tower(torch.rand(2, 4))
    assert torch.equal(out, torch.zeros_like(out))


def test_folded_path_used_only_in_reference_form(monkeypatch):
    import neuroalign.models.folded as folded

    calls = []
    original = folded.folded_attention_readout

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(folded, "folded_attention_readout", counting)
    r = torch.rand(2, 5)
    tower = make_neural_tower(5, d_model=8)
    tower(r)
    assert len(calls) == 1
    tower.use_folded = False
    tower(r)
    make_neural_tower(5, d_model=8, kind="transformer")(r)
    make_neural_tower(5, d_model=8, kind="latent", n_latents=2)(r)
    assert len(calls) == 1


def test_reference_tower_refuses_more_layers():
    with pytest.raises(ValueError, match=r"reference neural tower has exactly 1 attention layer, got n_layers=2"):
        make_neural_tower(5, d_model=8, n_layers=2)
    with pytest.raises(ValueError, match="n_layers"):
        build_neural_tower(5, NeuralTowerConfig(d_model=8, n_layers=3))


def test_bf16_autocast_gives_float32_maps():
    torch.manual_seed(0)
    tower = make_neural_tower(12, d_model=16, n_heads=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tower(torch.rand(3, 12))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out.amin().item() == 0.0 and out.amax().item() == pytest.approx(1.0)


@pytest.mark.parametrize("n_heads,n_layers", [(1, 1), (2, 2)])
def test_folded_latent_cross_attention_is_the_same_function(n_heads, n_layers):
    """The folded latent path (no (B, K, d) tokens) gives the unfolded outputs and gradients."""
    torch.manual_seed(3)
    tower = make_neural_tower(13, d_model=8, n_heads=n_heads, n_layers=n_layers, kind="latent", n_latents=5).double()
    assert tower.use_folded
    r = torch.rand(6, 13, dtype=torch.float64) * 2 - 0.5
    folded_out = tower(r)
    g_folded = torch.autograd.grad(folded_out.square().sum(), list(tower.parameters()))
    tower.use_folded = False
    plain_out = tower(r)
    g_plain = torch.autograd.grad(plain_out.square().sum(), list(tower.parameters()))
    torch.testing.assert_close(folded_out, plain_out, rtol=1e-10, atol=1e-12)
    for (name, _), gf, gp in zip(tower.named_parameters(), g_folded, g_plain):
        torch.testing.assert_close(gf, gp, rtol=1e-9, atol=1e-11, msg=name)


def test_folded_latent_never_builds_token_tensor():
    """Nothing of size (B, K, d) is saved for backward on the folded latent path."""
    b, k, d = 8, 300, 32
    tower = make_neural_tower(k, d_model=d, kind="latent", n_latents=4)
    weights = {p.data_ptr() for p in tower.parameters()}
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in weights:  # activations only (the MLP's 2048 x 512 weight is larger)
            sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        tower(torch.rand(b, k)).sum().backward()
    assert sizes and max(sizes) < b * k * d
    tower.use_folded = False  # the unfolded path does keep (B, K, d) tokens: the check can fail
    sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        tower(torch.rand(b, k)).sum().backward()
    assert max(sizes) >= b * k * d


# --- registry ------------------------------------------------------------------------------------
_MHA = [f"{m}.{p}" for m in "qkvo" for p in ("weight", "bias")]
_BLOCK = ["norm1.weight", "norm1.bias", *(f"attn.{k}" for k in _MHA), "norm2.weight", "norm2.bias",
          "ffn.0.weight", "ffn.0.bias", "ffn.3.weight", "ffn.3.bias"]
_MLP = ["mlp.0.weight", "mlp.0.bias", "mlp.1.weight", "mlp.1.bias", "mlp.2.weight", "mlp.2.bias"]
_PER_NEURON = ["embed_weight", "embed_bias", "readout_weight", "readout_bias"]
# state_dict keys, in order, of the single NeuralTower class these classes replaced (written from
# that code before the split): existing checkpoints and optimizer states load unchanged.
EXPECTED_KEYS = {
    "reference": [*_PER_NEURON, *(f"attn.{k}" for k in _MHA), *_MLP],
    "transformer": [*_PER_NEURON, *(f"layers.0.{k}" for k in _BLOCK), *(f"layers.1.{k}" for k in _BLOCK),
                    "final_norm.weight", "final_norm.bias", *_MLP],
    "latent": ["embed_weight", "embed_bias", "latents", "latent_norm.weight", "latent_norm.bias",
               *(f"cross_attn.{k}" for k in _MHA), *(f"layers.0.{k}" for k in _BLOCK), "final_norm.weight",
               "final_norm.bias", "latent_readout.weight", "latent_readout.bias", *_MLP],
    "linear": ["encoder.weight", "encoder.bias"],
}
CLASSES = {"reference": ReferenceAttentionTower, "transformer": TransformerTower, "latent": LatentTower,
           "linear": LinearNeuralTower}


def test_registry_names_the_config_kinds():
    from neuroalign.config import NEURAL_KINDS

    assert set(NEURAL_TOWER_CLASSES) == set(NEURAL_KINDS) == set(CLASSES)
    for name, cls in CLASSES.items():
        assert neural_tower_class(name) is cls and cls.kind == name
    with pytest.raises(ValueError, match="neural tower kind must be one of latent, linear, reference, transformer; "
                                         "got .lstm."):
        neural_tower_class("lstm")


def test_old_registry_names_still_resolve():
    """Issue 22 item 5: the registry was `BLOCK_CLASSES` / `neural_block`, the config tuple `NEURAL_BLOCKS`."""
    from neuroalign.config import NEURAL_BLOCKS, NEURAL_KINDS
    from neuroalign.models.neural import BLOCK_CLASSES, neural_block

    assert BLOCK_CLASSES is NEURAL_TOWER_CLASSES and neural_block is neural_tower_class and NEURAL_BLOCKS == NEURAL_KINDS


@pytest.mark.parametrize("block", sorted(CLASSES))
def test_every_registered_kind_builds_from_config(block):
    torch.manual_seed(0)
    n_layers = 1 if block == "reference" else 2
    cfg = NeuralTowerConfig(kind=block, d_model=8, n_heads=2, n_layers=n_layers, n_latents=3)
    tower = build_neural_tower(7, cfg, n_components=16)
    assert type(tower) is CLASSES[block]
    assert list(tower.state_dict()) == EXPECTED_KEYS[block]
    assert tower(torch.rand(4, 7)).shape == (4, 1, 16, 64)
    assert tower.neuron_importance(torch.rand(4, 7)).shape == (4, 7)
    assert tower.folded_block_bytes() == (2 * 6 * 2 * 7 ** 2 * 4 if block == "reference" else 0)
    assert tower.uses_folded_attention == (block == "reference")
    if block != "linear":
        assert type(make_neural_tower(7, kind=block, d_model=8, n_heads=2, n_layers=n_layers)) is CLASSES[block]
        assert tower.neuron_features(torch.rand(4, 7)).shape == (4, 3 * 8 if block == "latent" else 7)
        q = 3 if block == "latent" else 7
        assert tower.attention_weights(torch.rand(4, 7)).shape == (4, 2, q, 7)


def test_register_refuses_a_second_class_under_one_name():
    with pytest.raises(ValueError, match="already registered"):
        register("reference")(type("Other", (nn.Module,), {}))


def test_the_factory_is_a_function_and_the_old_name_still_builds_the_same():
    """Issue 22 item 5: `NeuralTower` was a class whose __new__ returned another class's instance;
    `make_neural_tower` is the factory, and the old name (stored in no checkpoint) still works."""
    import inspect

    from neuroalign.models import NeuralTower as old_name
    from neuroalign.models import make_neural_tower as from_models

    assert inspect.isfunction(make_neural_tower) and old_name is make_neural_tower is from_models
    torch.manual_seed(0)
    a = old_name(9, kind="latent", d_model=16, n_latents=4)
    torch.manual_seed(0)
    b = make_neural_tower(9, kind="latent", d_model=16, n_latents=4)
    assert type(a) is type(b) is LatentTower
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert isinstance(make_neural_tower(9, kind="linear", n_components=32), LinearNeuralTower)


def test_make_neural_tower_takes_the_old_block_keyword():
    """Issue 22 item 5: the keyword was `block` (README, docs); it still builds the same tower, and
    disagreeing with `kind` is refused."""
    torch.manual_seed(0)
    old = make_neural_tower(9, block="latent", d_model=16, n_latents=4)
    torch.manual_seed(0)
    new = make_neural_tower(9, kind="latent", d_model=16, n_latents=4)
    assert type(old) is type(new) is LatentTower
    assert all(torch.equal(x, y) for x, y in zip(old.state_dict().values(), new.state_dict().values()))
    assert type(make_neural_tower(9, "latent", block="latent", n_latents=4)) is LatentTower
    assert type(make_neural_tower(9)) is ReferenceAttentionTower
    with pytest.raises(ValueError, match="kind='linear' and its old name block='latent'"):
        make_neural_tower(9, kind="linear", block="latent")
