"""Typed configuration: the YAML of docs/design.md contract 3, validated once at the edge.

Unknown keys are errors everywhere (`extra="forbid"`). Durations and sizes are core/config.py's types.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from core.config import Bytes, Seconds, Strict, parse_duration


def check_endpoint(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port with a port 0-65535, got {value!r}")
    return value


Endpoint = Annotated[str, AfterValidator(check_endpoint)]


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)



class GrpcReceiverConfig(Strict):
    endpoint: Endpoint = "127.0.0.1:4317"


class HttpReceiverConfig(Strict):
    endpoint: Endpoint = "127.0.0.1:4318"


class OtlpReceiverConfig(Strict):
    grpc: GrpcReceiverConfig | None = None
    http: HttpReceiverConfig | None = None
    max_request_bytes: Bytes = 16 * 2**20
    # How long a refused client is told to wait (Retry-After / RetryInfo) when the bus is full.
    retry_after: Seconds = 1.0


class ReceiversConfig(Strict):
    otlp: OtlpReceiverConfig = Field(
        default_factory=lambda: OtlpReceiverConfig(grpc=GrpcReceiverConfig(), http=HttpReceiverConfig())
    )


class EmbeddedBusConfig(Strict):
    type: Literal["embedded"] = "embedded"
    # What the bus holds until workers have made it durable in the lake (read or not); beyond either
    # bound receivers refuse with a retryable status.
    capacity_spans: int = Field(1_000_000, gt=0)
    capacity_bytes: Bytes = 1 * 2**30


LibrdkafkaValue = str | int | float | bool


class KafkaBusConfig(Strict):
    type: Literal["kafka"]
    brokers: str = Field(min_length=1, description="bootstrap servers, host:port[,host:port]")
    topic: str = Field("otlp_spans", min_length=1)
    group: str = Field("tracelake", min_length=1)
    # used when tracelake creates the topic; an existing topic is used as it is
    partitions: int = Field(12, gt=0)
    replication_factor: int = Field(1, ge=-1, description="-1: the broker's default")
    # how long a receiver waits for Kafka's acknowledgement before answering UNAVAILABLE / 503
    delivery_timeout: Seconds = 5.0
    # lz4: 1.2–2.4× the receiver throughput of zstd, measured by benchmarks/kafka_bench.py
    compression: Literal["zstd", "lz4", "snappy", "gzip", "none"] = "lz4"
    linger: Seconds = 0.005
    session_timeout: Seconds = 10.0
    # commit offsets (up to what is durable in the lake) this often
    commit_interval: Seconds = 1.0
    client_id: str = "tracelake"
    # librdkafka settings passed through as they are (security.protocol, sasl.*, ssl.*, ...)
    librdkafka: dict[str, LibrdkafkaValue] = Field(default_factory=dict)
    producer: dict[str, LibrdkafkaValue] = Field(default_factory=dict)
    consumer: dict[str, LibrdkafkaValue] = Field(default_factory=dict)


def _default_bus_type(value: Any) -> Any:
    """`bus: {capacity_spans: 1000}` means the embedded bus, as it did before Kafka existed."""
    if isinstance(value, dict) and "type" not in value:
        return {"type": "embedded", **value}
    return value


class CorrelationKeysConfig(Strict):
    session: list[str] = Field(default_factory=lambda: ["session.id", "gen_ai.conversation.id"])
    user: list[str] = Field(default_factory=lambda: ["user.id", "enduser.id"])
    tenant: list[str] = Field(default_factory=lambda: ["tenant.id"])
    prompt_version: list[str] = Field(default_factory=lambda: ["app.prompt_version", "prompt.version"])


def resolve_processes(value: int | Literal["auto"]) -> int:
    """`auto`: one worker process per core this process may run on."""
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    return int(value)


class WorkerConfig(Strict):
    # Worker processes, each owning a share of trace-id space (embedded bus) or a consumer-group
    # membership (Kafka); `auto` is one per core.
    processes: Annotated[int, Field(gt=0, le=256)] | Literal["auto"] = "auto"
    # A trace is summarised once it has had no new span for this long (and at shutdown).
    trace_idle: Seconds = 5.0
    # A trace still receiving spans after this long is summarised in parts (the traces view merges them):
    # an open trace keeps the bus offsets of its first spans uncommitted. null: never.
    trace_max_wait: Seconds | None = 30.0
    # The worker takes up to this many spans from the bus per batch, waiting at most max_batch_delay.
    max_batch_spans: int = Field(8192, gt=0)
    max_batch_delay: Seconds = 0.2
    keys: CorrelationKeysConfig = Field(default_factory=CorrelationKeysConfig)


class TelemetryConfig(Strict):
    # Prometheus /metrics, /healthz, /readyz; null disables the endpoint
    endpoint: Endpoint | None = "127.0.0.1:8888"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"


class MemoryLimiterConfig(Strict):
    # refuse data (429 / RESOURCE_EXHAUSTED) above limit - spike_limit of resident memory
    limit: Bytes
    spike_limit: Bytes
    check_interval: Seconds = 1.0


class PipelineConfig(Strict):
    ingest: list[str] = Field(default_factory=list)
    process: list[str] = Field(default_factory=list)
    sinks: list[str] = Field(default_factory=lambda: ["parquet"])


class RetentionConfig(Strict):
    """Per-table age after which whole hour partitions are deleted (`tracelake retention`).

    Spans hold every prompt and completion: big, and what privacy rules limit. Summaries and
    feedback are small and keep trends answerable for a year. `null` keeps a table forever."""

    spans: Seconds | None = 30 * 86400.0
    traces: Seconds | None = 400 * 86400.0
    feedback: Seconds | None = 400 * 86400.0


class CompactionConfig(Strict):
    """Compaction of the lake's small files: in the background of `tracelake run` / `worker`, and
    `tracelake compact`. See pipeline/maintenance/compact.py."""

    # the running server merges small files (every hour, tiered) and closed hours (fully), one
    # process per lake at a time; false leaves it to `tracelake compact` (cron)
    background: bool = True
    interval: Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] = 30.0
    # an hour that ended this long ago gets its final full merge (`tracelake compact`: which hours)
    older_than: Seconds = 600.0
    # replaced files stay readable this long (queries that listed them keep working), then go
    grace: Seconds = 300.0
    target_file_bytes: Bytes = 128 * 2**20
    row_group_rows: int = Field(default=64 * 1024, gt=0)
    memory_limit: str | None = None  # DuckDB's setting, e.g. "2GB"
    threads: int | None = Field(default=None, gt=0)  # DuckDB threads; the background compactor uses 1 unless set


_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(endpoint: str) -> bool:
    """True when `host:port` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    host = split_endpoint(endpoint)[0]
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


class UiConfig(Strict):
    """`tracelake ui`, and the same UI inside `tracelake run` when `enabled`."""

    enabled: bool = False  # serve the UI inside `tracelake run`; `tracelake ui` ignores this
    endpoint: Endpoint = "127.0.0.1:8890"
    # required when `endpoint` is not a loopback address: browsers open /?token=…, API clients send
    # `Authorization: Bearer …`
    auth_token: str | None = Field(default=None, min_length=16)
    # where `POST /v1/feedback` is when the UI runs alone (default: receivers.otlp.http.endpoint);
    # inside `tracelake run` feedback goes straight to the receiver's intake
    feedback_url: str | None = None
    sql_max_rows: int = Field(default=5000, gt=0)
    sql_timeout: Seconds = 30.0

    @model_validator(mode="after")
    def _token_off_loopback(self) -> UiConfig:
        if not is_loopback(self.endpoint) and not self.auth_token:
            raise ValueError(f"endpoint {self.endpoint} is not a loopback address: set ui.auth_token")
        return self


class RawConfig(Strict):
    """The document as written; processor and sink blocks are validated against their own types."""

    receivers: ReceiversConfig = Field(default_factory=ReceiversConfig)
    bus: Annotated[
        EmbeddedBusConfig | KafkaBusConfig, Field(discriminator="type"), BeforeValidator(_default_bus_type)
    ] = Field(default_factory=EmbeddedBusConfig)
    processors: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    sinks: dict[str, dict[str, Any] | None] = Field(default={"parquet": {}})  # copied for each instance
    pipelines: dict[str, PipelineConfig] = Field(default_factory=lambda: {"traces": PipelineConfig()})
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    memory_limiter: MemoryLimiterConfig | None = None
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    compaction: CompactionConfig = Field(default_factory=CompactionConfig)
    ui: UiConfig = Field(default_factory=UiConfig)
