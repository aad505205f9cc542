"""`tracelake explain`: what a chain does to sample traffic, span by span, before it runs (pipeline/explain.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.command import SubParsers
from pipeline.cli.context import load_or_exit


def cmd_explain(args: argparse.Namespace) -> int:
    from pipeline.explain import (
        decode_input,
        demo_input,
        diff_json,
        diff_text,
        explain,
        lake_input,
        otlp_input,
        to_json,
        to_text,
    )

    config = load_or_exit(args.config)
    other = load_or_exit(args.diff) if args.diff else None
    try:
        if args.lake or args.trace:
            if not (args.lake and args.trace):
                print("tracelake explain: --lake and --trace go together", file=sys.stderr)
                return 2
            spans, source, hide = lake_input(Path(args.lake), args.trace), f"trace {args.trace} of {args.lake}", True
        elif args.otlp:
            spans, source, hide = decode_input(otlp_input(Path(args.otlp))), args.otlp, False
        else:
            n = args.demo or 5
            spans, source, hide = decode_input(demo_input(n, args.seed)), f"{n} demo traces", False
    except (OSError, ValueError) as e:
        print(f"tracelake explain: {e}", file=sys.stderr)
        return 2
    first = explain(config, spans, source, hide)
    if other is not None:
        second = explain(other, spans, source, hide)
        print(json.dumps(diff_json(first, second), indent=1) if args.json else diff_text(first, second))
    else:
        print(json.dumps(to_json(first), indent=1, default=str) if args.json else to_text(first))
    return 0


def add_commands(sub: SubParsers) -> None:
    e = sub.add_parser(
        "explain", help="run a config's chains in-process on sample traffic and show what each processor did"
    )
    e.add_argument("--config", required=True, help="the config whose ingest and process chains to run")
    src = e.add_mutually_exclusive_group()
    src.add_argument("--demo", type=int, metavar="N", help="N traces of the demo generator (the default, 5)")
    src.add_argument("--otlp", metavar="FILE", help="an export request: OTLP/JSON (.json) or OTLP/protobuf (.pb)")
    src.add_argument("--lake", metavar="DIR", help="a lake to read the trace of --trace from (values not shown)")
    e.add_argument("--trace", metavar="ID", help="the trace id to read from --lake")
    e.add_argument("--seed", type=int, default=0, help="the demo generator's seed (default 0)")
    e.add_argument("--diff", metavar="OTHER.yaml", help="also run OTHER's chains and show what changes between them")
    e.add_argument("--json", action="store_true", help="one JSON document instead of text")
    e.set_defaults(func=cmd_explain)
