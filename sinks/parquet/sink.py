"""ParquetSink: buffers rows per hive partition and writes whole, deterministically named files.

Layout (sinks/parquet/layout.py): `<lake>/<table>/dt=YYYY-MM-DD/hour=HH/part-<digest>.parquet`, zstd.
A file is written to a temp name, fsynced and renamed, so a reader never sees half a file. The
digest is a sha256 of the rows' identity columns, so the same data always gets the same name and
a replay overwrites instead of duplicating.

Freshness: rows are queryable once their file is renamed into place, so a buffer is written
when nothing new has arrived for `flush_idle` (a quiet partition is written at once) and when
its oldest row has waited `roll_seconds` (a busy one never waits longer). That makes many small
files; the background compactor (pipeline/maintenance/compact.py) merges them.

A failed write (disk full, permission denied) keeps the rows in memory, logs the path and the
OS error once per failure streak, and is retried with backoff; `backlog_bytes` lets the worker
stop taking from the bus so that receivers refuse with retryable statuses instead of anything
being dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core import metrics, schema
from core.sink import SinkWriteError
from sinks.parquet import layout
from sinks.parquet.config import ParquetSinkConfig

log = logging.getLogger("tracelake.sink.parquet")


@dataclass
class _Buffer:
    table: str
    partition: str
    # where the rows came from ("topic/3" for Kafka) and the offsets they span, for file names
    # and for committing only what is on disk
    source: str | None = None
    first_offset: int | None = None
    last_offset: int | None = None
    parts: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    nbytes: int = 0
    opened: float = 0.0
    last_write: float = 0.0
    failures: int = 0
    retry_at: float = 0.0


@dataclass(frozen=True)
class WrittenFile:
    table: str
    path: str
    rows: int
    bytes: int
    seconds: float


WRITE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))


class WriteLatency:
    """Seconds to write one file, as cumulative histogram buckets (the Prometheus shape)."""

    def __init__(self) -> None:
        self.counts = [0] * len(WRITE_BUCKETS)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        for i, bound in enumerate(WRITE_BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1


class ParquetSink:
    def __init__(
        self,
        config: ParquetSinkConfig,
        clock: Callable[[], float] = time.monotonic,
        on_written: Callable[[WrittenFile], None] | None = None,
        sink_id: str = "parquet",
    ) -> None:
        self.config = config
        self.sink_id = sink_id
        self.lake = layout.open_lake(config.path, config.s3)
        self.root = Path(self.lake.root)  # a local lake's directory
        self._clock = clock
        self._buffers: dict[tuple[str, str, str | None], _Buffer] = {}
        self._on_written = on_written
        self.files_written = 0
        self.bytes_written = 0
        self.write_latency = WriteLatency()
        self.stale_temp_removed = 0 if self.lake.remote else layout.sweep_temp_files(self.root)

    # -- intake -----------------------------------------------------------------------------
    def write(
        self, table: str, rows: pa.Table, source: str | None = None, offsets: tuple[int, int] | None = None
    ) -> None:
        """Buffer rows; nothing touches disk until a roll.

        `source`/`offsets` (a Kafka partition and the offset range the rows came from) keep rows of
        different partitions in different files, named after the offsets they hold."""
        if rows.num_rows == 0:
            return
        rows = schema.conform(rows, schema.TABLES[table])
        keys = layout.partition_keys(rows, table)
        unique = pc.unique(keys)
        now = self._clock()
        for key in unique.to_pylist():
            part = rows if len(unique) == 1 else rows.filter(pc.equal(keys, key))
            buf = self._buffers.get((table, key, source))
            if buf is None:
                buf = self._buffers[(table, key, source)] = _Buffer(table, key, source, opened=now)
            if offsets is not None:
                lo, hi = offsets
                buf.first_offset = lo if buf.first_offset is None else min(buf.first_offset, lo)
                buf.last_offset = hi if buf.last_offset is None else max(buf.last_offset, hi)
            buf.parts.append(part)
            buf.last_write = now
            buf.rows += part.num_rows
            buf.nbytes += part.nbytes

    # -- state ------------------------------------------------------------------------------
    @property
    def buffered_rows(self) -> int:
        return sum(b.rows for b in self._buffers.values())

    def low_watermarks(self) -> dict[str, int]:
        """Per source, the oldest offset whose rows are still only in memory."""
        out: dict[str, int] = {}
        for b in self._buffers.values():
            if b.source is not None and b.first_offset is not None:
                out[b.source] = min(out.get(b.source, b.first_offset), b.first_offset)
        return out

    @property
    def backlog_bytes(self) -> int:
        """Bytes held because writing failed: the worker's signal to stop pulling."""
        return sum(b.nbytes for b in self._buffers.values() if b.failures)

    @property
    def failing(self) -> bool:
        return any(b.failures for b in self._buffers.values())

    def metrics(self) -> list[metrics.Sample]:
        sid = self.sink_id
        latency = self.write_latency
        return [
            metrics.counter("tracelake_sink_files", "Parquet files written", self.files_written, sink=sid),
            metrics.counter("tracelake_sink_bytes", "Parquet bytes written", self.bytes_written, sink=sid),
            metrics.gauge("tracelake_sink_buffered_rows", "rows waiting for a file", self.buffered_rows, sink=sid),
            metrics.gauge("tracelake_sink_failing", "1 while writes fail", int(self.failing), sink=sid),
            metrics.Sample(
                "tracelake_sink_write_seconds",
                "histogram",
                "time to write one Parquet file",
                latency.total,
                (("sink", sid),),
                tuple(zip(WRITE_BUCKETS, map(float, latency.counts), strict=True)),
            ),
        ]

    # -- output -----------------------------------------------------------------------------
    def flush_due(self) -> list[WrittenFile]:
        """Write the buffers that are full, old (`roll_seconds`) or idle (`flush_idle`)."""
        now = self._clock()
        due = [b for b in self._buffers.values() if now >= b.retry_at and self._due(b, now)]
        return self._flush(due, raise_errors=False)

    def _due(self, buf: _Buffer, now: float) -> bool:
        cfg = self.config
        return (
            buf.rows >= cfg.roll_rows
            or buf.nbytes >= cfg.roll_bytes
            or now - buf.opened >= cfg.roll_seconds
            or now - buf.last_write >= cfg.flush_idle
        )

    def flush_all(self, sources: set[str] | None = None, tables: set[str] | None = None) -> list[WrittenFile]:
        """Write everything buffered (of `sources` / `tables` only, when given); raises SinkWriteError on failure."""
        buffers = [
            b
            for b in self._buffers.values()
            if (sources is None or b.source in sources) and (tables is None or b.table in tables)
        ]
        return self._flush(buffers, raise_errors=True)

    def _flush(self, buffers: list[_Buffer], raise_errors: bool) -> list[WrittenFile]:
        written: list[WrittenFile] = []
        errors: list[str] = []
        for buf in buffers:
            try:
                written.append(self._write_file(buf))
            except OSError as e:
                buf.failures += 1
                buf.retry_at = self._clock() + min(30.0, 0.5 * 2 ** min(buf.failures, 6))
                target = f"{self.lake.url(self.lake.table_root(buf.table))}/{buf.partition}"
                msg = f"cannot write {buf.rows} {buf.table} rows to {target}: {e.strerror or e}"
                if buf.failures == 1 or raise_errors:
                    log.error("%s; keeping them in memory and retrying", msg)
                errors.append(msg)
                continue
            del self._buffers[(buf.table, buf.partition, buf.source)]
        if errors and raise_errors:
            raise SinkWriteError("; ".join(errors))
        return written

    def _write_file(self, buf: _Buffer) -> WrittenFile:
        t0 = time.perf_counter()
        rows = pa.concat_tables(buf.parts) if len(buf.parts) > 1 else buf.parts[0]
        # sorted by trace then time: trace-id lookups and the trace view read few row groups
        sort_cols = [("trace_id", "ascending")]
        if buf.table != "feedback":
            sort_cols.append(("start_time", "ascending"))
        rows = rows.sort_by(sort_cols)
        buf.parts = [rows]
        offsets = None
        if buf.source is not None and buf.first_offset is not None and buf.last_offset is not None:
            offsets = (buf.first_offset, buf.last_offset)
        name = layout.data_file_name(rows, buf.table, buf.source, offsets)
        options: dict[str, Any] = {
            "compression": "zstd",
            "compression_level": self.config.compression_level,
            "row_group_size": 128 * 1024,
        }
        # on object storage the whole file in memory, then one upload: nothing appears under the key until it completes
        key = f"{self.lake.table_root(buf.table)}/{buf.partition}/{name}"
        size = layout.put_table(self.lake, key, rows, sync_dir=False, **options)
        final = self.lake.url(key)
        if buf.failures:
            log.info("wrote %s after %d failed attempts", final, buf.failures)
        result = WrittenFile(buf.table, final, rows.num_rows, size, time.perf_counter() - t0)
        self.files_written += 1
        self.bytes_written += size
        self.write_latency.observe(result.seconds)
        if self._on_written:
            self._on_written(result)
        return result
