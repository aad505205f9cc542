"""Precision and recall per entity type of redact_pii on the labelled corpora beside this file.

    python tests/pii_corpus/score.py [--corpus corpus|names] [--ner auto|on|off] [--detector re2|presidio]
                                     [--allow-products] [--show-misses]

Corpora: `corpus.yaml` (every entity type and secret in prompts, tool calls, documents, stack traces, headers)
and `names.yaml` (people and places in support chats next to product names the NER model takes for people).

The corpus items become the attributes, event attributes and status messages of real spans (OTLP protobuf →
decode → normalize, as the worker builds them), run through `PiiRedactor.process`, and are scored twice:
- per entity type, from what the redactor found in each value (`PiiRedactor.analyze_value`): a finding
  matches a label of the same type when one text contains the other; unmatched findings are false positives,
  unmatched labels false negatives;
- end to end, on the processed batch: a "leak" is a labelled value still present in the output, and a
  look-alike is "kept" when it is still there verbatim.

The score config allow-lists the company's own support address, as a deployment would; `--allow-products`
also allow-lists the product catalogue of names.yaml (PRODUCTS).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402
import yaml  # noqa: E402

from core.conventions import normalize  # noqa: E402
from pipeline.otlp.decode import SourcedRequest, decode  # noqa: E402
from processors.redact_pii import PiiRedactor, RedactPiiConfig  # noqa: E402
from processors.redact_pii.recognizers import NER_ENTITIES, SECRET_ENTITIES, STRUCTURED_ENTITIES  # noqa: E402

CORPUS = Path(__file__).with_name("corpus.yaml")
NAMES = Path(__file__).with_name("names.yaml")
CORPORA = {"corpus": CORPUS, "names": NAMES}
ALLOW = ["support@acme-corp.example.com"]
# the catalogue of the company in names.yaml, as its deployment would allow-list it
PRODUCTS = ["Aurora", "Nimbus", "Helix", "Orbit", "Vega", "Sierra", "Acme Connect"]
EVENT_KEYS = ("exception.message", "exception.stacktrace", "exception.type")
STATUS_KEY = "status_message"


@dataclass
class Item:
    id: str
    key: str
    value: str
    pii: dict[str, list[str]]
    lookalikes: list[str]


@dataclass
class TypeScore:
    labelled: int = 0
    found: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    leaks: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass
class Report:
    per_type: dict[str, TypeScore]
    lookalikes: int
    lookalikes_kept: int
    misses: list[str] = field(default_factory=list)

    @property
    def kept_ratio(self) -> float:
        return self.lookalikes_kept / self.lookalikes if self.lookalikes else 1.0


def load_corpus(path: Path = CORPUS) -> list[Item]:
    items = []
    for raw in yaml.safe_load(path.read_text()):
        if "json" in raw:
            separators = (",", ":") if raw.get("compact") else (", ", ": ")
            value = json.dumps(raw["json"], ensure_ascii=bool(raw.get("ascii", False)), separators=separators)
        else:
            value = raw["value"]
        pii = {k: [str(v) for v in vs] for k, vs in (raw.get("pii") or {}).items()}
        items.append(Item(raw["id"], raw["key"], value, pii, [str(v) for v in raw.get("lookalikes") or []]))
    return items


def build_batch(items: list[Item]) -> pa.Table:
    """One span per item; exception.* keys become an `exception` event, status_message the span status."""
    from tests.conftest import kv, make_request

    spans: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        span: dict[str, Any] = {"trace_id": f"{i + 1:032x}", "span_id": f"{i + 1:016x}", "name": item.id}
        if item.key == STATUS_KEY:
            span["error"] = item.value
        elif item.key not in EVENT_KEYS:
            span["attrs"] = {item.key: item.value}
        spans.append(span)
    req = make_request(spans)
    for item, proto in zip(items, req.resource_spans[0].scope_spans[0].spans, strict=True):
        if item.key in EVENT_KEYS:
            ev = proto.events.add()
            ev.name = "exception"
            ev.time_unix_nano = proto.start_time_unix_nano
            ev.attributes.append(kv(item.key, item.value))
    return normalize(decode([SourcedRequest(req, "corpus@1")]))


def output_values(batch: pa.Table, items: list[Item]) -> list[str]:
    events = batch.column("events")  # event times are ns: cast to int so that to_pylist works without pandas
    fields = [pa.field(f.name, pa.int64()) if f.name == "time" else f for f in events.type.value_type]
    batch = batch.set_column(batch.schema.get_field_index("events"), "events", events.cast(pa.list_(pa.struct(fields))))
    rows = batch.select(["attributes", "events", "status_message"]).to_pylist()
    out = []
    for item, row in zip(items, rows, strict=True):
        if item.key == STATUS_KEY:
            out.append(row["status_message"] or "")
        elif item.key in EVENT_KEYS:
            out.append(dict(row["events"][0]["attributes"]).get(item.key, ""))
        else:
            out.append(dict(row["attributes"] or []).get(item.key, ""))
    return out


def _readable(value: str) -> str:
    """The value and, for JSON, its decoded strings: labels are written as decoded text."""
    try:
        doc = json.loads(value)
    except ValueError:
        return value
    leaves: list[str] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        else:
            leaves.append(str(node))
    return value + "\n" + "\n".join(leaves)


def _match(labels: list[str], found: list[str]) -> tuple[int, list[str], list[str]]:
    left = list(found)
    missed = []
    tp = 0
    for label in labels:
        hit = next((f for f in left if f == label or f in label or label in f), None)
        if hit is None:
            missed.append(label)
        else:
            left.remove(hit)
            tp += 1
    return tp, missed, left


def score(redactor: PiiRedactor, items: list[Item]) -> Report:
    out = output_values(redactor.process(build_batch(items)), items)
    active = set(redactor.pattern_entities) | (set(NER_ENTITIES) if redactor.ner_model else set())
    per_type = {e: TypeScore() for e in (*STRUCTURED_ENTITIES, *SECRET_ENTITIES, *NER_ENTITIES) if e in active}
    lookalikes = kept = 0
    misses: list[str] = []
    for item, redacted in zip(items, out, strict=True):
        findings = redactor.analyze_value(item.key, item.value)
        readable = _readable(redacted)
        for entity, s in per_type.items():
            labels = item.pii.get(entity, [])
            found = [text for e, text in findings if e == entity]
            tp, missed, extra = _match(labels, found)
            s.labelled += len(labels)
            s.found += len(found)
            s.tp += tp
            s.fn += len(missed)
            s.fp += len(extra)
            misses += [f"{item.id}: {entity} missed {m!r}" for m in missed]
            misses += [f"{item.id}: {entity} false positive {x!r}" for x in extra]
            if entity not in NER_ENTITIES:
                leaked = [label for label in labels if label in readable]
                s.leaks += len(leaked)
                misses += [f"{item.id}: {entity} leaked {x!r}" for x in leaked]
        for look in item.lookalikes:
            lookalikes += 1
            if look in readable:
                kept += 1
            else:
                misses.append(f"{item.id}: look-alike {look!r} was redacted")
    return Report(per_type, lookalikes, kept, misses)


def make_redactor(ner: str = "auto", detector: str = "re2", allow_products: bool = False) -> PiiRedactor:
    os.environ.setdefault("TRACELAKE_HASH_KEY", "corpus-score-key-not-a-secret")
    allow = ALLOW + (PRODUCTS if allow_products else [])
    return PiiRedactor(RedactPiiConfig(ner=ner, detector=detector, allow_list=allow))  # type: ignore[arg-type]


def render(report: Report, redactor: PiiRedactor, corpus: Path = CORPUS) -> str:
    lines = [
        f"redact_pii on {corpus.name}: detector={redactor.config.detector}, NER model={redactor.ner_model or 'none'}"
        f", allow_list={redactor.config.allow_list}",
        f"{'entity':15}{'labelled':>9}{'found':>7}{'TP':>5}{'FP':>5}{'FN':>5}{'precision':>11}{'recall':>8}{'leaks':>7}",
    ]
    for entity, s in report.per_type.items():
        leaks = "-" if entity in NER_ENTITIES else str(s.leaks)
        lines.append(
            f"{entity:15}{s.labelled:>9}{s.found:>7}{s.tp:>5}{s.fp:>5}{s.fn:>5}"
            f"{s.precision:>11.1%}{s.recall:>8.1%}{leaks:>7}"
        )
    lines.append(f"look-alikes kept: {report.lookalikes_kept}/{report.lookalikes} ({report.kept_ratio:.1%})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="corpus")
    ap.add_argument("--allow-products", action="store_true", help="allow-list names.yaml's product catalogue")
    ap.add_argument("--ner", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--detector", choices=["re2", "presidio"], default="re2")
    ap.add_argument("--show-misses", action="store_true", help="list every miss, false positive and leak")
    args = ap.parse_args()
    redactor = make_redactor(args.ner, args.detector, args.allow_products)
    corpus = CORPORA[args.corpus]
    report = score(redactor, load_corpus(corpus))
    print(render(report, redactor, corpus))
    if args.show_misses:
        for line in report.misses:
            print("  " + line)
    totals = Counter({k: v for k, v in redactor.stats.items() if v})
    print("entity counters (processor.stats):", dict(sorted(totals.items())))


if __name__ == "__main__":
    main()
