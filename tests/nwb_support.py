"""NWB files generated with pynwb inside the tests (none is committed), with their ground truth.

`write_nwb(path, ...)` writes a small calcium-imaging session the way labs and converters do (pynwb's
own classes: `Images` with or without `order_of_images`, `IndexSeries` with timestamps or a rate, or an
intervals table with an image-index column; `RoiResponseSeries` in DfOverF / Fluorescence /
Deconvolved containers, one per imaging plane) and returns what a correct reader must find:

* every presentation's response is held constant over the frames of its response window (the
  frames with onset + start <= t < onset + end, from the series' own jittered time stamps), and the
  trace takes other values elsewhere, so the mean over the window is exactly the value written
  (float32) and any off-by-one frame, or counting frames instead of time, changes it;
* `truth["images"]` are the stimuli in presentation-index order (uint8), `truth["index"]` the image
  index of each kept presentation (in time order), `truth["trials"]` their responses (presentations
  x neurons, planes concatenated in series order); `truth["roi_ids"]` the PlaneSegmentation `id` of
  each column of each plane's series (ids 1000 (plane + 1) + 7 row + 3, the region listing the rows
  in a shuffled order), `truth["roi_tables"]` those tables' paths.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np

H, W = 68, 270


def stimuli(n: int, hw: tuple[int, int] = (H, W), seed: int = 0) -> np.ndarray:
    """(n, H, W) uint8 smooth random images (low-resolution noise upsampled)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    low = rng.random((n, max(1, h // 8) + 1, max(1, w // 8) + 1))
    up = np.kron(low, np.ones((8, 8)))[:, :h, :w]
    return np.round(up * 255).astype(np.uint8)


def rates_of(images: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(n, k) float32 noiseless responses: rectified random linear filters of the 8x-downsampled images."""
    rng = np.random.default_rng(seed + 1)
    n, h, w = images.shape
    small = images[:, : h - h % 8, : w - w % 8].reshape(n, h // 8, 8, w // 8, 8).mean(axis=(2, 4)).reshape(n, -1)
    small = (small - small.mean()) / (small.std() + 1e-6)
    filt = rng.standard_normal((small.shape[1], k)) / np.sqrt(small.shape[1])
    return (np.maximum(small @ filt, 0) + 0.1).astype(np.float32)


def write_nwb(path: Path, **kw: Any) -> dict[str, Any]:
    """`_write_nwb` with pynwb's construction warnings silenced (ROI tables linked across containers)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _write_nwb(Path(path), **kw)


def _write_nwb(path: Path, *, n_images: int = 30, n_rois: int = 40, hw: tuple[int, int] = (H, W), repeats: int = 2,
              order: str = "shuffled", presentation: str = "index_timestamps", blanks: int = 0, planes: int = 1,
              container: str = "DfOverF", extra: tuple[str, ...] = (), window: tuple[float, float] = (0.0, 0.5),
              rate: float = 30.0, isi: float = 1.0, seed: int = 0, templates: str = "images",
              transpose: bool = False, image_sizes: list[tuple[int, int]] | None = None, rgb: str | None = None,
              frames: int | None = None, index_column: str = "frame", series_rate: bool = False,
              onset_shift: float = 0.0, noise: float = 0.2) -> dict[str, Any]:
    """Write a session to `path` (see module docstring); returns the ground truth.

    order: "shuffled" (an `order_of_images` in a random order), "natural" (no order_of_images;
    names NaturalScene0..N-1, so index i is NaturalScene{i}), or "natural_listed" (order_of_images
    in natural order). presentation: "index_timestamps", "index_rate" or "intervals" (a TimeIntervals
    table with the image index in `index_column`, blanks as -1). templates: "images", "image_series"
    (a legacy ImageSeries of frames) or "none". extra: more containers written next to `container`
    (e.g. "Fluorescence"), or "neuropil" (a second series of the same plane in `container`).
    `frames`: the recording length in frames (default: until the last window ends plus a second).
    """
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.base import ImageReferences, Images
    from pynwb.epoch import TimeIntervals
    from pynwb.image import GrayscaleImage, ImageSeries, IndexSeries, RGBImage
    from pynwb.ophys import DfOverF, Fluorescence, OpticalChannel, RoiResponseSeries

    rng = np.random.default_rng(seed)
    images = stimuli(n_images, hw, seed)
    nwb = NWBFile(session_description="neuroalign test session", identifier=f"test-{seed}",
                  session_start_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc))
    # ---- templates
    names = [f"NaturalScene{i}" for i in range(n_images)]
    if order == "shuffled":
        perm = rng.permutation(n_images)  # index i shows image perm[i]
    else:
        perm = np.arange(n_images)
    stored = list(images)
    if image_sizes:
        for i, (h, w) in enumerate(image_sizes):
            stored[i] = np.zeros((h, w), np.uint8)
    template_obj: Any = None
    if templates == "images":
        objs = []
        for i, name in enumerate(names):
            data = stored[i]
            if rgb == "gray":
                objs.append(RGBImage(name=name, data=np.repeat(data[..., None], 3, axis=2)))
            elif rgb == "colour":
                col = np.stack([data, data[::-1], data], axis=2)
                objs.append(RGBImage(name=name, data=col))
            else:
                objs.append(GrayscaleImage(name=name, data=data))
        kw = {}
        if order == "shuffled":
            kw["order_of_images"] = ImageReferences(name="order_of_images", data=[objs[j] for j in perm])
        elif order == "natural_listed":
            kw["order_of_images"] = ImageReferences(name="order_of_images", data=objs)
        # pynwb writes the members in insertion order; shuffle it so that HDF5 order proves nothing
        insertion = [objs[j] for j in rng.permutation(n_images)]
        template_obj = Images(name="natural_scenes", images=insertion, description="stimuli", **kw)
        nwb.add_stimulus_template(template_obj)
    elif templates == "image_series":
        frames_data = np.stack([images[j] for j in perm])
        template_obj = ImageSeries(name="natural_scenes", data=frames_data, unit="n.a.", rate=1.0,
                                   format="raw")
        nwb.add_stimulus_template(template_obj)
    truth_images = np.stack([images[j] for j in perm])  # presentation index i -> truth_images[i]
    # ---- presentations: each image `repeats` times, shuffled, `blanks` blanks, onsets every `isi` s (+ jitter)
    seq = np.concatenate([rng.permutation(n_images) for _ in range(repeats)])
    if blanks:
        where = rng.choice(seq.size + blanks, size=blanks, replace=False)
        full = np.full(seq.size + blanks, -1)
        mask = np.ones(seq.size + blanks, bool)
        mask[where] = False
        full[mask] = seq
        seq = full
    onsets = 2.0 + np.arange(seq.size) * isi + rng.uniform(0, 0.05, seq.size) + onset_shift
    if presentation == "index_rate":  # a regular rate: onsets without jitter
        onsets = 2.0 + np.arange(seq.size) * isi + onset_shift
    if presentation in ("index_timestamps", "index_rate"):
        if blanks:
            raise ValueError("IndexSeries data are uint32: no blanks")
        # a legacy IndexSeries -> ImageSeries link (pynwb 4 refuses to write one) is added below with h5py
        kw = {"indexed_images": template_obj} if templates == "images" else {}
        if templates in ("image_series", "none"):
            pres = None  # written below with h5py, as an older pynwb wrote it (pynwb 4 needs indexed_images)
        elif presentation == "index_rate":
            pres = IndexSeries(name="natural_scenes_presentations", data=seq.astype(np.uint32), unit="N/A",
                               starting_time=float(onsets[0]), rate=1.0 / isi, **kw)
        else:
            pres = IndexSeries(name="natural_scenes_presentations", data=seq.astype(np.uint32), unit="N/A",
                               timestamps=onsets, **kw)
        if pres is not None:
            nwb.add_stimulus(pres)
    else:
        table = TimeIntervals(name="natural_scenes_presentations", description="one row per presentation")
        table.add_column(name=index_column, description="image index, -1 for a blank")
        for t, i in zip(onsets, seq):
            table.add_row(start_time=float(t), stop_time=float(t + 0.25), **{index_column: int(i)})
        nwb.add_time_intervals(table)
    # ---- responses
    shown = seq >= 0
    kept_onsets, kept_index = onsets[shown], seq[shown]
    per_plane = [n_rois // planes + (1 if p < n_rois % planes else 0) for p in range(planes)]
    rates = rates_of(truth_images, n_rois, seed)
    trials = (rates[kept_index] + noise * rng.standard_normal((kept_index.size, n_rois))).astype(np.float32)
    device = nwb.create_device(name="Microscope")
    channel = OpticalChannel(name="green", description="GCaMP", emission_lambda=510.0)
    module = nwb.create_processing_module(name="ophys", description="calcium imaging")
    from pynwb.ophys import ImageSegmentation

    segmentation = ImageSegmentation()
    module.add(segmentation)
    n_frames = frames or int(np.ceil((onsets.max() + window[1] + 1.0) * rate))
    containers: dict[str, list] = {}
    roi_ids: list[list[int]] = []
    col0 = 0
    for p in range(planes):
        plane = nwb.create_imaging_plane(name=f"plane{p}", optical_channel=channel, description="V1", device=device,
                                         excitation_lambda=920.0, indicator="GCaMP6s", location="V1",
                                         imaging_rate=rate)
        seg = segmentation.create_plane_segmentation(name=f"rois_plane{p}", description="ROIs", imaging_plane=plane)
        k = per_plane[p]
        # ROI ids as a segmentation tool gives them (not 0..k-1), and a region listing the rows in another
        # order than the table's: data column j is table row region[j], ROI id ids[region[j]]
        ids = 1000 * (p + 1) + 7 * np.arange(k) + 3
        for i in range(k):
            seg.add_roi(image_mask=np.ones((2, 2)), id=int(ids[i]))
        region = [int(r) for r in np.random.default_rng(seed + 100 + p).permutation(k)]
        roi_ids.append([int(ids[r]) for r in region])
        region = seg.create_roi_table_region(region=region, description="all ROIs")
        # frame times of this plane: offset by p / (rate * planes), jittered (or regular: a rate)
        if series_rate:
            stamps = p / (rate * planes) + np.arange(n_frames) / rate
        else:
            stamps = np.sort(np.arange(n_frames) / rate + p / (rate * planes) + rng.uniform(0, 0.2 / rate, n_frames))
        trace = (-1.0 + 0.05 * rng.standard_normal((n_frames, k))).astype(np.float32)
        for t, value in zip(kept_onsets, trials[:, col0:col0 + k]):
            sel = (stamps >= t + window[0]) & (stamps < t + window[1])
            trace[sel] = value
        col0 += k
        data = trace
        kw = {"starting_time": float(stamps[0]), "rate": rate} if series_rate else {"timestamps": stamps}
        series = RoiResponseSeries(name=f"plane{p}", data=data, rois=region, unit="dF/F", **kw)
        containers.setdefault(container, []).append(series)
        if "neuropil" in extra:
            containers[container].append(RoiResponseSeries(name=f"neuropil{p}", data=np.zeros_like(data), rois=region,
                                                           unit="a.u.", **kw))
        for other in (e for e in extra if e != "neuropil"):
            containers.setdefault(other, []).append(RoiResponseSeries(name=f"plane{p}", data=data * 2 + 1, rois=region,
                                                                      unit="a.u.", **kw))
    for name, series_list in containers.items():
        cls = DfOverF if name == "DfOverF" else Fluorescence
        module.add(cls(name=name, roi_response_series=series_list))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    if templates in ("image_series", "none") and presentation != "intervals":
        import h5py

        with h5py.File(path, "r+") as f:
            g = f.create_group("stimulus/presentation/natural_scenes_presentations")
            g.attrs["neurodata_type"], g.attrs["namespace"] = "IndexSeries", "core"
            g.create_dataset("data", data=seq.astype(np.uint32))
            if presentation == "index_rate":
                start = g.create_dataset("starting_time", data=float(onsets[0]))
                start.attrs["rate"], start.attrs["unit"] = 1.0 / isi, "seconds"
            else:
                g.create_dataset("timestamps", data=onsets)
            if templates == "image_series":
                g["indexed_timeseries"] = h5py.SoftLink("/stimulus/templates/natural_scenes")
    if transpose:  # an older writer's ROIs x frames (pynwb 4 refuses to write it): rewrite the datasets
        import h5py

        with h5py.File(path, "r+") as f:
            for p in range(planes):
                ds = f[f"processing/ophys/{container}/plane{p}/data"]
                values, attrs = ds[()], dict(ds.attrs)
                del f[ds.name]
                new = f.create_dataset(f"processing/ophys/{container}/plane{p}/data", data=values.T.copy())
                for key, value in attrs.items():
                    new.attrs[key] = value
    return {"images": truth_images, "index": kept_index, "onsets": kept_onsets, "trials": trials,
            "names_in_index_order": [names[j] for j in perm], "n_frames": n_frames, "roi_ids": roi_ids,
            "roi_tables": [f"processing/ophys/ImageSegmentation/rois_plane{p}" for p in range(planes)]}


def expected_subject(truth: dict[str, Any], max_repeats: int | None = None):
    """(images (M, H, W) uint8, means (M, K), repeats (R, M, K) | None, ids (M,)) a correct reader gives."""
    index, trials = truth["index"], truth["trials"]
    shown, counts = np.unique(index, return_counts=True)
    order = np.argsort(index, kind="stable")
    sorted_trials = trials[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    means = (np.add.reduceat(sorted_trials, starts, axis=0, dtype=np.float64) / counts[:, None]).astype(np.float32)
    repeats = None
    if counts.min() >= 2:
        r = counts.min() if max_repeats is None else min(counts.min(), max_repeats)
        repeats = np.stack([sorted_trials[starts + j] for j in range(r)])
    return truth["images"][shown], means, repeats, shown


def write_mat_twin(folder: Path, truth: dict[str, Any]) -> tuple[Path, Path]:
    """The same data as a MAT pair the way a lab writes it: all images (N, H, W) uint8, and the trial
    responses (presentations x neurons) with `istim` (1-based image id per presentation)."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    savemat(folder / "images.mat", {"images": truth["images"]})
    savemat(folder / "responses.mat", {"responses": truth["trials"],
                                       "istim": (truth["index"] + 1).astype(np.float64)})
    return folder / "images.mat", folder / "responses.mat"
