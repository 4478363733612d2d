"""The worker of the sandboxed check (`neuroalign.data.sandbox`): `python -m neuroalign.data.check_worker`.

Reads one JSON request on stdin, limits its own memory (`RLIMIT_AS`: its start-up size plus
`memory_mb` for the headers, then plus `data_budget` of the sizes the headers declare once they
have been checked against the file and the import cap) and CPU time (`RLIMIT_CPU`), and runs it:

* `op: "check"` -- load the source (`kind: "mat"`: `load_pair(..., require_trainable=True)`;
  `kind: "nwb"`: `nwb.plan_nwb` from the file's structure, then `nwb.read_plan`), answer the
  `ValidationReport`, optionally write preview arrays to a .npz;
* `op: "stage"` -- the same, then write the subject's canonical files and `subject.json` into the
  empty folder `stage.folder` (`writer.stage_subject`): the import service's one parse of an import
  (`neuroalign.data.imports`), the server then only renames the folder into place;
* `op: "inventory"` -- what an NWB file offers (`nwb.inventory`), for the dashboard's choices.

It writes JSON lines on stdout: `{"reading": <file>}` before each phase (so the parent can name
the file when this process is killed) and a final answer `{"ok": true, "report": {...}}` or
`{"ok": false, "type": ..., "error": <one line>}` (a full disk: `type` "OSError" with `errno` and
`filename`), with `peak_rss_bytes` (VmHWM: the peak since exec). Imports only numpy, scipy, h5py
and `neuroalign.data` (the backbone's minimum image side comes in the request: no torch, and no
pynwb/pandas: NWB files are read with h5py).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from neuroalign.data.sandbox import MEMORY_ENV

#: bytes the data phase may use per declared element beyond the raw array: up to three float32
#: copies (conversion, layout, one-row-per-image aggregation)
_BYTES_PER_ELEMENT = 12
#: more bytes per declared element when the worker also writes the subject (the MAT writer's copy)
_STAGE_BYTES_PER_ELEMENT = 8
_PREVIEW_IMAGES = 8
_PREVIEW_RASTER_IMAGES = 200


def _proc_status(key: str) -> int | None:
    """A byte count from /proc/self/status (Linux: "VmSize", "VmHWM"), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _vm_size() -> int | None:
    """This process's virtual memory size in bytes (Linux), else None."""
    return _proc_status("VmSize")


def _set_memory(limit: int | None) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return
    if limit is not None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))


def _set_cpu(seconds: float) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover
        return
    soft = max(1, int(seconds + 1))
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 5))


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def data_budget(declared: list[tuple[tuple[int, ...], str]], writing: bool = False) -> int:
    """Bytes reading and converting arrays of these declared (shape, dtype) needs beyond the headers
    (and writing them again, with `writing`)."""
    from neuroalign.data.matio.common import bytes_of

    per_element = _BYTES_PER_ELEMENT + (_STAGE_BYTES_PER_ELEMENT if writing else 0)
    total = 0
    for shape, dtype in declared:
        n = 1
        for s in shape:
            n *= max(int(s), 0)
        total += bytes_of(shape, dtype) + per_element * n
    return total


def human(n: int) -> str:
    from neuroalign.data.matio.common import human as _human

    return _human(n)


def _memory_error_in(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MemoryError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _file_in_traceback(exc: BaseException, names: set[str]) -> str | None:
    """The last of `names` that a frame of the traceback was reading (a local `path`)."""
    found = None
    while exc is not None:
        tb = exc.__traceback__
        while tb is not None:
            p = tb.tb_frame.f_locals.get("path")
            if isinstance(p, Path) and p.name in names:
                found = p.name
            tb = tb.tb_next
        exc = exc.__cause__
    return found


def preview_arrays(subject: Any) -> dict[str, Any]:
    """Small arrays to preview a checked subject without sending it whole to the parent:
    `images` (k, H, W) float32 evenly spread over the subject with their `image_ids`, and
    `rows` (<= 200 images evenly spread, K) of the responses with their `row_ids` (image ids)."""
    import numpy as np

    n = subject.n_images
    pick = np.unique(np.linspace(0, n - 1, num=min(_PREVIEW_IMAGES, n)).round().astype(np.int64))
    rows = np.unique(np.linspace(0, n - 1, num=min(n, _PREVIEW_RASTER_IMAGES)).round().astype(np.int64))
    ids = np.asarray(subject.image_ids, dtype=np.int64)
    return {"images": np.ascontiguousarray(subject.images[pick, 0], dtype=np.float32), "image_ids": ids[pick],
            "rows": np.ascontiguousarray(subject.responses[rows], dtype=np.float32), "row_ids": ids[rows]}


def _declared(images: Path, responses: Path) -> list[tuple[tuple[int, ...], str]]:
    """Declared (shape, dtype) of every variable the load will read, each first proven by the file.

    Every variable counted here has passed `check_declared_size` (the file holds that many elements,
    within the import cap): a declared size never raises the memory budget on its own.
    """
    from neuroalign.data.matio import check_declared_size, peek_mat
    from neuroalign.data.subject import IMAGE_VARIABLES, OPTIONAL_RESPONSE_VARIABLES, RESPONSE_VARIABLE

    img = peek_mat(images)
    out = []
    for v in [v for v in IMAGE_VARIABLES if v in img.variables][:1]:
        check_declared_size(images, img, v)
        out.append(img.variables[v])
    resp = peek_mat(responses)
    for v in (RESPONSE_VARIABLE,) + OPTIONAL_RESPONSE_VARIABLES:
        if v in resp.variables:
            check_declared_size(responses, resp, v)
            out.append(resp.variables[v])
    if not any(v in resp.variables for v in (RESPONSE_VARIABLE, "responses_repeats")):
        size = responses.stat().st_size  # a struct (Stringer et al.): bounded by the file it is read from
        out.append(((4 * size,), "uint8"))
    return out


def _load_mat(request: dict[str, Any], base: int | None, state: dict[str, int], require: bool, writing: bool):
    from neuroalign.data.layout import decide_from_headers, pick_image_variable
    from neuroalign.data.matio import peek_mat
    from neuroalign.data.subject import load_pair

    images, responses = Path(request["images"]), Path(request["responses"])
    memory = int(request["memory_mb"]) * 1_000_000
    _emit({"reading": images.name})
    img_info = peek_mat(images)
    img_var = pick_image_variable(images, img_info)
    _emit({"reading": responses.name})
    resp_info = peek_mat(responses)
    if "responses" in resp_info.variables or "responses_repeats" in resp_info.variables:
        decide_from_headers(images, responses, img_info, img_var, resp_info, require)  # sizes the file can hold
    if base is not None:
        budget = data_budget(_declared(images, responses), writing)
        state["data_budget"] = budget
        _set_memory(base + memory + budget)
    _emit({"reading": f"{images.name} + {responses.name}"})
    return load_pair(images, responses, name="validate", require_trainable=require)


def _load_nwb(request: dict[str, Any], base: int | None, state: dict[str, int], require: bool, writing: bool):
    from neuroalign.data.nwb import NwbOptions, plan_nwb, read_plan

    nwb = Path(request["nwb"])
    images = Path(request["images"]) if request.get("images") else None
    memory = int(request["memory_mb"]) * 1_000_000
    _emit({"reading": nwb.name})
    plan = plan_nwb(nwb, images=images, options=NwbOptions.from_dict(request.get("options")))
    if base is not None:
        budget = plan.memory_bytes(writing=writing)
        state["data_budget"] = budget
        _set_memory(base + memory + budget)
    _emit({"reading": nwb.name if images is None else f"{nwb.name} + {images.name}"})
    return read_plan(plan, "validate", require_trainable=require)


def _check(request: dict[str, Any], base: int | None, state: dict[str, int]) -> dict[str, Any]:
    from neuroalign.data import trainable
    from neuroalign.data.report import ValidationReport

    trainable.use_min_image_side(int(request["min_side"]))
    op = request.get("op")
    if op == "inventory":
        from neuroalign.data.nwb import inventory

        _emit({"reading": Path(request["nwb"]).name})
        return {"ok": True, "inventory": inventory(Path(request["nwb"]))}
    require = bool(request.get("trainable", True))
    writing = op == "stage"
    load = _load_nwb if request.get("kind") == "nwb" else _load_mat
    subject = load(request, base, state, require, writing)
    report = asdict(ValidationReport.from_subject(subject))
    if request.get("preview"):
        from neuroalign.io_utils import atomic_savez

        atomic_savez(request["preview"], **preview_arrays(subject))
    answer: dict[str, Any] = {"ok": True, "report": report}
    if writing:
        from neuroalign.data.report import source_record
        from neuroalign.data.writer import stage_subject

        stage = request["stage"]
        folder = Path(stage["folder"])
        _emit({"reading": "writing the subject"})
        subject.name = stage["name"]
        try:
            stage_subject(folder, stage["name"], subject, final=Path(stage["final"]),
                          source=source_record(subject.meta, stage.get("source_names")))
        except (OSError, MemoryError):
            raise  # a full disk names the file; others say what failed (`_serve`)
        except Exception as exc:  # noqa: BLE001 - not the file's fault: say so, in one line
            detail = " ".join(str(exc).split())[:160]
            raise ValueError(f"writing subject {stage['name']!r} into {Path(stage['final']).parent} failed "
                             f"({type(exc).__name__}: {detail}); nothing was saved") from exc
        answer["staged"] = str(folder)
    return answer


def _serve(request: dict[str, Any]) -> dict[str, Any]:
    """Run one request under the limits; the answer the parent reads (never raises)."""
    base = _vm_size()
    memory = int(request["memory_mb"]) * 1_000_000
    names = {Path(request[k]).name for k in ("images", "responses", "nwb") if request.get(k)}
    state: dict[str, int] = {}
    try:
        _set_cpu(float(request["seconds"]))
        if base is not None:
            _set_memory(base + memory)
        if request.get("op") not in ("check", "stage", "inventory"):
            raise ValueError(f"unknown request {request.get('op')!r}")
        return _check(request, base, state)
    except BaseException as exc:  # noqa: BLE001 - everything becomes an answer
        where = _file_in_traceback(exc, names) or " + ".join(sorted(names))
        if _memory_error_in(exc):
            budget = state.get("data_budget")
            beyond = f" beyond the {human(budget)} its headers declare" if budget else ""
            return {"ok": False, "type": "limit",
                    "error": f"the check of {where} exceeded the {request['memory_mb']} MB memory limit{beyond} "
                             f"(set {MEMORY_ENV} to allow more); the file is refused"}
        if isinstance(exc, (ValueError, FileNotFoundError, FileExistsError)):
            text = " ".join(str(exc).split()) or type(exc).__name__
            return {"ok": False, "type": type(exc).__name__ if not isinstance(exc, ValueError) else "ValueError",
                    "error": text}
        from neuroalign.io_utils import is_disk_full

        if isinstance(exc, OSError) and is_disk_full(exc):  # the file as it would have been, for the parent
            return {"ok": False, "type": "OSError", "errno": exc.errno, "filename": exc.filename,
                    "error": f"{exc.strerror or 'No space left on device'} ({exc.filename})"}
        if isinstance(exc, OSError):
            name = Path(exc.filename).name if exc.filename else where
            return {"ok": False, "type": "ValueError", "error": f"{name}: {exc.strerror or type(exc).__name__}"}
        detail = " ".join(str(exc).split())[:160]
        return {"ok": False, "type": "ValueError",
                "error": f"{where}: cannot be read ({type(exc).__name__}: {detail}); the file may be corrupt"}


def main() -> int:
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    answer = _serve(request)
    # the peak of this process since exec (ru_maxrss would include the parent's pages before exec)
    answer["peak_rss_bytes"] = _proc_status("VmHWM")
    _emit(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
