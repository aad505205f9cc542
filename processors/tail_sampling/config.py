"""The `tail_sampling:` block. Every key is documented in README.md beside this file.

Policies are a discriminated union on `type`, shaped like the OpenTelemetry Collector's
tailsamplingprocessor (`{name, type, <type>: {...}}`). Pydantic puts the union's tag into error
locations (`policies.0.latency.latency.threshold_ms`); users wrote `policies.0.latency.threshold_ms`,
so the top-level validator removes the tag before the loader turns locations into key paths.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AfterValidator, Field, ValidationError, ValidatorFunctionWrapHandler, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from core.config import Seconds, Strict
from core.processor import ProcessorConfig

STATUS_CODES = ("OK", "ERROR", "UNSET")


def _policy_name(value: str) -> str:
    if value != value.strip():
        raise ValueError("policy names may not start or end with whitespace")
    if "," in value:
        # trace summaries carry keep reasons joined with commas (pipeline/trace_summary.py)
        raise ValueError("policy names may not contain commas")
    return value


PolicyName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_policy_name)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Key = Annotated[str, Field(min_length=1)]


def check_regex(pattern: str) -> str | None:
    """RE2 (pyarrow.compute's engine) is what matches at run time, so RE2 judges the pattern."""
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        return str(e).removeprefix("Invalid regular expression: ")
    return None


# -- policy blocks ------------------------------------------------------------------------------
class StatusCodeBlock(Strict):
    status_codes: list[Literal["OK", "ERROR", "UNSET"]] = Field(min_length=1)


class FeedbackBlock(Strict):
    # a feedback event with value <= max_value (e.g. 0 for thumbs-down) keeps the trace
    max_value: FiniteFloat
    # only feedback events with these `feedback.name`s count (unnamed events are named "feedback")
    names: list[Key] | None = Field(None, min_length=1)


class CostBlock(Strict):
    min_usd: NonNegative


class LatencyBlock(Strict):
    threshold_ms: NonNegative
    upper_threshold_ms: NonNegative | None = None

    @model_validator(mode="after")
    def _bounds(self) -> LatencyBlock:
        if self.upper_threshold_ms is not None and self.upper_threshold_ms < self.threshold_ms:
            raise ValueError("upper_threshold_ms must be >= threshold_ms")
        return self


class StringAttributeBlock(Strict):
    key: Key
    values: list[str] = Field(min_length=1)
    # values are RE2 regular expressions, matched anywhere in the attribute value (as in the Collector)
    enabled_regex_matching: bool = False
    # keep the trace when NO span (or resource) has the key with a matching value
    invert_match: bool = False

    @model_validator(mode="after")
    def _regexes(self) -> StringAttributeBlock:
        if self.enabled_regex_matching:
            for i, v in enumerate(self.values):
                problem = check_regex(v)
                if problem is not None:
                    raise ValueError(f"values.{i}: invalid regular expression {v!r}: {problem}")
        return self


class NumericAttributeBlock(Strict):
    key: Key
    min_value: FiniteFloat | None = None
    max_value: FiniteFloat | None = None
    invert_match: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> NumericAttributeBlock:
        if self.min_value is None and self.max_value is None:
            raise ValueError("set min_value, max_value or both")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValueError("min_value must be <= max_value")
        return self


class SpanCountBlock(Strict):
    min_spans: int = Field(ge=0)
    max_spans: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> SpanCountBlock:
        if self.max_spans is not None and self.max_spans < self.min_spans:
            raise ValueError("max_spans must be >= min_spans")
        return self


class ProbabilisticBlock(Strict):
    sampling_percentage: float = Field(ge=0, le=100, allow_inf_nan=False)
    # empty: the Collector's default salt, so both keep the same traces for the same percentage
    hash_salt: str = ""


# -- policies -----------------------------------------------------------------------------------
class _Policy(Strict):
    name: PolicyName


class StatusCodePolicy(_Policy):
    type: Literal["status_code"]
    status_code: StatusCodeBlock


class FeedbackPolicy(_Policy):
    type: Literal["feedback"]
    feedback: FeedbackBlock


class CostPolicy(_Policy):
    type: Literal["cost"]
    cost: CostBlock


class LatencyPolicy(_Policy):
    type: Literal["latency"]
    latency: LatencyBlock


class StringAttributePolicy(_Policy):
    type: Literal["string_attribute"]
    string_attribute: StringAttributeBlock


class NumericAttributePolicy(_Policy):
    type: Literal["numeric_attribute"]
    numeric_attribute: NumericAttributeBlock


class SpanCountPolicy(_Policy):
    type: Literal["span_count"]
    span_count: SpanCountBlock


class ProbabilisticPolicy(_Policy):
    type: Literal["probabilistic"]
    probabilistic: ProbabilisticBlock


class AlwaysSamplePolicy(_Policy):
    type: Literal["always_sample"]


LeafPolicy = (
    StatusCodePolicy
    | FeedbackPolicy
    | CostPolicy
    | LatencyPolicy
    | StringAttributePolicy
    | NumericAttributePolicy
    | SpanCountPolicy
    | ProbabilisticPolicy
    | AlwaysSamplePolicy
)
# As in the Collector, `and` holds leaf policies only (no nesting).
SubPolicy = Annotated[LeafPolicy, Field(discriminator="type")]


def _duplicate_names(policies: list[Any], where: tuple[str | int, ...]) -> list[InitErrorDetails]:
    seen: dict[str, int] = {}
    out: list[InitErrorDetails] = []
    for i, p in enumerate(policies):
        if p.name in seen:
            message = f"duplicate policy name {p.name!r} (also {'.'.join(map(str, where))}.{seen[p.name]}.name)"
            out.append(_error("duplicate_name", message, (*where, i, "name"), p.name))
        else:
            seen[p.name] = i
    return out


class AndBlock(Strict):
    and_sub_policy: list[SubPolicy] = Field(min_length=1)


class AndPolicy(_Policy):
    type: Literal["and"]
    and_: AndBlock = Field(alias="and")


Policy = Annotated[LeafPolicy | AndPolicy, Field(discriminator="type")]
POLICY_TYPES = frozenset(
    (
        "status_code",
        "feedback",
        "cost",
        "latency",
        "string_attribute",
        "numeric_attribute",
        "span_count",
        "probabilistic",
        "always_sample",
        "and",
    )
)


def _error(kind: str, message: str, loc: tuple[str | int, ...], value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError(kind, "{message}", {"message": message}), loc=loc, input=value)


def _without_tags(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop the union tag pydantic inserts after a policy's list index."""
    out: list[str | int] = []
    skip = False
    for i, part in enumerate(loc):
        if skip:
            skip = False
            continue
        out.append(part)
        if (
            isinstance(part, int)
            and i > 0
            and loc[i - 1] in ("policies", "and_sub_policy")
            and i + 1 < len(loc)
            and loc[i + 1] in POLICY_TYPES
        ):
            skip = True
    return tuple(out)


class TailSamplingConfig(ProcessorConfig):
    # a trace is decided this long after its last span arrived
    decision_wait: Seconds = 10.0
    # at most this many undecided traces in memory; beyond it the least recently active are decided early
    num_traces: int = Field(50_000, gt=0)
    # decided trace ids remembered, so late spans and late feedback follow the decision
    decision_cache_size: int = Field(200_000, ge=0)
    # negative feedback this long after a trace was dropped still promotes it
    late_feedback_window: Seconds = 86_400.0
    # a trace that a policy keeps whatever else arrives (README: "Early release") is released at once and
    # its later spans pass straight through, so kept spans are queryable in seconds; false holds every
    # trace for decision_wait, as the Collector does
    early_release: bool = True
    policies: list[Policy] = Field(min_length=1)

    @model_validator(mode="wrap")
    @classmethod
    def _paths_and_names(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> TailSamplingConfig:
        try:
            config: TailSamplingConfig = handler(data)
        except ValidationError as err:
            details = [
                _error(
                    e["type"], e["msg"].removeprefix("Value error, "), _without_tags(tuple(e["loc"])), e.get("input")
                )
                for e in err.errors()
            ]
            raise ValidationError.from_exception_data(err.title, details) from None
        problems = _duplicate_names(config.policies, ("policies",))
        for i, p in enumerate(config.policies):
            if isinstance(p, AndPolicy):
                problems += _duplicate_names(p.and_.and_sub_policy, ("policies", i, "and", "and_sub_policy"))
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return config
