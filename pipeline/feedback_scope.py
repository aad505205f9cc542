"""Feedback counts only toward a trace of its own tenant (the worker's side of it).

With authentication, a feedback event carries the tenant of the token that posted it (the receiver
stamps it like any span), but the receiver cannot know whose trace the event is about. The worker
can, for the traces it has seen: it remembers the tenant of recent traces (from their spans, before
the processors run) and drops feedback events of another tenant before they reach tail sampling,
the trace summaries or the `feedback` table. Events about a trace it does not remember (older than
what it keeps, or from before a restart) go on; for them:
- a promotion of a sampled-out trace takes only held-back spans of the feedback's tenant
  (`promotable`), so another tenant's thumbs-down promotes nothing;
- the query views count a feedback row only toward a trace of its tenant (pipeline/query.py).
Feedback without a tenant (a receiver without authentication) is not checked.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from core.feedback import is_synthetic

# Traces whose tenant is remembered: the most recently seen, per worker process (~100 bytes each).
REMEMBERED_TRACES = 100_000


class FeedbackScope:
    def __init__(self, remembered: int = REMEMBERED_TRACES) -> None:
        self.remembered = remembered
        self._owners: dict[str, str] = {}  # trace id -> tenant, oldest first
        self._feedback_tenants: dict[str, set[str]] = {}  # since the last take: trace id -> tenants that rated it
        self.refused = 0

    def apply(self, batch: pa.Table) -> pa.Table:
        """The batch without feedback events of a tenant other than their trace's (as far as known)."""
        tenants = batch.column("tenant_id")
        if tenants.null_count == batch.num_rows:
            return batch  # no tenants in play (no authentication, no tenant attributes): nothing to check
        synthetic = is_synthetic(batch)
        has_tenant = pc.is_valid(tenants)
        self._remember(batch.filter(pc.and_(pc.invert(synthetic), has_tenant)))
        rated = pc.and_(synthetic, has_tenant)
        if not pc.any(rated).as_py():
            return batch
        at = pc.indices_nonzero(rated).to_pylist()
        trace_ids = batch.column("trace_id").take(at).to_pylist()
        keep = [True] * batch.num_rows
        for i, trace_id, tenant in zip(at, trace_ids, tenants.take(at).to_pylist(), strict=True):
            owner = self._owners.get(trace_id)
            if owner is not None and owner != tenant:
                keep[i] = False
                self.refused += 1
            else:
                self._feedback_tenants.setdefault(trace_id, set()).add(tenant)
        return batch if all(keep) else batch.filter(pa.array(keep))

    def _remember(self, spans: pa.Table) -> None:
        if spans.num_rows == 0:
            return
        pairs = spans.select(["trace_id", "tenant_id"]).group_by(["trace_id", "tenant_id"], use_threads=False)
        owners = self._owners
        for trace_id, tenant in zip(*pairs.aggregate([]).columns, strict=True):
            key = trace_id.as_py()
            owners.pop(key, None)  # re-inserted: now the most recent
            owners[key] = tenant.as_py()
        while len(owners) > self.remembered:
            del owners[next(iter(owners))]

    def promotable(self, held_back: pa.Table) -> pa.Table:
        """Held-back spans a promotion may move into `spans`: of traces rated by their own tenant only
        (spans of traces rated without a tenant all stay eligible). Forgets the ratings it used."""
        rated, self._feedback_tenants = self._feedback_tenants, {}
        if not rated or held_back.num_rows == 0:
            return held_back
        keep = [
            trace_id not in rated or tenant in rated[trace_id]
            for trace_id, tenant in zip(
                held_back.column("trace_id").to_pylist(), held_back.column("tenant_id").to_pylist(), strict=True
            )
        ]
        return held_back if all(keep) else held_back.filter(pa.array(keep))

    def forget_ratings(self) -> None:
        """No promotion to check: the ratings seen since the last check are no longer needed."""
        self._feedback_tenants = {}
