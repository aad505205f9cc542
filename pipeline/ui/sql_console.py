"""The SQL console's sandbox: one read-only DuckDB per query, that can read the lake and nothing else.

Each query gets a fresh in-memory DuckDB with the `spans` / `traces` / `feedback` views (the rows of
`pipeline.query.connect`'s, see `pipeline.ui.lake.create_views`) and `artifact(ref)`, then:
- `allowed_directories` = the lake (and DuckDB's private spill directory), `enable_external_access` off:
  read_parquet / read_csv / glob of any other path fail with DuckDB's permission error; a lake on object
  storage is read through a filesystem confined to its prefix (`object_store.DuckDBS3`), which also refuses
  `..` (DuckDB compares `s3://` paths as text);
- extensions are neither installed nor loaded automatically, and the configuration is locked, so a
  query cannot turn any of that back on;
- only one SELECT (or EXPLAIN) statement is accepted: COPY, ATTACH, INSTALL, LOAD, SET, PRAGMA,
  CREATE, INSERT, EXPORT and the rest are refused before they run (COPY … TO inside the lake would
  otherwise be allowed by the directory rule);
- at most `max_rows` rows come back, and a query is interrupted after `timeout_s`;
- `memory_limit` and `threads` keep one query from starving the server.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline.maintenance import saved_queries
from pipeline.ui.lake import create_views
from sinks.artifacts.sql import register_artifact_function
from sinks.artifacts.store import ArtifactStore
from sinks.parquet import object_store
from sinks.parquet.layout import Lake, open_lake

ALLOWED_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class SqlRefused(ValueError):
    """The statement is not something the console runs (not a single SELECT)."""


@dataclass
class SqlResult:
    columns: list[str]
    types: list[str]
    rows: list[list[str | None]]  # every value as DuckDB renders it as text
    truncated: bool  # more rows than max_rows
    seconds: float
    trace_columns: list[int] = field(default_factory=list)  # columns whose values are trace ids
    chart: dict[str, object] | None = None  # x and numeric y columns for the quick chart, if any


class SqlSandbox:
    def __init__(
        self,
        lake: str | Path | Lake,
        artifact_stores: Sequence[str | ArtifactStore] | None = None,
        *,
        max_rows: int = 5000,
        timeout_s: float = 30.0,
        memory_limit: str = "2GB",
        threads: int = 2,
    ) -> None:
        lake = open_lake(lake)
        # a directory as an absolute path: what allowed_directories compares the views' file paths with
        self.lake = lake if lake.remote else dataclasses.replace(lake, root=str(Path(lake.root).resolve()))
        self.artifact_stores = artifact_stores or [ArtifactStore(self.lake.artifact_store, filesystem=self.lake.fs)]
        # one bridge for every query: an object's size is asked for once, not once per query
        self._s3 = object_store.DuckDBS3(lake.fs, confined_to=lake.root) if lake.fs is not None else None
        self.max_rows = max_rows
        self.timeout_s = timeout_s
        self.memory_limit = memory_limit
        self.threads = threads
        self._spill = tempfile.TemporaryDirectory(prefix="tracelake-ui-sql-")

    def close(self) -> None:
        self._spill.cleanup()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone = 'UTC'")
        if self._s3 is not None:
            object_store.register(con, self._s3)
        create_views(con, self.lake, self._s3)
        register_artifact_function(con, list(self.artifact_stores))
        for sql, value in (
            ("SET temp_directory = $v", self._spill.name),
            ("SET allowed_directories = $v", [self.lake.url(self.lake.root) + "/", self._spill.name + "/"]),
            ("SET memory_limit = $v", self.memory_limit),
            ("SET threads = $v", self.threads),
        ):
            con.execute(sql, {"v": value})
        con.execute("SET enable_progress_bar = false")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con

    @staticmethod
    def check(con: duckdb.DuckDBPyConnection, sql: str) -> None:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as e:
            raise SqlRefused(str(e)) from None
        if len(statements) != 1:
            raise SqlRefused(f"one statement at a time, please (got {len(statements)})")
        kind = statements[0].type
        if kind not in ALLOWED_STATEMENTS:
            raise SqlRefused(f"the console is read-only: {kind.name} statements are not run (SELECT and EXPLAIN are)")

    def run(self, sql: str, params: Mapping[str, object] | None = None) -> SqlResult:
        """Run one read-only statement; raises SqlRefused, or duckdb.Error with DuckDB's message."""
        con = self._connect()
        try:
            self.check(con, sql)
            timer = threading.Timer(self.timeout_s, con.interrupt)
            t0 = time.perf_counter()
            timer.start()
            try:
                rel = con.sql(sql, params=dict(params or {}))
                if rel is None:
                    raise SqlRefused("the statement returned no rows")
                rel = rel.limit(self.max_rows + 1)
                types = [str(t) for t in rel.types]
                table = rel.to_arrow_table()
                texts = _as_text(con, table)
            except duckdb.InterruptException:
                raise duckdb.InterruptException(f"stopped after the {self.timeout_s:g} s time limit") from None
            finally:
                timer.cancel()
            seconds = time.perf_counter() - t0
        finally:
            con.close()
        truncated = table.num_rows > self.max_rows
        table = table.slice(0, self.max_rows)
        rows = [list(r) for r in zip(*texts, strict=True)][: self.max_rows] if texts else []
        result = SqlResult(table.column_names, types, rows, truncated, seconds)
        result.trace_columns = [i for i, name in enumerate(table.column_names) if _holds_trace_ids(name, i, rows)]
        result.chart = quick_chart(table)
        return result

    def run_saved(self, name: str, params: Mapping[str, str]) -> tuple[saved_queries.SavedQuery, SqlResult]:
        saved = saved_queries.load_saved(name)
        sql, bound = saved_queries.render(saved, {k: v for k, v in params.items() if v != ""})
        return saved, self.run(sql, bound)


def _holds_trace_ids(name: str, i: int, rows: list[list[str | None]]) -> bool:
    """A `trace_id` column, or one whose values all look like trace ids (32 lowercase hex)."""
    if name == "trace_id":
        return True
    values = [v for r in rows[:50] if (v := r[i]) is not None]
    return bool(values) and all(TRACE_ID.match(v) for v in values)


def _as_text(con: duckdb.DuckDBPyConnection, table: pa.Table) -> list[list[str | None]]:
    """Each column as DuckDB's text (timestamps as UTC ISO, lists and maps readable), like `tracelake query`."""
    if table.num_columns == 0:
        return []
    cols = ", ".join(f'CAST("{c.replace(chr(34), chr(34) * 2)}" AS VARCHAR)' for c in table.column_names)
    rel = con.from_arrow(table).set_alias("result").query("result", f"SELECT {cols} FROM result")
    assert rel is not None  # None only for statements without a result, never for a SELECT
    return [col.to_pylist() for col in rel.to_arrow_table().columns]


def _number(v: object) -> float | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.timestamp()
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day).timestamp()
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def quick_chart(table: pa.Table, max_points: int = 2000) -> dict[str, object] | None:
    """The first column as x (time, number or category) and every other numeric column as a series."""
    if table.num_columns < 2 or table.num_rows == 0:
        return None
    x_type = table.schema.field(0).type
    ys = [
        i
        for i in range(1, table.num_columns)
        if pa.types.is_integer(table.schema.field(i).type)
        or pa.types.is_floating(table.schema.field(i).type)
        or pa.types.is_decimal(table.schema.field(i).type)
    ]
    if not ys:
        return None
    table = table.slice(0, max_points)
    xs = table.column(0).to_pylist()
    x: list[float | None] | list[str | None]
    if pa.types.is_temporal(x_type):
        x_kind, x = "time", [_number(v) for v in xs]
    elif pa.types.is_integer(x_type) or pa.types.is_floating(x_type) or pa.types.is_decimal(x_type):
        x_kind, x = "number", [_number(v) for v in xs]
    else:
        x_kind, x = "category", [None if v is None else str(v) for v in xs]
    series = {table.column_names[i]: [_number(v) for v in table.column(i).to_pylist()] for i in ys}
    return {"x_kind": x_kind, "x_name": table.column_names[0], "x": x, "series": series}
