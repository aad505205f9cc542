"""DuckDB over the lake: views `spans`, `traces`, `feedback` as DESIGN.md contract 2 describes.

Views read every partition with hive partitioning (`dt`, `hour` columns) and `union_by_name`
(old partitions written before a column existed still read). Replays may have written a row
twice; the views keep one row per identity. `traces` merges the parts of a trace written at
different times into one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline import schema
from pipeline.maintenance.replaced import table_files


def _source(con: duckdb.DuckDBPyConnection, lake: Path, table: str) -> str:
    """A FROM clause for the table's raw rows; an empty typed relation when nothing is written yet.

    The files are listed now, once: the connection reads the lake as it is when it is opened (open a
    new one to see newer files). Files that compaction replaced are left out of the listing, and the
    listed ones stay on disk for `compaction.grace`, so a query never fails for a file compaction
    removed and never reads a row twice (pipeline/maintenance/replaced.py)."""
    files = table_files(lake, table)
    if files:
        paths = ", ".join("'" + str(p).replace("'", "''") + "'" for p in files)
        return (
            f"read_parquet([{paths}], hive_partitioning=true, union_by_name=true,"
            " hive_types={'dt': DATE, 'hour': INTEGER})"
        )
    empty = schema.empty(table)
    empty = empty.append_column("dt", pa.array([], pa.date32())).append_column("hour", pa.array([], pa.int64()))
    name = f"_empty_{table}"
    con.register(name, empty)
    return name


SPANS_VIEW = """
CREATE OR REPLACE VIEW spans AS
SELECT * FROM {src}
QUALIFY row_number() OVER (PARTITION BY trace_id, span_id ORDER BY lake_source) = 1
"""

FEEDBACK_VIEW = """
CREATE OR REPLACE VIEW feedback AS
SELECT * FROM {src}
QUALIFY row_number() OVER (
  PARTITION BY trace_id, span_id, name, "time", source ORDER BY lake_source) = 1
"""

# Parts of one trace (late spans) are merged; a replayed part (same part_id) counts once.
TRACES_VIEW = """
CREATE OR REPLACE VIEW traces AS
WITH parts AS (
  SELECT * FROM {src}
  QUALIFY row_number() OVER (PARTITION BY trace_id, part_id ORDER BY lake_source) = 1
)
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
  list_sort(list_distinct(flatten(list(models)))) AS models,
  any_value(session_id) FILTER (WHERE session_id IS NOT NULL) AS session_id,
  any_value(user_id) FILTER (WHERE user_id IS NOT NULL) AS user_id,
  any_value(tenant_id) FILTER (WHERE tenant_id IS NOT NULL) AS tenant_id,
  list_sort(list_distinct(flatten(list(prompt_versions)))) AS prompt_versions,
  min(feedback_min) AS feedback_min,
  bool_or(kept) AS kept,
  list_sort(list_distinct(flatten(list(keep_reasons)))) AS keep_reasons,
  count(*) AS parts,
  min(dt) AS dt,
  min(hour) AS hour
FROM parts
GROUP BY trace_id
"""


def connect(
    lake: str | Path, database: str = ":memory:", artifact_stores: Sequence[str] | None = None
) -> duckdb.DuckDBPyConnection:
    """Views `spans`, `traces`, `feedback` over the lake; `artifact(ref)` reads offloaded values back
    from `artifact_stores` (default `<lake>/_artifacts`)."""
    from sinks.artifacts.sql import register_artifact_function

    lake = Path(lake)
    con = duckdb.connect(database)
    con.execute("SET TimeZone = 'UTC'")
    con.execute(SPANS_VIEW.format(src=_source(con, lake, "spans")))
    con.execute(TRACES_VIEW.format(src=_source(con, lake, "traces")))
    con.execute(FEEDBACK_VIEW.format(src=_source(con, lake, "feedback")))
    register_artifact_function(con, list(artifact_stores or [str(lake / "_artifacts")]))
    return con
