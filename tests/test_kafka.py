"""The Kafka bus against a real Kafka-protocol broker (Tansu) in its own process."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from pipeline.bus.kafka import sarama_partition, split_by_trace, trace_key
from pipeline.query import connect
from tests.conftest import RunningTracelake, config_yaml, make_request
from tests.kafka_broker import FAST_GROUP, Broker

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    b = Broker()
    yield b
    b.stop()


def kafka_bus(broker: Broker, topic: str, partitions: int = 4, **extra: object) -> str:
    consumer = ", ".join(f"{k}: {v}" for k, v in FAST_GROUP.items())
    more = "".join(f"\n  {k}: {v}" for k, v in extra.items())
    return (
        f"bus:\n  type: kafka\n  brokers: {broker.address}\n  topic: {topic}\n  group: g-{topic}\n"
        f"  partitions: {partitions}\n  session_timeout: 6s\n  delivery_timeout: 2s\n  commit_interval: 200ms\n"
        f"  consumer: {{{consumer}}}{more}\n"
    )


def _spans(trace_ids: list[str], per_trace: int = 3) -> ExportTraceServiceRequest:
    return make_request(
        [
            {"trace_id": t, "span_id": f"{i + 1:016x}", "parent": None if i == 0 else "0000000000000001"}
            for t in trace_ids
            for i in range(per_trace)
        ]
    )


def _trace_ids(n: int, seed: int) -> list[str]:
    return [f"{seed:08x}{i + 1:024x}" for i in range(n)]


def _send(tl: RunningTracelake, req: ExportTraceServiceRequest, timeout: float = 10) -> None:
    with grpc.insecure_channel(tl.grpc) as ch:
        ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)(
            req.SerializeToString(), timeout=timeout
        )


def _wait_for(predicate, timeout: float = 60, interval: float = 0.3) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def _lake_counts(lake: Path) -> tuple[int, int]:
    row = connect(lake).execute("select count(*), count(distinct trace_id) from spans").fetchone()
    assert row is not None
    return row[0], row[1]


# -- message format ---------------------------------------------------------------------------
def test_split_by_trace_keeps_resource_and_scope_and_uses_the_collectors_key() -> None:
    req = _spans(_trace_ids(3, 1), per_trace=2)
    req.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.26.0"
    messages = split_by_trace(req)
    assert len(messages) == 3
    for key, value, n in messages:
        assert n == 2
        assert len(key) == 32 and key == key.lower()
        # a plain OTLP consumer reads it, as ExportTraceServiceRequest or TracesData (same wire format)
        one = TracesData.FromString(value)
        (rs,) = one.resource_spans
        assert rs.schema_url == "https://opentelemetry.io/schemas/1.26.0"
        assert rs.resource.attributes[0].value.string_value == "svc"
        (ss,) = rs.scope_spans
        assert ss.scope.name == "tests"
        assert {trace_key(s.trace_id) for s in ss.spans} == {key}


def test_collector_built_messages_are_consumed(broker: Broker, tmp_path: Path) -> None:
    """Publish the way the Collector's kafkaexporter does (per-trace TracesData, hex key, FNV-1a partition)."""
    topic = "collector_in"
    worker = RunningTracelake(tmp_path, config_yaml(extra=kafka_bus(broker, topic)), command="worker")
    try:
        producer = Producer({"bootstrap.servers": broker.address, "partitioner": "fnv1a_random"})
        placed: list[tuple[bytes, int]] = []
        traces = _trace_ids(20, 7)
        for t in traces:
            data = TracesData()
            data.resource_spans.extend(_spans([t]).resource_spans)
            producer.produce(
                topic,
                key=t.encode(),
                value=data.SerializeToString(),
                on_delivery=lambda err, msg: placed.append((msg.key(), msg.partition())),
            )
        assert producer.flush(10) == 0
        # the same partition Sarama's hash partitioner (the Collector's default) picks
        assert all(p == sarama_partition(k, 4) for k, p in placed) and len(placed) == 20
        assert _wait_for(lambda: worker.lake.exists() and _lake_counts(worker.lake) == (60, 20)), worker.log
    finally:
        assert worker.stop() == 0, worker.log


# -- run / receiver / worker ------------------------------------------------------------------
def test_run_with_kafka_writes_everything_and_commits(broker: Broker, tmp_path: Path) -> None:
    topic = "run_all"
    tl = RunningTracelake(tmp_path, config_yaml(extra=kafka_bus(broker, topic)))
    try:
        assert _wait_for(lambda: "assigned partitions" in tl.log, 30)
        for seed in range(1, 6):
            _send(tl, _spans(_trace_ids(10, seed)))
    finally:
        assert tl.stop() == 0, tl.log
    assert _lake_counts(tl.lake) == (150, 50)
    assert connect(tl.lake).execute("select count(*) from traces").fetchone() == (50,)
    names = [p.name for p in (tl.lake / "spans").rglob("*.parquet")]
    assert names and all(n.startswith(f"{topic}-") for n in names), names
    # every message (one per trace) was committed. (Tansu's reported high watermarks lag behind the
    # real end offsets, so they are not used as the reference here.)
    c = Consumer({"bootstrap.servers": broker.address, "group.id": f"g-{topic}"})
    committed = c.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
    c.close()
    assert sum(tp.offset for tp in committed) == 50


def test_receiver_and_two_workers_share_partitions(broker: Broker, tmp_path: Path) -> None:
    topic = "scale_out"
    bus = kafka_bus(broker, topic, partitions=6)
    (tmp_path / "r").mkdir()
    receiver = RunningTracelake(tmp_path / "r", config_yaml(extra=bus), command="receiver")
    lake_yaml = config_yaml(extra=bus).replace("{lake}", str(tmp_path / "lake"))
    workers = [RunningTracelake(tmp_path, lake_yaml, command="worker", name=f"w{i}") for i in range(2)]
    try:
        # both members joined before data flows, so the partitions are split between them
        assert _wait_for(lambda: all("assigned partitions" in w.log for w in workers), 30)
        for seed in range(1, 11):
            _send(receiver, _spans(_trace_ids(10, seed)))
        assert _wait_for(lambda: _lake_counts(tmp_path / "lake") == (300, 100), 60)
    finally:
        assert receiver.stop() == 0, receiver.log
        for w in workers:
            assert w.stop() == 0, w.log
    files = list((tmp_path / "lake" / "spans").rglob("*.parquet"))
    partitions_written = {f.name.split("-")[1] for f in files}
    assert len(partitions_written) == 6
    assert _lake_counts(tmp_path / "lake") == (300, 100)
    assert connect(tmp_path / "lake").execute("select count(*) from traces").fetchone() == (100,)


def test_broker_unreachable_then_back(tmp_path: Path) -> None:
    """Broker hangs: exports get UNAVAILABLE after the bounded wait; when it answers again, OK without restart."""
    broker = Broker()
    tl = RunningTracelake(tmp_path, config_yaml(extra=kafka_bus(broker, "flaky")))
    try:
        assert _wait_for(lambda: "assigned partitions" in tl.log, 30)
        _send(tl, _spans(_trace_ids(2, 1)))
        broker.pause()
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            _send(tl, _spans(_trace_ids(2, 2)))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "did not acknowledge" in (err.value.details() or "")
        assert time.monotonic() - t0 < 6  # delivery_timeout: 2s
        broker.resume()
        assert _wait_for(lambda: _try_send(tl, _spans(_trace_ids(2, 3))), 30)
        assert _wait_for(lambda: tl.lake.exists() and _lake_counts(tl.lake)[1] >= 4, 30)
    finally:
        broker.resume()
        assert tl.stop() == 0, tl.log
        broker.stop()
    # at least everything acknowledged is there (the refused batch may also have landed later: at-least-once)
    have = {r[0] for r in connect(tl.lake).execute("select distinct trace_id from spans").fetchall()}
    assert set(_trace_ids(2, 1)) | set(_trace_ids(2, 3)) <= have


def _try_send(tl: RunningTracelake, req: ExportTraceServiceRequest) -> bool:
    try:
        _send(tl, req, timeout=5)
        return True
    except grpc.RpcError:
        return False


def test_worker_killed_with_sigkill_loses_nothing_and_duplicates_nothing(broker: Broker, tmp_path: Path) -> None:
    topic = "crashy"
    bus = kafka_bus(broker, topic)
    (tmp_path / "r").mkdir()
    receiver = RunningTracelake(tmp_path / "r", config_yaml(extra=bus), command="receiver")
    lake_yaml = config_yaml(extra=bus).replace("{lake}", str(tmp_path / "lake"))
    worker = RunningTracelake(tmp_path, lake_yaml, command="worker", name="w1")
    sent: list[str] = []
    stop = threading.Event()

    def feed() -> None:
        seed = 1
        while not stop.is_set() and seed < 400:
            ids = _trace_ids(5, seed)
            if _try_send(receiver, _spans(ids)):
                sent.extend(ids)
                seed += 1
            time.sleep(0.01)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        assert _wait_for(lambda: (tmp_path / "lake" / "spans").exists(), 30), worker.log
        time.sleep(1.0)
        # mid-stream: buffers, open traces, uncommitted offsets. One consumer process of `tracelake worker`
        # dies; its supervisor starts another and the group hands the partitions over.
        victim = worker.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        assert _wait_for(lambda: worker.worker_pids()[0] != victim, 30), worker.log
        time.sleep(1.0)
        stop.set()
        feeder.join()
        assert _wait_for(lambda: _lake_counts(tmp_path / "lake") == (len(sent) * 3, len(sent)), 60), (
            _lake_counts(tmp_path / "lake"),
            len(sent),
        )
    finally:
        stop.set()
        feeder.join()
        assert receiver.stop() == 0, receiver.log
        assert worker.stop() == 0, worker.log
    lake = tmp_path / "lake"
    for f in lake.rglob("*.parquet"):
        pq.read_metadata(f)  # every file whole
    assert not list(lake.rglob("*.tmp"))
    assert _lake_counts(lake) == (len(sent) * 3, len(sent))
    assert connect(lake).execute("select count(*) from traces").fetchone() == (len(sent),)


def test_full_producer_queue_is_resource_exhausted(tmp_path: Path) -> None:
    broker = Broker()
    bus = kafka_bus(broker, "tiny_queue", producer="{queue.buffering.max.messages: 3}")
    (tmp_path / "r").mkdir()
    receiver = RunningTracelake(tmp_path / "r", config_yaml(extra=bus), command="receiver")
    try:
        broker.pause()  # nothing leaves the producer's queue
        with pytest.raises(grpc.RpcError) as err:
            _send(receiver, _spans(_trace_ids(5, 1)))  # 5 messages, room for 3
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full" in (err.value.details() or "")
    finally:
        broker.resume()
        assert receiver.stop() == 0, receiver.log
        broker.stop()


def test_broker_restarted_empty_on_the_same_address(tmp_path: Path) -> None:
    """Tansu keeps everything in memory: after a restart the topic is gone and offsets start again at 0.

    The SDK's retries must succeed once the broker is back, and the worker must keep consuming."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    broker = Broker()
    tl = RunningTracelake(tmp_path, config_yaml(extra=kafka_bus(broker, "phoenix")))
    try:
        assert _wait_for(lambda: "assigned partitions" in tl.log, 30)
        _send(tl, _spans(_trace_ids(3, 1)))
        assert _wait_for(lambda: tl.lake.exists() and _lake_counts(tl.lake) == (9, 3), 30), tl.log
        broker.stop()
        tp = TracerProvider()
        tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=tl.grpc, insecure=True, timeout=20)))
        tracer = tp.get_tracer("restart")
        ids = []
        for i in range(5):
            with tracer.start_as_current_span(f"after-restart-{i}") as span:
                ids.append(f"{span.get_span_context().trace_id:032x}")
        # the SDK exports while the broker is down; it is back on the same port within the SDK's retry window
        flusher = threading.Thread(target=tp.force_flush)
        flusher.start()
        time.sleep(1.5)
        broker = Broker(port=broker.port)
        flusher.join(60)
        tp.shutdown()
        ok = _wait_for(lambda: _lake_counts(tl.lake) == (14, 8), 60)
        print(tl.log)
        assert ok, _lake_counts(tl.lake)
    finally:
        assert tl.stop() == 0, tl.log
        broker.stop()
