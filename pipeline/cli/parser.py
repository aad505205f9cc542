"""The `tracelake` parser: the built-in commands, then the `tracelake.commands` plugins; and `main`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from core.command import ENTRY_POINT_GROUP, SubParsers
from pipeline.cli import demo, explain, maintenance, query, servers, tokens, ui, validate
from pipeline.cli.context import plugin_context
from pipeline.logs import setup_logging

# in the order `tracelake --help` lists them; the plugins' commands follow
BUILTIN = (servers, validate, explain, query, tokens, maintenance, ui, demo)


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level", default=None, help="debug, info, warning, error (default: the config's, else info)"
    )
    parser.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")


def add_plugin_commands(sub: SubParsers, command: str | None = None) -> None:
    """Mount the commands of the `tracelake.commands` entry points: only `command`'s when a plugin adds it,
    else all of them (for --help, and so that argparse's "invalid choice" lists every command).

    A plugin that cannot be loaded, or adds something else than the command it is named after, is left
    out with a warning on stderr: the other commands still work."""
    from importlib.metadata import entry_points

    plugins = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    context = plugin_context()
    for ep in [ep for ep in plugins if ep.name == command] or plugins:
        try:
            ep.load()(sub, context)
            if ep.name not in sub.choices:
                raise ValueError(f"it did not add a command named {ep.name!r}")
        except Exception as e:
            print(f"tracelake: warning: command plugin {ep.name} = {ep.value} left out: {e}", file=sys.stderr)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command, or (given the command about to run) only what parsing it needs.

    With `command` a built-in, no plugin is imported: `tracelake run` and the commands around it never
    pay for, or depend on, another package's command code."""
    p = argparse.ArgumentParser(
        prog="tracelake",
        description="Stream processor for LLM-application traces: OTLP in, Parquet out, DuckDB on top.",
    )
    _add_global_options(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in BUILTIN:
        module.add_commands(sub)
    if command not in sub.choices:
        add_plugin_commands(sub, command)
    return p


def command_in(argv: Sequence[str]) -> str | None:
    """The command word of a command line, or None when there is none or --help comes before it."""
    words = iter(argv)
    for word in words:
        if word in ("-h", "--help"):
            return None
        if word.startswith("--log-l") and "=" not in word:  # --log-level VALUE (argparse takes prefixes)
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    import faulthandler
    import signal

    # `kill -USR1 <pid>` prints every thread's stack to stderr: the first thing to ask for when a process hangs
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    args = build_parser(command_in(sys.argv[1:] if argv is None else argv)).parse_args(argv)
    setup_logging(args.log_level or "info", args.log_json)
    try:
        code = int(args.func(args) or 0)
    except BrokenPipeError:  # `tracelake trace --json ID | head`: the reader left; stop quietly (Python docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if argv is None and getattr(args, "exit_now", False):
        exit_now(code)
    return code


def exit_now(code: int) -> NoReturn:
    """A stopped server process leaves without finalising the interpreter.

    By now everything it accepted is durable: stop() drained the bus, flushed and fsynced every
    sink and closed the Kafka clients. Tearing down the interpreter's objects (gigabytes of them
    after a burst) only delays the exit that a restart or a rolling deploy waits on, by 0.1-0.2 s
    here (benchmarks/README.md)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
