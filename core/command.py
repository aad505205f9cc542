"""Subcommands a package adds to `tracelake`: the `tracelake.commands` entry-point group.

An entry point's name is the command it adds; its value names a `CommandPlugin`, a function that
`tracelake` calls with its subparsers and a `CommandContext` while it builds its parser:

    # pyproject.toml of a third-party package
    [project.entry-points."tracelake.commands"]
    hello = "tracelake_hello.cli:add_commands"

    def add_commands(subparsers: SubParsers, context: CommandContext) -> None:
        p = subparsers.add_parser("hello", help="…")    # the entry point's name; every option has a help
        p.add_argument("--config", help="…")
        p.set_defaults(func=lambda args: run(args, context.load_config(args.config)))  # args → exit code

`tracelake` loads a plugin only when its command runs (or for the top-level `--help`), so `tracelake run`
never imports third-party command code; still, import what is heavy inside `func`, not at module level.
The built-ins register the same way (pyproject.toml): `prices` (processors/cost/cli.py), `artifact` and
`gc` (sinks/artifacts/cli.py). A plugin sees the config only through `ConfigView`, never pipeline.config.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias

from core.registry import component_type

if TYPE_CHECKING:  # pyarrow comes with these; the parser is built by every tracelake process
    from core.processor import ProcessorConfig
    from core.sink import SinkConfig

ENTRY_POINT_GROUP = "tracelake.commands"

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


@dataclass(frozen=True)
class ConfigView:
    """What a command may read of a validated config: its component config blocks and its lake."""

    source: str  # the file, or "<defaults>"
    processors: Mapping[str, ProcessorConfig]  # by id: "cost", "redact_pii/ingest"
    sinks: Mapping[str, SinkConfig]  # by id: "parquet"
    lake_path: str  # the first sink that has a `path`, else ./lake

    def processors_of_type(self, type_name: str) -> list[ProcessorConfig]:
        """The config blocks of every processor of one type (`cost`, `cost/eu`, …), in config order."""
        return [config for pid, config in self.processors.items() if component_type(pid) == type_name]


@dataclass(frozen=True)
class CommandContext:
    """What `tracelake` gives a command plugin."""

    load_config: Callable[[str | None], ConfigView]
    """The validated config at a path (None: the defaults, as without --config). On an unreadable or invalid
    file it prints every error as `FILE: key.path: what is wrong` to stderr and exits 2, as every command does."""


class CommandPlugin(Protocol):
    """Adds the command named by its entry point (with any actions below it) to `subparsers`."""

    def __call__(self, subparsers: SubParsers, context: CommandContext) -> None: ...
