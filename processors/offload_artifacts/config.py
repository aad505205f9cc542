"""The `offload_artifacts:` block. Every key is documented in README.md beside this file."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from core.config import Bytes, Seconds
from core.processor import ProcessorConfig
from processors.keyglob import globs_to_re2


def glob_to_regex(patterns: list[str]) -> str | None:
    """The key globs as one anchored RE2 pattern; None when `*` matches everything (no regex to run)."""
    return None if "*" in patterns else globs_to_re2(patterns)


class OffloadArtifactsConfig(ProcessorConfig):
    # attribute values of at least this many bytes (UTF-8) leave the span
    min_bytes: Bytes = 4096
    # globs over attribute keys; for span events the glob sees the event attribute's own key
    keys: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    # offload event attributes too (gen_ai.content.prompt events and the like)
    events: bool = True
    # plain path, file:// URI, or any pyarrow filesystem URI (s3://bucket/prefix, gs://…)
    store: str = Field("file://./lake/_artifacts", min_length=1)
    # characters of the value kept in the `artifacts` column; 0 keeps no preview
    preview_chars: int = Field(200, ge=0)
    # keep_inline: a failed store write leaves the value in the span (logged, counted);
    # fail: raise, so the batch is not acknowledged and is replayed (Kafka bus)
    on_store_error: Literal["keep_inline", "fail"] = "keep_inline"
    compression_level: int = Field(3, ge=1, le=22)
    # digests known to exist in the store, remembered per process so repeats cost a hash + lookup
    cache_entries: int = Field(65536, ge=0)
    # `tracelake gc`: objects younger than this are never deleted (spans in flight, see README)
    gc_grace: Seconds = 3600.0

    @field_validator("keys")
    @classmethod
    def _keys_compile(cls, value: list[str]) -> list[str]:
        for k in value:
            if not k:
                raise ValueError("empty glob")
        regex = glob_to_regex(value)
        if regex is not None:
            re.compile(regex)
        return value
