"""`tracelake validate [--strict] FILE`: every error with its key path (exit 2), or a one-line summary (exit 0);
warnings about chains that are valid but probably wrong (pipeline/config/lint.py) make `--strict` exit 1."""

from __future__ import annotations

import argparse
import sys

from core.command import SubParsers
from pipeline.cli.context import load_or_exit


def cmd_validate(args: argparse.Namespace) -> int:
    from pipeline.config.lint import chain_warnings
    from pipeline.config.model import resolve_processes

    config = load_or_exit(args.file)
    p = config.pipeline
    warnings = [*config.warnings, *chain_warnings(config)]
    for w in warnings:
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
    if warnings and args.strict:
        print(f"{config.source}: {len(warnings)} warning(s) and --strict: exit 1", file=sys.stderr)
        return 1
    return 0


def add_commands(sub: SubParsers) -> None:
    v = sub.add_parser("validate", help="check a config file; prints every error with its key path")
    v.add_argument("file")
    v.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when the chain is valid but probably wrong (the warnings; for CI)",
    )
    v.set_defaults(func=cmd_validate)
