"""NER for people and places that keeps up: spaCy reads only the few words around name-like tokens.

spaCy's small English model costs ~0.1 ms per token on this machine, far too much to read every message.
What it reads instead, per text (a plain value or a JSON leaf):
1. **Name-like tokens.** A word that starts upper case, has a lower-case letter and no digit ("Maria",
   "McAllister", "Jürgen"; not "EUR", "I", "X2"). A sentence-initial word counts only when it is not a
   common English word (spaCy's stop words plus frequent sentence openers: "Please", "Thanks", "Could"):
   every sentence starts with a capital. Allow-listed words ("Aurora") are not name-like. A text without a
   name-like token is not read at all.
2. **Windows.** Each name-like token with `NER_WINDOW` (3) whitespace-separated words on either side,
   overlapping windows merged. The small model's NER sees a few tokens of context (a CNN of 4 layers of
   window 1, plus the parser's features of neighbouring tokens); on 6,088 distinct texts (benchmark traffic
   and both corpora, 4,529 entities) windows of 3 words found every entity of the whole texts except ones
   with no name-like token ("Summarise", "C++"), as windows of 4 did, for 26-36% less spaCy CPU (2 words
   lost a name). The rest of the message is never tokenized.
3. **Cache.** Each window's entities are remembered by content hash (LRU, `cache_size` entries): system
   prompts, retrieved documents and the earlier turns that chat histories resend cost one lookup.
4. **One spaCy pass per batch** over the windows not in the cache (`nlp.pipe`, the `ner` pipe alone).

Entities are PERSON (spaCy PERSON) and LOCATION (GPE, LOC, FAC), Presidio's mapping. Two precision filters
drop what the small model gets wrong most in support chats: anything with a digit (order ids, "Nimbus X2")
and a PERSON right after a determiner or possessive ("the Aurora mesh kit", "my Vega router").
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence

from processors.redact_pii.allow_deny import AllowList

NER_WINDOW = 3
# all-caps place abbreviations the model tags as places (GPE); other all-caps words (EUR, API, DHL) are not
# name-like
PLACE_ABBREVIATIONS = frozenset({"US", "USA", "UK", "EU", "UAE", "NYC", "DC"})
# A word that may be capitalised: its first letter is not ASCII lower case (upper case, or any non-ASCII
# letter, checked with str.isupper after); it may hold apostrophes and hyphens inside (O'Brien, Jean-Luc).
# Words starting lower case are skipped inside the regex engine, not in Python.
_WORD = re.compile(r"(?<![^\W_])[^\W\d_a-z][^\W_]*(?:['’\-][^\W\d_][^\W_]*)*")
_SPACE_TOKEN = re.compile(r"\S+")
_DIGIT = re.compile(r"\d")
# what may stand right before a sentence (after stripping spaces): nothing, an end mark, a list number
# ("1. Unplug"), an opening quote or bracket, a colon, a bullet
_SENTENCE_BEFORE = re.compile(r"(?:^|[.!?:;\n\"“”'‘’(\[{•*#>-]|\d[.)])\s*$")
_DETERMINER_BEFORE = re.compile(r"(?i)\b(?:the|my|your|our|their|its|this|that|these|those|every|each)\s+$")

# Frequent sentence openers that are not stop words: a capitalised one at a sentence start is no name.
_OPENERS = """
hi hello hey dear thanks thank sorry yes yeah sure okay ok great good fine perfect awesome cool nice welcome
note answer reply respond return use check make let try keep open close click select choose press hold wait
unplug plug restart reset remove add update install follow read write send tell ask give find summarise
summarize explain describe list include provide create generate translate classify extract you're i'm it's
that's there's here's what's don't can't won't didn't doesn't isn't i'd i'll i've we're unfortunately also
however actually apparently basically hopefully finally additionally otherwise today tomorrow yesterday now
then later soon still already just maybe perhaps please rules rule context question questions instructions
task goal output input example examples step steps user assistant system warranty refunds refund returns
return speeds speed place placing thanks regards best cheers kind order orders invoice payment account device
item package parcel delivery shipping price product service support problem issue error help team customer
"""
COMMON_OPENERS = frozenset(_OPENERS.split())


def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS) | COMMON_OPENERS


# (start, end, entity) in text coordinates
Entity = tuple[int, int, str]
NerBatch = Callable[[list[str]], list[list[Entity]]]


class NameFinder:
    """PERSON/LOCATION spans of texts through `ner` (a batch call into spaCy), reading as little as it can."""

    def __init__(
        self, ner: NerBatch, allow: AllowList, cache_size: int, counters: Counter[str], window: int = NER_WINDOW
    ) -> None:
        self._ner = ner
        self._allow = allow
        self._window = window
        self._cache_size = max(cache_size, 1)
        self._cache: OrderedDict[bytes, tuple[Entity, ...]] = OrderedDict()
        self._common = _stop_words()
        self.counters = counters  # ner_texts, ner_skipped, ner_windows, ner_chars (what spaCy read)

    def clear(self) -> None:
        self._cache.clear()

    def name_like(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the name-like tokens of `text` (see the module docstring)."""
        out = []
        for m in _WORD.finditer(text):
            word = m.group()
            if word in PLACE_ABBREVIATIONS:
                out.append((m.start(), m.end()))
                continue
            if not word[0].isupper() or word.isupper() or _DIGIT.search(word) or word[:2] in ("I'", "I’"):
                continue  # not capitalised, an acronym (EUR), has a digit (X2), or I'm / I'll
            start = m.start()
            if word.lower() in self._common and _SENTENCE_BEFORE.search(text, max(0, start - 8), start):
                continue
            if self._allow and self._allow.allows(word):
                continue
            out.append((start, m.end()))
        return out

    def windows(self, text: str) -> list[tuple[int, int]]:
        """Merged character ranges of ±window words around each name-like token; [] when there is none."""
        names = self.name_like(text)
        if not names:
            return []
        tokens = [(m.start(), m.end()) for m in _SPACE_TOKEN.finditer(text)]
        starts = [s for s, _e in tokens]
        ranges: list[tuple[int, int]] = []
        for s, _e in names:
            i = bisect.bisect_right(starts, s) - 1
            lo, hi = tokens[max(0, i - self._window)][0], tokens[min(len(tokens) - 1, i + self._window)][1]
            if ranges and lo <= ranges[-1][1] + 1:
                ranges[-1] = (ranges[-1][0], max(hi, ranges[-1][1]))
            else:
                ranges.append((lo, hi))
        return ranges

    def find(self, texts: Sequence[str]) -> list[list[Entity]]:
        """Entities per text; one spaCy pass over the windows of all texts that are not cached."""
        plans: list[list[tuple[int, bytes]]] = []
        todo: dict[bytes, str] = {}
        for text in texts:
            plan = []
            ranges = self.windows(text)
            if not ranges:
                self.counters["ner_skipped"] += 1
            for lo, hi in ranges:
                segment = text[lo:hi]
                key = hashlib.blake2b(segment.encode(), digest_size=16).digest()
                if key not in self._cache and key not in todo:
                    todo[key] = segment
                plan.append((lo, key))
            plans.append(plan)
        if todo:
            self.counters["ner_windows"] += len(todo)
            self.counters["ner_chars"] += sum(len(s) for s in todo.values())
            for key, found in zip(todo, self._ner(list(todo.values())), strict=True):
                self._cache[key] = tuple(found)
        self.counters["ner_texts"] += sum(1 for p in plans if p)
        out: list[list[Entity]] = []
        for text, plan in zip(texts, plans, strict=True):
            entities: list[Entity] = []
            for lo, key in plan:
                self._cache.move_to_end(key)
                for s, e, entity in self._cache[key]:
                    if self._plausible(text, lo + s, lo + e, entity):
                        entities.append((lo + s, lo + e, entity))
            out.append(entities)
        while len(self._cache) > max(self._cache_size, len(todo)):
            self._cache.popitem(last=False)
        return out

    @staticmethod
    def _plausible(text: str, start: int, end: int, entity: str) -> bool:
        """Names and places have no digits (the sm model tags "R-5521", "Nimbus X2"), and a person does not
        follow "the" or "my" ("the Aurora mesh kit")."""
        if _DIGIT.search(text, start, end):
            return False
        return not (entity == "PERSON" and _DETERMINER_BEFORE.search(text, max(0, start - 8), start))
