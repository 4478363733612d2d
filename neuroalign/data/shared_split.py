"""Splits by image identity shared across subjects: the same image is train, val or test for everyone.

Several mice usually see the same images (natimg2800: every mouse saw the same 2,800), stored in
each subject's file in its own order. An image is recognised across subjects by `image_hash`, a
hash of its stored pixels (the float32 intensities in [0, 1] that `load_subject` produces, with its
shape), whatever its index. Its side is then a function of that hash alone (`hash_side`): a
uniform number drawn from `sha256(seed, hash)` is compared with the test and val fractions. So

* an image seen by several subjects is on the same side for all of them (no test image of one
  subject is a training image of another);
* an image seen by one subject only is split too, by the same rule;
* a subject added later (adaptation) gets the same assignment for every image the others saw,
  without the others' data.

The fractions are met in expectation, not exactly (each image is an independent draw); every
subject needs at least 2 val and 2 test images under the rule (`ValueError` naming the counts
otherwise -- use more images or larger fractions).
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import numpy as np

SIDES = ("train", "val", "test")


def image_hash(image: np.ndarray) -> str:
    """Hex digest (24 characters) of one stored image `(1, H, W)` or `(H, W)`: its float32 pixels and
    shape. Equal pixels give equal hashes in any subject, at any index."""
    a = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    h = hashlib.sha256(str(a.shape).encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:24]


def image_hashes(images: np.ndarray) -> list[str]:
    """`image_hash` of every image of `images (N, 1, H, W)`."""
    return [image_hash(img) for img in np.asarray(images)]


def hash_side(digest: str, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 1234) -> str:
    """"train", "val" or "test" for the image with hash `digest` (deterministic, see module docstring)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val/test fractions must be in [0, 1) with a sum below 1, got {val_fraction}, {test_fraction}")
    u = int.from_bytes(hashlib.sha256(f"{int(seed)}:{digest}".encode()).digest()[:8], "big") / 2.0**64
    if u < test_fraction:
        return "test"
    return "val" if u < test_fraction + val_fraction else "train"


def split_by_hash(hashes: Sequence[str], val_fraction: float = 0.1, test_fraction: float = 0.1,
                  seed: int = 1234, name: str = "the subject") -> dict[str, np.ndarray]:
    """Sorted int64 index arrays train/val/test of one subject whose images have `hashes`.
    ValueError (one line) when fewer than 2 val, 2 test or 3 train images fall to it."""
    sides = [hash_side(h, val_fraction, test_fraction, seed) for h in hashes]
    out = {s: np.asarray([i for i, x in enumerate(sides) if x == s], dtype=np.int64) for s in SIDES}
    counts = {s: len(out[s]) for s in SIDES}
    if counts["val"] < 2 or counts["test"] < 2 or counts["train"] < 3:
        raise ValueError(f"{name}: the shared split by image hash gives {counts['train']}/{counts['val']}/"
                         f"{counts['test']} train/val/test images of {len(hashes)}; expected >= 3/2/2 "
                         "(more images or larger val/test fractions)")
    return out


def shared_splits(hashes: Mapping[str, Sequence[str]], val_fraction: float = 0.1, test_fraction: float = 0.1,
                  seed: int = 1234) -> dict[str, dict[str, np.ndarray]]:
    """`split_by_hash` for every subject of `hashes` (name -> hashes of its images, in file order)."""
    return {name: split_by_hash(h, val_fraction, test_fraction, seed, name) for name, h in hashes.items()}


def overlap_report(hashes: Mapping[str, Sequence[str]], splits: Mapping[str, Mapping[str, np.ndarray]]
                   ) -> dict[str, Any]:
    """How many distinct images the subjects saw, how many each pair shares (all, and on test), and
    whether the image sets are identical, overlapping or disjoint (what a shared run records)."""
    names = list(hashes)
    sets = {n: set(hashes[n]) for n in names}
    test = {n: {hashes[n][i] for i in splits[n]["test"]} for n in names}
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pairs.append({"a": a, "b": b, "shared_images": len(sets[a] & sets[b]),
                          "shared_test_images": len(test[a] & test[b])})
    union = set().union(*sets.values()) if sets else set()
    if all(sets[n] == sets[names[0]] for n in names):
        kind = "identical"
    elif any(p["shared_images"] for p in pairs):
        kind = "overlapping"
    else:
        kind = "disjoint"
    return {"distinct_images": len(union), "image_sets": kind, "pairs": pairs,
            "per_subject": {n: {"images": len(hashes[n]), "distinct": len(sets[n]),
                                **{s: int(len(splits[n][s])) for s in SIDES}} for n in names}}


def check_sides_agree(hashes: Mapping[str, Sequence[str]], splits: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """ValueError (one line) when some image is on different sides for two subjects (or for two
    copies within one subject)."""
    side_of: dict[str, tuple[str, str]] = {}
    for name, hs in hashes.items():
        for side in SIDES:
            for i in splits[name][side]:
                prev = side_of.setdefault(hs[int(i)], (side, name))
                if prev[0] != side:
                    raise ValueError(f"image {hs[int(i)]} is {prev[0]} for {prev[1]} but {side} for {name}; "
                                     "expected one side for every subject")


def union_index(hashes: Mapping[str, Sequence[str]]) -> tuple[list[str], dict[str, np.ndarray]]:
    """The distinct images over all subjects (in first-seen order) and, per subject, the position of
    each of its images in that list `(N_s,)` int64."""
    order: dict[str, int] = {}
    rows: dict[str, np.ndarray] = {}
    for name, hs in hashes.items():
        rows[name] = np.asarray([order.setdefault(h, len(order)) for h in hs], dtype=np.int64)
    return list(order), rows

