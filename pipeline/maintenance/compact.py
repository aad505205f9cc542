"""Compaction: the many small files the sink writes become a few large, sorted, de-duplicated ones.

Why: the sink writes a file per partition whenever a buffer goes idle or old (seconds, so that
data is queryable at once) and per Kafka partition, so a busy hour would hold thousands of small
files and every query would open every footer. Compaction keeps an hour at a few files, rows sorted
by trace_id then time in row groups of `row_group_rows`, so that the Parquet min/max statistics let
DuckDB skip almost all of a file for `WHERE trace_id = …`. Replay duplicates are dropped physically (docs/design.md,
"Delivery guarantees").

Two kinds of merge, so that no byte is rewritten often:
- **Recent hours** (the open hour, and hours that ended less than `older_than` ago; only when
  `run(recent=True)`, as the server's background compactor does): size-tiered. Files below
  `target_file_bytes` fall into size classes a factor `MERGE_FILES` apart; a class holding
  `MERGE_FILES` or more files is merged into one (`merged-…` files). An hour then holds at most
  about `MERGE_FILES - 1` files per size class plus what the sink wrote since the last run, and a row
  is rewritten about once per class it climbs, not once per run.
- **Closed hours** (ended more than `older_than` ago): everything is merged once into one sorted run
  of `compacted-…` files of `target_file_bytes` with disjoint trace-id ranges. Files arriving later
  (late spans) are merged among themselves while they are small next to the run, and the whole hour
  again once they reach a quarter of it.

Safe while workers write:
- The inputs are the files listed when a partition is planned; files written after that are left
  for the next run. Writers only ever add files (or replace one with the same rows, a replay).
- Outputs are written to `.<prefix><digest>-NNN.parquet.<host>.<pid>.tmp` in the partition directory (a
  `*.parquet` glob never matches it), fsynced, checked, renamed into place and the directory fsynced.
  Then the inputs are retired (sinks/parquet/layout.py, "Replaced files"): a record next to them hides them
  from new readers, and they are deleted `grace` seconds later, by a later run. A query that listed
  them just before therefore still reads them, and never fails for a file compaction removed unless
  it (or its connection) is older than the grace period; `retry_vanished` runs such a query again.
- While a reader sees an input and an output at once, the views de-duplicate spans by (trace_id,
  span_id), trace parts by (trace_id, part_id) and feedback by (trace_id, span_id, name, time,
  source), keeping the lowest lake_source; compaction keeps exactly the row the view keeps, so the
  views return the same rows before, during and after.
- The output name is a digest of the input names, so a re-run over the same inputs rewrites the same
  name instead of adding a copy. A crash after the rename leaves inputs and outputs side by side
  (read once through the views); the next run merges them all and drops the duplicates. Temp files
  of a crashed run are removed.
- On object storage (no rename) an output is written to a local temp file, checked, then uploaded to its final
  key (it appears whole when the upload completes), and the record is an object PUT after the outputs.
- One compaction at a time per lake, whichever process runs it (`maintenance_lock`: the background
  compactor of every `tracelake run` / `worker` sharing the lake, `tracelake compact`, retention and
  forget take it); writers take no lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from core import schema
from pipeline.maintenance import TABLES, maintenance_lock
from sinks.parquet import layout, object_store, trace_index
from sinks.parquet.layout import FULL_PREFIX, IDENTITY, TIER_PREFIX, HourPartition, hour_partitions

log = logging.getLogger("tracelake.compact")

# Output order: a trace's rows sit together (trace-id lookups read one row group), then by time.
SORT = {
    "spans": ("trace_id", "start_time", "span_id"),
    "traces": ("trace_id", "start_time", "part_id"),
    "feedback": ("trace_id", "time", "name"),
    "holdback": ("trace_id", "start_time", "span_id"),
}
# Size classes of the tiered merge are this factor apart; a class with this many files is merged.
MERGE_FILES = 4
# Late files next to a closed hour's run are merged on their own until they reach this share of the run.
LATE_SHARE = 0.25


@dataclass(frozen=True)
class PartitionPlan:
    partition: HourPartition
    inputs: tuple[Path, ...]
    full: bool = True  # a closed hour's full merge (`compacted-`), else a tiered one (`merged-`)

    @property
    def prefix(self) -> str:
        return FULL_PREFIX if self.full else TIER_PREFIX

    @property
    def digest(self) -> str:
        """Deterministic for the input set: the same inputs always produce the same output names."""
        h = hashlib.sha256(f"{self.partition.table}/{self.partition.name}".encode())
        for p in sorted(i.name for i in self.inputs):
            h.update(b"\0" + p.encode())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class PartitionResult:
    table: str
    partition: str
    inputs: int
    outputs: tuple[str, ...]
    rows_in: int
    rows_out: int
    bytes_in: int
    bytes_out: int
    seconds: float
    error: str | None = None

    @property
    def duplicates_removed(self) -> int:
        return self.rows_in - self.rows_out


@dataclass
class CompactionReport:
    compacted: list[PartitionResult] = field(default_factory=list)
    planned: list[PartitionPlan] = field(default_factory=list)  # filled on dry runs
    skipped: int = 0  # partitions with nothing to merge
    open_partitions: int = 0  # hours not closed for `older_than` yet, left alone (run without `recent`)
    cutoff_s: float | None = None  # hours ending after this (now - older_than) are too recent
    files_deleted: int = 0  # inputs of earlier runs whose grace period ended
    days_indexed: list[str] = field(default_factory=list)  # days whose trace-id index this run brought up to date

    @property
    def errors(self) -> list[PartitionResult]:
        return [r for r in self.compacted if r.error]

    def lines(self) -> list[str]:
        """Human-readable summary, one line per partition, for the CLI."""
        out = []
        for p in self.planned:
            kind = "compact" if p.full else "merge"
            out.append(f"would {kind} {p.partition.table}/{p.partition.name}: {len(p.inputs)} files")
        for r in self.compacted:
            if r.error:
                out.append(f"FAILED {r.table}/{r.partition}: {r.error}")
                continue
            out.append(
                f"compacted {r.table}/{r.partition}: {r.inputs} files, {r.bytes_in:,} B -> "
                f"{len(r.outputs)} files, {r.bytes_out:,} B; {r.rows_out:,} rows "
                f"({r.duplicates_removed:,} duplicates removed) in {r.seconds:.2f}s"
            )
        if self.files_deleted:
            out.append(f"deleted {self.files_deleted} files replaced by an earlier run (grace period over)")
        if self.days_indexed:
            out.append(f"trace-id index brought up to date for {', '.join(self.days_indexed)}")
        done = (
            f"{len(self.planned)} partitions to compact"
            if self.planned
            else (f"{len(self.compacted) - len(self.errors)} partitions compacted, {len(self.errors)} failed")
        )
        out.append(f"{done}, {self.skipped} already compact, {self.open_partitions} too recent")
        if self.open_partitions and self.cutoff_s is not None:
            cutoff = datetime.fromtimestamp(self.cutoff_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            out.append(
                f"  too recent: the hour ends after {cutoff} (now minus --older-than); an hour is compacted "
                "once it has ended, so the hour in progress waits even with --older-than 0s"
            )
        return out


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Compactor:
    """Compacts the hour partitions of a lake. Not thread-safe; `interrupt` may be called from another thread."""

    def __init__(
        self,
        lake: str | Path | layout.Lake,
        *,
        target_file_bytes: int = 128 * 2**20,
        row_group_rows: int = 64 * 1024,
        compression_level: int = 3,
        tables: Iterable[str] = TABLES,
        threads: int | None = None,
        memory_limit: str | None = None,
        grace_s: float = 0.0,
        lock_wait_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lake = layout.open_lake(lake)
        self.target_file_bytes = target_file_bytes
        self.row_group_rows = row_group_rows
        self.compression_level = compression_level
        self.tables = tuple(tables)
        for t in self.tables:
            if t not in IDENTITY:
                raise ValueError(f"unknown table {t!r}: expected one of {', '.join(IDENTITY)}")
        self.threads = threads
        self.memory_limit = memory_limit
        self.grace_s = grace_s
        self.lock_wait_s = lock_wait_s
        self._clock = clock
        self._con: duckdb.DuckDBPyConnection | None = None
        self._spill = Path(tempfile.gettempdir())  # the run's spill directory; object storage: outputs' temp files
        self._interrupted = threading.Event()

    # -- planning -----------------------------------------------------------------------------
    def closed_inputs(self, files: list[Path], sizes: dict[Path, int]) -> tuple[list[Path], bool]:
        """What to merge in a closed hour, and whether it is a full merge."""
        runs: dict[str, list[Path]] = {}
        for f in files:
            digest = layout.full_run_digest(f.name)
            if digest is not None:
                runs.setdefault(digest, []).append(f)
        if not runs:  # never merged: all of it, unless it is one file of target size already
            if len(files) == 1 and sizes[files[0]] >= self.target_file_bytes:
                return [], True
            return files, True
        main = max(runs.values(), key=lambda run: sum(sizes[f] for f in run))
        late = [f for f in files if f not in main]
        if not late:
            return [], True
        if sum(sizes[f] for f in late) >= LATE_SHARE * sum(sizes[f] for f in main):
            return files, True
        return (late, False) if len(late) >= 2 else ([], False)

    def tiered_inputs(self, files: list[Path], sizes: dict[Path, int]) -> list[Path]:
        """What to merge in a recent hour: every size class that holds MERGE_FILES or more files."""
        classes: dict[int, list[Path]] = {}
        for f in files:
            if sizes[f] < self.target_file_bytes:
                rank = int(math.log(self.target_file_bytes / max(sizes[f], 1), MERGE_FILES))
                classes.setdefault(rank, []).append(f)
        return sorted(f for group in classes.values() if len(group) >= MERGE_FILES for f in group)

    def plan(
        self, older_than_s: float, now_s: float | None = None, recent: bool = False
    ) -> tuple[list[PartitionPlan], int, int]:
        """(plans, nothing-to-do count, left-alone count): closed hours (ended before now - older_than)
        get their full merge; with `recent`, the other hours get their tiered merges."""
        now_s = self._clock() if now_s is None else now_s
        cutoff = now_s - older_than_s
        plans: list[PartitionPlan] = []
        skipped = left = 0
        for table in self.tables:
            for part in hour_partitions(self.lake, table):
                closed = part.closed_before(cutoff)
                if not closed and not recent:
                    left += 1
                    continue
                files = layout.live_paths(part)
                sizes = layout.file_sizes(part, files)  # a file replaced by a replay this instant: the next run
                files = [f for f in files if f in sizes]
                if closed:
                    inputs, full = self.closed_inputs(files, sizes)
                else:
                    inputs, full = self.tiered_inputs(files, sizes), False
                if inputs:
                    plans.append(PartitionPlan(part, tuple(inputs), full))
                else:
                    skipped += 1
        return plans, skipped, left

    # -- running ------------------------------------------------------------------------------
    def run(
        self, older_than_s: float, now_s: float | None = None, dry_run: bool = False, recent: bool = False
    ) -> CompactionReport:
        """Under the lake's maintenance lock: delete what earlier runs replaced (past the grace period),
        then merge what `plan` finds."""
        report = CompactionReport()
        if (not self.lake.remote and not Path(self.lake.root).is_dir()) or self._interrupted.is_set():
            return report
        with maintenance_lock(self.lake, self.lock_wait_s):
            now_s = self._clock() if now_s is None else now_s
            report.cutoff_s = now_s - older_than_s
            if not dry_run:
                report.files_deleted = self.expire_replaced()
            plans, report.skipped, report.open_partitions = self.plan(older_than_s, now_s, recent)
            if dry_run:
                report.planned = plans
                return report
            with tempfile.TemporaryDirectory(prefix="tracelake-compact-") as spill:
                self._spill = Path(spill)
                self._con = self._connect(spill)
                try:
                    for plan in plans:
                        if self._interrupted.is_set():
                            break
                        if not self.lake.remote:
                            layout.sweep_temp_files(plan.partition.path, recursive=False)
                        result = self.compact_partition(self._con, plan)
                        report.compacted.append(result)
                        if result.error is None:
                            self.retire_inputs(plan, result.outputs)
                    if not self._interrupted.is_set():
                        report.days_indexed = self.index_days(report, plans)
                finally:
                    con, self._con = self._con, None
                    con.close()
        return report

    def index_days(self, report: CompactionReport, plans: list[PartitionPlan]) -> list[str]:
        """Bring the trace-id index (sinks/parquet/trace_index.py) up to date for the days this run merged a
        closed `traces` / `feedback` hour of, and the closed days that have none yet."""
        assert report.cutoff_s is not None
        merged = {
            plan.partition.start.date()
            for plan, result in zip(plans, report.compacted, strict=False)
            if result.error is None
            and plan.partition.table in trace_index.INDEXED_TABLES
            and plan.partition.closed_before(report.cutoff_s)
        }
        if not set(self.tables) & set(trace_index.INDEXED_TABLES):
            return []
        days = trace_index.days_to_index(self.lake, report.cutoff_s, merged)
        for day in days:
            trace_index.update_day(self.lake, day)
        return [d.isoformat() for d in days]

    def interrupt(self) -> None:
        """Stop a run from another thread, for good: the partition being merged is abandoned (temp
        files removed, inputs untouched) and no further partition is started, now or in later runs."""
        self._interrupted.set()
        con = self._con
        if con is not None:
            with contextlib.suppress(duckdb.Error):  # closed by the run in the meantime
                con.interrupt()

    def _connect(self, spill_dir: str) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")  # a CLI/cron job: no progress bar on stderr
        con.execute(f"SET temp_directory = {_sql_str(spill_dir)}")
        if self.lake.fs is not None:
            object_store.register(con, self.lake.fs)
        if self.threads:
            con.execute(f"SET threads = {int(self.threads)}")
        if self.memory_limit:
            con.execute(f"SET memory_limit = {_sql_str(self.memory_limit)}")
        return con

    def retire_inputs(self, plan: PartitionPlan, outputs: tuple[str, ...]) -> None:
        """Hide the inputs from new readers now, delete them after the grace period (at once when it is 0)."""
        part = plan.partition
        outputs_left = set(outputs)
        inputs = tuple(p.name for p in plan.inputs if p.name not in outputs_left)
        now = self._clock()
        layout.put_record(part, layout.Replacement(part.path, plan.digest, now, inputs, tuple(outputs)))
        if self.grace_s <= 0:
            layout.expire_partition(part, 0.0, now)

    def expire_replaced(self) -> int:
        """Delete the inputs of earlier runs whose grace period is over; returns how many files went."""
        now = self._clock()
        deleted = 0
        for table in self.tables:
            for part in hour_partitions(self.lake, table):
                deleted += sum(len(r.inputs) for r in layout.expire_partition(part, self.grace_s, now))
        return deleted

    def compact_partition(self, con: duckdb.DuckDBPyConnection, plan: PartitionPlan) -> PartitionResult:
        """Merge the plan's inputs into sorted, de-duplicated outputs put in place (inputs kept): renamed into the
        partition directory, or on object storage uploaded to their final keys (an object appears whole)."""
        t0 = time.perf_counter()
        part = plan.partition
        table = part.table
        tmps: list[Path] = []
        try:
            rows_in = sum(pq.read_metadata(str(p), filesystem=self.lake.fs).num_rows for p in plan.inputs)
            bytes_in = sum(layout.file_sizes(part, list(plan.inputs)).values())
            outputs = self._write_outputs(con, plan, tmps)
            finals = []
            for tmp, rows in outputs:
                if pq.read_metadata(tmp).num_rows != rows:  # a short write must never replace the inputs
                    raise OSError(f"{tmp}: wrote {rows} rows but the footer disagrees")
            bytes_out = sum(tmp.stat().st_size for tmp, _rows in outputs)
            for i, (tmp, _rows) in enumerate(outputs):
                final = part.path / layout.output_name(plan.prefix, plan.digest, i)
                if self.lake.remote:
                    layout.upload_file(self.lake, tmp, str(final))
                    tmp.unlink()
                else:
                    os.replace(tmp, final)
                finals.append(final)
            if not self.lake.remote:
                layout.fsync_dir(part.path)
        except (OSError, duckdb.Error, pa.ArrowException) as e:
            for t in tmps:
                t.unlink(missing_ok=True)
            if self._interrupted.is_set():
                log.info("compaction of %s/%s interrupted: inputs left as they were", table, part.name)
            else:
                log.error("cannot compact %s/%s: %s", table, part.name, e)
            return PartitionResult(table, part.name, len(plan.inputs), (), 0, 0, 0, 0, time.perf_counter() - t0, str(e))
        rows_out = sum(r for _t, r in outputs)
        return PartitionResult(
            table,
            part.name,
            len(plan.inputs),
            tuple(f.name for f in finals),
            rows_in,
            rows_out,
            bytes_in,
            bytes_out,
            time.perf_counter() - t0,
        )

    def _query(self, plan: PartitionPlan) -> str:
        table = plan.partition.table
        files = ", ".join(_sql_str(self.lake.url(str(p))) for p in plan.inputs)
        order = ", ".join(layout.sql_ident(c) for c in SORT[table])
        return (
            f"SELECT * FROM read_parquet([{files}], union_by_name=true, hive_partitioning=false)\n"
            f"{layout.dedup_clause(table)}\nORDER BY {order}"
        )

    def _write_outputs(
        self, con: duckdb.DuckDBPyConnection, plan: PartitionPlan, tmps: list[Path]
    ) -> list[tuple[Path, int]]:
        """Stream DuckDB's sorted, de-duplicated rows into files of ~target size; returns (tmp path, rows)."""
        table = plan.partition.table
        reader = con.sql(self._query(plan)).to_arrow_reader(self.row_group_rows)
        base = schema.TABLES[table]
        extra = [f for f in reader.schema if f.name not in base.names]  # columns newer than this code
        out_schema = pa.schema([*base, *extra]).with_metadata(
            {"tracelake.compacted_from": json.dumps(sorted(p.name for p in plan.inputs))}
        )
        sorting = [pq.SortingColumn(out_schema.get_field_index(c)) for c in SORT[table]]
        outputs: list[tuple[Path, int]] = []
        writer: pq.ParquetWriter | None = None
        fh = None
        rows_in_file = 0
        pending: list[pa.RecordBatch] = []
        pending_rows = 0

        def open_next() -> None:
            nonlocal writer, fh, rows_in_file
            name = layout.output_name(plan.prefix, plan.digest, len(outputs))
            tmp = self._spill / name if self.lake.remote else layout.temp_path(plan.partition.path / name)
            tmps.append(tmp)
            fh = open(tmp, "wb")  # noqa: SIM115 - closed in close_current
            writer = pq.ParquetWriter(
                fh,
                out_schema,
                compression="zstd",
                compression_level=self.compression_level,
                sorting_columns=sorting,
            )
            rows_in_file = 0
            outputs.append((tmp, 0))

        def close_current() -> None:
            nonlocal writer, fh
            if writer is None or fh is None:
                return
            writer.close()
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            outputs[-1] = (outputs[-1][0], rows_in_file)
            writer = fh = None

        def write_group(rows: pa.Table) -> None:
            nonlocal rows_in_file
            if writer is not None and fh is not None and fh.tell() >= self.target_file_bytes:
                close_current()
            if writer is None:
                open_next()
            assert writer is not None
            writer.write_table(rows, row_group_size=self.row_group_rows)
            rows_in_file += rows.num_rows

        try:
            for batch in reader:
                if batch.num_rows == 0:
                    continue
                pending.append(batch)
                pending_rows += batch.num_rows
                while pending_rows >= self.row_group_rows:
                    rows = pa.Table.from_batches(pending)
                    write_group(schema.conform(rows.slice(0, self.row_group_rows), out_schema))
                    rest = rows.slice(self.row_group_rows)
                    pending = rest.to_batches()
                    pending_rows = rest.num_rows
            if pending_rows:
                write_group(schema.conform(pa.Table.from_batches(pending), out_schema))
            close_current()
        finally:
            if writer is not None:
                writer.close()
            if fh is not None and not fh.closed:
                fh.close()
        return outputs
