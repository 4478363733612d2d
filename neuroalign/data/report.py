"""What a passed import check found and decided (`ValidationReport`): shown by the CLI and the Subjects
page before anything is saved; sent by the sandboxed check worker to the server as a dict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ValidationReport"]


@dataclass
class ValidationReport:
    """What an import check found and decided for a pair of MAT files or an NWB file (`details`)."""

    images_path: str
    responses_path: str
    format: str
    images_variable: str
    images_shape: tuple[int, ...]
    images_dtype: str
    responses_shape: tuple[int, ...]
    responses_dtype: str
    image_layout: str
    response_orientation: str
    image_scaling: str
    n_images: int
    n_neurons: int
    image_shape: tuple[int, int]
    has_repeats: bool
    notes: list[str] = field(default_factory=list)
    #: the report's own lines instead of the MAT ones (an NWB import: series, presentations, window)
    details: list[str] = field(default_factory=list)

    @classmethod
    def from_subject(cls, subject: Any) -> "ValidationReport":
        m = subject.meta
        return cls(m["images_file"], m["responses_file"], m["format"], m["images_variable"],
                   tuple(m["images_shape_original"]), m["images_dtype"], tuple(m["responses_shape_original"]),
                   m["responses_dtype"], m["image_layout"], m["response_orientation"], m["image_scaling"],
                   subject.n_images, subject.n_neurons, subject.image_shape, subject.repeats is not None,
                   list(m.get("notes", [])), list(m.get("summary_lines", [])))

    def summary_lines(self) -> list[str]:
        """Human-readable lines for the CLI and the upload page."""
        if self.details:
            return list(self.details) + [f"note: {n}" for n in self.notes]
        lines = [
            f"format: {self.format}",
            f"images: {self.images_variable} {self.images_shape} {self.images_dtype}, layout {self.image_layout}, "
            f"{self.n_images} images of {self.image_shape[0]} x {self.image_shape[1]}",
            f"image scaling: {self.image_scaling}",
            f"responses: {self.responses_shape} {self.responses_dtype}, {self.response_orientation}, "
            f"{self.n_neurons} neurons",
            f"repeats: {'yes' if self.has_repeats else 'no'}",
        ]
        return lines + [f"note: {n}" for n in self.notes]


#: what `subject.json`'s `source` keeps of a MAT import (the subject's meta keys)
_MAT_SOURCE_KEYS = ("images_file", "responses_file", "format", "images_variable", "images_shape_original",
                    "images_dtype", "responses_shape_original", "responses_dtype", "image_layout",
                    "response_orientation", "image_scaling", "notes")


def source_record(meta: dict[str, Any], source_names: Any = None) -> dict[str, Any]:
    """`subject.json`'s `source`: where an imported subject came from and what was decided.

    MAT: the original `images_file` / `responses_file` (`source_names` when given: e.g. the names of
    a browser upload staged in a temporary folder; else the absolute paths read), `format`, layout,
    dtypes, scaling, notes. NWB: `nwb_file` (+ `images_file` when the images came separately),
    `format` ("NWB 2.x.y"), `response_window_s` and every NWB decision under `nwb` (series, imaging
    planes, presentations, image order, frames per window, presentations per image).
    """
    from pathlib import Path

    names = list(source_names) if source_names else []
    if meta.get("source_kind") == "nwb":
        nwb = dict(meta.get("nwb") or {})
        record = {"format": meta["format"], "kind": "nwb",
                  "nwb_file": names[0] if names and names[0] else str(Path(meta["nwb_file"]).resolve()),
                  "response_window_s": nwb.get("response_window_s"),
                  "images_shape_original": meta["images_shape_original"], "images_dtype": meta["images_dtype"],
                  "image_scaling": meta["image_scaling"], "notes": list(meta.get("notes", [])), "nwb": nwb}
        if meta["images_file"] != meta["nwb_file"]:
            record["images_file"] = (names[1] if len(names) > 1 and names[1]
                                     else str(Path(meta["images_file"]).resolve()))
        return record
    record = {k: meta[k] for k in _MAT_SOURCE_KEYS}
    if len(names) == 2 and all(names):
        record["images_file"], record["responses_file"] = (str(n) for n in names)
    else:
        record["images_file"] = str(Path(meta["images_file"]).expanduser().resolve())
        record["responses_file"] = str(Path(meta["responses_file"]).expanduser().resolve())
    return record
