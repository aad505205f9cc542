"""Tenants at the receiver: whose data a request is, stamped where no client can change it.

The tenant of an authenticated request goes on every resource of the request as the attribute
`tracelake.tenant` (conventions.TENANT_ATTRIBUTE), which the normaliser puts in `tenant_id` before
any tenant key a client sets (`worker.keys.tenant`). A client can neither set it nor leave it out:
the receiver replaces any value a client sends, and removes it from requests that no token vouches
for (a receiver without `auth`).

Which tenant, for a token with `tenant: T`:
- no `tenants`: T, whatever the request says; a request that names another tenant in
  X-Scope-OrgID is refused (403 / PERMISSION_DENIED), a tenant attribute is overridden.
- `tenants: [...]` or `"*"`: the tenant the request names in X-Scope-OrgID, else per span the
  tenant its attributes claim (`worker.keys.tenant`, span then resource), else T. Any named tenant
  the token may not write refuses the whole request (403 / PERMISSION_DENIED).

Then per-tenant rate limits are charged (pipeline/receiver/rate_limit.py) and per-tenant counters kept.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from core import metrics
from core.conventions import TENANT_ATTRIBUTE
from pipeline.otlp.wire import RawSpansRequest
from pipeline.receiver.auth import Caller, TenantDenied
from pipeline.receiver.rate_limit import Charge, RateLimited, TenantRateLimiter

# Per-tenant series are kept for this many tenants; later ones are counted under "_other"
# (a token with tenants: "*" lets clients name any number of tenants).
MAX_TENANT_SERIES = 1000
OTHER = "_other"


@dataclass
class Stamped:
    request: ExportTraceServiceRequest
    raw: bytes | None  # None when the request can only be re-encoded from `request`
    spans: dict[str, int] = field(default_factory=dict)  # tenant -> spans, when a token vouched
    charges: dict[str, Charge] = field(default_factory=dict)  # tenant -> what it pays its rate limits


def _set_tenant(attrs: RepeatedCompositeFieldContainer[KeyValue], tenant: str | None) -> bool:
    """Drop every TENANT_ATTRIBUTE, then add `tenant` (unless None). True when anything changed."""
    old = [i for i, kv in enumerate(attrs) if kv.key == TENANT_ATTRIBUTE]
    if tenant is not None and len(old) == 1 and attrs[old[0]].value.string_value == tenant:
        return False
    for i in reversed(old):
        del attrs[i]
    if tenant is not None:
        kv = attrs.add()
        kv.key = TENANT_ATTRIBUTE
        kv.value.string_value = tenant
    return bool(old) or tenant is not None


def _claim(attributes: Iterable[KeyValue], keys: tuple[str, ...]) -> str | None:
    """The tenant `attributes` name, by the first of `keys` present (as the normaliser reads them)."""
    found: dict[str, str] = {}
    for kv in attributes:
        if kv.key in keys and kv.key not in found:
            found[kv.key] = kv.value.string_value if kv.value.HasField("string_value") else str(kv.value)
    for k in keys:
        if k in found:
            return found[k] or None
    return None


class TenantStamp:
    def __init__(self, claim_keys: tuple[str, ...]) -> None:
        self.claim_keys = claim_keys

    def apply(self, request: ExportTraceServiceRequest, raw: bytes | None, caller: Caller | None) -> Stamped:
        """`request` (and `raw`, kept in step) with its tenants stamped; TenantDenied when one may not be written."""
        if caller is None:  # nobody vouches: no tenant may be claimed in tracelake's own attribute
            changed = [_set_tenant(rs.resource.attributes, None) for rs in request.resource_spans]
            return Stamped(request, _restamp(raw, [None] * len(changed)) if any(changed) else raw)
        principal = caller.principal
        named = caller.claimed_tenant
        if named is not None and not principal.may_write(named):
            raise TenantDenied(f"token {principal.name!r} may not write tenant {named!r}")
        if named is not None or not principal.may_choose:
            tenant = named or principal.tenant
            for rs in request.resource_spans:
                _set_tenant(rs.resource.attributes, tenant)
            spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            return Stamped(request, _restamp(raw, [tenant] * len(request.resource_spans)), {tenant: spans})
        return self._by_claims(request, raw, caller)

    def _by_claims(self, request: ExportTraceServiceRequest, raw: bytes | None, caller: Caller) -> Stamped:
        """A token that may choose, without a header: each span's claim (span, then resource, then the default).

        Spans are read only when the request mentions a claim key beyond its resources' own attributes, and
        a resource is rebuilt only when its spans claim different tenants."""
        principal = caller.principal
        keys = self.claim_keys
        defaults = [_claim(rs.resource.attributes, keys) or principal.tenant for rs in request.resource_spans]
        spans_claim = raw is None or sum(raw.count(k.encode()) for k in keys) > sum(
            kv.key in keys for rs in request.resource_spans for kv in rs.resource.attributes
        )
        counts: Counter[str] = Counter()
        stamps: list[str | None] = []
        out: list[ResourceSpans] = []
        for rs, default in zip(request.resource_spans, defaults, strict=True):
            claims = [
                [(_claim(span.attributes, keys) if spans_claim else None) or default for span in ss.spans]
                for ss in rs.scope_spans
            ]
            tenants = {t for scope in claims for t in scope} or {default}
            for tenant in sorted(tenants):
                if not principal.may_write(tenant):
                    raise TenantDenied(f"token {principal.name!r} may not write tenant {tenant!r}")
            for scope in claims:
                counts.update(scope)
            if len(tenants) == 1:  # the usual case: stamp the resource in place
                (tenant,) = tenants
                _set_tenant(rs.resource.attributes, tenant)
                stamps.append(tenant)
                out.append(rs)
                continue
            stamps.append(None)
            out.extend(_split(rs, claims))
        if all(t is not None for t in stamps):
            return Stamped(request, _restamp(raw, stamps), dict(counts))
        del request.resource_spans[:]
        request.resource_spans.extend(out)
        return Stamped(request, None, dict(counts))


def _split(rs: ResourceSpans, claims: list[list[str]]) -> list[ResourceSpans]:
    """One copy of the resource per tenant its spans claim, each stamped, holding that tenant's spans."""
    parts: dict[str, ResourceSpans] = {}
    for ss, scope_claims in zip(rs.scope_spans, claims, strict=True):
        targets: dict[str, ScopeSpans] = {}
        for span, tenant in zip(ss.spans, scope_claims, strict=True):
            part = parts.get(tenant)
            if part is None:
                part = parts[tenant] = ResourceSpans(schema_url=rs.schema_url)
                part.resource.CopyFrom(rs.resource)
                _set_tenant(part.resource.attributes, tenant)
            target = targets.get(tenant)
            if target is None:
                target = targets[tenant] = part.scope_spans.add(schema_url=ss.schema_url)
                target.scope.CopyFrom(ss.scope)
            target.spans.append(span)
    return list(parts.values())


def _restamp(raw: bytes | None, tenants: list[str | None]) -> bytes | None:
    """The serialized request with resource i stamped with tenants[i] (spans stay unparsed bytes)."""
    if raw is None:
        return None
    parsed = RawSpansRequest.FromString(raw)
    for rs, tenant in zip(parsed.resource_spans, tenants, strict=True):
        _set_tenant(rs.resource.attributes, tenant)
    return parsed.SerializeToString()


_TENANT_HELP = {
    "spans": "spans received per tenant (outcome: accepted, refused_rate_limit, refused_bus_full, …)",
    "feedback_events": "feedback events received per tenant, by outcome",
    "bytes": "request bytes (protobuf) received per tenant, by outcome",
}


class TenantStats:
    """Per-tenant counters of spans, feedback events and bytes, by outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str, str]] = Counter()  # (kind, tenant, outcome)
        self._tenants: set[str] = set()

    def add(self, kind: str, tenant: str, outcome: str, n: int) -> None:
        with self._lock:
            if tenant not in self._tenants:
                if len(self._tenants) >= MAX_TENANT_SERIES:
                    tenant = OTHER
                else:
                    self._tenants.add(tenant)
            self.counts[(kind, tenant, outcome)] += n

    def metrics(self) -> list[metrics.Sample]:
        with self._lock:
            items = sorted(self.counts.items())
        return [
            metrics.counter(f"tracelake_receiver_tenant_{kind}", _TENANT_HELP[kind], n, tenant=tenant, outcome=outcome)
            for (kind, tenant, outcome), n in items
        ]


class Tenancy:
    """The receiver's tenant step: stamp, check, rate-limit, count. One per process, shared by the transports."""

    def __init__(self, claim_keys: tuple[str, ...], limiter: TenantRateLimiter | None = None) -> None:
        self.stamp = TenantStamp(claim_keys)
        self.limiter = limiter
        self.stats = TenantStats()

    def claim_keys(self, keys: tuple[str, ...]) -> None:
        """The attribute keys a client names a tenant with (`worker.keys.tenant`), after a reload."""
        self.stamp = TenantStamp(keys)

    def admit(
        self, request: ExportTraceServiceRequest, raw: bytes | None, caller: Caller | None, feedback: bool = False
    ) -> Stamped:
        """The request stamped with its tenants and their rate charged; TenantDenied / RateLimited refuse all of it."""
        size = len(raw) if raw is not None else request.ByteSize()
        stamped = self.stamp.apply(request, raw, caller)
        total = sum(stamped.spans.values())
        stamped.charges = {t: Charge(n, size * n // total) for t, n in stamped.spans.items()}
        if self.limiter is not None and stamped.charges:
            try:
                self.limiter.admit(stamped.charges)
            except RateLimited:
                self._count(stamped, "refused_rate_limit", feedback)
                raise
        return stamped

    def settle(self, stamped: Stamped, outcome: str, feedback: bool = False) -> None:
        """Count what became of an admitted request; a refused one gets its rate charge back."""
        if outcome != "accepted" and self.limiter is not None:
            self.limiter.refund(stamped.charges)
        self._count(stamped, outcome, feedback)

    def _count(self, stamped: Stamped, outcome: str, feedback: bool) -> None:
        for tenant, charge in stamped.charges.items():
            self.stats.add("feedback_events" if feedback else "spans", tenant, outcome, charge.spans)
            self.stats.add("bytes", tenant, outcome, charge.bytes)
