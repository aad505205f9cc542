"""Every registered processor keeps the processor API's promises (core/processor.py), as the Collector generates
lifecycle tests for each component: built from its example config, fed the demo traffic through the real decode
and normalize with feedback events among it, ticked, revoked, shut down, forgotten.

`check_processor` is also run over the third-party example (tests/test_third_party_processor.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core import feedback, metrics, schema
from core.conventions import Normalizer
from core.feedback import FeedbackEvent
from core.processor import (
    ENTRY_POINT_GROUP,
    Processor,
    ProcessorContext,
    ProcessorFactory,
    Sampler,
    StatefulProcessor,
)
from core.registry import FactoryRegistry
from pipeline.demo import build_requests
from pipeline.receiver.intake import IngestChain
from pipeline.testing import demo_batches, feedback_batch, run_chain
from processors.redact_pii.testing import TEST_HASH_KEY

# What the entry points register, read afresh: tests elsewhere register stand-ins in the shared Registry.
FACTORIES = FactoryRegistry(ENTRY_POINT_GROUP, ProcessorFactory).factories()
PARTITION = "demo/0"
SPANS_COLUMNS = schema.SPANS.names


@pytest.fixture(autouse=True)
def _sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative default paths (an artifact store, a key file) land in a temporary directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRACELAKE_HASH_KEY", TEST_HASH_KEY)


def _traffic() -> list[pa.Table]:
    """Demo traffic, one batch per request, with feedback events (negative and positive) after each."""
    batches = demo_batches(30, seed=5, spans_per_request=128, partition=PARTITION)
    out = []
    for i, b in enumerate(batches):
        out.append(b)
        traces = pc.unique(b.column("trace_id")).to_pylist()[:2]
        events = [FeedbackEvent(t, "thumbs", float(j), comment=f"c{i}", time_ns=1) for j, t in enumerate(traces)]
        out.append(feedback_batch(events, f"embedded:{PARTITION}@{len(batches) + i}"))
    return out


TRAFFIC = _traffic()


def _keys(table: pa.Table) -> list[tuple[str, str]]:
    return list(zip(table.column("trace_id").to_pylist(), table.column("span_id").to_pylist(), strict=True))


def _build(factory: ProcessorFactory, stage: str = "process", replayable: bool = False) -> Processor:
    config = factory.config_class.model_validate(dict(factory.example_config or {}))
    context = ProcessorContext(factory.type, Normalizer(), stage=stage, replayable_source=replayable)  # type: ignore[arg-type]
    return factory.build(config, context)


class _Checked:
    """Wraps a processor: every table it returns is checked against the batch or state it came from."""

    def __init__(self, inner: Processor) -> None:
        self.inner = inner
        self.seen: set[tuple[str, str]] = set()
        self.out: Counter[tuple[str, str]] = Counter()
        self.shut_down = False

    def check(self, result: pa.Table, given: pa.Schema, allowed: set[tuple[str, str]]) -> pa.Table:
        assert isinstance(result, pa.Table)
        assert result.schema.names[: len(given)] == given.names, "columns kept, in order (new ones appended)"
        for name in given.names:
            assert result.schema.field(name).type == given.field(name).type, name
        keys = _keys(result)
        assert set(keys) <= allowed, "only rows it was given"
        self.out.update(keys)
        if isinstance(self.inner, Sampler) and result.num_rows:
            assert result.column("sampling_kept").null_count == 0
            assert result.schema.field("sampling_reasons").type == pa.list_(pa.string())
        return result

    def process(self, batch: pa.Table) -> pa.Table:
        assert not self.shut_down, "process after shutdown"
        assert batch.num_rows > 0
        self.seen.update(_keys(batch))
        return self.check(self.inner.process(batch), batch.schema, set(_keys(batch)))

    def release(self, result: pa.Table) -> pa.Table:
        return self.check(result, schema.SPANS, self.seen)


def check_processor(factory: ProcessorFactory) -> None:
    """The promises of core/processor.py that hold for any processor, on the demo traffic."""
    proc = _build(factory)
    assert isinstance(proc, Processor)
    assert isinstance(proc, StatefulProcessor) == factory.stateful
    checked = _Checked(proc)

    class Chain:  # the checked processor as run_chain sees it, at the level the factory declares
        stats = proc.stats
        process = checked.process

    link: Processor = Chain()
    if isinstance(proc, StatefulProcessor):
        stateful = proc

        class StatefulChain(Chain):
            def tick(self, now_ns: int) -> pa.Table:
                assert not checked.shut_down, "tick after shutdown"
                return checked.release(stateful.tick(now_ns))

            def shutdown(self) -> pa.Table:
                out = checked.release(stateful.shutdown())
                checked.shut_down = True
                return out

            on_revoke = stateful.on_revoke
            retire = stateful.retire
            forget = stateful.forget
            low_watermarks = stateful.low_watermarks

            if isinstance(proc, Sampler):
                take_promotions = proc.take_promotions  # type: ignore[assignment]

        link = StatefulChain()

    run = run_chain([link], TRAFFIC)
    assert max(checked.out.values(), default=1) == 1, "a row passed on twice"

    # feedback spans pass through, every one, untouched in every lake column
    sent = pa.concat_tables([b.filter(feedback.is_synthetic(b)) for b in TRAFFIC])
    passed = run.output.filter(feedback.is_synthetic(run.output)).select(SPANS_COLUMNS)
    order = [("span_id", "ascending")]
    passed, sent = passed.sort_by(order), sent.sort_by(order)
    assert passed.num_rows == sent.num_rows, "feedback spans dropped"
    changed = [c for c in SPANS_COLUMNS if not passed.column(c).equals(sent.column(c))]
    assert not changed, f"feedback spans changed in {changed}"

    if isinstance(proc, StatefulProcessor):
        assert proc.low_watermarks() == {}, "everything held was released at shutdown"
        proc.forget(None)
    # stats: numbers or mappings of numbers, readable after shutdown, exported as dotted keys
    assert isinstance(proc.stats, Mapping)
    for _key, value in metrics.flatten_stats(proc.stats):
        assert isinstance(value, float)


@pytest.mark.parametrize("type_name", sorted(FACTORIES))
def test_registered_processor_keeps_the_api(type_name: str) -> None:
    check_processor(FACTORIES[type_name])


def check_stateful(factory: ProcessorFactory) -> None:
    """Held rows are reported by low_watermarks, released by on_revoke, kept (replayable) until forget, all
    released by retire."""
    proc = _build(factory)
    assert isinstance(proc, StatefulProcessor)
    real = [b for b in TRAFFIC if not pc.any(feedback.is_synthetic(b)).as_py()]
    held = 0
    for b in real[:3]:
        held += b.num_rows - proc.process(b).num_rows
    assert held, "the example config holds spans"
    marks = proc.low_watermarks()
    assert marks == {PARTITION: 0}, marks
    released = proc.on_revoke({"other/1"})
    assert released.num_rows == 0 and proc.low_watermarks() == marks
    released = proc.on_revoke({PARTITION})
    assert released.num_rows == held and proc.low_watermarks() == {}
    assert proc.tick(0).num_rows == 0
    proc.forget({PARTITION})
    assert proc.shutdown().num_rows == 0

    replayable = _build(factory, replayable=True)
    assert isinstance(replayable, StatefulProcessor)
    kept = sum(b.num_rows - replayable.process(b).num_rows for b in real[:3])
    assert replayable.shutdown().num_rows == 0, "replayable: kept for the replay"
    assert kept and replayable.low_watermarks() == {PARTITION: 0}
    replayable.forget(None)
    assert replayable.low_watermarks() == {}

    # a reload retires the chain: everything held is released, decided, also when the bus could replay it
    retired = _build(factory, replayable=True)
    assert isinstance(retired, StatefulProcessor)
    kept = sum(b.num_rows - retired.process(b).num_rows for b in real[:3])
    released = retired.retire()
    assert kept and released.num_rows == kept and retired.low_watermarks() == {}
    if isinstance(retired, Sampler):
        assert released.column("sampling_kept").null_count == 0


@pytest.mark.parametrize("type_name", sorted(t for t, f in FACTORIES.items() if f.stateful))
def test_registered_stateful_processor_holds_and_releases_by_partition(type_name: str) -> None:
    check_stateful(FACTORIES[type_name])


@pytest.mark.parametrize("type_name", sorted(t for t, f in FACTORIES.items() if not f.stateful))
def test_registered_stateless_processor_runs_in_the_ingest_stage(type_name: str) -> None:
    """The receiver folds the result back into OTLP: the request stays valid and keeps every feedback span."""
    chain = IngestChain([(type_name, _build(FACTORIES[type_name], stage="ingest"))], Normalizer())
    body = build_requests(8, seed=3)[0]
    request = ExportTraceServiceRequest.FromString(body)
    feedback_spans = feedback.to_request([FeedbackEvent("ab" * 16, "thumbs", 0.0)]).resource_spans
    request.resource_spans.extend(feedback_spans)
    out = chain.apply(request, None)
    ExportTraceServiceRequest.FromString(out.SerializeToString())
    scopes = [ss.scope.name for rs in out.resource_spans for ss in rs.scope_spans if len(ss.spans)]
    assert feedback.FEEDBACK_SCOPE in scopes


def test_the_factory_refuses_a_processor_that_does_not_keep_its_declared_level() -> None:
    """A factory declaring stateful=True whose processor lacks hooks is refused at build time, naming them;
    hooks on a processor not declared stateful would never be called, so that is refused too."""

    class OnlyProcess:
        stats: dict[str, int] = {}  # noqa: RUF012

        def process(self, batch: pa.Table) -> pa.Table:
            return batch

    class Ticks(OnlyProcess):
        def tick(self, now_ns: int) -> pa.Table:
            return schema.empty("spans")

    base = FACTORIES["cost"]
    context = ProcessorContext("x")
    holds = ProcessorFactory("holds", base.config_class, lambda c, ctx: OnlyProcess(), stateful=True)
    with pytest.raises(
        TypeError, match=r"'x' \(type 'holds'\).*not a StatefulProcessor.*tick, shutdown, retire, on_revoke"
    ):
        holds.build(base.config_class(), context)
    hidden = ProcessorFactory("hidden", base.config_class, lambda c, ctx: Ticks())
    with pytest.raises(TypeError, match="has tick but its factory does not declare stateful=True"):
        hidden.build(base.config_class(), context)
    no_stats = ProcessorFactory("plain", base.config_class, lambda c, ctx: type("P", (), {"process": None})())
    with pytest.raises(TypeError, match="not a Processor: it has no stats"):
        no_stats.build(base.config_class(), context)
