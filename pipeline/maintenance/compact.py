"""Compaction: the many small files of a closed hour become a few large, sorted, de-duplicated ones.

Why: the sink rolls a file per partition every `roll_seconds` (and per Kafka partition), so a busy
hour holds hundreds of small files and every query opens every footer. After compaction an hour is
one file per `target_file_bytes`, rows sorted by trace_id then time, in row groups of
`row_group_rows`; the Parquet min/max statistics of those row groups let DuckDB skip almost all of a
file for `WHERE trace_id = …`. Replay duplicates are dropped physically (docs/design.md, "Delivery guarantees").

Safe while workers write:
- Only hours that ended more than `older_than` ago are touched: never the open hour, never anything
  newer. A closed hour can still receive late spans; the inputs are the files listed when the
  partition is planned, and files written after that are left for the next run.
- Outputs are written to `.compacted-<digest>-NNN.parquet.<pid>.tmp` in the partition directory (a
  `*.parquet` glob never matches it), fsynced, checked, renamed into place and the directory fsynced.
  Only then are the inputs deleted.
- Between the renames and the deletes a reader sees every row twice, in an input and in an output.
  The views de-duplicate spans by (trace_id, span_id), trace parts by (trace_id, part_id) and
  feedback by (trace_id, span_id, name, time, source), keeping the lowest lake_source; compaction
  keeps exactly the row the view keeps, so the views return the same rows before, during and after.
  Raw `read_parquet` users may see duplicates for that moment, as they already may after a replay.
- A query lists the files when it starts and opens them while it scans: one that listed an input just
  before its deletion fails with "Cannot open file … No such file" (never with partial results).
  Running it again lists the outputs instead; `pipeline.maintenance.retry_vanished` does that for
  tracelake's own readers. No delay between swap and delete would avoid this: a query that starts
  during the delay still lists the inputs. (Table formats such as Iceberg or DuckLake avoid it with
  a manifest; this lake has none, by design.)
- The output name is a digest of the input names, so a re-run over the same inputs rewrites the same
  name instead of adding a copy. A crash after the rename leaves inputs and outputs side by side
  (invisible through the views); the next run merges them all and drops the duplicates. Temp files
  of a crashed run are removed.
- Two maintenance runs never overlap (`maintenance_lock`); writers take no lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from core import schema
from pipeline.maintenance import TABLES, HourPartition, fsync_dir, hour_partitions, maintenance_lock
from sinks.parquet.sink import pid_alive

log = logging.getLogger("tracelake.compact")

# Identity and tie-break of each table, exactly as pipeline/query.py's views de-duplicate.
IDENTITY = {
    "spans": ("trace_id", "span_id"),
    "traces": ("trace_id", "part_id"),
    "feedback": ("trace_id", "span_id", "name", "time", "source"),
}
TIE_BREAK = "lake_source"
# Output order: a trace's rows sit together (trace-id lookups read one row group), then by time.
SORT = {
    "spans": ("trace_id", "start_time", "span_id"),
    "traces": ("trace_id", "start_time", "part_id"),
    "feedback": ("trace_id", "time", "name"),
}
PREFIX = "compacted-"
_OUTPUT = re.compile(r"^compacted-([0-9a-f]{16})-\d{3}\.parquet$")
_TMP = re.compile(r"^\.compacted-[0-9a-f]{16}-\d{3}\.parquet\.(\d+)\.tmp$")
STALE_TMP_S = 3600.0


@dataclass(frozen=True)
class PartitionPlan:
    partition: HourPartition
    inputs: tuple[Path, ...]

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
    skipped: int = 0  # closed partitions that were already compact
    open_partitions: int = 0  # too recent to touch
    cutoff_s: float | None = None  # hours ending after this (now - older_than) are too recent

    @property
    def errors(self) -> list[PartitionResult]:
        return [r for r in self.compacted if r.error]

    def lines(self) -> list[str]:
        """Human-readable summary, one line per partition, for the CLI."""
        out = []
        for p in self.planned:
            out.append(f"would compact {p.partition.table}/{p.partition.name}: {len(p.inputs)} files")
        for r in self.compacted:
            if r.error:
                out.append(f"FAILED {r.table}/{r.partition}: {r.error}")
                continue
            out.append(
                f"compacted {r.table}/{r.partition}: {r.inputs} files, {r.bytes_in:,} B -> "
                f"{len(r.outputs)} files, {r.bytes_out:,} B; {r.rows_out:,} rows "
                f"({r.duplicates_removed:,} duplicates removed) in {r.seconds:.2f}s"
            )
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


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_output(path: Path) -> str | None:
    m = _OUTPUT.match(path.name)
    return m.group(1) if m else None


class Compactor:
    """Compacts the closed hour partitions of a lake. One instance per run; not thread-safe."""

    def __init__(
        self,
        lake: str | Path,
        *,
        target_file_bytes: int = 128 * 2**20,
        row_group_rows: int = 64 * 1024,
        compression_level: int = 3,
        tables: Iterable[str] = TABLES,
        threads: int | None = None,
        memory_limit: str | None = None,
        lock_wait_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lake = Path(lake)
        self.target_file_bytes = target_file_bytes
        self.row_group_rows = row_group_rows
        self.compression_level = compression_level
        self.tables = tuple(tables)
        for t in self.tables:
            if t not in IDENTITY:
                raise ValueError(f"unknown table {t!r}: expected one of {', '.join(IDENTITY)}")
        self.threads = threads
        self.memory_limit = memory_limit
        self.lock_wait_s = lock_wait_s
        self._clock = clock

    # -- planning -----------------------------------------------------------------------------
    def needs_compaction(self, files: list[Path]) -> bool:
        """A partition is compact when it holds the output of one run only, or one file of target size."""
        if not files:
            return False
        digests = {_is_output(f) for f in files}
        if len(digests) == 1 and None not in digests:
            return False
        return not (len(files) == 1 and files[0].stat().st_size >= self.target_file_bytes)

    def plan(self, older_than_s: float, now_s: float | None = None) -> tuple[list[PartitionPlan], int, int]:
        """(plans, already-compact count, too-recent count) for hours that ended before now - older_than."""
        now_s = self._clock() if now_s is None else now_s
        cutoff = now_s - older_than_s
        plans: list[PartitionPlan] = []
        skipped = recent = 0
        for table in self.tables:
            for part in hour_partitions(self.lake, table):
                if not part.closed_before(cutoff):
                    recent += 1
                    continue
                files = sorted(p for p in part.path.glob("*.parquet") if p.is_file() and not p.name.startswith("."))
                if self.needs_compaction(files):
                    plans.append(PartitionPlan(part, tuple(files)))
                else:
                    skipped += 1
        return plans, skipped, recent

    # -- running ------------------------------------------------------------------------------
    def run(self, older_than_s: float, now_s: float | None = None, dry_run: bool = False) -> CompactionReport:
        report = CompactionReport()
        if not self.lake.is_dir():
            return report
        with maintenance_lock(self.lake, self.lock_wait_s):
            now_s = self._clock() if now_s is None else now_s
            report.cutoff_s = now_s - older_than_s
            plans, report.skipped, report.open_partitions = self.plan(older_than_s, now_s)
            if dry_run:
                report.planned = plans
                return report
            with tempfile.TemporaryDirectory(prefix="tracelake-compact-") as spill:
                con = self._connect(spill)
                try:
                    for plan in plans:
                        self._remove_stale_tmp(plan.partition.path)
                        result = self.compact_partition(con, plan)
                        report.compacted.append(result)
                        if result.error is None:
                            self.retire_inputs(list(plan.inputs))
                            fsync_dir(plan.partition.path)
                finally:
                    con.close()
        return report

    def _connect(self, spill_dir: str) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")  # a CLI/cron job: no progress bar on stderr
        con.execute(f"SET temp_directory = {_sql_str(spill_dir)}")
        if self.threads:
            con.execute(f"SET threads = {int(self.threads)}")
        if self.memory_limit:
            con.execute(f"SET memory_limit = {_sql_str(self.memory_limit)}")
        return con

    def retire_inputs(self, inputs: list[Path]) -> None:
        """Delete compacted inputs (their rows are in the outputs). Separate so tests can simulate a crash."""
        for p in inputs:
            p.unlink(missing_ok=True)

    def _remove_stale_tmp(self, directory: Path) -> None:
        """Temp files of a crashed compaction: never read (not *.parquet), but they take space."""
        for p in directory.glob(".compacted-*.tmp"):
            m = _TMP.match(p.name)
            if m is None:
                continue
            pid = int(m.group(1))
            try:
                age = time.time() - p.stat().st_mtime
            except FileNotFoundError:
                continue
            if pid == os.getpid() or not pid_alive(pid) or age > STALE_TMP_S:
                p.unlink(missing_ok=True)

    def compact_partition(self, con: duckdb.DuckDBPyConnection, plan: PartitionPlan) -> PartitionResult:
        """Merge the plan's inputs into sorted, de-duplicated outputs renamed into place (inputs kept)."""
        t0 = time.perf_counter()
        part = plan.partition
        table = part.table
        tmps: list[Path] = []
        try:
            rows_in = bytes_in = 0
            for p in plan.inputs:
                rows_in += pq.read_metadata(p).num_rows
                bytes_in += p.stat().st_size
            outputs = self._write_outputs(con, plan, tmps)
            finals = []
            for tmp, rows in outputs:
                if pq.read_metadata(tmp).num_rows != rows:  # a short write must never replace the inputs
                    raise OSError(f"{tmp}: wrote {rows} rows but the footer disagrees")
            for tmp, _rows in outputs:
                final = tmp.parent / tmp.name[1:].rsplit(".", 2)[0]
                os.replace(tmp, final)
                finals.append(final)
            fsync_dir(part.path)
        except (OSError, duckdb.Error, pa.ArrowException) as e:
            for t in tmps:
                t.unlink(missing_ok=True)
            log.error("cannot compact %s/%s: %s", table, part.name, e)
            return PartitionResult(table, part.name, len(plan.inputs), (), 0, 0, 0, 0, time.perf_counter() - t0, str(e))
        rows_out = sum(r for _t, r in outputs)
        bytes_out = sum(f.stat().st_size for f in finals)
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
        files = ", ".join(_sql_str(str(p)) for p in plan.inputs)
        identity = ", ".join(_ident(c) for c in IDENTITY[table])
        order = ", ".join(_ident(c) for c in SORT[table])
        return (
            f"SELECT * FROM read_parquet([{files}], union_by_name=true, hive_partitioning=false)\n"
            f"QUALIFY row_number() OVER (PARTITION BY {identity} ORDER BY {_ident(TIE_BREAK)}) = 1\n"
            f"ORDER BY {order}"
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
            name = f".{PREFIX}{plan.digest}-{len(outputs):03d}.parquet.{os.getpid()}.tmp"
            tmp = plan.partition.path / name
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
