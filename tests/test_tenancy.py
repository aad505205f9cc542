"""The parts of securing receivers below a running server: tenant stamping, rate-limit buckets, tokens and
their files, certificate reloads, the configuration's errors, and feedback scoped to its trace's tenant."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core import feedback
from core.conventions import TENANT_ATTRIBUTE, normalize
from pipeline.config import ConfigError, parse
from pipeline.config.model import AuthConfig, RateLimitsConfig, TlsConfig
from pipeline.feedback_scope import FeedbackScope
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.otlp.wire import decode_bodies
from pipeline.query import connect
from pipeline.receiver.auth import Authenticator, Caller, Principal, TenantDenied, Unauthenticated, token_digest
from pipeline.receiver.rate_limit import Charge, RateLimited, TenantRateLimiter
from pipeline.receiver.tenants import TenantStamp
from pipeline.receiver.tls import ServerCertificates, TlsError, TlsStats, load_material
from pipeline.trace_summary import TraceSummarizer
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink
from tests.conftest import make_request, run_cli
from tests.tls_certs import Authority

REPO = Path(__file__).resolve().parent.parent
ACME = Caller(Principal("acme-app", "acme"))
GATEWAY = Caller(Principal("gateway", "shared", frozenset({"acme", "globex"})))


def _request(tenants: list[str | None], resource: dict[str, object] | None = None) -> ExportTraceServiceRequest:
    spans = [
        {"trace_id": f"{i + 1:032x}", "span_id": f"{i + 1:016x}", "attrs": {"tenant.id": t} if t else {}}
        for i, t in enumerate(tenants)
    ]
    return make_request(spans, resource=resource)


def _tenant_ids(request: ExportTraceServiceRequest, raw: bytes | None) -> list[str | None]:
    """tenant_id as the worker reads the stamped request (the columnar decode of `raw` when there is one)."""
    if raw is not None:
        table = decode_bodies([raw], ["t"])  # raises NotCanonical if stamping broke the columnar path
        assert table.equals(decode([SourcedRequest(request, "t")]))
    else:
        table = decode([SourcedRequest(request, "t")])
    return normalize(table).sort_by("span_id").column("tenant_id").to_pylist()


# -- stamping ----------------------------------------------------------------------------------------
def test_a_fixed_token_overrides_every_claim_and_keeps_the_raw_bytes_in_step() -> None:
    req = _request(["globex", None], resource={"tenant.id": "initech", TENANT_ATTRIBUTE: "evil"})
    stamped = TenantStamp(("tenant.id",)).apply(req, req.SerializeToString(), ACME)
    assert stamped.raw is not None and stamped.spans == {"acme": 2}
    assert _tenant_ids(stamped.request, stamped.raw) == ["acme", "acme"]
    assert _tenant_ids(stamped.request, None) == ["acme", "acme"]
    with pytest.raises(TenantDenied, match="may not write tenant 'globex'"):
        TenantStamp(("tenant.id",)).apply(_request([None]), None, Caller(ACME.principal, "globex"))


def test_without_authentication_nobody_can_claim_the_stamped_attribute() -> None:
    req = _request([None], resource={TENANT_ATTRIBUTE: "acme", "tenant.id": "globex"})
    stamped = TenantStamp(("tenant.id",)).apply(req, req.SerializeToString(), None)
    assert _tenant_ids(stamped.request, stamped.raw) == ["globex"]  # the client's claim, as before: no token vouches
    untouched = _request([None]).SerializeToString()
    assert TenantStamp(("tenant.id",)).apply(ExportTraceServiceRequest.FromString(untouched), untouched, None).raw is (
        untouched
    )


def test_a_token_that_may_choose_splits_a_resource_by_the_tenants_its_spans_claim() -> None:
    stamped = TenantStamp(("tenant.id",)).apply(_request(["acme", "globex", None, "acme"]), None, GATEWAY)
    assert stamped.spans == {"acme": 2, "globex": 1, "shared": 1}
    assert len(stamped.request.resource_spans) == 3
    assert _tenant_ids(stamped.request, stamped.raw) == ["acme", "globex", "shared", "acme"]
    with pytest.raises(TenantDenied, match="initech"):
        TenantStamp(("tenant.id",)).apply(_request(["acme", "initech"]), None, GATEWAY)
    header = TenantStamp(("tenant.id",)).apply(_request(["acme", None]), None, Caller(GATEWAY.principal, "globex"))
    assert _tenant_ids(header.request, header.raw) == ["globex", "globex"]


# -- rate limits ------------------------------------------------------------------------------------
def test_token_buckets_per_tenant() -> None:
    now = [0.0]
    limits = RateLimitsConfig.model_validate(
        {"default": {"spans_per_second": 100, "burst": "1s"}, "tenants": {"small": {"bytes_per_second": 1000}}}
    )
    limiter = TenantRateLimiter(limits, clock=lambda: now[0])
    limiter.admit({"a": Charge(60, 10**9)})  # bytes are not limited for "a"
    limiter.admit({"a": Charge(40, 0)})
    with pytest.raises(RateLimited) as e:
        limiter.admit({"a": Charge(50, 0)})
    assert e.value.retry_after == pytest.approx(0.5) and e.value.exhausted
    limiter.admit({"b": Charge(100, 0)})  # another tenant has its own bucket
    now[0] = 1.0
    limiter.admit({"a": Charge(500, 0)})  # larger than a burst: passes a full bucket, into debt
    with pytest.raises(RateLimited) as e:
        limiter.admit({"a": Charge(1, 0)})
    assert e.value.retry_after == pytest.approx(4.01)
    limiter.refund({"a": Charge(500, 0)})  # a request refused after all (bus full) gives it back
    limiter.admit({"a": Charge(99, 0)})
    limiter.admit({"small": Charge(1, 1500)})  # a burst is 2 s (the default) of 1000 bytes/s
    with pytest.raises(RateLimited, match="'small' is over its bytes/s"):
        limiter.admit({"small": Charge(1, 1500), "a": Charge(1, 0)})
    limiter.admit({"a": Charge(1, 0)})  # the refused request took nothing from "a"
    with pytest.raises(RateLimited):
        limiter.admit({"a": Charge(1, 0)})


# -- tokens ------------------------------------------------------------------------------------------
def test_tokens_from_config_file_and_environment_and_revocation_by_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = tmp_path / "tokens.yaml"
    entry = {"name": "a", "sha256": token_digest("tok-a").hex(), "tenant": "acme"}
    tokens.write_text(yaml.safe_dump({"tokens": [entry]}))
    monkeypatch.setenv("B_TOKEN", "tok-b")
    config = AuthConfig.model_validate(
        {
            "tokens_file": str(tokens),
            "reload_interval": "1ms",
            "tokens": [{"name": "b", "token_env": "B_TOKEN", "tenant": "globex"}],
        }
    )
    auth = Authenticator(config)
    assert auth.authenticate("Bearer tok-a", None, "http", "p").principal.tenant == "acme"
    assert auth.authenticate("bearer  tok-b ", "x", "http", "p") == Caller(Principal("b", "globex"), "x")
    for header, reason in (
        (None, "missing_token"),
        ("Basic dG9rLWE=", "malformed_header"),
        ("Bearer tok-c", "unknown_token"),
    ):
        with pytest.raises(Unauthenticated) as e:
            auth.authenticate(header, None, "grpc", "p")
        assert e.value.reason == reason
    tokens.write_text(yaml.safe_dump({"tokens": []}))  # revoked
    os.utime(tokens, ns=(1, 1))
    time.sleep(0.01)  # past reload_interval
    with pytest.raises(Unauthenticated):
        auth.authenticate("Bearer tok-a", None, "http", "p")
    tokens.write_text("tokens: [{name: x}]")  # a broken file keeps the tokens loaded before
    os.utime(tokens, ns=(2, 2))
    time.sleep(0.01)
    assert auth.authenticate("Bearer tok-b", None, "http", "p").principal.name == "b"
    assert auth.stats.failures[("grpc", "unknown_token")] == 1


def test_token_new_prints_a_token_and_an_entry_with_only_its_hash(tmp_path: Path) -> None:
    out = run_cli("token", "new", "--tenant", "acme", "--name", "checkout", "--may-write", "globex")
    assert out.returncode == 0, out.stderr
    token = out.stdout.split("keep it nowhere else): ", 1)[1].split()[0]
    entries = yaml.safe_load(out.stdout.split("tokens file:\n", 1)[1])
    assert entries == [
        {"name": "checkout", "sha256": token_digest(token).hex(), "tenant": "acme", "tenants": ["globex"]}
    ]
    assert token.startswith("tlk_") and len(token) > 40 and token not in out.stdout.split("tokens file:")[1]


# -- certificates ------------------------------------------------------------------------------------
def test_a_half_written_rotation_keeps_the_old_certificate(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    first = ca.issue("server")
    config = TlsConfig(cert_file=str(first.cert), key_file=str(first.key), reload_interval=0.001)
    certs = ServerCertificates(config, "receivers.otlp.http.tls", "http", TlsStats())
    old = certs.current
    other = ca.issue("other")
    os.replace(other.key, first.key)  # the new key is there, its certificate not yet
    time.sleep(0.01)  # past reload_interval
    assert certs.refresh() is None and certs.current is old
    os.replace(other.cert, first.cert)
    time.sleep(0.01)
    new = certs.refresh()
    assert new is not None and certs.current is new and new.fingerprint != old.fingerprint
    assert certs.stats.reloads["http"] == 1
    with pytest.raises(TlsError, match=r"receivers.otlp.grpc.tls.key_file: cannot read /nope"):
        load_material(TlsConfig(cert_file=str(first.cert), key_file="/nope"), "receivers.otlp.grpc.tls")


# -- configuration --------------------------------------------------------------------------------------
def _issues(doc: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse(doc, "t.yaml", env={})
    return [str(i) for i in e.value.issues]


def test_configuration_errors_name_the_key() -> None:
    tls = {"cert_file": "c", "key_file": "k"}
    issues = _issues(
        {
            "receivers": {
                "otlp": {
                    "grpc": {"endpoint": "0.0.0.0:4317", "tls": {**tls, "min_version": "1.3"}},
                    "http": {"tls": {**tls, "min_version": "1.1", "verify": True}},
                    "auth": {"tokens": [{"name": "a", "tenant": "acme"}, {"name": "b", "sha256": "AB", "tenant": "t"}]},
                }
            }
        }
    )
    assert issues == [
        "receivers.otlp.grpc.tls: min_version: grpcio has no setting for the TLS version of a server; gRPC "
        'negotiates TLS 1.2 or 1.3, so only "1.2" can be promised here',
        "receivers.otlp.http.tls.min_version: Input should be '1.2' or '1.3' (got '1.1')",
        "receivers.otlp.http.tls.verify: unknown key",
        "receivers.otlp.auth.tokens.0: give exactly one of sha256 (the token's SHA-256) or token_env (a variable "
        "holding it)",
        "receivers.otlp.auth.tokens.1.sha256: String should match pattern '^[0-9a-f]{64}$' (got 'AB')",
    ]
    issues = _issues({"receivers": {"otlp": {"rate_limits": {"default": {"spans_per_second": 10}}}}})
    assert issues == ["receivers.otlp: rate_limits: limits are per tenant and tenants come from tokens: add auth"]


def test_validate_reports_unusable_tls_files_and_tokens(tmp_path: Path) -> None:
    (tmp_path / "tokens.yaml").write_text("tokens: [{name: a, sha256: nothex, tenant: acme}]")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"receivers:\n  otlp:\n    grpc: {{endpoint: 127.0.0.1:4317, tls: {{cert_file: {tmp_path}/missing.crt,"
        f" key_file: {tmp_path}/k}}}}\n    auth: {{tokens_file: {tmp_path}/tokens.yaml}}\n"
    )
    out = run_cli("validate", str(cfg))
    assert out.returncode == 2
    assert f"receivers.otlp.grpc.tls.cert_file: cannot read {tmp_path}/missing.crt" in out.stderr
    assert f"{tmp_path}/tokens.yaml: tokens.0.sha256:" in out.stderr


# -- feedback scoped to its trace's tenant ------------------------------------------------------------------
TRACE = "ab" * 16


def _normalized(request: ExportTraceServiceRequest, tenant: str | None, source: str) -> pa.Table:
    stamped = TenantStamp(("tenant.id",)).apply(request, None, Caller(Principal("t", tenant)) if tenant else None)
    return normalize(decode([SourcedRequest(stamped.request, source)]))


def _rating(trace: str, tenant: str | None, value: float, name: str) -> pa.Table:
    return _normalized(
        feedback.to_request([feedback.FeedbackEvent(trace, name, float(value), time_ns=time.time_ns())]), tenant, "f@1"
    )


def test_the_views_count_feedback_only_toward_a_trace_of_its_tenant(tmp_path: Path) -> None:
    spans = _normalized(make_request([{"trace_id": TRACE, "span_id": "01" * 8}]), "acme", "s@1")
    ratings = [
        _rating(TRACE, "acme", 1, "own"),
        _rating(TRACE, "globex", -5, "foreign"),
        _rating(TRACE, None, 0.5, "anon"),
    ]
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    summarizer = TraceSummarizer(trace_idle=0, clock=lambda: 0.0)
    for table in [spans, *ratings]:
        summarizer.observe(table)
        sink.write("spans" if table is spans else "feedback", table if table is spans else feedback.extract(table))
    for part in summarizer.due(force=True):
        sink.write("traces", part.rows)
    late = _rating(TRACE, "globex", -9, "late")  # a later part holding only another tenant's feedback
    summarizer.observe(late)
    sink.write("feedback", feedback.extract(late))
    for part in summarizer.due(force=True):
        sink.write("traces", part.rows)
    sink.flush_all()

    con = connect(tmp_path)
    assert sorted(con.execute("SELECT name, tenant_id FROM feedback").fetchall()) == [("anon", None), ("own", "acme")]
    assert con.execute("SELECT tenant_id, feedback_min, parts FROM traces").fetchall() == [("acme", 0.5, 2)]
    assert connect(tmp_path, tenant="globex").execute(
        "SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM traces), (SELECT count(*) FROM feedback)"
    ).fetchone() == (0, 0, 0)
    acme = connect(tmp_path, tenant="acme")
    assert acme.execute("SELECT count(*) FROM spans").fetchone() == (1,)
    assert acme.execute("SELECT count(*) FROM feedback").fetchone() == (2,)


def test_the_worker_drops_foreign_feedback_and_promotes_only_for_the_traces_tenant() -> None:
    scope = FeedbackScope()
    spans = _normalized(make_request([{"trace_id": TRACE, "span_id": "01" * 8}]), "acme", "s@1")
    assert scope.apply(spans).num_rows == 1
    batch = pa.concat_tables([_rating(TRACE, "globex", 0, "foreign"), _rating(TRACE, "acme", 0, "own")])
    assert feedback.extract(scope.apply(batch)).column("name").to_pylist() == ["own"]
    assert scope.refused == 1

    forgetful = FeedbackScope(remembered=0)  # the trace is older than what the worker remembers
    forgetful.apply(spans)
    assert forgetful.apply(_rating(TRACE, "globex", 0, "foreign")).num_rows == 1  # not known here: passes on
    assert forgetful.promotable(spans).num_rows == 0  # but promotes none of acme's held-back spans
    forgetful.apply(_rating(TRACE, "acme", 0, "own"))
    assert forgetful.promotable(spans).num_rows == 1
    assert forgetful.promotable(spans).num_rows == 1  # ratings are used once; unrated traces stay eligible
