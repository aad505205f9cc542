"""`tracelake artifact get` and `tracelake gc`, ready for pipeline/cli.py to mount with add_commands().

The store comes from the config's offload_artifacts blocks (every distinct `store:`), or
`<lake>/_artifacts` when the config has none; `--store URI` overrides both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import Config, ConfigError, default_config, load
from pipeline.config.model import parse_duration
from processors.base import processor_type
from sinks.artifacts.gc import DEFAULT_GRACE_S, GcRefused, collect
from sinks.artifacts.store import ArtifactCorruptError, ArtifactNotFoundError, ArtifactStore

OFFLOAD_TYPE = "offload_artifacts"


def _config(path: str | None) -> Config | None:
    if path is None:
        return default_config()
    try:
        return load(path)
    except ConfigError as e:
        for issue in e.issues:
            print(f"{e.source}: {issue}", file=sys.stderr)
        return None


def store_uris(config: Config) -> list[str]:
    """Distinct stores of the config's offload_artifacts processors, or `<lake>/_artifacts`."""
    uris: list[str] = []
    for pid, spec in config.processors.items():
        uri = getattr(spec.config, "store", None)
        if processor_type(pid) == OFFLOAD_TYPE and isinstance(uri, str) and uri not in uris:
            uris.append(uri)
    return uris or [str(Path(config.lake_path) / "_artifacts")]


def gc_grace(config: Config) -> float:
    """The largest gc_grace of the config's offloaders (the safest), else the default hour."""
    graces = [
        float(getattr(spec.config, "gc_grace", DEFAULT_GRACE_S))
        for pid, spec in config.processors.items()
        if processor_type(pid) == OFFLOAD_TYPE
    ]
    return max(graces, default=DEFAULT_GRACE_S)


def cmd_artifact_get(args: argparse.Namespace) -> int:
    config = _config(args.config)
    if config is None:
        return 2
    uris = [args.store] if args.store else store_uris(config)
    for uri in uris:
        try:
            data = ArtifactStore(uri).get(args.ref)
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


def cmd_gc(args: argparse.Namespace) -> int:
    config = _config(args.config)
    if config is None:
        return 2
    uris = [args.store] if args.store else store_uris(config)
    lakes = [sink.path for sink in config.sinks.values()] or [config.lake_path]
    grace = parse_duration(args.grace) if args.grace is not None else gc_grace(config)
    status = 0
    for uri in uris:
        try:
            report = collect(
                ArtifactStore(uri), lakes, grace_s=grace, dry_run=args.dry_run, allow_empty_lake=args.force
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
    return status


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Mount `artifact get` and `gc` on the `tracelake` parser's subcommands."""
    a = sub.add_parser("artifact", help="read offloaded values back from the artifact store")
    asub = a.add_subparsers(dest="artifact_command", required=True, metavar="ACTION")
    g = asub.add_parser("get", help="print the original value of an artifact:sha256:<hex> reference")
    g.add_argument("--config", help="take the store from this config's offload_artifacts block")
    g.add_argument("--store", help="store URI or path (overrides the config)")
    g.add_argument("ref", help="artifact:sha256:<hex> (or the bare hex)")
    g.set_defaults(func=cmd_artifact_get)

    gc = sub.add_parser("gc", help="delete artifacts that no remaining lake partition references")
    gc.add_argument("--config", help="lake and store from this config (default: ./lake, ./lake/_artifacts)")
    gc.add_argument("--store", help="store URI or path (overrides the config)")
    gc.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    gc.add_argument("--grace", help="keep unreferenced objects younger than this (default: the config's gc_grace, 1h)")
    gc.add_argument("--force", action="store_true", help="run even when the lake has no spans files")
    gc.set_defaults(func=cmd_gc)
