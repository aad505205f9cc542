"""JSON-valued attributes (`gen_ai.input.messages`, tool arguments and results): their text leaves.

Redaction keeps such values valid JSON. On the pattern path placeholders go into the raw JSON text in place
(`inside_strings` says when that provably keeps it valid); otherwise, and always for NER (which must read
decoded text), the document is parsed, its string leaves redacted and the document re-serialized in the
original's style. Object keys are never leaves: they are never changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol


class _Span(Protocol):
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


def looks_json(value: str) -> bool:
    head = value[:64].lstrip()[:1]
    return head in ("{", "[")


def parse_json(value: str) -> Any:
    """The parsed object or array, None for anything else (invalid JSON, scalars)."""
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    return doc if isinstance(doc, dict | list) else None


def string_leaves(doc: Any) -> Iterator[tuple[Any, Any, str | None, str]]:
    """(holder, slot, parent key, text) for every string (and integer of 7+ digits: card or phone numbers sent
    as JSON numbers) of a parsed document; `holder[slot] = new` replaces the leaf."""
    stack: list[tuple[Any, str | None]] = [(doc, None)]
    while stack:
        node, pkey = stack.pop()
        items: Iterable[tuple[Any, Any]] = node.items() if isinstance(node, dict) else enumerate(node)
        for slot, child in items:
            key = slot if isinstance(node, dict) else pkey
            if isinstance(child, str):
                yield node, slot, key, child
            elif isinstance(child, int) and not isinstance(child, bool) and abs(child) >= 1_000_000:
                yield node, slot, key, str(child)
            elif isinstance(child, dict | list):
                stack.append((child, key))


def dump_like(doc: Any, original: str) -> str:
    """Re-serialize in the original's style (compact or spaced, ASCII-escaped or not)."""
    compact = '":' in original and '": ' not in original
    return json.dumps(
        doc,
        ensure_ascii="\\u" in original,
        separators=(",", ":") if compact else (", ", ": "),
    )


def inside_strings(value: str, spans: Sequence[_Span]) -> bool:
    """True when every span lies inside one JSON string literal (odd number of unescaped quotes before it) and
    holds no quote or backslash: replacing it keeps the document valid without parsing it twice. An escaped
    backslash anywhere makes quote parity ambiguous: then False, and the caller parses."""
    if "\\\\" in value:
        return False
    for f in spans:
        piece = value[f.start : f.end]
        if '"' in piece or "\\" in piece or (f.start and value[f.start - 1] == "\\"):
            return False
        if (value.count('"', 0, f.start) - value.count('\\"', 0, f.start)) % 2 == 0:
            return False
    return True
