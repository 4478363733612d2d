"""Trainer: determinism, split/normaliser hygiene, best checkpoint restored, stop/time/NaN paths, resume."""

import threading

import numpy as np
import pytest
import torch

from neuroalign.config import TrainConfig
from neuroalign.data import Subject
from neuroalign.training import runs
from neuroalign.training.runs import load_checkpoint
from neuroalign.training.trainer import Trainer, TrainingDiverged


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**changes) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 16, "device": "cpu", "log_every_steps": 1, "image.backbone": "ds_net_tiny",
            "image.stage": 1, "image.block": 1, "neural.d_model": 16}
    base.update(changes)
    return TrainConfig(preset="reference").replace(**base)


@pytest.fixture
def subject(make_tiny_arrays):
    a = make_tiny_arrays(n_images=80, n_neurons=24, hw=(34, 136))
    return Subject("toy", a["images"][:, None].astype(np.float32) / 255, a["responses"], a["repeats"])


def _losses(trainer, **kw):
    steps = []
    trainer.fit(callback=lambda e, v: steps.append(v["train_loss"]) if e == "step" else None, **kw)
    return steps


def test_same_seed_gives_identical_losses(subject):
    a = _losses(Trainer(tiny_config(), subject))
    b = _losses(Trainer(tiny_config(), subject))
    assert len(a) >= 9 and a == b
    c = _losses(Trainer(tiny_config(seed=7), subject))
    assert c != a


def test_constructor_only_keeps_settings_and_prepare_builds_once(subject, tmp_path, monkeypatch):
    """`Trainer(...)` is cheap: no seeding, towers or backbone features until `prepare()`; the engine
    attributes are missing before it (an AttributeError naming prepare(), a typo's stays plain); a
    second prepare() builds nothing. A given split is still checked by the constructor."""
    import neuroalign.training.trainer as trainer_mod
    from neuroalign.models import feature_cache

    feature_cache.clear_memory_cache()  # features computed (and written to the cache dir) by prepare()
    built = []
    build = trainer_mod.build_neural_tower
    monkeypatch.setattr(trainer_mod, "build_neural_tower", lambda *a, **k: built.append(1) or build(*a, **k))
    cache, rng = tmp_path / "cache", torch.random.get_rng_state()
    tr = Trainer(tiny_config(), subject, cache_dir=cache)
    assert not cache.exists() and built == [] and torch.equal(torch.random.get_rng_state(), rng)
    assert not any(hasattr(tr, name) for name in Trainer.ENGINE_ATTRIBUTES)
    with pytest.raises(AttributeError, match=r"Trainer\.core is built by prepare\(\)"):
        tr.core
    with pytest.raises(AttributeError) as typo:
        tr.coer
    assert "prepare" not in str(typo.value)
    assert tr.prepare() is tr and built == [1]
    files = sorted((cache / "features").iterdir())
    core, inputs, state = tr.core, tr.inputs, tr.state
    assert len(files) == 1 and all(hasattr(tr, name) for name in Trainer.ENGINE_ATTRIBUTES)
    assert tr.prepare() is tr and built == [1] and sorted((cache / "features").iterdir()) == files
    assert tr.core is core and tr.inputs is inputs and tr.state is state
    bad = {k: np.asarray(v) for k, v in tr.split.items()}
    bad["val"] = np.concatenate([bad["val"], bad["test"][:1]])
    with pytest.raises(ValueError, match="splits overlap"):
        Trainer(tiny_config(), subject, split=bad)
    with pytest.raises(ValueError, match="lacks test"):
        Trainer(tiny_config(), subject, split={"train": bad["train"], "val": bad["val"]})


def test_split_and_normaliser_never_touch_test_rows(subject):
    tr = Trainer(tiny_config(), subject).prepare()
    split = tr.split
    assert not set(split["train"]) & set(split["test"]) and not set(split["val"]) & set(split["test"])
    np.testing.assert_allclose(tr.normaliser.offset, subject.responses[split["train"]].min(axis=0))
    base = _losses(tr)
    # wildly different test responses change neither the normaliser nor any training loss
    poisoned = subject.responses.copy()
    poisoned[split["test"]] = 1e6
    tr2 = Trainer(tiny_config(), Subject("toy", subject.images, poisoned, None)).prepare()
    np.testing.assert_array_equal(tr2.normaliser.offset, tr.normaliser.offset)
    assert _losses(tr2) == base


def test_constant_neurons_stay_finite(subject):
    resp = subject.responses.copy()
    resp[:, :5] = 2.0
    tr = Trainer(tiny_config(epochs=2), Subject("toy", subject.images, resp, None))
    res = tr.fit()
    assert all(np.isfinite(res.train_loss_hist)) and all(np.isfinite(res.val_loss_hist))


def test_best_checkpoint_is_restored_and_saved(subject, tmp_path, monkeypatch):
    tr = Trainer(tiny_config(epochs=4), subject, run_dir=tmp_path)
    scripted = iter([3.0, 1.0, 2.0, 4.0])  # val losses: epoch 2 is the best
    monkeypatch.setattr(tr, "val_loss", lambda indices=None: next(scripted))
    states = {}
    tr.fit(callback=lambda e, v: states.__setitem__(int(v["epoch"]), tr.model_state()) if e == "epoch" else None)
    assert tr.state.best_epoch == 2
    now = tr.model_state()
    for part in ("image_tower", "neural_tower"):
        for k, v in states[2][part].items():
            assert torch.equal(now[part][k], v), k
    best = load_checkpoint(tmp_path / runs.BEST_CKPT)
    last = load_checkpoint(tmp_path / runs.LAST_CKPT)
    assert best["epoch"] == 2 and last["epoch"] == 4
    w = "proj.weight"
    assert torch.equal(best["model"]["image_tower"][w], states[2]["image_tower"][w])
    assert torch.equal(last["model"]["image_tower"][w], states[4]["image_tower"][w])
    assert not torch.equal(best["model"]["image_tower"][w], last["model"]["image_tower"][w])


def test_early_stopping(subject, monkeypatch):
    tr = Trainer(tiny_config(epochs=50, early_stopping_patience=2), subject)
    scripted = iter([1.0, 2.0, 3.0, 4.0, 5.0] + [9.0] * 50)
    monkeypatch.setattr(tr, "val_loss", lambda indices=None: next(scripted))
    res = tr.fit()
    assert res.stop_reason == "early_stopping" and res.epochs_run == 3 and res.best_epoch == 1


def test_stop_event_and_time_budget(subject):
    stop = threading.Event()
    tr = Trainer(tiny_config(epochs=50), subject)

    def cb(event, values):
        if event == "epoch" and values["epoch"] == 2:
            stop.set()

    res = tr.fit(callback=cb, stop_event=stop)
    assert res.stop_reason == "stopped" and res.epochs_run == 2
    tr = Trainer(tiny_config(epochs=1000, max_seconds=0.5), subject)
    res = tr.fit()
    assert res.stop_reason == "time_budget" and 1 <= res.epochs_run < 1000 and res.elapsed_s < 10


def test_nan_loss_raises_clear_error(subject, monkeypatch):
    tr = Trainer(tiny_config(epochs=5), subject).prepare()
    orig = tr.loss_fn.forward
    calls = {"n": 0}

    def bad(img, neu):
        calls["n"] += 1
        loss, parts = orig(img, neu)
        return (loss * float("nan") if calls["n"] >= 4 else loss), parts

    monkeypatch.setattr(tr.loss_fn, "forward", bad)
    with pytest.raises(TrainingDiverged, match="nan"):
        tr.fit()


def test_finetune_mode_trains_backbone(subject):
    tr = Trainer(tiny_config(epochs=1, **{"image.mode": "finetune"}), subject).prepare()
    before = {k: v.clone() for k, v in tr.image_tower.backbone.state_dict().items()}
    assert tr.inputs.shape[1:] == subject.images.shape[1:]  # images, not features
    tr.fit()
    after = tr.image_tower.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


def test_frozen_mode_never_runs_backbone_per_step(subject, monkeypatch):
    tr = Trainer(tiny_config(epochs=2), subject).prepare()
    assert tr.inputs.shape[1] == tr.image_tower.channels  # cached features
    def boom(*a, **k):
        raise AssertionError("backbone ran during training")
    monkeypatch.setattr(tr.image_tower.backbone, "forward_intermediates", boom)
    tr.fit()


def test_fused_kernels_are_built_before_the_first_step(subject, monkeypatch):
    """On a CPU the reference tower's fused kernels load in `prepare()` (a first build takes
    ~20 s, which must not look like a hung first step); other towers do not ask for them."""
    from neuroalign.models import native

    calls = []
    monkeypatch.setattr(native, "load", lambda: calls.append(1) or object())
    assert Trainer(tiny_config(), subject).prepare().fused_kernels is True and calls == [1]
    assert Trainer(tiny_config(**{"neural.block": "transformer"}), subject).prepare().fused_kernels is False
    monkeypatch.setattr(native, "load", lambda: None)  # no compiler: the eager path, reported as such
    assert Trainer(tiny_config(), subject).prepare().fused_kernels is False and calls == [1]


def test_reference_tower_too_big_for_memory_is_refused_up_front(subject, monkeypatch):
    """A K x K-block tower that cannot fit fails before training with a one-line reason and the way
    out (the latent block), not with an allocator error in the first step."""
    import neuroalign.training.trainer as trainer_mod

    tower_bytes = 2 * 6 * 24 ** 2 * 4  # the 24-neuron subject's blocks and their gradients
    monkeypatch.setattr(trainer_mod, "available_memory_bytes", lambda device: tower_bytes)
    with pytest.raises(ValueError, match=r"24 neurons needs about .* GiB .*latent") as info:
        Trainer(tiny_config(), subject).prepare()
    assert "\n" not in str(info.value)
    Trainer(tiny_config(**{"neural.block": "latent"}), subject).prepare()  # linear in K: no K x K blocks
    monkeypatch.setattr(trainer_mod, "available_memory_bytes", lambda device: 10 * tower_bytes)
    Trainer(tiny_config(), subject).prepare()
    monkeypatch.setattr(trainer_mod, "available_memory_bytes", lambda device: None)  # unknown: no check
    Trainer(tiny_config(), subject).prepare()


def test_available_memory_is_read():
    from neuroalign.training.device import available_memory_bytes

    from pathlib import Path

    have = available_memory_bytes(torch.device("cpu"))
    if Path("/proc/meminfo").exists():
        assert isinstance(have, int) and have > 2**20
    else:
        assert have is None


def test_threads_setting_applies_while_training_only(subject):
    """config.threads sets torch's CPU threads for the fit and restores the previous count."""
    before = torch.get_num_threads()  # 1 (one_torch_thread)
    seen = []
    tr = Trainer(tiny_config(epochs=1, threads=2), subject)
    tr.fit(callback=lambda e, v: seen.append(torch.get_num_threads()))
    assert seen and set(seen) == {2} and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 1"):
        tiny_config(threads=0).validate()
