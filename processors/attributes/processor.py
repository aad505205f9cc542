"""AttributesProcessor: Collector-style insert/update/upsert/delete/hash/rename on attribute maps.

Everything is column work on the flattened map children (core.maps.MapColumn): key matching is one
pyarrow.compute call per action, moving entries is numpy index arithmetic plus one `take`.
Python loops only over the *distinct* values a hash action hashes, never over spans.

Synthetic feedback spans (scope `tracelake.feedback`) pass through untouched: their attributes are
tracelake's own protocol (feedback.value, …), not application data an action could mean.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.feedback import is_synthetic
from core.maps import MapColumn
from core.processor import ProcessorContext
from processors.attributes.config import AttributeAction, AttributesConfig
from processors.keyglob import glob_to_re2, is_glob

log = logging.getLogger("tracelake.processor.attributes")

SCOPE_COLUMNS = {"span": "attributes", "resource": "resource_attributes"}


class Hasher:
    """hex HMAC-SHA256 with the configured key, or plain SHA-256 without one; nulls stay null."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key

    def digest(self, value: str) -> str:
        data = value.encode()
        if self.key is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(self.key, data, hashlib.sha256).hexdigest()

    def __call__(self, items: pa.Array, where: np.ndarray) -> pa.Array:
        mask = pa.array(where)
        distinct = pc.unique(items.filter(mask)).drop_null()
        if len(distinct) == 0:
            return items
        digests = pa.array([self.digest(v) for v in distinct.to_pylist()], pa.string())
        return pc.if_else(mask, digests.take(pc.index_in(items, value_set=distinct)), items)


@dataclass(frozen=True)
class CompiledAction:
    action: str
    key: str
    regex: str | None  # the key as RE2 when it is a glob
    value: str | None
    from_attribute: str | None
    new_key: str | None

    @classmethod
    def of(cls, a: AttributeAction) -> CompiledAction:
        regex = glob_to_re2(a.key) if is_glob(a.key) else None
        return cls(a.action, a.key, regex, a.value_string, a.from_attribute, a.new_key)

    def apply(self, maps: MapColumn, hasher: Hasher) -> MapColumn:
        hit = maps.key_mask(self.key, self.regex)
        if self.action == "delete":
            return maps.select(~hit) if hit.any() else maps
        if self.action == "hash":
            return maps.with_items(hasher(maps.items, hit)) if hit.any() else maps
        if self.action == "rename":
            return self._rename(maps, hit)
        source = None
        if self.from_attribute is not None:
            source = maps.first_index(maps.key_mask(self.from_attribute))
        if self.action in ("update", "upsert"):
            maps = self._update(maps, hit, source)
        if self.action in ("insert", "upsert"):
            maps = self._insert(maps, hit, source)
        return maps

    def _update(self, maps: MapColumn, hit: np.ndarray, source: np.ndarray | None) -> MapColumn:
        if not hit.any():
            return maps
        if source is None:
            value = pa.scalar(self.value, pa.string())
            return maps.with_items(pc.if_else(pa.array(hit), value, maps.items))
        # copy from the source entry of the same row; rows without the source keep their value
        src = source[maps.parents]
        target = hit & (src >= 0)
        gather = np.arange(len(maps.items))
        gather[target] = src[target]
        return maps.with_items(maps.items.take(pa.array(gather, pa.int64())))

    def _insert(self, maps: MapColumn, hit: np.ndarray, source: np.ndarray | None) -> MapColumn:
        rows = ~maps.row_any(hit)
        if source is None:
            values = pa.repeat(pa.scalar(self.value, pa.string()), int(rows.sum()))
        else:
            rows &= source >= 0
            values = maps.items.take(pa.array(source[rows], pa.int64()))
        return maps.append(np.flatnonzero(rows), self.key, values)

    def _rename(self, maps: MapColumn, hit: np.ndarray) -> MapColumn:
        if not hit.any():
            return maps
        assert self.new_key is not None
        # the renamed entry replaces an existing new_key in the same row (upsert semantics)
        has = maps.row_any(hit)
        clash = maps.key_mask(self.new_key) & has[maps.parents]
        if clash.any():
            maps = maps.select(~clash)
            hit = maps.key_mask(self.key)
        keys = pc.if_else(pa.array(hit), pa.scalar(self.new_key, pa.string()), maps.keys)
        return maps.with_keys(keys)


class AttributesProcessor:
    """Applies the configured actions in order, per scope, then re-derives the typed columns."""

    def __init__(self, config: AttributesConfig, context: ProcessorContext | None = None) -> None:
        self.config = config
        self.context = context or ProcessorContext(processor_id="attributes")
        self.actions: dict[str, list[CompiledAction]] = {scope: [] for scope in SCOPE_COLUMNS}
        for a in config.actions:
            self.actions[a.scope].append(CompiledAction.of(a))
        secret = os.environ.get(config.hash_key_env) or None
        if secret is None and any(a.action == "hash" for a in config.actions):
            log.warning(
                "%s: %s is not set; hash actions fall back to plain SHA-256, which anyone can reverse "
                "for guessable values (user ids, e-mail addresses)",
                self.context.processor_id,
                config.hash_key_env,
            )
        self.hasher = Hasher(None if secret is None else secret.encode())
        self.stats: dict[str, int] = {}  # nothing on /metrics beyond the worker's spans in/out per processor

    def process(self, batch: pa.Table) -> pa.Table:
        if batch.num_rows == 0:
            return batch
        synthetic = is_synthetic(batch).to_numpy(zero_copy_only=False)
        if not synthetic.any():
            return self._apply(batch)
        real = np.flatnonzero(~synthetic)
        if len(real) == 0:
            return batch
        fake = np.flatnonzero(synthetic)
        done = self._apply(batch.take(pa.array(real)))
        merged = pa.concat_tables([done, batch.take(pa.array(fake)).cast(done.schema)])
        return merged.take(pa.array(np.argsort(np.concatenate([real, fake]), kind="stable")))

    def _apply(self, batch: pa.Table) -> pa.Table:
        for scope, column in SCOPE_COLUMNS.items():
            if not self.actions[scope]:
                continue
            maps = MapColumn.of(batch.column(column))
            for action in self.actions[scope]:
                maps = action.apply(maps, self.hasher)
            idx = batch.schema.get_field_index(column)
            batch = batch.set_column(idx, batch.schema.field(idx), maps.to_arrow())
        if self.actions["resource"]:
            # decode takes service_name from the resource's (last) service.name; keep the two in step
            idx = batch.schema.get_field_index("service_name")
            resource = batch.column("resource_attributes")
            service = pc.map_lookup(resource, pa.scalar("service.name", pa.string()), "last")
            batch = batch.set_column(idx, batch.schema.field(idx), service)
        return self.context.normalizer(batch)
