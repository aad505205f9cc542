"""Typed configuration: the YAML of docs/design.md contract 3, validated once at the edge.

Unknown keys are errors everywhere (`extra="forbid"`). Durations accept `500ms`, `5s`, `10m`,
`24h`, `7d` or a number of seconds; sizes accept `16MiB`, `64MB`, `1GiB` or a number of bytes.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
}


def parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration like 5s, 500ms, 10m, 24h")
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"expected a duration like 5s, 500ms, 10m, 24h, got {value!r}")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size like 16MiB or a number of bytes")
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"expected a size like 16MiB, 64MB or a number of bytes, got {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def _check_endpoint(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port with a port 0-65535, got {value!r}")
    return value


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
Bytes = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]
Endpoint = Annotated[str, AfterValidator(_check_endpoint)]


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    librdkafka: dict[str, LibrdkafkaValue] = {}
    producer: dict[str, LibrdkafkaValue] = {}
    consumer: dict[str, LibrdkafkaValue] = {}


def _default_bus_type(value: Any) -> Any:
    """`bus: {capacity_spans: 1000}` means the embedded bus, as it did before Kafka existed."""
    if isinstance(value, dict) and "type" not in value:
        return {"type": "embedded", **value}
    return value


class CorrelationKeysConfig(Strict):
    session: list[str] = ["session.id", "gen_ai.conversation.id"]
    user: list[str] = ["user.id", "enduser.id"]
    tenant: list[str] = ["tenant.id"]
    prompt_version: list[str] = ["app.prompt_version", "prompt.version"]


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


class ParquetSinkConfig(Strict):
    path: str = "./lake"
    # A partition's buffer is written as one file when it reaches any of these. Rows are queryable
    # once written: roll_seconds bounds how long a row waits under steady load, flush_idle writes a
    # buffer that got nothing new for that long (a burst is queryable right after it ends).
    roll_rows: int = Field(500_000, gt=0)
    roll_bytes: Bytes = 64 * 2**20
    roll_seconds: Seconds = 2.0
    flush_idle: Seconds = 1.0
    compression_level: int = Field(3, ge=1, le=22)


class PipelineConfig(Strict):
    ingest: list[str] = []
    process: list[str] = []
    sinks: list[str] = ["parquet"]


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


class RawConfig(Strict):
    """The document as written; processor and sink blocks are validated against their own types."""

    receivers: ReceiversConfig = Field(default_factory=ReceiversConfig)
    bus: Annotated[
        EmbeddedBusConfig | KafkaBusConfig, Field(discriminator="type"), BeforeValidator(_default_bus_type)
    ] = Field(default_factory=EmbeddedBusConfig)
    processors: dict[str, dict[str, Any] | None] = {}
    sinks: dict[str, dict[str, Any] | None] = Field(default_factory=lambda: {"parquet": {}})
    pipelines: dict[str, PipelineConfig] = Field(default_factory=lambda: {"traces": PipelineConfig()})
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    memory_limiter: MemoryLimiterConfig | None = None
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    compaction: CompactionConfig = Field(default_factory=CompactionConfig)
