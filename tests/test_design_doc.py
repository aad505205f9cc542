"""docs/design.md stays the lake's contract: every column of every table in core/schema.py is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from core import schema

DOC = Path(__file__).resolve().parent.parent / "docs" / "design.md"


def _sections() -> dict[str, str]:
    """The text under each `### ` heading."""
    parts = re.split(r"^### (.+)$", DOC.read_text(), flags=re.M)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def _column_rows(text: str) -> dict[str, str]:
    """First cell (a `column` name) → the whole row, for each row of the section's column table."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\| `([a-z_]+)` \|(.*)\|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def _nested_names(t: pa.DataType) -> list[str]:
    if pa.types.is_list(t):
        return _nested_names(t.value_type)
    if pa.types.is_struct(t):
        return [t.field(i).name for i in range(t.num_fields)]
    return []


def test_every_column_of_every_table_is_documented() -> None:
    sections = _sections()
    for table, table_schema in schema.TABLES.items():
        directory = schema.TABLE_DIRS[table]
        title = next((t for t in sections if t.startswith(f"`{directory}")), None)
        assert title is not None, f"docs/design.md has no section for the {table} table ({directory}/)"
        body = sections[title]
        if table_schema is schema.SPANS and table != "spans":
            assert "exactly the columns\nof `spans`" in body or "exactly the columns of `spans`" in body, table
            continue
        rows = _column_rows(body)
        assert list(rows) == table_schema.names, (
            f"{table}: documented {list(rows)} but core/schema.py has {table_schema.names}"
        )
        for field in table_schema:
            for name in _nested_names(field.type):  # struct fields (events, links, artifacts) too
                assert re.search(rf"\b{name}\b", rows[field.name]), f"{table}.{field.name}: field {name}"


def test_the_docs_cite_the_project_copy() -> None:
    repo = DOC.parent.parent
    stale = [
        str(p.relative_to(repo))
        for p in [repo / "README.md", *repo.glob("pipeline/**/*.py"), *repo.glob("processors/**/*")]
        if p.is_file() and p.suffix in (".py", ".md") and "DESIGN.md" in p.read_text()
    ]
    assert stale == []
