"""Retention: whole hour partitions older than each table's age are deleted; nothing younger is touched."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pyarrow as pa
import pytest

from core import feedback
from core.conventions import normalize
from pipeline.maintenance import MaintenanceBusy, maintenance_lock
from pipeline.maintenance.retention import apply_retention
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.query import connect
from pipeline.trace_summary import TraceSummarizer
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.layout import TRASH, hour_partitions
from sinks.parquet.sink import ParquetSink
from tests.conftest import RunningTracelake, config_yaml, make_request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
DAY = 86400
NOW = (int(time.time()) // 3600) * 3600 + 1800  # half past the current hour: fixed for the whole module


def _spans(trace: str, start_s: float) -> pa.Table:
    t0 = int(start_s * 1e9)
    spans = [{"trace_id": trace, "span_id": f"{j + 1:016x}", "start": t0 + j, "end": t0 + 10**6} for j in range(3)]
    return normalize(decode([SourcedRequest(make_request(spans), "t:0@1")]))


def build(root: Path, ages_days: dict[str, list[float]]) -> None:
    """One trace per age; spans and its summary in `spans`/`traces`, one feedback event each."""
    sink = ParquetSink(ParquetSinkConfig(path=str(root)))
    summarizer = TraceSummarizer(trace_idle=0, clock=lambda: 0.0)
    for table, ages in ages_days.items():
        for i, age in enumerate(ages):
            start = NOW - age * DAY
            trace = f"{['spans', 'traces', 'feedback'].index(table) + 1}{i:031x}"
            batch = _spans(trace, start)
            if table == "spans":
                sink.write("spans", batch)
            elif table == "traces":
                summarizer.observe(batch)
                for part in summarizer.due(force=True):
                    sink.write("traces", part.rows)
            else:
                ev = feedback.FeedbackEvent(trace, "thumbs", 0.0, time_ns=int(start * 1e9))
                req = feedback.to_request([ev])
                sink.write("feedback", feedback.extract(normalize(decode([SourcedRequest(req, "t:0@2")]))))
    sink.flush_all()


def hours(root: Path, table: str) -> list[str]:
    return [p.name for p in hour_partitions(root, table)]


def hour_name(age_days: float) -> str:
    return time.strftime("dt=%Y-%m-%d/hour=%H", time.gmtime(NOW - age_days * DAY))


def test_per_table_ages_remove_whole_old_hours_only(tmp_path: Path) -> None:
    build(tmp_path, {"spans": [40, 10, 0], "traces": [500, 40, 0], "feedback": [500, 40]})
    before = connect(tmp_path).sql("select count(*) from spans").fetchall()
    assert before == [(9,)]
    ages = {"spans": 30.0 * DAY, "traces": 400.0 * DAY, "feedback": 400.0 * DAY}

    dry = apply_retention(tmp_path, ages, now_s=NOW, dry_run=True)
    assert sorted((r.table, r.partition) for r in dry) == [
        ("feedback", hour_name(500)),
        ("spans", hour_name(40)),
        ("traces", hour_name(500)),
    ]
    assert dry[0].files == 1 and dry[0].bytes > 0 and dry[0].line(dry_run=True).startswith("would remove")
    assert connect(tmp_path).sql("select count(*) from spans").fetchall() == before  # dry run: nothing gone

    removed = apply_retention(tmp_path, ages, now_s=NOW)
    assert [(r.table, r.partition) for r in removed] == [(r.table, r.partition) for r in dry]
    assert hours(tmp_path, "spans") == [hour_name(10), hour_name(0)]
    assert hours(tmp_path, "traces") == [hour_name(40), hour_name(0)]
    assert hours(tmp_path, "feedback") == [hour_name(40)]
    # emptied dt= directories go too, and nothing is left in the trash
    assert not (tmp_path / "spans" / hour_name(40).split("/")[0]).exists()
    assert list((tmp_path / TRASH).iterdir()) == []
    con = connect(tmp_path)
    assert con.sql("select count(*) from spans").fetchall() == [(6,)]
    assert con.sql("select count(*) from traces").fetchall() == [(2,)]
    assert apply_retention(tmp_path, ages, now_s=NOW) == []  # idempotent


def test_an_hour_goes_only_once_all_of_it_is_older_than_the_age(tmp_path: Path) -> None:
    start = (NOW // 3600 - 48) * 3600  # an hour that started 48h (+30 min) ago
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    sink.write("spans", _spans("a" * 32, start + 10))
    sink.flush_all()
    end = start + 3600
    age = 24 * 3600.0
    assert apply_retention(tmp_path, {"spans": age}, now_s=end + age - 1) == []  # its last second is younger
    assert len(apply_retention(tmp_path, {"spans": age}, now_s=end + age)) == 1


def test_tables_without_an_age_are_kept_and_unknown_tables_rejected(tmp_path: Path) -> None:
    build(tmp_path, {"spans": [900], "traces": [900]})
    assert apply_retention(tmp_path, {"spans": None}, now_s=NOW) == []
    assert [r.table for r in apply_retention(tmp_path, {"traces": DAY}, now_s=NOW)] == ["traces"]
    assert hours(tmp_path, "spans") == [hour_name(900)]
    with pytest.raises(ValueError, match="unknown table 'holdback'"):
        apply_retention(tmp_path, {"holdback": DAY})
    assert apply_retention(tmp_path / "missing", {"spans": DAY}) == []


def test_waits_for_a_running_compaction(tmp_path: Path) -> None:
    build(tmp_path, {"spans": [90]})
    with maintenance_lock(tmp_path), pytest.raises(MaintenanceBusy):
        apply_retention(tmp_path, {"spans": DAY}, lock_wait_s=0.3)


def test_retention_on_a_lake_built_by_tracelake_run(tmp_path: Path) -> None:
    tl = RunningTracelake(tmp_path, config_yaml())
    now = time.time()
    try:
        with grpc.insecure_channel(tl.grpc) as ch:
            call = ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
            for i, age_s in enumerate((3 * DAY, 2 * 3600, 0)):
                start = int((now - age_s) * 1e9)
                spans = [
                    {"trace_id": f"{i + 1:032x}", "span_id": f"{j + 1:016x}", "start": start + j} for j in range(4)
                ]
                call(make_request(spans).SerializeToString(), timeout=10)
    finally:
        assert tl.stop() == 0, tl.log
    assert len(hours(tl.lake, "spans")) == 3
    removed = apply_retention(tl.lake, {"spans": DAY, "traces": 2 * DAY, "feedback": DAY})
    assert [r.table for r in removed] == ["spans", "traces"]
    con = connect(tl.lake)
    assert con.sql("select count(*) from spans").fetchall() == [(8,)]
    assert con.sql("select count(*) from traces").fetchall() == [(2,)]
