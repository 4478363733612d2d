"""Every `NEUROALIGN_*` environment variable in one table: name, what it holds, default, parser.

`get(NAME)` reads the variable as it is now (tests and benchmarks set them per call) and parses it
with the table's parser: an unset or blank variable gives the default, a bad value a one-line
ValueError naming the variable. The modules that use one keep a constant with its name
(`paths.DATA_DIR_ENV`, `sandbox.MEMORY_ENV`, ...) and call `get`; README lists the table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

FALSE_WORDS = ("", "0", "false", "no", "off")
TRUE_WORDS = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    doc: str
    parse: Callable[[str, str], Any]  # (name, stripped text) -> value


def _text(name: str, text: str) -> str:
    return text


def _set(name: str, text: str) -> bool:
    """Any value but 0/false/no/off (an unset or empty variable is the default)."""
    return text.lower() not in FALSE_WORDS


def _true(name: str, text: str) -> bool:
    """Only 1/true/yes/on."""
    return text.lower() in TRUE_WORDS


def _whole(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {text!r}")
    return value


def _positive(kind: type, example: Any) -> Callable[[str, str], Any]:
    def parse(name: str, text: str) -> Any:
        try:
            value = kind(float(text))
        except ValueError:
            raise ValueError(f"{name}={text!r} is not a number; expected e.g. {example}") from None
        if value <= 0:
            raise ValueError(f"{name}={text!r} must be positive")
        return value
    return parse


def _bytes(name: str, text: str) -> int:
    try:
        value = int(float(text))
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a byte count; expected e.g. 2000000000") from None
    if value <= 0:
        raise ValueError(f"{name}={text!r} must be positive; expected e.g. 2000000000")
    return value


def _choice(what: str, choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, text: str) -> str:
        return check_choice(text.lower(), choices, f"{what} (${name})")
    return parse


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value


NATIVE_MODES = ("auto", "off")
COMPILE_MODES = ("auto", "on", "off")

SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("NEUROALIGN_DATA_DIR", "data", "subject data root (a --data-dir flag wins)", _text),
    Setting("NEUROALIGN_RUNS_DIR", "runs", "runs root (a --runs-dir flag wins)", _text),
    Setting("NEUROALIGN_CACHE_DIR", ".neuroalign-cache", "frozen-feature cache (a --cache-dir flag wins)", _text),
    Setting("NEUROALIGN_NO_DEMO", False, "dashboard: do not write the demo subjects into an empty data root "
            "(any value but 0/false/no/off)", _set),
    Setting("NEUROALIGN_ALLOWED_HOSTS", "", "dashboard: more Host names to accept, comma-separated "
            "(`*.example.org`, `*`)", _text),
    Setting("NEUROALIGN_JOB_PROCESSES", None, "dashboard: processes per training job (default: the visible "
            "GPUs, else 1)", _whole),
    Setting("NEUROALIGN_JOBS_OUTLIVE_SERVER", False, "dashboard: training workers keep running when the "
            "server exits (1/true/yes/on)", _true),
    Setting("NEUROALIGN_IMPORT_ROOTS", "", "dashboard: server folders the Subjects page may import from, "
            "separated by `:`", _text),
    Setting("NEUROALIGN_MAX_IMPORT_BYTES", 8 * 1024**3, "largest .mat variable (or NWB dataset read whole, or NWB "
            "responses result) an import reads, in bytes",
            _bytes),
    Setting("NEUROALIGN_CHECK_MEMORY_MB", 300, "memory limit of the sandboxed upload check, MB",
            _positive(int, 300)),
    Setting("NEUROALIGN_CHECK_SECONDS", 60.0, "CPU-time limit of the sandboxed upload check, s",
            _positive(float, 300.0)),
    Setting("NEUROALIGN_NATIVE", "auto", "fused CPU kernels of the folded attention: auto or off",
            _choice("native mode", NATIVE_MODES)),
    Setting("NEUROALIGN_FOLDED_COMPILE", "auto", "torch.compile of the folded attention: auto (on a GPU), on "
            "or off",
            _choice("compile mode", COMPILE_MODES)),
)}


def get(name: str) -> Any:
    """The value of setting `name` now: the default when unset or blank, else the parsed text."""
    setting = SETTINGS[name]
    text = os.environ.get(name, "").strip()
    return setting.default if not text else setting.parse(name, text)
