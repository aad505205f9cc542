"""The lake's tables (docs/design.md, contract 2) as Arrow schemas.

Every component that produces or reads rows imports these; nothing else defines a column.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("ns", tz="UTC")
STR_MAP = pa.map_(pa.string(), pa.string())

EVENT = pa.struct([("time", TS), ("name", pa.string()), ("attributes", STR_MAP)])
LINK = pa.struct([("trace_id", pa.string()), ("span_id", pa.string()), ("attributes", STR_MAP)])
ARTIFACT = pa.struct([("key", pa.string()), ("ref", pa.string()), ("bytes", pa.int64()), ("preview", pa.string())])
# A span that repeats an LLM call another span of the trace describes (pipeline/duplicate_calls.py).
DUPLICATE = pa.struct([("span_id", pa.string()), ("duplicate_of", pa.string())])

TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
# The values of the `kind` and `status_code` columns: OTLP's enums by their OTel names, in enum order.
SPAN_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")
SPAN_TYPES = ("llm", "embedding", "retrieval", "rerank", "tool", "agent", "chain", "guardrail", "other")
COST_STATUSES = ("priced", "unknown_model", "no_usage")

SPANS = pa.schema(
    [
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("parent_span_id", pa.string()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("status_code", pa.string()),
        ("status_message", pa.string()),
        ("start_time", TS),
        ("end_time", TS),
        ("duration_ms", pa.float64()),
        ("service_name", pa.string()),
        ("scope_name", pa.string()),
        ("span_type", pa.string()),
        ("provider", pa.string()),
        ("request_model", pa.string()),
        ("response_model", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cache_read_tokens", pa.int64()),
        ("cache_write_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("cost_status", pa.string()),
        ("finish_reason", pa.string()),
        ("tool_name", pa.string()),
        # span id of the span counted for the same LLM call, when this span repeats it (two instrumentations)
        ("duplicate_of", pa.string()),
        ("session_id", pa.string()),
        ("user_id", pa.string()),
        ("tenant_id", pa.string()),
        ("prompt_version", pa.string()),
        ("attributes", STR_MAP),
        ("resource_attributes", STR_MAP),
        ("events", pa.list_(EVENT)),
        ("links", pa.list_(LINK)),
        ("pii_found", pa.map_(pa.string(), pa.int32())),
        ("artifacts", pa.list_(ARTIFACT)),
        ("lake_source", pa.string()),
    ]
)

TRACES = pa.schema(
    [
        ("trace_id", pa.string()),
        # One trace may be summarised in several parts (late spans); the view merges them.
        # part_id identifies a part so that a replayed part is not counted twice.
        ("part_id", pa.string()),
        ("root_name", pa.string()),
        ("service_name", pa.string()),
        ("start_time", TS),
        ("end_time", TS),
        ("duration_ms", pa.float64()),
        ("span_count", pa.int64()),
        ("error_count", pa.int64()),
        ("llm_count", pa.int64()),
        ("tool_count", pa.int64()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cache_read_tokens", pa.int64()),
        ("cache_write_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("unpriced_calls", pa.int64()),
        # the trace's spans that repeat a call another span describes: left out of the counts above
        ("duplicate_spans", pa.list_(DUPLICATE)),
        ("models", pa.list_(pa.string())),
        ("session_id", pa.string()),
        ("user_id", pa.string()),
        ("tenant_id", pa.string()),
        ("prompt_versions", pa.list_(pa.string())),
        ("feedback_min", pa.float64()),
        ("kept", pa.bool_()),
        ("keep_reasons", pa.list_(pa.string())),
        ("lake_source", pa.string()),
    ]
)

FEEDBACK = pa.schema(
    [
        ("time", TS),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("name", pa.string()),
        ("value", pa.float64()),
        ("comment", pa.string()),
        ("source", pa.string()),
        # the tenant of whoever gave the feedback (the token's, with authentication); it counts only
        # toward a trace of the same tenant
        ("tenant_id", pa.string()),
        ("lake_source", pa.string()),
    ]
)

# "holdback": spans of traces that tail sampling dropped, kept for the late-feedback window in
# <lake>/_holdback/ (not read by the views) so that a late thumbs-down can still promote them.
TABLES: dict[str, pa.Schema] = {"spans": SPANS, "traces": TRACES, "feedback": FEEDBACK, "holdback": SPANS}
TABLE_DIRS = {"spans": "spans", "traces": "traces", "feedback": "feedback", "holdback": "_holdback"}

# The column each table's hive partition (dt=YYYY-MM-DD/hour=HH, UTC) is taken from.
PARTITION_TIME_COLUMN = {"spans": "start_time", "traces": "start_time", "feedback": "time", "holdback": "start_time"}


def empty(table: str) -> pa.Table:
    return TABLES[table].empty_table()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Order/cast columns to `schema`, adding missing ones as nulls (processors may add columns late)."""
    n = table.num_rows
    cols = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if col.type != field.type:
                col = col.cast(field.type)
            cols.append(col)
        else:
            cols.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(cols, schema=schema)
