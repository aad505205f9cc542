"""The `tracelake` command. One subcommand per thing a user does; each has its own --help."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from core.config import parse_duration
from pipeline.config import Config, ConfigError, default_config, load
from pipeline.config.model import resolve_processes
from pipeline.logs import setup_logging

if TYPE_CHECKING:  # imported where used: `tracelake run` and its worker processes never need DuckDB
    import duckdb

log = logging.getLogger("tracelake")


def _load_or_exit(path: str) -> Config:
    try:
        return load(path)
    except ConfigError as e:
        for issue in e.issues:
            print(f"{e.source}: {issue}", file=sys.stderr)
        raise SystemExit(2) from None


def _config_from(args: argparse.Namespace) -> Config:
    if getattr(args, "config", None):
        return _load_or_exit(args.config)
    return default_config()


def _lake_from(args: argparse.Namespace) -> Path:
    if getattr(args, "lake", None):
        return Path(args.lake)
    return Path(_config_from(args).lake_path)


def _open_lake(args: argparse.Namespace) -> duckdb.DuckDBPyConnection:
    """The lake's views plus `artifact(ref)` over the config's artifact stores; exit 2 when there is no lake."""
    from pipeline.query import connect
    from sinks.artifacts.cli import store_uris

    config = _config_from(args)
    lake = Path(args.lake) if getattr(args, "lake", None) else Path(config.lake_path)
    if not lake.is_dir():
        where = "--lake" if getattr(args, "lake", None) else f"sinks.parquet.path of {config.source}"
        print(
            f"tracelake {args.command}: no lake at {lake} ({where}): the directory does not exist; "
            "nothing has been written there yet, or the path is wrong",
            file=sys.stderr,
        )
        raise SystemExit(2)
    stores = store_uris(config) if not getattr(args, "lake", None) else [str(lake / "_artifacts")]
    return connect(lake, artifact_stores=stores)


# -- commands ---------------------------------------------------------------------------------
def _serve(args: argparse.Namespace, role: str) -> int:
    from pipeline.service import Service, use_server_memory_pool

    use_server_memory_pool()
    config = _load_or_exit(args.config)
    telemetry = config.raw.telemetry
    level, json_lines = args.log_level or telemetry.log_level, args.log_json or telemetry.log_format == "json"
    setup_logging(level, json_lines)
    try:
        service = Service(config, role=role, log_level=level, log_json=json_lines)
    except (OSError, ValueError) as e:
        print(f"tracelake: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # e.g. KafkaException: brokers unreachable at start
        print(f"tracelake: cannot start: {e}", file=sys.stderr)
        return 1
    return service.serve()


def cmd_run(args: argparse.Namespace) -> int:
    return _serve(args, "all")


def cmd_receiver(args: argparse.Namespace) -> int:
    return _serve(args, "receiver")


def cmd_worker(args: argparse.Namespace) -> int:
    return _serve(args, "worker")


def cmd_validate(args: argparse.Namespace) -> int:
    from processors.offload_artifacts.order import order_warnings

    config = _load_or_exit(args.file)
    p = config.pipeline
    for w in [*config.warnings, *order_warnings(p.process, ingest_ids=p.ingest)]:
        print(f"{config.source}: warning: {w}", file=sys.stderr)
    otlp = config.raw.receivers.otlp
    receivers = [
        f"grpc {otlp.grpc.endpoint}" if otlp.grpc else "",
        f"http {otlp.http.endpoint}" if otlp.http else "",
    ]
    processes = config.raw.worker.processes
    workers = f"{processes} ({resolve_processes(processes)} here)" if processes == "auto" else str(processes)
    print(
        f"{config.source}: ok — receivers: {', '.join(r for r in receivers if r) or 'none'}; "
        f"bus: {config.raw.bus.type}; worker processes: {workers}; process: [{', '.join(p.process)}]; "
        f"sinks: [{', '.join(p.sinks)}]"
    )
    return 0


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
    con = _open_lake(args)
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


def cmd_trace(args: argparse.Namespace) -> int:
    from pipeline.trace_view import FULL, SCREEN, load_trace, render_text, trace_document

    con = _open_lake(args)
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


def cmd_prices(args: argparse.Namespace) -> int:
    from datetime import datetime

    from core.processor import processor_type
    from processors.cost.config import CostConfig
    from processors.cost.prices import describe

    cost: CostConfig | None = None
    if args.config:
        config = _load_or_exit(args.config)
        blocks = [spec.config for pid, spec in config.processors.items() if processor_type(pid) == "cost"]
        cost = blocks[0] if blocks and isinstance(blocks[0], CostConfig) else None
    try:
        at = datetime.fromisoformat(args.at.replace("Z", "+00:00")) if args.at else None
    except ValueError:
        print(f"tracelake prices: --at {args.at!r}: expected an ISO 8601 time, e.g. 2026-11-01T12:00Z", file=sys.stderr)
        return 2
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    print(describe(args.model, args.provider, cost, at=at))
    return 0


COMPACT_LOCK_WAIT_S = 120.0


def cmd_compact(args: argparse.Namespace) -> int:
    from pipeline.maintenance import MaintenanceBusy
    from pipeline.maintenance.compact import Compactor

    config = _config_from(args)
    settings = config.raw.compaction
    lake = Path(args.lake) if args.lake else Path(config.lake_path)
    older_than = parse_duration(args.older_than) if args.older_than else settings.older_than
    try:
        compactor = Compactor(
            lake,
            target_file_bytes=settings.target_file_bytes,
            row_group_rows=settings.row_group_rows,
            tables=args.table or ("spans", "traces", "feedback"),
            threads=settings.threads,
            memory_limit=settings.memory_limit,
            grace_s=settings.grace,
            lock_wait_s=COMPACT_LOCK_WAIT_S,  # a background compactor's round is short: wait for it
        )
        report = compactor.run(older_than, dry_run=args.dry_run)
    except MaintenanceBusy as e:
        print(f"tracelake compact: {e}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 1 if report.errors else 0


def cmd_retention(args: argparse.Namespace) -> int:
    from pipeline.maintenance import MaintenanceBusy
    from pipeline.maintenance.retention import apply_retention

    config = _config_from(args)
    lake = Path(args.lake) if args.lake else Path(config.lake_path)
    ages = config.raw.retention.model_dump()
    if args.older_than:
        try:
            age = parse_duration(args.older_than)
        except ValueError as e:
            print(f"tracelake retention: --older-than {args.older_than!r}: {e}", file=sys.stderr)
            return 2
        for table in args.table or list(ages):
            ages[table] = age
    if args.table:  # only these tables
        ages = {t: a for t, a in ages.items() if t in args.table}
    try:
        removed = apply_retention(lake, ages, dry_run=args.dry_run)
    except MaintenanceBusy as e:
        print(f"tracelake retention: {e}", file=sys.stderr)
        return 1
    for r in removed:
        print(r.line(args.dry_run))
    kept = ", ".join(f"{t} {'forever' if a is None else f'{a / 86400:g}d'}" for t, a in ages.items())
    print(f"{len(removed)} partitions {'to remove' if args.dry_run else 'removed'} (ages: {kept})")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from core.processor import processor_type
    from pipeline.maintenance import MaintenanceBusy
    from pipeline.maintenance.forget import forget_user
    from processors.redact_pii.config import RedactPiiConfig
    from processors.redact_pii.hash_key import HashKeyMissing, lookup_tokens, read_hash_key
    from sinks.artifacts.cli import store_uris
    from sinks.artifacts.store import ArtifactStore

    config = _config_from(args)
    lake = Path(args.lake) if args.lake else Path(config.lake_path)
    ids = {args.user_id}  # as stored when no redact_pii hashes it
    for pid, spec in config.processors.items():
        if processor_type(pid) == "redact_pii" and isinstance(spec.config, RedactPiiConfig):
            try:
                ids.update(lookup_tokens(read_hash_key(spec.config), args.user_id))
            except HashKeyMissing as e:
                print(f"tracelake forget: {e}", file=sys.stderr)
                return 2
    try:
        report = forget_user(lake, sorted(ids), [ArtifactStore(u) for u in store_uris(config)], dry_run=args.dry_run)
    except MaintenanceBusy as e:
        print(f"tracelake forget: {e}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import signal
    import threading

    from pipeline.ui import UiSetupError, ui_server

    config = _config_from(args)
    try:
        server = ui_server(config, lake=Path(args.lake) if args.lake else None, endpoint=args.listen)
    except (UiSetupError, OSError) as e:
        print(f"tracelake ui: {e}", file=sys.stderr)
        return 2 if isinstance(e, UiSetupError) else 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(f"tracelake ui: open {server.url} (lake {args.lake or config.lake_path}; Ctrl-C stops)", flush=True)
    stop.wait()
    server.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    sent = run_demo(args.endpoint, traces=args.traces, protocol=args.protocol, seed=args.seed)
    print(f"sent {sent.traces} traces ({sent.spans} spans) to {args.endpoint} over OTLP/{args.protocol}")
    return 0


def _endpoint(value: str) -> str:
    from pipeline.config.model import check_endpoint

    try:
        return check_endpoint(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tracelake",
        description="Stream processor for LLM-application traces: OTLP in, Parquet out, DuckDB on top.",
    )
    p.add_argument("--log-level", default=None, help="debug, info, warning, error (default: the config's, else info)")
    p.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="receivers + worker in one process (embedded or Kafka bus)")
    r.add_argument("--config", required=True, help="YAML config (see conf/tracelake.yaml)")
    r.set_defaults(func=cmd_run)

    rc = sub.add_parser("receiver", help="OTLP receivers publishing to Kafka (scale out behind a load balancer)")
    rc.add_argument("--config", required=True, help="YAML config with bus.type: kafka (see conf/kafka.yaml)")
    rc.set_defaults(func=cmd_receiver)

    wk = sub.add_parser("worker", help="a Kafka consumer-group member: processors and sinks")
    wk.add_argument("--config", required=True, help="YAML config with bus.type: kafka (see conf/kafka.yaml)")
    wk.set_defaults(func=cmd_worker)

    v = sub.add_parser("validate", help="check a config file; prints every error with its key path")
    v.add_argument("file")
    v.set_defaults(func=cmd_validate)

    def lake_args(sp: argparse.ArgumentParser) -> None:
        g = sp.add_mutually_exclusive_group()
        g.add_argument("--lake", help="lake directory (default: the config's parquet sink path, or ./lake)")
        g.add_argument("--config", help="take the lake path from this config's parquet sink")

    q = sub.add_parser("query", help="SQL over the lake (views: spans, traces, feedback; artifact(ref))")
    lake_args(q)
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
    q.add_argument("sql", nargs="?")
    q.set_defaults(func=cmd_query)

    t = sub.add_parser(
        "trace", help="show one trace: span tree with timings, models, tokens, cost; messages, tool calls, documents"
    )
    lake_args(t)
    t.add_argument("--width", type=int, default=None, help="columns (default: the terminal's, else 80)")
    t.add_argument("--no-color", action="store_true", help="plain text even on a terminal")
    t.add_argument("--full", action="store_true", help="every message, document and line in full (default: a screen)")
    t.add_argument(
        "--json",
        action="store_true",
        help="the whole trace as one JSON document: summary, spans (all columns, conversation), feedback",
    )
    t.add_argument("trace_id")
    t.set_defaults(func=cmd_trace)

    pr = sub.add_parser("prices", help="the price the cost processor gives a model, and where it comes from")
    pr.add_argument("--provider", help="provider as the conventions name it (openai, aws.bedrock, …)")
    pr.add_argument("--config", help="apply this config's cost overrides")
    pr.add_argument("--at", help="price in force at this ISO 8601 time (default: now)")
    pr.add_argument("model")
    pr.set_defaults(func=cmd_prices)

    cp = sub.add_parser("compact", help="merge closed hours into few large files sorted by trace id")
    lake_args(cp)
    cp.add_argument("--older-than", help="only hours that ended longer ago than this (default: config, 10m)")
    cp.add_argument("--table", action="append", choices=["spans", "traces", "feedback"], help="default: all")
    cp.add_argument("--dry-run", action="store_true", help="print what would be compacted")
    cp.set_defaults(func=cmd_compact)

    rt = sub.add_parser("retention", help="delete hour partitions older than each table's retention age")
    lake_args(rt)
    rt.add_argument("--older-than", help="age for the chosen tables (default: retention.<table> in the config)")
    rt.add_argument("--table", action="append", choices=["spans", "traces", "feedback"], help="default: all")
    rt.add_argument("--dry-run", action="store_true", help="print what would be removed")
    rt.set_defaults(func=cmd_retention)

    fg = sub.add_parser("forget", help="right to delete: remove a user's traces, feedback and their artifacts")
    lake_args(fg)
    fg.add_argument("--user-id", required=True, help="the raw id; hashed the way the config's redact_pii hashes it")
    fg.add_argument("--dry-run", action="store_true", help="print what would be removed")
    fg.set_defaults(func=cmd_forget)

    ui = sub.add_parser("ui", help="look at traces, conversations, costs and SQL in a browser")
    lake_args(ui)
    ui.add_argument(
        "--listen", metavar="HOST:PORT", type=_endpoint, help="default: ui.endpoint of --config, else 127.0.0.1:8890"
    )
    ui.set_defaults(func=cmd_ui)

    from sinks.artifacts.cli import add_commands

    add_commands(sub)

    d = sub.add_parser("demo", help="send realistic LLM traces with the OpenTelemetry SDK")
    d.add_argument("--endpoint", default="127.0.0.1:4317", help="HOST:PORT of an OTLP receiver")
    d.add_argument(
        "--protocol",
        choices=["grpc", "http"],
        default="grpc",
        help="OTLP/gRPC (default; --endpoint :4317) or OTLP/HTTP protobuf (--endpoint :4318)",
    )
    d.add_argument(
        "--traces",
        type=int,
        default=50,
        help="how many traces to send (default 50): RAG chats, agents with tools, workflows in the three dialects",
    )
    d.add_argument("--seed", type=int, default=None, help="make the generated traffic repeatable")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    import faulthandler
    import signal

    # `kill -USR1 <pid>` prints every thread's stack to stderr: the first thing to ask for when a process hangs
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level or "info", args.log_json)
    try:
        code = int(args.func(args) or 0)
    except BrokenPipeError:  # `tracelake trace --json ID | head`: the reader left; stop quietly (Python docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if argv is None and args.func in (cmd_run, cmd_receiver, cmd_worker):
        _exit_now(code)
    return code


def _exit_now(code: int) -> NoReturn:
    """A stopped server process leaves without finalising the interpreter.

    By now everything it accepted is durable: stop() drained the bus, flushed and fsynced every
    sink and closed the Kafka clients. Tearing down the interpreter's objects (gigabytes of them
    after a burst) only delays the exit that a restart or a rolling deploy waits on, by 0.1-0.2 s
    here (benchmarks/README.md)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
