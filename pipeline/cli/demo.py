"""`tracelake demo`: realistic LLM traces sent with the OpenTelemetry SDK (pipeline/demo/)."""

from __future__ import annotations

import argparse
import sys

from core.command import SubParsers


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from pipeline.demo import run_demo
    except ImportError as e:  # the OpenTelemetry SDK comes with the `demo` extra; a server does not need it
        if not (e.name or "").startswith("opentelemetry"):
            raise
        print(
            f"tracelake demo: the OpenTelemetry SDK is not installed ({e}): pip install 'tracelake[demo]' "
            "(from a checkout: pip install -e '.[demo]')",
            file=sys.stderr,
        )
        return 2
    sent = run_demo(args.endpoint, traces=args.traces, protocol=args.protocol, seed=args.seed)
    print(f"sent {sent.traces} traces ({sent.spans} spans) to {args.endpoint} over OTLP/{args.protocol}")
    return 0


def add_commands(sub: SubParsers) -> None:
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
