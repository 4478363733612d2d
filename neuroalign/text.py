"""Showing strings that come from users' files (variable names, file and subject names, paths) safely.

* `printable(text)`: non-printable characters (terminal escape sequences, control and invisible
  characters, lone surrogates of undecodable file names) as Python escapes (`\\x1b`, `\\u200b`,
  `\\udcff`), so that printing a message can never change the terminal's title, clear it or hide text.
* `markdown_literal(text)`: the same, with every ASCII punctuation character backslash-escaped, so that
  Markdown renderers (the dashboard's `st.error`, `st.caption`, ...) show the text as it is: no link,
  image, emphasis, heading, colour or icon directive made of a crafted name.
"""

from __future__ import annotations

import string

__all__ = ["markdown_literal", "printable"]

_PUNCTUATION = frozenset(string.punctuation)


def _escape(ch: str) -> str:
    return ch.encode("unicode_escape").decode("ascii") if ch != "\\" else ch


def printable(text: object) -> str:
    """`str(text)` with every non-printable character written as its Python escape (one line)."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in s)


def markdown_literal(text: object) -> str:
    """`printable(text)` with ASCII punctuation backslash-escaped: rendered as Markdown, it shows itself."""
    return "".join("\\" + ch if ch in _PUNCTUATION else ch for ch in printable(text))
