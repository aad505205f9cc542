"""Done-when, end to end in one process: demo traffic (three dialects) → Worker with [cost] → lake → DuckDB.

Every LLM span of every dialect is priced as calc_price prices it, unknown models are flagged and
counted, and the `traces` table carries the sum of priced calls and the count of unpriced ones.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core.conventions import Normalizer
from pipeline.bus.embedded import EmbeddedBus
from pipeline.demo import build_requests
from pipeline.query import connect
from pipeline.trace_summary import TraceSummarizer
from pipeline.worker import Worker
from processors.cost import CostProcessor
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink


def test_demo_traffic_through_the_worker(tmp_path: Path) -> None:
    requests = build_requests(120, seed=11)
    bus = EmbeddedBus(1, capacity_spans=10**6, capacity_bytes=2**31)
    for body in requests:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        bus.publish(req, body, n)
    bus.close()
    cost = CostProcessor()
    lake = tmp_path / "lake"
    worker = Worker(
        bus.reader(0),
        [("cost", cost)],
        [ParquetSink(ParquetSinkConfig(path=str(lake)))],
        Normalizer(),
        TraceSummarizer(60),
    )
    worker.run()
    assert worker.error is None

    con = connect(lake)
    llm = con.execute(
        """SELECT provider, coalesce(response_model, request_model), input_tokens, output_tokens,
                  cache_read_tokens, cache_write_tokens, reasoning_tokens, epoch_ns(start_time), cost_usd,
                  cost_status, attributes['tracelake.cost.source'], attributes['tracelake.cost.input_usd'],
                  attributes['llm.provider'] IS NOT NULL, attributes['gen_ai.usage.prompt_tokens'] IS NOT NULL
           FROM spans WHERE span_type IN ('llm', 'embedding')"""
    ).fetchall()
    dialects = {"openinference" if r[12] else "openllmetry" if r[13] else "genai" for r in llm if r[9] == "priced"}
    assert dialects == {"genai", "openinference", "openllmetry"}
    unknown: dict[str, int] = {}
    for provider, model, i, o, cr, cw, rs, start_ns, usd, status, source, input_usd, _, _ in llm:
        if status == "priced":
            pid = {"gcp.gemini": "google", "vertexai": "google"}.get(provider, provider)
            expected = calc_price(
                Usage(
                    input_tokens=i,
                    output_tokens=o,
                    cache_read_tokens=cr,
                    cache_write_tokens=cw,
                    output_reasoning_tokens=rs,
                ),
                model,
                provider_id=pid,
                genai_request_timestamp=datetime.fromtimestamp(start_ns / 1e9, UTC),
            ).total_price
            assert usd == pytest.approx(float(expected), abs=1e-9)
            assert source.startswith("genai-prices 0.2.3") and float(input_usd) >= 0
        elif status == "unknown_model":
            assert usd is None and source is None
            unknown[model] = unknown.get(model, 0) + 1
        else:
            assert (status, usd, i, o) == ("no_usage", None, None, None)
    assert unknown == cost.stats["unknown_model"]
    assert set(unknown) == {"acme-support-llama-3.1-8b", "llama3.1:8b-instruct-q4_K_M"}

    per_trace = con.execute(
        """SELECT t.trace_id, t.cost_usd, t.unpriced_calls, s.cost, s.unpriced
           FROM traces t JOIN (
             SELECT trace_id, sum(cost_usd) AS cost,
                    count(*) FILTER (WHERE span_type = 'llm' AND cost_status <> 'priced') AS unpriced
             FROM spans GROUP BY trace_id) s USING (trace_id)"""
    ).fetchall()
    assert len(per_trace) == 120
    for _tid, cost_usd, unpriced, span_cost, span_unpriced in per_trace:
        assert unpriced == span_unpriced
        assert (cost_usd is None) == (span_cost is None)
        if cost_usd is not None:
            assert cost_usd == pytest.approx(span_cost, abs=1e-12)
    assert sum(r[2] for r in per_trace) == cost.stats["no_usage"] + sum(cost.stats["unknown_model"].values())
