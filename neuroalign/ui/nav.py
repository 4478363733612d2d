"""The dashboard's pages in one list (path relative to app.py, title, material icon)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageSpec:
    path: str
    title: str
    icon: str


HOME = PageSpec("pages/home.py", "Home", ":material/home:")
SUBJECTS = PageSpec("pages/subjects.py", "Subjects", ":material/neurology:")
TRAIN = PageSpec("pages/train.py", "Train", ":material/model_training:")
RETRIEVAL = PageSpec("pages/retrieval.py", "Retrieval", ":material/image_search:")
PROFILE = PageSpec("pages/profile.py", "Image models", ":material/stacked_line_chart:")
FEATURE_MAPS = PageSpec("pages/feature_maps.py", "Feature maps", ":material/compare:")
NEURONS = PageSpec("pages/neurons.py", "Neurons", ":material/hub:")
RUNS = PageSpec("pages/runs.py", "Runs", ":material/table_chart:")

PAGES: tuple[PageSpec, ...] = (HOME, SUBJECTS, TRAIN, RETRIEVAL, PROFILE, FEATURE_MAPS, NEURONS, RUNS)
