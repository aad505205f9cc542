"""`tracelake validate [--strict] FILE`: every error with its key path (exit 2), or a one-line summary (exit 0);
warnings about chains that are valid but probably wrong (pipeline/config/lint.py) make `--strict` exit 1."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from core.command import SubParsers
from pipeline.cli.context import load_or_exit

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.config.model import GrpcReceiverConfig, HttpReceiverConfig


def cmd_validate(args: argparse.Namespace) -> int:
    from pipeline.config.lint import chain_warnings
    from pipeline.config.model import resolve_processes
    from pipeline.receiver.exposure import unprotected_receivers

    config = load_or_exit(args.file)
    p = config.pipeline
    otlp = config.raw.receivers.otlp
    problems = security_material_problems(config)
    for problem in problems:
        print(f"{config.source}: {problem}", file=sys.stderr)
    if problems:
        return 2
    warnings = [*config.warnings, *chain_warnings(config), *unprotected_receivers(otlp)]
    for w in warnings:
        print(f"{config.source}: warning: {w}", file=sys.stderr)

    def protection(block: GrpcReceiverConfig | HttpReceiverConfig) -> str:
        parts = ["mTLS" if block.tls.client_ca_file else "TLS"] if block.tls is not None else []
        parts += ["auth"] if otlp.auth is not None else []
        return f" ({', '.join(parts)})" if parts else ""

    receivers = [
        f"grpc {otlp.grpc.endpoint}{protection(otlp.grpc)}" if otlp.grpc else "",
        f"http {otlp.http.endpoint}{protection(otlp.http)}" if otlp.http else "",
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


def security_material_problems(config: Config) -> list[str]:
    """What `run` would refuse to start with: TLS files that do not load, a tokens file that does not parse."""
    from pipeline.receiver.auth import TokenFileError, load_principals
    from pipeline.receiver.tls import TlsError, load_material

    raw = config.raw
    otlp = raw.receivers.otlp
    blocks = [
        ("receivers.otlp.grpc.tls", otlp.grpc.tls if otlp.grpc else None),
        ("receivers.otlp.http.tls", otlp.http.tls if otlp.http else None),
        ("telemetry.tls", raw.telemetry.tls),
    ]
    problems = []
    for where, tls in blocks:
        if tls is not None:
            try:
                load_material(tls, where)
            except TlsError as e:
                problems.append(str(e))
    if otlp.auth is not None:
        try:
            load_principals(otlp.auth)
        except TokenFileError as e:
            problems.append(str(e))
    return problems


def add_commands(sub: SubParsers) -> None:
    v = sub.add_parser("validate", help="check a config file; prints every error with its key path")
    v.add_argument("file")
    v.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when the chain is valid but probably wrong (the warnings; for CI)",
    )
    v.set_defaults(func=cmd_validate)
