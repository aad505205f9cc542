"""offload_artifacts: what leaves the span, what stays, and that nothing is lost when the store fails."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from core.processor import ProcessorContext, Registry
from pipeline.config.loader import parse
from pipeline.testing import attributes as attrs
from pipeline.testing import rows as plain
from pipeline.testing import spans_batch
from processors.offload_artifacts import (
    ArtifactOffloader,
    ArtifactStoreError,
    OffloadArtifactsConfig,
    factory,
    order_warnings,
)
from sinks.artifacts.refs import is_ref
from sinks.artifacts.store import ArtifactStore

T1, T2 = "a1" * 16, "b2" * 16
SYSTEM = "You are a careful assistant. Answer in French when asked. " * 80  # ~4.6 KB, repeats everywhere
# JSON with non-ASCII text: sizes are UTF-8 bytes and the restore must be byte-exact
MESSAGES = json.dumps(
    [{"role": "user", "parts": [{"type": "text", "content": "Résumé : « " + "données " * 700 + "» ✓"}]}],
    ensure_ascii=False,
)


def _span(trace: str, i: int, attrs_: dict[str, object], events: list | None = None) -> dict[str, object]:
    return {"trace_id": trace, "span_id": f"{i:016x}", "attrs": attrs_, "events": events or []}


def _offloader(tmp_path: Path, **cfg: object) -> ArtifactOffloader:
    return ArtifactOffloader(OffloadArtifactsConfig(store=str(tmp_path / "store"), **cfg))


def test_large_values_replaced_and_restorable_byte_for_byte(tmp_path: Path) -> None:
    p = _offloader(tmp_path)
    batch = spans_batch([_span(T1, 1, {"gen_ai.input.messages": MESSAGES, "gen_ai.request.model": "gpt-4o"})])
    out = p.process(batch)
    row = plain(out, ["attributes", "artifacts"])[0]
    ref = attrs(row)["gen_ai.input.messages"]
    assert is_ref(ref)
    assert attrs(row)["gen_ai.request.model"] == "gpt-4o"
    assert p.store.get(ref) == MESSAGES.encode()
    assert row["artifacts"] == [
        {"key": "gen_ai.input.messages", "ref": ref, "bytes": len(MESSAGES.encode()), "preview": MESSAGES[:200]}
    ]
    assert out.schema == batch.schema
    assert p.stats["offloaded_values"] == 1 and p.stats["stored_objects"] == 1 and p.stats["stored_bytes"] > 0


def test_threshold_is_utf8_bytes_inclusive(tmp_path: Path) -> None:
    p = _offloader(tmp_path, min_bytes=100)
    at = "é" * 50  # 100 bytes, 50 characters
    below = "x" * 99
    out = p.process(spans_batch([_span(T1, 1, {"at": at, "below": below})]))
    a = attrs(plain(out, ["attributes"])[0])
    assert is_ref(a["at"]) and a["below"] == below


def test_json_numbers_and_small_values_untouched(tmp_path: Path) -> None:
    p = _offloader(tmp_path)
    values = {
        "gen_ai.usage.input_tokens": 1500,
        "temperature": 0.7,
        "stream": True,
        "gen_ai.response.finish_reasons": json.dumps(["stop"]),
        "short": "hello",
    }
    batch = spans_batch([_span(T1, 1, values), _span(T1, 2, {})])
    out = p.process(batch)
    assert out.equals(batch)  # no column rebuilt, no artifacts column filled
    assert attrs(plain(out, ["attributes"])[0])["gen_ai.usage.input_tokens"] == "1500"
    assert p.stats["offloaded_values"] == 0


def test_large_json_array_attribute_offloaded(tmp_path: Path) -> None:
    docs = json.dumps([{"id": f"doc-{i}", "score": i / 10, "content": "lorem ipsum " * 40} for i in range(12)])
    p = _offloader(tmp_path)
    out = p.process(spans_batch([_span(T1, 1, {"gen_ai.retrieval.documents": docs})]))
    ref = attrs(plain(out, ["attributes"])[0])["gen_ai.retrieval.documents"]
    assert json.loads(p.store.get(ref)) == json.loads(docs)


def test_identical_payloads_stored_once_across_traces_and_processes(tmp_path: Path) -> None:
    p = _offloader(tmp_path)
    b1 = spans_batch([_span(T1, 1, {"gen_ai.system_instructions": SYSTEM, "gen_ai.input.messages": MESSAGES})])
    b2 = spans_batch(
        [
            _span(T2, 2, {"gen_ai.system_instructions": SYSTEM}),
            _span(T2, 3, {"gen_ai.system_instructions": SYSTEM, "input.value": "q" * 5000}),
        ]
    )
    r1, r2 = p.process(b1), p.process(b2)
    refs = {attrs(r)["gen_ai.system_instructions"] for r in plain(r1, ["attributes"]) + plain(r2, ["attributes"])}
    assert len(refs) == 1
    assert len(list(p.store.iter_refs())) == 3  # system prompt, messages, input.value
    assert p.stats["offloaded_values"] == 5
    assert p.stats["stored_objects"] == 3
    assert p.stats["dedup_hits"] == 2
    assert p.stats["distinct_values"] == 4  # b2's two system prompts were hashed once
    assert p.stats["cache_hits"] == 1  # b2's system prompt: known from b1, no store round trip
    # a fresh process (another worker) finds the object and does not rewrite it
    path = Path(p.store.location(refs.pop()))
    before = path.stat()
    p2 = _offloader(tmp_path)
    p2.process(b2)
    assert (p2.stats["stored_objects"], p2.stats["stored_bytes"], p2.stats["dedup_hits"]) == (0, 0, 3)
    after = path.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)


def test_key_globs(tmp_path: Path) -> None:
    p = _offloader(tmp_path, keys=["gen_ai.input.*", "llm.input_messages.?.message.content"])
    big = "z" * 5000
    keys = ["gen_ai.input.messages", "gen_ai.output.messages", "llm.input_messages.0.message.content", "input.value"]
    out = p.process(spans_batch([_span(T1, 1, dict.fromkeys(keys, big))]))
    a = attrs(plain(out, ["attributes"])[0])
    assert {k for k in keys if is_ref(a[k])} == {"gen_ai.input.messages", "llm.input_messages.0.message.content"}


def test_event_attributes_offloaded_with_indexed_keys(tmp_path: Path) -> None:
    p = _offloader(tmp_path)
    events = [("gen_ai.choice", {"index": 0}), ("gen_ai.content.prompt", {"gen_ai.prompt": MESSAGES, "n": 1})]
    batch = spans_batch([_span(T1, 1, {}), _span(T1, 2, {"gen_ai.system_instructions": SYSTEM}, events)])
    out = p.process(batch)
    rows = plain(out, ["events", "artifacts"])
    assert rows[0]["artifacts"] is None
    ev = rows[1]["events"]
    assert [e["name"] for e in ev] == ["gen_ai.choice", "gen_ai.content.prompt"]
    assert dict(ev[0]["attributes"]) == {"index": "0"}
    ev_attrs = dict(ev[1]["attributes"])
    assert ev_attrs["n"] == "1" and p.store.get(ev_attrs["gen_ai.prompt"]) == MESSAGES.encode()
    assert [a["key"] for a in rows[1]["artifacts"]] == ["gen_ai.system_instructions", "events[1].gen_ai.prompt"]
    assert plain(batch, ["events"])[1]["events"][0]["time"] == ev[0]["time"]
    assert out.schema == batch.schema

    no_events = _offloader(tmp_path, events=False).process(batch)
    assert plain(no_events, ["events"]) == plain(batch, ["events"])


def test_store_failure_loses_nothing_and_is_loud(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's directory should be")
    p = ArtifactOffloader(OffloadArtifactsConfig(store=str(blocker / "sub")))
    batch = spans_batch([_span(T1, 1, {"a": SYSTEM, "b": MESSAGES}), _span(T1, 2, {"c": "w" * 9000})])
    with caplog.at_level(logging.DEBUG, logger="tracelake.processor.offload_artifacts"):
        out = p.process(batch)
        p.process(batch)
    assert plain(out, ["attributes", "events", "artifacts"]) == plain(batch, ["attributes", "events", "artifacts"])
    assert p.stats["store_failures"] == 6 and p.stats["offloaded_values"] == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once per failure streak, not once per value
    assert str(blocker / "sub" / "sha256") in errors[0].getMessage()
    assert "Not a directory" in errors[0].getMessage()

    # the store comes back: values are offloaded again and the recovery is logged
    blocker.unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tracelake.processor.offload_artifacts"):
        out = p.process(batch)
    assert all(is_ref(v) for r in plain(out, ["attributes"]) for v in attrs(r).values())
    assert any("writable again" in r.getMessage() for r in caplog.records)


def test_store_failure_can_fail_the_batch(tmp_path: Path) -> None:
    blocker = tmp_path / "store"
    blocker.write_text("")
    p = ArtifactOffloader(OffloadArtifactsConfig(store=str(blocker), on_store_error="fail"))
    with pytest.raises(ArtifactStoreError, match="cannot write artifact"):
        p.process(spans_batch([_span(T1, 1, {"a": SYSTEM})]))


def test_chunked_sliced_batches_and_existing_artifacts(tmp_path: Path) -> None:
    p = _offloader(tmp_path, keys=["gen_ai.system_instructions"])
    b1 = spans_batch([_span(T1, 1, {"x": "1"}), _span(T1, 2, {"gen_ai.system_instructions": SYSTEM})])
    b2 = spans_batch([_span(T2, 3, {"gen_ai.system_instructions": SYSTEM, "input.value": MESSAGES})])
    chunked = pa.concat_tables([b1, b2]).slice(1)
    assert chunked.column("attributes").num_chunks == 2
    out = p.process(chunked)
    rows = plain(out, ["span_id", "attributes", "artifacts"])
    assert [r["span_id"] for r in rows] == [f"{2:016x}", f"{3:016x}"]
    assert [[a["key"] for a in r["artifacts"]] for r in rows] == [["gen_ai.system_instructions"]] * 2
    assert attrs(rows[1])["input.value"] == MESSAGES

    # a second offloader later in the chain appends to what the first recorded
    p2 = _offloader(tmp_path, keys=["input.*"])
    rows2 = plain(p2.process(out), ["attributes", "artifacts"])
    assert [a["key"] for a in rows2[1]["artifacts"]] == ["gen_ai.system_instructions", "input.value"]
    assert [a["key"] for a in rows2[0]["artifacts"]] == ["gen_ai.system_instructions"]
    # and running again changes nothing: references are never offloaded again
    again = p2.process(p2.process(out))
    assert plain(again, ["attributes", "artifacts"]) == rows2


def test_known_cache_expires_and_refreshes_old_objects(tmp_path: Path) -> None:
    now = [0.0]
    store = ArtifactStore(str(tmp_path / "store"), refresh_after_s=60)
    p = ArtifactOffloader(OffloadArtifactsConfig(store="unused"), store=store, clock=lambda: now[0])
    batch = spans_batch([_span(T1, 1, {"a": SYSTEM})])
    ref = attrs(plain(p.process(batch), ["attributes"])[0])["a"]
    path = Path(store.location(ref))
    os.utime(path, (0, 1_000))  # written long ago
    p.process(batch)
    assert p.stats["cache_hits"] == 1 and path.stat().st_mtime == 1_000  # cache trusted: no store call
    now[0] += 601  # past KNOWN_TTL_S: the store is asked again, and the old object refreshed
    p.process(batch)
    assert p.stats["refreshed"] == 1 and path.stat().st_mtime > 1_000
    assert p.stats["stored_objects"] == 1


def test_config_validation() -> None:
    cfg = OffloadArtifactsConfig.model_validate({"min_bytes": "8KiB", "keys": ["gen_ai.*"], "gc_grace": "2h"})
    assert (cfg.min_bytes, cfg.gc_grace) == (8192, 7200.0)
    for bad in ({"min_bytes": 0}, {"keys": []}, {"bogus": 1}, {"on_store_error": "drop"}, {"preview_chars": -1}):
        with pytest.raises(ValidationError):
            OffloadArtifactsConfig.model_validate(bad)


def test_factory_builds_from_yaml_config(tmp_path: Path) -> None:
    Registry.register(factory)
    doc = {
        "processors": {"offload_artifacts": {"min_bytes": 1024, "store": f"file://{tmp_path}/a"}},
        "pipelines": {"traces": {"process": ["offload_artifacts"]}},
    }
    spec = parse(doc, "<test>").processors["offload_artifacts"]
    proc = spec.factory.create(spec.config, ProcessorContext("offload_artifacts"))
    out = proc.process(spans_batch([_span(T1, 1, {"a": "b" * 2000})]))
    assert is_ref(attrs(plain(out, ["attributes"])[0])["a"])
    assert list((tmp_path / "a" / "sha256").glob("*/*/*.zst"))


def test_order_warnings() -> None:
    assert order_warnings(["redact_pii", "cost", "offload_artifacts"]) == []
    assert order_warnings(["offload_artifacts", "cost"]) == []
    (w,) = order_warnings(["cost", "offload_artifacts", "redact_pii/strict"])
    assert "pipelines.traces.process.1" in w and "'redact_pii/strict'" in w
    assert len(order_warnings(["offload_artifacts/a", "redact_pii", "offload_artifacts/b"])) == 1
    assert order_warnings(["offload_artifacts"], ingest_ids=["redact_pii"]) == []
    (w,) = order_warnings(["redact_pii"], ingest_ids=["offload_artifacts"])
    assert "pipelines.traces.ingest.0" in w


def test_partial_store_failure_keeps_exactly_the_failed_values_inline(tmp_path: Path) -> None:
    v1, v2, v3 = ("1" * 5000), ("2" * 5000), ("3" * 5000)
    digests = [hashlib.sha256(v.encode()).hexdigest() for v in (v1, v2, v3)]
    assert len({d[:2] for d in digests}) == 3
    root = tmp_path / "store"
    (root / "sha256").mkdir(parents=True)
    (root / "sha256" / digests[1][:2]).write_text("")  # v2's shard cannot be created
    p = ArtifactOffloader(OffloadArtifactsConfig(store=str(root)))
    batch = spans_batch([_span(T1, 1, {"a": v1, "b": v2, "c": v1}, [("e", {"x2": v2, "x3": v3})])])
    row = plain(p.process(batch), ["attributes", "events", "artifacts"])[0]
    a, ev = attrs(row), dict(row["events"][0]["attributes"])
    assert is_ref(a["a"]) and a["c"] == a["a"] and a["b"] == v2
    assert ev["x2"] == v2 and is_ref(ev["x3"])
    assert [x["key"] for x in row["artifacts"]] == ["a", "c", "events[0].x3"]
    assert (p.stats["store_failures"], p.stats["offloaded_values"], p.stats["stored_objects"]) == (2, 3, 2)
