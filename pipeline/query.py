"""DuckDB over the lake: views `spans`, `traces`, `feedback` as docs/design.md contract 2 describes.

Views read every partition with hive partitioning (`dt`, `hour` columns) and `union_by_name`
(old partitions written before a column existed still read). Replays may have written a row
twice; the views keep one row per identity. `traces` merges the parts of a trace written at
different times into one row; `spans.duplicate_of` also takes what the trace summaries decided.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from core import schema
from sinks.artifacts.store import ArtifactStore
from sinks.parquet import layout, object_store, trace_index


def table_source(
    con: duckdb.DuckDBPyConnection, lake: Path | layout.Lake, table: str, files: Sequence[str | Path] | None = None
) -> str:
    """A FROM clause for the table's raw rows (replays included, `dt`/`hour` columns): every live file of the
    table, or only `files`. Unioned by name with an empty relation of the current schema, so every column
    exists even when only files written before it was added are there (or none at all).

    The files are listed now, once: the connection reads the lake as it is when it is opened (open a
    new one to see newer files). Files that compaction replaced are left out of the listing, and the
    listed ones stay on disk for `compaction.grace`, so a query never fails for a file compaction
    removed and never reads a row twice (sinks/parquet/layout.py, "Replaced files")."""
    empty = schema.empty(table)
    empty = empty.append_column("dt", pa.array([], pa.date32())).append_column("hour", pa.array([], pa.int32()))
    name = f"_empty_{table}"
    con.register(name, empty)
    if files is None:
        files = layout.lake_files(layout.open_lake(lake), table)
    if not files:
        return name
    paths = "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"
    hive_types = ", ".join(f"'{k}': {v}" for k, v in layout.HIVE_TYPES.items())
    return (
        f"(SELECT * FROM read_parquet({paths}, hive_partitioning=true, union_by_name=true,"
        f" hive_types={{{hive_types}}}) UNION ALL BY NAME SELECT * FROM {name})"
    )


# One row per identity: a replay may have written a row twice (identical but for lake_source, so a row
# filter may go before this clause, as the UI does with partition and trace-id filters, and the result
# is what filtering the view gives). Compacted files hold one row per identity already.
DEDUP = {table: layout.dedup_clause(table) for table in ("spans", "traces", "feedback")}


# duplicate_of: as written, or as the trace's summary decided it (a span written before the span it
# duplicates arrived is listed in traces.duplicate_spans; the summary sees the whole trace). `{rows}`: spans,
# one per identity; `{traces_src}`: summary parts of (at least) the same traces.
SPANS_DECIDED = """
WITH decided AS (
  SELECT trace_id, d.span_id AS span_id, min(d.duplicate_of) AS duplicate_of
  FROM (SELECT trace_id, unnest(duplicate_spans) AS d FROM {traces_src} WHERE len(duplicate_spans) > 0)
  GROUP BY ALL
)
SELECT rows.* REPLACE (coalesce(decided.duplicate_of, rows.duplicate_of) AS duplicate_of)
FROM {rows} AS rows LEFT JOIN decided ON rows.trace_id = decided.trace_id AND rows.span_id = decided.span_id
"""
SPANS_VIEW = "CREATE OR REPLACE VIEW spans AS" + SPANS_DECIDED.replace(
    "{rows}", "(SELECT * FROM {src} {only_tenant}\n" + DEDUP["spans"] + ")"
)

# Feedback with a tenant counts only toward a trace of that tenant (its owner: the trace's `tenant_id`, the
# tenant of its spans), so one tenant's token cannot rate another tenant's traces; feedback without a tenant
# (no authentication) counts toward any trace. `{rows}`: feedback rows; `{traces_src}`: summary parts of (at
# least) the same traces; `{and_owner}`: "" or a further condition on `owners.owner`.
FEEDBACK_OWNED = """
WITH owners AS (
  SELECT trace_id, any_value(tenant_id) AS owner FROM {traces_src} WHERE tenant_id IS NOT NULL GROUP BY trace_id
)
SELECT rows.* FROM {rows} AS rows LEFT JOIN owners USING (trace_id)
WHERE (rows.tenant_id IS NULL OR rows.tenant_id = owners.owner) {and_owner}
"""
FEEDBACK_VIEW = "CREATE OR REPLACE VIEW feedback AS" + FEEDBACK_OWNED.replace(
    "{rows}", "(SELECT * FROM {src}\n" + DEDUP["feedback"] + ")"
)

# Parts of one trace (late spans, late feedback) merged into one row; `{parts}` holds one row per part.
# feedback_min is the lowest `value` of `{feedback}` rows (replays may repeat) the trace's tenant may give,
# as FEEDBACK_OWNED decides it, rather than the parts' own feedback_min: a part the worker wrote for
# feedback on a trace it no longer remembered may hold another tenant's rating.
TRACES_MERGE = """
SELECT merged.* REPLACE (
  least(rated.anonymous, list_min([r.value FOR r IN rated.by_tenant IF r.tenant = merged.tenant_id])) AS feedback_min
)
FROM (
SELECT
  trace_id,
  any_value(root_name) FILTER (WHERE root_name IS NOT NULL) AS root_name,
  any_value(service_name) FILTER (WHERE service_name IS NOT NULL) AS service_name,
  min(start_time) AS start_time,
  max(end_time) AS end_time,
  date_diff('microsecond', min(start_time), max(end_time)) / 1000.0 AS duration_ms,
  sum(span_count)::BIGINT AS span_count,
  sum(error_count)::BIGINT AS error_count,
  sum(llm_count)::BIGINT AS llm_count,
  sum(tool_count)::BIGINT AS tool_count,
  sum(input_tokens)::BIGINT AS input_tokens,
  sum(output_tokens)::BIGINT AS output_tokens,
  sum(cache_read_tokens)::BIGINT AS cache_read_tokens,
  sum(cache_write_tokens)::BIGINT AS cache_write_tokens,
  sum(reasoning_tokens)::BIGINT AS reasoning_tokens,
  sum(cost_usd) AS cost_usd,
  sum(unpriced_calls)::BIGINT AS unpriced_calls,
  list_sort(list_distinct(flatten(list(duplicate_spans)))) AS duplicate_spans,
  list_sort(list_distinct(flatten(list(models)))) AS models,
  any_value(session_id) FILTER (WHERE session_id IS NOT NULL) AS session_id,
  any_value(user_id) FILTER (WHERE user_id IS NOT NULL) AS user_id,
  any_value(tenant_id) FILTER (WHERE tenant_id IS NOT NULL) AS tenant_id,
  list_sort(list_distinct(flatten(list(prompt_versions)))) AS prompt_versions,
  NULL::DOUBLE AS feedback_min,
  bool_or(kept) AS kept,
  list_sort(list_distinct(flatten(list(keep_reasons)))) AS keep_reasons,
  count(*) AS parts,
  min(dt) AS dt,
  min(hour) AS hour
FROM {parts} AS parts
GROUP BY trace_id
) AS merged LEFT JOIN (
  SELECT trace_id, min(value) FILTER (WHERE tenant_id IS NULL) AS anonymous,
    list(struct_pack(tenant := tenant_id, value := value)) FILTER (WHERE tenant_id IS NOT NULL) AS by_tenant
  FROM {feedback} GROUP BY trace_id
) AS rated ON rated.trace_id = merged.trace_id
"""
# `{only_tenant}`: "" or a condition on the merged row (a trace's tenant is its spans', so that a part without
# one, e.g. late feedback, still belongs to the trace)
TRACES_VIEW = (
    "CREATE OR REPLACE VIEW traces AS SELECT * FROM ("
    + TRACES_MERGE.replace("{parts}", "(SELECT * FROM {src}\n" + DEDUP["traces"] + ")")
    + ") AS merged {only_tenant}"
)


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def connect(
    lake: str | Path | layout.Lake,
    database: str = ":memory:",
    artifact_stores: Sequence[str | ArtifactStore] | None = None,
    tenant: str | None = None,
    files: Mapping[str, Sequence[str]] | None = None,
    between: tuple[float | None, float | None] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Views `spans`, `traces`, `feedback` over the lake (a directory or `s3://…`, sinks/parquet/object_store.py);
    `artifact(ref)` reads offloaded values back from `artifact_stores` (default `<lake>/_artifacts`). `tenant`:
    the views show only that tenant's spans, trace summaries and the feedback on its traces (a view restriction for
    people and tools that use the views, not a wall: the same session can read_parquet() any file).

    `files`: per table, the only files its view reads (as `table_source` takes them; a table not named reads every
    live file). A view binds every file it reads (`union_by_name` opens each footer), so a caller that knows which
    hours can matter — a time range, one trace's hours — names them here instead of having DuckDB open the lake.

    `between`: (since_s, until_s), unix seconds, either end None: each view reads only the rows whose time
    (`layout.PARTITION_TIME_COLUMN`: spans and trace parts their start_time, feedback its time) lies in
    [since_s, until_s), from the files of the hours that overlap it (`files_between`; `files` still wins for a
    table it names). A trace whose parts straddle the range is summarised from its parts in range."""
    from sinks.artifacts.sql import register_artifact_function

    lake = layout.open_lake(lake)
    con = duckdb.connect(database)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET parquet_metadata_cache = true")  # views bound again (connect_trace) read no footer twice
    if lake.fs is not None:
        object_store.register(con, lake.fs)
    _bind_views(con, lake, tenant, files, between)
    register_artifact_function(con, list(artifact_stores or [ArtifactStore(lake.artifact_store, filesystem=lake.fs)]))
    return con


def _bind_views(
    con: duckdb.DuckDBPyConnection,
    lake: layout.Lake,
    tenant: str | None = None,
    files: Mapping[str, Sequence[str]] | None = None,
    between: tuple[float | None, float | None] | None = None,
) -> None:
    """(Re)create `connect`'s views on `con`."""
    only = f"WHERE tenant_id = {sql_literal(tenant)}" if tenant is not None else ""
    and_owner = f"AND owners.owner = {sql_literal(tenant)}" if tenant is not None else ""
    if between is not None:
        files = {**files_between(lake, *between), **(files or {})}
    files = files or {}
    traces, feedback, spans = (
        rows_between(table_source(con, lake, table, files.get(table)), table, between)
        for table in ("traces", "feedback", "spans")
    )
    con.execute(SPANS_VIEW.format(src=spans, traces_src=traces, only_tenant=only))
    con.execute(TRACES_VIEW.format(src=traces, feedback=feedback, only_tenant=only))
    con.execute(FEEDBACK_VIEW.format(src=feedback, traces_src=traces, and_owner=and_owner))


def connect_trace(
    lake: str | Path | layout.Lake,
    trace_id: str,
    artifact_stores: Sequence[str | ArtifactStore] | None = None,
    tenant: str | None = None,
    between: tuple[float | None, float | None] | None = None,
) -> duckdb.DuckDBPyConnection:
    """`connect` for looking at one trace (`tracelake trace`): the views hold that trace whole, and open only
    the files that may hold it. The trace-id index (sinks/parquet/trace_index.py) names its `traces` and
    `feedback` files; its spans started between the trace's start and end, so only those hours of `spans` are
    listed and opened. A trace with no summary yet is looked for in the hours the index does not cover.
    `between` (since_s, until_s): only the hours overlapping that range are looked at (fewer day indexes read)."""
    lake = layout.open_lake(lake)
    trace_id = trace_id.strip().lower()
    since_s, until_s = between or (None, None)
    found = trace_index.candidate_files(lake, [trace_id], since_s, until_s)
    con = connect(lake, artifact_stores=artifact_stores, tenant=tenant, files={**found.files, "spans": []})
    lo, hi = con.execute(
        "SELECT epoch_ns(min(start_time)) / 1e9, epoch_ns(max(coalesce(end_time, start_time))) / 1e9"
        " FROM traces WHERE trace_id = ?",
        [trace_id],
    ).fetchall()[0]
    if lo is None:  # not summarised yet
        lo, hi = found.unindexed_since_s, None
    else:
        hi += 1e-6  # the hour the trace ends in
    if since_s is not None:
        lo = since_s if lo is None else max(lo, since_s)
    if until_s is not None:
        hi = until_s if hi is None else min(hi, until_s)
    _bind_views(con, lake, tenant, {**found.files, "spans": layout.lake_files(lake, "spans", lo, hi)})
    return con


def files_between(lake: str | Path | layout.Lake, since_s: float | None, until_s: float | None) -> dict[str, list[str]]:
    """The live files of the hours overlapping [since_s, until_s) of each table the views read, for `connect`'s
    `files`. On object storage each table costs one listing of its `dt=` names and one per day in range
    (`layout.hour_partitions`): the rest of the lake is neither listed nor opened."""
    lake = layout.open_lake(lake)
    return {table: layout.lake_files(lake, table, since_s, until_s) for table in ("spans", "traces", "feedback")}


def rows_between(src: str, table: str, between: tuple[float | None, float | None] | None) -> str:
    """`src` (a FROM clause of the table's raw rows) keeping the rows whose partition time lies in [since, until):
    the hours at either end of a range hold rows outside it. Also lets DuckDB skip row groups by their min/max."""
    if between is None or between == (None, None):
        return src
    column = layout.sql_ident(schema.PARTITION_TIME_COLUMN[table])
    since_s, until_s = between
    bounds = [
        f"{column} {op} make_timestamp_ns({round(s * 1e9)})::TIMESTAMPTZ_NS"
        for op, s in ((">=", since_s), ("<", until_s))
        if s is not None
    ]
    return f"(SELECT * FROM {src} WHERE {' AND '.join(bounds)})"
