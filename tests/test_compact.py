"""Compaction: closed and recent hours, duplicates removed, sorted output, identical views, grace period for
replaced files, crash and race safety (the server's background compactor included)."""

from __future__ import annotations

import itertools
import re
import subprocess
import threading
import time
from pathlib import Path

import duckdb
import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core import feedback, schema
from core.conventions import normalize
from pipeline.maintenance import MaintenanceBusy, maintenance_lock
from pipeline.maintenance.compact import Compactor, PartitionPlan
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.query import connect
from pipeline.trace_summary import TraceSummarizer
from sinks.parquet import layout
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.layout import hour_partitions
from sinks.parquet.sink import ParquetSink
from tests.conftest import RunningTracelake, config_yaml, make_request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
HOUR_NS = 3600 * 10**9
NOW_S = time.time()
CLOSED = (int(NOW_S) // 3600 - 3) * HOUR_NS  # start of an hour that ended two hours ago
OPEN = (int(NOW_S) // 3600) * HOUR_NS  # start of the current hour


# the compactor's "now" for tests that count open and closed hours: OPEN stays the open hour even when the test
# runs after the hour this module was imported in has ended
def frozen() -> float:
    return NOW_S


VIEWS = {
    "spans": "select * from spans order by trace_id, span_id",
    "traces": "select * from traces order by trace_id",
    "feedback": "select * from feedback order by trace_id, time, name",
}


def _batch(trace_ids: list[str], spans_per_trace: int, start: int, source: str, step_ns: int = 10**9) -> pa.Table:
    spans = [
        {
            "trace_id": t,
            "span_id": f"{i:08x}{j + 1:08x}",
            "parent": f"{i:08x}{1:08x}" if j else None,
            "name": f"step {j}",
            "start": start + (i * spans_per_trace + j) * step_ns % (HOUR_NS - 10**9),
            "attrs": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "i": i},
        }
        for i, t in enumerate(trace_ids)
        for j in range(spans_per_trace)
    ]
    return normalize(decode([SourcedRequest(make_request(spans), source)]))


def _relabel(batch: pa.Table, source: str) -> pa.Table:
    """The same rows as a replay from another position would carry them."""
    return batch.set_column(
        batch.schema.get_field_index("lake_source"), "lake_source", pa.array([source] * batch.num_rows)
    )


def build_lake(root: Path, files: int = 12, traces_per_file: int = 6, spans_per_trace: int = 5) -> dict[str, int]:
    """Many small files in a closed hour (with replays of spans, trace parts and feedback) and in the
    open hour; returns the number of distinct spans per hour."""
    sink = ParquetSink(ParquetSinkConfig(path=str(root)))
    summarizer = TraceSummarizer(trace_idle=0, clock=lambda: 0.0)
    for f in range(files):
        for label, start in (("closed", CLOSED), ("open", OPEN)):
            traces = [
                f"{'c' if label == 'closed' else 'd'}{(f * 7919 + i * 104729) % 10**9:031x}"
                for i in range(traces_per_file)
            ]
            batch = _batch(traces, spans_per_trace, start, f"kafka:t/0@{f}")
            sink.write("spans", batch)
            summarizer.observe(batch)
            for part in summarizer.due(force=True):
                sink.write("traces", part.rows)
                if f % 3 == 0:
                    sink.write("traces", part.rows)  # replayed part: same part_id
            events = [
                feedback.FeedbackEvent(t, "thumbs", float(i % 2), time_ns=start + f * 10**9)
                for i, t in enumerate(traces)
            ]
            sink.write(
                "feedback",
                feedback.extract(normalize(decode([SourcedRequest(feedback.to_request(events), f"kafka:t/0@{f}")]))),
            )
            sink.flush_all()
            if f % 4 == 0:  # a replay from another partition offset: different file, same spans
                sink.write("spans", _relabel(batch, f"kafka:t/1@{f}"))
                sink.flush_all()
    return {"closed": files * traces_per_file * spans_per_trace, "open": files * traces_per_file * spans_per_trace}


def views(lake: Path) -> dict[str, pa.Table]:
    con = connect(lake)
    return {name: con.sql(sql).to_arrow_table() for name, sql in VIEWS.items()}


def raw_count(path: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in path.glob("*.parquet"))


def snapshot(lake: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in lake.rglob("*.parquet")}


def test_closed_hours_become_sorted_deduplicated_files_and_views_do_not_change(tmp_path: Path) -> None:
    expected = build_lake(tmp_path)
    before_views = views(tmp_path)
    closed_key = time.strftime("dt=%Y-%m-%d/hour=%H", time.gmtime(CLOSED / 1e9))
    open_files = {k: v for k, v in snapshot(tmp_path).items() if closed_key not in k}
    closed_spans = next(p for p in hour_partitions(tmp_path, "spans") if p.start.timestamp() * 1e9 == CLOSED)
    assert raw_count(closed_spans.path) > expected["closed"]  # the replays

    report = Compactor(tmp_path, row_group_rows=64).run(older_than_s=3600)
    assert not report.errors and len(report.compacted) == 3 and report.open_partitions == 3
    spans_result = next(r for r in report.compacted if r.table == "spans")
    assert spans_result.inputs == 15 and spans_result.rows_out == expected["closed"]
    assert spans_result.duplicates_removed == 3 * 30

    # views: the same rows, column for column
    assert views(tmp_path) == before_views
    # the open hour: not a byte touched
    assert {k: v for k, v in snapshot(tmp_path).items() if k in open_files} == open_files
    for table in ("spans", "traces", "feedback"):
        closed = next(p for p in hour_partitions(tmp_path, table) if p.start.timestamp() * 1e9 == CLOSED)
        files = list(closed.path.glob("*.parquet"))
        assert [f.name.startswith("compacted-") for f in files] == [True]
        assert list(closed.path.iterdir()) == files  # no temp files left
        meta = pq.read_metadata(files[0])
        rows = pq.read_table(files[0])
        assert rows.schema.remove_metadata() == schema.TABLES[table]
        assert all(meta.row_group(i).num_rows <= 64 for i in range(meta.num_row_groups))
        assert rows.column("trace_id").to_pylist() == sorted(rows.column("trace_id").to_pylist())
        identity = {
            "spans": ["trace_id", "span_id"],
            "traces": ["trace_id", "part_id"],
            "feedback": ["trace_id", "time", "name"],
        }
        assert rows.group_by(identity[table]).aggregate([]).num_rows == rows.num_rows  # no duplicates left
    assert raw_count(closed_spans.path) == expected["closed"]


def test_a_second_run_finds_nothing_to_do_and_a_late_file_is_merged_next_time(tmp_path: Path) -> None:
    build_lake(tmp_path, files=4)
    Compactor(tmp_path, clock=frozen).run(older_than_s=0)
    state = snapshot(tmp_path)
    report = Compactor(tmp_path, clock=frozen).run(older_than_s=0)
    assert report.compacted == [] and report.skipped == 3 and snapshot(tmp_path) == state

    # a late span lands in the compacted hour (e.g. from a slow client): the next run merges it in
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    sink.write("spans", _batch(["f" * 32], 2, CLOSED, "kafka:t/0@99"))
    sink.flush_all()
    before = views(tmp_path)
    report = Compactor(tmp_path, clock=frozen).run(older_than_s=0)
    assert [(r.table, r.inputs) for r in report.compacted] == [("spans", 2)]
    assert views(tmp_path) == before


def test_older_than_protects_recent_hours(tmp_path: Path) -> None:
    build_lake(tmp_path, files=3)
    state = snapshot(tmp_path)
    # the closed hour ended two hours ago: three hours of protection leave everything alone
    report = Compactor(tmp_path, clock=frozen).run(older_than_s=3 * 3600)
    assert report.compacted == [] and report.open_partitions == 6 and snapshot(tmp_path) == state
    dry = Compactor(tmp_path, clock=frozen).run(older_than_s=3600, dry_run=True)
    assert len(dry.planned) == 3 and snapshot(tmp_path) == state
    assert "would compact spans/dt=" in "\n".join(dry.lines())
    # --older-than 0s: the hour in progress is still too recent, and the report says why
    now = (OPEN + 1800 * 10**9) / 1e9  # half past the current hour
    lines = Compactor(tmp_path, clock=lambda: now).run(older_than_s=0, dry_run=True).lines()
    assert lines[-2].endswith(", 3 too recent"), lines
    cutoff = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    assert lines[-1] == (
        f"  too recent: the hour ends after {cutoff} (now minus --older-than); an hour is compacted "
        "once it has ended, so the hour in progress waits even with --older-than 0s"
    )


def test_large_partitions_split_into_target_sized_files_with_disjoint_trace_ranges(tmp_path: Path) -> None:
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    for f in range(6):
        traces = [f"{(f * 1000 + i) * 2654435761 % 16**32:032x}" for i in range(200)]
        sink.write("spans", _batch(traces, 5, CLOSED, f"kafka:t/0@{f}", step_ns=10**6))
        sink.flush_all()
    before = views(tmp_path)["spans"]
    report = Compactor(tmp_path, target_file_bytes=40_000, row_group_rows=500, tables=["spans"]).run(0)
    files = sorted(p for p in tmp_path.rglob("*.parquet"))
    assert len(report.compacted[0].outputs) == len(files) > 2
    ranges = []
    for p in files:
        ids = pq.read_table(p, columns=["trace_id"]).column("trace_id")
        ranges.append((pc.min(ids).as_py(), pc.max(ids).as_py()))
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ranges))  # each file holds a trace-id range
    assert views(tmp_path)["spans"] == before
    # what makes a lookup cheap: by their min/max statistics, only one or two row groups may hold a trace
    tid = ranges[1][0]
    candidates = 0
    for p in files:
        meta = pq.read_metadata(p)
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(0).statistics
            candidates += stats.min <= tid <= stats.max
    assert 1 <= candidates <= 2


class CrashAfterSwap(Compactor):
    """Dies after renaming the outputs into place, before deleting any input."""

    def retire_inputs(self, plan: PartitionPlan, outputs: tuple[str, ...]) -> None:
        raise KeyboardInterrupt


def test_a_crash_after_the_swap_leaves_views_correct_and_the_rerun_cleans_up(tmp_path: Path) -> None:
    build_lake(tmp_path, files=4)
    before = views(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        CrashAfterSwap(tmp_path, tables=["spans"]).run(older_than_s=0)
    closed = next(p for p in hour_partitions(tmp_path, "spans") if p.start.timestamp() * 1e9 == CLOSED)
    names = [p.name for p in closed.path.glob("*.parquet")]
    assert sum(n.startswith("compacted-") for n in names) == 1 and len(names) == 6
    assert views(tmp_path) == before  # inputs and outputs side by side: the views read each row once
    # a temp file of a crashed write by a dead process: never read, removed by the next run
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = closed.path / f".compacted-0123456789abcdef-000.parquet.{layout.HOST}.{dead.pid}.tmp"
    stale.write_bytes(b"partial")
    report = Compactor(tmp_path, tables=["spans"]).run(older_than_s=0)
    assert report.compacted[0].inputs == 6 and not stale.exists()
    files = list(closed.path.glob("*.parquet"))
    assert len(files) == 1 and raw_count(closed.path) == 4 * 6 * 5
    assert views(tmp_path) == before


def test_output_names_are_deterministic_for_the_inputs(tmp_path: Path) -> None:
    build_lake(tmp_path / "a", files=2)
    build_lake(tmp_path / "b", files=2)
    ra = Compactor(tmp_path / "a").run(older_than_s=0)
    rb = Compactor(tmp_path / "b").run(older_than_s=0)
    assert [r.outputs for r in ra.compacted] == [r.outputs for r in rb.compacted]


def test_files_of_an_older_schema_merge_into_the_current_one(tmp_path: Path) -> None:
    old_dir = tmp_path / "spans" / time.strftime("dt=%Y-%m-%d/hour=%H", time.gmtime(CLOSED / 1e9))
    old_dir.mkdir(parents=True)
    old = schema.conform(_batch(["1" * 32], 2, CLOSED, "old@1"), schema.SPANS).drop_columns(
        ["cost_status", "artifacts"]
    )
    pq.write_table(old, old_dir / "part-old.parquet")
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    sink.write("spans", _batch(["2" * 32], 2, CLOSED, "new@1"))
    sink.flush_all()
    before = views(tmp_path)["spans"]
    Compactor(tmp_path).run(older_than_s=0)
    (out,) = old_dir.glob("*.parquet")
    assert pq.read_schema(out).remove_metadata() == schema.SPANS
    assert views(tmp_path)["spans"] == before


def test_compaction_keeps_the_row_each_view_keeps() -> None:
    """Views and compaction must agree on identity and tie-break, or a compaction would change results."""
    from pipeline import query
    from sinks.parquet.layout import IDENTITY, TIE_BREAK

    views_sql = {"spans": query.SPANS_VIEW, "traces": query.TRACES_VIEW, "feedback": query.FEEDBACK_VIEW}
    for table, sql in views_sql.items():
        m = re.search(r"PARTITION BY\s+(.+?)\s+ORDER BY\s+\"?(\w+)\"?\)", sql, re.S)
        assert m, table
        # dt/hour are constant within the one partition a compaction reads: not part of its identity
        keys = tuple(k for k in (k.strip().strip('"') for k in m.group(1).split(",")) if k not in ("dt", "hour"))
        assert (keys, m.group(2)) == (IDENTITY[table], TIE_BREAK), table


def test_one_maintenance_run_at_a_time(tmp_path: Path) -> None:
    build_lake(tmp_path, files=1)
    with maintenance_lock(tmp_path), pytest.raises(MaintenanceBusy):
        Compactor(tmp_path).run(older_than_s=0)


# -- racing a running writer --------------------------------------------------------------------
GRACE_S = 3.0


def test_compaction_racing_tracelake_run(tmp_path: Path) -> None:
    """`tracelake run` writes late spans into a closed hour and spans into the open one while its own
    background compactor and a manual `tracelake compact` loop merge them again and again, and a
    reader keeps querying through the views with no retry: no query fails, none sees a span twice,
    none misses a span an earlier one saw, and at the end every span is there once, physically."""
    extra = f"compaction: {{interval: 300ms, older_than: 0s, grace: {GRACE_S}s}}\n"
    tl = RunningTracelake(tmp_path, config_yaml(extra=extra))
    lake = tl.lake
    stop = threading.Event()
    sent: set[tuple[str, str]] = set()
    closed_sent: set[tuple[str, str]] = set()
    errors: list[str] = []
    reads: list[int] = []
    compactions: list[int] = []
    test_start_s = time.time()
    closed_start = time.time_ns() - 2 * HOUR_NS  # in an hour that ended at least an hour ago

    def send() -> None:
        requests: list[bytes] = []
        with grpc.insecure_channel(tl.grpc) as ch:
            call = ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
            i = 0
            while not stop.is_set():
                closed = i % 2 == 0
                trace = f"{'c' if closed else 'd'}{i:031x}"
                start = (closed_start if closed else time.time_ns()) + i * 10**6
                spans = [
                    {
                        "trace_id": trace,
                        "span_id": f"{j + 1:016x}",
                        "start": start + j * 10**6,
                        "parent": None if j == 0 else f"{1:016x}",
                        "attrs": {"gen_ai.operation.name": "chat"},
                    }
                    for j in range(10)
                ]
                body = make_request(spans).SerializeToString()
                requests.append(body)
                try:
                    call(body, timeout=10)
                    if i % 7 == 3:  # a client retry / replay: the same spans again
                        call(requests[i // 2], timeout=10)
                except grpc.RpcError as e:
                    errors.append(f"send: {e}")
                    return
                ids = {(trace, s["span_id"]) for s in spans}
                sent.update(ids)
                if closed:
                    closed_sent.update(ids)
                i += 1
                time.sleep(0.01)

    def compact() -> None:
        """`tracelake compact` by hand, beside the server's own compactor: they take turns on the lock."""
        while not stop.is_set():
            try:
                report = Compactor(lake, grace_s=GRACE_S, lock_wait_s=10).run(older_than_s=0)
            except Exception as e:
                errors.append(f"compact: {e!r}")
                return
            errors.extend(f"compact: {r.error}" for r in report.errors)
            compactions.extend(r.rows_out for r in report.compacted)
            time.sleep(0.2)

    def read() -> None:
        """What `tracelake query` does, with no retry: connect (the views list the files), then query."""
        seen: set[tuple[str, str]] = set()
        while not stop.is_set():
            try:
                con = connect(lake)
                rows = con.sql("select trace_id, span_id from spans").fetchall()
                con.close()
            except Exception as e:
                errors.append(f"read: {e!r}")
                return
            ids = set(rows)
            if len(ids) != len(rows):
                errors.append(f"read: {len(rows) - len(ids)} spans seen twice")
            if not seen <= ids:
                errors.append(f"read: {len(seen - ids)} spans seen by an earlier query are missing")
            seen = ids
            reads.append(len(ids))
            time.sleep(0.02)

    threads = [threading.Thread(target=f, daemon=True) for f in (send, compact, read)]
    try:
        for t in threads:
            t.start()
        time.sleep(10)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        rc = tl.stop()
    assert rc == 0, tl.log
    assert errors == []
    assert len(compactions) >= 2 and max(compactions) > 0, "compaction should have run while the writer wrote"
    assert re.search(r"compacted \d+ partitions of", tl.log), "the server's background compactor never merged"
    assert len(reads) > 10 and reads[-1] > 0
    retired = list(lake.rglob(".replaced-*.json"))
    assert retired, "replaced files should still be within their grace period"

    # one last compaction once the writer has written everything, with no grace: what is left is the data
    report = Compactor(lake).run(older_than_s=0)
    assert not report.errors and report.files_deleted > 0
    assert not list(lake.rglob(".replaced-*.json"))
    con = connect(lake)
    assert con.sql("select count(*) from spans").fetchall() == [(len(sent),)]
    # the hours the late spans went to (one, unless they straddle an hour boundary): compacted, deduplicated
    closed_hours = [p for p in hour_partitions(lake, "spans") if p.end_s <= test_start_s]
    assert closed_hours and sum(raw_count(p.path) for p in closed_hours) == len(closed_sent)
    for p in closed_hours:
        assert [f.name.startswith("compacted-") for f in p.path.glob("*.parquet")] == [True]
    for p in lake.rglob("*.parquet"):
        pq.read_table(p)  # every file is whole
        if p.name.startswith("compacted-"):
            part = next(x for x in hour_partitions(lake, p.parent.parent.parent.name) if x.path == p.parent)
            assert part.end_s <= time.time(), f"{p}: an open hour got a closed hour's full merge"
    assert not list(lake.rglob("*.tmp"))


def test_held_back_spans_are_merged_too_and_a_promotion_reads_each_once(tmp_path: Path) -> None:
    """The background compactor merges `_holdback/` as well; the worker's promotion read lists live files
    only, so during the grace period it never reads a span from an input and from its output."""
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    traces = [f"e{i:031x}" for i in range(8)]
    for i, t in enumerate(traces):
        sink.write("holdback", _batch([t], 3, OPEN, f"kafka:t/0@{i}"))
        sink.flush_all()
    order = [("trace_id", "ascending"), ("span_id", "ascending")]
    before = layout.read_rows(tmp_path, "holdback", traces).sort_by(order)
    assert before.num_rows == 24
    report = Compactor(tmp_path, tables=["holdback"], grace_s=60).run(older_than_s=0, recent=True)
    (result,) = report.compacted
    assert result.inputs == 8 and len(result.outputs) == 1 and not result.error
    (hour,) = hour_partitions(tmp_path, "holdback")
    assert len(list(hour.path.glob("*.parquet"))) == 9  # the inputs stay on disk for the grace period
    after = layout.read_rows(tmp_path, "holdback", traces).sort_by(order)
    assert after.select(["trace_id", "span_id"]) == before.select(["trace_id", "span_id"])


def test_recent_hours_merge_by_size_class_and_closed_hours_merge_once() -> None:
    """The planning rules alone (sizes made up): a recent hour merges a size class once it holds
    MERGE_FILES files and never touches a full-size file; a closed hour is merged whole once, then late
    files are merged among themselves until they reach LATE_SHARE of the run."""
    from pipeline.maintenance.compact import LATE_SHARE, MERGE_FILES

    c = Compactor("/nonexistent", target_file_bytes=64 * 2**20)
    small = [Path(f"part-{i}.parquet") for i in range(MERGE_FILES)]
    sizes = {p: 100_000 for p in small}
    assert c.tiered_inputs(small[:-1], sizes) == []
    assert c.tiered_inputs(small, sizes) == sorted(small)
    mid = [Path(f"merged-{i:016x}-000.parquet") for i in range(MERGE_FILES - 1)]
    big = Path("merged-ffffffffffffffff-000.parquet")
    sizes |= {p: 8 * 2**20 for p in mid} | {big: 64 * 2**20}
    assert c.tiered_inputs([*mid, big, *small[:2]], sizes) == []  # three of one class, two of another
    assert c.tiered_inputs([*mid, big, *small], sizes) == sorted(small)

    run = [Path(f"compacted-{'a' * 16}-{i:03d}.parquet") for i in range(2)]
    sizes |= {run[0]: 64 * 2**20, run[1]: 30 * 2**20}
    assert c.closed_inputs(small, sizes) == (small, True)  # never merged: all of it
    assert c.closed_inputs(run, sizes) == ([], True)  # one run: compact
    assert c.closed_inputs([*run, small[0]], sizes) == ([], False)  # one late file: nothing to merge it with
    assert c.closed_inputs([*run, *small[:2]], sizes) == (small[:2], False)
    run_bytes = 94 * 2**20
    many = [Path(f"part-late-{i}.parquet") for i in range(int(LATE_SHARE * run_bytes / 100_000) + 1)]
    sizes |= dict.fromkeys(many, 100_000)
    assert c.closed_inputs([*run, *many], sizes) == ([*run, *many], True)  # late data grew: the hour again


def test_replaced_files_stay_readable_for_the_grace_period_then_go(tmp_path: Path) -> None:
    """A connection opened before a compaction (it listed the inputs) keeps working through the grace
    period; new connections list only the outputs; the first run after the grace period deletes the inputs."""
    from pipeline.maintenance import vanished_file
    from sinks.parquet.layout import live_files

    build_lake(tmp_path, files=4)
    before = views(tmp_path)
    early = connect(tmp_path)  # lists the small files
    now = [NOW_S]
    compactor = Compactor(tmp_path, tables=["spans"], grace_s=300, clock=lambda: now[0])
    report = compactor.run(older_than_s=3600)
    (result,) = report.compacted
    closed = next(p for p in hour_partitions(tmp_path, "spans") if p.start.timestamp() * 1e9 == CLOSED)
    on_disk = sorted(p.name for p in closed.path.glob("*.parquet"))
    assert len(on_disk) == result.inputs + 1 and [p.name for p in live_files(closed.path)] == list(result.outputs)
    assert early.sql(VIEWS["spans"]).to_arrow_table() == before["spans"]  # its inputs are still there
    assert views(tmp_path) == before  # a new connection reads the outputs instead

    now[0] += 299
    assert compactor.run(older_than_s=3600).files_deleted == 0
    assert sorted(p.name for p in closed.path.glob("*.parquet")) == on_disk
    now[0] += 2
    assert compactor.run(older_than_s=3600).files_deleted == result.inputs
    assert [p.name for p in closed.path.glob("*.parquet")] == list(result.outputs)
    assert not list(closed.path.glob(".replaced-*"))
    assert views(tmp_path) == before
    with pytest.raises(duckdb.Error) as gone:  # a connection older than the grace period lists deleted files
        early.sql(VIEWS["spans"]).fetchall()
    assert vanished_file(gone.value)
