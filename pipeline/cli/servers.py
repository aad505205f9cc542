"""`tracelake run`, `receiver`, `worker`: the long-running processes of the pipeline."""

from __future__ import annotations

import argparse
import sys

from core.command import SubParsers
from pipeline.cli.context import load_or_exit
from pipeline.logs import setup_logging


def _serve(args: argparse.Namespace, role: str) -> int:
    from pipeline.service import Service, use_server_memory_pool

    use_server_memory_pool()
    config = load_or_exit(args.config)
    telemetry = config.raw.telemetry
    level, json_lines = args.log_level or telemetry.log_level, args.log_json or telemetry.log_format == "json"
    setup_logging(level, json_lines)
    try:
        service = Service(config, role=role, log_level=level, log_json=json_lines)
    except (OSError, ValueError) as e:
        print(f"tracelake: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # e.g. KafkaException: brokers unreachable at start
        print(f"tracelake: cannot start: {e}", file=sys.stderr)
        return 1
    return service.serve()


def cmd_run(args: argparse.Namespace) -> int:
    return _serve(args, "all")


def cmd_receiver(args: argparse.Namespace) -> int:
    return _serve(args, "receiver")


def cmd_worker(args: argparse.Namespace) -> int:
    return _serve(args, "worker")


def add_commands(sub: SubParsers) -> None:
    # exit_now: a stopped server leaves without tearing the interpreter down (parser.exit_now)
    r = sub.add_parser("run", help="receivers + worker in one process (embedded or Kafka bus)")
    r.add_argument("--config", required=True, help="YAML config (see conf/tracelake.yaml)")
    r.set_defaults(func=cmd_run, exit_now=True)

    rc = sub.add_parser("receiver", help="OTLP receivers publishing to Kafka (scale out behind a load balancer)")
    rc.add_argument("--config", required=True, help="YAML config with bus.type: kafka (see conf/kafka.yaml)")
    rc.set_defaults(func=cmd_receiver, exit_now=True)

    wk = sub.add_parser("worker", help="a Kafka consumer-group member: processors and sinks")
    wk.add_argument("--config", required=True, help="YAML config with bus.type: kafka (see conf/kafka.yaml)")
    wk.set_defaults(func=cmd_worker, exit_now=True)
