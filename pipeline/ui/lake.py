"""The lake as the UI reads it: DuckDB over only the Parquet files a page needs.

The `spans` / `traces` / `feedback` views of `pipeline.query` read every file of a table and, with
`union_by_name`, open every footer when a query binds. A page never needs all of that: the traces list
reads the newest hours first, a trace page the hours its spans started in. So a page picks files by
their hive directory (`dt=…/hour=…`, the hour the row's start time falls in) and runs the views' own
de-duplicating SQL (`pipeline.query.SPANS_SQL`, …) over a source filtered before de-duplication, which
gives exactly the view's rows (replayed rows are identical but for `lake_source`).

The lake is a directory or an `s3://` prefix (`sinks.parquet.layout.Lake`): partitions and their live files
come from the layout module either way, and a page names files as DuckDB opens them (a path, or an
`s3://` URL read through the lake's pyarrow filesystem, `sinks.parquet.object_store`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa

from pipeline import query
from pipeline.maintenance import retry_vanished
from pipeline.ui.trace_id_index import TraceIdIndex
from sinks.parquet import object_store
from sinks.parquet.layout import Lake, file_sizes, full_run_digest, hour_partitions, live_paths, open_lake
from sinks.parquet.trace_index import covered_keys

T = TypeVar("T")
HOUR_NS = 3600 * 10**9


@dataclass(frozen=True)
class Hour:
    start_ns: int
    files: tuple[str, ...]  # as DuckDB opens them: local paths, or `s3://` URLs
    sizes: tuple[int, ...] = ()  # on object storage: each file's size, as listed

    @property
    def compacted(self) -> bool:
        """Only the output of one compaction run: its rows are one per identity already."""
        digests = {full_run_digest(f.rpartition("/")[2]) for f in self.files}
        return len(digests) == 1 and None not in digests


def lake_hours(
    lake: Lake,
    table: str,
    lo_ns: int | None = None,
    hi_ns: int | None = None,
    s3: object_store.DuckDBS3 | None = None,
) -> list[Hour]:
    """The table's hour partitions whose hour overlaps [lo_ns, hi_ns), oldest first, with their files (on
    object storage: one listing of the table, whose sizes `s3`, the bridge the reader reads through, is told:
    `tracelake forget` rewrites objects under their keys, and what the bridge cached of a changed one goes)."""
    out = []
    for part in hour_partitions(lake, table):
        start = int(part.start.timestamp()) * 10**9
        if (lo_ns is not None and start + HOUR_NS <= lo_ns) or (hi_ns is not None and start >= hi_ns):
            continue
        live = live_paths(part)  # not the inputs compaction replaced (still readable for a while)
        sizes = tuple(file_sizes(part, live).get(f, 0) for f in live) if part.remote else ()
        if live:
            out.append(Hour(start, tuple(lake.url(str(f)) for f in live), sizes))
    if s3 is not None:
        s3.note_listed({lake.fs_path(f): n for h in out for f, n in zip(h.files, h.sizes, strict=True)})
    return out


def view_rows(
    con: duckdb.DuckDBPyConnection, lake: Lake, table: str, hours: Sequence[Hour], where: str = "true"
) -> str:
    """A subquery: the rows of `table` in `hours` that pass `where`, one per identity, as the view has
    them. Compacted hours are read as they are; the others are de-duplicated (after `where`: a
    replayed row is identical but for lake_source, so filtering first gives the same rows, faster)."""
    compacted = [f for h in hours if h.compacted for f in h.files]
    loose = [f for h in hours if not h.compacted for f in h.files]
    parts = [f"SELECT * FROM {query.table_source(con, lake, table, compacted)} WHERE {where}"] if compacted else []
    if loose or not parts:
        parts.append(f"SELECT * FROM {query.table_source(con, lake, table, loose)} WHERE {where} {query.DEDUP[table]}")
    return "(" + " UNION ALL BY NAME ".join(parts) + ")"


def create_views(
    con: duckdb.DuckDBPyConnection, lake: str | Path | Lake, s3: object_store.DuckDBS3 | None = None
) -> None:
    """`spans`, `traces`, `feedback` as `pipeline.query.connect` defines them (its DEDUP, SPANS_DECIDED,
    FEEDBACK_OWNED and TRACES_MERGE), over the files there are now, without de-duplicating compacted hours
    again: same rows. On object storage `con` must read `s3://` already, through `s3` when given (`lake_hours`)."""
    lake = open_lake(lake)
    parts = view_rows(con, lake, "traces", lake_hours(lake, "traces", s3=s3))
    spans = view_rows(con, lake, "spans", lake_hours(lake, "spans", s3=s3))
    feedback = view_rows(con, lake, "feedback", lake_hours(lake, "feedback", s3=s3))
    con.execute(f"CREATE OR REPLACE VIEW spans AS {query.SPANS_DECIDED.format(rows=spans, traces_src=parts)}")
    con.execute(f"CREATE OR REPLACE VIEW traces AS {query.TRACES_MERGE.format(parts=parts, feedback=feedback)}")
    owned = query.FEEDBACK_OWNED.format(rows=feedback, traces_src=parts, and_owner="")
    con.execute(f"CREATE OR REPLACE VIEW feedback AS {owned}")


class LakeReader:
    """Read-only access for the UI's pages; thread-safe (one DuckDB cursor per call)."""

    def __init__(self, lake: str | Path | Lake) -> None:
        self.lake = open_lake(lake)
        self._db = duckdb.connect(":memory:")
        # every cursor of the database reads an S3 lake through it
        self._s3 = object_store.register(self._db, self.lake.fs) if self.lake.fs is not None else None
        self._db.execute("SET TimeZone = 'UTC'")
        self._db.execute("SET enable_progress_bar = false")
        # footers of files already read stay cached: the second look at a trace skips re-reading them
        self._db.execute("SET parquet_metadata_cache = true")
        self._lock = threading.Lock()
        # which `traces` / `feedback` files hold a trace id
        self.ids = {table: TraceIdIndex(self.lake, self._s3) for table in ("traces", "feedback")}
        self._names = itertools.count()  # relations registered on a cursor (`owned_feedback`)

    def warm(self) -> None:
        """Read the id index of every `traces` and `feedback` file (a server does it once at start): from the lake's
        trace-id index where it covers them, else from each file."""
        covered = covered_keys(self.lake)
        for table, index in self.ids.items():
            index.seed(covered, self.files(table))
            self.hours_holding(table, [])

    def close(self) -> None:
        self._db.close()

    def run(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`work(cursor)` on a fresh cursor of the shared database, again if compaction removed a file."""

        def attempt() -> T:
            with self._lock:
                cur = self._db.cursor()
            try:
                return work(cur)
            finally:
                cur.close()

        return retry_vanished(attempt)

    def hours(self, table: str, lo_ns: int | None = None, hi_ns: int | None = None) -> list[Hour]:
        return lake_hours(self.lake, table, lo_ns, hi_ns, self._s3)

    def files(self, table: str, lo_ns: int | None = None, hi_ns: int | None = None) -> list[str]:
        return [f for h in self.hours(table, lo_ns, hi_ns) for f in h.files]

    def source(self, con: duckdb.DuckDBPyConnection, table: str, files: Sequence[str] | None) -> str:
        """A FROM clause over `files` of `table` (None: every file), before de-duplication."""
        return query.table_source(con, self.lake, table, files)

    def rows(self, con: duckdb.DuckDBPyConnection, table: str, hours: Sequence[Hour], where: str = "true") -> str:
        return view_rows(con, self.lake, table, hours, where)

    def no_feedback(self, con: duckdb.DuckDBPyConnection) -> str:
        """An empty `feedback` relation: TRACES_MERGE's `{feedback}` where the reader uses no feedback_min."""
        return self.source(con, "feedback", [])

    def owned_feedback(
        self,
        con: duckdb.DuckDBPyConnection,
        hours: Sequence[Hour],
        where: str = "true",
        tenant: str | None = None,
    ) -> str:
        """A subquery: the feedback rows in `hours` passing `where` that count toward their trace, as the
        `feedback` view keeps them (query.FEEDBACK_OWNED); with `tenant`, only those on that tenant's traces.
        The owners are read from the `traces` hours the id index names for the rated traces (only those
        rated by a tenant, unless `tenant` is given: without authentication nothing more is read)."""
        rows = self.rows(con, "feedback", hours, where)
        which = "true" if tenant is not None else "tenant_id IS NOT NULL"
        ids = [r[0] for r in con.execute(f"SELECT DISTINCT trace_id FROM {rows} WHERE {which}").fetchall()]
        name = f"_rated_traces_{next(self._names)}"
        con.register(name, pa.table({"trace_id": pa.array(ids, pa.string())}))
        holding = self.hours_holding("traces", ids) if ids else []
        owners = self.rows(con, "traces", holding, f"trace_id IN (SELECT trace_id FROM {name})")
        and_owner = f"AND owners.owner = {query.sql_literal(tenant)}" if tenant is not None else ""
        return f"({query.FEEDBACK_OWNED.format(rows=rows, traces_src=owners, and_owner=and_owner)})"

    def ids_with_parts_in(
        self, con: duckdb.DuckDBPyConnection, table: str, hours: Sequence[Hour], ids: Sequence[str]
    ) -> list[str]:
        """Which of `ids` have rows in `hours`: the id index names the few files to look in, if any."""
        holding = self.hours_holding(table, ids, hours) if hours and ids else []
        if not holding:
            return []
        rows = self.rows(con, table, holding, "list_contains($ids, trace_id)")
        return [r[0] for r in con.execute(f"SELECT DISTINCT trace_id FROM {rows}", {"ids": list(ids)}).fetchall()]

    def hours_holding(self, table: str, trace_ids: Sequence[str], hours: Sequence[Hour] | None = None) -> list[Hour]:
        """The hours (of `hours`, default all) with a `traces` or `feedback` file that may hold one of the ids."""
        every = self.hours(table)
        index = self.ids[table]
        index.forget_missing([f for h in every for f in h.files])
        hours = every if hours is None else hours
        hits = index.files_with([f for h in hours for f in h.files], trace_ids)
        return [h for h in hours if any(f in hits for f in h.files)]
