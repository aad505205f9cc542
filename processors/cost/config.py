"""The `cost:` block. Every key is documented in README.md beside this file.

Overrides are validated here, at config time, including the ones in `overrides_file`: a typo in a
negotiated price must stop `tracelake validate`, not show up as a wrong dollar figure a week later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from core.processor import ProcessorConfig

Dialect = Literal["genai", "openinference", "openllmetry_legacy"]
SpanType = Literal["retrieval", "rerank", "tool", "agent", "chain", "guardrail", "other"]


# USD per million tokens: finite and not negative
Mtok = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class PriceOverride(BaseModel):
    """One self-hosted, fine-tuned or negotiated price; USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # exact model name or a glob (`*`, `?`, `[seq]`), matched case-insensitively
    model: str = Field(min_length=1)
    # optional: the span's provider name as sent (e.g. azure.ai.openai) or its genai-prices id (azure)
    provider: str | None = Field(None, min_length=1)
    input_mtok: Mtok
    output_mtok: Mtok
    cache_read_mtok: Mtok | None = None
    cache_write_mtok: Mtok | None = None
    reasoning_mtok: Mtok | None = None

    @field_validator("model", "provider")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        return value.strip() if isinstance(value, str) else value


class OverrideSource(BaseModel):
    """Where an override came from, for `tracelake.cost.source` and `tracelake prices`."""

    model_config = ConfigDict(frozen=True)

    index: int
    file: str | None = None

    def label(self) -> str:
        return f"overrides_file {self.file} entry {self.index}" if self.file else f"overrides entry {self.index}"


def load_overrides_file(path: str | Path) -> list[PriceOverride]:
    """Read a YAML or JSON list of overrides (or `{overrides: [...]}`); errors name the file and entry."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        doc: Any = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: {e}") from None
    if isinstance(doc, dict) and set(doc) == {"overrides"}:
        doc = doc["overrides"]
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise ValueError(f"{p}: expected a list of overrides (or a mapping with one key, overrides)")
    out: list[PriceOverride] = []
    problems: list[str] = []
    for i, entry in enumerate(doc):
        try:
            out.append(PriceOverride.model_validate(entry))
        except ValidationError as err:
            for detail in err.errors():
                where = ".".join(str(x) for x in detail["loc"]) or "entry"
                msg = "unknown key" if detail["type"] == "extra_forbidden" else detail["msg"]
                problems.append(f"{p}: entry {i}: {where}: {msg}")
    if problems:
        raise ValueError("; ".join(problems))
    return out


class CostConfig(ProcessorConfig):
    # prices that win over genai-prices; first match wins, inline entries before overrides_file entries
    overrides: list[PriceOverride] = Field(default_factory=list)
    # a YAML or JSON file holding more overrides (a list, or {overrides: [...]}), read once at config time;
    # a relative path is relative to the working directory of the process
    overrides_file: str | None = Field(None, min_length=1)
    # span provider name (lower-cased) -> genai-prices provider id, or null: no list price, overrides only.
    # Extends/replaces the built-in table (README: "Provider names").
    providers: dict[str, str | None] = Field(default_factory=dict)
    # span types, besides llm and embedding, whose spans are priced when they carry token counts.
    # agent/chain spans that repeat their children's totals must stay out, or a trace pays twice.
    usage_span_types: list[SpanType] = Field(default=["other"])  # pydantic copies it for each instance
    # dialects whose input count EXCLUDES cache reads/writes (raw Anthropic usage); their cache
    # tokens are added back. Empty by default: every dialect's definition includes them (README).
    input_excludes_cache: list[Dialect] = Field(default_factory=list)
    # distinct (provider, model names) resolutions remembered
    cache_entries: int = Field(4096, ge=16)
    # distinct unknown model names counted one by one in stats; the rest are counted as "(other)"
    max_unknown_names: int = Field(200, ge=1)

    _file_overrides: list[PriceOverride] = PrivateAttr(default_factory=list)

    @field_validator("providers")
    @classmethod
    def _known_provider_ids(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        from genai_prices import data_snapshot

        ids = {p.id for p in data_snapshot.get_snapshot().providers}
        out: dict[str, str | None] = {}
        for name, pid in value.items():
            if pid is not None and pid not in ids:
                raise ValueError(f"{name}: {pid!r} is not a genai-prices provider id (known: {', '.join(sorted(ids))})")
            out[name.strip().lower()] = pid
        return out

    @model_validator(mode="after")
    def _load_file(self) -> CostConfig:
        if self.overrides_file is not None:
            self._file_overrides = load_overrides_file(self.overrides_file)
        return self

    def all_overrides(self) -> list[tuple[PriceOverride, OverrideSource]]:
        """Inline overrides, then the file's, each with where it came from."""
        inline = [(o, OverrideSource(index=i)) for i, o in enumerate(self.overrides)]
        from_file = [(o, OverrideSource(index=i, file=self.overrides_file)) for i, o in enumerate(self._file_overrides)]
        return inline + from_file
