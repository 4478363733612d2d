"""Retrieval quality of the linear-in-K latent neural tower next to full attention (same budget).

    python benchmarks/latent_quality.py --json PATH [--epochs 30] [--data-root DIR] [--subject sim-M1]

Trains the same configuration twice on a simulated demo subject (created in a temporary folder
unless ``--data-root`` holds it): once with the reference attention tower (folded) and once with
``kind="latent"``; reports test-split retrieval (centred similarity, rank 1 = best) and training
time per epoch. A short schedule: the comparison is of the two towers under equal settings, not of
converged models.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from neuroalign.config import preset  # noqa: E402
from neuroalign.data.store import SubjectStore  # noqa: E402
from neuroalign.evaluation.retrieval import retrieval_metrics  # noqa: E402
from neuroalign.models.losses import similarity_matrix  # noqa: E402

logger = logging.getLogger("benchmarks.latent_quality")


def train_and_score(subject, kind: str, epochs: int, device: str, seed: int = 1234) -> dict[str, Any]:
    """Fit the recommended preset with the given neural tower kind; test-split retrieval metrics."""
    from neuroalign.training.trainer import Trainer

    config = preset("recommended").replace(epochs=epochs, device=device, seed=seed,
                                           early_stopping_patience=None, **{"neural.kind": kind})
    trainer = Trainer(config, subject).prepare()  # preparation (features) outside the timed fit
    t = time.perf_counter()
    fit = trainer.fit()
    train_s = time.perf_counter() - t
    test = trainer.split["test"]
    img, neu = trainer.predict(test)
    sim = similarity_matrix(torch.from_numpy(img), torch.from_numpy(neu), center=True).numpy()
    metrics = retrieval_metrics(sim)
    return {"kind": kind, "epochs": fit.epochs_run, "best_epoch": fit.best_epoch, "train_s": train_s,
            "s_per_epoch": train_s / max(fit.epochs_run, 1), "n_test": int(len(test)),
            "image_to_neural": metrics["image_to_neural"], "neural_to_image": metrics["neural_to_image"],
            "chance_top1": metrics["chance_top1"],
            "n_parameters": sum(p.numel() for p in trainer.neural_tower.parameters())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--subject", default="sim-M1")
    parser.add_argument("--size", default="default", help="demo size when the subject is simulated here")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root or Path(tmp)
        store = SubjectStore(root)
        if not store.exists(args.subject):
            from neuroalign.data.simulate import make_demo_subjects

            make_demo_subjects(root, size=args.size, names=(args.subject,))
        subject = store.load(args.subject)
        result: dict[str, Any] = {"subject": args.subject, "n_images": subject.n_images,
                                  "n_neurons": subject.n_neurons, "preset": "recommended", "runs": []}
        for kind in ("reference", "latent"):
            run = train_and_score(subject, kind, args.epochs, args.device)
            result["runs"].append(run)
            print(f"{kind:9s}: top1 {run['image_to_neural']['top1']:.3f} / {run['neural_to_image']['top1']:.3f} "
                  f"(chance {run['chance_top1']:.3f}), top5 {run['image_to_neural']['top5']:.3f}, "
                  f"{run['s_per_epoch']:.1f} s/epoch, {run['n_parameters']:,} neural parameters")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
