"""`tracelake validate FILE`: every error with its key path (exit 2), or a one-line summary (exit 0)."""

from __future__ import annotations

import argparse
import sys

from core.command import SubParsers
from pipeline.cli.context import load_or_exit


def cmd_validate(args: argparse.Namespace) -> int:
    from pipeline.config.model import resolve_processes
    from processors.offload_artifacts.order import order_warnings

    config = load_or_exit(args.file)
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


def add_commands(sub: SubParsers) -> None:
    v = sub.add_parser("validate", help="check a config file; prints every error with its key path")
    v.add_argument("file")
    v.set_defaults(func=cmd_validate)
