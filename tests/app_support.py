"""Shared helpers for the dashboard tests (AppTest and browser): tiny subjects, env isolation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def tiny_pair(n_images: int = 48, n_neurons: int = 24, repeats: int = 2, seed: int = 0) -> tuple[dict, dict]:
    """Variables of a small but learnable subject: smooth random 68x270 images, neurons that are
    random linear filters of a downsampled image plus noise, `repeats` noisy presentations."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n_images, 9, 34))
    images = np.kron(coarse, np.ones((8, 8)))[:, :68, :270].astype(np.float32)
    w = rng.normal(size=(9 * 34, n_neurons))
    rates = np.maximum(coarse.reshape(n_images, -1) @ w / 10.0, 0.0) + 0.1
    reps = rates[None] + 0.2 * rng.normal(size=(repeats, n_images, n_neurons))
    resp = {"responses": reps.mean(axis=0).astype(np.float32)}
    if repeats >= 2:
        resp["responses_repeats"] = reps.astype(np.float32)
    return {"images": images}, resp


def write_subject(root: Path, name: str, **kw) -> Path:
    """`<root>/<name>/Data/{images,responses}.mat` in the reference layout."""
    images, responses = tiny_pair(**kw)
    data = Path(root) / name / "Data"
    data.mkdir(parents=True)
    savemat(data / "images.mat", images)
    savemat(data / "responses.mat", responses)
    return data.parent


def mat_bytes(variables: dict) -> bytes:
    buf = io.BytesIO()
    savemat(buf, variables)
    return buf.getvalue()


def isolated_env(monkeypatch, tmp_path: Path) -> dict[str, Path]:
    """Point data/runs/cache at empty temp folders and switch off demo creation."""
    dirs = {k: tmp_path / k for k in ("data", "runs", "cache")}
    for p in dirs.values():
        p.mkdir()
    monkeypatch.setenv("NEUROALIGN_DATA_DIR", str(dirs["data"]))
    monkeypatch.setenv("NEUROALIGN_RUNS_DIR", str(dirs["runs"]))
    monkeypatch.setenv("NEUROALIGN_CACHE_DIR", str(dirs["cache"]))
    monkeypatch.setenv("NEUROALIGN_NO_DEMO", "1")
    return dirs


def no_exceptions(at) -> None:
    """Fail with the page's exception messages if any element is an exception."""
    excs = [e.value for e in at.exception]
    assert not excs, excs


def write_finished_run(runs_root: Path, subject_name: str, subject_dir: Path, n_test: int = 6, seed: int = 0,
                       state: str = "finished") -> Path:
    """A run folder in the documented layout (config/status/split/metrics/results/test outputs) with
    made-up but consistent numbers, so result pages can be tested without training."""
    from neuroalign.config import preset
    from neuroalign.data import load_subject
    from neuroalign.evaluation.retrieval import retrieval_metrics
    from neuroalign.io_utils import atomic_savez, atomic_write_json
    from neuroalign.training import runs as runs_io

    subject = load_subject(subject_dir)
    rng = np.random.default_rng(seed)
    run_dir = runs_io.new_run_dir(runs_root, subject_name)
    cfg = preset("recommended").replace(epochs=3, **{"image.backbone": "ds_net_small"})  # as a run records it
    atomic_write_json(run_dir / "config.json", {
        "config": cfg.to_dict(), "created": "2026-01-01T00:00:00Z",
        "subject": {"name": subject_name, "path": str(subject_dir), "data_hash": subject.data_hash,
                    "n_images": subject.n_images, "n_neurons": subject.n_neurons, "simulated": False}})
    test = np.arange(subject.n_images - n_test, subject.n_images)
    runs_io.write_split(run_dir, {"train": np.arange(subject.n_images - 2 * n_test),
                                  "val": np.arange(subject.n_images - 2 * n_test, subject.n_images - n_test),
                                  "test": test})
    for step in range(1, 31):
        runs_io.append_metrics(run_dir, {"event": "step", "epoch": 1 + step // 10, "step": step,
                                         "train_loss": 2.0 / step, "lr_image": 1e-3, "lr_neural": 3e-4})
        if step % 10 == 0:
            runs_io.append_metrics(run_dir, {"event": "epoch", "epoch": step // 10, "step": step,
                                             "val_loss": 2.5 / step})
    image_maps = rng.random((n_test, 16, 64)).astype(np.float32)
    neural_maps = np.clip(image_maps + 0.3 * rng.normal(size=image_maps.shape), 0, 1).astype(np.float32)
    a = image_maps.reshape(n_test, -1)
    b = neural_maps.reshape(n_test, -1)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    similarity = a @ b.T
    ssim = rng.uniform(0.1, 0.9, n_test).astype(np.float32)
    atomic_savez(run_dir / "test_outputs.npz", test_indices=test, image_maps=image_maps, neural_maps=neural_maps,
                 similarity=similarity, ssim=ssim)
    metrics = retrieval_metrics(similarity)
    ridge = retrieval_metrics(rng.random((n_test, n_test)))
    atomic_write_json(run_dir / "results.json", {"test": metrics, "ssim": {"mean": float(ssim.mean())},
                                                 "baselines": {"ridge": ridge}})
    runs_io.write_status(run_dir, state, "done", epoch=3, epochs=3, progress=1.0)
    return run_dir


# ---- pytest fixtures (import them into a test module to use them) -----------------------------


@pytest.fixture
def app_env(monkeypatch, tmp_path):
    """Empty data/runs/cache roots, no demo creation, a fresh job manager -- closed at the end
    (every job stopped, a worker that ignores the stop terminated), so that a failing AppTest never
    leaves a job running into the next test."""
    from neuroalign.jobs import manager as jobs

    monkeypatch.setattr(jobs, "_manager", None)
    yield isolated_env(monkeypatch, tmp_path)
    manager = jobs._manager  # the test's manager (get_job_manager's, or one it put there itself)
    if manager is not None:
        manager.close(timeout=10, kill=True)


@pytest.fixture
def app_populated(app_env):
    """`app_env` plus subject "m1" (48 images x 24 neurons, 2 repeats) and one finished run of it."""
    env = app_env
    subject_dir = write_subject(env["data"], "m1")
    env["subject_dir"] = subject_dir
    env["run"] = write_finished_run(env["runs"], "m1", subject_dir)
    return env


def app_at(page: str | None = None, timeout: float = 30):
    """An AppTest of app.py, run once, then switched to `page` (e.g. "pages/train.py") and run."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=timeout).run()
    if page is not None:
        at.switch_page(page).run()
    return at


def chart_specs(at) -> list[dict]:
    """The plotly figures on the page as dicts (parsed from the element protos)."""
    import json

    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def load_json(path: Path):
    import json

    return json.loads(Path(path).read_text())


def status_labels(at) -> list[str]:
    """Labels of the st.status boxes at the top level of the main area."""
    return [b.proto.label for b in at.main.children.values() if getattr(b, "type", "") == "status"]


def arr(value) -> np.ndarray:
    """A plotly array from a chart spec (plain list or plotly's base64 'bdata' typed array)."""
    import base64

    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        if shape:
            out = out.reshape([int(v) for v in str(shape).split(",")])
        return out
    return np.asarray(value)


def theme_placeholders(at) -> list[str]:
    """Colours in the page's plotly specs that Streamlit's theme would replace (#000001-#000040)."""
    from neuroalign.plots import THEME_PLACEHOLDER

    return [m for el in at.get("plotly_chart") for m in THEME_PLACEHOLDER.findall(el.proto.spec)]


def colorscales(spec: dict) -> dict[str, list]:
    """Trace name (or type + position) -> colour scale, for every trace with one (incl. markers)."""
    out = {}
    for i, tr in enumerate(spec["data"]):
        scale = tr.get("colorscale") or (tr.get("marker") or {}).get("colorscale")
        if scale is not None:
            out[tr.get("name") or f"{tr['type']}{i}"] = scale
    return out
