"""`tracelake query` results as a table, CSV, a JSON array or JSON lines.

Every value is rendered by DuckDB (timestamps stay UTC ISO text, nested values readable), never by
Python's tz objects. The table is for reading and copying: trace/span ids (any `*_id` column, any
hex id) and `artifact:sha256:` references are never cut. When the table is wider than the terminal,
long values are shortened first, then whole columns are left out, and the table says which.
`--wide` shows every column and every value in full; csv/json/ndjson never shorten anything.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

import duckdb

from pipeline.terminal_text import cells, clean, fit, uncuttable

FORMATS = ("table", "csv", "json", "ndjson")
TABLE_ROWS = 100  # rows a table shows without --max-rows
CELL = 40  # cells a value that is not an id may take in a table (unless --wide)
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "UBIGINT", "UINTEGER")


def _text_rows(rel: duckdb.DuckDBPyRelation, limit: int | None) -> Iterator[list[str | None]]:
    """Rows with every value as DuckDB renders it (NULL stays None)."""
    rel = rel.set_alias("result")
    cols = ", ".join(f'CAST("{c.replace(chr(34), chr(34) * 2)}" AS VARCHAR)' for c in rel.columns)
    text = rel.query("result", f"SELECT {cols} FROM result" + (f" LIMIT {int(limit)}" if limit is not None else ""))
    assert text is not None  # None only for statements without a result, never for a SELECT
    for batch in text.to_arrow_reader(8192):
        yield from (list(r) for r in zip(*(col.to_pylist() for col in batch.columns), strict=True))


def _json_lines(rel: duckdb.DuckDBPyRelation, limit: int | None) -> Iterator[str]:
    rel = rel.set_alias("result")
    sql = "SELECT CAST(to_json(result) AS VARCHAR) FROM result" + (f" LIMIT {int(limit)}" if limit is not None else "")
    out = rel.query("result", sql)
    assert out is not None  # None only for statements without a result, never for a SELECT
    for batch in out.to_arrow_reader(8192):
        yield from batch.column(0).to_pylist()


@dataclass
class _Column:
    name: str
    values: list[str]
    right: bool  # numbers align right
    keep: bool  # ids and references: never cut, never left out

    @property
    def natural(self) -> int:
        return max([cells(self.name), *(cells(v) for v in self.values)])


def _columns(names: list[str], types: list[str], rows: list[list[str | None]]) -> list[_Column]:
    out = []
    for i, (name, typ) in enumerate(zip(names, types, strict=True)):
        values = ["NULL" if r[i] is None else clean(r[i]) for r in rows]
        keep = name.lower().endswith(("_id", "ref", "refs")) or any(uncuttable(v) for v in values)
        out.append(_Column(name, values, str(typ).split("(")[0] in _NUMERIC, keep))
    return out


def _layout(columns: list[_Column], width: int | None, wide: bool) -> tuple[list[_Column], list[int], list[str]]:
    """(shown columns, their widths, names left out) for a table of at most `width` cells."""
    full = [c.natural if wide or c.keep else min(c.natural, max(CELL, cells(c.name))) for c in columns]
    widths = list(full)
    shown = list(range(len(columns)))

    def total() -> int:
        return sum(widths[i] for i in shown) + 3 * len(shown) + 1

    if wide or width is None:
        return columns, widths, []
    for i in shown:  # shorten long values down to their header (at least 12 cells) before leaving any out
        if total() <= width:
            break
        if not columns[i].keep:
            widths[i] = max(min(widths[i], 12), cells(columns[i].name), widths[i] - (total() - width))
    dropped: list[int] = []
    for i in reversed(range(len(columns))):
        if total() <= width or len(shown) == 1:
            break
        if not columns[i].keep:
            shown.remove(i)
            dropped.append(i)
    for i in shown:  # what leaving columns out freed goes back to the values shortened above
        widths[i] = min(full[i], widths[i] + max(width - total(), 0))
    return [columns[i] for i in shown], [widths[i] for i in shown], [columns[i].name for i in sorted(dropped)]


def _cell(text: str, w: int, right: bool) -> str:
    text = text if cells(text) <= w else fit(text, w)
    gap = " " * (w - cells(text))
    return gap + text if right else text + gap


def print_table(
    rel: duckdb.DuckDBPyRelation, max_rows: int | None, width: int | None, wide: bool, out: TextIO = sys.stdout
) -> None:
    limit = TABLE_ROWS if max_rows is None else max_rows
    rows = list(_text_rows(rel, limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    columns, widths, dropped = _layout(_columns(rel.columns, [str(t) for t in rel.types], rows), width, wide)

    def rule(left: str, mid: str, right: str) -> str:
        return left + mid.join("─" * (w + 2) for w in widths) + right

    lines = [rule("┌", "┬", "┐")]
    lines.append("│" + "│".join(f" {_cell(c.name, w, False)} " for c, w in zip(columns, widths, strict=True)) + "│")
    lines.append(rule("├", "┼", "┤"))
    for r in range(len(rows)):
        cols = zip(columns, widths, strict=True)
        lines.append("│" + "│".join(f" {_cell(c.values[r], w, c.right)} " for c, w in cols) + "│")
    lines.append(rule("└", "┴", "┘"))
    n = f"{len(rows)}{'+' if more else ''} rows"
    if more:
        n += f" ({len(rows)} shown: --max-rows N for more, --format csv/json/ndjson for all)"
    lines.append(n)
    if dropped:
        lines.append(f"columns left out to fit {width} columns: {', '.join(dropped)} (--wide shows every column)")
    out.write("\n".join(lines) + "\n")


def print_relation(
    rel: duckdb.DuckDBPyRelation,
    fmt: str,
    max_rows: int | None = None,
    width: int | None = None,
    wide: bool = False,
    out: TextIO = sys.stdout,
) -> None:
    if fmt == "table":
        print_table(rel, max_rows, width, wide, out)
    elif fmt == "ndjson":
        for line in _json_lines(rel, max_rows):
            out.write(line + "\n")
    elif fmt == "json":  # one JSON array, streamed
        out.write("[")
        for i, line in enumerate(_json_lines(rel, max_rows)):
            out.write(("\n" if i == 0 else ",\n") + line)
        out.write("\n]\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(rel.columns)
        writer.writerows(_text_rows(rel, max_rows))
    else:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
