"""`tracelake ui`: the web UI over the lake, until Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from core.command import SubParsers
from pipeline.cli.context import add_lake_options, config_from, lake_location


def cmd_ui(args: argparse.Namespace) -> int:
    import signal
    import threading

    from pipeline.ui import UiSetupError, ui_server

    config = config_from(args)
    try:
        server = ui_server(config, lake=lake_location(args, config) if args.lake else None, endpoint=args.listen)
    except (UiSetupError, OSError) as e:
        print(f"tracelake ui: {e}", file=sys.stderr)
        return 2 if isinstance(e, UiSetupError) else 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(f"tracelake ui: open {server.url} (lake {args.lake or config.lake_path}; Ctrl-C stops)", flush=True)
    stop.wait()
    server.stop()
    return 0


def _endpoint(value: str) -> str:
    from pipeline.config.model import check_endpoint

    try:
        return check_endpoint(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_commands(sub: SubParsers) -> None:
    ui = sub.add_parser("ui", help="look at traces, conversations, costs and SQL in a browser")
    add_lake_options(ui)
    ui.add_argument(
        "--listen", metavar="HOST:PORT", type=_endpoint, help="default: ui.endpoint of --config, else 127.0.0.1:8890"
    )
    ui.set_defaults(func=cmd_ui)
