"""PiiRedactor: typed placeholders instead of PII, in every string a span carries, at column speed.

The fast path, per batch (details and measurements in README.md):
1. Every string the span carries becomes one entry of one flat table: span attributes, resource attributes,
   event attributes, link attributes (the flattened MapArray keys/items, with the row each belongs to) and
   `status_message` (under the key `status_message`).
2. Keys are classified once per distinct key (dictionary-encoded, cached across batches): action (redact,
   mask, hash, drop, or not scanned) and whether the key is free text for NER or names a secret.
3. One RE2 match (`match_substring_regex`, one combined pattern, no captures: RE2 runs it as a DFA) over all
   scanned values says which hold a candidate. A value without one is done: no Python touches it. Values that
   are exactly an IPv4 address are replaced right there.
4. The flagged values are looked up in a cache by content; only misses go on. One RE2 replace over the misses
   wraps every candidate in marker characters; Python splits at the markers and validates each candidate on
   the matched substring (Luhn, IBAN checksum, libphonenumber, …), never scanning the text itself. The
   patterns accept a JSON escape where they need a word boundary, so `\\nsk-…` in raw JSON is still found.
5. NER (spaCy through Presidio) reads only `ner_keys` values, at most `ner_max_chars` each, batched through
   `nlp.pipe`, cached per text.
6. Changed values go back with `replace_with_mask`; maps, events and links are rebuilt from their offsets;
   typed columns copied from changed attributes are mapped with `index_in`.

JSON-valued attributes stay valid JSON: on the pattern path the placeholder replaces the match in place
(placeholders need no escaping); when a match could touch JSON syntax the result is parsed to prove it, and
when that fails, and always for NER, the JSON is parsed, its string leaves redacted, and re-serialized.
Object keys are never changed.

Raw values are never logged; `stats` counts entity types, `counters` the work done.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.schema import SPANS
from processors.base import ProcessorContext
from processors.redact_pii import engine as engine_mod
from processors.redact_pii.config import DEFAULT_HASH_KEYS, RedactPiiConfig
from processors.redact_pii.recognizers import (
    IP_ADDRESS,
    MARKERS_RE,
    NER_ENTITIES,
    SECRET,
    SECRET_ENTITIES,
    SECRET_PATTERNS,
    STRUCTURED_ENTITIES,
    WHOLE_IPV4,
    Finding,
    Scanner,
    Validators,
    is_secret_key,
    resolve,
    strip_named_groups,
)

log = logging.getLogger("tracelake.processor.redact_pii")

STATUS_KEY = "status_message"
# typed columns the normalizer copies out of the attribute maps (pipeline.conventions): kept in step with
# the redacted maps by _fix_derived
DERIVED_COLUMNS = (
    "service_name",
    "provider",
    "request_model",
    "response_model",
    "finish_reason",
    "tool_name",
    "session_id",
    "user_id",
    "tenant_id",
    "prompt_version",
)
PII_FOUND_TYPE = SPANS.field("pii_found").type
MIN_HASH_KEY_BYTES = 16

# action codes (low 3 bits) and flags of a classified key
KEEP, REDACT, MASK, HASH, DROP = 0, 1, 2, 3, 4
ACTION_CODES = {"redact": REDACT, "mask": MASK, "hash": HASH, "drop": DROP}
F_NER, F_SECRET_KEY = 8, 16

_PRIORITY = {**{e: 3 for e in SECRET_ENTITIES}, **{e: 2 for e in STRUCTURED_ENTITIES}, **{e: 1 for e in NER_ENTITIES}}
_PROSE = re.compile(r"[A-Z]")  # NER looks only at leaves with a capital letter: names are capitalised


Result = tuple[str | None, tuple[tuple[str, int], ...]]  # (new value or None if unchanged, entity counts)
CacheKey = tuple[int, str | bytes]  # (key class, value or its digest)


class HashKeyMissing(RuntimeError):
    """`hash` is configured (it is by default, for user ids) but no key could be read."""


def read_hash_key(config: RedactPiiConfig) -> bytes:
    """The HMAC key: from the environment variable, else from hash_key_file. No silent default: a key that
    every install derives the same way would make the hashes reversible by anyone with a list of user ids."""
    raw = os.environ.get(config.hash_key_env, "")
    source = f"environment variable {config.hash_key_env}"
    if not raw and config.hash_key_file:
        path = Path(config.hash_key_file)
        source = f"hash_key_file {path}"
        try:
            if config.create_hash_key_file and not path.exists():
                _create_key_file(path)
            raw = path.read_text().strip()
        except OSError as e:
            raise HashKeyMissing(f"redact_pii: cannot read {source}: {e.strerror}") from None
    if not raw:
        raise HashKeyMissing(
            f"redact_pii: `hash` needs an HMAC key (user ids are hashed by default) and {source} is not set. "
            f"Set it to a random secret shared by every tracelake process writing the same lake, e.g. "
            f"`export {config.hash_key_env}=$(openssl rand -hex 32)`, or point hash_key_file at a file that holds "
            f"it. Changing the key changes every hashed id."
        )
    key = raw.encode()
    if len(key) < MIN_HASH_KEY_BYTES:
        raise HashKeyMissing(f"redact_pii: the key from {source} is shorter than {MIN_HASH_KEY_BYTES} bytes")
    return key


def _create_key_file(path: Path) -> None:
    """A fresh 256-bit key, readable by this user only; O_EXCL so two processes starting together agree."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    log.warning("redact_pii: created a new hash key in %s; keep it: a new key changes every hashed id", path)


def hash_value(key: bytes, value: str) -> str:
    """HMAC-SHA256, hex, 128 bits: same id → same token (joinable), not reversible without the key."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass
class _Entries:
    """Every string of the batch as one flat array, with the key it is stored under and its row."""

    keys: pa.Array
    values: pa.Array
    rows: np.ndarray
    # (source name, start, end) ranges in the flat arrays
    ranges: list[tuple[str, int, int]] = field(default_factory=list)


@dataclass
class _MapParts:
    offsets: np.ndarray  # rebased to 0, len(maps) + 1
    keys: pa.Array
    items: pa.Array
    mask: pa.Array | None
    type: pa.DataType

    @classmethod
    def of(cls, arr: pa.MapArray) -> _MapParts:
        offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        start, end = int(offsets[0]), int(offsets[-1])
        return cls(
            offsets - start,
            arr.keys.slice(start, end - start),
            arr.items.slice(start, end - start),
            arr.is_null() if arr.null_count else None,
            arr.type,
        )

    def parents(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))

    def rebuild(self, items: pa.Array, keep: np.ndarray | None) -> pa.MapArray:
        keys, offsets = self.keys, self.offsets
        if keep is not None:
            kept = np.concatenate([[0], np.cumsum(keep)])
            offsets = kept[offsets]
            mask = pa.array(keep)
            keys, items = keys.filter(mask), items.filter(mask)
        return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), keys, items, type=self.type, mask=self.mask)


@dataclass
class _Nested:
    """list<struct<…, attributes map>> (events, links) taken apart down to the attribute maps."""

    list_offsets: np.ndarray
    list_mask: pa.Array | None
    struct: pa.StructArray
    maps: _MapParts
    rows: np.ndarray  # row of every map entry

    @classmethod
    def of(cls, arr: pa.ListArray) -> _Nested:
        offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        struct = arr.flatten()  # sliced to this array's range
        # StructArray.flatten (unlike .field) honours the struct's own offset
        children = dict(zip([f.name for f in struct.type], struct.flatten(), strict=True))
        maps = _MapParts.of(children["attributes"])
        item_rows = np.repeat(np.arange(len(arr)), np.diff(offsets))
        return cls(
            offsets - offsets[0], arr.is_null() if arr.null_count else None, struct, maps, item_rows[maps.parents()]
        )

    def rebuild(self, items: pa.Array, keep: np.ndarray | None) -> pa.ListArray:
        fields = list(self.struct.type)
        children = list(self.struct.flatten())
        children[self.struct.type.get_field_index("attributes")] = self.maps.rebuild(items, keep)
        mask = self.struct.is_null() if self.struct.null_count else None
        struct = pa.StructArray.from_arrays(children, fields=fields, mask=mask)
        return pa.ListArray.from_arrays(pa.array(self.list_offsets, pa.int32()), struct, mask=self.list_mask)


@dataclass
class _Leaf:
    text: str
    findings: list[Finding]
    holder: Any = None  # dict or list holding the leaf in the parsed JSON, None for a plain value
    slot: Any = None


@dataclass
class _Work:
    """One value that needs Python: its leaves (one for plain text) and what to do with it."""

    value: str
    action: int
    ner: bool
    cache_key: CacheKey | None
    leaves: list[_Leaf]
    doc: Any = None  # parsed JSON (leaf path)
    raw_json: bool = False  # placeholders go into the JSON text in place; verified afterwards
    ner_jobs: list[tuple[int, str]] = field(default_factory=list)  # (leaf index, text for spaCy)


class PiiRedactor:
    """The `redact_pii` processor. Not thread-safe (the worker and the ingest chain call it serially)."""

    def __init__(self, config: RedactPiiConfig | None = None, context: ProcessorContext | None = None) -> None:
        self.config = config = config or RedactPiiConfig()
        self.context = context or ProcessorContext(processor_id="redact_pii")
        wanted = config.wanted_entities()
        self.stats: dict[str, int] = dict.fromkeys(sorted(wanted), 0)
        self.counters: dict[str, int] = Counter()
        self.ner_model = self._resolve_ner(wanted)
        self.pattern_entities = frozenset(wanted - set(NER_ENTITIES))
        self.scanner = Scanner(self.pattern_entities, Validators(config.phone_regions))
        self.engine: engine_mod.PresidioEngine | None = None
        if self.ner_model or config.detector == "presidio":
            self.engine = engine_mod.build_engine(self.ner_model, self._secret_recognizers())
        self.allow = {v.casefold() for v in config.allow_values}
        self.actions = self._action_globs()
        self.hash_key = read_hash_key(config) if any(a == "hash" for _g, a in self.actions) else b""
        self._key_codes: dict[str, int] = {}
        self._cache: OrderedDict[CacheKey, tuple[str | None, tuple[tuple[str, int], ...]]] = OrderedDict()
        self._hash_cache: OrderedDict[str, str] = OrderedDict()
        self._ner_cache: OrderedDict[bytes, tuple[tuple[int, int, str], ...]] = OrderedDict()
        self._entry_codes = np.zeros(0, np.int8)

    def reset_caches(self) -> None:
        """Forget every cached result (benchmarks; a changed allow-list needs a new processor anyway)."""
        self._cache.clear()
        self._ner_cache.clear()
        self._hash_cache.clear()

    def analyze_value(self, key: str, value: str) -> list[tuple[str, str]]:
        """(entity, text) that process() finds in one value stored under `key`: for the corpus score and for
        debugging a miss. Never call it on the hot path (one RE2 compile per call)."""
        code = self.key_code(key)
        if code & 7 not in (REDACT, MASK) or not value:
            return []
        if code & F_SECRET_KEY:
            _new, counts = self._secret_value(value, code & 7)
            return [(SECRET, value)] if counts else []
        arr = pa.array([value], pa.string())
        flagged = bool(self.scanner.match_column(arr)[0])
        clash = bool(pc.match_substring_regex(arr, MARKERS_RE)[0].as_py())
        marked = self.scanner.mark_column(arr)[0].as_py() if flagged and not clash else None
        work = self._prepare(value, marked, flagged, code & 7, bool(code & F_NER), None)
        self._run_ner([work] if work.ner_jobs else [])
        out = []
        for leaf in work.leaves:
            kept = [f for f in leaf.findings if leaf.text[f.start : f.end].casefold() not in self.allow]
            out.extend((f.entity, leaf.text[f.start : f.end]) for f in resolve(kept, _PRIORITY))
        return out

    # -- build ----------------------------------------------------------------------------------------
    def _resolve_ner(self, wanted: frozenset[str]) -> str | None:
        cfg = self.config
        if cfg.ner == "off" or cfg.ner_max_chars == 0 or not (wanted & set(NER_ENTITIES)):
            return None
        model = engine_mod.find_ner_model(cfg.ner_model)
        if model is None:
            tried = cfg.ner_model or ", ".join(engine_mod.DEFAULT_NER_MODELS)
            if cfg.ner == "on":
                raise RuntimeError(f"redact_pii: ner: on, but no spaCy model package is importable (tried {tried})")
            log.info("redact_pii: no spaCy model importable (%s): PERSON/LOCATION are not detected", tried)
        return model

    def _secret_recognizers(self) -> list[Any]:
        """Our secret patterns as Presidio recognizers, for `detector: presidio`."""
        if self.config.detector != "presidio":
            return []
        from presidio_analyzer import Pattern, PatternRecognizer

        out = []
        for entity in sorted({e for e, _p in SECRET_PATTERNS} & self.pattern_entities):
            patterns = [Pattern(entity, strip_named_groups(p), 0.9) for e, p in SECRET_PATTERNS if e == entity]
            out.append(PatternRecognizer(supported_entity=entity, patterns=patterns, name=f"tracelake_{entity}"))
        return out

    def _action_globs(self) -> list[tuple[str, str]]:
        """Your key_actions first (in the order written), then the defaults: the first matching glob wins."""
        defaults = {k: "hash" for k in (*DEFAULT_HASH_KEYS, *self.context.normalizer.keys.user)}
        out = list(self.config.key_actions.items())
        out += [(g, a) for g, a in defaults.items() if g not in self.config.key_actions]
        return out

    def key_code(self, key: str) -> int:
        """Action (low 3 bits) and flags of a key, from the globs; cached, since keys repeat in every span."""
        code = self._key_codes.get(key)
        if code is not None:
            return code
        if len(self._key_codes) > 100_000:  # indexed keys (llm.input_messages.<i>…) must not grow it forever
            self._key_codes.clear()
        cfg = self.config
        action = REDACT
        for glob, name in self.actions:
            if fnmatchcase(key, glob):
                action = ACTION_CODES[name]
                break
        scanned = any(fnmatchcase(key, g) for g in cfg.include_keys) and not any(
            fnmatchcase(key, g) for g in cfg.exclude_keys
        )
        if action in (REDACT, MASK) and not scanned:
            action = KEEP
        code = action
        if action in (REDACT, MASK):
            if self.ner_model and any(fnmatchcase(key, g) for g in cfg.ner_keys):
                code |= F_NER
            if SECRET in self.pattern_entities and is_secret_key(key):
                code |= F_SECRET_KEY
        self._key_codes[key] = code
        return code

    # -- the batch ------------------------------------------------------------------------------------
    def process(self, batch: pa.Table) -> pa.Table:
        if batch.num_rows == 0:
            return batch
        n = batch.num_rows
        attrs = _MapParts.of(batch.column("attributes").combine_chunks())
        resource = _MapParts.of(batch.column("resource_attributes").combine_chunks())
        events = _Nested.of(batch.column("events").combine_chunks())
        links = _Nested.of(batch.column("links").combine_chunks())
        status = batch.column("status_message").combine_chunks()
        status = status.cast(pa.string()) if status.type != pa.string() else status
        status_keys = pa.array([STATUS_KEY] * n, pa.string())

        parts = [
            ("attributes", attrs.keys, attrs.items, attrs.parents()),
            ("resource_attributes", resource.keys, resource.items, resource.parents()),
            ("events", events.maps.keys, events.maps.items, events.rows),
            ("links", links.maps.keys, links.maps.items, links.rows),
            ("status_message", status_keys, status, np.arange(n)),
        ]
        ranges, pos = [], 0
        for name, keys, _v, _r in parts:
            ranges.append((name, pos, pos + len(keys)))
            pos += len(keys)
        entries = _Entries(
            pa.concat_arrays([p[1] for p in parts]),
            pa.concat_arrays([p[2] for p in parts]),
            np.concatenate([p[3] for p in parts]),
            ranges,
        )
        new_values, keep, row_counts, changed_idx = self._redact_entries(entries, n)
        self.counters["spans"] += n
        self.counters["batches"] += 1
        if new_values is None and keep is None and not row_counts:
            return self._with_pii_found(batch, row_counts)

        def piece(name: str) -> tuple[pa.Array, np.ndarray | None]:
            _name, start, end = next(r for r in ranges if r[0] == name)
            values = (new_values if new_values is not None else entries.values).slice(start, end - start)
            return values, (keep[start:end] if keep is not None and not keep[start:end].all() else None)

        def touched(name: str) -> bool:
            _name, start, end = next(r for r in ranges if r[0] == name)
            hit = bool(((changed_idx >= start) & (changed_idx < end)).any())
            return hit or (keep is not None and not keep[start:end].all())

        out = batch
        changed_maps = False
        for name, parts_ in (("attributes", attrs), ("resource_attributes", resource)):
            if touched(name):
                values, kept = piece(name)
                out = _set(out, name, parts_.rebuild(values, kept))
                changed_maps = True
        for name, nested in (("events", events), ("links", links)):
            if touched(name):
                values, kept = piece(name)
                out = _set(out, name, nested.rebuild(values, kept))
        if touched("status_message"):
            values, kept = piece("status_message")
            if kept is not None:
                values = pc.if_else(pa.array(kept), values, pa.scalar(None, pa.string()))
            out = _set(out, "status_message", values)
        out = self._with_pii_found(out, row_counts)
        if changed_maps:
            out = self._fix_derived(out, entries, new_values, keep, changed_idx)
        return out

    def _fix_derived(
        self,
        batch: pa.Table,
        entries: _Entries,
        new_values: pa.Array | None,
        keep: np.ndarray | None,
        changed_idx: np.ndarray,
    ) -> pa.Table:
        """Typed columns (user_id, session_id, request_model, …) are copies of attribute values made by the
        normalizer. Re-running it costs as much as the whole redaction, so the copies are mapped instead: a
        typed value equal to an attribute value that changed takes the new value (the hash for user_id), one
        equal to a dropped value becomes null. Same result as normalizing the redacted maps, at `index_in` cost."""
        _n, _s, end = next(r for r in entries.ranges if r[0] == "resource_attributes")
        idx = changed_idx[changed_idx < end]
        if new_values is None:
            idx = idx[:0]
        # index_in takes the first equal value: hashed ids first (user_id must be the joinable token, not a
        # redacted copy of the same text), then other changes, then dropped values (→ null)
        is_hash = (self._entry_codes[idx] & 7) == HASH
        order = np.concatenate([idx[is_hash], idx[~is_hash]])
        olds = [entries.values.take(pa.array(order))]
        news = [new_values.take(pa.array(order))] if new_values is not None else []
        if keep is not None:
            dropped = entries.values.slice(0, end).filter(pa.array(~keep[:end]))
            olds.append(dropped)
            news.append(pa.nulls(len(dropped), pa.string()))
        value_set = pa.concat_arrays(olds)
        if not len(value_set):
            return batch
        replacements = pa.concat_arrays(news)
        for name in DERIVED_COLUMNS:
            if name not in batch.column_names:
                continue
            col = batch.column(name).combine_chunks()
            if col.type != pa.string() or col.null_count == len(col):
                continue
            pos = pc.index_in(col, value_set=value_set)
            if pos.null_count == len(pos):
                continue
            batch = _set(batch, name, pc.if_else(pc.is_valid(pos), replacements.take(pos), col))
        return batch

    def _redact_entries(
        self, entries: _Entries, n_rows: int
    ) -> tuple[pa.Array | None, np.ndarray | None, dict[int, Counter[str]], np.ndarray]:
        keys, values = entries.keys, entries.values
        encoded = keys.dictionary_encode()
        dictionary = encoded.dictionary.to_pylist()
        dict_codes = np.array([self.key_code(k) for k in dictionary], dtype=np.int8)
        codes = dict_codes[encoded.indices.to_numpy(zero_copy_only=False)] if len(dictionary) else np.zeros(0, np.int8)
        self._entry_codes = codes
        action = codes & 7
        valid = values.is_valid().to_numpy(zero_copy_only=False) if values.null_count else np.ones(len(values), bool)
        self.counters["values"] += len(values)

        changed: dict[int, str] = {}
        row_counts: dict[int, Counter[str]] = {}
        keep: np.ndarray | None = None
        drop = action == DROP
        if drop.any():
            keep = ~drop
            self.counters["dropped"] += int(drop.sum())

        hash_idx = np.flatnonzero((action == HASH) & valid)
        if len(hash_idx):
            for i, v in zip(hash_idx.tolist(), values.take(pa.array(hash_idx)).to_pylist(), strict=True):
                if v:
                    changed[i] = self._hash(v)
            self.counters["hashed"] += len(hash_idx)

        scan = ((action == REDACT) | (action == MASK)) & valid
        if scan.any():
            self._scan(scan, codes, values, entries.rows, changed, row_counts)

        new_values = None
        idx = np.fromiter(sorted(changed), dtype=np.int64, count=len(changed))
        if changed:
            mask = np.zeros(len(values), bool)
            mask[idx] = True
            new_values = pc.replace_with_mask(values, pa.array(mask), pa.array([changed[i] for i in idx.tolist()]))
        return new_values, keep, row_counts, idx

    def _scan(
        self,
        scan: np.ndarray,
        codes: np.ndarray,
        values: pa.Array,
        rows: np.ndarray,
        changed: dict[int, str],
        row_counts: dict[int, Counter[str]],
    ) -> None:
        """`scan`: which entries are scanned. One RE2 match (a DFA, no captures) over the whole column says
        which values hold any candidate; only those, and NER/secret-named ones, are looked at in Python."""
        self.counters["scanned"] += int(scan.sum())
        flagged = self.scanner.match_column(values) & scan
        special = scan & ((codes & (F_NER | F_SECRET_KEY)) != 0)
        work = np.flatnonzero(flagged | special)
        self.counters["flagged"] += int(flagged.sum())
        if IP_ADDRESS in self.pattern_entities:
            done = self._whole_ips(flagged & ~special & ((codes & 7) == REDACT), values, rows, changed, row_counts)
            flagged[done] = False
            work = np.flatnonzero(flagged | special)
        if not len(work):
            return
        work_values = values.take(pa.array(work))
        originals = work_values.to_pylist()

        results: list[Result | None] = []
        misses: list[int] = []  # positions in `work` that need the capturing pass / NER
        keys: list[CacheKey | None] = []
        first: dict[CacheKey, int] = {}  # cache key → position of its first miss in this batch
        repeats: list[tuple[int, int]] = []
        for j, entry in enumerate(work.tolist()):
            code = int(codes[entry])
            value = originals[j]
            key = None
            hit: Result | None = None
            if code & F_SECRET_KEY:
                hit = self._secret_value(value, code & 7)
            elif self.config.cache_size:
                key = self._cache_key(value, code)
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    self.counters["cache_hits"] += 1
                elif key in first:
                    repeats.append((j, first[key]))
                    self.counters["cache_hits"] += 1
                else:
                    first[key] = j
                    misses.append(j)
            else:
                misses.append(j)
            results.append(hit)
            keys.append(key)
        if misses:
            self._redact_misses(misses, work, flagged, codes, originals, work_values, keys, results)
        for j, k in repeats:
            results[j] = results[k]

        for entry, result in zip(work.tolist(), results, strict=True):
            assert result is not None
            new_value, counts = result
            if new_value is not None:
                changed[entry] = new_value
            if counts:
                bucket = row_counts.setdefault(int(rows[entry]), Counter())
                for entity, count in counts:
                    bucket[entity] += count
                    self.stats[entity] = self.stats.get(entity, 0) + count

    def _whole_ips(
        self,
        candidates: np.ndarray,
        values: pa.Array,
        rows: np.ndarray,
        changed: dict[int, str],
        row_counts: dict[int, Counter[str]],
    ) -> np.ndarray:
        """Values that are one IPv4 address and nothing else (client.address, net.peer.ip on every server
        span) are replaced without the per-value Python path. Returns the entries it handled."""
        idx = np.flatnonzero(candidates)
        if not len(idx):
            return idx
        sub = values.take(pa.array(idx))
        whole = pc.match_substring_regex(sub, WHOLE_IPV4).to_numpy(zero_copy_only=False)
        if not whole.any():
            return idx[:0]
        placeholder = self.config.placeholder.format(entity=IP_ADDRESS)
        hits = idx[whole]
        n = 0
        for entry, text in zip(hits.tolist(), sub.filter(pa.array(whole)).to_pylist(), strict=True):
            if text.casefold() in self.allow:
                continue
            changed[entry] = placeholder
            row_counts.setdefault(int(rows[entry]), Counter())[IP_ADDRESS] += 1
            n += 1
        self.stats[IP_ADDRESS] = self.stats.get(IP_ADDRESS, 0) + n
        self.counters["whole_value_ips"] += n
        return hits

    def _redact_misses(
        self,
        misses: list[int],
        work: np.ndarray,
        flagged: np.ndarray,
        codes: np.ndarray,
        originals: list[str],
        work_values: pa.Array,
        keys: list[CacheKey | None],
        results: list[Result | None],
    ) -> None:
        """Values not in the cache: the marking RE2 pass on the flagged ones, NER on the NER ones."""
        entries = work[misses]
        is_flagged = flagged[entries]
        marked: list[str | None] = [None] * len(misses)
        if is_flagged.any():
            pick = np.flatnonzero(is_flagged)
            sub = work_values.take(pa.array(np.asarray(misses)[pick]))
            # a value that already holds a marker character cannot be split at markers: Python scans it
            clash = pc.match_substring_regex(sub, MARKERS_RE).to_numpy(zero_copy_only=False)
            for k, m in zip(pick.tolist(), self.scanner.mark_column(sub).to_pylist(), strict=True):
                marked[k] = m
            for k in pick[clash].tolist():
                marked[k] = None
        works: list[tuple[int, _Work]] = []
        for k, j in enumerate(misses):
            code = int(codes[entries[k]])
            item = self._prepare(originals[j], marked[k], bool(is_flagged[k]), code & 7, bool(code & F_NER), keys[j])
            works.append((j, item))
        self._run_ner([w for _j, w in works if w.ner_jobs])
        for j, w in works:
            result = self._finish(w)
            if w.cache_key is not None:
                self._remember(w.cache_key, result)
            results[j] = result

    # -- one value --------------------------------------------------------------------------------------
    def _cache_key(self, value: str, code: int) -> CacheKey:
        """Short values are their own key (str hashes are cached by Python); long ones a 128-bit digest, so that
        the cache does not hold megabytes of prompts."""
        if len(value) <= 256:
            return (code, value)
        return (code, hashlib.blake2b(value.encode(), digest_size=16).digest())

    def _remember(self, key: CacheKey, result: tuple[str | None, tuple[tuple[str, int], ...]]) -> None:
        self._cache[key] = result
        self.counters["cache_misses"] += 1
        if len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)

    def _hash(self, value: str) -> str:
        hit = self._hash_cache.get(value)
        if hit is None:
            hit = self._hash_cache[value] = hash_value(self.hash_key, value)
            if len(self._hash_cache) > max(self.config.cache_size, 1):
                self._hash_cache.popitem(last=False)
        return hit

    def _secret_value(self, value: str, action: int) -> tuple[str | None, tuple[tuple[str, int], ...]]:
        """The whole value of a key named like a secret (`password`, `x-api-key`, `db.password`)."""
        if not value or value.casefold() in self.allow or _is_placeholder(value):
            return None, ()
        return self._replacement(value, SECRET, action), ((SECRET, 1),)

    def _prepare(
        self,
        value: str,
        marked: str | None,
        flagged: bool,
        action: int,
        ner: bool,
        cache_key: CacheKey | None,
    ) -> _Work:
        """Pattern findings now; NER text gathered for one batched spaCy run; replacement in _finish."""
        work = _Work(value, action, ner, cache_key, [])
        presidio = self.config.detector == "presidio"
        doc = _parse_json(value) if (ner or presidio) and _looks_json(value) else None
        if doc is not None:
            # leaf path: NER must read decoded text; the placeholders are put into the leaves
            work.doc = doc
            for holder, slot, parent_key, text in _string_leaves(doc):
                if parent_key is not None and SECRET in self.pattern_entities and is_secret_key(parent_key):
                    findings = [] if _is_placeholder(text) else [Finding(0, len(text), SECRET)]
                else:
                    findings = self._detect(text, None) if flagged else []
                work.leaves.append(_Leaf(text, findings, holder, slot))
        else:
            work.raw_json = _looks_json(value)
            findings = self._detect(value, marked) if flagged else []
            work.leaves.append(_Leaf(value, findings))
        if ner:
            self._ner_jobs(work)
        return work

    def _detect(self, text: str, marked: str | None) -> list[Finding]:
        if self.config.detector == "presidio":
            return self._presidio(text)
        if marked is not None:
            return self.scanner.parse_marked(text, marked)
        return self.scanner.scan_text(text)

    def _presidio(self, text: str) -> list[Finding]:
        """`detector: presidio`: Presidio's recognizers decide (secrets still come from our patterns)."""
        assert self.engine is not None
        structured = sorted(self.pattern_entities & set(STRUCTURED_ENTITIES))
        out = [Finding(s, e, t) for s, e, t, _score in self.engine.analyze(text, structured, self.config.min_score)]
        secrets = [f for f in self.scanner.scan_text(text) if f.entity in SECRET_ENTITIES]
        return out + secrets

    def _ner_jobs(self, work: _Work) -> None:
        """The leaves NER reads: prose-like ones, within ner_max_chars for the whole value."""
        budget = self.config.ner_max_chars
        for i, leaf in enumerate(work.leaves):
            if budget <= 0:
                break
            if len(leaf.text) < 3 or not _PROSE.search(leaf.text):
                continue
            text = leaf.text[:budget]
            work.ner_jobs.append((i, text))
            budget -= len(text)

    def _run_ner(self, works: list[_Work]) -> None:
        """One spaCy pass (nlp.pipe) over the distinct uncached texts of the batch. Cached per leaf text:
        chat histories resend earlier messages on every call, and those are NER'd once."""
        if not works or self.engine is None:
            return
        todo: dict[bytes, str] = {}
        for work in works:
            for _i, text in work.ner_jobs:
                key = _digest(text)
                if key not in self._ner_cache and key not in todo:
                    todo[key] = text
        self.counters["ner_texts"] += len(todo)
        self.counters["ner_chars"] += sum(len(t) for t in todo.values())
        if todo:
            results = self.engine.analyze_ner(list(todo.values()), self.config.min_score)
            for key, spans in zip(todo, results, strict=True):
                self._ner_cache[key] = tuple(spans)
        for work in works:
            for i, text in work.ner_jobs:
                key = _digest(text)
                spans = self._ner_cache.get(key, ())
                self._ner_cache.move_to_end(key)
                work.leaves[i].findings.extend(Finding(s, e, entity) for s, e, entity in spans)
        while len(self._ner_cache) > max(self.config.cache_size, len(todo)):
            self._ner_cache.popitem(last=False)

    def _finish(self, work: _Work) -> tuple[str | None, tuple[tuple[str, int], ...]]:
        counts: Counter[str] = Counter()
        new_texts = [self._apply(leaf.text, leaf.findings, work.action, counts) for leaf in work.leaves]
        if not counts:
            return None, ()
        if work.doc is None:
            new = new_texts[0]
            # a match that may touch JSON syntax (a number, a quote, an escape): prove the result still parses,
            # else redo the value on its decoded leaves
            if (
                work.raw_json
                and not _inside_strings(work.value, work.leaves[0].findings)
                and _parse_json(work.value) is not None
                and _parse_json(new) is None
            ):
                return self._finish_leaves(work)
            return new, tuple(sorted(counts.items()))
        for leaf, text in zip(work.leaves, new_texts, strict=True):
            if text != leaf.text:
                leaf.holder[leaf.slot] = text  # a redacted number leaf becomes a string
        return _dump_like(work.doc, work.value), tuple(sorted(counts.items()))

    def _finish_leaves(self, work: _Work) -> tuple[str | None, tuple[tuple[str, int], ...]]:
        self.counters["json_fallbacks"] += 1
        leaf_work = _Work(work.value, work.action, False, None, [], doc=_parse_json(work.value))
        for holder, slot, parent_key, text in _string_leaves(leaf_work.doc):
            if parent_key is not None and SECRET in self.pattern_entities and is_secret_key(parent_key):
                findings = [] if _is_placeholder(text) else [Finding(0, len(text), SECRET)]
            else:
                findings = self._detect(text, None)
            leaf_work.leaves.append(_Leaf(text, findings, holder, slot))
        return self._finish(leaf_work)

    def _apply(self, text: str, findings: list[Finding], action: int, counts: Counter[str]) -> str:
        if not findings:
            return text
        kept = [f for f in findings if text[f.start : f.end].casefold() not in self.allow]
        out, pos = [], 0
        for f in resolve(kept, _PRIORITY):
            out.append(text[pos : f.start])
            out.append(self._replacement(text[f.start : f.end], f.entity, action))
            counts[f.entity] += 1
            pos = f.end
        out.append(text[pos:])
        return "".join(out)

    def _replacement(self, text: str, entity: str, action: int) -> str:
        if action == MASK:
            keep = min(self.config.mask_keep_last, len(text) // 2)
            return self.config.mask_char * (len(text) - keep) + (text[len(text) - keep :] if keep else "")
        return self.config.placeholder.format(entity=entity)

    def _with_pii_found(self, batch: pa.Table, row_counts: dict[int, Counter[str]]) -> pa.Table:
        """Entity type → count per span, added to what an earlier redact_pii (e.g. in `ingest`) recorded."""
        n = batch.num_rows
        existing = batch.column("pii_found").combine_chunks() if "pii_found" in batch.column_names else None
        if existing is not None and existing.null_count < len(existing) and len(existing.keys):
            for row, pairs in enumerate(existing.to_pylist()):
                for entity, count in pairs or []:
                    row_counts.setdefault(row, Counter())[entity] += count
        per_row = np.zeros(n + 1, np.int64)
        keys: list[str] = []
        counts: list[int] = []
        for row in sorted(row_counts):
            c = row_counts[row]
            for entity in sorted(c):
                keys.append(entity)
                counts.append(c[entity])
            per_row[row + 1] = len(c)
        offsets = np.cumsum(per_row)
        found = pa.MapArray.from_arrays(
            pa.array(offsets, pa.int32()),
            pa.array(keys, pa.string()),
            pa.array(counts, pa.int32()),
            type=PII_FOUND_TYPE,
        )
        return _set(batch, "pii_found", found)


# -- helpers ---------------------------------------------------------------------------------------------
def _set(table: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    idx = table.schema.get_field_index(name)
    if idx < 0:
        return table.append_column(pa.field(name, arr.type), arr)
    field_ = table.schema.field(idx)
    return table.set_column(idx, field_, arr.cast(field_.type) if arr.type != field_.type else arr)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _inside_strings(value: str, findings: list[Finding]) -> bool:
    """True when every finding lies inside one JSON string literal (odd number of unescaped quotes before
    it) and holds no quote or backslash: replacing it keeps the document valid without parsing it twice.
    An escaped backslash anywhere makes quote parity ambiguous: then False, and the caller parses."""
    if "\\\\" in value:
        return False
    for f in findings:
        piece = value[f.start : f.end]
        if '"' in piece or "\\" in piece or (f.start and value[f.start - 1] == "\\"):
            return False
        if (value.count('"', 0, f.start) - value.count('\\"', 0, f.start)) % 2 == 0:
            return False
    return True


def _looks_json(value: str) -> bool:
    head = value[:64].lstrip()[:1]
    return head in ("{", "[")


def _parse_json(value: str) -> Any:
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    return doc if isinstance(doc, dict | list) else None


def _string_leaves(doc: Any, parent_key: str | None = None):
    """(holder, slot, parent key, text) for every string (and long integer) in a parsed JSON document;
    object keys are not leaves."""
    stack: list[tuple[Any, str | None]] = [(doc, parent_key)]
    while stack:
        node, pkey = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for slot, child in items:
            key = slot if isinstance(node, dict) else pkey
            if isinstance(child, str):
                yield node, slot, key, child
            elif isinstance(child, int) and not isinstance(child, bool) and abs(child) >= 1_000_000:
                yield node, slot, key, str(child)  # card or phone numbers sent as JSON numbers
            elif isinstance(child, dict | list):
                stack.append((child, key))


def _dump_like(doc: Any, original: str) -> str:
    """Re-serialize in the original's style (compact or spaced, ASCII-escaped or not)."""
    compact = '":' in original and '": ' not in original
    return json.dumps(
        doc,
        ensure_ascii="\\u" in original,
        separators=(",", ":") if compact else (", ", ": "),
    )


def _is_placeholder(value: str) -> bool:
    v = value.strip()
    return not v or (v.startswith("<") and v.endswith(">")) or set(v) <= {"*"}
