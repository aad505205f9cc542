"""attributes: each action on real decoded batches, typed columns following renames, config errors."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.conventions import Normalizer, normalize
from core.feedback import FEEDBACK_SCOPE
from core.maps import MapColumn
from core.processor import ProcessorContext, Registry
from core.schema import STR_MAP
from pipeline.config import ConfigError, parse
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.receiver.intake import IngestChain
from processors.attributes import AttributesConfig, AttributesProcessor, factory
from processors.keyglob import glob_to_re2
from tests.conftest import kv as _kv

# -- building batches the way the worker does: OTLP request → decode → normalize -------------------


def request(
    spans: list[dict[str, Any]], resource: dict[str, Any] | None = None, scope: str = "tests"
) -> ExportTraceServiceRequest:
    """spans: dicts of attribute values; one trace, span ids 1, 2, …"""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in {"service.name": "svc", **(resource or {})}.items():
        rs.resource.attributes.append(_kv(k, v))
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    for i, attrs in enumerate(spans, 1):
        sp = ss.spans.add()
        sp.trace_id = bytes.fromhex("ab" * 16)
        sp.span_id = i.to_bytes(8, "big")
        sp.name = f"span-{i}"
        sp.start_time_unix_nano = 1_700_000_000_000_000_000 + i
        sp.end_time_unix_nano = sp.start_time_unix_nano + 1_000_000
        for k, v in attrs.items():
            sp.attributes.append(_kv(k, v))
    return req


def batch(*requests: ExportTraceServiceRequest) -> pa.Table:
    return normalize(decode([SourcedRequest(r, f"test@{i}") for i, r in enumerate(requests)]))


def spans(*attrs: dict[str, Any], resource: dict[str, Any] | None = None) -> pa.Table:
    return batch(request(list(attrs), resource))


def maps(table: pa.Table, column: str = "attributes") -> list[dict[str, str | None] | None]:
    return [None if m is None else dict(m) for m in table.column(column).to_pylist()]


def run(table: pa.Table, *actions: dict[str, Any], **cfg: Any) -> pa.Table:
    out = AttributesProcessor(AttributesConfig.model_validate({"actions": list(actions), **cfg})).process(table)
    assert out.schema == table.schema
    return out


def mac(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


@pytest.fixture(autouse=True)
def _hash_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACELAKE_HASH_KEY", "k1")


# -- actions -------------------------------------------------------------------------------------


def test_insert_only_where_absent_and_non_strings_encoded_like_decode() -> None:
    t = spans({"env": "dev"}, {})
    out = run(
        t,
        {"key": "env", "action": "insert", "value": "prod"},
        {"key": "retries", "action": "insert", "value": 3},
        {"key": "cached", "action": "insert", "value": True},
        {"key": "ratio", "action": "insert", "value": 0.5},
        {"key": "tags", "action": "insert", "value": ["a", "b"]},
    )
    extra = {"retries": "3", "cached": "true", "ratio": "0.5", "tags": '["a","b"]'}
    assert maps(out) == [{"env": "dev", **extra}, {"env": "prod", **extra}]
    # new keys go to the end of each map; existing entries keep their order
    assert [k for k, _ in out.column("attributes")[1].as_py()] == [
        "env",
        "retries",
        "cached",
        "ratio",
        "tags",
    ]


def test_insert_from_attribute_only_where_source_present() -> None:
    t = spans({"a": "1"}, {"b": "2"}, {"a": "3", "c": "old"})
    out = run(t, {"key": "c", "action": "insert", "from_attribute": "a"})
    assert maps(out) == [{"a": "1", "c": "1"}, {"b": "2"}, {"a": "3", "c": "old"}]


def test_update_only_where_present() -> None:
    t = spans({"env": "dev", "x": "y"}, {"x": "y"})
    out = run(t, {"key": "env", "action": "update", "value": "redacted"})
    assert maps(out) == [{"env": "redacted", "x": "y"}, {"x": "y"}]


def test_update_from_attribute_keeps_value_when_source_absent() -> None:
    t = spans({"env": "dev", "src": "prod"}, {"env": "dev"})
    out = run(t, {"key": "env", "action": "update", "from_attribute": "src"})
    assert maps(out) == [{"env": "prod", "src": "prod"}, {"env": "dev"}]


def test_upsert_sets_everywhere() -> None:
    t = spans({"env": "dev"}, {}, {"other": "1"})
    out = run(t, {"key": "env", "action": "upsert", "value": "prod"})
    assert [m["env"] for m in maps(out)] == ["prod", "prod", "prod"]
    out = run(t, {"key": "copy", "action": "upsert", "from_attribute": "other"})
    assert maps(out) == [{"env": "dev"}, {}, {"other": "1", "copy": "1"}]


def test_delete_exact_and_globs() -> None:
    t = spans(
        {
            "gen_ai.prompt.0.content": "hi",
            "gen_ai.prompt.1.content": "there",
            "gen_ai.prompt.10.role": "user",
            "gen_ai.request.model": "gpt-4o",
            "db.statement": "select 1",
            "Db.statement": "case matters",
        }
    )
    out = run(t, {"key": "gen_ai.prompt.*", "action": "delete"})
    assert set(maps(out)[0]) == {"gen_ai.request.model", "db.statement", "Db.statement"}
    out = run(t, {"key": "gen_ai.prompt.?.content", "action": "delete"})
    assert set(maps(out)[0]) == {
        "gen_ai.prompt.10.role",
        "gen_ai.request.model",
        "db.statement",
        "Db.statement",
    }
    out = run(t, {"key": "[!D]b.statement", "action": "delete"}, {"key": "gen_ai.request.model", "action": "delete"})
    assert set(maps(out)[0]) == {
        "gen_ai.prompt.0.content",
        "gen_ai.prompt.1.content",
        "gen_ai.prompt.10.role",
        "Db.statement",
    }
    # the typed column follows: the model attribute is gone
    assert out.column("request_model").to_pylist() == [None]
    assert t.column("request_model").to_pylist() == ["gpt-4o"]


def test_hash_is_hmac_with_the_configured_key_and_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    t = spans({"user.id": "alice", "x": "1"}, {"user.id": "bob"}, {"user.id": "alice"})
    out = run(t, {"key": "user.id", "action": "hash"})
    got = [m["user.id"] for m in maps(out)]
    assert got == [mac(b"k1", "alice"), mac(b"k1", "bob"), mac(b"k1", "alice")]
    assert maps(out)[0]["x"] == "1"
    # the user_id column is derived from the hashed attribute
    assert out.column("user_id").to_pylist() == got
    # deterministic across processors and batches with the same key
    assert maps(run(spans({"user.id": "alice"}), {"key": "user.id", "action": "hash"}))[0]["user.id"] == got[0]
    # another key, another digest; the key is read when the processor is built
    monkeypatch.setenv("TRACELAKE_HASH_KEY", "k2")
    assert maps(run(t, {"key": "user.id", "action": "hash"}))[0]["user.id"] == mac(b"k2", "alice")
    monkeypatch.setenv("OTHER_KEY", "k3")
    out = run(t, {"key": "user.id", "action": "hash"}, hash_key_env="OTHER_KEY")
    assert maps(out)[0]["user.id"] == mac(b"k3", "alice")


def test_hash_without_key_is_sha256_and_warns_once_at_build(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("TRACELAKE_HASH_KEY")
    cfg = AttributesConfig.model_validate(
        {"actions": [{"key": "user.id", "action": "hash"}, {"key": "session.*", "action": "hash"}]}
    )
    with caplog.at_level(logging.WARNING, logger="tracelake.processor.attributes"):
        proc = AttributesProcessor(cfg, ProcessorContext(processor_id="attributes/pii"))
        for _ in range(3):
            out = proc.process(spans({"user.id": "alice", "session.id": "s1"}))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "TRACELAKE_HASH_KEY" in warnings[0].getMessage() and "attributes/pii" in warnings[0].getMessage()
    assert maps(out)[0] == {
        "user.id": hashlib.sha256(b"alice").hexdigest(),
        "session.id": hashlib.sha256(b"s1").hexdigest(),
    }
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tracelake.processor.attributes"):
        AttributesProcessor(AttributesConfig.model_validate({"actions": [{"key": "a", "action": "delete"}]}))
    assert not caplog.records  # no hash action, nothing to warn about


def test_hash_glob_leaves_null_values_null() -> None:
    t = spans({"a": "1"})
    arr = pa.MapArray.from_arrays(
        pa.array([0, 3], pa.int32()), pa.array(["pii.a", "pii.b", "keep"]), pa.array(["v", None, "v"])
    )
    t = t.set_column(t.schema.get_field_index("attributes"), "attributes", arr)
    out = run(t, {"key": "pii.*", "action": "hash"})
    assert maps(out) == [{"pii.a": mac(b"k1", "v"), "pii.b": None, "keep": "v"}]


def test_rename_feeds_typed_columns() -> None:
    t = spans({"my.model": "gpt-4o-mini", "my.tokens": 12, "my.op": "chat"}, {"other": "x"})
    assert t.column("request_model").to_pylist() == [None, None]
    out = run(
        t,
        {"key": "my.model", "action": "rename", "new_key": "gen_ai.request.model"},
        {"key": "my.tokens", "action": "rename", "new_key": "gen_ai.usage.input_tokens"},
        {"key": "my.op", "action": "rename", "new_key": "gen_ai.operation.name"},
    )
    assert maps(out) == [
        {
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": "12",
            "gen_ai.operation.name": "chat",
        },
        {"other": "x"},
    ]
    assert out.column("request_model").to_pylist() == ["gpt-4o-mini", None]
    assert out.column("input_tokens").to_pylist() == [12, None]
    assert out.column("span_type").to_pylist() == ["llm", "other"]


def test_rename_replaces_an_existing_new_key_only_where_key_present() -> None:
    t = spans({"old": "1", "new": "stale", "z": "z"}, {"new": "untouched"})
    out = run(t, {"key": "old", "action": "rename", "new_key": "new"})
    assert maps(out) == [{"new": "1", "z": "z"}, {"new": "untouched"}]
    assert [k for k, _ in out.column("attributes")[0].as_py()] == ["new", "z"]


def test_actions_apply_in_order() -> None:
    t = spans({"user.id": "alice"})
    out = run(
        t,
        {"key": "user.id.raw", "action": "insert", "from_attribute": "user.id"},
        {"key": "user.id", "action": "hash"},
        {"key": "user.id.raw", "action": "delete"},
    )
    assert maps(out) == [{"user.id": mac(b"k1", "alice")}]


def test_resource_scope_and_service_name_follow() -> None:
    t = spans({"a": "1"}, {"a": "2"}, resource={"deployment.environment": "dev"})
    out = run(
        t,
        {"key": "service.name", "action": "upsert", "value": "checkout", "scope": "resource"},
        {"key": "tenant.id", "action": "insert", "value": "acme", "scope": "resource"},
        {"key": "deployment.*", "action": "delete", "scope": "resource"},
        {"key": "tenant.id", "action": "insert", "value": "span-level"},
    )
    assert maps(out, "resource_attributes") == [{"service.name": "checkout", "tenant.id": "acme"}] * 2
    assert out.column("service_name").to_pylist() == ["checkout", "checkout"]
    # span attributes win over resource attributes for the correlation columns
    assert out.column("tenant_id").to_pylist() == ["span-level", "span-level"]
    out = run(t, {"key": "tenant.id", "action": "insert", "value": "acme", "scope": "resource"})
    assert out.column("tenant_id").to_pylist() == ["acme", "acme"]
    assert maps(out) == maps(t)


def _with_maps(t: pa.Table, rows: list[list[tuple[str, str]] | None]) -> pa.Table:
    return t.set_column(t.schema.get_field_index("attributes"), "attributes", pa.array(rows, STR_MAP))


def test_null_and_empty_maps() -> None:
    t = _with_maps(spans({}, {}, {}, {}), [None, [], [("k", "v")], None])
    out = run(t, {"key": "k", "action": "delete"}, {"key": "x", "action": "update", "value": "1"})
    assert maps(out) == [None, {}, {}, None]
    out = run(t, {"key": "new", "action": "insert", "value": "1"})
    # a null map has no attributes: an insert gives it one
    assert maps(out) == [{"new": "1"}, {"new": "1"}, {"k": "v", "new": "1"}, {"new": "1"}]
    out = run(t, {"key": "k", "action": "rename", "new_key": "j"}, {"key": "*", "action": "hash"})
    assert maps(out) == [None, {}, {"j": mac(b"k1", "v")}, None]


def test_entries_hidden_under_a_null_slot_are_ignored() -> None:
    # Arrow allows a null map to span entries; they are not the row's attributes
    arr = pa.MapArray.from_arrays(
        pa.array([0, 1, 2], pa.int32()),
        pa.array(["a", "b"]),
        pa.array(["1", "2"]),
        mask=pa.array([True, False]),
    )
    t = spans({}, {})
    t = t.set_column(t.schema.get_field_index("attributes"), "attributes", arr)
    out = run(t, {"key": "c", "action": "insert", "value": "3"})
    assert maps(out) == [{"c": "3"}, {"b": "2", "c": "3"}]


def test_multi_chunk_and_sliced_tables() -> None:
    one = spans({"m": "a", "x": "1"}, {"x": "2"})
    two = spans({"m": "b"}, {}, {"m": "c", "y": "3"})
    t = pa.concat_tables([one, two, one.slice(1)])
    assert t.column("attributes").num_chunks == 3
    actions = (
        {"key": "m", "action": "rename", "new_key": "gen_ai.request.model"},
        {"key": "x", "action": "upsert", "value": "0"},
        {"key": "y", "action": "delete"},
    )
    out = run(t, *actions)
    assert out.column("request_model").to_pylist() == ["a", None, "b", None, "c", None]
    assert maps(out) == maps(run(t.combine_chunks(), *actions))
    assert maps(out)[4] == {"gen_ai.request.model": "c", "x": "0"}
    assert maps(run(t.slice(2, 2), *actions)) == [{"gen_ai.request.model": "b", "x": "0"}, {"x": "0"}]


def test_feedback_spans_untouched() -> None:
    t = batch(request([{"a": "1"}]), request([{"feedback.value": 0.0, "a": "1"}], scope=FEEDBACK_SCOPE))
    out = run(t, {"key": "*", "action": "delete"}, {"key": "n", "action": "insert", "value": "1"})
    assert maps(out) == [{"n": "1"}, {"feedback.value": "0.0", "a": "1"}]
    assert out.column("span_id").to_pylist() == t.column("span_id").to_pylist()


def test_sdk_spans_through_factory_and_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans from the OpenTelemetry SDK, a processor built the way the service builds it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "chatbot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("chat gpt-4o") as s:
        s.set_attribute("llm.model", "gpt-4o")
        s.set_attribute("enduser.id", "alice@example.com")
        s.set_attribute("debug.blob", "x" * 10)
    provider.shutdown()
    t = batch(encode_spans(exporter.get_finished_spans()))

    Registry.register(factory)
    cfg = parse(
        {
            "processors": {
                "attributes/clean": {
                    "actions": [
                        {"key": "llm.model", "action": "rename", "new_key": "gen_ai.request.model"},
                        {"key": "enduser.id", "action": "hash"},
                        {"key": "debug.*", "action": "delete"},
                        {"key": "gen_ai.operation.name", "action": "insert", "value": "chat"},
                    ]
                }
            },
            "pipelines": {"traces": {"process": ["attributes/clean"]}},
        },
        "test.yaml",
    )
    spec = cfg.processors["attributes/clean"]
    proc = spec.factory.create(spec.config, ProcessorContext(processor_id=spec.id))
    row = proc.process(t).select(["request_model", "span_type", "user_id", "attributes"]).to_pylist()[0]
    assert row["request_model"] == "gpt-4o" and row["span_type"] == "llm"
    assert row["user_id"] == mac(b"k1", "alice@example.com")
    assert "debug.blob" not in dict(row["attributes"])


# -- config errors -----------------------------------------------------------------------------


def _issues(block: dict[str, Any]) -> list[str]:
    Registry.register(factory)
    with pytest.raises(ConfigError) as err:
        parse({"processors": {"attributes": block}}, "test.yaml")
    assert all(i.path.startswith("processors.attributes") for i in err.value.issues)
    assert str(err.value).startswith("test.yaml: processors.attributes")
    return [str(i) for i in err.value.issues]


def test_config_errors_name_the_key_path() -> None:
    assert _issues({"actions": [{"key": "a", "action": "delete", "colour": "red"}]}) == [
        "processors.attributes.actions.0.colour: unknown key"
    ]
    assert _issues({"actions": [{"key": "a", "action": "delete"}], "hash_key": "x"}) == [
        "processors.attributes.hash_key: unknown key"
    ]
    assert _issues({"actions": [{"key": "a", "action": "upsert"}]}) == [
        "processors.attributes.actions.0.value: required when action is upsert (or set from_attribute)"
    ]
    assert _issues({"actions": [{"key": "a", "action": "delete"}, {"key": "a", "action": "rename"}]}) == [
        "processors.attributes.actions.1.new_key: required when action is rename"
    ]
    issues = _issues({"actions": [{"key": "a", "action": "delete", "value": "x", "new_key": "b"}]})
    assert issues == [
        "processors.attributes.actions.0.value: not used by action delete (got 'x')",
        "processors.attributes.actions.0.new_key: not used by action delete (got 'b')",
    ]
    assert _issues({"actions": [{"key": "a", "action": "insert", "value": 1, "from_attribute": "b"}]}) == [
        "processors.attributes.actions.0.from_attribute: not together with value (got 'b')"
    ]
    assert _issues({"actions": [{"key": "a", "action": "insert", "value": None}]}) == [
        "processors.attributes.actions.0.value: null is not a value; to remove an attribute, use delete (got None)"
    ]
    assert _issues({"actions": [{"key": "gen_ai.*", "action": "rename", "new_key": "x"}]}) == [
        "processors.attributes.actions.0.key: a glob (* ? [) only works with delete and hash (got 'gen_ai.*')"
    ]
    assert _issues({"actions": [{"key": "a", "action": "rename", "new_key": "a"}]}) == [
        "processors.attributes.actions.0.new_key: must differ from key (got 'a')"
    ]
    assert _issues({"actions": [{"key": "[z-a]", "action": "delete"}]})[0].startswith(
        "processors.attributes.actions.0.key: not a usable glob: invalid character class range"
    )
    (issue,) = _issues({"actions": [{"key": "a", "action": "move"}]})
    assert issue.startswith("processors.attributes.actions.0.action: Input should be 'insert', 'update'")
    (issue,) = _issues({"actions": [{"key": "a", "action": "delete", "scope": "event"}]})
    assert issue.startswith("processors.attributes.actions.0.scope: Input should be 'span' or 'resource'")
    assert _issues({"actions": []})[0].startswith("processors.attributes.actions: List should have at least 1")
    assert _issues({})[0] == "processors.attributes.actions: Field required"
    assert _issues({"actions": [{"key": "a", "action": "hash"}], "hash_key_env": "not-a-name"})[0].startswith(
        "processors.attributes.hash_key_env: String should match pattern"
    )


# -- properties over random maps (hypothesis is not installed: random with a fixed seed) ----------

_KEYS = ["a", "b", "c", "a.b", "a.c", "gen_ai.x", "gen_ai.y", "x-1", "x[1]", "ü", "*"]
_VALUES = ["", "1", "v", "ü", "line\nbreak", None]


def _random_rows(rng: random.Random, n: int) -> list[list[tuple[str, str | None]] | None]:
    rows: list[list[tuple[str, str | None]] | None] = []
    for _ in range(n):
        if rng.random() < 0.1:
            rows.append(None)
        else:
            rows.append([(k, rng.choice(_VALUES)) for k in rng.sample(_KEYS, rng.randint(0, 6))])
    return rows


def _random_table(rng: random.Random, n: int) -> pa.Table:
    rows = _random_rows(rng, n)
    base = spans(*[{} for _ in range(n)])
    t = _with_maps(base, rows)  # type: ignore[arg-type]
    if n > 2 and rng.random() < 0.5:  # sometimes several chunks
        cut = rng.randint(1, n - 1)
        t = pa.concat_tables([t.slice(0, cut), t.slice(cut)])
    return t


def _reference(rows: list[Any], a: dict[str, Any]) -> list[Any]:
    """The actions written the obvious way, per row in Python, to check the column code against."""
    out = []
    for row in rows:
        d = None if row is None else dict(row)
        key, act = a["key"], a["action"]
        if act == "delete":
            d = None if d is None else {k: v for k, v in d.items() if not fnmatch.fnmatchcase(k, key)}
        elif act == "hash":
            if d is not None:
                d = {k: mac(b"k1", v) if fnmatch.fnmatchcase(k, key) and v is not None else v for k, v in d.items()}
        elif act == "rename":
            if d is not None and key in d:
                d = {(a["new_key"] if k == key else k): v for k, v in d.items() if k != a["new_key"]}
        else:
            src = d or {}
            has_value = "value" in a or a["from_attribute"] in src
            value = a["value"] if "value" in a else src.get(a["from_attribute"])
            present = d is not None and key in d
            if has_value and ((present and act in ("update", "upsert")) or (not present and act != "update")):
                d = {**(d or {}), key: value}
        out.append(d)
    return out


def _random_action(rng: random.Random) -> dict[str, Any]:
    act = rng.choice(["insert", "update", "upsert", "delete", "hash", "rename"])
    if act in ("delete", "hash"):
        return {
            "key": rng.choice(["a*", "gen_ai.?", "*", "x[[]1]", "[!a]", "a.[bc]", "b", "zz*"]),
            "action": act,
        }
    key = rng.choice([k for k in _KEYS if k != "*" and "[" not in k])
    if act == "rename":
        return {"key": key, "action": act, "new_key": rng.choice([k for k in ("a", "b", "new") if k != key])}
    if rng.random() < 0.5:
        return {"key": key, "action": act, "value": rng.choice(["1", "new"])}
    return {
        "key": key,
        "action": act,
        "from_attribute": rng.choice([k for k in ("a", "c", "gen_ai.x") if k != key]),
    }


def test_random_actions_match_the_per_row_reference() -> None:
    rng = random.Random(20240611)
    for _ in range(120):
        t = _random_table(rng, rng.randint(1, 12))
        action = _random_action(rng)
        out = run(t, action)
        assert maps(out) == _reference(t.column("attributes").to_pylist(), action), action


def test_random_maps_survive_noop_and_idempotent_actions_unchanged() -> None:
    rng = random.Random(7)
    noops = [
        {"key": "absent.key", "action": "delete"},
        {"key": "absent.*", "action": "hash"},
        {"key": "absent.key", "action": "update", "value": "x"},
        {"key": "absent.key", "action": "rename", "new_key": "other"},
        {"key": "absent.key", "action": "insert", "from_attribute": "absent.too"},
        {"key": "absent.*", "action": "delete", "scope": "resource"},
    ]
    noop = AttributesProcessor(AttributesConfig.model_validate({"actions": noops}))
    idempotent = [
        AttributesProcessor(AttributesConfig.model_validate({"actions": [a]}))
        for a in (
            {"key": "a", "action": "upsert", "value": "v"},
            {"key": "gen_ai.*", "action": "delete"},
            {"key": "b", "action": "insert", "from_attribute": "c"},
        )
    ]
    for _ in range(30):
        t = _random_table(rng, rng.randint(1, 15))
        out = noop.process(t)
        # same maps, same entry order, same null maps, same typed columns
        assert out.column("attributes").to_pylist() == t.column("attributes").to_pylist()
        assert out.column("resource_attributes").to_pylist() == t.column("resource_attributes").to_pylist()
        assert out.select(["request_model", "span_type"]).equals(t.select(["request_model", "span_type"]))
        for proc in idempotent:
            once = proc.process(t)
            assert proc.process(once).column("attributes").to_pylist() == once.column("attributes").to_pylist()


def test_glob_translation_agrees_with_fnmatch() -> None:
    rng = random.Random(11)
    alphabet = ["a", "b", ".", "-", "*", "?", "[", "]", "!", "^", "\\", "$", "(", "ü"]
    for _ in range(2000):
        pattern = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        keys = [
            "".join(rng.choice(["a", "b", ".", "-", "[", "]", "!", "^", "\\", "ü"]) for _ in range(rng.randint(0, 5)))
            for _ in range(20)
        ]
        try:
            m = MapColumn.of(pa.array([list(zip(keys, keys, strict=True))], STR_MAP))
            got = m.key_mask(pattern, glob_to_re2(pattern)).tolist()
        except pa.ArrowInvalid:
            continue  # e.g. a reversed range; the config refuses such globs
        assert got == [fnmatch.fnmatchcase(k, pattern) for k in keys], (pattern, glob_to_re2(pattern))


def test_readme_example_is_a_valid_config() -> None:
    text = (Path(__file__).parent / "README.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    Registry.register(factory)
    cfg = parse(yaml.safe_load(example), "README.md")
    (spec,) = cfg.processors.values()
    assert isinstance(spec.config, AttributesConfig) and len(spec.config.actions) == 7


def test_ingest_stage_folds_changes_back_into_otlp() -> None:
    """In the receiver the table is written back into the request: changed values become strings."""
    req = request([{"my.tokens": 12, "user.id": "alice", "debug.x": "1", "n": 7}])
    proc = AttributesProcessor(
        AttributesConfig.model_validate(
            {
                "actions": [
                    {"key": "my.tokens", "action": "rename", "new_key": "gen_ai.usage.input_tokens"},
                    {"key": "user.id", "action": "hash"},
                    {"key": "debug.*", "action": "delete"},
                ]
            }
        ),
        ProcessorContext(processor_id="attributes", stage="ingest"),
    )
    out = IngestChain([("attributes", proc)], Normalizer()).apply(req)
    kvs = {kv.key: kv.value for kv in out.resource_spans[0].scope_spans[0].spans[0].attributes}
    assert set(kvs) == {"gen_ai.usage.input_tokens", "user.id", "n"}
    assert kvs["gen_ai.usage.input_tokens"].string_value == "12"
    assert kvs["user.id"].string_value == mac(b"k1", "alice")
    assert kvs["n"].int_value == 7  # untouched values keep their type
