"""The `filter:` block. Every key is documented in README.md beside this file.

Regexes run in RE2 (pyarrow.compute), so RE2 is what validates them: a pattern Python's `re`
accepts but RE2 does not (lookahead, backreferences) would otherwise fail on the first batch.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BeforeValidator, Field, PlainValidator, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from core.processor import ProcessorConfig
from core.schema import SPAN_KINDS, SPAN_TYPES, STATUS_CODES

SpanType = Literal["llm", "embedding", "retrieval", "rerank", "tool", "agent", "chain", "guardrail", "other"]
StatusCode = Literal["UNSET", "OK", "ERROR"]
SpanKind = Literal["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]


def _scalar(value: Any) -> str | bool | int | float:
    """One message for a wrong type, instead of pydantic's one error per union member."""
    if isinstance(value, str | bool | int | float):
        return value
    raise ValueError("expected a string (a regex) or a number or boolean (an exact value)")


# a string is a regex (or, with match_type strict, an exact value); other scalars are exact values
AttributeMatch = Annotated[str | bool | int | float, PlainValidator(_scalar)]

# the Literals above must list what decode writes, or a valid value would be refused
assert set(get_args(StatusCode)) == set(STATUS_CODES) and set(get_args(SpanKind)) == set(SPAN_KINDS)
assert set(get_args(SpanType)) == set(SPAN_TYPES)


MATCHERS = ("name", "span_type", "status_code", "kind", "service_name", "attributes", "resource_attributes")


def _one_or_many(value: Any) -> Any:
    """`span_type: llm` reads as `span_type: [llm]`."""
    return [value] if isinstance(value, str) else value


def re2_error(pattern: str) -> str | None:
    """RE2's complaint about `pattern` (with Python's position when it has one), or None."""
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), pattern)  # an empty array compiles nothing
    except pa.ArrowInvalid as e:
        message = str(e).removeprefix("Invalid regular expression: ")
        try:
            re.compile(pattern)
        except re.error as py_err:
            if py_err.pos is not None:
                message += f" (near position {py_err.pos})"
        return message
    return None


def exact_string(value: AttributeMatch) -> str:
    """A non-string YAML value as the lake stores it (decode's encoding): 200 → "200", true → "true"."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def _issue(loc: tuple[str, ...], message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("invalid_regex", message), loc=loc, input=value)


class SpanCondition(ProcessorConfig):
    """Matches a span when every field it sets matches (AND); an empty condition is an error."""

    # RE2 regex searched in the span name (unanchored: use ^…$ for the whole name)
    name: str | None = None
    span_type: Annotated[list[SpanType], BeforeValidator(_one_or_many), Field(min_length=1)] | None = None
    status_code: Annotated[list[StatusCode], BeforeValidator(_one_or_many), Field(min_length=1)] | None = None
    kind: Annotated[list[SpanKind], BeforeValidator(_one_or_many), Field(min_length=1)] | None = None
    # RE2 regex searched in service_name
    service_name: str | None = None
    # key → regex (strings) or exact value (numbers, booleans); the key must be present
    attributes: dict[str, AttributeMatch] | None = Field(None, min_length=1)
    resource_attributes: dict[str, AttributeMatch] | None = Field(None, min_length=1)
    # regexp: strings are RE2 regexes; strict: strings are exact values
    match_type: Literal["regexp", "strict"] = "regexp"

    @model_validator(mode="after")
    def _check(self) -> SpanCondition:
        if not any(getattr(self, f) is not None for f in MATCHERS):
            raise ValueError(f"a condition needs at least one of: {', '.join(MATCHERS)}")
        if self.match_type == "strict":
            return self
        issues: list[InitErrorDetails] = []
        for field in ("name", "service_name"):
            pattern = getattr(self, field)
            if pattern is not None and (err := re2_error(pattern)) is not None:
                issues.append(_issue((field,), f"not a valid RE2 regex: {err}", pattern))
        for field in ("attributes", "resource_attributes"):
            for key, pattern in (getattr(self, field) or {}).items():
                if isinstance(pattern, str) and (err := re2_error(pattern)) is not None:
                    issues.append(_issue((field, key), f"not a valid RE2 regex: {err}", pattern))
        if issues:
            raise ValidationError.from_exception_data(type(self).__name__, issues)
        return self


class SpanFilter(ProcessorConfig):
    # keep only spans matching at least one of these (absent: keep all)
    include: list[SpanCondition] | None = Field(None, min_length=1)
    # then drop spans matching at least one of these
    exclude: list[SpanCondition] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _something(self) -> SpanFilter:
        if self.include is None and self.exclude is None:
            raise ValueError("set include, exclude or both")
        return self


class FilterConfig(ProcessorConfig):
    spans: SpanFilter
