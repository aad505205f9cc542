"""`tracelake query` (SQL or a saved query over the lake) and `tracelake trace` (one trace, read like a story)."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from datetime import UTC, datetime

from core.command import SubParsers
from pipeline.cli.context import add_lake_options, add_tenant_option, open_lake

_AGO = re.compile(r"^\s*\d+(?:\.\d+)?\s*(?:s|m|h|d)\s*$")  # a duration with its unit, as the config takes them
TIME_FORMS = "a duration back from now (30s, 90m, 2h, 7d) or an ISO-8601 time (2026-12-01, 2026-12-01T10:00, …Z)"


def parse_time(value: str, now_s: float | None = None) -> float:
    """`--since` / `--until` as unix seconds: a duration before `now_s` (default: now) or an ISO-8601 date or time,
    UTC unless it names an offset. A bare number is refused: seconds ago and a unix time would both be guesses."""
    if _AGO.match(value):
        from core.config import parse_duration  # pydantic: not in `tracelake run`'s light import of this package

        return (time.time() if now_s is None else now_s) - parse_duration(value)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {TIME_FORMS}, got {value!r}") from None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


def _table_width(args: argparse.Namespace) -> int | None:
    """--width, else the terminal's; None (no limit) when the output goes to a file or a pipe."""
    if args.width:
        return int(args.width)
    return shutil.get_terminal_size((80, 24)).columns if sys.stdout.isatty() else None


def cmd_query(args: argparse.Namespace) -> int:
    import duckdb

    from pipeline.maintenance import saved_queries
    from pipeline.query_output import print_relation

    if args.list_saved:
        for saved in saved_queries.list_saved():
            params = " ".join(f"{p.name}={'?' if p.required else p.default}" for p in saved.params)
            print(f"{saved.name:<28} {saved.description}" + (f"  [{params}]" if params else ""))
        return 0
    if bool(args.sql) == bool(args.saved):
        print("tracelake query: give either SQL or --saved NAME (see --list-saved)", file=sys.stderr)
        return 2
    between = _time_range(args)
    con = open_lake(args, between)
    try:
        if args.saved:
            saved = saved_queries.load_saved(args.saved)
            rel = saved_queries.run(con, saved, saved_queries.parse_param_args(args.param))
        else:
            if args.param:
                print("tracelake query: --param applies to --saved queries only", file=sys.stderr)
                return 2
            rel = con.sql(args.sql)
        if rel is None:  # a statement without a result (e.g. SET)
            return 0
        print_relation(rel, args.format, args.max_rows, _table_width(args), args.wide)
    except saved_queries.SavedQueryError as e:
        print(f"tracelake query: {e}", file=sys.stderr)
        return 2
    except duckdb.Error as e:
        print(f"query error: {e}", file=sys.stderr)
        return 1
    return 0


def _time_range(args: argparse.Namespace) -> tuple[float | None, float | None] | None:
    """`--since` / `--until` (None when neither is given); exit 2 when the range is empty."""
    if args.since is not None and args.until is not None and args.until <= args.since:
        print(
            f"tracelake {args.command}: --until ({_iso(args.until)}) must be after --since ({_iso(args.since)})",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return (args.since, args.until) if args.since is not None or args.until is not None else None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def cmd_trace(args: argparse.Namespace) -> int:
    from pipeline.trace_view import FULL, SCREEN, load_trace, render_text, trace_document

    con = open_lake(args, _time_range(args), trace_id=args.trace_id)
    trace = load_trace(con, args.trace_id)
    if trace is None:
        print(f"trace {args.trace_id} not found in the lake", file=sys.stderr)
        return 1
    if args.json:
        json.dump(trace_document(trace), sys.stdout, ensure_ascii=False, indent=2)
        print()
        return 0
    width = args.width or shutil.get_terminal_size((80, 24)).columns
    color = sys.stdout.isatty() and not args.no_color
    print(render_text(trace, width, color, FULL if args.full else SCREEN))
    return 0


def _add_time_range(parser: argparse.ArgumentParser, since_help: str, until_help: str) -> None:
    parser.add_argument("--since", type=parse_time, metavar="T", help=since_help)
    parser.add_argument("--until", type=parse_time, metavar="T", help=until_help)


def add_commands(sub: SubParsers) -> None:
    q = sub.add_parser("query", help="SQL over the lake (views: spans, traces, feedback; artifact(ref))")
    add_lake_options(q)
    q.add_argument(
        "--format",
        choices=["table", "csv", "json", "ndjson"],
        default="table",
        help="table (default), csv, json (one array), ndjson (one object per line)",
    )
    q.add_argument("--max-rows", type=int, default=None, help="at most this many rows (table default: 100)")
    q.add_argument("--wide", action="store_true", help="table: every column and every value in full")
    q.add_argument("--width", type=int, default=None, help="table width (default: the terminal's; none in a pipe)")
    q.add_argument("--saved", metavar="NAME", help="run a saved query from conf/queries/ (or a path to a .sql file)")
    q.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a saved query's parameter")
    q.add_argument("--list-saved", action="store_true", help="list the saved queries and their parameters")
    add_tenant_option(q)
    _add_time_range(
        q,
        f"only rows at or after T: {TIME_FORMS}. A row's time is a span's start_time, a trace part's"
        " start_time (a trace whose parts straddle the range is summarised from its parts in range), a feedback"
        " row's time; only the dt=/hour= partitions overlapping the range are listed and read",
        "only rows before T (same forms as --since)",
    )
    q.add_argument("sql", nargs="?")
    q.set_defaults(func=cmd_query)

    t = sub.add_parser(
        "trace", help="show one trace: span tree with timings, models, tokens, cost; messages, tool calls, documents"
    )
    add_lake_options(t)
    t.add_argument("--width", type=int, default=None, help="columns (default: the terminal's, else 80)")
    t.add_argument("--no-color", action="store_true", help="plain text even on a terminal")
    t.add_argument("--full", action="store_true", help="every message, document and line in full (default: a screen)")
    t.add_argument(
        "--json",
        action="store_true",
        help="the whole trace as one JSON document: summary, spans (all columns, conversation), feedback",
    )
    add_tenant_option(t)
    _add_time_range(
        t,
        f"look only in the hour partitions from T on: {TIME_FORMS}. Without it every day's trace-id index is read"
        " (two requests each on S3); parts, spans and feedback of the trace outside the range are not shown",
        "look only in the hour partitions before T (same forms as --since)",
    )
    t.add_argument("trace_id")
    t.set_defaults(func=cmd_trace)
