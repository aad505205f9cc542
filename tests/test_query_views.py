"""The DuckDB views: de-duplication, merged trace parts, schema growth, partition pruning columns."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core import schema
from core.conventions import normalize
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.query import connect
from pipeline.trace_summary import TraceSummarizer
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink
from tests.conftest import make_request

T0 = 1_763_800_000 * 10**9
TRACE = "ab" * 16


def _batch(span_ids: list[str], source: str, attrs: dict[str, object] | None = None) -> pa.Table:
    spans = [
        {
            "trace_id": TRACE,
            "span_id": sid,
            "parent": None if i == 0 and sid == "0000000000000001" else "0000000000000001",
            "start": T0 + i * 10**6,
            "end": T0 + (i + 1) * 10**6,
            "attrs": attrs or {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 10},
        }
        for i, sid in enumerate(span_ids)
    ]
    return normalize(decode([SourcedRequest(make_request(spans), source)]))


def test_replayed_spans_and_trace_parts_read_once(tmp_path: Path) -> None:
    clock = [0.0]
    summarizer = TraceSummarizer(trace_idle=5, clock=lambda: clock[0])
    first = _batch(["0000000000000001", "0000000000000002"], "embedded:r@1")
    late = _batch(["0000000000000003"], "embedded:r@2")
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    for batch in (first, late):
        sink.write("spans", batch)
        summarizer.observe(batch)
        clock[0] += 10  # each batch is summarised as its own part: the second one is "late"
        for part in summarizer.due():
            sink.write("traces", part.rows)
        sink.flush_all()
    # a replay writes the first batch and its summary part again, as separate files
    replay = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    replay.write(
        "spans",
        first.set_column(first.schema.get_field_index("lake_source"), "lake_source", pa.array(["embedded:r2@1"] * 2)),
    )
    summarizer2 = TraceSummarizer(trace_idle=0, clock=lambda: 0.0)
    summarizer2.observe(first)
    for part in summarizer2.due(force=True):
        replay.write("traces", part.rows)
    replay.flush_all()

    assert len(list((tmp_path / "spans").rglob("*.parquet"))) == 3
    con = connect(tmp_path)
    assert con.execute("select count(*) from spans").fetchone() == (3,)
    row = con.execute(
        "select span_count, llm_count, input_tokens, parts, root_name, duration_ms, dt, hour from traces"
    ).fetchone()
    assert row is not None
    span_count, llm_count, input_tokens, parts, _root, duration_ms, dt, hour = row
    assert (span_count, llm_count, input_tokens, parts) == (3, 3, 30, 2)
    assert duration_ms == 2.0  # min start to max end across both parts
    assert str(dt) == "2025-11-22" and hour == 8


def test_old_partitions_without_new_columns_still_read(tmp_path: Path) -> None:
    old_dir = tmp_path / "spans" / "dt=2025-11-01" / "hour=00"
    old_dir.mkdir(parents=True)
    old = schema.conform(_batch(["0000000000000001"], "old@1"), schema.SPANS).drop_columns(
        ["artifacts", "pii_found", "cost_status"]
    )
    pq.write_table(old, old_dir / "part-old.parquet")
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    sink.write("spans", _batch(["0000000000000002"], "new@1"))
    sink.flush_all()
    con = connect(tmp_path)
    rows = con.execute("select span_id, cost_status, dt from spans order by span_id").fetchall()
    assert [(r[0], r[1], str(r[2])) for r in rows] == [
        ("0000000000000001", None, "2025-11-01"),
        ("0000000000000002", None, "2025-11-22"),
    ]
    assert con.execute("select count(*) from spans where dt >= '2025-11-10'").fetchone() == (1,)
    assert con.execute(
        "select attributes['gen_ai.operation.name'] from spans where span_id = '0000000000000002'"
    ).fetchone() == ("chat",)


def test_empty_lake_has_typed_views(tmp_path: Path) -> None:
    con = connect(tmp_path / "nothing-yet")
    for view in ("spans", "traces", "feedback"):
        assert con.execute(f"select count(*) from {view}").fetchone() == (0,)
    cols = [r[0] for r in con.execute("describe spans").fetchall()]
    assert cols[: len(schema.SPANS)] == schema.SPANS.names and cols[-2:] == ["dt", "hour"]
