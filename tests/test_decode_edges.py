"""OTLP values at the edges of their types decode, land in Parquet and read back instead of failing a batch."""

from __future__ import annotations

from pathlib import Path

from pipeline.config.model import ParquetSinkConfig
from pipeline.conventions import normalize
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.query import connect
from sinks.parquet.sink import ParquetSink
from tests.conftest import make_request


def test_timestamps_beyond_int64_are_clamped_and_the_batch_lands(tmp_path: Path) -> None:
    req = make_request(
        [
            {"trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "broken-clock", "start": 0, "end": 2**64 - 1},
            {"trace_id": "ab" * 16, "span_id": "ce" * 8, "name": "fine"},
        ]
    )
    rows = normalize(decode([SourcedRequest(req, "test")]))
    assert rows.num_rows == 2
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    sink.write("spans", rows)
    sink.flush_all()
    got = (
        connect(tmp_path)
        .execute(
            "SELECT name, isinf(CAST(end_time AS TIMESTAMPTZ)), duration_ms > 0, epoch_ns(start_time) "
            "FROM spans ORDER BY name"
        )
        .fetchall()
    )
    assert got[0] == ("broken-clock", True, True, 0)
    assert got[1][0] == "fine"
