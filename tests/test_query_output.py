"""`tracelake query` output: tables that never cut ids or references, JSON arrays, JSON lines, CSV."""

from __future__ import annotations

import io
import json

import duckdb

from pipeline.query_output import print_relation

TRACE = "3dcc643e3b7e17ca60e5e8e3a4b2c1d0"
REF = "artifact:sha256:" + "ab" * 32
SQL = f"""
SELECT '{TRACE}' AS trace_id, 'fedcba9876543210' AS span_id, 'chat gpt-4o with a long descriptive name' AS name,
       '{REF}' AS prompt, repeat('x', 300) AS completion, 42 AS tokens, TIMESTAMPTZ '2026-11-01 10:00:00+00' AS start
FROM range(3)
"""


def _out(fmt: str, **kw: object) -> str:
    buf = io.StringIO()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    print_relation(con.sql(SQL), fmt, out=buf, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


def test_narrow_table_keeps_ids_and_refs_whole_and_names_what_it_left_out() -> None:
    text = _out("table", width=190)
    print(text)
    lines = text.splitlines()
    rows = [line for line in lines if line.startswith("│") and TRACE in line]
    assert len(rows) == 3 and all(REF in r and "fedcba9876543210" in r for r in rows)
    assert lines[-2] == "3 rows"
    assert lines[-1] == "columns left out to fit 190 columns: start (--wide shows every column)"
    assert all(len(line) <= 190 for line in lines[:-1])
    assert "completion" in lines[1] and "xxx…" in rows[0]  # a long value is shortened, not dropped first


def test_wide_and_piped_tables() -> None:
    wide = _out("table", width=120, wide=True)
    assert "x" * 300 in wide and "left out" not in wide and "2026-11-01 10:00:00+00" in wide
    piped = _out("table")  # no terminal: no width limit, long values still shortened to stay readable
    assert "left out" not in piped and "start" in piped and "x" * 300 not in piped
    assert "│     42 │" in piped  # numbers align right


def test_json_array_ndjson_csv_and_row_limits() -> None:
    rows = json.loads(_out("json"))
    assert len(rows) == 3 and rows[0]["trace_id"] == TRACE and rows[0]["tokens"] == 42
    assert [json.loads(line)["prompt"] for line in _out("ndjson", max_rows=2).splitlines()] == [REF, REF]
    csv_lines = _out("csv").splitlines()
    assert csv_lines[0] == "trace_id,span_id,name,prompt,completion,tokens,start" and len(csv_lines) == 4
    limited = _out("table", max_rows=2).splitlines()
    assert limited[-1] == "2+ rows (2 shown: --max-rows N for more, --format csv/json/ndjson for all)"
