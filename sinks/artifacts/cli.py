"""`tracelake artifact get` and `tracelake gc`, mounted through the `tracelake.commands` entry points.

The store comes from the config's offload_artifacts blocks (every distinct `store:`), or
`<lake>/_artifacts` when the config has none; `--store URI` overrides both.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from core.command import CommandContext, ConfigView, SubParsers
from sinks.artifacts.configured import OFFLOAD_TYPE, object_storage, open_store, store_uris

if TYPE_CHECKING:  # imported where used: the CLI starts without pyarrow
    from sinks.parquet.layout import Lake


def gc_grace(config: ConfigView) -> float:
    """The largest gc_grace of the config's offloaders (the safest), else the default hour."""
    from sinks.artifacts.gc import DEFAULT_GRACE_S

    graces = [float(getattr(block, "gc_grace", DEFAULT_GRACE_S)) for block in config.processors_of_type(OFFLOAD_TYPE)]
    return max(graces, default=DEFAULT_GRACE_S)


def cmd_artifact_get(args: argparse.Namespace, context: CommandContext) -> int:
    from sinks.artifacts.store import ArtifactCorruptError, ArtifactNotFoundError

    config = context.load_config(args.config)
    uris = [args.store] if args.store else store_uris(config)
    for uri in uris:
        try:
            data = open_store(uri, object_storage(config)).get(args.ref)
        except ArtifactNotFoundError:
            continue
        except ArtifactCorruptError as e:
            print(f"tracelake: {e}", file=sys.stderr)
            return 1
        except ValueError as e:  # not a reference
            print(f"tracelake: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"tracelake: cannot read {uri}: {e.strerror or e}", file=sys.stderr)
            return 1
        out = sys.stdout.buffer
        out.write(data)
        if sys.stdout.isatty() and not data.endswith(b"\n"):
            out.write(b"\n")
        out.flush()
        return 0
    print(f"tracelake: {args.ref} not found in {', '.join(uris)}", file=sys.stderr)
    return 1


def cmd_gc(args: argparse.Namespace, context: CommandContext) -> int:
    from core.config import parse_duration
    from sinks.artifacts.gc import GcRefused, collect
    from sinks.parquet.config import ParquetSinkConfig
    from sinks.parquet.layout import open_lake

    config = context.load_config(args.config)
    uris = [args.store] if args.store else store_uris(config)
    sinks = [s for s in config.sinks.values() if isinstance(s, ParquetSinkConfig)]
    lakes: list[Lake] = [open_lake(s.path, s.s3) for s in sinks] or [open_lake(config.lake_path)]
    grace = parse_duration(args.grace) if args.grace is not None else gc_grace(config)
    status = 0
    for uri in uris:
        try:
            report = collect(
                open_store(uri, object_storage(config)),
                lakes,
                grace_s=grace,
                dry_run=args.dry_run,
                allow_empty_lake=args.force,
            )
        except GcRefused as e:
            print(f"tracelake gc: {e}; pass --force if the lake really is empty", file=sys.stderr)
            status = 1
            continue
        except OSError as e:
            print(f"tracelake gc: {uri}: {e.strerror or e}", file=sys.stderr)
            status = 1
            continue
        if args.dry_run:
            for ref in report.deleted:
                print(ref)
        print(report.summary())  # a summary, like compact/retention/forget print theirs: stdout
    for lake in lakes:
        if lake.remote:
            status = max(status, _abort_abandoned_uploads(lake, grace, args.dry_run))
    return status


def _abort_abandoned_uploads(lake: Lake, grace_s: float, dry_run: bool) -> int:
    """Incomplete multipart uploads a killed writer left under an S3 lake (its artifacts included)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from sinks.parquet.config import S3Options
    from sinks.parquet.object_store import abort_abandoned_uploads

    try:
        keys = abort_abandoned_uploads(lake.s3 or S3Options(), lake.root, grace_s, dry_run=dry_run)
    except (BotoCoreError, ClientError) as e:  # no permission, server unreachable
        print(f"tracelake gc: {lake}: cannot list or abort incomplete uploads: {e}", file=sys.stderr)
        return 1
    verb = "would abort" if dry_run else "aborted"
    print(f"{lake}: {verb} {len(keys)} incomplete uploads begun more than {grace_s:.0f}s ago (left by dead writers)")
    return 0


def add_artifact_command(subparsers: SubParsers, context: CommandContext) -> None:
    """`tracelake artifact get` (core.command.CommandPlugin)."""
    a = subparsers.add_parser("artifact", help="read offloaded values back from the artifact store")
    asub = a.add_subparsers(dest="artifact_command", required=True, metavar="ACTION")
    g = asub.add_parser("get", help="print the original value of an artifact:sha256:<hex> reference")
    g.add_argument("--config", help="take the store from this config's offload_artifacts block")
    g.add_argument("--store", help="store URI or path (overrides the config)")
    g.add_argument("ref", help="artifact:sha256:<hex> (or the bare hex)")
    g.set_defaults(func=lambda args: cmd_artifact_get(args, context))


def add_gc_command(subparsers: SubParsers, context: CommandContext) -> None:
    """`tracelake gc` (core.command.CommandPlugin)."""
    gc = subparsers.add_parser(
        "gc",
        help="delete artifacts that no remaining lake partition references; on an S3 lake, abort the incomplete"
        " uploads of writers that died",
    )
    gc.add_argument("--config", help="lake and store from this config (default: ./lake, ./lake/_artifacts)")
    gc.add_argument("--store", help="store URI or path (overrides the config)")
    gc.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    gc.add_argument("--grace", help="keep unreferenced objects younger than this (default: the config's gc_grace, 1h)")
    gc.add_argument("--force", action="store_true", help="run even when the lake has no spans files")
    gc.set_defaults(func=lambda args: cmd_gc(args, context))
