"""A made-up but well-formed alignment profile (the dict `training.profile.alignment_profile` returns),
for the profile chart and page tests."""

from __future__ import annotations


def _block(i2n: float, n2i: float, n: int) -> dict:
    return {"image_to_neural": {"top1": i2n, "top1_ci": [max(0.0, i2n - 0.1), min(1.0, i2n + 0.1)], "mrr": i2n + 0.1},
            "neural_to_image": {"top1": n2i, "top1_ci": [max(0.0, n2i - 0.1), min(1.0, n2i + 0.1)], "mrr": n2i + 0.1},
            "n": n, "chance_top1": 1.0 / n}


def make_profile(data_hash: str = "hash", subject: str = "m1", feve: bool = True) -> dict:
    """ds_net_tiny at its 4 stage ends (x = blocks 2, 4, 8, 9) and the one-layer random bank; the best
    layer overall is ds_net_tiny stage 3 (row 2, highest val MRR), the bank's only row its model's best."""
    layers = [("ds_net_tiny", 1, 2, 0.30, 0.25, 0.20), ("ds_net_tiny", 2, 2, 0.45, 0.40, 0.35),
              ("ds_net_tiny", 3, 4, 0.60, 0.55, 0.50), ("ds_net_tiny", 4, 1, 0.50, 0.45, 0.40),
              ("random_rectified", 1, 1, 0.40, 0.35, 0.30)]
    rows = []
    for model, stage, block, val, test, mrr in layers:
        row = {"model": model, "stage": stage, "block": block, "transform": "square",
               "label": model if model == "random_rectified" else f"{model} stage {stage} block {block}, square",
               "n_features": 100, "val": _block(val, val - 0.05, 20), "test": _block(test, test - 0.05, 25),
               "val_mrr": mrr, "seconds": 1.5}
        if feve:
            row["feve"] = {"median": mrr - 0.1, "q25": mrr - 0.2, "q75": mrr, "n_included": 20, "n_neurons": 24,
                           "min_fev": 0.15, "median_fev": 0.5}
        rows.append(row)
    return {"version": 1, "subject": subject, "data_hash": data_hash, "n_images": 100, "n_neurons": 24,
            "split": {"train": 55, "val": 20, "test": 25}, "layers": "stages", "rows": rows,
            "best": {"overall": 2, "per_model": {"ds_net_tiny": 2, "random_rectified": 4}},
            "reference": {"ridge": {"image_to_neural": 0.12, "neural_to_image": 0.16},
                          "ridge_random": {"image_to_neural": 0.32, "neural_to_image": 0.28},
                          "repeat": {"image_to_neural": 0.7, "neural_to_image": 0.72},
                          "oracle": {"image_to_neural": 0.96, "neural_to_image": 0.98}},
            "complete": True, "stopped": None, "elapsed_s": 12.0,
            "config": {"grid": [8, 32], "n_components": 256, "normaliser": "zscore", "split_seed": 1234}}
