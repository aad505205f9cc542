"""The `tracelake` command: one subcommand per thing a user does, each with its own --help.

parser.py builds the parser and runs a command; one module per command or group (servers.py: run,
receiver, worker; validate.py; query.py: query, trace; maintenance.py: compact, retention, forget; ui.py;
demo.py); context.py holds what they share (the config or exit 2, the lake, `--lake | --config`). Commands of
processors and sinks (`prices`, `artifact`, `gc`) and of third-party packages come through the
`tracelake.commands` entry points (core/command.py).

Importing this package stays light (no pyarrow, DuckDB or pydantic): `tracelake run`'s worker processes
import the main module again when they start (multiprocessing spawn). Commands import what they need.
"""

from pipeline.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
