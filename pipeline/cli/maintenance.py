"""`tracelake compact`, `retention` and `forget`: the lake's upkeep (pipeline/maintenance/ does the work)."""

from __future__ import annotations

import argparse
import sys

from core.command import SubParsers
from pipeline.cli.context import add_lake_options, config_from, lake_location

TABLES = ("spans", "traces", "feedback")
COMPACT_LOCK_WAIT_S = 120.0  # a background compactor's round is short: wait for it


def cmd_compact(args: argparse.Namespace) -> int:
    from core.config import parse_duration
    from pipeline.maintenance import MaintenanceBusy
    from pipeline.maintenance.compact import Compactor

    config = config_from(args)
    settings = config.raw.compaction
    older_than = parse_duration(args.older_than) if args.older_than else settings.older_than
    try:
        compactor = Compactor(
            lake_location(args, config),
            target_file_bytes=settings.target_file_bytes,
            row_group_rows=settings.row_group_rows,
            tables=args.table or TABLES,
            threads=settings.threads,
            memory_limit=settings.memory_limit,
            grace_s=settings.grace,
            lock_wait_s=COMPACT_LOCK_WAIT_S,
        )
        report = compactor.run(older_than, dry_run=args.dry_run)
    except MaintenanceBusy as e:
        print(f"tracelake compact: {e}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 1 if report.errors else 0


def cmd_retention(args: argparse.Namespace) -> int:
    from core.config import parse_duration
    from pipeline.maintenance import MaintenanceBusy
    from pipeline.maintenance.retention import apply_retention

    config = config_from(args)
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
        removed = apply_retention(lake_location(args, config), ages, dry_run=args.dry_run)
    except MaintenanceBusy as e:
        print(f"tracelake retention: {e}", file=sys.stderr)
        return 1
    for r in removed:
        print(r.line(args.dry_run))
    kept = ", ".join(f"{t} {'forever' if a is None else f'{a / 86400:g}d'}" for t, a in ages.items())
    print(f"{len(removed)} partitions {'to remove' if args.dry_run else 'removed'} (ages: {kept})")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from pipeline.maintenance import MaintenanceBusy
    from pipeline.maintenance.forget import forget_user
    from processors.redact_pii.config import RedactPiiConfig
    from processors.redact_pii.hash_key import HashKeyMissing, lookup_tokens, read_hash_key
    from sinks.artifacts.configured import open_stores

    config = config_from(args)
    view = config.view()
    ids = {args.user_id}  # as stored when no redact_pii hashes it
    for block in view.processors_of_type("redact_pii"):
        if isinstance(block, RedactPiiConfig):
            try:
                ids.update(lookup_tokens(read_hash_key(block), args.user_id))
            except HashKeyMissing as e:
                print(f"tracelake forget: {e}", file=sys.stderr)
                return 2
    stores = open_stores(view)
    try:
        report = forget_user(lake_location(args, config), sorted(ids), stores, dry_run=args.dry_run)
    except MaintenanceBusy as e:
        print(f"tracelake forget: {e}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 0


def _add_hour_options(parser: argparse.ArgumentParser, older_than: str, dry_run: str) -> None:
    """compact and retention: which lake, which tables' hour partitions, how old, or only say what."""
    add_lake_options(parser)
    parser.add_argument("--older-than", help=older_than)
    parser.add_argument("--table", action="append", choices=TABLES, help="default: all")
    parser.add_argument("--dry-run", action="store_true", help=dry_run)


def add_commands(sub: SubParsers) -> None:
    cp = sub.add_parser("compact", help="merge closed hours into few large files sorted by trace id")
    _add_hour_options(
        cp, "only hours that ended longer ago than this (default: config, 10m)", "print what would be compacted"
    )
    cp.set_defaults(func=cmd_compact)

    rt = sub.add_parser("retention", help="delete hour partitions older than each table's retention age")
    _add_hour_options(
        rt, "age for the chosen tables (default: retention.<table> in the config)", "print what would be removed"
    )
    rt.set_defaults(func=cmd_retention)

    fg = sub.add_parser("forget", help="right to delete: remove a user's traces, feedback and their artifacts")
    add_lake_options(fg)
    fg.add_argument("--user-id", required=True, help="the raw id; hashed the way the config's redact_pii hashes it")
    fg.add_argument("--dry-run", action="store_true", help="print what would be removed")
    fg.set_defaults(func=cmd_forget)
