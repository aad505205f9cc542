"""TraceSummarizer: traces that span batches, partial `due`, watermarks, forced summaries by source."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from core.conventions import normalize
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.trace_summary import TraceSummarizer, _splitmix64, span_id_hashes
from tests.conftest import make_request

LONG, SHORT, OTHER = "a1" * 16, "b2" * 16, "c3" * 16
T0 = 1_700_000_000_000_000_000


def _spans(spans: list[dict[str, object]], source: str) -> pa.Table:
    return normalize(decode([SourcedRequest(make_request(spans), source)]))


def _llm(trace: str, span: str, model: str, tokens: int, start: int, parent: str | None = "ff" * 8) -> dict:
    return {
        "trace_id": trace,
        "span_id": span,
        "parent": parent,
        "name": f"chat {model}",
        "start": start,
        "end": start + 1_000_000,
        "attrs": {"gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.usage.input_tokens": tokens},
    }


def test_a_trace_across_batches_is_summarised_once_when_idle() -> None:
    clock = [0.0]
    s = TraceSummarizer(trace_idle=5, clock=lambda: clock[0])
    s.observe(
        _spans([_llm(LONG, "01" * 8, "gpt-4o", 10, T0), _llm(SHORT, "02" * 8, "m", 1, T0, parent=None)], "k:p0@1"),
        "p0",
        (1, 1),
    )
    clock[0] = 3.0
    s.observe(_spans([_llm(LONG, "03" * 8, "claude", 5, T0 + 5_000_000)], "k:p0@2"), "p0", (2, 2))
    clock[0] = 6.0  # SHORT idle for 6 s, LONG for 3 s
    (part,) = s.due()
    assert part.rows.column("trace_id").to_pylist() == [SHORT]
    assert part.rows.column("root_name").to_pylist() == ["chat m"]
    assert s.open_traces == 1
    assert s.low_watermarks() == {"p0": 1}  # LONG still holds offset 1 in memory
    clock[0] = 7.0
    root = {"trace_id": LONG, "span_id": "ff" * 8, "name": "agent run", "start": T0 - 1_000, "end": T0 + 9_000_000}
    s.observe(_spans([root], "k:p0@3"), "p0", (3, 3))
    clock[0] = 20.0
    (part,) = s.due()
    (row,) = part.rows.to_pylist()
    assert part.offsets == (1, 3)
    assert row["trace_id"] == LONG
    assert row["root_name"] == "agent run"
    assert row["span_count"] == 3 and row["llm_count"] == 2
    assert row["input_tokens"] == 15
    assert row["models"] == ["claude", "gpt-4o"]
    assert row["lake_source"] == "k:p0@1"
    assert row["duration_ms"] == (T0 + 9_000_000 - (T0 - 1_000)) / 1e6
    assert s.open_traces == 0 and s.low_watermarks() == {}


def test_forced_summaries_of_some_sources_leave_the_others_open() -> None:
    s = TraceSummarizer(trace_idle=60, clock=lambda: 0.0)
    s.observe(_spans([_llm(LONG, "01" * 8, "m", 1, T0)], "k:p0@5"), "p0", (5, 5))
    s.observe(_spans([_llm(OTHER, "02" * 8, "m", 1, T0)], "k:p1@7"), "p1", (7, 7))
    assert s.due() == []
    (part,) = s.due(force=True, sources={"p1"})
    assert part.source == "p1" and part.offsets == (7, 7)
    assert part.rows.column("trace_id").to_pylist() == [OTHER]
    assert s.low_watermarks() == {"p0": 5}
    (part,) = s.due(force=True)
    assert part.rows.column("trace_id").to_pylist() == [LONG]


def test_a_replayed_part_has_the_same_part_id() -> None:
    spans = [_llm(LONG, "01" * 8, "m", 1, T0), _llm(LONG, "02" * 8, "m", 1, T0)]
    ids = []
    for order in (spans, spans[::-1]):
        s = TraceSummarizer(trace_idle=0, clock=lambda: 0.0)
        s.observe(_spans(order, "k:p0@1"))
        (part,) = s.due()
        ids.append(part.rows.column("part_id")[0].as_py())
    assert ids[0] == ids[1]


def test_span_id_hashes_read_hex_on_columns() -> None:
    ids = [f"{(i * 0x9E3779B97F4A7C15) % 2**64:016x}" for i in range(1, 200)]
    got = span_id_hashes(pa.array(ids).slice(3))
    assert got.tolist() == _splitmix64(np.array([int(s, 16) for s in ids[3:]], np.uint64)).tolist()
    odd = span_id_hashes(pa.array(["abc", ids[0]]))  # not 16 digits: hashed one by one, still 64-bit values
    assert odd.dtype == np.uint64 and len(set(odd.tolist())) == 2


def test_different_spans_make_different_parts() -> None:
    ids = set()
    for span in ("01" * 8, "02" * 8, "03" * 8):
        s = TraceSummarizer(trace_idle=0, clock=lambda: 0.0)
        s.observe(_spans([_llm(LONG, span, "m", 1, T0)], "k:p0@1"))
        (part,) = s.due()
        ids.add(part.rows.column("part_id")[0].as_py())
    assert len(ids) == 3


def test_a_trace_that_never_goes_idle_is_written_in_parts_and_releases_its_offsets() -> None:
    """A long agent session keeps sending spans: without `trace_max_wait` it would hold the offset of its first
    span uncommitted for as long as it runs (and the embedded bus would keep everything since then)."""
    clock = [0.0]
    s = TraceSummarizer(trace_idle=5, clock=lambda: clock[0], trace_max_wait=10)
    for i in range(25):  # one span a second for 25 s: never idle for 5 s
        clock[0] = float(i)
        span = {"trace_id": LONG, "span_id": f"{i + 1:016x}", "name": f"step {i}", "start": T0 + i, "end": T0 + i + 1}
        s.observe(_spans([span], f"k:p0@{i}"), "p0", (i, i))
        for part in s.due():
            assert part.rows.column("trace_id").to_pylist() == [LONG]
            assert part.offsets is not None
    # parts of spans 0-10 and 11-21 were written at 10 s and 21 s: the trace holds only what came after
    assert s.low_watermarks() == {"p0": 22}
    clock[0] = 40.0
    (last,) = s.due()
    assert last.offsets == (22, 24)
    assert s.open_traces == 0


def test_without_trace_max_wait_an_active_trace_holds_its_first_offset() -> None:
    clock = [0.0]
    s = TraceSummarizer(trace_idle=5, clock=lambda: clock[0])
    for i in range(25):
        clock[0] = float(i)
        span = {"trace_id": LONG, "span_id": f"{i + 1:016x}", "name": f"step {i}", "start": T0 + i, "end": T0 + i + 1}
        s.observe(_spans([span], f"k:p0@{i}"), "p0", (i, i))
        assert s.due() == []
    assert s.low_watermarks() == {"p0": 0}
