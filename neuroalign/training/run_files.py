"""Reading run files back safely: one-line `RunFileError`s naming the file, what is wrong and what
to do; JSON files (`read_json_file`) and checkpoints (`load_checkpoint`, `weights_only=True`).

The file names of a run folder live here too (`neuroalign.training.runs` re-exports them).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

CONFIG_FILE, SPLIT_FILE, NORMALISER_FILE = "config.json", "split.json", "normaliser.json"
METRICS_FILE, STATUS_FILE, RESULTS_FILE = "metrics.jsonl", "status.json", "results.json"
BEST_CKPT, LAST_CKPT, TEST_OUTPUTS = "best.pt", "last.pt", "test_outputs.npz"
LOSS_MAT, TEST_MAT = "loss_data.mat", "test_result.mat"
LOCK_FILE = ".lock"  # flock'ed by the one process that writes the run (training, resume, evaluate, delete)


class RunFileError(ValueError):
    """A file of a run folder is damaged (truncated, corrupt, wrong type); the message is one line."""

    def __init__(self, path: Path, problem: str, hint: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        hint = _HINTS.get(self.path.name, "") if hint is None else hint
        text = f"{display_path(self.path)} {problem}"
        if hint:
            text += "; " + hint.format(run=display_path(self.path.parent))
        super().__init__(text)


_HINTS = {
    RESULTS_FILE: "re-run `python -m neuroalign evaluate {run}` to rewrite it",
    STATUS_FILE: "resume the run (`python -m neuroalign train --resume {run}`) to rewrite it, or delete the run",
    CONFIG_FILE: "the run cannot be evaluated or resumed without it; delete the run",
    SPLIT_FILE: "the run cannot be evaluated or resumed without it; delete the run",
    NORMALISER_FILE: "the run cannot be evaluated or resumed without it; delete the run",
    BEST_CKPT: "evaluate needs it; train the run again",
    LAST_CKPT: "resume needs it; start a new run with the same settings",
    TEST_OUTPUTS: "re-run `python -m neuroalign evaluate {run}` to rewrite it",
}


def display_path(path: Path) -> str:
    """`path` relative to the working folder when inside it (e.g. "runs/x/results.json"), else absolute."""
    path = Path(path)
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if rel.startswith("..") else rel


_TORN_NUMBER = re.compile(r"[.eE][-+0-9.eE]*")


def _json_problem(raw: bytes, exc: Exception) -> str:
    """What is wrong with a document that did not parse: cut short (a crash mid-write) or invalid."""
    if isinstance(exc, UnicodeDecodeError):
        if exc.reason == "unexpected end of data" and exc.end >= len(raw):  # cut inside a character
            return f"is not valid JSON (truncated at byte {len(raw)})"
        return f"is not UTF-8 text (invalid byte at {exc.start}); expected JSON"
    assert isinstance(exc, json.JSONDecodeError)
    text = exc.doc
    if not text.strip():
        return "is empty (expected JSON; truncated by a crash?)"
    rest = text[exc.pos:].strip()
    # cut short: at the end, inside a string, inside a literal ("tru"), at a lone minus sign, or inside a number's fraction
    # or exponent ("3.1e", "2.": the parser stops at the torn tail, which holds nothing but number characters)
    cut_short = (exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
                 or (exc.msg == "Expecting value" and (rest == "-" or any(w.startswith(rest) for w in ("true", "false", "null"))))
                 or (exc.pos > 0 and text[exc.pos - 1].isdigit() and _TORN_NUMBER.fullmatch(rest) is not None))
    if cut_short:
        return f"is not valid JSON (truncated at byte {len(raw)})"
    return f"is not valid JSON ({exc.msg} at byte {len(text[: exc.pos].encode('utf-8'))})"


def read_json_file(path: str | os.PathLike, expect: type = dict) -> Any:
    """The JSON object in `path`, None when the file does not exist; RunFileError when it is damaged
    (not readable, not UTF-8, not valid JSON, or not an `expect`)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise RunFileError(path, "is a folder, not a file") from None
    except OSError as exc:
        raise RunFileError(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFileError(path, _json_problem(raw, exc)) from None
    if not isinstance(data, expect):
        raise RunFileError(path, f"holds a JSON {type(data).__name__}; expected a JSON "
                           f"{'object' if expect is dict else expect.__name__}")
    return data


#: keys a checkpoint must hold to be used (best.pt: evaluation; last.pt: resume)
CHECKPOINT_KEYS = {BEST_CKPT: ("model", "epoch", "val_loss"),
                   LAST_CKPT: ("model", "opt_image", "opt_neural", "epoch", "global_step")}


#: how torch.save's files start: a zip archive (PyTorch >= 1.6), or the legacy format's pickled magic number
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def _checkpoint_kind(path: Path) -> str:
    """"torch" when `path` starts as a file written by torch.save does, else what it is instead (a
    RunFileError problem): a plain Python pickle, or not a PyTorch checkpoint at all."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_LEGACY_MAGIC))
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    if head.startswith(_ZIP_MAGIC) or head == _LEGACY_MAGIC:
        return "torch"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return (f"is a plain Python pickle (protocol {head[1]}), not a PyTorch checkpoint; expected a file "
                "written by torch.save (refused unread: a pickle can run code)")
    return (f"is not a PyTorch checkpoint (starts with bytes {head[:4].hex(' ')}; expected a torch.save zip "
            "archive): damaged, or another kind of file")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` (tensors and plain containers only) onto the CPU.

    FileNotFoundError when missing; RunFileError (one line) when it is not a file torch.save wrote (a
    plain pickle or other bytes: refused before any unpickling), is truncated or corrupt, holds
    anything but tensors and plain containers, or lacks what `best.pt` / `last.pt` must hold
    (`CHECKPOINT_KEYS`).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise RunFileError(path, "is a folder, not a checkpoint file")
        raise FileNotFoundError(f"checkpoint {display_path(path)} not found")
    if path.stat().st_size == 0:
        raise RunFileError(path, "is empty (0 bytes: truncated by a crash or a full disk?)")
    kind = _checkpoint_kind(path)
    if kind != "torch":
        raise RunFileError(path, kind)  # never handed to torch's unpickler (no warnings, an accurate message)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols etc.; the one line below says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise RunFileError(path, "does not fit in memory; free memory or use a larger machine", hint="") from None
    except Exception as exc:  # noqa: BLE001 - torch/zipfile/pickle raise many types for damaged files
        cause = " ".join(str(exc.__context__ or exc).split())
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", cause)
        if refused:
            raise RunFileError(path, f"holds objects other than tensors and plain containers ({refused.group(1)}; "
                               "refused: checkpoints load with weights_only=True)") from None
        detail = cause if "weights only load failed" in str(exc).lower() else " ".join(str(exc).split())
        detail = detail.split(". ")[0]  # torch's messages go on with advice that does not apply here
        raise RunFileError(path, f"is truncated or corrupt ({type(exc).__name__}: {detail[:120]})") from None
    if not isinstance(obj, dict):
        raise RunFileError(path, f"holds a {type(obj).__name__}; expected a checkpoint dictionary")
    missing = [k for k in CHECKPOINT_KEYS.get(path.name, ("model",)) if k not in obj]
    if missing:
        raise RunFileError(path, f"lacks {', '.join(missing)}; expected a checkpoint written by neuroalign")
    if not isinstance(obj.get("model"), dict):
        raise RunFileError(path, "has no model weights (expected a dictionary of state dicts under 'model')")
    return obj


def _json_kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _type_text(hint: Any) -> str:
    import dataclasses
    import types
    import typing

    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "an object"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) in (tuple, list):
        args = typing.get_args(hint)
        if not args:
            return "a list"
        names = [_type_text(a).removeprefix("an ").removeprefix("a ") for a in args if a is not Ellipsis]
        return f"a list [{', '.join(names)}{', ...' if Ellipsis in args or typing.get_origin(hint) is list else ''}]"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _matches(value: Any, hint: Any) -> bool:
    import dataclasses
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if not args:
            return True
        if origin is tuple and Ellipsis not in typing.get_args(hint):
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return all(_matches(v, args[0]) for v in value)
    return True  # Any, dict and other hints: the dataclass's own validation decides


def check_field_types(cls: type, data: Any, path: str | os.PathLike, prefix: str = "config") -> None:
    """RunFileError (one line, naming the file and the field) when `data` (a JSON object read from
    `path`) holds a value whose JSON type does not fit the annotation of dataclass `cls`'s field, e.g.
    `"epochs": "10"` or `"loss": 3`; nested dataclasses are checked recursively. Fields `data` lacks
    and fields `cls` does not know are left to `cls.from_dict` (defaults / a one-line error)."""
    import dataclasses
    import typing

    if not isinstance(data, dict):
        raise RunFileError(Path(path), f"has {prefix} = {_json_kind(data)}; expected an object of settings")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint, where = data[f.name], hints[f.name], f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            check_field_types(hint, value, path, where)
        elif not _matches(value, hint):
            shown = json.dumps(value, default=str)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise RunFileError(Path(path), f"has {where} = {shown} ({_json_kind(value)}); expected {_type_text(hint)}")
