"""ArtifactOffloader: large attribute values leave the span for a content-addressed store.

A value of at least `min_bytes` under a matching key becomes `artifact:sha256:<hex>` and the span
gains an `artifacts` entry (key, ref, bytes, preview). Everything is column work on the flattened
map children (keys / items / offsets); Python only loops over the *distinct* large values, and a
value whose digest is in the known-refs cache costs one sha256 and a dict lookup — the same system
prompt sent a million times is compressed and written once.

Event attributes are offloaded too; their `artifacts` key is `events[<i>].<attribute key>` where
<i> is the event's position in the span's `events` list (the event's name is in events[i].name).

A store failure never loses data: the value stays inline, the failure is logged (once per
failure streak, with the path and the OS error) and counted, unless on_store_error=fail asks for
the batch to fail so that it is not acknowledged.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.maps import MapColumn, NestedMapColumn, single_array
from core.processor import ProcessorContext
from core.schema import ARTIFACT
from processors.offload_artifacts.config import OffloadArtifactsConfig, glob_to_regex
from sinks.artifacts.configured import open_store
from sinks.artifacts.refs import REF_PREFIX, make_ref
from sinks.artifacts.store import ArtifactStore

log = logging.getLogger("tracelake.processor.offload_artifacts")

ARTIFACTS_TYPE = pa.list_(ARTIFACT)
# A cached "this digest exists" is trusted this long; then the store is asked again, which also
# refreshes the object's modification time for the garbage collector's grace period (see README).
KNOWN_TTL_S = 600.0


class ArtifactStoreError(RuntimeError):
    """on_store_error=fail: the batch could not be offloaded and must not be acknowledged."""


@dataclass
class _Candidates:
    """Entries of one map column that are large enough (`big`) and, among those, selected (`sel`)."""

    col: MapColumn
    big: pa.Array  # bool over all entries
    big_idx: pa.Array  # positions where big
    values: pa.Array  # items at big_idx
    keys: pa.Array  # keys at big_idx
    sel: pa.Array  # bool over big_idx: key matches, not already a reference


@dataclass
class _Entries:
    """Offloaded entries of one source, ready to go into the `artifacts` list column."""

    rows: pa.Array  # span row of each entry (int64)
    values: pa.StructArray  # ARTIFACT structs
    offsets: pa.Array  # int64, num_rows + 1: cumulative entries per span


class ArtifactOffloader:
    def __init__(
        self,
        config: OffloadArtifactsConfig,
        context: ProcessorContext | None = None,
        store: ArtifactStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.id = context.processor_id if context else "offload_artifacts"
        s3 = context.s3_filesystem if context else None
        self.store = store or open_store(config.store, s3, compression_level=config.compression_level)
        self._key_regex = glob_to_regex(config.keys)
        self._known: OrderedDict[str, float] = OrderedDict()
        self._clock = clock
        self._failing = 0
        self.stats: dict[str, int] = {
            "batches": 0,
            "offloaded_values": 0,  # attribute values replaced by a reference
            "offloaded_bytes": 0,  # their size inline (what left the spans)
            "distinct_values": 0,  # distinct large values hashed
            "stored_objects": 0,  # objects written (new content)
            "stored_bytes": 0,  # compressed bytes written
            "dedup_hits": 0,  # offloaded values whose object existed or was written earlier
            "cache_hits": 0,  # distinct values answered by the known-refs cache
            "refreshed": 0,  # existing objects whose mtime was bumped for gc
            "store_failures": 0,  # values kept inline because the store failed
        }

    # -- the chain interface ------------------------------------------------------------------
    def process(self, batch: pa.Table) -> pa.Table:
        if batch.num_rows == 0:
            return batch
        self.stats["batches"] += 1
        attrs = MapColumn.of(batch.column("attributes"))
        found: list[tuple[str, _Candidates]] = []
        cand = self._candidates(attrs)
        if cand is not None:
            found.append(("attributes", cand))
        events = None
        if self.config.events and "events" in batch.column_names:
            column = batch.column("events")
            if column.null_count < len(column):
                events = NestedMapColumn.of(column)
                ev_cand = self._candidates(events.maps)
                if ev_cand is not None:
                    found.append(("events", ev_cand))
        if not found:
            return batch

        # one pass over the distinct values of all sources
        selected = [c.values.filter(c.sel) for _, c in found]
        values = pa.concat_arrays(selected) if len(selected) > 1 else selected[0]
        encoded = values.dictionary_encode()
        distinct, codes = encoded.dictionary, encoded.indices
        distinct_refs, created = self._store_distinct(distinct)
        refs = distinct_refs.take(codes)
        sizes = pc.binary_length(distinct).cast(pa.int64()).take(codes)
        if self.config.preview_chars:
            previews = pc.utf8_slice_codeunits(distinct, 0, self.config.preview_chars).take(codes)
        else:
            previews = pa.nulls(len(values), pa.string())
        ok = pc.is_valid(refs)
        self._count(sizes, ok, created)

        components: list[_Entries] = []
        existing = _existing_artifacts(batch)
        if existing is not None:
            components.append(existing)
        start = 0
        for source, c in found:
            n = len(selected.pop(0))
            part = slice(start, start + n)
            start += n
            new_items, entries = self._apply(
                c, refs[part], sizes[part], previews[part], ok[part], events if source == "events" else None
            )
            if source == "attributes":
                batch = _set(batch, "attributes", attrs.with_items(new_items).to_arrow())
            else:
                assert events is not None
                batch = _set(batch, "events", events.with_maps(c.col.with_items(new_items)).to_arrow())
            assert len(entries.offsets) == batch.num_rows + 1
            components.append(entries)
        return _set(batch, "artifacts", _artifacts_column(components, batch.num_rows, existing is not None, batch))

    # -- finding candidates ---------------------------------------------------------------------
    def _candidates(self, col: MapColumn) -> _Candidates | None:
        if len(col.items) == 0:
            return None
        big = pc.fill_null(pc.greater_equal(pc.binary_length(col.items), self.config.min_bytes), False)
        big_idx = pc.indices_nonzero(big)
        if len(big_idx) == 0:
            return None
        values = col.items.take(big_idx)
        keys = col.keys.take(big_idx)
        sel = pc.invert(pc.starts_with(values, REF_PREFIX))  # never wrap a reference in a reference
        if self._key_regex is not None:
            sel = pc.and_(sel, pc.match_substring_regex(keys, self._key_regex))
        if not pc.any(sel).as_py():
            return None
        return _Candidates(col, big, big_idx, values, keys, sel)

    # -- storing ----------------------------------------------------------------------------------
    def _store_distinct(self, distinct: pa.Array) -> tuple[pa.Array, int]:
        """A reference per distinct value, or null where the store failed (the value stays inline);
        and how many objects were created.

        Cache hits cost one sha256 and a dict lookup. Misses are written in parallel (fsync and
        uploads wait on I/O), after a first one alone: a broken store fails once per batch, not once
        per value."""
        refs: list[str | None] = [None] * len(distinct)
        misses: list[tuple[int, str, pa.Buffer]] = []
        now = self._clock()
        for i in range(len(distinct)):
            data = distinct[i].as_buffer()
            digest = hashlib.sha256(data).hexdigest()
            seen = self._known.get(digest)
            if seen is not None and now - seen < KNOWN_TTL_S:
                self._known.move_to_end(digest)
                self.stats["cache_hits"] += 1
                refs[i] = make_ref(digest)
            else:
                misses.append((i, digest, data))
        self.stats["distinct_values"] += len(distinct)
        created = 0
        if not misses:
            return pa.array(refs, pa.string()), created
        results = self.store.write_many([(d, data) for _, d, data in misses[:1]])
        if isinstance(results[0], BaseException):
            results += [results[0]] * (len(misses) - 1)  # the store is down: keep the rest inline too
        else:
            results += self.store.write_many([(d, data) for _, d, data in misses[1:]])
        for (i, digest, _), result in zip(misses, results, strict=True):
            if isinstance(result, BaseException):
                self._failed(digest, result)
                continue
            if self._failing:
                log.warning(
                    "%s: artifact store %s writable again after %d failed values",
                    self.id,
                    self.store.uri,
                    self._failing,
                )
                self._failing = 0
            status, written = result
            self.stats["stored_bytes"] += written
            if status == "created":
                created += 1
                self.stats["stored_objects"] += 1
            elif status == "refreshed":
                self.stats["refreshed"] += 1
            self._remember(digest, now)
            refs[i] = make_ref(digest)
        return pa.array(refs, pa.string()), created

    def _failed(self, digest: str, e: BaseException) -> None:
        self._failing += 1
        where = self.store.location(make_ref(digest))
        reason = getattr(e, "strerror", None) or str(e)
        msg = f"{self.id}: cannot write artifact to {where}: {reason}"
        if self.config.on_store_error == "fail":
            log.error("%s; failing the batch so that it is not acknowledged", msg)
            raise ArtifactStoreError(msg) from e
        if self._failing == 1:
            log.error("%s; keeping large values inline until the store works again", msg)
        else:
            log.debug("%s", msg)

    def _remember(self, digest: str, now: float) -> None:
        if self.config.cache_entries == 0:
            return
        self._known[digest] = now
        self._known.move_to_end(digest)
        while len(self._known) > self.config.cache_entries:
            self._known.popitem(last=False)

    def _count(self, sizes: pa.Array, ok: pa.Array, created: int) -> None:
        n_ok = pc.sum(ok.cast(pa.int64())).as_py() or 0
        self.stats["offloaded_values"] += n_ok
        self.stats["offloaded_bytes"] += pc.sum(sizes.filter(ok)).as_py() or 0
        self.stats["store_failures"] += len(ok) - n_ok
        # every object created in this batch stands for one offloaded value; the rest were dedup hits
        self.stats["dedup_hits"] += n_ok - created

    # -- writing back ------------------------------------------------------------------------------
    def _apply(
        self,
        c: _Candidates,
        refs: pa.Array,
        sizes: pa.Array,
        previews: pa.Array,
        ok: pa.Array,
        events: NestedMapColumn | None,
    ) -> tuple[pa.Array, _Entries]:
        """New map items with references in place, and the `artifacts` entries for this source.

        `events` is given for event attributes: their maps are events, which map to spans."""
        ref_big = pc.replace_with_mask(pa.nulls(len(c.values), pa.string()), c.sel, refs)
        new_items = pc.replace_with_mask(c.col.items, c.big, pc.coalesce(ref_big, c.values))
        offloaded = pc.replace_with_mask(c.big, c.big, pc.is_valid(ref_big))
        # the entries of map i are cumulative[offsets[i]] .. cumulative[offsets[i+1]]
        cumulative = np.concatenate(([0], np.cumsum(offloaded.to_numpy(zero_copy_only=False))))
        per_map = cumulative[c.col.offsets]
        keys = c.keys.filter(c.sel).filter(ok)
        map_rows = c.col.parents[c.big_idx.filter(c.sel).filter(ok).to_numpy()]
        if events is None:
            rows, per_row = map_rows, per_map
        else:
            rows = events.element_rows[map_rows]
            position = pa.array(events.element_index[map_rows]).cast(pa.string())
            keys = pc.binary_join_element_wise("events[", position, "].", keys, "")
            per_row = per_map[events.offsets]
        values = pa.StructArray.from_arrays(
            [keys, refs.filter(ok), sizes.filter(ok), previews.filter(ok)], fields=list(ARTIFACT)
        )
        return new_items, _Entries(pa.array(rows, pa.int64()), values, pa.array(per_row, pa.int64()))


# -- Arrow helpers ---------------------------------------------------------------------------------
def _list_parts(arr: pa.ListArray) -> tuple[pa.Array, pa.Array]:
    """Offsets rebased to 0 and the values they index."""
    offsets = arr.offsets
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    if start:
        offsets = pc.subtract(offsets, pa.scalar(start, offsets.type))
    return offsets, arr.values.slice(start, end - start)


def _set(batch: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    if name in batch.column_names:
        i = batch.column_names.index(name)
        return batch.set_column(i, pa.field(name, arr.type), arr)
    return batch.append_column(pa.field(name, arr.type), arr)


def _existing_artifacts(batch: pa.Table) -> _Entries | None:
    """Entries already in the column (a second offloader in the chain, or a replay) are kept first."""
    if "artifacts" not in batch.column_names:
        return None
    col = single_array(batch.column("artifacts"))
    if col.null_count == len(col):
        return None
    if col.type != ARTIFACTS_TYPE:
        col = col.cast(ARTIFACTS_TYPE)
    offsets, values = _list_parts(col)
    rows = pc.list_parent_indices(pa.ListArray.from_arrays(offsets, values))
    return _Entries(rows.cast(pa.int64()), values, offsets.cast(pa.int64()))


def _artifacts_column(components: list[_Entries], num_rows: int, had_existing: bool, batch: pa.Table) -> pa.Array:
    offsets = components[0].offsets
    for c in components[1:]:
        offsets = pc.add(offsets, c.offsets)
    if len(components) == 1:
        values = components[0].values
    else:
        rows = pa.concat_arrays([c.rows for c in components])
        source = pa.concat_arrays([pa.repeat(pa.scalar(i, pa.int8()), len(c.rows)) for i, c in enumerate(components)])
        order = pc.sort_indices(
            pa.table({"row": rows, "source": source}), sort_keys=[("row", "ascending"), ("source", "ascending")]
        )
        values = pa.concat_arrays([c.values for c in components]).take(order)
    empty = pc.equal(pc.subtract(offsets.slice(1), offsets.slice(0, num_rows)), 0)
    if had_existing:  # an empty list that was there stays an empty list
        empty = pc.and_(empty, single_array(batch.column("artifacts")).is_null())
    mask = empty if pc.any(empty).as_py() else None
    return pa.ListArray.from_arrays(offsets.cast(pa.int32()), values, type=ARTIFACTS_TYPE, mask=mask)
