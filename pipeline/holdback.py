"""The holdback area: spans of traces a tail sampler dropped, kept for its late-feedback window.

One owner for the whole life of a held-back span (docs/design.md, "Tail sampling"):
- `hold`: spans a sampler marked `sampling_kept = false` go to each sink's `holdback` table
  (`<lake>/_holdback/`, which no view reads) instead of `spans`;
- `promote`: late negative feedback makes a sampler ask for a dropped trace (`Sampler.take_promotions`);
  its held-back spans are read back (once per identity: a replay may have held a span twice) and written
  to `spans`, with a summary part that marks the trace kept;
- `expire`: hours of the holdback area older than the longest late-feedback window are deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.trace_summary import promotion_parts
from sinks.parquet import layout
from sinks.parquet.sink import ParquetSink

log = logging.getLogger("tracelake.holdback")

EXPIRY_INTERVAL_S = 60.0


def dedupe_spans(rows: pa.Table) -> pa.Table:
    """One row per (trace_id, span_id), the first one: the holdback may hold a replayed span twice."""
    first = (
        pa.table({"k": pc.binary_join_element_wise(rows.column("trace_id"), rows.column("span_id"), ":")})
        .append_column("i", pa.array(range(rows.num_rows), pa.int64()))
        .group_by("k", use_threads=False)
        .aggregate([("i", "min")])
    )
    keep = first.column("i_min")
    return rows.take(keep.take(pc.sort_indices(keep)))


class Holdback:
    def __init__(self, sinks: Sequence[ParquetSink], retention_s: float | None) -> None:
        self.sinks = sinks
        self.retention_s = retention_s  # None: no sampler has a late-feedback window, nothing expires
        self.spans_held = 0
        self.promoted_traces = 0
        self._last_expiry = 0.0

    def hold(self, dropped: pa.Table, source: str | None, offsets: tuple[int, int] | None) -> None:
        for sink in self.sinks:
            sink.write("holdback", dropped, source, offsets)
        self.spans_held += dropped.num_rows

    def promote(self, requests: list[tuple[str, str]], eligible: Callable[[pa.Table], pa.Table] | None = None) -> None:
        """Move the held-back spans of these (trace_id, reason) into `spans`, with a kept summary part each.
        `eligible`: the read-back rows a promotion may move (the worker's tenant check of the feedback)."""
        if not requests or not self.sinks:
            return
        reasons = dict(requests)
        first = self.sinks[0]
        first.flush_all(tables={"holdback"})  # held-back rows still in memory are read from their file
        rows = layout.read_rows(first.lake, "holdback", sorted(reasons))
        if eligible is not None:
            rows = eligible(rows)
        if rows.num_rows == 0:
            return
        rows = dedupe_spans(rows)
        for sink in self.sinks:
            sink.write("spans", rows)
            sink.write("traces", promotion_parts(rows, reasons))
        promoted = len(set(rows.column("trace_id").to_pylist()))
        self.promoted_traces += promoted
        log.info("promoted %d held-back spans of %d traces after late feedback", rows.num_rows, promoted)

    def expire(self, now_s: float | None = None) -> None:
        """Delete held-back hours that ended more than the retention ago (checked once a minute)."""
        now = time.monotonic()
        if self.retention_s is None or now - self._last_expiry < EXPIRY_INTERVAL_S:
            return
        self._last_expiry = now
        cutoff = (time.time() if now_s is None else now_s) - self.retention_s
        for sink in self.sinks:
            for where in layout.expire_hours(sink.lake, "holdback", cutoff):
                log.info("deleted held-back spans older than the late-feedback window: %s", where)
