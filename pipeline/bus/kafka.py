"""The Kafka bus (confluent-kafka): receivers publish one message per trace, workers consume in a group.

Message format (docs/design.md, contract 1), interoperable with the OpenTelemetry Collector's Kafka
exporter and receiver with `encoding: otlp_proto` and `partition_traces_by_id: true`:

- value: a serialized ExportTraceServiceRequest holding exactly one trace's spans, with their
  resource and scope (the same bytes as TracesData).
- key: the trace id as 32 lowercase hex characters (ASCII). The Collector builds it with
  `traceutil.TraceIDToHexOrEmptyString(...)` in `partitionData` of
  opentelemetry-collector-contrib/exporter/kafkaexporter/kafka_exporter.go (older releases
  used the raw 16 bytes; the hex form is current).
- partition: FNV-1a 32 of the key, as Sarama's hash partitioner (the Collector's default,
  `sarama_compat` in its franz-go client). librdkafka's `fnv1a_random` is the same function, so
  a Collector and tracelake publishing into one topic put a trace in the same partition.

Delivery: `publish` returns only after every message of the request has a successful delivery
report (acks=all, idempotent producer); otherwise BusRefused, which receivers turn into
UNAVAILABLE / 503 (broker down or slow) or RESOURCE_EXHAUSTED / 429 (local queue full).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core import metrics
from core.source_ref import source_ref
from pipeline.bus.base import BusRefused, Delivery, RevokeHandler
from pipeline.config.model import KafkaBusConfig

log = logging.getLogger("tracelake.bus.kafka")


def trace_key(trace_id: bytes) -> bytes:
    """The Collector's partition key: the trace id as lowercase hex text."""
    return trace_id.hex().encode()


def sarama_partition(key: bytes, partitions: int) -> int:
    """Sarama's HashPartitioner (FNV-1a 32, as int32, modulo, absolute value); for tests and docs."""
    h = 0x811C9DC5
    for b in key:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    signed = h - (1 << 32) if h >= 1 << 31 else h
    part = abs(signed) % partitions
    return part


def split_by_trace(request: ExportTraceServiceRequest) -> list[tuple[bytes, bytes, int]]:
    """Cut a request into one request per trace: [(key, value, spans)], resource and scope kept."""
    groups: dict[bytes, ExportTraceServiceRequest] = {}
    counts: dict[bytes, int] = defaultdict(int)
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            # one (resource, scope) pair per trace in this scope; built lazily
            targets: dict[bytes, Any] = {}
            for span in ss.spans:
                tid = span.trace_id
                target = targets.get(tid)
                if target is None:
                    out = groups.get(tid)
                    if out is None:
                        out = groups[tid] = ExportTraceServiceRequest()
                    new_rs = out.resource_spans.add()
                    new_rs.resource.CopyFrom(rs.resource)
                    new_rs.schema_url = rs.schema_url
                    target = new_rs.scope_spans.add()
                    target.scope.CopyFrom(ss.scope)
                    target.schema_url = ss.schema_url
                    targets[tid] = target
                target.spans.add().CopyFrom(span)
                counts[tid] += 1
    return [(trace_key(tid), req.SerializeToString(), counts[tid]) for tid, req in groups.items()]


def _client_config(cfg: KafkaBusConfig, role: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"bootstrap.servers": cfg.brokers, "client.id": cfg.client_id}
    out.update(cfg.librdkafka)
    out.update(role)
    return out


def ensure_topic(cfg: KafkaBusConfig, timeout: float = 10.0) -> None:
    """Create the topic with the configured partitions when missing; an existing topic is used as it is."""
    admin = AdminClient(_client_config(cfg, {}))
    meta = admin.list_topics(timeout=timeout)
    existing = meta.topics.get(cfg.topic)
    if existing is not None and existing.error is None:
        if len(existing.partitions) != cfg.partitions:
            log.info(
                "topic %s exists with %d partitions (config says %d); using it as it is",
                cfg.topic,
                len(existing.partitions),
                cfg.partitions,
            )
        return
    futures = admin.create_topics(
        [NewTopic(cfg.topic, num_partitions=cfg.partitions, replication_factor=cfg.replication_factor)]
    )
    try:
        futures[cfg.topic].result(timeout)
        log.info("created topic %s with %d partitions", cfg.topic, cfg.partitions)
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


class KafkaPublisher:
    """Receiver side: produce per-trace messages and wait for every delivery report."""

    def __init__(self, cfg: KafkaBusConfig, retry_after: float = 1.0) -> None:
        self.cfg = cfg
        self.retry_after = retry_after
        self._producer_cfg = {
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": cfg.compression,
            "linger.ms": int(cfg.linger * 1000),
            "partitioner": "fnv1a_random",
            # a message not delivered within this is failed by librdkafka itself
            "message.timeout.ms": max(1000, int(cfg.delivery_timeout * 1000 * 6)),
            "error_cb": self._on_error,
        }
        self._producer_cfg.update(cfg.producer)
        self._lock = threading.Lock()
        self._fatal: str | None = None
        self._producer = self._new_producer()
        self._closed = False
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-producer-poll", daemon=True)
        self._poller.start()
        self._recovered_at = 0.0
        self._stalled_since: float | None = None

    def _new_producer(self) -> Producer:
        return Producer(_client_config(self.cfg, self._producer_cfg))

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err.str()
            log.error("Kafka producer fatal error: %s", err.str())

    def _poll_loop(self) -> None:
        while not self._closed:
            self._producer.poll(0.05)

    def publish(self, request: ExportTraceServiceRequest, raw: bytes | None, spans: int) -> None:
        if self._closed:
            raise BusRefused("shutting down", self.retry_after, exhausted=False)
        if self._fatal is not None:
            self._recover(f"fatal producer error: {self._fatal}")
        messages = split_by_trace(request)
        pending = _Pending(len(messages))
        producer = self._producer
        try:
            for key, value, _n in messages:
                producer.produce(self.cfg.topic, value=value, key=key, on_delivery=pending.done)
        except BufferError:
            # messages already queued will still be delivered; the client's retry may duplicate
            # them, which the lake's views remove
            raise BusRefused("Kafka producer queue is full", self.retry_after, exhausted=True) from None
        except KafkaException as e:
            raise BusRefused(f"Kafka produce failed: {e}", self.retry_after, exhausted=False) from None
        if not pending.wait(self.cfg.delivery_timeout):
            now = time.monotonic()
            if self._stalled_since is None:
                self._stalled_since = now
            elif now - self._stalled_since >= self.cfg.delivery_timeout:
                self._recover("no delivery acknowledged")
            raise BusRefused(
                f"Kafka did not acknowledge {pending.remaining} of {len(messages)} messages within "
                f"{self.cfg.delivery_timeout:g}s (brokers {self.cfg.brokers})",
                self.retry_after,
                exhausted=False,
            )
        if pending.error is not None:
            self._recover(pending.error.str())
            raise BusRefused(f"Kafka delivery failed: {pending.error.str()}", self.retry_after, exhausted=False)
        self._stalled_since = None

    def _recover(self, reason: str) -> None:
        """Deliveries keep failing although the cluster answers: the broker may have come back without
        its state (topic gone, idempotent producer id unknown; seen with storage-less brokers). Make sure
        the topic exists and start a fresh producer; the old one's unacknowledged messages are purged
        (their clients were refused and will retry)."""
        with self._lock:
            now = time.monotonic()
            if now - self._recovered_at < max(5.0, self.cfg.delivery_timeout):
                return
            self._recovered_at = now
            try:
                ensure_topic(self.cfg, timeout=3)
            except KafkaException as e:
                log.warning("Kafka unreachable (%s); keeping the producer: %s", reason, e)
                return
            old, self._producer = self._producer, self._new_producer()
            self._fatal = None
            self._stalled_since = None
        log.warning("Kafka reachable but deliveries fail (%s): restarted the producer", reason)
        old.purge(in_queue=True, in_flight=True)
        old.flush(0)

    def close(self, timeout: float = 10.0) -> None:
        left = self._producer.flush(timeout)
        self._closed = True
        self._poller.join()
        if left:
            log.error("%d messages were still undelivered at shutdown", left)


class _Pending:
    """Counts delivery reports for one publish() call."""

    def __init__(self, n: int) -> None:
        self.remaining = n
        self.error: KafkaError | None = None
        self._event = threading.Event()
        self._lock = threading.Lock()
        if n == 0:
            self._event.set()

    def done(self, err: KafkaError | None, _msg: object) -> None:
        with self._lock:
            if err is not None and self.error is None:
                self.error = err
            self.remaining -= 1
            if self.remaining == 0:
                self._event.set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


class KafkaSource:
    """Worker side: a consumer-group member; offsets are committed only up to what the lake holds."""

    def __init__(self, cfg: KafkaBusConfig, max_messages: int = 1000) -> None:
        self.cfg = cfg
        self.max_messages = max_messages
        consumer_cfg = {
            "group.id": cfg.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(cfg.session_timeout * 1000),
            "heartbeat.interval.ms": max(100, int(cfg.session_timeout * 1000 / 10)),
            # consumer lag per partition for /metrics, from librdkafka's own statistics
            "statistics.interval.ms": 5000,
            "stats_cb": self._on_stats,
        }
        consumer_cfg.update(cfg.consumer)
        self._consumer = Consumer(_client_config(cfg, consumer_cfg))
        self.on_revoke: RevokeHandler | None = None
        self.on_leave: Callable[[], None] | None = None  # told before the group leave (the last step of a stop)
        self.lag: dict[str, int] = {}
        # per partition key ("topic/3"): the next offset to commit when nothing of it is held
        self._next: dict[str, int] = {}
        self._committed: dict[str, int] = {}
        self._close_requested = False
        self._closing = False
        self._closed = False
        self._drain_until: dict[str, int] = {}
        self._drain_deadline = 0.0
        self.drain_timeout = 10.0
        # between a revoke (or the start) and the next assignment: what this member will own is not known
        # yet, so a stop waits for the assignment before it decides what to drain
        self._rebalancing = True
        self._consumer.subscribe([cfg.topic], on_assign=self._assigned, on_revoke=self._revoked)

    def _on_stats(self, stats_json: str) -> None:
        try:
            stats = json.loads(stats_json)
            lag = {}
            for topic, t in stats.get("topics", {}).items():
                for part, p in t.get("partitions", {}).items():
                    if part != "-1" and p.get("consumer_lag", -1) >= 0:
                        lag[self.key(topic, int(part))] = p["consumer_lag"]
            self.lag = lag
        except (ValueError, KeyError, TypeError):
            pass

    def metrics(self) -> list[metrics.Sample]:
        return [
            metrics.gauge("tracelake_kafka_consumer_lag", "messages behind, per partition", n, partition=part)
            for part, n in sorted(self.lag.items())
        ]

    @staticmethod
    def key(topic: str, partition: int) -> str:
        return f"{topic}/{partition}"

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned partitions %s", ",".join(str(p.partition) for p in partitions))
        self._rebalancing = False

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [self.key(p.topic, p.partition) for p in partitions]
        log.info("partitions revoked: %s; flushing what belongs to them", ",".join(keys))
        self._rebalancing = True
        if self.on_revoke is not None:
            self.on_revoke(keys)  # flushes sinks and commits what became durable
        for k in keys:
            self._next.pop(k, None)
            self._committed.pop(k, None)

    def take(self, max_spans: int, timeout: float) -> list[Delivery]:
        if self._close_requested and not self._closing:
            self._begin_drain()
        if self.drained:
            return []
        out: list[Delivery] = []
        for msg in self._consumer.consume(self.max_messages, timeout):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", err.str())
                continue
            topic, part, off = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and part is not None and off is not None  # None only on error events
            pk = self.key(topic, part)
            if off + 1 < self._next.get(pk, 0):
                # offsets went backwards: the topic was recreated (e.g. a broker without storage restarted)
                log.warning("offsets of %s restarted at %d (was %d): topic recreated?", pk, off, self._next[pk])
                self._committed.pop(pk, None)
            self._next[pk] = off + 1
            out.append(Delivery(msg.value() or b"", 0, source_ref("kafka", pk, off), pk, off))
        return out

    def commit(self, held: dict[str, int]) -> None:
        offsets = []
        for pk, nxt in self._next.items():
            target = min(nxt, held[pk]) if pk in held else nxt
            if target > self._committed.get(pk, OFFSET_INVALID):
                topic, _, part = pk.rpartition("/")
                offsets.append(TopicPartition(topic, int(part), target))
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            log.warning("offset commit failed (will retry): %s", e)
            return
        for tp in offsets:
            self._committed[self.key(tp.topic, tp.partition)] = tp.offset

    def close(self) -> None:
        """Ask the worker to stop. Any thread may call this; the consumer is only used on the worker's."""
        self._close_requested = True

    def _begin_drain(self) -> None:
        """Read what the assigned partitions already hold (bounded), so that a clean stop of
        `tracelake run` leaves nothing behind; a worker's successor would read it otherwise.

        In the middle of a rebalance (several worker processes start, or one leaves first) the assignment
        is not known yet: keep consuming, which completes the rebalance, and decide once it is."""
        if self._rebalancing:
            if not self._drain_deadline:
                self._drain_deadline = time.monotonic() + self.drain_timeout
            if time.monotonic() < self._drain_deadline:
                return
        try:
            assignment = self._consumer.assignment()
        except KafkaException:
            assignment = []
        for tp in assignment:
            try:
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=2, cached=False)
            except KafkaException:
                continue
            pk = self.key(tp.topic, tp.partition)
            position = self._next.get(pk, self._committed.get(pk, 0))
            if high > position:
                self._drain_until[pk] = high
        self._drain_deadline = max(self._drain_deadline, time.monotonic() + self.drain_timeout)
        self._closing = True

    def finish(self) -> None:
        """Leave the group (after the final commit). `on_leave` is told first: confluent-kafka's close can
        block with the GIL held when the broker does not answer the leave (seen under heavy load), so only
        another process can bound it (the worker pool ends a member whose leave hangs)."""
        if self._closed:
            return
        self._closed = True
        if self.on_leave is not None:
            self.on_leave()
        self._consumer.close()

    @property
    def drained(self) -> bool:
        if self._close_requested and not self._closing:
            self._begin_drain()
        if not self._closing:
            return False
        if time.monotonic() >= self._drain_deadline:
            return True
        return all(self._next.get(pk, 0) >= high for pk, high in self._drain_until.items())


def probe(cfg: KafkaBusConfig, timeout: float = 5.0) -> Callable[[], bool]:
    """A readiness check: can we fetch cluster metadata?"""
    admin = AdminClient(_client_config(cfg, {}))

    def check() -> bool:
        try:
            admin.list_topics(timeout=timeout)
            return True
        except KafkaException:
            return False

    return check
