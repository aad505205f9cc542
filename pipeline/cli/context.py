"""What the commands share: the config (or exit 2 naming every error), the lake, `--lake | --config`.

`plugin_context()` is the same for command plugins (core.command.CommandContext): they see a ConfigView.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.command import CommandContext, ConfigView

if TYPE_CHECKING:  # imported where used: `tracelake run` and its worker processes never need DuckDB
    import duckdb

    from pipeline.config import Config
    from sinks.parquet.layout import Lake


def load_or_exit(path: str) -> Config:
    """The validated config at `path`; every error printed as `FILE: key.path: what is wrong`, then exit 2."""
    from pipeline.config import ConfigError, load

    try:
        return load(path)
    except ConfigError as e:
        for issue in e.issues:
            print(f"{e.source}: {issue}", file=sys.stderr)
        raise SystemExit(2) from None


def config_or_defaults(path: str | None) -> Config:
    """`--config` when given, else the defaults (lake ./lake)."""
    from pipeline.config import default_config

    return load_or_exit(path) if path else default_config()


def config_from(args: argparse.Namespace) -> Config:
    return config_or_defaults(getattr(args, "config", None))


def lake_location(args: argparse.Namespace, config: Config) -> Lake:
    """`--lake`, else the config's parquet sink path, with the sink's `s3` options (a directory or `s3://…`)."""
    from sinks.parquet.config import check_lake_path

    given = getattr(args, "lake", None)
    try:
        location = check_lake_path(given or config.lake_path)
    except ValueError as e:
        print(f"tracelake {args.command}: --lake: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return config.lake(location)


def add_lake_options(parser: argparse.ArgumentParser) -> None:
    """`--lake DIR | --config FILE`, for the commands that read or maintain the lake."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--lake", help="lake directory (default: the config's parquet sink path, or ./lake)")
    g.add_argument("--config", help="take the lake path from this config's parquet sink")


def open_lake(
    args: argparse.Namespace,
    between: tuple[float | None, float | None] | None = None,
    trace_id: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """The lake's views plus `artifact(ref)` over the config's artifact stores; exit 2 when there is no lake.
    `between`: only the rows of that time range (pipeline.query.connect); `trace_id`: views for looking at that
    trace only (`pipeline.query.connect_trace`, in the hours of `between` when given)."""
    from pipeline.query import connect, connect_trace
    from sinks.artifacts.configured import open_stores

    config = config_from(args)
    lake = lake_location(args, config)
    if not lake.remote and not Path(lake.root).is_dir():
        where = "--lake" if getattr(args, "lake", None) else f"sinks.parquet.path of {config.source}"
        print(
            f"tracelake {args.command}: no lake at {lake} ({where}): the directory does not exist; "
            "nothing has been written there yet, or the path is wrong",
            file=sys.stderr,
        )
        raise SystemExit(2)
    stores = open_stores(config.view()) if not getattr(args, "lake", None) else None  # None: the lake's own
    tenant = getattr(args, "tenant", None)
    if trace_id is not None:
        return connect_trace(lake, trace_id, artifact_stores=stores, tenant=tenant, between=between)
    return connect(lake, artifact_stores=stores, tenant=tenant, between=between)


def add_tenant_option(parser: argparse.ArgumentParser) -> None:
    """`--tenant T`: the lake's views restricted to one tenant (pipeline.query.connect)."""
    parser.add_argument(
        "--tenant", help="only this tenant's data: the views spans, traces and feedback show nothing else"
    )


def _load_view(path: str | None) -> ConfigView:
    return config_or_defaults(path).view()


def plugin_context() -> CommandContext:
    """What a `tracelake.commands` plugin is given."""
    return CommandContext(load_config=_load_view)
