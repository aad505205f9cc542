"""Text for a terminal: one line per value, widths in cells, cuts and wraps that never break an id.

Shared by `tracelake trace` and `tracelake query`'s table output. Span data is untrusted: every value
goes through `clean` (no newlines or escape sequences from the data reach the terminal). Widths count
terminal cells (wide CJK characters are two). Trace/span ids and `artifact:sha256:` references are
never cut or split: a user copies them into the next command.
"""

from __future__ import annotations

import re
import unicodedata

RED, BOLD, DIM = "\x1b[31m", "\x1b[1m", "\x1b[2m"

# What must be copied whole: hex ids (trace 32, span 16 characters) and artifact references.
_UNCUTTABLE = re.compile(r"^(?:[0-9a-f]{16}|[0-9a-f]{32}|artifact:sha256:[0-9a-f]{64})$")


def uncuttable(text: str) -> bool:
    return _UNCUTTABLE.match(text) is not None


def clean(text: object) -> str:
    """One line of printable text."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())


def _cw(c: str) -> int:
    if unicodedata.combining(c):
        return 0
    return 2 if unicodedata.east_asian_width(c) in "WF" else 1


def cells(text: str) -> int:
    return sum(_cw(c) for c in text)


def fit(text: str, n: int) -> str:
    """Cut to `n` cells, marking the cut with …"""
    if cells(text) <= n:
        return text
    used = 0
    for i, c in enumerate(text):  # one pass: values can be kilobytes long
        if used + _cw(c) > n - 1:
            return text[:i] + "…" if n > 0 else ""
        used += _cw(c)
    return text


def pad(text: str, n: int) -> str:
    text = fit(text, n)
    return text + " " * (n - cells(text))


def paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}\x1b[0m" if color and text else text


def _split_word(word: str, n: int) -> list[str]:
    """A word longer than a line, in pieces of at most `n` cells (ids and references stay whole)."""
    if uncuttable(word) or cells(word) <= n:
        return [word]
    pieces, cur, used = [], "", 0
    for c in word:
        if used + _cw(c) > n and cur:
            pieces.append(cur)
            cur, used = "", 0
        cur += c
        used += _cw(c)
    return [*pieces, cur] if cur else pieces


def wrap(text: str, width: int) -> list[str]:
    """`text` as lines of at most `width` cells, its own line breaks kept (each line cleaned).

    Only a line holding a lone id or reference wider than `width` is longer: it is never split."""
    width = max(width, 8)
    out: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        line, used = "", 0
        for word in clean(paragraph).split(" "):
            for piece in _split_word(word, width):
                w = cells(piece)
                if line and used + 1 + w > width:
                    out.append(line)
                    line, used = "", 0
                line, used = (f"{line} {piece}", used + 1 + w) if line else (piece, w)
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return out
