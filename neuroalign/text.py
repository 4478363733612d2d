"""Showing strings that come from users' files (variable names, file and subject names, paths) safely.

* `printable(text)`: non-printable characters (terminal escape sequences, control and invisible
  characters, lone surrogates of undecodable file names) as Python escapes (`\\x1b`, `\\u200b`,
  `\\udcff`), so that printing a message can never change the terminal's title, clear it or hide text.
* `markdown_literal(text)`: the same, with the characters that start Markdown backslash-escaped, so that
  Markdown renderers (the dashboard's `st.error`, `st.caption`, ...) show the text as it is: no link,
  image, emphasis, heading, colour or icon directive made of a crafted name.
* `markdown_code(text)`: the same text as an inline code span (a path, a run folder), fenced so that
  backticks inside it cannot close the span early.
"""

from __future__ import annotations

__all__ = ["markdown_code", "markdown_literal", "printable"]

_ALWAYS = frozenset("\\`*[]<>~$")


def _escape(ch: str) -> str:
    return ch.encode("unicode_escape").decode("ascii") if ch != "\\" else ch


def printable(text: object) -> str:
    """`str(text)` with every non-printable character written as its Python escape (one line)."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in s)


def markdown_literal(text: object) -> str:
    """`printable(text)` escaped so that, rendered as Markdown, it shows itself.

    Backslash-escapes what can start Markdown in a one-line message: ``\\ ` * [ ] < > ~ $``, an
    underscore not inside a word (intraword ones are never emphasis), and a colon followed by
    something other than a space (`http://...` autolinks, `:red[...]` colours, `:material/x:` icons).
    Ordinary messages ("my_resp.mat: variable 'x' ...") come out unchanged.
    """
    s = printable(text)
    out = []
    for i, ch in enumerate(s):
        before = s[i - 1] if i else " "
        after = s[i + 1] if i + 1 < len(s) else " "
        if ch in _ALWAYS or (ch == "_" and not (before.isalnum() and after.isalnum())) \
                or (ch == ":" and not after.isspace()):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def markdown_code(text: object) -> str:
    """`printable(text)` as a Markdown inline code span, shown literally whatever it holds: fenced by one
    backtick more than its longest run of backticks (CommonMark), padded when it starts or ends with one."""
    s = printable(text)
    longest, run = 0, 0
    for ch in s:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or (s.startswith(" ") and s.endswith(" ") and s.strip()) else ""
    return f"{fence}{pad}{s}{pad}{fence}"
