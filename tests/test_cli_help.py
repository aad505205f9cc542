"""Every option of every command says what it does in --help."""

from __future__ import annotations

import argparse

from pipeline.cli import build_parser


def _commands(parser: argparse.ArgumentParser, prefix: str = "tracelake") -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(prefix, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _commands(sub, f"{prefix} {name}")
    return out


def test_every_option_has_help() -> None:
    missing = [
        f"{name} {action.option_strings[-1]}"
        for name, parser in _commands(build_parser())
        for action in parser._actions
        if action.option_strings and action.help in (None, "") and not isinstance(action, argparse._HelpAction)
    ]
    assert missing == []
