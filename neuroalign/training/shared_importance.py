"""Per-neuron importance of one subject of a shared run (`training.shared_runs`): the measures of
`evaluation.importance` applied to the subject's linear read-in, so the Neurons page shows a shared
run's subject as it shows a single-subject run.

The read-in maps the normalised responses `y (K,)` to the shared space, `(y - centre) @ W + offset`;
the image side's test embeddings (stored in `subjects/<name>/test_outputs.npz`) take the place of the
image-tower maps. Attributions are the same expected gradients of the log-probability that a test
response retrieves its own image among the subject's test images (cosine / temperature, softmax over
the images); the temperature is the run config's contrastive temperature (a closed-form shared
model has none of its own: it only sets how sharp the softmax is). The read-in's own measure is that
of the linear neural tower: the norm of each neuron's weight row times its response SD over the test images.
Nothing is written; it takes well under a second for thousands of neurons.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neuroalign.evaluation.importance import NeuronImportance, attribution_importance
from neuroalign.training import runs as runs_io
from neuroalign.training.shared import SharedModel

SUBJECTS_DIR = "subjects"


class ReadInTower(torch.nn.Module):
    """A shared model's read-in as a neural tower: normalised responses `(B, K)` -> `(B, 1, q)`."""

    def __init__(self, weight: np.ndarray, centre: np.ndarray, offset: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("weight", torch.as_tensor(np.asarray(weight, dtype=np.float32)))
        self.register_buffer("centre", torch.as_tensor(np.asarray(centre, dtype=np.float32)))
        self.register_buffer("offset", torch.as_tensor(np.asarray(offset, dtype=np.float32)))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return ((y - self.centre) @ self.weight + self.offset)[:, None, :]


def shared_importance(run_dir: str | Path, name: str, subject) -> NeuronImportance:
    """Importance of every neuron of subject `name` (its loaded `Subject`) in the shared run `run_dir`.
    One-line ValueError / FileNotFoundError when the run's files do not fit the subject."""
    run_dir = Path(run_dir)
    model = SharedModel.load(run_dir)
    readin = model.readin(name)
    path = run_dir / SUBJECTS_DIR / name / runs_io.TEST_OUTPUTS
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the shared run has not evaluated {name}")
    with np.load(path, allow_pickle=False) as z:
        test = np.asarray(z["test_indices"], dtype=np.int64)
        image_embedding = np.asarray(z["image_embedding"], dtype=np.float32)
    if subject.n_neurons != readin.n_neurons:
        raise ValueError(f"subject {name} has {subject.n_neurons} neurons, its read-in in {run_dir.name} takes "
                         f"{readin.n_neurons}; expected the data the run was trained on")
    if len(test) and test.max() >= subject.n_images:
        raise ValueError(f"subject {name} has {subject.n_images} images, the run's test indices reach {test.max()}; "
                         "expected the data the run was trained on")
    record = runs_io.load_run(run_dir).config
    temperature = float((((record.get("config") or {}).get("loss") or {}).get("temperature")) or 0.05)
    y = np.ascontiguousarray(readin.normaliser.transform(subject.responses[test]), dtype=np.float32)
    tower = ReadInTower(readin.weight, readin.centre, readin.offset).eval()
    att = attribution_importance(tower, y, image_embedding, temperature, center=False)
    importance, net = att.magnitude, att.signed
    total = float(importance.sum())
    share = importance / total if total > 0 else np.full_like(importance, 1.0 / max(len(importance), 1))
    native = np.linalg.norm(np.asarray(readin.weight, dtype=np.float64), axis=1) * y.astype(np.float64).std(axis=0)
    native = native / max(float(native.sum()), 1e-300)
    warnings = [] if total > 0 else ["every attribution is 0 (the read-in does not depend on the responses)"]
    return NeuronImportance(kind="read-in", importance=importance, share=share, net=net, n_test=len(y),
                            n_used=len(att.rows), temperature=temperature, native=native,
                            native_label="weight norm × response SD", native_n=len(y), warnings=warnings)
