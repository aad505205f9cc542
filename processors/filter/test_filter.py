"""filter: include/exclude semantics on real decoded batches, vectorized matching, config errors."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core.conventions import Normalizer, normalize
from core.feedback import FEEDBACK_SCOPE
from core.processor import ProcessorContext, Registry
from core.schema import STR_MAP
from pipeline.config import ConfigError, parse
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.receiver.intake import IngestChain
from pipeline.testing import make_request
from processors.attributes import factory as attributes_factory
from processors.filter import FilterConfig, FilterProcessor, factory
from processors.filter.config import SpanCondition

# -- building batches the way the worker does: OTLP request → decode → normalize -------------------


def request(
    spans: list[dict[str, Any]],
    service: str = "svc",
    resource: dict[str, Any] | None = None,
    scope: str = "tests",
) -> ExportTraceServiceRequest:
    """spans: dicts with name, optional kind (int), error (bool) and attrs; one trace, ids and times made up."""
    start = 1_700_000_000_000_000_000
    made = [
        {**s, "trace_id": "cd" * 16, "span_id": f"{i:016x}", "start": start + i, "end": start + i + 1_000_000}
        for i, s in enumerate(spans, 1)
    ]
    return make_request(made, service=service, resource=resource, scope=scope)


def batch(*requests: ExportTraceServiceRequest) -> pa.Table:
    return normalize(decode([SourcedRequest(r, f"test@{i}") for i, r in enumerate(requests)]))


LLM = {"name": "chat gpt-4o", "kind": 3, "attrs": {"gen_ai.operation.name": "chat", "http.status_code": 200}}
TOOL = {
    "name": "execute_tool search",
    "attrs": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "s"},
}
HEALTH = {"name": "GET /healthz", "kind": 2, "attrs": {"http.route": "/healthz", "http.status_code": 200}}
FAILED = {"name": "POST /v1/chat", "kind": 2, "error": True, "attrs": {"http.status_code": 500}}
PLAIN = {"name": "db.query", "attrs": {}}


def sample() -> pa.Table:
    return batch(request([LLM, TOOL, HEALTH, FAILED, PLAIN]))


def names(t: pa.Table) -> list[str]:
    return t.column("name").to_pylist()


def run(t: pa.Table, **spans: Any) -> pa.Table:
    out = FilterProcessor(FilterConfig.model_validate({"spans": spans})).process(t)
    assert out.schema == t.schema
    return out


# -- semantics --------------------------------------------------------------------------------


def test_exclude_by_name_regex_is_an_unanchored_search() -> None:
    assert names(run(sample(), exclude=[{"name": "healthz"}])) == [
        "chat gpt-4o",
        "execute_tool search",
        "POST /v1/chat",
        "db.query",
    ]
    assert names(run(sample(), exclude=[{"name": "^GET "}, {"name": r"^db\."}])) == [
        "chat gpt-4o",
        "execute_tool search",
        "POST /v1/chat",
    ]
    assert names(run(sample(), exclude=[{"name": "^query$"}])) == names(sample())


def test_exclude_by_span_type_status_and_kind() -> None:
    assert names(run(sample(), exclude=[{"span_type": ["llm", "tool"]}])) == [
        "GET /healthz",
        "POST /v1/chat",
        "db.query",
    ]
    assert names(run(sample(), exclude=[{"span_type": "other"}])) == ["chat gpt-4o", "execute_tool search"]
    assert names(run(sample(), exclude=[{"status_code": "ERROR"}])) == [
        "chat gpt-4o",
        "execute_tool search",
        "GET /healthz",
        "db.query",
    ]
    assert names(run(sample(), exclude=[{"kind": ["SERVER", "CLIENT"]}])) == [
        "execute_tool search",
        "db.query",
    ]


def test_attribute_regex_exact_non_strings_and_absent_keys() -> None:
    t = sample()
    # a number is an exact value in the lake's encoding; absent keys never match
    assert names(run(t, exclude=[{"attributes": {"http.status_code": 200}}])) == [
        "execute_tool search",
        "POST /v1/chat",
        "db.query",
    ]
    assert names(run(t, exclude=[{"attributes": {"http.status_code": "^5"}}])) == [
        "chat gpt-4o",
        "execute_tool search",
        "GET /healthz",
        "db.query",
    ]
    # "" matches any present value: "has the attribute"
    assert names(run(t, include=[{"attributes": {"gen_ai.operation.name": ""}}])) == [
        "chat gpt-4o",
        "execute_tool search",
    ]
    flags = batch(request([{"name": "a", "attrs": {"cached": True}}, {"name": "b", "attrs": {"cached": False}}]))
    assert names(run(flags, exclude=[{"attributes": {"cached": True}}])) == ["b"]
    ratios = batch(request([{"name": "a", "attrs": {"r": 0.5}}, {"name": "b", "attrs": {"r": 1.0}}]))
    assert names(run(ratios, exclude=[{"attributes": {"r": 1.0}}])) == ["a"]


def test_and_within_a_condition_or_across_conditions() -> None:
    t = sample()
    # both fields must match: the health check is a SERVER span with status 200, the failed one is not 200
    assert names(run(t, exclude=[{"kind": "SERVER", "attributes": {"http.status_code": 200}}])) == [
        "chat gpt-4o",
        "execute_tool search",
        "POST /v1/chat",
        "db.query",
    ]
    # two attributes in one condition: AND as well
    cond = {"attributes": {"http.status_code": 200, "http.route": "/healthz"}}
    assert names(run(t, exclude=[cond])) == [
        "chat gpt-4o",
        "execute_tool search",
        "POST /v1/chat",
        "db.query",
    ]
    assert names(run(t, exclude=[{"name": "healthz"}, {"status_code": "ERROR"}])) == [
        "chat gpt-4o",
        "execute_tool search",
        "db.query",
    ]


def test_include_then_exclude() -> None:
    t = sample()
    assert names(run(t, include=[{"span_type": "llm"}, {"status_code": "ERROR"}])) == [
        "chat gpt-4o",
        "POST /v1/chat",
    ]
    out = run(t, include=[{"kind": "SERVER"}, {"span_type": "llm"}], exclude=[{"name": "healthz"}])
    assert names(out) == ["chat gpt-4o", "POST /v1/chat"]
    assert run(t, include=[{"name": "nothing matches"}]).num_rows == 0


def test_service_name_and_resource_attributes() -> None:
    t = batch(
        request([{"name": "a"}], service="checkout", resource={"deployment.environment": "prod"}),
        request([{"name": "b"}], service="checkout-canary", resource={"deployment.environment": "staging"}),
        request([{"name": "c"}], service="search"),
    )
    assert names(run(t, exclude=[{"service_name": "^checkout$"}])) == ["b", "c"]
    assert names(run(t, exclude=[{"resource_attributes": {"deployment.environment": "staging|dev"}}])) == [
        "a",
        "c",
    ]
    assert names(
        run(
            t,
            include=[{"service_name": "checkout", "resource_attributes": {"deployment.environment": "prod"}}],
        )
    ) == ["a"]


def test_match_type_strict_compares_exactly() -> None:
    t = batch(request([{"name": "a.b", "attrs": {"k": "x+"}}, {"name": "axb", "attrs": {"k": "xx"}}]))
    assert names(run(t, exclude=[{"name": "a.b"}])) == []
    assert names(run(t, exclude=[{"name": "a.b", "match_type": "strict"}])) == ["axb"]
    assert names(run(t, exclude=[{"attributes": {"k": "x+"}, "match_type": "strict"}])) == ["axb"]
    assert names(run(t, exclude=[{"name": "a", "match_type": "strict"}])) == ["a.b", "axb"]


def test_null_and_empty_maps_never_match_an_attribute_condition() -> None:
    t = batch(request([{"name": n, "attrs": {}} for n in "abc"]))
    col = t.schema.get_field_index("attributes")
    t = t.set_column(col, "attributes", pa.array([None, [], [("k", "v")]], STR_MAP))
    t = t.set_column(t.schema.get_field_index("resource_attributes"), "resource_attributes", pa.nulls(3, STR_MAP))
    assert names(run(t, exclude=[{"attributes": {"k": ""}}])) == ["a", "b"]
    assert names(run(t, include=[{"attributes": {"k": "v"}}])) == ["c"]
    assert names(run(t, exclude=[{"resource_attributes": {"service.name": ""}}])) == ["a", "b", "c"]


def test_multi_chunk_tables() -> None:
    one, two = sample(), batch(request([HEALTH, LLM]))
    t = pa.concat_tables([one, two, one.slice(2, 1)])
    assert t.column("name").num_chunks == 3
    out = run(t, exclude=[{"name": "healthz"}, {"attributes": {"http.status_code": "^5"}}])
    assert names(out) == ["chat gpt-4o", "execute_tool search", "db.query", "chat gpt-4o"]
    assert names(out) == names(
        run(t.combine_chunks(), exclude=[{"name": "healthz"}, {"attributes": {"http.status_code": "^5"}}])
    )


def test_feedback_spans_always_pass() -> None:
    t = batch(
        request([LLM]),
        request([{"name": "feedback", "attrs": {"feedback.value": 0.0}}], scope=FEEDBACK_SCOPE),
    )
    assert names(run(t, exclude=[{"name": ""}])) == ["feedback"]
    assert names(run(t, include=[{"name": "nothing"}])) == ["feedback"]


def test_empty_batch_and_keep_all_return_the_input() -> None:
    t = sample()
    proc = FilterProcessor(FilterConfig.model_validate({"spans": {"exclude": [{"name": "nothing"}]}}))
    assert proc.process(t) is t
    assert proc.process(t.slice(0, 0)).num_rows == 0
    proc = FilterProcessor(FilterConfig.model_validate({"spans": {"exclude": [{"name": "healthz"}]}}))
    proc.process(t)
    proc.process(t)
    assert proc.spans_dropped == 2


def test_chain_attributes_then_filter_sees_rederived_span_type() -> None:
    """attributes renames a custom key; filter, next in the chain, selects on the typed column it fills."""
    Registry.register(attributes_factory)
    Registry.register(factory)
    cfg = parse(
        {
            "processors": {
                "attributes": {"actions": [{"key": "my.op", "action": "rename", "new_key": "gen_ai.operation.name"}]},
                "filter/llm_only": {"spans": {"include": [{"span_type": "llm"}]}},
            },
            "pipelines": {"traces": {"process": ["attributes", "filter/llm_only"]}},
        },
        "test.yaml",
    )
    t = batch(request([{"name": "x", "attrs": {"my.op": "chat"}}, {"name": "y", "attrs": {"my.op": "other"}}]))
    for pid in cfg.pipeline.process:
        spec = cfg.processors[pid]
        t = spec.factory.create(spec.config, ProcessorContext(processor_id=pid)).process(t)
    assert names(t) == ["x"]


def test_random_conditions_match_a_per_row_reference() -> None:
    """Property check with a fixed seed: the vectorized mask equals a row-by-row evaluation."""
    import re

    rng = random.Random(3)
    values = ["", "a", "ab", "b.c", "200", "true", None]
    for _ in range(150):
        rows = []
        for i in range(rng.randint(1, 10)):
            attrs = {k: v for k in ("k1", "k2") if (v := rng.choice(values)) is not None}
            rows.append(
                {
                    "name": rng.choice(["a", "ab", "b.c", "zz"]),
                    "error": rng.random() < 0.3,
                    "attrs": attrs,
                    "kind": rng.randint(0, 5),
                    "i": i,
                }
            )
        t = batch(request(rows))
        conds = []
        for _ in range(rng.randint(1, 3)):
            c: dict[str, Any] = {}
            if rng.random() < 0.5:
                c["name"] = rng.choice(["a", "^a$", r"\.", "b|z"])
            if rng.random() < 0.4:
                c["status_code"] = rng.choice([["ERROR"], ["UNSET", "OK"]])
            if rng.random() < 0.4 or not c:
                c["attributes"] = {rng.choice(["k1", "k2"]): rng.choice(["", "^a", "b", 200, True])}
            conds.append(c)

        def matches(row: dict[str, Any], c: dict[str, Any]) -> bool:
            ok = "name" not in c or re.search(c["name"], row["name"]) is not None
            ok &= "status_code" not in c or ("ERROR" if row["error"] else "UNSET") in c["status_code"]
            for k, pat in c.get("attributes", {}).items():
                v = row["attrs"].get(k)
                if isinstance(pat, str):
                    ok &= v is not None and re.search(pat, v) is not None
                else:
                    ok &= v == ("true" if pat is True else str(pat))
            return ok

        out = run(t, exclude=conds)
        expected = [r["name"] for r in rows if not any(matches(r, c) for c in conds)]
        assert names(out) == expected, conds


# -- config errors -----------------------------------------------------------------------------


def _issues(block: dict[str, Any]) -> list[str]:
    Registry.register(factory)
    with pytest.raises(ConfigError) as err:
        parse({"processors": {"filter": block}}, "test.yaml")
    assert str(err.value).startswith("test.yaml: processors.filter")
    return [str(i) for i in err.value.issues]


def test_bad_regexes_are_config_errors_naming_the_key_path() -> None:
    issues = _issues(
        {
            "spans": {
                "exclude": [
                    {"name": "ok"},
                    {"name": "(?=lookahead)", "attributes": {"http.route": "a(", "fine": "^x$"}},
                ],
                "include": [{"service_name": r"(a)\1"}, {"resource_attributes": {"k": "[z-a]"}}],
            }
        }
    )
    assert issues == [
        "processors.filter.spans.include.0.service_name: not a valid RE2 regex: invalid escape sequence: \\1 "
        "(got '(a)\\\\1')",
        "processors.filter.spans.include.1.resource_attributes.k: not a valid RE2 regex: invalid character "
        "class range: z-a (near position 1) (got '[z-a]')",
        "processors.filter.spans.exclude.1.name: not a valid RE2 regex: invalid perl operator: (?= "
        "(got '(?=lookahead)')",
        "processors.filter.spans.exclude.1.attributes.http.route: not a valid RE2 regex: missing ): a( "
        "(near position 1) (got 'a(')",
    ]


def test_re2_is_the_authority_not_python_re() -> None:
    # \p{L} is RE2 (and not Python re) syntax: accepted, and it works
    cfg = FilterConfig.model_validate({"spans": {"exclude": [{"name": r"^\p{Lu}"}]}})
    t = batch(request([{"name": "Upper"}, {"name": "lower"}, {"name": "Über"}]))
    assert names(FilterProcessor(cfg).process(t)) == ["lower"]
    # strict conditions hold values, not regexes: nothing to compile
    SpanCondition.model_validate({"name": "a(", "match_type": "strict"})


def test_other_config_errors() -> None:
    assert _issues({"spans": {"exclude": [{"name": "a", "colour": "red"}]}}) == [
        "processors.filter.spans.exclude.0.colour: unknown key"
    ]
    assert _issues({"spans": {"exclude": [{"name": "a"}]}, "logs": {}}) == ["processors.filter.logs: unknown key"]
    assert _issues({}) == ["processors.filter.spans: Field required"]
    assert _issues({"spans": {}}) == ["processors.filter.spans: set include, exclude or both"]
    (issue,) = _issues({"spans": {"exclude": [{}]}})
    assert issue.startswith("processors.filter.spans.exclude.0: a condition needs at least one of: name")
    (issue,) = _issues({"spans": {"include": []}})
    assert issue.startswith("processors.filter.spans.include: List should have at least 1 item")
    (issue,) = _issues({"spans": {"exclude": [{"span_type": ["llm", "chat"]}]}})
    assert issue.startswith("processors.filter.spans.exclude.0.span_type.1: Input should be 'llm', 'embedding'")
    (issue,) = _issues({"spans": {"exclude": [{"status_code": "error"}]}})
    assert issue.startswith("processors.filter.spans.exclude.0.status_code.0: Input should be 'UNSET', 'OK' or 'ERROR'")
    assert _issues({"spans": {"exclude": [{"attributes": {"k": None}}]}}) == [
        "processors.filter.spans.exclude.0.attributes.k: expected a string (a regex) or a "
        "number or boolean (an exact value) (got None)"
    ]
    (issue,) = _issues({"spans": {"exclude": [{"name": "a", "match_type": "glob"}]}})
    assert issue.startswith("processors.filter.spans.exclude.0.match_type: Input should be 'regexp' or 'strict'")


def test_masks_are_boolean_columns_without_nulls() -> None:
    t = sample()
    proc = FilterProcessor(FilterConfig.model_validate({"spans": {"exclude": [{"attributes": {"absent": "x"}}]}}))
    mask = proc.keep_mask(t)
    assert mask.null_count == 0 and pc.all(mask).as_py()


def test_readme_example_is_a_valid_config_and_does_what_it_says() -> None:
    text = (Path(__file__).parent / "README.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    Registry.register(factory)
    document = yaml.safe_load(example)
    # the example's chain ends in `cost`, which this test does not load: run both filters instead
    document["pipelines"]["traces"]["process"] = ["filter/noise", "filter/llm_only"]
    cfg = parse(document, "README.md")
    t = batch(
        request([HEALTH, LLM, TOOL, PLAIN], service="api"),
        request([LLM, FAILED], service="api-canary"),
        request([LLM], service="api", resource={"deployment.environment": "dev"}),
    )
    for pid in cfg.pipeline.process:
        spec = cfg.processors[pid]
        t = spec.factory.create(spec.config, ProcessorContext(processor_id=pid)).process(t)
    assert list(zip(t.column("service_name").to_pylist(), names(t), strict=True)) == [
        ("api", "chat gpt-4o"),
        ("api", "execute_tool search"),
    ]


def test_ingest_stage_removes_dropped_spans_from_the_request() -> None:
    proc = FilterProcessor(FilterConfig.model_validate({"spans": {"exclude": [{"name": "healthz"}]}}))
    out = IngestChain([("filter", proc)], Normalizer()).apply(request([LLM, HEALTH, PLAIN]))
    assert [sp.name for sp in out.resource_spans[0].scope_spans[0].spans] == ["chat gpt-4o", "db.query"]
