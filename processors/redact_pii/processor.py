"""PiiRedactor: typed placeholders instead of PII, in every string a span carries, at column speed.

The fast path, per batch (details and measurements in README.md):
1. Every string the span carries becomes one entry of one flat table (`entries.BatchStrings`).
2. Keys are classified once per distinct key (dictionary-encoded, cached across batches): action (redact,
   mask, hash, drop, or not scanned) and whether the key is free text for NER or names a secret.
3. `hash` values become tokens (`hash_key`); a value that already is a token stays (hash once, whatever
   the chain).
4. One RE2 match (one combined pattern, no captures: a DFA) over all scanned values says which hold a
   candidate. A value without one is done: no Python touches it. Values that are exactly an IPv4 address
   are replaced right there, on the column.
5. The flagged values, and NER values, are looked up in a cache by content; only misses go on. One RE2
   replace over the misses wraps every candidate in markers that also say its kind; Python validates each
   candidate substring (Luhn, IBAN checksum, libphonenumber, …), never scanning the text itself.
6. NER (`names.NameFinder`) reads the words around name-like tokens of `ner_keys` values only.
7. Changed values go back with `replace_with_mask`, only the changed columns are rebuilt, and typed
   columns copied from changed attributes are mapped with `index_in`.

Raw values are never logged; `stats` counts entity types, `counters` the work done.
"""

from __future__ import annotations

import gc
import hashlib
import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.maps import MapColumn
from core.processor import ProcessorContext
from core.schema import SPANS
from processors.redact_pii import engine as engine_mod
from processors.redact_pii.allow_deny import AllowList, DenyList
from processors.redact_pii.config import DEFAULT_HASH_KEYS, RedactPiiConfig
from processors.redact_pii.entries import BatchStrings, set_column
from processors.redact_pii.hash_key import TOKEN_RE, HashKeyMissing, hash_value, read_hash_key
from processors.redact_pii.json_leaves import dump_like, inside_strings, looks_json, parse_json, string_leaves
from processors.redact_pii.names import NameFinder
from processors.redact_pii.recognizers import (
    CLOSE,
    IP_ADDRESS,
    NER_ENTITIES,
    OPEN,
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

__all__ = ["HashKeyMissing", "PiiRedactor"]

log = logging.getLogger("tracelake.processor.redact_pii")

# typed columns the normalizer copies out of the attribute maps (core.conventions): kept in step with
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

# action codes (low 3 bits) and flags of a classified key
KEEP, REDACT, MASK, HASH, DROP = 0, 1, 2, 3, 4
ACTION_CODES = {"redact": REDACT, "mask": MASK, "hash": HASH, "drop": DROP}
F_NER, F_SECRET_KEY = 8, 16
# values this long are remembered by content when they hold no candidate (at most this many bytes of them)
CLEAN_LONG_MIN_BYTES = 1024
CLEAN_LONG_MAX_BYTES = 32 * 2**20

Counts = tuple[tuple[str, int], ...]
Result = tuple[str | None, Counts]  # (new value or None if unchanged, entity counts)
CacheKey = tuple[int, str | bytes]  # (key class, value or its digest)


@dataclass
class _Leaf:
    text: str
    findings: list[Finding] = field(default_factory=list)
    holder: Any = None  # dict or list holding the leaf in the parsed JSON, None for a plain value
    slot: Any = None


@dataclass
class _Work:
    """One value that needs Python: its leaves (one for plain text) and what to do with it."""

    value: str
    action: int
    ner: bool
    leaves: list[_Leaf]
    doc: Any = None  # parsed JSON (leaf path)


@dataclass
class _Found:
    """(row, entity, count) of what the batch found, for `pii_found`."""

    rows: list[int] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def add(self, row: int, counts: Counts) -> None:
        for entity, count in counts:
            self.rows.append(row)
            self.entities.append(entity)
            self.counts.append(count)


class PiiRedactor:
    """The `redact_pii` processor. Not thread-safe (the worker and the ingest chain call it serially)."""

    def __init__(self, config: RedactPiiConfig | None = None, context: ProcessorContext | None = None) -> None:
        self.config = config = config or RedactPiiConfig()
        self.context = context or ProcessorContext(processor_id="redact_pii")
        wanted = config.wanted_entities()
        self.deny = DenyList(dict(config.deny_list), dict(config.deny_list_regex))
        self.allow = AllowList.of(config.allow_list, config.allow_list_regex)
        self.stats: dict[str, int] = dict.fromkeys(sorted(wanted | self.deny.entities), 0)
        self.counters: Counter[str] = Counter()
        self.ner_model = self._resolve_ner(wanted)
        self.pattern_entities = frozenset(wanted - set(NER_ENTITIES))
        self.scanner = Scanner(self.pattern_entities, Validators(config.phone_regions), self.deny)
        self.priority = {
            **{e: 3 for e in SECRET_ENTITIES},
            **{e: 2 for e in STRUCTURED_ENTITIES},
            **{e: 1 for e in NER_ENTITIES},
            **{e: 4 for e in self.deny.entities},
        }
        self.engine: engine_mod.PresidioEngine | None = None
        self.names: NameFinder | None = None
        if self.ner_model or config.detector == "presidio":
            self.engine = engine_mod.build_engine(self.ner_model, self._secret_recognizers())
        if self.ner_model and self.engine is not None:
            self.names = NameFinder(self.engine.ner_batch, self.allow, config.cache_size, self.counters)
        self.placeholders: dict[str, str] = {}  # entity → its placeholder, formatted once
        self.actions = self._action_globs()
        self.hash_key = read_hash_key(config) if any(a == "hash" for _g, a in self.actions) else b""
        self._key_codes: dict[str, int] = {}
        self._cache: OrderedDict[CacheKey, Result] = OrderedDict()
        self._hash_cache: OrderedDict[str, str] = OrderedDict()
        self._clean_long: OrderedDict[str, None] = OrderedDict()  # long values without any candidate
        self._clean_long_bytes = 0
        self._entry_codes = np.zeros(0, np.int8)
        # spaCy, Presidio and libphonenumber's metadata are ~10^5 objects that live as long as the process. A
        # full collection walks every one of them: on prompt-heavy traffic one fired per batch and cost as much
        # as the redaction itself (0.2 s). Frozen, the collector never looks at them again.
        gc.freeze()

    def reset_caches(self) -> None:
        """Forget every cached result (benchmarks; a changed allow-list needs a new processor anyway)."""
        self._cache.clear()
        self._hash_cache.clear()
        self._clean_long.clear()
        self._clean_long_bytes = 0
        if self.names is not None:
            self.names.clear()

    def analyze_value(self, key: str, value: str) -> list[tuple[str, str]]:
        """(entity, text) that process() finds in one value stored under `key`: for the corpus score and for
        debugging a miss. Never call it on the hot path."""
        code = self.key_code(key)
        if code & 7 not in (REDACT, MASK) or not value:
            return []
        if code & F_SECRET_KEY:
            _new, counts = self._secret_value(value, code & 7)
            return [(SECRET, value)] if counts else []
        flagged = bool(self.scanner.match_column(pa.array([value], pa.string()))[0])
        work = self._prepare([value], [flagged], [code])[0]
        out: list[tuple[str, str]] = []
        for leaf in work.leaves:
            kept = [f for f in leaf.findings if not self.allow.allows(leaf.text[f.start : f.end])]
            out.extend((f.entity, leaf.text[f.start : f.end]) for f in resolve(kept, self.priority))
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
        out: list[tuple[str, str]] = list(self.config.key_actions.items())
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
        strings = BatchStrings.of(batch)
        keys, values = strings.keys, strings.values
        encoded = keys.dictionary_encode()
        dict_codes = np.array([self.key_code(k) for k in encoded.dictionary.to_pylist()], dtype=np.int8)
        codes = dict_codes[encoded.indices.to_numpy(zero_copy_only=False)] if len(dict_codes) else np.zeros(0, np.int8)
        self._entry_codes = codes
        action = codes & 7
        valid = values.is_valid().to_numpy(zero_copy_only=False) if values.null_count else np.ones(len(values), bool)
        self.counters["values"] += len(values)
        self.counters["spans"] += batch.num_rows
        self.counters["batches"] += 1

        changed: dict[int, str] = {}
        found = _Found()
        keep: np.ndarray | None = None
        drop = action == DROP
        if drop.any():
            keep = ~drop
            self.counters["dropped"] += int(drop.sum())
        self._hash_entries(np.flatnonzero((action == HASH) & valid), values, changed)
        scan = ((action == REDACT) | (action == MASK)) & valid
        if scan.any():
            self._scan(scan, codes, values, strings.rows, changed, found)

        new_values = None
        idx = np.fromiter(sorted(changed), dtype=np.int64, count=len(changed))
        if changed:
            mask = np.zeros(len(values), bool)
            mask[idx] = True
            new_values = pc.replace_with_mask(values, pa.array(mask), pa.array([changed[i] for i in idx.tolist()]))
        out, maps_changed = strings.rebuild(batch, new_values, keep, idx)
        out = self._with_pii_found(out, found)
        if maps_changed:
            end = strings.bounds["resource_attributes"][1]
            out = self._fix_derived(out, values, new_values, keep, idx[idx < end], end)
        return out

    def _hash_entries(self, idx: np.ndarray, values: pa.Array, changed: dict[int, str]) -> None:
        """`hash` values become tokens; values that already are tokens (an earlier redact_pii, e.g. in the
        receiver's ingest chain) stay as they are."""
        if not len(idx):
            return
        sub = values.take(pa.array(idx))
        fresh = ~pc.match_substring_regex(sub, TOKEN_RE).fill_null(True).to_numpy(zero_copy_only=False)
        todo = idx[fresh]
        for i, v in zip(todo.tolist(), sub.filter(pa.array(fresh)).to_pylist(), strict=True):
            if v:
                changed[i] = self._hash(v)
        self.counters["hashed"] += len(todo)

    def _fix_derived(
        self,
        batch: pa.Table,
        values: pa.Array,
        new_values: pa.Array | None,
        keep: np.ndarray | None,
        idx: np.ndarray,
        end: int,
    ) -> pa.Table:
        """Typed columns (user_id, session_id, request_model, …) are copies of attribute values made by the
        normalizer. Re-running it costs as much as the whole redaction, so the copies are mapped instead: a
        typed value equal to an attribute value that changed takes the new value (the hash for user_id), one
        equal to a dropped value becomes null. Same result as normalizing the redacted maps, at `index_in` cost.
        `idx`: changed entries of the span and resource attribute maps (the first `end` entries)."""
        if new_values is None:
            idx = idx[:0]
        # index_in takes the first equal value: hashed ids first (user_id must be the joinable token, not a
        # redacted copy of the same text), then other changes, then dropped values (→ null)
        is_hash = (self._entry_codes[idx] & 7) == HASH
        order = np.concatenate([idx[is_hash], idx[~is_hash]])
        olds = [values.take(pa.array(order))]
        news = [new_values.take(pa.array(order))] if new_values is not None else []
        if keep is not None:
            dropped = values.slice(0, end).filter(pa.array(~keep[:end]))
            olds.append(dropped)
            news.append(pa.nulls(len(dropped), pa.string()))
        value_set = pa.concat_arrays(olds)
        if not len(value_set):
            return batch
        replacements = pa.concat_arrays(news)
        lengths = pc.binary_length(value_set)
        for name in DERIVED_COLUMNS:
            if name not in batch.column_names:
                continue
            col = batch.column(name).combine_chunks()
            if col.type != pa.string() or col.null_count == len(col):
                continue
            # typed columns hold ids and model names: changed prompts longer than any of them cannot match
            short = pc.less_equal(lengths, pc.max(pc.binary_length(col)))
            pos = pc.index_in(col, value_set=value_set.filter(short))
            if pos.null_count == len(pos):
                continue
            pos = pc.take(pc.indices_nonzero(short), pos)
            if pos.null_count == len(pos):
                continue
            batch = set_column(batch, name, pc.if_else(pc.is_valid(pos), replacements.take(pos), col))
        return batch

    def _scan(
        self,
        scan: np.ndarray,
        codes: np.ndarray,
        values: pa.Array,
        rows: np.ndarray,
        changed: dict[int, str],
        found: _Found,
    ) -> None:
        """`scan`: which entries are scanned. One RE2 match (a DFA, no captures) over the whole column says
        which values hold any candidate; only those, and NER/secret-named ones, are looked at in Python."""
        self.counters["scanned"] += int(scan.sum())
        flagged = self._flag(values, scan)
        special = scan & ((codes & (F_NER | F_SECRET_KEY)) != 0)
        self.counters["flagged"] += int(flagged.sum())
        if IP_ADDRESS in self.pattern_entities:
            done = self._whole_ips(flagged & ~special & ((codes & 7) == REDACT), values, rows, changed, found)
            flagged[done] = False
        work = np.flatnonzero(flagged | special)
        if not len(work):
            return
        originals = values.take(pa.array(work)).to_pylist()
        work_codes = codes[work].tolist()
        results: list[Result | None] = [None] * len(work)
        misses: list[int] = []  # positions in `work` to compute
        cache_keys: list[CacheKey | None] = [None] * len(work)
        first: dict[CacheKey, int] = {}  # cache key → position of its first miss in this batch
        repeats: list[tuple[int, int]] = []
        cache, use_cache = self._cache, self.config.cache_size > 0
        for j, code in enumerate(work_codes):
            value = originals[j]
            if code & F_SECRET_KEY:
                results[j] = self._secret_value(value, code & 7)
                continue
            if not use_cache:
                misses.append(j)
                continue
            key = (
                (code, value) if len(value) <= 256 else (code, hashlib.blake2b(value.encode(), digest_size=16).digest())
            )
            hit = cache.get(key)
            if hit is not None:
                cache.move_to_end(key)
                results[j] = hit
                self.counters["cache_hits"] += 1
            elif key in first:
                repeats.append((j, first[key]))
                self.counters["cache_hits"] += 1
            else:
                first[key] = j
                cache_keys[j] = key
                misses.append(j)
        if misses:
            # plain values (no NER, the re2 detector): findings and the new value straight from the marked text
            re2 = self.config.detector == "re2"
            plain = [j for j in misses if re2 and not work_codes[j] & F_NER]
            other = [j for j in misses if not (re2 and not work_codes[j] & F_NER)]
            if plain:
                texts = [originals[j] for j in plain]
                for j, plain_result in zip(
                    plain, self._plain_results(texts, [work_codes[j] & 7 for j in plain]), strict=True
                ):
                    results[j] = plain_result
            if other:
                works = self._prepare(
                    [originals[j] for j in other], flagged[work[other]].tolist(), [work_codes[j] for j in other]
                )
                for j, w in zip(other, works, strict=True):
                    results[j] = self._finish(w)
            for j in misses:
                miss_key, computed = cache_keys[j], results[j]
                if miss_key is not None and computed is not None:  # every miss was computed just above
                    self._remember(miss_key, computed)
        for j, k in repeats:
            results[j] = results[k]

        for entry, result in zip(work.tolist(), results, strict=True):
            assert result is not None
            new_value, counts = result
            if new_value is not None:
                changed[entry] = new_value
            if counts:
                found.add(int(rows[entry]), counts)
                for entity, count in counts:
                    self.stats[entity] = self.stats.get(entity, 0) + count

    def _flag(self, values: pa.Array, scan: np.ndarray) -> np.ndarray:
        """Which scanned values hold an RE2 candidate. Long values seen before without one (system prompts,
        retrieved documents, tool schemas: a third of the bytes of prompt-heavy traffic), and repeats of a long
        value within the batch, skip the RE2 pass: one dict lookup each, exact (the value is the key)."""
        lengths = pc.binary_length(values).to_numpy(zero_copy_only=False)
        long_idx = np.flatnonzero(scan & (lengths >= CLEAN_LONG_MIN_BYTES))
        check = scan
        first: dict[str, int] = {}  # long value → its first entry in this batch
        repeats: list[tuple[int, int]] = []
        if len(long_idx) and self.config.cache_size:
            check = scan.copy()
            known = self._clean_long
            for i, v in zip(long_idx.tolist(), values.take(pa.array(long_idx)).to_pylist(), strict=True):
                if v in known:
                    check[i] = False
                    known.move_to_end(v)
                    self.counters["known_clean"] += 1
                elif v in first:
                    check[i] = False
                    repeats.append((i, first[v]))
                else:
                    first[v] = i
        flagged = np.zeros(len(values), bool)
        picked = np.flatnonzero(check)
        if len(picked):
            subset = values if len(picked) == len(values) else values.filter(pa.array(check))
            flagged[picked] = self.scanner.match_column(subset)
        for i, j in repeats:
            flagged[i] = flagged[j]
        for v, i in first.items():
            if not flagged[i]:
                self._clean_long[v] = None
                self._clean_long_bytes += len(v)
        while self._clean_long_bytes > CLEAN_LONG_MAX_BYTES or len(self._clean_long) > self.config.cache_size:
            old, _ = self._clean_long.popitem(last=False)
            self._clean_long_bytes -= len(old)
        return flagged

    def _whole_ips(
        self, candidates: np.ndarray, values: pa.Array, rows: np.ndarray, changed: dict[int, str], found: _Found
    ) -> np.ndarray:
        """Values that are one IPv4 address and nothing else (client.address, net.peer.ip on every server
        span) are replaced on the column, without the per-value path. Returns the entries it handled."""
        idx = np.flatnonzero(candidates)
        if not len(idx):
            return idx
        sub = values.take(pa.array(idx))
        whole = pc.match_substring_regex(sub, WHOLE_IPV4).to_numpy(zero_copy_only=False)
        hits = idx[whole]
        replace = np.ones(len(hits), bool)
        if self.allow and len(hits):
            texts = sub.filter(pa.array(whole)).to_pylist()
            replace = np.array([not self.allow.allows(t.strip()) for t in texts], bool)
        placeholder = self.config.placeholder.format(entity=IP_ADDRESS)
        for entry in hits[replace].tolist():
            changed[entry] = placeholder
        n = int(replace.sum())
        found.rows.extend(rows[hits[replace]].tolist())
        found.entities.extend([IP_ADDRESS] * n)
        found.counts.extend([1] * n)
        self.stats[IP_ADDRESS] = self.stats.get(IP_ADDRESS, 0) + n
        self.counters["whole_value_ips"] += n
        return hits

    # -- values that need Python ----------------------------------------------------------------------
    def _prepare(self, values: list[str], flagged: list[bool], codes: list[int]) -> list[_Work]:
        """Findings for every value: patterns from one RE2 marking pass over all texts that have a candidate,
        NER from one NameFinder pass over all NER texts. A text is a plain value, or, for NER values and the
        presidio detector, a string leaf of the parsed JSON."""
        presidio = self.config.detector == "presidio"
        works: list[_Work] = []
        texts: list[_Leaf] = []  # leaves that may hold a pattern
        known: list[bool] = []  # ... already known to hold an RE2 candidate
        for value, is_flagged, code in zip(values, flagged, codes, strict=True):
            ner = bool(code & F_NER)
            work = _Work(value, code & 7, ner, [])
            doc = parse_json(value) if (ner or presidio) and looks_json(value) else None
            if doc is not None:
                work.doc = doc
                for holder, slot, parent_key, text in string_leaves(doc):
                    leaf = _Leaf(text, [], holder, slot)
                    work.leaves.append(leaf)
                    if parent_key is not None and SECRET in self.pattern_entities and is_secret_key(parent_key):
                        leaf.findings = [] if _is_placeholder(text) else [Finding(0, len(text), SECRET)]
                    elif is_flagged:
                        texts.append(leaf)
                        known.append(False)
            else:
                leaf = _Leaf(value)
                work.leaves.append(leaf)
                if is_flagged:
                    texts.append(leaf)
                    known.append(True)
            works.append(work)
        if presidio:
            for leaf in texts:
                leaf.findings = self._presidio(leaf.text)
        else:
            self._pattern_findings(texts, known)
        if self.names is not None and any(w.ner for w in works):
            self._ner_findings(works)
        return works

    def _plain_results(self, texts: list[str], actions: list[int]) -> list[Result]:
        """Flagged values without NER: one RE2 marking pass, then each value rewritten from its findings."""
        marked = self.scanner.mark_column(pa.array(texts, pa.string())).to_pylist()
        parse, scan_text = self.scanner.parse_marked, self.scanner.scan_text
        out: list[Result] = []
        for text, m, action in zip(texts, marked, actions, strict=True):
            # a text that already holds a marker character cannot be split at markers: Python scans it
            findings = scan_text(text) if OPEN in text or CLOSE in text else parse(text, m)
            out.append(self._rewrite(text, findings, action) if findings else (None, ()))
        return out

    def _pattern_findings(self, leaves: list[_Leaf], known: list[bool]) -> None:
        """RE2 finds the candidates of all texts in one marking pass; Python validates them."""
        if not leaves:
            return
        arr = pa.array([leaf.text for leaf in leaves], pa.string())
        flagged = np.array(known, bool)
        if not flagged.all():
            flagged |= self.scanner.match_column(arr)
        pick = np.flatnonzero(flagged)
        sub = arr if len(pick) == len(arr) else arr.take(pa.array(pick))
        marked = self.scanner.mark_column(sub).to_pylist()
        for k, m in zip(pick.tolist(), marked, strict=True):
            leaf = leaves[k]
            # a text that already holds a marker character cannot be split at markers: Python scans it
            if OPEN in leaf.text or CLOSE in leaf.text:
                leaf.findings.extend(self.scanner.scan_text(leaf.text))
            else:
                leaf.findings.extend(self.scanner.parse_marked(leaf.text, m))

    def _ner_findings(self, works: list[_Work]) -> None:
        """NameFinder over the NER values' leaves, at most ner_max_chars per value."""
        assert self.names is not None
        picked: list[tuple[_Leaf, int]] = []
        for work in works:
            if not work.ner:
                continue
            budget = self.config.ner_max_chars
            for leaf in work.leaves:
                if budget <= 0:
                    break
                if len(leaf.text) < 3:
                    continue
                limit = min(len(leaf.text), budget)
                picked.append((leaf, limit))
                budget -= limit
        entities = self.names.find([leaf.text[:limit] for leaf, limit in picked])
        for (leaf, _limit), spans in zip(picked, entities, strict=True):
            leaf.findings.extend(Finding(s, e, entity) for s, e, entity in spans)

    def _presidio(self, text: str) -> list[Finding]:
        """`detector: presidio`: Presidio's recognizers decide (secrets still come from our patterns)."""
        assert self.engine is not None
        structured = sorted(self.pattern_entities & set(STRUCTURED_ENTITIES))
        kwargs: dict[str, Any] = {}
        if self.deny:
            structured += sorted(self.deny.entities)
            kwargs["ad_hoc_recognizers"] = self.deny.presidio_recognizers()
        out = [
            Finding(s, e, t)
            for s, e, t, _score in self.engine.analyze(text, structured, self.config.min_score, **kwargs)
        ]
        secrets = [f for f in self.scanner.scan_text(text) if f.entity in SECRET_ENTITIES]
        return out + secrets

    def _remember(self, key: CacheKey, result: Result) -> None:
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

    def _secret_value(self, value: str, action: int) -> Result:
        """The whole value of a key named like a secret (`password`, `x-api-key`, `db.password`)."""
        if not value or self.allow.allows(value) or _is_placeholder(value):
            return None, ()
        return self._replacement(value, SECRET, action), ((SECRET, 1),)

    def _rewrite(self, value: str, findings: list[Finding], action: int) -> Result:
        """A plain value with its findings replaced. When a match may touch JSON syntax (a number, a quote, an
        escape) the result must still parse, else the value is redone on its decoded leaves."""
        counts: dict[str, int] = {}
        new = self._apply(value, findings, action, counts)
        if not counts:
            return None, ()
        if (
            looks_json(value)
            and not inside_strings(value, findings)
            and parse_json(value) is not None
            and parse_json(new) is None
        ):
            return self._finish_leaves(_Work(value, action, False, []))
        return new, tuple(sorted(counts.items()))

    def _finish(self, work: _Work) -> Result:
        if work.doc is None:
            return self._rewrite(work.value, work.leaves[0].findings, work.action)
        counts: dict[str, int] = {}
        new_texts = [self._apply(leaf.text, leaf.findings, work.action, counts) for leaf in work.leaves]
        if not counts:
            return None, ()
        for leaf, text in zip(work.leaves, new_texts, strict=True):
            if text != leaf.text:
                leaf.holder[leaf.slot] = text  # a redacted number leaf becomes a string
        return dump_like(work.doc, work.value), tuple(sorted(counts.items()))

    def _finish_leaves(self, work: _Work) -> Result:
        self.counters["json_fallbacks"] += 1
        leaf_work = _Work(work.value, work.action, False, [], doc=parse_json(work.value))
        for holder, slot, parent_key, text in string_leaves(leaf_work.doc):
            if parent_key is not None and SECRET in self.pattern_entities and is_secret_key(parent_key):
                findings = [] if _is_placeholder(text) else [Finding(0, len(text), SECRET)]
            else:
                findings = self.scanner.scan_text(text)
            leaf_work.leaves.append(_Leaf(text, findings, holder, slot))
        return self._finish(leaf_work)

    def _apply(self, text: str, findings: list[Finding], action: int, counts: dict[str, int]) -> str:
        """`text` with the findings (not allow-listed, overlaps resolved) replaced; `counts` per entity."""
        if not findings:
            return text
        kept = [f for f in findings if not self.allow.allows(text[f.start : f.end])] if self.allow else findings
        out, pos = [], 0
        for start, end, entity in resolve(kept, self.priority):
            out.append(text[pos:start])
            out.append(self._replacement(text[start:end], entity, action))
            counts[entity] = counts.get(entity, 0) + 1
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def _replacement(self, text: str, entity: str, action: int) -> str:
        if action == MASK:
            keep = min(self.config.mask_keep_last, len(text) // 2)
            return self.config.mask_char * (len(text) - keep) + (text[len(text) - keep :] if keep else "")
        placeholder = self.placeholders.get(entity)
        if placeholder is None:
            placeholder = self.placeholders[entity] = self.config.placeholder.format(entity=entity)
        return placeholder

    def _with_pii_found(self, batch: pa.Table, found: _Found) -> pa.Table:
        """Entity type → count per span, added to what an earlier redact_pii (e.g. in `ingest`) recorded."""
        n = batch.num_rows
        rows = [np.asarray(found.rows, np.int64)]
        entities = [pa.array(found.entities, pa.string())]
        counts = [np.asarray(found.counts, np.int64)]
        existing = MapColumn.of(batch.column("pii_found")) if "pii_found" in batch.column_names else None
        if existing is not None and len(existing.keys):
            rows.append(existing.parents)
            entities.append(existing.keys.cast(pa.string()))
            counts.append(existing.items.to_numpy(zero_copy_only=False).astype(np.int64))
        table = pa.table(
            {"row": np.concatenate(rows), "entity": pa.concat_arrays(entities), "n": np.concatenate(counts)}
        )
        if table.num_rows:
            table = (
                table.group_by(["row", "entity"])
                .aggregate([("n", "sum")])
                .sort_by([("row", "ascending"), ("entity", "ascending")])
            )
            row_col, entity_col, n_col = table.column("row"), table.column("entity"), table.column("n_sum")
        else:
            row_col, entity_col, n_col = table.column("row"), table.column("entity"), table.column("n")
        found_map = MapColumn.from_entries(
            n,
            row_col.to_numpy(),
            entity_col.combine_chunks(),
            n_col.combine_chunks().cast(pa.int32()),
            PII_FOUND_TYPE,
        )
        # null where nothing was ever found (docs/design.md), as on spans no redaction saw
        nothing = found_map.lengths == 0
        if existing is not None:
            nothing &= ~existing.valid
        found_map = replace(found_map, valid=~nothing)
        return set_column(batch, "pii_found", found_map.to_arrow())


def _is_placeholder(value: str) -> bool:
    v = value.strip()
    return not v or (v.startswith("<") and v.endswith(">")) or set(v) <= {"*"}
