"""`allow_list` / `deny_list`: what the deployment knows better than the recognizers.

Semantics follow Presidio's (so a Presidio config carries over):
- allow list (Presidio's `AnalyzerEngine.analyze(allow_list=…)`): a finding whose text is one of the exact
  strings (case-insensitive here; Presidio's exact mode is case-sensitive), or in which one of the regexes
  is found (`re.search`, Presidio's `allow_list_match="regex"` with its default flags IGNORECASE, DOTALL,
  MULTILINE), is left as it is. Product names the NER model takes for people ("Aurora", "Nimbus X2") belong
  here, and the company's own support address.
- deny list (Presidio's deny-list `PatternRecognizer`, one per entity): the exact strings (case-insensitive,
  whole words) and regexes are always found as that entity, also entity types of your own (`PROJECT`).

The deny terms run inside the RE2 pattern pass (so they cost no extra scan); allow checks run on findings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Presidio's defaults for regex allow lists and for PatternRecognizer patterns
PRESIDIO_FLAGS = re.IGNORECASE | re.DOTALL | re.MULTILINE


def _term_pattern(term: str) -> str:
    """An exact term as a whole word: \\b only on a side where the term has a word character."""
    left = r"\b" if re.match(r"\w", term[0], re.ASCII) else ""
    right = r"\b" if re.match(r"\w", term[-1], re.ASCII) else ""
    return left + re.escape(term) + right


@dataclass(frozen=True)
class AllowList:
    exact: frozenset[str]  # casefolded
    regexes: tuple[str, ...]

    @classmethod
    def of(cls, exact: list[str], regexes: list[str]) -> AllowList:
        return cls(frozenset(v.casefold() for v in exact), tuple(regexes))

    def __post_init__(self) -> None:
        combined = re.compile("|".join(f"(?:{r})" for r in self.regexes), PRESIDIO_FLAGS) if self.regexes else None
        object.__setattr__(self, "_regex", combined)

    def __bool__(self) -> bool:
        return bool(self.exact or self.regexes)

    def allows(self, text: str) -> bool:
        if text.casefold() in self.exact:
            return True
        regex: re.Pattern[str] | None = self._regex  # type: ignore[attr-defined]
        return regex is not None and regex.search(text) is not None

    def presidio_kwargs(self) -> dict[str, Any]:
        """The same list as AnalyzerEngine.analyze arguments (exact strings become anchored regexes)."""
        if not self:
            return {}
        patterns = [f"^{re.escape(v)}$" for v in sorted(self.exact)] + list(self.regexes)
        return {"allow_list": patterns, "allow_list_match": "regex", "regex_flags": PRESIDIO_FLAGS}


@dataclass(frozen=True)
class DenyList:
    terms: dict[str, list[str]]  # entity → exact strings
    regexes: dict[str, list[str]]  # entity → regexes

    def __post_init__(self) -> None:
        per_entity = {}
        for entity in sorted(set(self.terms) | set(self.regexes)):
            parts = [_term_pattern(t) for t in self.terms.get(entity, [])] + list(self.regexes.get(entity, []))
            if parts:
                per_entity[entity] = re.compile("|".join(f"(?:{p})" for p in parts), PRESIDIO_FLAGS | re.ASCII)
        object.__setattr__(self, "_per_entity", per_entity)

    def __bool__(self) -> bool:
        return bool(self._per_entity)  # type: ignore[attr-defined]

    @property
    def entities(self) -> frozenset[str]:
        return frozenset(self._per_entity)  # type: ignore[attr-defined]

    def re2_pattern(self) -> str:
        """Every term and regex as one alternation, case-insensitive (RE2 and Python `re` alike)."""
        parts = [p.pattern for p in self._per_entity.values()]  # type: ignore[attr-defined]
        return "(?i:" + "|".join(f"(?:{p})" for p in parts) + ")"

    def entity_of(self, text: str) -> str | None:
        """The entity a deny-list candidate belongs to: the first whose terms or regexes match all of it."""
        for entity, regex in self._per_entity.items():  # type: ignore[attr-defined]
            if regex.fullmatch(text):
                return entity
        return None

    def presidio_recognizers(self) -> list[Any]:
        """Presidio's own deny-list and pattern recognizers for the same lists (the `detector: presidio` path)."""
        from presidio_analyzer import Pattern, PatternRecognizer

        out = []
        for entity in sorted(self.entities):
            terms, regexes = self.terms.get(entity, []), self.regexes.get(entity, [])
            patterns = [Pattern(f"deny_{entity}_{i}", r, 1.0) for i, r in enumerate(regexes)]
            out.append(
                PatternRecognizer(
                    supported_entity=entity,
                    deny_list=terms,  # an empty list is what None would be: no deny-list pattern
                    patterns=patterns,
                    name=f"tracelake_deny_{entity}",
                    deny_list_score=1.0,
                )
            )
        return out
