"""A one-line text progress display for terminals and notebooks (no dependency): the line is
rewritten in place with a carriage return, which both a terminal and Jupyter's output area honour.

`ProgressLine(enabled=True)`: `.message(text)` shows a phase ("preparing: backbone features ..."),
`.update(done, total, text)` a bar with a percentage, `.close()` ends the line. Used by
`neuroalign.Aligner.fit(verbose=True)`; writes to stderr so a notebook's results stay separate.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

BAR_WIDTH = 24
MIN_INTERVAL_S = 0.2  # updates closer together than this are skipped (a message or the end is never)


def format_seconds(seconds: float | None) -> str:
    """`75.0` -> "1:15", `3700` -> "1:01:40"; "?" for None/NaN/inf."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """`|█████·····|` filled to `fraction` (clipped to [0, 1])."""
    fraction = min(max(float(fraction) if math.isfinite(fraction) else 0.0, 0.0), 1.0)
    filled = int(round(fraction * width))
    return "|" + "█" * filled + "·" * (width - filled) + "|"


class ProgressLine:
    """One line of progress rewritten in place (see the module docstring)."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, prefix: str = "") -> None:
        self.enabled = bool(enabled)
        self.stream = stream if stream is not None else sys.stderr
        self.prefix = prefix
        self._width = 0
        self._last = 0.0
        self._open = False

    def _show(self, text: str) -> None:
        line = f"{self.prefix}{text}"
        pad = max(self._width - len(line), 0)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)
        self._open = True

    def message(self, text: str) -> None:
        if self.enabled:
            self._show(text)
            self._last = time.monotonic()

    def update(self, done: float, total: float, text: str = "", force: bool = False) -> None:
        """A bar at `done / total` with the percentage and `text` after it."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < MIN_INTERVAL_S:
            return
        fraction = done / total if total else 1.0
        self._show(f"{bar(fraction)} {100 * min(max(fraction, 0.0), 1.0):3.0f}% {text}".rstrip())
        self._last = now

    def close(self, text: str | None = None) -> None:
        """Show `text` (when given) and end the line."""
        if not self.enabled:
            return
        if text:
            self._show(text)
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
        self._open, self._width = False, 0
