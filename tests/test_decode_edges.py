"""OTLP values at the edges of their types decode, land in Parquet and read back instead of failing a batch."""

from __future__ import annotations

from pathlib import Path

from core.conventions import Normalizer, normalize
from pipeline.bus.base import Delivery
from pipeline.otlp.attributes import RawAttributesRequest
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.query import connect
from pipeline.trace_summary import TraceSummarizer
from pipeline.worker import Worker
from sinks.parquet.config import ParquetSinkConfig
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


class ForeignMessages:
    """A bus partition holding these messages (a `Source`)."""

    def __init__(self, values: list[bytes]) -> None:
        self.pending = [Delivery(v, 1, f"kafka:t/0@{i}", "t/0", i) for i, v in enumerate(values)]
        self.committed: dict[str, int] = {}

    def take(self, max_spans: int, timeout: float) -> list[Delivery]:
        out, self.pending = self.pending, []
        return out

    def commit(self, held: dict[str, int]) -> None:
        self.committed = held

    def close(self) -> None:
        pass

    @property
    def drained(self) -> bool:
        return not self.pending


def test_worker_skips_only_the_bus_messages_it_cannot_decode(tmp_path: Path) -> None:
    """A foreign producer's bytes: garbage, and an attribute that is not UTF-8 (the worker reads attributes
    on columns, so the protobuf parser never sees it). Each is skipped and counted; the rest of the batch lands."""
    good = make_request([{"trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "good", "attrs": {"k": "v"}}])
    bad_utf8 = RawAttributesRequest.FromString(
        make_request([{"trace_id": "ab" * 16, "span_id": "ce" * 8, "name": "bad"}]).SerializeToString()
    )
    bad_utf8.resource_spans[0].scope_spans[0].spans[0].attributes.append(b"\x0a\x01k\x12\x04\x0a\x02\xff\xfe")
    # what a foreign producer may put on a Kafka topic (tracelake's receivers validate what they publish)
    source = ForeignMessages([good.SerializeToString(), b"\xff\x00garbage", bad_utf8.SerializeToString()])
    worker = Worker(source, [], [ParquetSink(ParquetSinkConfig(path=str(tmp_path)))], Normalizer(), TraceSummarizer(60))
    worker.run()
    assert worker.error is None
    assert worker.stats.undecodable_messages == 2
    got = connect(tmp_path).execute("SELECT name, attributes['k'] FROM spans").fetchall()
    assert got == [("good", "v")]
