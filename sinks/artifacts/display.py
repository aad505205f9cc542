"""Lines for `tracelake trace`: what was offloaded from a span, with its preview."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    if n < 1024:
        return f"{n} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024**2:.1f} MiB"


def artifact_lines(artifacts: Iterable[Mapping[str, Any]] | None, width: int = 80, indent: str = "  ") -> list[str]:
    """One line per offloaded value: key, size, short ref, then the preview cut to `width`."""
    lines = []
    for a in artifacts or ():
        ref = str(a.get("ref") or "")
        short = ref[: len("artifact:sha256:") + 12] + "…" if len(ref) > 28 else ref
        head = f"{indent}↳ {a.get('key')} ({_size(a.get('bytes'))}) {short}"
        preview = " ".join(str(a.get("preview") or "").split())
        room = width - len(head) - 3
        if preview and room > 10:
            cut = preview if len(preview) <= room else preview[: room - 1] + "…"
            head = f"{head} “{cut}”"
        lines.append(head)
    return lines
