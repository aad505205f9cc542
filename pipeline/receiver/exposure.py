"""Safe defaults: a receiver reachable beyond this machine without TLS or authentication is said loudly.

Plaintext leaks prompts, completions and tokens to anyone on the path; no authentication lets anyone
who reaches the port write traces and feedback into any tenant. The shipped configs listen on
loopback; `--insecure` acknowledges a deliberate exception (a private network, a sidecar).
"""

from __future__ import annotations

from pipeline.config.model import OtlpReceiverConfig, is_loopback


def unprotected_receivers(otlp: OtlpReceiverConfig) -> list[str]:
    """One sentence per receiver that listens beyond loopback without TLS or without authentication."""
    out = []
    for name, block in (("grpc", otlp.grpc), ("http", otlp.http)):
        if block is None or is_loopback(block.endpoint):
            continue
        missing = [what for what, absent in (("TLS", block.tls is None), ("auth", otlp.auth is None)) if absent]
        if not missing:
            continue
        harm = []
        if block.tls is None:
            harm.append("prompts, completions and tokens cross the network in plain text")
        if otlp.auth is None:
            harm.append("anyone who reaches the port can write traces and feedback into any tenant")
        route = " (and /v1/feedback)" if name == "http" else ""
        out.append(
            f"receivers.otlp.{name}{route} listens on {block.endpoint} without {' and without '.join(missing)}: "
            f'{"; ".join(harm)}. Add {" and ".join(missing)} (README "Securing receivers"), listen on '
            "127.0.0.1, or start with --insecure to acknowledge it"
        )
    return out
