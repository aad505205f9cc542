"""offload_artifacts: lake bytes and spans/s with and without offloading, on realistic LLM traffic.

    python benchmarks/offload_bench.py [--traces 1000] [--seed 1]

Traffic: pipeline.demo.build_requests(traces, seed) when that module exists; otherwise the
generator below — agent traces of 4-7 spans (agent, retrieval, 1-3 chat calls, a tool call) whose
chat spans carry one of 8 system prompts (2-6 KB, repeated everywhere), per-call input messages of
1-8 KB (question + retrieved passages), outputs of 0.2-2 KB, and retrieval documents of 2-6 KB.
Text is drawn from a Zipf-distributed vocabulary so that it compresses like prose.

For each chain ([] and [offload_artifacts]) the worker's path runs end to end on the same
serialized requests (benchmarks/harness.py `worker_path`, batches of up to 8,192 spans as the worker takes
them): decode → normalize → chain → ParquetSink (zstd) → flush. Printed:
spans/s for the whole path and for the processor alone, Parquet bytes, artifact-store bytes and
objects, and the time of two DuckDB queries over the resulting lake.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import harness
from pipeline.query import connect
from processors.offload_artifacts import ArtifactOffloader, OffloadArtifactsConfig


# -- traffic ---------------------------------------------------------------------------------------
class _Text:
    def __init__(self, rnd: random.Random) -> None:
        syll = ["ka", "lo", "mi", "ne", "ru", "ta", "po", "si", "de", "va", "qu", "ex", "or", "an", "is", "um"]
        self.words = ["".join(rnd.choices(syll, k=rnd.randint(1, 4))) for _ in range(3000)]
        self.weights = [1 / (i + 1) for i in range(len(self.words))]
        self.rnd = rnd

    def __call__(self, n_bytes: int) -> str:
        out: list[str] = []
        size = 0
        while size < n_bytes:
            chunk = self.rnd.choices(self.words, self.weights, k=64)
            sentence = " ".join(chunk).capitalize() + ". "
            out.append(sentence)
            size += len(sentence)
        return "".join(out)[:n_bytes]


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def generate_requests(traces: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    text = _Text(rnd)
    systems = [f"# Assistant policy v{i}\n" + text(rnd.randint(2048, 6144)) for i in range(8)]
    documents = [text(rnd.randint(300, 1200)) for _ in range(1000)]
    now = time.time_ns()
    out = []
    for t in range(traces):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.append(_kv("service.name", f"support-bot-{t % 3}"))
        ss = rs.scope_spans.add()
        ss.scope.name = "opentelemetry.instrumentation.openai"
        trace_id = rnd.randbytes(16)
        start = now - rnd.randint(0, 3_600_000_000_000)
        span_ids = [rnd.randbytes(8) for _ in range(8)]

        def span(
            i: int,
            name: str,
            parent: int | None,
            attrs: dict[str, object],
            *,
            _tid: bytes = trace_id,
            _start: int = start,
            _ids: list[bytes] = span_ids,
            _ss=ss,
        ) -> None:
            sp = _ss.spans.add()
            sp.trace_id, sp.span_id, sp.name = _tid, _ids[i], name
            if parent is not None:
                sp.parent_span_id = _ids[parent]
            sp.start_time_unix_nano = _start + i * 50_000_000
            sp.end_time_unix_nano = sp.start_time_unix_nano + rnd.randint(20, 4000) * 1_000_000
            for k, v in attrs.items():
                sp.attributes.append(_kv(k, v))

        question = text(rnd.randint(80, 400))
        span(
            0,
            "invoke_agent support",
            None,
            {"gen_ai.operation.name": "invoke_agent", "session.id": f"s{t % 97}", "user.id": f"u{t % 500}"},
        )
        docs = rnd.sample(range(len(documents)), rnd.randint(3, 6))
        retrieved = [{"id": f"doc-{d}", "score": round(rnd.random(), 3), "content": documents[d]} for d in docs]
        span(
            1,
            "retrieval kb",
            0,
            {
                "gen_ai.operation.name": "retrieval",
                "gen_ai.retrieval.query.text": question,
                "gen_ai.retrieval.documents": json.dumps(retrieved),
            },
        )
        n_chat = rnd.randint(1, 3)
        for c in range(n_chat):
            context = " ".join(documents[d] for d in docs)[: rnd.randint(600, 7000)]
            messages = [{"role": "user", "parts": [{"type": "text", "content": question + "\n\n" + context}]}]
            output = [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": text(rnd.randint(200, 2000))}],
                    "finish_reason": "stop",
                }
            ]
            span(
                2 + c,
                "chat gpt-4o-mini",
                0,
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                    "gen_ai.usage.input_tokens": rnd.randint(500, 4000),
                    "gen_ai.usage.output_tokens": rnd.randint(50, 600),
                    "gen_ai.system_instructions": systems[rnd.randrange(len(systems))],
                    "gen_ai.input.messages": json.dumps(messages),
                    "gen_ai.output.messages": json.dumps(output),
                },
            )
        span(
            2 + n_chat,
            "execute_tool lookup_order",
            0,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "lookup_order",
                "gen_ai.tool.call.arguments": json.dumps({"id": t}),
            },
        )
        out.append(req.SerializeToString())
    return out


def build_requests(traces: int, seed: int) -> tuple[list[bytes], str]:
    try:
        from pipeline.demo import build_requests as demo_build  # type: ignore[import-not-found]
    except ImportError:
        return generate_requests(traces, seed), "benchmarks/offload_bench.py generator"
    return list(demo_build(traces, seed)), "pipeline.demo.build_requests"


# -- measurement -----------------------------------------------------------------------------------
def _dir_bytes(path: Path, pattern: str) -> tuple[int, int]:
    files = [p for p in path.glob(pattern) if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def run(batches: list[list[bytes]], offload: bool, workdir: Path, min_bytes: int) -> dict[str, float]:
    lake = workdir / ("lake_offload" if offload else "lake_plain")
    proc = (
        ArtifactOffloader(OffloadArtifactsConfig(min_bytes=min_bytes, store=str(lake / "_artifacts")))
        if offload
        else None
    )
    path = harness.worker_path(batches, [proc] if proc is not None else [], lake)
    spans, total, t_proc = path.spans, path.wall, path.stages["chain"]
    parquet, files = _dir_bytes(lake / "spans", "*/*/*.parquet")
    store, objects = _dir_bytes(lake / "_artifacts", "sha256/*/*/*.zst")
    con = connect(lake)
    q = {}
    for name, sql in {
        "q_tokens": "SELECT request_model, count(*), sum(input_tokens) FROM spans GROUP BY 1",
        "q_attr": "SELECT count(*) FROM spans WHERE attributes['gen_ai.request.model'] = 'gpt-4o-mini'",
    }.items():
        tq = time.perf_counter()
        con.execute(sql).fetchall()
        q[name] = time.perf_counter() - tq
    con.close()
    out = {
        "spans": spans,
        "seconds": total,
        "spans_per_s": spans / total,
        "parquet_bytes": parquet,
        "parquet_files": files,
        "store_bytes": store,
        "objects": objects,
        **q,
    }
    if proc is not None:
        out["proc_seconds"] = t_proc
        out["proc_spans_per_s"] = spans / t_proc if t_proc else 0.0
        out.update({f"stat_{k}": v for k, v in proc.stats.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-bytes", type=int, default=4096)
    args = ap.parse_args()

    requests, origin = build_requests(args.traces, args.seed)
    raw = sum(len(r) for r in requests)
    print(f"traffic: {args.traces} traces from {origin}, {raw / 1e6:.1f} MB of OTLP protobuf")
    workdir = Path(tempfile.mkdtemp(prefix="offload_bench_"))
    try:
        batches = harness.worker_batches(requests)
        plain = run(batches, False, workdir, args.min_bytes)
        off = run(batches, True, workdir, args.min_bytes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def mb(n: float) -> str:
        return f"{n / 1e6:8.2f} MB"

    print(f"spans: {plain['spans']}, min_bytes: {args.min_bytes}")
    print(f"{'':28}{'empty chain':>16}{'offload_artifacts':>20}")
    print(f"{'spans/s (whole path)':28}{plain['spans_per_s']:>16,.0f}{off['spans_per_s']:>20,.0f}")
    print(f"{'spans/s (processor alone)':28}{'':>16}{off['proc_spans_per_s']:>20,.0f}")
    print(f"{'spans Parquet':28}{mb(plain['parquet_bytes']):>16}{mb(off['parquet_bytes']):>20}")
    print(f"{'artifact store':28}{'':>16}{mb(off['store_bytes']):>20}  ({off['objects']} objects)")
    total_off = off["parquet_bytes"] + off["store_bytes"]
    print(f"{'lake total':28}{mb(plain['parquet_bytes']):>16}{mb(total_off):>20}")
    print(f"{'query: tokens by model':28}{plain['q_tokens'] * 1e3:>13.1f} ms{off['q_tokens'] * 1e3:>17.1f} ms")
    print(f"{'query: filter on attributes':28}{plain['q_attr'] * 1e3:>13.1f} ms{off['q_attr'] * 1e3:>17.1f} ms")
    stats = {k[5:]: v for k, v in off.items() if k.startswith("stat_")}
    print("offloader stats:", json.dumps(stats))
    print(
        f"spans table {plain['parquet_bytes'] / max(off['parquet_bytes'], 1):.1f}x smaller; "
        f"lake total {plain['parquet_bytes'] / max(total_off, 1):.2f}x of the plain lake's size "
        f"(>1 = smaller); throughput {off['spans_per_s'] / plain['spans_per_s']:.2f}x the empty chain"
    )


if __name__ == "__main__":
    main()
