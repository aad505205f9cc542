"""Saved investigations: documented SQL files that `tracelake query --saved NAME` runs.

Each file in conf/queries/ is plain DuckDB SQL over the views `spans`, `traces`, `feedback`, so a
user can copy one, edit it and run the copy (`--saved ./mine.sql`, or put it in a directory listed
in $TRACELAKE_QUERIES). The leading `--` comment block is its documentation: the first line is the
one-line description, and each parameter is declared on a line of its own:

    -- param: since INTERVAL = 7 days -- how far back to look
    -- param: tenant VARCHAR = null -- only this tenant (null: all)
    -- param: trace_id VARCHAR -- required: no default

The SQL refers to parameters as `$since`. `--param since=24h` values are converted to the declared
type (VARCHAR, INTEGER, DOUBLE, BOOLEAN, INTERVAL, TIMESTAMP) and bound as DuckDB prepared
parameters, never pasted into the text, so a value cannot change the query. Parameters are values
only: an identifier (a column to group by) cannot be a parameter — copy the file instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "conf" / "queries"
ENV_DIRS = "TRACELAKE_QUERIES"
TYPES = ("VARCHAR", "INTEGER", "DOUBLE", "BOOLEAN", "INTERVAL", "TIMESTAMP")

_PARAM = re.compile(
    r"^--\s*param:\s*(?P<name>[A-Za-z_]\w*)\s+(?P<type>[A-Za-z]+)"
    r"(?:\s*=\s*(?P<default>.*?))?(?:\s+--\s*(?P<doc>.*))?\s*$"
)
_REF = re.compile(r"\$([A-Za-z_]\w*)")
_STRINGS_AND_COMMENTS = re.compile(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", re.S)
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class SavedQueryError(ValueError):
    pass


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: str | None  # the text after `=`; None when the parameter is required
    required: bool
    description: str = ""


@dataclass(frozen=True)
class SavedQuery:
    name: str
    description: str  # the first line of the comment block
    params: tuple[Param, ...]
    sql: str  # the whole file, comments included (DuckDB ignores them)
    path: Path
    doc: str = ""  # the whole comment block without the `-- ` prefixes

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


def search_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    """Where names are looked up, first match wins: `extra`, then $TRACELAKE_QUERIES, then conf/queries."""
    env = [Path(p) for p in os.environ.get(ENV_DIRS, "").split(os.pathsep) if p]
    return [*(Path(d) for d in extra), *env, BUILTIN_DIR]


def list_saved(dirs: Iterable[str | Path] = ()) -> list[SavedQuery]:
    """Every saved query in the search path, by name; a name found twice is the first directory's."""
    found: dict[str, SavedQuery] = {}
    for d in search_dirs(dirs):
        for path in sorted(d.glob("*.sql")) if d.is_dir() else []:
            if path.stem not in found:
                found[path.stem] = parse(path.read_text(encoding="utf-8"), path)
    return [found[k] for k in sorted(found)]


def load_saved(name: str, dirs: Iterable[str | Path] = ()) -> SavedQuery:
    """A saved query by name (`top_cost_traces`) or by path to a .sql file (`./my_queries/x.sql`)."""
    if name.endswith(".sql") or os.sep in name or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise SavedQueryError(f"{name}: no such file")
        return parse(path.read_text(encoding="utf-8"), path)
    if not _NAME.match(name):
        raise SavedQueryError(f"{name!r}: not a saved query name")
    for d in search_dirs(dirs):
        path = d / f"{name}.sql"
        if path.is_file():
            return parse(path.read_text(encoding="utf-8"), path)
    known = ", ".join(q.name for q in list_saved(dirs)) or "none"
    raise SavedQueryError(f"no saved query {name!r} (known: {known})")


def parse(text: str, path: Path) -> SavedQuery:
    """Read the documentation block and parameter declarations; check that every `$ref` is declared."""
    doc_lines: list[str] = []
    params: list[Param] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("--"):
            if stripped:
                break
            continue
        m = _PARAM.match(stripped)
        if m:
            ptype = m.group("type").upper()
            if ptype not in TYPES:
                raise SavedQueryError(f"{path}: param {m.group('name')}: type {ptype} is not one of {', '.join(TYPES)}")
            default = m.group("default")
            params.append(Param(m.group("name"), ptype, default, default is None, (m.group("doc") or "").strip()))
        doc_lines.append(stripped[2:].removeprefix(" "))
    if not doc_lines or not doc_lines[0].strip():
        raise SavedQueryError(f"{path}: start the file with a `-- description` comment line")
    declared = {p.name for p in params}
    if len(declared) != len(params):
        raise SavedQueryError(f"{path}: a parameter is declared twice")
    undeclared = sorted(set(referenced(text)) - declared)
    if undeclared:
        raise SavedQueryError(f"{path}: uses {', '.join('$' + u for u in undeclared)} without a `-- param:` line")
    return SavedQuery(path.stem, doc_lines[0].strip(), tuple(params), text, path, "\n".join(doc_lines).strip())


def referenced(sql: str) -> list[str]:
    """The `$name` parameters the SQL uses (outside comments and string literals), in order of first use."""
    out: list[str] = []
    for name in _REF.findall(_STRINGS_AND_COMMENTS.sub(" ", sql)):
        if name not in out:
            out.append(name)
    return out


def render(saved: SavedQuery, params: Mapping[str, str] | None = None) -> tuple[str, dict[str, object]]:
    """(sql, bound parameters) for `con.execute(sql, bound)`: defaults filled, `--param` values typed."""
    params = dict(params or {})
    unknown = sorted(set(params) - {p.name for p in saved.params})
    if unknown:
        have = ", ".join(p.name for p in saved.params) or "none"
        raise SavedQueryError(f"{saved.name}: unknown parameter {', '.join(unknown)} (parameters: {have})")
    used = set(referenced(saved.sql))
    bound: dict[str, object] = {}
    for p in saved.params:
        if p.name not in used:
            continue
        if p.name in params:
            raw: str | None = params[p.name]
        elif p.required:
            raise SavedQueryError(f"{saved.name}: parameter {p.name} is required ({p.description or p.type})")
        else:
            raw = p.default
        bound[p.name] = convert(p, raw)
    return saved.sql, bound


def run(
    con: duckdb.DuckDBPyConnection, saved: SavedQuery, params: Mapping[str, str] | None = None
) -> duckdb.DuckDBPyRelation:
    """The saved query as a relation on `con` (a `pipeline.query.connect` connection)."""
    sql, bound = render(saved, params)
    rel = con.sql(sql, params=bound)
    if rel is None:
        raise SavedQueryError(f"{saved.name}: the file holds no SELECT")
    return rel


def convert(p: Param, raw: str | None) -> object:
    """The Python value DuckDB binds as the declared type; `null` (any case) is SQL NULL."""
    if raw is None or raw.strip().lower() == "null":
        return None
    text = raw.strip()
    try:
        if p.type == "VARCHAR":
            return raw.strip("'") if len(text) >= 2 and text[0] == text[-1] == "'" else raw
        if p.type == "INTEGER":
            return int(text)
        if p.type == "DOUBLE":
            return float(text)
        if p.type == "BOOLEAN":
            if text.lower() in ("true", "yes", "1", "on"):
                return True
            if text.lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError(text)
        if p.type == "INTERVAL":
            row = duckdb.connect().execute("SELECT CAST($v AS INTERVAL)", {"v": text}).fetchone()
            assert row is not None and isinstance(row[0], timedelta)
            return row[0]
        # TIMESTAMP: ISO 8601; without an offset it is UTC, like everything in the lake. Bound as a
        # naive UTC timestamp: the connection's TimeZone is UTC, and tz-aware values need pytz.
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return ts if ts.tzinfo is None else ts.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, duckdb.Error, AssertionError):
        examples = {
            "INTEGER": "20",
            "DOUBLE": "0.5",
            "BOOLEAN": "true",
            "INTERVAL": "24h, 7 days, 30m",
            "TIMESTAMP": "2026-11-01T00:00:00Z",
        }
        raise SavedQueryError(
            f"parameter {p.name}: expected {p.type} (e.g. {examples.get(p.type, 'text')}), got {raw!r}"
        ) from None


def parse_param_args(values: Iterable[str]) -> dict[str, str]:
    """`--param key=value` arguments as a dict; the value may contain `=`."""
    out: dict[str, str] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key.strip():
            raise SavedQueryError(f"--param {v!r}: expected key=value")
        out[key.strip()] = value
    return out
