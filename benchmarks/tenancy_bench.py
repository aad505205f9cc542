"""What authentication and tenants cost the receiver, per span, against no authentication, in one run.

The receiver's own work for each pre-built demo request (pipeline.demo.build_requests: 512 spans of
three dialects, ~1.4 KB each), as the gRPC handler does it: `Intake.parse`, then `Intake.accept`, which
validates ids, stamps tenants and charges rate limits, and publishes. The publisher does what the
embedded bus does with a request (serialize it when the raw bytes changed, cut it into 2 shares by
trace id) and keeps nothing. Cases:

- `no auth`: Intake without a token (it only removes a client-sent `tracelake.tenant`).
- `fixed token`: a token with one tenant, stamped on every resource (the raw bytes are re-stamped at
  the wire level: spans stay unparsed bytes).
- `fixed token + rate limit`: the same with per-tenant token buckets (never refusing here).
- `gateway, header`: a token that may choose, naming the tenant in X-Scope-OrgID.
- `gateway, per-span claims`: the same token without the header: the demo's spans name their tenant in
  span attributes, so every span's attributes are read for its claim; a resource whose spans claim
  several tenants is rebuilt, one copy per tenant (then re-encoded by the publisher).

The cases take turns, `--repeat` rounds; each case's best round counts. Run:
    .venv/bin/python benchmarks/tenancy_bench.py [--traces 3000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.config.model import RateLimitsConfig
from pipeline.demo import build_requests
from pipeline.otlp.split import split_by_share
from pipeline.receiver.auth import Caller, Principal
from pipeline.receiver.intake import Intake
from pipeline.receiver.rate_limit import TenantRateLimiter
from pipeline.receiver.tenants import Tenancy


class CuttingPublisher:
    """The embedded bus's work on a request, without keeping it."""

    def publish(self, request: ExportTraceServiceRequest, raw: bytes | None, spans: int) -> None:
        split_by_share(raw if raw is not None else request.SerializeToString(), 2)

    def close(self) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    bodies = build_requests(args.traces, 0)
    spans = sum(
        len(ss.spans)
        for b in bodies
        for rs in ExportTraceServiceRequest.FromString(b).resource_spans
        for ss in rs.scope_spans
    )
    print(f"{len(bodies)} requests, {spans} spans, {sum(map(len, bodies)) / spans:.0f} B/span")
    keys = ("tenant.id",)
    fixed = Caller(Principal("app", "acme"))
    gateway = Principal("gateway", "shared", any_tenant=True)
    unlimited = RateLimitsConfig.model_validate({"default": {"spans_per_second": 1e12, "bytes_per_second": 10**15}})
    cases = {
        "no auth": (Tenancy(keys), None),
        "fixed token": (Tenancy(keys), fixed),
        "fixed token + rate limit": (Tenancy(keys, TenantRateLimiter(unlimited)), fixed),
        "gateway, header": (Tenancy(keys), Caller(gateway, "globex")),
        "gateway, per-span claims": (Tenancy(keys), Caller(gateway)),
    }
    results = dict.fromkeys(cases, float("inf"))
    for _ in range(args.repeat):  # the cases take turns, so a noisy moment does not hit one case only
        for name, (tenancy, caller) in cases.items():
            intake = Intake(CuttingPublisher(), tenancy=tenancy)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            for body in bodies:
                intake.accept(intake.parse(body), body, "grpc", caller=caller)
            results[name] = min(results[name], (time.perf_counter() - t0) / spans * 1e6)
    base = results["no auth"]
    for name, us in results.items():
        print(f"{name:<28} {us:6.2f} µs/span  ({us / base:4.2f}× no auth)")


if __name__ == "__main__":
    main()
