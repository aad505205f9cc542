"""Done-when, end to end in one process: chain → Parquet lake → DuckDB, CLI and gc.

No value at or above min_bytes is inline in the lake, references resolve through the CLI and
SQL, identical payloads are stored once.
"""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

import pytest

from core.processor import Registry
from pipeline.cli import build_parser
from pipeline.query import connect
from pipeline.testing import attributes as attrs
from pipeline.testing import rows as plain
from pipeline.testing import spans_batch
from processors.offload_artifacts import ArtifactOffloader, OffloadArtifactsConfig, factory
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink

MIN = 4096
WORDS = [
    "the",
    "model",
    "retrieved",
    "context",
    "about",
    "invoices",
    "refunds",
    "shipping",
    "policy",
    "customer",
    "order",
    "delivery",
]
SYSTEMS = [f"System prompt v{i}: " + " ".join(random.Random(i).choices(WORDS, k=900)) for i in range(3)]


def _traffic(traces: int) -> tuple[list[dict], dict[str, str]]:
    """Spans with repeated system prompts and per-call prompts of 1-8 KB; returns spans and originals by span id."""
    rnd = random.Random(7)
    spans, originals = [], {}
    for t in range(traces):
        for s in range(3):
            span_id = f"{t:08x}{s:08x}"
            prompt = json.dumps([{"role": "user", "content": " ".join(rnd.choices(WORDS, k=rnd.randint(150, 1200)))}])
            a = {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": rnd.randint(100, 9000),
                "gen_ai.system_instructions": SYSTEMS[(t + s) % 3],
                "gen_ai.input.messages": prompt,
            }
            events = [("gen_ai.content.completion", {"gen_ai.completion": "ok " * rnd.randint(10, 2000)})]
            spans.append({"trace_id": f"{t + 1:032x}", "span_id": span_id, "attrs": a, "events": events})
            originals[span_id] = prompt
    return spans, originals


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "tracelake.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            processors:
              offload_artifacts: {{min_bytes: {MIN}, store: "file://{tmp_path}/lake/_artifacts"}}
            sinks:
              parquet: {{path: "{tmp_path}/lake"}}
            pipelines:
              traces: {{process: [offload_artifacts]}}
            """
        )
    )
    return cfg


def _cli(argv: list[str]) -> int:
    args = build_parser(argv[0]).parse_args(argv)
    return int(args.func(args))


def test_lake_holds_no_large_value_and_everything_resolves(tmp_path: Path, capsysbinary: pytest.CaptureFixture) -> None:
    Registry.register(factory)
    lake = tmp_path / "lake"
    proc = ArtifactOffloader(OffloadArtifactsConfig(min_bytes=MIN, store=str(lake / "_artifacts")))
    sink = ParquetSink(ParquetSinkConfig(path=str(lake)))
    spans, originals = _traffic(12)
    for i in range(0, len(spans), 9):  # several batches, as the worker would see them
        sink.write("spans", proc.process(spans_batch(spans[i : i + 9], source=f"t@{i}")))
    sink.flush_all()

    con = connect(lake)
    inline = con.execute(
        f"""
        SELECT count(*) FROM (
          SELECT unnest(map_values(attributes)) AS v FROM spans
          UNION ALL SELECT unnest(flatten(list_transform(events, lambda e: map_values(e.attributes)))) FROM spans
        ) WHERE strlen(v) >= {MIN}"""
    ).fetchall()[0]
    assert inline == (0,)
    # identical payloads stored once: 3 system prompts + the distinct prompts/completions that were large
    objects = list((lake / "_artifacts" / "sha256").glob("*/*/*.zst"))
    distinct_refs = con.execute(
        "SELECT count(DISTINCT a.ref) FROM (SELECT unnest(artifacts) AS a FROM spans)"
    ).fetchall()[0]
    assert len(objects) == distinct_refs[0] == proc.stats["stored_objects"]
    systems = con.execute(
        "SELECT count(DISTINCT attributes['gen_ai.system_instructions']), count(*) FROM spans"
    ).fetchall()[0]
    assert systems == (3, len(spans))

    span_id, original = next((k, v) for k, v in originals.items() if len(v.encode()) >= MIN)
    ref = con.execute(f"SELECT attributes['gen_ai.input.messages'] FROM spans WHERE span_id = '{span_id}'").fetchall()[
        0
    ][0]
    assert ref.startswith("artifact:sha256:")

    # the CLI prints the original bytes, from the store named in the config
    cfg = _config(tmp_path)
    capsysbinary.readouterr()
    assert _cli(["artifact", "get", "--config", str(cfg), ref]) == 0
    assert capsysbinary.readouterr().out == original.encode()
    assert _cli(["artifact", "get", "--config", str(cfg), "artifact:sha256:" + "0" * 64]) == 1
    assert b"not found" in capsysbinary.readouterr().err

    # SQL: connect() registers artifact() over <lake>/_artifacts
    got = con.execute(
        f"SELECT artifact(attributes['gen_ai.input.messages']), artifact(attributes['gen_ai.request.model']) "
        f"FROM spans WHERE span_id = '{span_id}'"
    ).fetchall()[0]
    assert got == (original, "gpt-4o")
    unresolved = con.execute(
        "SELECT count(*) FROM (SELECT unnest(artifacts) AS a FROM spans) WHERE artifact(a.ref) IS NULL"
    ).fetchall()[0]
    assert unresolved == (0,)


def test_gc_cli(tmp_path: Path, capsysbinary: pytest.CaptureFixture) -> None:
    Registry.register(factory)
    lake = tmp_path / "lake"
    proc = ArtifactOffloader(OffloadArtifactsConfig(min_bytes=MIN, store=str(lake / "_artifacts")))
    sink = ParquetSink(ParquetSinkConfig(path=str(lake)))
    spans, _ = _traffic(2)
    out = proc.process(spans_batch(spans))
    sink.write("spans", out)
    sink.flush_all()
    orphan = proc.store.put(b"x" * MIN)
    cfg = _config(tmp_path)
    capsysbinary.readouterr()
    assert _cli(["gc", "--config", str(cfg), "--dry-run", "--grace", "0s"]) == 0
    printed = capsysbinary.readouterr()
    first, summary = printed.out.decode().splitlines()
    assert first == orphan and "would delete 1 (" in summary and printed.err == b""
    assert proc.store.exists(orphan)
    assert _cli(["gc", "--config", str(cfg)]) == 0  # default grace 1h: the fresh orphan stays
    assert proc.store.exists(orphan)
    assert _cli(["gc", "--config", str(cfg), "--grace", "0"]) == 0
    assert not proc.store.exists(orphan)
    refs = {a["ref"] for r in plain(out, ["artifacts"]) for a in r["artifacts"] or []}
    assert refs and all(proc.store.exists(r) for r in refs)
    assert attrs(plain(out, ["attributes"])[0])["gen_ai.request.model"] == "gpt-4o"
