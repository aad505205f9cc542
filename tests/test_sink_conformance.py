"""Every registered sink keeps the sink API's promises (core/sink.py), as tests/test_processor_conformance.py
checks every processor: built from its default config, given demo spans with their bus offsets, flushed on its
schedule and then for good, its metrics read throughout."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.registry import FactoryRegistry
from core.sink import ENTRY_POINT_GROUP, Sink, SinkContext, SinkFactory
from pipeline.testing import demo_batches

# What the entry points register, read afresh (tests elsewhere may register stand-ins in the shared Registry).
FACTORIES = FactoryRegistry(ENTRY_POINT_GROUP, SinkFactory).factories()
PARTITION = "demo/0"


@pytest.mark.parametrize("sink_type", sorted(FACTORIES))
def test_sink_keeps_the_api_promises(sink_type: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative default paths (the lake) land in a temporary directory
    factory = FACTORIES[sink_type]
    sink = factory.create(factory.config_class.model_validate({}), SinkContext(f"{sink_type}/conformance"))
    assert isinstance(sink, Sink)
    assert sink.sink_id == f"{sink_type}/conformance"

    batches = demo_batches(4, seed=3, spans_per_request=64, partition=PARTITION)
    for offset, batch in enumerate(batches, start=7):
        sink.write("spans", batch, PARTITION, (offset, offset))
    rows = sum(b.num_rows for b in batches)
    assert sink.buffered_rows == rows, "write only takes the rows"
    assert sink.low_watermarks() == {PARTITION: 7}, "the oldest offset not yet durable holds the commit back"
    sink.flush_due()  # the sink's own schedule: whatever it writes, no row is lost or counted twice
    assert 0 <= sink.buffered_rows <= rows
    assert not sink.failing and sink.backlog_bytes == 0

    samples = sink.metrics()
    assert samples and all(s.name.startswith("tracelake_sink_") for s in samples)
    assert all(("sink", sink.sink_id) in s.labels for s in samples)

    sink.flush_all()
    assert sink.buffered_rows == 0
    assert sink.low_watermarks() == {}, "everything durable: nothing holds the commit back"
    assert {s.name for s in sink.metrics()} == {s.name for s in samples}, "metrics are read after the last flush too"
