"""The `tracelake` command. One subcommand per thing a user does; each has its own --help."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

from pipeline.config import Config, ConfigError, default_config, load

log = logging.getLogger("tracelake")


def _setup_logging(level: str, json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _load_or_exit(path: str) -> Config:
    try:
        return load(path)
    except ConfigError as e:
        for issue in e.issues:
            print(f"{e.source}: {issue}", file=sys.stderr)
        raise SystemExit(2) from None


def _lake_from(args: argparse.Namespace) -> Path:
    if getattr(args, "lake", None):
        return Path(args.lake)
    if getattr(args, "config", None):
        return Path(_load_or_exit(args.config).lake_path)
    return Path(default_config().lake_path)


# -- commands ---------------------------------------------------------------------------------
def _serve(args: argparse.Namespace, role: str) -> int:
    from pipeline.service import Service

    config = _load_or_exit(args.config)
    telemetry = config.raw.telemetry
    _setup_logging(args.log_level or telemetry.log_level, args.log_json or telemetry.log_format == "json")
    try:
        service = Service(config, role=role)
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
    config = _load_or_exit(args.file)
    for w in config.warnings:
        print(f"{config.source}: warning: {w}", file=sys.stderr)
    p = config.pipeline
    otlp = config.raw.receivers.otlp
    receivers = [
        f"grpc {otlp.grpc.endpoint}" if otlp.grpc else "",
        f"http {otlp.http.endpoint}" if otlp.http else "",
    ]
    print(
        f"{config.source}: ok — receivers: {', '.join(r for r in receivers if r) or 'none'}; "
        f"bus: {config.raw.bus.type}; process: [{', '.join(p.process)}]; sinks: [{', '.join(p.sinks)}]"
    )
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    import duckdb

    from pipeline.query import connect

    con = connect(_lake_from(args))
    try:
        rel = con.sql(args.sql)
    except duckdb.Error as e:
        print(f"query error: {e}", file=sys.stderr)
        return 1
    if rel is None:  # a statement without a result (e.g. SET)
        return 0
    try:
        if args.format == "table":
            print(rel.__str__() if args.max_rows is None else rel.limit(args.max_rows).__str__(), end="")
            return 0
        columns = rel.columns
        rows = rel.fetchall()
    except duckdb.Error as e:
        print(f"query error: {e}", file=sys.stderr)
        return 1
    if args.format == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(columns)
        w.writerows(rows)
    else:
        for row in rows:
            print(json.dumps(dict(zip(columns, row, strict=True)), default=str))
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from pipeline.query import connect
    from pipeline.trace_view import render_trace

    con = connect(_lake_from(args))
    text = render_trace(con, args.trace_id, width=args.width)
    if text is None:
        print(f"trace {args.trace_id} not found in the lake", file=sys.stderr)
        return 1
    print(text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    sent = run_demo(args.endpoint, traces=args.traces, protocol=args.protocol, seed=args.seed)
    print(f"sent {sent.traces} traces ({sent.spans} spans) to {args.endpoint} over OTLP/{args.protocol}")
    return 0


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

    q = sub.add_parser("query", help="SQL over the lake (views: spans, traces, feedback)")
    lake_args(q)
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    q.add_argument("--max-rows", type=int, default=None, help="table format: show at most this many rows")
    q.add_argument("sql")
    q.set_defaults(func=cmd_query)

    t = sub.add_parser("trace", help="show one trace as a span tree with timings, models, tokens, cost")
    lake_args(t)
    t.add_argument("--width", type=int, default=80)
    t.add_argument("trace_id")
    t.set_defaults(func=cmd_trace)

    d = sub.add_parser("demo", help="send realistic LLM traces with the OpenTelemetry SDK")
    d.add_argument("--endpoint", default="127.0.0.1:4317", help="HOST:PORT of an OTLP receiver")
    d.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    d.add_argument("--traces", type=int, default=50)
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
    _setup_logging(args.log_level or "info", args.log_json)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
