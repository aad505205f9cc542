"""`tracelake run`, `receiver`, `worker`: the long-running processes of the pipeline; `reload`: change their chain."""

from __future__ import annotations

import argparse
import sys

from core.command import SubParsers
from pipeline.cli.context import load_or_exit
from pipeline.logs import setup_logging


def _serve(args: argparse.Namespace, role: str) -> int:
    from pipeline.receiver.auth import TokenFileError
    from pipeline.receiver.tls import TlsError
    from pipeline.service import Service, use_server_memory_pool

    use_server_memory_pool()
    config = load_or_exit(args.config)
    telemetry = config.raw.telemetry
    level, json_lines = args.log_level or telemetry.log_level, args.log_json or telemetry.log_format == "json"
    setup_logging(level, json_lines)
    try:
        service = Service(config, role=role, log_level=level, log_json=json_lines, insecure=args.insecure)
    except (OSError, ValueError, TlsError, TokenFileError) as e:
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


def cmd_reload(args: argparse.Namespace) -> int:
    """POST /-/reload to the server running FILE (its telemetry endpoint); print what it answered."""
    import json
    import urllib.error
    import urllib.request
    from pathlib import Path

    config = load_or_exit(args.config)  # an invalid file is refused here already, with every error
    endpoint = args.endpoint or config.raw.telemetry.endpoint
    if endpoint is None:
        print(
            f"tracelake reload: {config.source} has no telemetry.endpoint: pass --endpoint HOST:PORT", file=sys.stderr
        )
        return 2
    context = None
    if config.raw.telemetry.tls is not None:  # its certificate checked against --cacert (else the system's CAs)
        import ssl

        context = ssl.create_default_context(cafile=args.cacert)
        if args.cert:  # telemetry.tls.client_ca_file: the endpoint wants a client certificate
            context.load_cert_chain(args.cert, args.key)
    url = f"{'https' if context is not None else 'http'}://{endpoint}/-/reload"
    body = json.dumps({"config": str(Path(args.config).resolve())}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout, context=context) as resp:
            answer = json.load(resp)
    except urllib.error.HTTPError as e:
        answer = json.load(e)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        print(f"tracelake reload: nothing answers at {url} ({reason}): is the server running?", file=sys.stderr)
        return 1
    for error in answer.get("errors", []):
        print(error, file=sys.stderr)
    if not answer.get("ok"):
        done = "partly applied" if answer.get("changed") else "refused; the server keeps running the old config"
        print(f"tracelake reload: {done}", file=sys.stderr)
        return 1
    print(f"{answer['config']}: reloaded (generation {answer['generation']}, sha256 {answer['sha256']})")
    return 0


def add_commands(sub: SubParsers) -> None:
    insecure_help = (
        "acknowledge receivers listening beyond loopback without TLS or auth (logged at info, not as a warning)"
    )
    # exit_now: a stopped server leaves without tearing the interpreter down (parser.exit_now)
    r = sub.add_parser("run", help="receivers + worker in one process (embedded or Kafka bus)")
    r.add_argument("--config", required=True, help="YAML config (see conf/tracelake.yaml)")
    r.add_argument("--insecure", action="store_true", help=insecure_help)
    r.set_defaults(func=cmd_run, exit_now=True)

    rc = sub.add_parser("receiver", help="OTLP receivers publishing to Kafka (scale out behind a load balancer)")
    rc.add_argument("--config", required=True, help="YAML config with bus.type: kafka (see conf/kafka.yaml)")
    rc.add_argument("--insecure", action="store_true", help=insecure_help)
    rc.set_defaults(func=cmd_receiver, exit_now=True)

    wk = sub.add_parser("worker", help="a Kafka consumer-group member: processors and sinks")
    wk.add_argument("--config", required=True, help="YAML config with bus.type: kafka (see conf/kafka.yaml)")
    wk.set_defaults(func=cmd_worker, exit_now=True, insecure=False)

    rl = sub.add_parser("reload", help="swap a running server's processor chain and sinks for its edited config")
    rl.add_argument("--config", required=True, help="the config file the server runs (edited)")
    rl.add_argument("--endpoint", help="HOST:PORT of its telemetry endpoint (default: the file's telemetry.endpoint)")
    rl.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the answer (default 180)")
    rl.add_argument(
        "--cacert", metavar="FILE", help="with telemetry.tls: the CA of its certificate (default: the system's)"
    )
    rl.add_argument("--cert", metavar="FILE", help="with telemetry.tls.client_ca_file: a client certificate (PEM)")
    rl.add_argument("--key", metavar="FILE", help="the client certificate's private key (default: in --cert)")
    rl.set_defaults(func=cmd_reload)
