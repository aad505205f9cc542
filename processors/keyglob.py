"""Attribute-key globs (`*`, `?`, `[seq]`, `[!seq]`, fnmatch-case) as RE2 regexes for pyarrow.compute.

One translation for every processor that matches keys on columns, so `keys: ["gen_ai.*"]` means the same
in attributes, offload_artifacts and the rest."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

GLOB_CHARS = frozenset("*?[")


def is_glob(key: str) -> bool:
    return any(c in GLOB_CHARS for c in key)


# RE2 treats a backslash before these as the literal character; everything else is literal as it is
_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$-")


def _re2_escape(c: str) -> str:
    return "\\" + c if c in _RE2_SPECIAL else c


def _body(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: fnmatch reads a literal "["
                out.append("\\[")
                continue
            body = pattern[i:j]
            i = j + 1
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            escaped = "".join("\\" + ch if ch in "\\[]^" else ch for ch in body)
            out.append("[" + ("^" if negate else "") + escaped + "]")
        else:
            out.append(_re2_escape(c))
    return "".join(out)


def glob_to_re2(pattern: str) -> str:
    """fnmatch-case semantics as one anchored RE2 regex, so key matching stays in pyarrow.compute.

    fnmatch.translate is not usable: its output needs `\\Z` and lookaheads, which RE2 lacks."""
    return "(?s)^" + _body(pattern) + "$"


def globs_to_re2(patterns: list[str]) -> str:
    """Any of the globs, as one anchored RE2 regex."""
    return "(?s)^(?:" + "|".join(_body(p) for p in patterns) + ")$"


def re2_error(pattern: str) -> str | None:
    """RE2's complaint about `pattern`, or None. An empty array would not compile it: use one row."""
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), pattern)
    except pa.ArrowInvalid as e:
        return str(e).removeprefix("Invalid regular expression: ")
    return None
