"""Neuron importance is computed once in the job, over every test image, and kept in the run folder
(issue 23 item 11): what the Neurons page shows never depends on machine load."""

from __future__ import annotations

import os

import numpy as np

from neuroalign.training.run_eval import IMPORTANCE_FILE, load_importance, run_importance


def test_training_stores_importance_over_every_test_image(sim_root, tmp_path):
    from neuroalign.config import preset
    from neuroalign.training.pipeline import run_training

    cfg = preset("recommended").replace(epochs=2, device="cpu", batch_size=32,
                                        **{"image.backbone": "random_rectified", "image.block": 1, "image.transform": "none"})
    run = run_training("sim-M1", cfg, sim_root, tmp_path / "runs", cache_dir=tmp_path / "cache")
    stored = load_importance(run)
    assert stored is not None and (run / IMPORTANCE_FILE).is_file()
    assert stored.n_used == stored.n_test == 16  # every test image, no time budget
    again = run_importance(run)
    np.testing.assert_allclose(stored.share, again.share, rtol=1e-6, atol=1e-9)
    assert abs(float(stored.share.sum()) - 1.0) < 1e-9
    # a best.pt newer than the stored file (the run was re-trained) makes it stale
    later = (run / IMPORTANCE_FILE).stat().st_mtime + 100
    os.utime(run / "best.pt", (later, later))
    assert load_importance(run) is None


def test_an_importance_file_written_before_the_rename_still_loads(tmp_path):
    """Issue 22 item 5: importance.npz kept the neural tower's type as `block`; it loads as `kind`."""
    import json

    from neuroalign.evaluation.importance import NeuronImportance
    from neuroalign.training.run_eval import save_importance

    share = np.array([0.25, 0.75])
    imp = NeuronImportance(kind="latent", importance=share, share=share, net=share, n_test=4, n_used=4,
                           temperature=0.05)
    path = save_importance(tmp_path, imp)
    assert load_importance(tmp_path).kind == "latent"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["block"] = meta.pop("kind")
    np.savez(path, meta=np.asarray(json.dumps(meta)), **arrays)
    old = load_importance(tmp_path)
    assert old is not None and old.kind == "latent"
    np.testing.assert_allclose(old.share, share)
