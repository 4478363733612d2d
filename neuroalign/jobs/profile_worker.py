"""The profile worker: one alignment profile in a process of its own (what the dashboard's profile
jobs launch, `neuroalign.jobs.profile_job`).

    python -m neuroalign.jobs.profile_worker --spec <subject>/.profile-job/job_spec.json

Spec (JSON): `{"version": 1, "subject", "data_dir", "subject_dir", "cache_dir", "models": null | [names],
"layers": "stages" | "all", "max_seconds": null | seconds, "server": null | {"pid", "start_ticks"}}`.
Progress goes to `status.json` beside the spec after every layer; the profile is saved with the
subject (`profile.save_profile`), also when a stop or the time budget ended it early (its rows so
far; `complete` false), together with the stored profile's rows of the models it did not profile
(`merge_with_stored`: re-profiling one model keeps the others). A stop is `stop_request.json` beside the spec, or the end of the server
process the spec names; either ends the profile after its current layer.

Exit status: 0 finished or stopped, 1 failed (status.json says why), 2 unusable spec.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from neuroalign.jobs import protocol as proto
from neuroalign.jobs.profile_job import FINAL_STATES, RUNNING, SPEC_VERSION, write_status

logger = logging.getLogger("neuroalign.jobs.profile_worker")

STOP_POLL_S = 0.2


def load_spec(path: Path) -> dict[str, Any]:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"profile spec {path} is not readable JSON: {exc}") from None
    if not isinstance(spec, dict) or spec.get("version") != SPEC_VERSION:
        raise ValueError(f"profile spec {path} is not a version-{SPEC_VERSION} spec")
    missing = [k for k in ("subject", "data_dir", "subject_dir", "cache_dir", "layers") if not spec.get(k)]
    if missing:
        raise ValueError(f"profile spec {path} lacks {', '.join(missing)}")
    return spec


def _watch(folder: Path, server: Any, stop: threading.Event, done: threading.Event, why: dict[str, str]) -> None:
    """Set `stop` once a stop is requested or the server is gone; say so in status.json."""
    pid = server.get("pid") if isinstance(server, dict) else None
    ticks = server.get("start_ticks") if isinstance(server, dict) else None
    while not done.wait(STOP_POLL_S):
        if (folder / proto.STOP_FILE).exists():
            why["reason"] = "stopped by user"
        elif isinstance(pid, int) and not proto.process_alive(pid, ticks if isinstance(ticks, int) else None):
            why["reason"] = proto.SERVER_EXITED_MESSAGE
        else:
            continue
        stop.set()
        logger.info("%s: ending after the current layer", why["reason"])
        raw = proto.read_json(folder / "status.json") or {}
        if raw.get("state") == RUNNING:
            write_status(folder, RUNNING, f"stopping after the current layer ({why['reason']})")
        return


def merge_with_stored(profile: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """`profile` plus the rows of the models it did not profile from the `stored` profile of the same
    data, split and settings (so re-profiling one model keeps the others); `best` recomputed over all
    rows, `kept_from_stored` names the models whose rows came from the stored one."""
    from neuroalign.config import IMAGE_MODEL_DEPTHS
    from neuroalign.training.profile import _best

    if not isinstance(stored, dict) or any(stored.get(k) != profile.get(k) for k in ("data_hash", "config", "split")):
        return profile
    new_models = {r.get("model") for r in profile["rows"]}
    kept = [r for r in stored.get("rows") or [] if r.get("model") not in new_models]
    if not kept:
        return profile
    order = list(IMAGE_MODEL_DEPTHS)
    rows = sorted(profile["rows"] + kept, key=lambda r: (order.index(r["model"]) if r.get("model") in order
                                                         else len(order), str(r.get("model")), r.get("stage") or 0,
                                                         r.get("block") or 0))
    merged = {**profile, "rows": rows, "kept_from_stored": sorted({str(r.get("model")) for r in kept})}
    if any("val_mrr" in r for r in rows):
        merged["best"] = _best(rows)
    return merged


def run_spec(spec: dict[str, Any], folder: Path) -> str:
    """Profile as the spec says; returns the final state written to status.json."""
    from neuroalign.config import preset
    from neuroalign.data.store import SubjectStore
    from neuroalign.data.subject import load_ground_truth
    from neuroalign.training.profile import ProfileStopped, alignment_profile, load_profile, save_profile

    stop, done, why = threading.Event(), threading.Event(), {}
    watcher = threading.Thread(target=_watch, args=(folder, spec.get("server"), stop, done, why),
                               name="neuroalign-profile-stop", daemon=True)
    watcher.start()
    try:
        write_status(folder, RUNNING, "loading the subject", pid=os.getpid())
        store = SubjectStore(spec["data_dir"])
        subject = store.load(spec["subject"])
        try:
            truth = load_ground_truth(store.path(spec["subject"]))
        except (OSError, ValueError):
            truth = None

        def progress(i: int, total: int, message: str) -> None:
            if not stop.is_set():
                write_status(folder, RUNNING, message, done=i, total=total)

        try:
            profile = alignment_profile(subject, preset("recommended"), models=spec.get("models"),
                                        layers=spec["layers"], cache_dir=spec["cache_dir"], progress=progress,
                                        stop_event=stop, max_seconds=spec.get("max_seconds"), ground_truth=truth)
        except ProfileStopped as exc:
            write_status(folder, "stopped", f"{why.get('reason', 'stopped')}: {exc}; nothing saved")
            return "stopped"
        scored = sum(1 for r in profile["rows"] if "val" in r)
        save_profile(spec["subject_dir"], merge_with_stored(profile, load_profile(spec["subject_dir"],
                                                                                  subject.data_hash)))
        total = len(profile["rows"]) if profile["complete"] else None
        if profile["complete"]:
            state = "finished"
            message = f"profiled {scored} layer{'s' if scored != 1 else ''} in {profile['elapsed_s']:.0f} s"
        else:
            state = "stopped"
            reason = why.get("reason") or profile.get("stopped") or "stopped"
            message = f"{reason}: {scored} layer{'s' if scored != 1 else ''} profiled and saved"
        write_status(folder, state, message, done=len(profile["rows"]), **({"total": total} if total else {}))
        return state
    except BaseException as exc:
        raw = proto.read_json(folder / "status.json") or {}
        if raw.get("state") not in FINAL_STATES:
            write_status(folder, "failed", f"{type(exc).__name__}: {' '.join(str(exc).split())}")
        raise
    finally:
        done.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neuroalign.jobs.profile_worker",
                                     description="Run one alignment profile described by a JSON spec.")
    parser.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s rank0 %(levelname)s %(name)s: %(message)s")
    path = Path(args.spec)
    try:
        spec = load_spec(path)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    logger.info("profile worker pid %d: %s", os.getpid(), spec["subject"])
    try:
        state = run_spec(spec, path.parent)
    except BaseException as exc:  # noqa: BLE001 - the last line is what the page shows
        logger.exception("profile failed")
        logger.error("failed: %s: %s", type(exc).__name__, " ".join(str(exc).split()))
        return 1
    logger.info("profile ended: %s", state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
