"""NameFinder: spaCy reads only the words around name-like tokens, finds what the whole text would, once."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

import pytest

from processors.redact_pii import PiiRedactor, RedactPiiConfig
from processors.redact_pii.allow_deny import AllowList
from processors.redact_pii.engine import find_ner_model
from processors.redact_pii.json_leaves import parse_json, string_leaves
from processors.redact_pii.names import NameFinder
from processors.redact_pii.testing import TEST_HASH_KEY
from tests.pii_corpus.score import CORPUS, NAMES, load_corpus

pytestmark = pytest.mark.skipif(find_ner_model(None) is None, reason="no spaCy model package installed")


@pytest.fixture(scope="module")
def redactor() -> Iterator[PiiRedactor]:
    old = os.environ.get("TRACELAKE_HASH_KEY")
    os.environ["TRACELAKE_HASH_KEY"] = TEST_HASH_KEY
    yield PiiRedactor(RedactPiiConfig(ner="on"))
    if old is None:
        os.environ.pop("TRACELAKE_HASH_KEY", None)
    else:
        os.environ["TRACELAKE_HASH_KEY"] = old


class Recording:
    """The real spaCy batch call, with what it was given kept."""

    def __init__(self, redactor: PiiRedactor) -> None:
        assert redactor.engine is not None
        self.ner = redactor.engine.ner_batch
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[list[tuple[int, int, str]]]:
        self.calls.append(list(texts))
        return self.ner(texts)


def finder(redactor: PiiRedactor, allow: AllowList | None = None) -> tuple[NameFinder, Recording]:
    rec = Recording(redactor)
    return NameFinder(rec, allow or AllowList.of([], []), 1000, Counter()), rec


def test_name_like_tokens(redactor: PiiRedactor) -> None:
    f, _ = finder(redactor, AllowList.of(["Aurora"], []))
    text = (
        "Please check it. Thanks, Maria! I'll pay 40 EUR for the Nimbus X2 and the Aurora kit. "
        "Kofi called. McAllister and O'Brien too; the US office agreed."
    )
    words = [text[s:e] for s, e in f.name_like(text)]
    # "Please"/"Thanks" open sentences and are common words; EUR is an acronym, X2 has a digit, I'll is a pronoun,
    # Aurora is allow-listed; Kofi opens a sentence but is no common word
    assert words == ["Maria", "Nimbus", "Kofi", "McAllister", "O'Brien", "US"]


def test_texts_without_name_like_tokens_are_never_read(redactor: PiiRedactor) -> None:
    f, rec = finder(redactor)
    texts = ["please reset the router and wait five minutes.", "Thanks! The order 4411 shipped.", "ok", "I'll check."]
    assert f.find(texts) == [[], [], [], []]
    assert rec.calls == [] and f.counters["ner_skipped"] == 4


def test_spacy_reads_windows_and_each_window_once(redactor: PiiRedactor) -> None:
    f, rec = finder(redactor)
    filler = "the router keeps dropping the connection every evening and nothing we tried changed it. " * 4
    text = f"Hi, my name is Maria Gonzalez. {filler}Thanks a lot, Maria."
    (found,) = f.find([text])
    assert [text[s:e] for s, e, _ in found] == ["Maria Gonzalez", "Maria"]
    (read,) = rec.calls
    assert sum(map(len, read)) < len(text) / 3 and all(len(w) < 80 for w in read)  # two windows, not the text
    # a chat history resends the first turn: its window comes from the cache
    again = f.find([text, text + " Also, Grace Kim will pick it up."])
    assert len(rec.calls) == 2 and all("Maria Gonzalez" not in w for w in rec.calls[1])
    assert [text[s:e] for s, e, _ in again[0]] == ["Maria Gonzalez", "Maria"]


def test_precision_filters(redactor: PiiRedactor) -> None:
    f, _ = finder(redactor)
    text = "My router is the Aurora mesh kit, and my Vega router came with it. Order R-5521 for Olivia Bennett."
    found = [text[s:e] for s, e, entity in f.find([text])[0] if entity == "PERSON"]
    assert "Aurora" not in found and "Vega" not in found and "R-5521" not in found
    assert "Olivia Bennett" in found


def _leaf_texts() -> list[str]:
    texts = []
    for path in (CORPUS, NAMES):
        for item in load_corpus(path):
            doc = parse_json(item.value)
            texts += [t for *_x, t in string_leaves(doc)] if doc is not None else [item.value]
    return list(dict.fromkeys(t for t in texts if len(t) >= 3))


def test_windows_find_what_the_whole_text_finds(redactor: PiiRedactor) -> None:
    """Every entity spaCy finds in the whole text of a corpus value is found through the windows, unless it
    has no name-like token at all (which no name has)."""
    f, _ = finder(redactor)
    texts = _leaf_texts()
    whole = redactor.engine.ner_batch(texts)  # type: ignore[union-attr]
    windowed = f.find(texts)
    lost = []
    for text, full, got in zip(texts, whole, windowed, strict=True):
        for s, e, entity in full:
            if (s, e, entity) not in got and f._plausible(text, s, e, entity) and f.name_like(text[s:e]):
                lost.append((text[s:e], entity))
    assert lost == []
    assert sum(map(len, whole)) >= 40  # the comparison covered real entities


def test_numpy_matrix_products_give_the_entities_blis_gives(redactor: PiiRedactor) -> None:
    """The NER model runs its products through numpy instead of cython-blis (faster here): same entities."""
    import importlib

    from processors.redact_pii.engine import _NER_EXCLUDE, ner_threads

    assert redactor.ner_model is not None and redactor.engine is not None
    ours = redactor.engine.analyzer.nlp_engine.nlp["en"]
    assert type(ours.get_pipe("ner").model.ops).__name__ == "NumpyDotOps"
    stock = importlib.import_module(redactor.ner_model).load(exclude=list(_NER_EXCLUDE))
    assert type(stock.get_pipe("ner").model.ops).__name__ == "NumpyOps"
    texts = _leaf_texts()
    with ner_threads():
        got = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in ours.pipe(texts)]
    want = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in stock.pipe(texts)]
    assert got == want and sum(map(len, want)) >= 40
