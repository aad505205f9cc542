"""A third-party package adds a `tracelake` command through the `tracelake.commands` entry points.

The package is real: a module and its .dist-info (METADATA, entry_points.txt) on PYTHONPATH, found by
importlib.metadata exactly as an installed wheel is, written only against core.command."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
IMPORTED = "tracelake_hello imported"

PLUGIN = textwrap.dedent(
    f'''
    """A command written against core.command only."""
    import sys

    from core.command import CommandContext, SubParsers

    print({IMPORTED!r}, file=sys.stderr)


    def _hello(args, context: CommandContext) -> int:
        config = context.load_config(args.config)
        costs = config.processors_of_type("cost")
        print(f"hello from {{config.source}}: lake {{config.lake_path}}, {{len(costs)}} cost block(s)")
        return 3 if args.fail else 0


    def add_commands(subparsers: SubParsers, context: CommandContext) -> None:
        p = subparsers.add_parser("hello", help="say where the lake is")
        p.add_argument("--config", help="a tracelake config")
        p.add_argument("--fail", action="store_true", help="exit 3")
        p.set_defaults(func=lambda args: _hello(args, context))


    def adds_nothing(subparsers: SubParsers, context: CommandContext) -> None:
        pass
    '''
)

CONFIG = """\
processors:
  cost: {}
  cost/eu: {}
sinks:
  parquet: {path: /data/lake}
pipelines:
  traces:
    process: [cost, cost/eu]
    sinks: [parquet]
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    (root / "tracelake_hello").mkdir()
    (root / "tracelake_hello" / "__init__.py").write_text(PLUGIN)
    info = root / "tracelake_hello-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tracelake-hello\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[tracelake.commands]\n"
        "hello = tracelake_hello:add_commands\n"
        "nothing = tracelake_hello:adds_nothing\n"
        "missing = tracelake_hello_not_installed:add_commands\n"
    )
    return root


def _tracelake(plugin_path: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), str(REPO)])}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_plugin_command_runs_with_the_config_it_loads(plugin_path: Path, tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CONFIG)
    out = _tracelake(plugin_path, tmp_path, "hello", "--config", "c.yaml")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hello from c.yaml: lake /data/lake, 2 cost block(s)"
    # only the asked-for plugin is loaded: the broken ones say nothing
    assert "warning" not in out.stderr

    failed = _tracelake(plugin_path, tmp_path, "hello", "--fail")  # the defaults, and the command's exit code
    assert failed.returncode == 3
    assert failed.stdout.strip() == "hello from <defaults>: lake ./lake, 0 cost block(s)"


def test_plugin_sees_an_invalid_config_as_every_command_does(plugin_path: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("processors:\n  cost: {nope: 1}\nbogus: 2\n")
    out = _tracelake(plugin_path, tmp_path, "hello", "--config", "bad.yaml")
    assert out.returncode == 2
    assert "bad.yaml: processors.cost.nope:" in out.stderr and "bad.yaml: bogus: unknown key" in out.stderr
    assert out.stdout == ""


def test_help_lists_plugins_and_names_the_broken_ones(plugin_path: Path, tmp_path: Path) -> None:
    out = _tracelake(plugin_path, tmp_path, "--help")
    assert out.returncode == 0
    listed = {line.split()[0] for line in out.stdout.splitlines() if line.startswith("    ")}
    assert {"hello", "prices", "artifact", "gc", "run", "demo"} <= listed
    assert "nothing" not in listed and "missing" not in listed
    assert "command plugin nothing = tracelake_hello:adds_nothing left out: it did not add a command" in out.stderr
    assert "command plugin missing = tracelake_hello_not_installed:add_commands left out: No module" in out.stderr

    unknown = _tracelake(plugin_path, tmp_path, "missing")
    assert unknown.returncode == 2
    assert "left out: No module named 'tracelake_hello_not_installed'" in unknown.stderr
    assert "invalid choice: 'missing'" in unknown.stderr


def test_builtin_commands_never_import_plugins(plugin_path: Path, tmp_path: Path) -> None:
    """`tracelake run` and its neighbours do not depend on another package's command code."""
    out = _tracelake(plugin_path, tmp_path, "validate", str(REPO / "conf" / "tracelake.yaml"))
    assert out.returncode == 0, out.stderr
    assert IMPORTED not in out.stderr and "warning: command plugin" not in out.stderr
    assert IMPORTED in _tracelake(plugin_path, tmp_path, "hello", "--help").stderr


def test_the_cli_package_imports_light() -> None:
    """`tracelake run` worker processes import the main module again: no pyarrow, DuckDB, pydantic or SDK."""
    heavy = ("pyarrow", "duckdb", "pydantic", "opentelemetry", "genai_prices")
    code = f"import sys, pipeline.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_processor_and_sink_commands_come_through_entry_points() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    prices, artifact = sub.choices["prices"], sub.choices["artifact"]  # type: ignore[attr-defined]
    assert prices.parse_args(["gpt-4o", "--provider", "openai"]).func.__module__ == "processors.cost.cli"
    assert artifact.parse_args(["get", "abc"]).func.__module__ == "sinks.artifacts.cli"
