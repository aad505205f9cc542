"""The trace-id index (sinks/parquet/trace_index.py): compaction writes one per day, `tracelake trace` opens only
the files it names (plus what no index covers yet), and the views it gets hold the trace exactly as the whole
lake's views do."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from core import feedback
from pipeline.maintenance.compact import Compactor
from pipeline.maintenance.retention import apply_retention
from pipeline.query import connect, connect_trace
from pipeline.testing import feedback_batch, spans_batch
from pipeline.trace_summary import TraceSummarizer
from sinks.parquet import layout, trace_index
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink
from tests.conftest import run_cli

HOUR_NS = 3600 * 10**9
# four closed hours over a day boundary: 22:00 and 23:00 of one day, 00:00 and 01:00 of the next
DAY0 = (int(time.time()) // 86400 - 3) * 86400 * 10**9
HOURS = [DAY0 + (22 + h) * HOUR_NS for h in range(4)]
LATE = "aa" * 16  # starts in hour 0, a late part (spans starting 2 hours later) in hour 2
RATED = "bb" * 16  # in hour 1, rated during hour 3
QUERIES = {
    "spans": "SELECT * EXCLUDE (lake_source) FROM spans WHERE trace_id = $id ORDER BY span_id",
    "traces": "SELECT * FROM traces WHERE trace_id = $id",
    "feedback": "SELECT * EXCLUDE (lake_source) FROM feedback WHERE trace_id = $id ORDER BY time",
}


def _ids(h: int) -> list[str]:
    return [f"{h + 1:02x}{i:030x}" for i in range(12)]


def _spans(trace_ids: list[str], start: int, source: str, first_span: int = 0) -> pa.Table:
    rows = [
        {
            "trace_id": t,
            "span_id": f"{first_span + j + 1:016x}",
            "parent": f"{first_span + 1:016x}" if j else None,
            "start": start + (i * 3 + j) * 10**9,
            "end": start + (i * 3 + j + 2) * 10**9,
        }
        for i, t in enumerate(trace_ids)
        for j in range(3)
    ]
    return spans_batch(rows, source)


def _write_hours(root: str, sink: ParquetSink | None = None) -> None:
    """Each hour in three files of spans and their trace summaries; LATE's late part; RATED's feedback."""
    sink = sink or ParquetSink(ParquetSinkConfig(path=root))
    summarizer = TraceSummarizer(trace_idle=0, clock=lambda: 0.0)

    def put(batch: pa.Table) -> None:
        sink.write("spans", batch)
        summarizer.observe(batch)
        for part in summarizer.due(force=True):
            sink.write("traces", part.rows)
        sink.flush_all()

    for h, start in enumerate(HOURS):
        ids = _ids(h) + ([LATE] if h == 0 else []) + ([RATED] if h == 1 else [])
        for k in range(3):
            put(_spans(ids[k::3], start + 60 * 10**9, f"kafka:t/0@{h * 10 + k}"))
    put(_spans([LATE], HOURS[2] + 30 * 10**9, "kafka:t/0@99", first_span=10))
    events = [feedback.FeedbackEvent(RATED, "thumbs", 0.0, time_ns=HOURS[3] + 10**9)]
    sink.write("feedback", feedback.extract(feedback_batch(events, "kafka:t/0@100")))
    sink.flush_all()


def _rows(con: duckdb.DuckDBPyConnection, trace_id: str) -> dict[str, pa.Table]:
    return {name: con.sql(sql, params={"id": trace_id}).to_arrow_table() for name, sql in QUERIES.items()}


def _hours_of(files: list[str]) -> set[str]:
    return {"/".join(f.split("/")[-3:-1]) for f in files}


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("indexed") / "lake"
    _write_hours(str(root))
    report = Compactor(layout.open_lake(root)).run(0)
    assert not report.errors
    return root


def _day(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).date().isoformat()


def test_compaction_writes_one_index_per_day_naming_every_traces_and_feedback_file(lake: Path) -> None:
    found = trace_index.index_objects(layout.open_lake(lake))
    assert sorted(d.isoformat() for d in found) == [_day(HOURS[0]), _day(HOURS[2])]
    covered = []
    for infos in found.values():
        assert len(infos) == 1
        covered += trace_index._DayIndex(layout.open_lake(lake), infos[0]).covers
    live = [
        str(p.relative_to(lake)) for t in ("traces", "feedback") for p in layout.table_files(lake, t)
    ]  # compacted outputs only: the sink's files were replaced
    assert sorted(covered) == sorted(live) and all("/compacted-" in f for f in live)


@pytest.mark.parametrize("which", ["plain", "late part", "rated later", "unknown"])
def test_a_lookup_opens_only_the_hours_of_the_trace_and_sees_what_the_whole_lake_shows(lake: Path, which: str) -> None:
    trace_id = {"plain": _ids(1)[4], "late part": LATE, "rated later": RATED, "unknown": "cc" * 16}[which]
    found = trace_index.candidate_files(layout.open_lake(lake), [trace_id])
    hour = {h: layout.partition_keys(_spans(["00" * 16], s, "x"), "spans")[0].as_py() for h, s in enumerate(HOURS)}
    expected = {
        "plain": ({hour[1]}, set()),
        "late part": ({hour[0], hour[2]}, set()),
        "rated later": ({hour[1]}, {hour[3]}),
        "unknown": (set(), set()),
    }[which]
    assert (_hours_of(found.files["traces"]), _hours_of(found.files["feedback"])) == expected
    assert found.unindexed_since_s == HOURS[3] / 1e9 + 3600  # everything up to the last hour is covered

    whole, looked_up = _rows(connect(lake), trace_id), _rows(connect_trace(lake, trace_id), trace_id)
    assert looked_up == whole
    assert looked_up["spans"].num_rows == {"plain": 3, "late part": 6, "rated later": 3, "unknown": 0}[which]
    assert looked_up["feedback"].num_rows == (1 if which == "rated later" else 0)
    spans_read = connect_trace(lake, trace_id).execute("SELECT DISTINCT dt, hour FROM spans").fetchall()
    assert len(spans_read) == {"plain": 1, "late part": 3, "rated later": 1, "unknown": 0}[which]


def test_files_the_index_does_not_cover_yet_are_read(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    _write_hours(str(root))
    Compactor(layout.open_lake(root)).run(0)
    sink = ParquetSink(ParquetSinkConfig(path=str(root)))
    # a late file in an indexed hour (another summary part of a known trace) ...
    known = _ids(0)[2]
    batch = _spans([known], HOURS[0] + 50 * 60 * 10**9, "kafka:t/1@5", first_span=20)
    summarizer = TraceSummarizer(trace_idle=0, clock=lambda: 0.0)
    summarizer.observe(batch)
    sink.write("spans", batch)
    for part in summarizer.due(force=True):
        sink.write("traces", part.rows)
    # ... and a trace of the current hour with spans only (its summary is not written yet)
    fresh = "dd" * 16
    sink.write("spans", _spans([fresh], time.time_ns() - 10**9, "kafka:t/1@6"))
    sink.flush_all()
    for trace_id, spans in ((known, 6), (fresh, 3)):
        looked_up = _rows(connect_trace(root, trace_id), trace_id)
        assert looked_up == _rows(connect(root), trace_id)
        assert looked_up["spans"].num_rows == spans

    # the next compaction run indexes the late file, reading only the files the index did not cover
    lake = layout.open_lake(root)
    day = datetime.fromtimestamp(HOURS[0] / 1e9, UTC).date()
    Compactor(lake).run(0)
    assert trace_index.update_day(lake, day) == 0  # up to date: nothing to read
    assert _rows(connect_trace(root, known), known) == _rows(connect(root), known)


def test_retention_drops_the_index_of_a_day_it_empties(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    _write_hours(str(root))
    lake = layout.open_lake(root)
    Compactor(lake).run(0)
    cutoff_s = HOURS[2] / 1e9  # the first day's two hours go
    apply_retention(lake, {t: time.time() - cutoff_s for t in ("spans", "traces", "feedback")})
    assert [d.isoformat() for d in trace_index.index_objects(lake)] == [_day(HOURS[2])]
    assert _rows(connect_trace(root, RATED), RATED)["traces"].num_rows == 0  # its hour went
    late = _rows(connect_trace(root, LATE), LATE)
    assert late["spans"].num_rows == 3 and late == _rows(connect(root), LATE)  # the late part's hour stays


def test_tracelake_trace_uses_the_index(lake: Path) -> None:
    out = run_cli("trace", "--lake", str(lake), "--json", _ids(2)[3].upper())
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('"span_id"') == 3
    missing = run_cli("trace", "--lake", str(lake), "ee" * 16)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_forget_takes_the_forgotten_ids_out_of_the_index(tmp_path: Path) -> None:
    from pipeline.maintenance.forget import forget_user

    root = tmp_path / "lake"
    _write_hours(str(root))
    sink = ParquetSink(ParquetSinkConfig(path=str(root)))
    mine = "ee" * 16
    batch = spans_batch(
        [
            {
                "trace_id": mine,
                "span_id": "1" * 16,
                "start": HOURS[1] + 10**9,
                "end": HOURS[1] + 2 * 10**9,
                "attrs": {"user.id": "u-42"},
            }
        ],
        "kafka:t/2@1",
    )
    summarizer = TraceSummarizer(trace_idle=0, clock=lambda: 0.0)
    summarizer.observe(batch)
    sink.write("spans", batch)
    for part in summarizer.due(force=True):
        sink.write("traces", part.rows)
    sink.flush_all()
    lake = layout.open_lake(root)
    Compactor(lake).run(0)
    assert len(trace_index.candidate_files(lake, [mine]).files["traces"]) == 1

    report = forget_user(lake, ["u-42"])
    assert report.trace_ids == [mine] and report.files_rewritten >= 2
    found = trace_index.candidate_files(lake, [mine])
    assert found.files == {"traces": [], "feedback": []}  # the rewritten file is still covered, without the id
    other = _ids(1)[0]  # a trace of the same rewritten file is still found
    assert len(trace_index.candidate_files(lake, [other]).files["traces"]) == 1
    assert _rows(connect_trace(root, other), other) == _rows(connect(root), other)


def test_the_ui_starts_its_id_index_from_the_lakes(lake: Path) -> None:
    from pipeline.ui.lake import LakeReader

    reader = LakeReader(lake)
    covered = trace_index.covered_keys(reader.lake)
    for table in ("traces", "feedback"):
        files = reader.files(table)
        assert reader.ids[table].seed(covered, files) == len(files) > 0  # every file of a compacted lake
        for f in files:  # the index's keys of a file are the file's own
            assert (reader.ids[table]._file_keys(f) == trace_index.file_keys(reader.lake, f)).all()
    assert reader.hours_holding("traces", [RATED]) and reader.hours_holding("feedback", [RATED])


def test_a_time_range_bounds_what_a_lookup_reads(lake: Path) -> None:
    day2 = datetime.fromisoformat(_day(HOURS[2])).replace(tzinfo=UTC).timestamp()
    found = trace_index.candidate_files(layout.open_lake(lake), [_ids(0)[1]], day2, None)
    assert found.files["traces"] == []  # its hour is on the first day: that day's index and files are not read
    late = _rows(connect_trace(lake, LATE, between=(day2, None)), LATE)
    assert late["spans"].num_rows == 3 and late["traces"]["start_time"][0].as_py().timestamp() >= day2

    trace_id = _ids(2)[3]
    inside = run_cli("trace", "--lake", str(lake), "--json", "--since", _day(HOURS[2]), trace_id)
    assert inside.returncode == 0 and inside.stdout.count('"span_id"') == 3, inside.stderr
    before = run_cli("trace", "--lake", str(lake), "--until", _day(HOURS[2]), trace_id)
    assert before.returncode == 1 and "not found" in before.stderr
    empty = run_cli("trace", "--lake", str(lake), "--since", "2026-12-02", "--until", "2026-12-01", trace_id)
    assert empty.returncode == 2 and "tracelake trace: --until (2026-12-01T00:00:00Z) must be after" in empty.stderr
