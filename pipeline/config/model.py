"""Typed configuration: the YAML of docs/design.md contract 3, validated once at the edge.

Unknown keys are errors everywhere (`extra="forbid"`). Durations and sizes are core/config.py's types.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

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


class TlsConfig(Strict):
    """The Collector's `tls` block of a server (configtls.ServerConfig), the keys tracelake implements.

    The files are read at start and again whenever they change (checked at most every
    `reload_interval`), so certificates rotate without a restart."""

    cert_file: str = Field(min_length=1)
    key_file: str = Field(min_length=1)
    # mTLS: clients must present a certificate signed by a CA in this file
    client_ca_file: str | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"
    # how often the files are checked for a change; 0 reads them once
    reload_interval: Seconds = 60.0


class GrpcReceiverConfig(Strict):
    endpoint: Endpoint = "127.0.0.1:4317"
    tls: TlsConfig | None = None

    @field_validator("tls")
    @classmethod
    def _grpc_tls_versions(cls, tls: TlsConfig | None) -> TlsConfig | None:
        if tls is not None and tls.min_version != "1.2":
            raise ValueError(
                "min_version: grpcio has no setting for the TLS version of a server; gRPC negotiates "
                'TLS 1.2 or 1.3, so only "1.2" can be promised here'
            )
        return tls


class HttpReceiverConfig(Strict):
    endpoint: Endpoint = "127.0.0.1:4318"
    tls: TlsConfig | None = None


TenantName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$")]
_SHA256_HEX = r"^[0-9a-f]{64}$"


class TokenConfig(Strict):
    """One bearer token: its SHA-256 (or the environment variable holding the token itself) and its tenant."""

    # shown in logs and metrics in place of the token
    name: str = Field(min_length=1, max_length=128)
    # lowercase hex SHA-256 of the token (`tracelake token new` prints it)
    sha256: str | None = Field(None, pattern=_SHA256_HEX)
    # or: the name of an environment variable holding the token itself (hashed at start, never kept)
    token_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # the tenant stamped on what this token sends (and the default when it may choose)
    tenant: TenantName
    # may the client name its tenant (tenant attributes, X-Scope-OrgID)? these tenants, or "*" for any
    tenants: list[TenantName] | Literal["*"] | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> TokenConfig:
        if (self.sha256 is None) == (self.token_env is None):
            raise ValueError("give exactly one of sha256 (the token's SHA-256) or token_env (a variable holding it)")
        return self


class AuthConfig(Strict):
    """Bearer tokens (`authorization: Bearer <token>`), each mapped to a tenant; stored as SHA-256 only."""

    tokens: list[TokenConfig] = Field(default_factory=list)
    # a YAML file `tokens: [...]` of the same entries, re-read when it changes (revocation without restart)
    tokens_file: str | None = None
    reload_interval: Seconds = 60.0

    @model_validator(mode="after")
    def _some_tokens(self) -> AuthConfig:
        if not self.tokens and self.tokens_file is None:
            raise ValueError("give tokens, tokens_file or both")
        return self


class RateLimitConfig(Strict):
    """Token buckets per tenant: refill at the rate, hold `burst` seconds of it."""

    spans_per_second: float | None = Field(None, gt=0)
    bytes_per_second: Bytes | None = None
    burst: Seconds = Field(2.0, gt=0)


class RateLimitsConfig(Strict):
    # every tenant gets its own buckets of this size...
    default: RateLimitConfig = Field(default_factory=RateLimitConfig)
    # ...unless it is listed here
    tenants: dict[TenantName, RateLimitConfig] = Field(default_factory=dict)


class OtlpReceiverConfig(Strict):
    grpc: GrpcReceiverConfig | None = None
    http: HttpReceiverConfig | None = None
    max_request_bytes: Bytes = 16 * 2**20
    # How long a refused client is told to wait (Retry-After / RetryInfo) when the bus is full.
    retry_after: Seconds = 1.0
    auth: AuthConfig | None = None
    rate_limits: RateLimitsConfig | None = None

    @model_validator(mode="after")
    def _limits_need_tenants(self) -> OtlpReceiverConfig:
        if self.rate_limits is not None and self.auth is None:
            raise ValueError("rate_limits: limits are per tenant and tenants come from tokens: add auth")
        return self


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
    tls: TlsConfig | None = None
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


def is_loopback(endpoint: str) -> bool:
    """True when `host:port` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    host = split_endpoint(endpoint)[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another host name: assume it is reachable from elsewhere


class UiConfig(Strict):
    """`tracelake ui`, and the same UI inside `tracelake run` when `enabled`."""

    enabled: bool = False  # serve the UI inside `tracelake run`; `tracelake ui` ignores this
    endpoint: Endpoint = "127.0.0.1:8890"
    # required when `endpoint` is not a loopback address: browsers open /?token=…, API clients send
    # `Authorization: Bearer …`
    auth_token: str | None = Field(default=None, min_length=16)
    # where `POST /v1/feedback` is when the UI runs alone (default: receivers.otlp.http.endpoint, over https
    # when it has `tls`); inside `tracelake run` feedback goes straight to the receiver's intake
    feedback_url: str | None = None
    # the bearer token the UI running alone sends there when the receiver has `auth` (e.g.
    # "${env:TRACELAKE_UI_FEEDBACK_TOKEN}"); it names each trace's tenant in X-Scope-OrgID, so give it `tenants: "*"`
    feedback_token: str | None = Field(default=None, min_length=1)
    # the CA that signed the receiver's certificate, when it is not one the system trusts
    feedback_ca_file: str | None = None
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
