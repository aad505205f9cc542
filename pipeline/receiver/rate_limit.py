"""Per-tenant rate limits (`receivers.otlp.rate_limits`): token buckets of spans and bytes.

Each tenant has a bucket per limit that refills at the limit's rate and holds `burst` seconds of
it. A request is admitted when every bucket it draws on holds at least its cost (capped at the
bucket's size, so a request larger than a burst still passes a full bucket; the bucket then goes
into debt and the tenant waits it off). Otherwise the whole request is refused, nothing is kept,
and the client is told when its bucket will hold enough: 429 with `Retry-After`, or
RESOURCE_EXHAUSTED with a `RetryInfo` trailer (the OTel SDKs wait that long and retry).
One tenant's flood drains only its own buckets.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline.bus.base import BusRefused
from pipeline.config.model import RateLimitConfig, RateLimitsConfig


class RateLimited(BusRefused):
    """A tenant over its rate: retryable, like a full bus (429 / RESOURCE_EXHAUSTED with a retry delay)."""

    def __init__(self, tenant: str, what: str, retry_after: float) -> None:
        super().__init__(f"tenant {tenant!r} is over its {what} rate limit", retry_after, exhausted=True)
        self.tenant = tenant


class TokenBucket:
    def __init__(self, rate: float, burst_seconds: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * burst_seconds)
        self.level = self.capacity
        self._updated = now

    def wait(self, cost: float, now: float) -> float:
        """Seconds until the bucket can pay `cost` (0: now)."""
        self.level = min(self.capacity, self.level + (now - self._updated) * self.rate)
        self._updated = now
        need = min(cost, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, cost: float) -> None:
        self.level -= cost


@dataclass(frozen=True)
class Charge:
    spans: int
    bytes: int


# Buckets kept at most (a token with tenants: "*" lets clients name any number of tenants); beyond it the
# buckets used longest ago are dropped, so such a tenant starts again from a full bucket.
MAX_TENANTS = 10_000


class TenantRateLimiter:
    """Token buckets per tenant, created on a tenant's first request."""

    def __init__(self, config: RateLimitsConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[TokenBucket | None, TokenBucket | None]] = {}

    def _of(self, tenant: str, now: float) -> tuple[TokenBucket | None, TokenBucket | None]:
        buckets = self._buckets.pop(tenant, None)  # re-inserted below: the most recently used last
        if buckets is None:
            limit: RateLimitConfig = self.config.tenants.get(tenant, self.config.default)
            spans = TokenBucket(limit.spans_per_second, limit.burst, now) if limit.spans_per_second else None
            size = TokenBucket(limit.bytes_per_second, limit.burst, now) if limit.bytes_per_second else None
            buckets = (spans, size)
            while len(self._buckets) >= MAX_TENANTS:
                del self._buckets[next(iter(self._buckets))]
        self._buckets[tenant] = buckets
        return buckets

    def admit(self, charges: Mapping[str, Charge]) -> None:
        """Take every tenant's charge, or none of them and raise RateLimited (the longest wait)."""
        now = self._clock()
        with self._lock:
            worst: tuple[float, str, str] = (0.0, "", "")
            for tenant, charge in charges.items():
                spans, size = self._of(tenant, now)
                for bucket, cost, what in ((spans, charge.spans, "spans/s"), (size, charge.bytes, "bytes/s")):
                    if bucket is not None:
                        wait = bucket.wait(cost, now)
                        if wait > worst[0]:
                            worst = (wait, tenant, what)
            if worst[0] > 0:
                raise RateLimited(worst[1], worst[2], max(0.001, math.ceil(worst[0] * 1000) / 1000))
            for tenant, charge in charges.items():
                spans, size = self._buckets[tenant]
                if spans is not None:
                    spans.take(charge.spans)
                if size is not None:
                    size.take(charge.bytes)

    def refund(self, charges: Mapping[str, Charge]) -> None:
        """Give back what a request took when it was refused after all (bus full)."""
        with self._lock:
            for tenant, charge in charges.items():
                spans, size = self._buckets.get(tenant, (None, None))
                if spans is not None:
                    spans.take(-charge.spans)
                if size is not None:
                    size.take(-charge.bytes)
