"""redact_pii: spans/s with the processor against the empty chain, on the same requests, in one run.

    python benchmarks/redact_bench.py [--traces 3000] [--ner-traces 600] [--seed 3] [--batch-requests 16]
                                      [--repeat 5] [--chains empty,pattern,ner,presidio]

Traffic: pipeline.demo.build_requests(traces, seed) — the demo's three applications (OTel GenAI,
OpenInference, OpenLLMetry) with the personal data their users paste into chats (emails, phone numbers,
names), client IPs and system prompts that repeat. Requests of 512 spans, grouped like the worker groups
bus messages: 16 per batch = 8192 spans, the worker's default max_batch_spans.

Chains, each on the worker's path end to end (decode → normalize → chain → ParquetSink → flush):
  empty     no processor: the baseline
  pattern   redact_pii with ner: off (structured types and secrets: the RE2 fast path)
  ner       redact_pii defaults with the spaCy model: NER on `ner_keys` values (messages, I/O, tool calls)
  presidio  redact_pii ner: off, detector: presidio (Presidio's recognizers on the RE2-flagged values)

Printed per chain: spans/s for the whole path, spans/s for the processor alone, the ratio to the empty chain,
and the processor's counters (values scanned / flagged by RE2 / NER'd, cache hits). Best of --repeat, chains
interleaved within a repeat; each repeat builds a fresh processor, so the content cache starts cold every time.
NER is two orders of magnitude slower: it runs once, on the first --ner-traces traces, next to an empty chain
on the same subset (the `empty@ner` row).
"""

from __future__ import annotations

# first, as in `tracelake run`: importing pipeline configures Arrow's jemalloc before pyarrow loads
import pipeline  # noqa: F401

# isort: split
import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.config.model import ParquetSinkConfig
from pipeline.conventions import Normalizer
from pipeline.demo import build_requests
from pipeline.otlp.wire import decode_bodies
from pipeline.service import use_server_memory_pool
from processors.base import ProcessorContext
from processors.redact_pii import PiiRedactor, RedactPiiConfig
from sinks.parquet.sink import ParquetSink

CHAINS: dict[str, dict[str, Any] | None] = {
    "empty": None,
    "pattern": {"ner": "off"},
    "ner": {"ner": "on"},
    "presidio": {"ner": "off", "detector": "presidio"},
}


def make_processor(name: str, normalizer: Normalizer) -> PiiRedactor | None:
    cfg = CHAINS[name]
    if cfg is None:
        return None
    return PiiRedactor(RedactPiiConfig(**cfg), ProcessorContext(processor_id="redact_pii", normalizer=normalizer))


def run(requests: list[bytes], group: int, proc: PiiRedactor | None, lake: Path) -> dict[str, float]:
    normalizer = Normalizer()
    sink = ParquetSink(ParquetSinkConfig(path=str(lake), roll_rows=10**9, roll_bytes=2**40, roll_seconds=10**9))
    spans = 0
    t_proc = 0.0
    t0 = time.perf_counter()
    for i in range(0, len(requests), group):
        bodies = requests[i : i + group]
        table = normalizer(decode_bodies(bodies, [f"bench/0@{i + j}" for j in range(len(bodies))]))
        if proc is not None:
            tp = time.perf_counter()
            table = proc.process(table)
            t_proc += time.perf_counter() - tp
        spans += table.num_rows
        sink.write("spans", table)
    sink.flush_all()
    total = time.perf_counter() - t0
    return {"spans": spans, "seconds": total, "proc_seconds": t_proc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=3000)
    ap.add_argument("--ner-traces", type=int, default=600, help="traces for the ner chain (and its empty@ner)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--batch-requests", type=int, default=16, help="512-span requests per worker batch")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--chains", default="empty,pattern,ner,presidio")
    args = ap.parse_args()
    use_server_memory_pool()  # the worker's allocator
    os.environ.setdefault("TRACELAKE_HASH_KEY", "benchmark-only-key-0123456789abcdef")
    chains = [c.strip() for c in args.chains.split(",") if c.strip()]
    for c in chains:
        if c not in CHAINS:
            raise SystemExit(f"unknown chain {c!r}; known: {', '.join(CHAINS)}")

    requests = build_requests(args.traces, args.seed)
    ner_requests = build_requests(args.ner_traces, args.seed)
    warm = build_requests(20, args.seed + 1000)  # loads phone metadata, spaCy, tldextract: not timed
    print(f"traffic: {args.traces} traces, {len(requests)} requests, {sum(map(len, requests)) / 1e6:.1f} MB OTLP")
    workdir = Path(tempfile.mkdtemp(prefix="redact_bench_"))
    results: dict[str, dict[str, float]] = {}
    counters: dict[str, dict[str, int]] = {}

    def measure(label: str, name: str, traffic: list[bytes], rep: int) -> None:
        proc = make_processor(name, Normalizer())
        run(warm, args.batch_requests, proc, workdir / f"warm_{label}_{rep}")
        if proc is not None:
            proc.reset_caches()
            proc.counters.clear()
        r = run(traffic, args.batch_requests, proc, workdir / f"{label}_{rep}")
        best = results.get(label)
        if best is None or r["seconds"] < best["seconds"]:
            results[label] = r
            counters[label] = dict(proc.counters) if proc is not None else {}

    try:
        for rep in range(args.repeat):
            for name in chains:  # interleaved, so that machine noise hits every chain alike
                if name != "ner":
                    measure(name, name, requests, rep)
        if "ner" in chains:
            measure("empty@ner", "empty", ner_requests, 0)
            measure("ner", "ner", ner_requests, 0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"{'chain':10}{'spans':>8}{'spans/s path':>14}{'vs empty':>10}{'spans/s proc':>14}{'ms/batch proc':>15}")
    for name in [c for c in chains if c != "ner"] + (["empty@ner", "ner"] if "ner" in chains else []):
        r = results[name]
        base = results.get("empty@ner" if name in ("ner", "empty@ner") else "empty")
        path = r["spans"] / r["seconds"]
        ratio = f"{path / (base['spans'] / base['seconds']):.0%}" if base else "-"
        proc = f"{r['spans'] / r['proc_seconds']:,.0f}" if r["proc_seconds"] else "-"
        batches = max(counters[name].get("batches", 0), 1)
        per_batch = f"{r['proc_seconds'] / batches * 1e3:.1f}" if r["proc_seconds"] else "-"
        print(f"{name:10}{r['spans']:>8}{path:>14,.0f}{ratio:>10}{proc:>14}{per_batch:>15}")
    for name in results:
        c = counters[name]
        if c:
            keys = ("values", "scanned", "flagged", "ner_texts", "ner_chars", "cache_hits", "cache_misses", "hashed")
            print(f"{name:10}" + "  ".join(f"{k}={c.get(k, 0)}" for k in keys))


if __name__ == "__main__":
    main()
