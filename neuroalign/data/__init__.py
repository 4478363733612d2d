"""Data: MAT-file io, subjects and the subject store, splits and normalisers, simulated subjects.

* `matio` -- safe reading of MAT v5 (scipy) and v7.3 (h5py) files, only the variables needed.
* `subject` -- `Subject` (images (N, 1, H, W) float32 in [0, 1], responses (N, K) one row per
  image, optional repeats (R, N, K)), `load_subject`, `load_pair`, `load_ground_truth`.
* `store` -- `SubjectStore` over a data root in the reference layout `<root>/<name>/Data/*.mat`:
  list, load, validate, atomic import, delete, demo creation.
* `splits` -- `split_indices` by image identity and `Normaliser` fitted on training rows only.
* `simulate` -- the embedded simulated demo subjects (`make_demo_subjects`).

Importing this package does not import torch (nor scikit-learn: `simulate` loads lazily).
"""

from __future__ import annotations

from typing import Any

from neuroalign.data.matio import MatInfo, peek_mat, read_mat_variables, save_mat, write_mat_v73
from neuroalign.data.splits import Normaliser, split_indices
from neuroalign.data.store import SubjectInfo, SubjectStore, ValidationReport, check_subject_name
from neuroalign.data.subject import Subject, load_ground_truth, load_pair, load_subject

__all__ = [
    "DEMO_SUBJECTS", "MatInfo", "Normaliser", "Subject", "SubjectInfo", "SubjectStore", "ValidationReport",
    "check_subject_name", "load_ground_truth", "load_pair", "load_subject", "make_demo_subjects", "peek_mat",
    "read_mat_variables", "save_mat", "split_indices", "write_mat_v73",
]


def __getattr__(name: str) -> Any:
    if name in ("make_demo_subjects", "DEMO_SUBJECTS"):
        from neuroalign.data import simulate

        return getattr(simulate, name)
    raise AttributeError(f"module 'neuroalign.data' has no attribute {name!r}")
