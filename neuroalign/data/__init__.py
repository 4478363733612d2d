"""Data: MAT-file io, subjects and the subject store, splits and normalisers, simulated subjects.

* `matio` -- safe reading of MAT v5 (scipy) and v7.3 (h5py) files, only the variables needed;
  writing v5/v7.3 (a package: format sniffing, the v5 walker, the scipy and h5py readers, writer).
* `layout` -- shape-only decisions: image layout, response orientation, istim presentations.
* `trainable` -- what an imported subject needs to be trainable (image size, count, varying responses).
* `subject` -- `Subject` (images (N, 1, H, W) float32 in [0, 1], responses (N, K) one row per
  image, optional repeats (R, N, K)), `load_subject`, `load_pair`, `load_ground_truth`.
* `names` -- the rules for subject names and "is this name taken".
* `writer` -- atomic writing of a subject folder (temporary folder, exclusive claim, rename).
* `store` -- `SubjectStore` over a data root in the reference layout `<root>/<name>/Data/*.mat`:
  list, load, validate, atomic import, delete, demo creation.
* `splits` -- `split_indices` by image identity and `Normaliser` fitted on training rows only.
* `stimuli`, `simulate` -- the embedded simulated demo subjects (`make_demo_subjects`).

Imports go one way: matio, layout, trainable <- subject <- writer <- simulate <- store.
Importing this package does not import torch (`trainable` imports the backbone's minimum image
side only when an import is checked) nor scikit-learn (`stimuli` reads its photos lazily).
"""

from __future__ import annotations

from neuroalign.data.matio import MatInfo, peek_mat, read_mat_variables, save_mat, write_mat_v73
from neuroalign.data.simulate import DEMO_SUBJECTS, make_demo_subjects
from neuroalign.data.splits import Normaliser, split_indices
from neuroalign.data.store import SubjectInfo, SubjectStore, ValidationReport, check_subject_name
from neuroalign.data.subject import Subject, load_ground_truth, load_pair, load_subject

__all__ = [
    "DEMO_SUBJECTS", "MatInfo", "Normaliser", "Subject", "SubjectInfo", "SubjectStore", "ValidationReport",
    "check_subject_name", "load_ground_truth", "load_pair", "load_subject", "make_demo_subjects", "peek_mat",
    "read_mat_variables", "save_mat", "split_indices", "write_mat_v73",
]
