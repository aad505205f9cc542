"""`tracelake prices MODEL`: the price the cost processor gives a model, mounted through `tracelake.commands`."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from core.command import CommandContext, SubParsers


def _prices(args: argparse.Namespace, context: CommandContext) -> int:
    from processors.cost.config import CostConfig
    from processors.cost.prices import describe  # genai-prices: only when the command runs

    cost: CostConfig | None = None
    if args.config:
        blocks = context.load_config(args.config).processors_of_type("cost")
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


def add_commands(subparsers: SubParsers, context: CommandContext) -> None:
    """The `prices` command (core.command.CommandPlugin)."""
    pr = subparsers.add_parser("prices", help="the price the cost processor gives a model, and where it comes from")
    pr.add_argument("--provider", help="provider as the conventions name it (openai, aws.bedrock, …)")
    pr.add_argument("--config", help="apply this config's cost overrides")
    pr.add_argument("--at", help="price in force at this ISO 8601 time (default: now)")
    pr.add_argument("model")
    pr.set_defaults(func=lambda args: _prices(args, context))
