"""Receivers fit for a network: TLS (rotation included), mTLS, bearer tokens, tenants, per-tenant rate limits.

Real `tracelake run` processes on TLS ports with certificates made here (tests/tls_certs.py), fed by the
OpenTelemetry SDK exporters configured with the CA and the `authorization` header, read back with DuckDB.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
import yaml
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from pipeline.config import load
from pipeline.query import connect
from pipeline.receiver.auth import new_token, token_digest
from pipeline.ui import ui_server
from tests.conftest import RunningTracelake, make_request, run_cli
from tests.test_e2e import _Recording
from tests.test_telemetry import _metric
from tests.test_ui_server import _request
from tests.tls_certs import Authority, fingerprint

REPO = Path(__file__).resolve().parent.parent
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TOKENS = {name: new_token() for name in ("acme", "globex", "gateway", "flood")}


def _sha(token: str) -> str:
    return token_digest(token).hex()


@pytest.fixture(scope="module", autouse=True)
def _sdk_trusts_its_certificate_file() -> Iterator[None]:
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE win over Session.verify, where the OTel HTTP exporter
    puts its certificate_file: with either set (as on this machine) the exporter would not trust our CA
    (README "Securing receivers" says so too)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("REQUESTS_CA_BUNDLE", raising=False)
        mp.delenv("CURL_CA_BUNDLE", raising=False)
        yield


# -- the running servers --------------------------------------------------------------------------
class Secured:
    """A running tracelake and the files it was started with."""

    def __init__(self, tl: RunningTracelake, ca: Authority, certs: Path) -> None:
        self.tl = tl
        self.ca = ca
        self.certs = certs

    def lake(self, sql: str, params: list[Any] | None = None, tenant: str | None = None) -> list[tuple[Any, ...]]:
        if not self.tl.lake.is_dir():
            return []
        return connect(self.tl.lake, tenant=tenant).execute(sql, params or []).fetchall()

    def wait_for(self, sql: str, params: list[Any], done: Callable[[list[tuple[Any, ...]]], bool]) -> list[Any]:
        deadline = time.monotonic() + 30
        rows: list[tuple[Any, ...]] = []
        while time.monotonic() < deadline:
            rows = self.lake(sql, params)
            if done(rows):
                return rows
            time.sleep(0.3)
        raise AssertionError(f"lake never answered as wanted: {sql} {params} -> {rows}\n{self.tl.log[-3000:]}")

    def metrics(self) -> str:
        return requests.get(f"https://{self.tl.telemetry}/metrics", verify=str(self.ca.path), timeout=10).text

    @property
    def ui(self) -> str:
        """The UI inside this `tracelake run` (`ui.enabled`)."""
        return next(m.group(1) for line in self.tl.log_lines if (m := re.search(r"ui listening on (\S+)/$", line)))


def _start(tmp: Path, config: str, env: dict[str, str] | None = None, *args: str) -> RunningTracelake:
    return RunningTracelake(tmp, textwrap.dedent(config), env=env, args=args)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    tmp = tmp_path_factory.mktemp("secured")
    ca = Authority(tmp)
    ca.issue("server")
    ca.issue("telemetry")
    (tmp / "tokens.yaml").write_text(
        yaml.safe_dump(
            {
                "tokens": [
                    {"name": "acme-app", "sha256": _sha(TOKENS["acme"]), "tenant": "acme"},
                    {
                        "name": "otel-gateway",
                        "sha256": _sha(TOKENS["gateway"]),
                        "tenant": "gateway",
                        "tenants": ["acme", "globex"],
                    },
                    {"name": "flooder", "sha256": _sha(TOKENS["flood"]), "tenant": "flood"},
                ]
            }
        )
    )
    config = f"""\
        receivers:
          otlp:
            grpc:
              endpoint: 127.0.0.1:0
              tls: {{cert_file: {tmp}/server.crt, key_file: {tmp}/server.key, reload_interval: 100ms}}
            http:
              endpoint: 127.0.0.1:0
              tls: {{cert_file: {tmp}/server.crt, key_file: {tmp}/server.key, min_version: "1.3",
                     reload_interval: 100ms}}
            auth:
              tokens_file: {tmp}/tokens.yaml
              tokens: [{{name: globex-app, token_env: GLOBEX_TOKEN, tenant: globex}}]
            rate_limits:
              default: {{spans_per_second: 100000, bytes_per_second: 200MiB}}
              tenants:
                flood: {{spans_per_second: 20, burst: 1s}}
        processors:
          tail_sampling:
            decision_wait: 500ms
            policies:
              - {{name: thumbs_down, type: feedback, feedback: {{max_value: 0}}}}
              - {{name: unmarked, type: string_attribute,
                 string_attribute: {{key: sample.drop, values: ["yes"], invert_match: true}}}}
        sinks:
          parquet: {{path: "{{lake}}", roll_seconds: 300ms}}
        worker: {{processes: 2, trace_idle: 500ms, max_batch_delay: 50ms}}
        telemetry:
          endpoint: 127.0.0.1:0
          tls: {{cert_file: {tmp}/telemetry.crt, key_file: {tmp}/telemetry.key}}
        ui: {{enabled: true, endpoint: 127.0.0.1:0}}
        pipelines:
          traces: {{process: [tail_sampling], sinks: [parquet]}}
        """
    tl = _start(tmp, config, env={"GLOBEX_TOKEN": TOKENS["globex"]})
    try:
        yield Secured(tl, ca, tmp)
    finally:
        tl.stop()


# -- clients -------------------------------------------------------------------------------------
def _grpc_exporter(s: Secured, token: str | None, timeout: float = 3, **kw: Any) -> GrpcExporter:
    creds = grpc.ssl_channel_credentials(s.ca.path.read_bytes(), **kw)
    headers = {"authorization": f"Bearer {token}"} if token else None
    return GrpcExporter(endpoint=f"https://{s.tl.grpc}", credentials=creds, headers=headers, timeout=timeout)


def _http_exporter(s: Secured, token: str | None, timeout: float = 3, **kw: Any) -> HttpExporter:
    headers = {"authorization": f"Bearer {token}"} if token else None
    return HttpExporter(
        endpoint=f"https://{s.tl.http}/v1/traces",
        certificate_file=str(s.ca.path),
        headers=headers,
        timeout=timeout,
        **kw,
    )


def _sdk_send(
    exporter: SpanExporter, n: int = 2, resource: dict[str, str] | None = None, attrs: dict[str, str] | None = None
) -> tuple[list[str], list[SpanExportResult]]:
    """n one-span traces through the SDK; their trace ids and the exporter's result for each."""
    rec = _Recording(exporter)
    tp = TracerProvider(resource=Resource.create({"service.name": "app", **(resource or {})}))
    tp.add_span_processor(SimpleSpanProcessor(rec))
    tracer = tp.get_tracer("tests")
    ids = []
    for _ in range(n):
        with tracer.start_as_current_span("POST /chat", attributes=attrs or {}) as span:
            ids.append(format(span.get_span_context().trace_id, "032x"))
    tp.shutdown()
    return ids, rec.results


def _spans(n: int, attrs: list[dict[str, object]] | None = None) -> tuple[list[str], bytes]:
    ids = [os.urandom(16).hex() for _ in range(n)]
    spans = [
        {"trace_id": t, "span_id": os.urandom(8).hex(), "attrs": (attrs[i] if attrs else {})} for i, t in enumerate(ids)
    ]
    return ids, make_request(spans).SerializeToString()


def _post(s: Secured, body: bytes, token: str | None = None, path: str = "/v1/traces", **headers: str) -> Any:
    h = {"Content-Type": "application/x-protobuf", **headers}
    if path == "/v1/feedback":
        h["Content-Type"] = "application/json"
    if token:
        h["Authorization"] = f"Bearer {token}"
    return requests.post(f"https://{s.tl.http}{path}", data=body, headers=h, verify=str(s.ca.path), timeout=10)


def _grpc_call(s: Secured, body: bytes, metadata: list[tuple[str, str]]) -> grpc.RpcError | None:
    creds = grpc.ssl_channel_credentials(s.ca.path.read_bytes())
    with grpc.secure_channel(s.tl.grpc, creds) as ch:
        try:
            ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)(
                body, metadata=metadata, timeout=10
            )
        except grpc.RpcError as e:
            return e
    return None


def _tenants_of(s: Secured, ids: list[str]) -> dict[str, str]:
    rows = s.wait_for(
        "SELECT trace_id, tenant_id FROM spans WHERE trace_id IN (SELECT unnest(?))",
        [ids],
        lambda r: len(r) == len(ids),
    )
    return dict(rows)


def _absent(s: Secured, ids: list[str], landed_after: list[str]) -> None:
    """None of `ids` is in the lake, checked once spans sent after them (`landed_after`) are there."""
    _tenants_of(s, landed_after)
    for table in ("spans", "traces"):
        assert s.lake(f"SELECT trace_id FROM {table} WHERE trace_id IN (SELECT unnest(?))", [ids]) == []


# -- tokens and tenants ----------------------------------------------------------------------------
def test_the_tokens_tenant_is_stamped_on_every_span_over_grpc_and_http(secured: Secured) -> None:
    claims = {"tenant.id": "globex"}  # what the client claims is overridden: acme's token writes acme
    g_ids, g_results = _sdk_send(_grpc_exporter(secured, TOKENS["acme"]), resource=claims, attrs=claims)
    h_ids, h_results = _sdk_send(_http_exporter(secured, TOKENS["globex"]))
    assert set(g_results) == set(h_results) == {SpanExportResult.SUCCESS}
    assert _tenants_of(secured, g_ids) == dict.fromkeys(g_ids, "acme")
    assert _tenants_of(secured, h_ids) == dict.fromkeys(h_ids, "globex")
    (attrs,) = secured.lake("SELECT resource_attributes FROM spans WHERE trace_id = ?", [g_ids[0]])[0]
    assert attrs["tracelake.tenant"] == "acme" and attrs["tenant.id"] == "globex"  # the claim stays visible


def test_missing_wrong_and_forbidden_credentials_are_refused_and_nothing_lands(secured: Secured) -> None:
    refused: list[str] = []
    for exporter in (
        _grpc_exporter(secured, None),
        _grpc_exporter(secured, "tlk_not-a-token"),
        _http_exporter(secured, None),
        _http_exporter(secured, TOKENS["acme"] + "x"),
    ):
        ids, results = _sdk_send(exporter, n=1)
        assert results == [SpanExportResult.FAILURE]
        refused += ids

    ids, body = _spans(2)
    refused += ids
    assert _grpc_call(secured, body, []).code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[union-attr]
    err = _grpc_call(secured, body, [("authorization", "Bearer nope")])
    assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details() == "invalid token"
    err = _grpc_call(secured, body, [("authorization", f"Bearer {TOKENS['acme']}"), ("x-scope-orgid", "globex")])
    assert err is not None and err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may not write tenant 'globex'" in err.details()
    r = _post(secured, body)
    assert (r.status_code, r.headers["WWW-Authenticate"]) == (401, 'Bearer realm="tracelake"')
    assert _post(secured, body, "wrong").status_code == 401
    assert _post(secured, body, TOKENS["acme"], **{"X-Scope-OrgID": "globex"}).status_code == 403
    assert _post(secured, body, Authorization="Basic YWNtZTpzZWNyZXQ=").status_code == 401
    # a gateway token may name acme and globex, not initech: one foreign span refuses the whole request
    ids, body = _spans(2, [{"tenant.id": "acme"}, {"tenant.id": "initech"}])
    refused += ids
    r = _post(secured, body, TOKENS["gateway"])
    assert r.status_code == 403 and "initech" in r.text

    good, results = _sdk_send(_http_exporter(secured, TOKENS["acme"]), n=1)
    assert results == [SpanExportResult.SUCCESS]
    _absent(secured, refused, landed_after=good)


def test_a_token_that_may_choose_writes_the_tenants_it_names(secured: Secured) -> None:
    per_span, body = _spans(3, [{"tenant.id": "acme"}, {"tenant.id": "globex"}, {}])
    assert _post(secured, body, TOKENS["gateway"]).status_code == 200
    header, body = _spans(2, [{"tenant.id": "acme"}, {}])
    assert _post(secured, body, TOKENS["gateway"], **{"X-Scope-OrgID": "globex"}).status_code == 200
    assert _tenants_of(secured, per_span) == dict(zip(per_span, ["acme", "globex", "gateway"], strict=True))
    assert _tenants_of(secured, header) == dict.fromkeys(header, "globex")


def test_failures_and_tenants_are_counted_without_token_material(secured: Secured) -> None:
    _, body = _spans(1)
    _post(secured, body, "tlk_leak-me-not")
    _post(secured, body)
    assert _post(secured, _spans(3)[1], TOKENS["acme"]).status_code == 200
    text = secured.metrics()
    assert _metric(text, "tracelake_receiver_auth_failures_total", transport="http", reason="unknown_token") >= 1
    assert _metric(text, "tracelake_receiver_auth_failures_total", transport="http", reason="missing_token") >= 1
    assert _metric(text, "tracelake_receiver_tenant_spans_total", tenant="acme", outcome="accepted") >= 3
    assert _metric(text, "tracelake_receiver_tenant_bytes_total", tenant="acme", outcome="accepted") > 0
    assert _metric(text, "tracelake_receiver_requests_total", transport="http", outcome="refused_unauthenticated") >= 2
    time.sleep(0.2)  # the log lines of the refusals
    everything = text + secured.tl.log
    for token in [*TOKENS.values(), "tlk_leak-me-not"]:
        assert token not in everything
        assert _sha(token) not in everything
    assert "refused credentials" in secured.tl.log  # the failures were logged, by reason and peer


# -- TLS -------------------------------------------------------------------------------------------
def test_plaintext_clients_against_the_tls_ports_get_a_clear_refusal(secured: Secured) -> None:
    ids, body = _spans(1)
    r = requests.post(
        f"http://{secured.tl.http}/v1/traces",
        data=body,
        headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {TOKENS['acme']}"},
        timeout=10,
    )
    assert r.status_code == 400 and "this port speaks TLS" in r.json()["message"]
    with grpc.insecure_channel(secured.tl.grpc) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)(
                body, metadata=[("authorization", f"Bearer {TOKENS['acme']}")], timeout=5
            )
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    sdk_ids, results = _sdk_send(GrpcExporter(endpoint=f"http://{secured.tl.grpc}", insecure=True, timeout=2), n=1)
    assert results == [SpanExportResult.FAILURE]
    text = secured.metrics()
    assert _metric(text, "tracelake_tls_handshake_failures_total", listener="http", reason="plaintext") >= 1
    good, _ = _sdk_send(_grpc_exporter(secured, TOKENS["acme"]), n=1)
    _absent(secured, ids + sdk_ids, landed_after=good)


def test_http_min_version_refuses_older_tls(secured: Secured) -> None:
    ctx = ssl.create_default_context(cafile=str(secured.ca.path))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    host, port = secured.tl.http.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="localhost")
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == "TLSv1.3"


def _served_fingerprint(address: str, ca: Path) -> str:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2", "http/1.1"])  # gRPC servers expect h2
    host, port = address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint(der)


def test_certificate_rotation_during_traffic_loses_nothing(secured: Secured) -> None:
    before = {a: _served_fingerprint(a, secured.ca.path) for a in (secured.tl.http, secured.tl.grpc)}
    stop = threading.Event()
    sent: list[str] = []
    failures: list[object] = []

    def traffic(make: Callable[[], SpanExporter]) -> None:
        while not stop.is_set():  # a new exporter, so a new connection and handshake, every round
            ids, results = _sdk_send(make(), n=3)
            sent.extend(ids)
            failures.extend(r for r in results if r != SpanExportResult.SUCCESS)

    threads = [
        threading.Thread(target=traffic, args=(lambda: _grpc_exporter(secured, TOKENS["acme"]),)),
        threading.Thread(target=traffic, args=(lambda: _http_exporter(secured, TOKENS["globex"]),)),
    ]
    for t in threads:
        t.start()
    time.sleep(1)
    rotated = secured.ca.issue("server")  # key first, then certificate: briefly a pair that does not match
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    after = {a: _served_fingerprint(a, secured.ca.path) for a in (secured.tl.http, secured.tl.grpc)}
    new = _served_fingerprint_of_file(rotated.cert)
    assert all(before[a] != new for a in before) and set(after.values()) == {new}, (before, after, new)
    assert failures == []
    assert len(sent) > 10
    _tenants_of(secured, sent)  # every span sent during the rotation is in the lake
    assert "reloaded" in secured.tl.log


def _served_fingerprint_of_file(cert: Path) -> str:
    pem = cert.read_text()
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem))


# -- rate limits -----------------------------------------------------------------------------------
def test_a_flood_from_one_tenant_is_limited_while_another_tenant_exports(secured: Secured) -> None:
    stop = threading.Event()
    statuses: list[int] = []
    retry_after: set[str] = set()

    def flood() -> None:
        _, body = _spans(10)
        while not stop.is_set():
            r = _post(secured, body, TOKENS["flood"])
            statuses.append(r.status_code)
            if r.status_code == 429:
                retry_after.add(r.headers["Retry-After"])

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        ids, results = _sdk_send(_grpc_exporter(secured, TOKENS["globex"]), n=20)
        h_ids, h_results = _sdk_send(_http_exporter(secured, TOKENS["acme"]), n=20)
        time.sleep(0.5)
        _, body = _spans(10)
        err = _grpc_call(secured, body, [("authorization", f"Bearer {TOKENS['flood']}")])
    finally:
        stop.set()
        flooder.join()
    assert set(results) == set(h_results) == {SpanExportResult.SUCCESS}
    assert statuses.count(429) > statuses.count(200) > 0, statuses[:50]
    assert retry_after and all(int(v) >= 1 for v in retry_after)
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = RetryInfo.FromString(dict(err.trailing_metadata())["google.rpc.retryinfo-bin"])  # type: ignore[arg-type]
    assert info.retry_delay.seconds + info.retry_delay.nanos / 1e9 > 0
    assert _tenants_of(secured, ids + h_ids)
    text = secured.metrics()
    refused = _metric(text, "tracelake_receiver_tenant_spans_total", tenant="flood", outcome="refused_rate_limit")
    accepted = _metric(text, "tracelake_receiver_tenant_spans_total", tenant="flood", outcome="accepted")
    assert refused > accepted > 0
    assert accepted <= 20 * 10 + 20  # ~20 spans/s over the flood's seconds, plus one burst


# -- feedback ---------------------------------------------------------------------------------------
def test_feedback_counts_only_with_a_token_of_the_traces_tenant(secured: Secured) -> None:
    kept, _ = _sdk_send(_http_exporter(secured, TOKENS["acme"]), n=1)
    dropped, _ = _sdk_send(_http_exporter(secured, TOKENS["acme"]), n=1, attrs={"sample.drop": "yes"})
    secured.wait_for(
        "SELECT kept FROM traces WHERE trace_id IN (SELECT unnest(?))", [kept + dropped], lambda r: len(r) == 2
    )
    assert secured.lake("SELECT count(*) FROM spans WHERE trace_id = ?", dropped) == [(0,)]

    def rate(trace: str, token: str, name: str, value: float) -> None:
        body = f'{{"trace_id": "{trace}", "name": "{name}", "value": {value}}}'.encode()
        assert _post(secured, body, token, path="/v1/feedback").status_code == 202

    rate(kept[0], TOKENS["globex"], "sabotage", -5)
    rate(dropped[0], TOKENS["globex"], "sabotage", 0)  # another tenant's thumbs-down promotes nothing
    time.sleep(1.5)
    assert secured.lake("SELECT count(*) FROM spans WHERE trace_id = ?", dropped) == [(0,)]
    rate(kept[0], TOKENS["acme"], "thumbs", 1)
    rate(dropped[0], TOKENS["acme"], "thumbs", 0)  # its own tenant's does
    secured.wait_for("SELECT tenant_id FROM spans WHERE trace_id = ?", dropped, lambda r: r == [("acme",)])
    rows = secured.wait_for(
        "SELECT trace_id, name, tenant_id FROM feedback WHERE trace_id IN (SELECT unnest(?)) ORDER BY ALL",
        [kept + dropped],
        lambda r: len(r) == 2,
    )
    assert {(t, n, tenant) for t, n, tenant in rows} == {(kept[0], "thumbs", "acme"), (dropped[0], "thumbs", "acme")}
    assert secured.lake("SELECT feedback_min FROM traces WHERE trace_id = ?", kept) == [(1.0,)]
    text = secured.metrics()
    assert _metric(text, "tracelake_worker_feedback_refused_total") == 2
    assert _metric(text, "tracelake_receiver_tenant_feedback_events_total", tenant="globex", outcome="accepted") == 2


# -- one tenant's view: query, trace, the UI ---------------------------------------------------------
def test_query_trace_and_the_ui_restricted_to_a_tenant(secured: Secured) -> None:
    acme, _ = _sdk_send(_grpc_exporter(secured, TOKENS["acme"]), n=1)
    globex, _ = _sdk_send(_http_exporter(secured, TOKENS["globex"]), n=1)
    secured.wait_for(
        "SELECT trace_id FROM traces WHERE trace_id IN (SELECT unnest(?))", [acme + globex], lambda r: len(r) == 2
    )
    lake = ["--lake", str(secured.tl.lake), "--tenant", "acme"]
    seen = "SELECT (SELECT list(DISTINCT tenant_id) FROM spans), (SELECT list(DISTINCT tenant_id) FROM traces)"
    with ThreadPoolExecutor(3) as pool:  # three CLI processes side by side: their start-up dominates
        out, shown, hidden = pool.map(
            lambda args: run_cli(*args),
            [
                ("query", *lake, "--format", "csv", seen),
                ("trace", *lake, "--json", acme[0]),
                ("trace", *lake, globex[0]),
            ],
        )
    assert out.returncode == 0 and out.stdout.splitlines()[1] == "[acme],[acme]", out.stdout + out.stderr
    assert shown.returncode == 0 and acme[0] in shown.stdout
    assert hidden.returncode == 1 and "not found" in hidden.stderr

    ui = secured.ui
    html = _request(ui, "GET", "/traces?range=all&tenant=acme")[2]
    assert acme[0] in html and globex[0] not in html
    assert 'href="/dashboards?range=all&amp;tenant=acme"' in html  # the tenant goes along to the dashboards
    status, _, board = _request(ui, "GET", "/dashboards?range=all&tenant=globex")
    assert status == 200 and "Tenant <strong>globex</strong> only" in board
    assert 'href="/traces?range=all&amp;tenant=globex"' in board


# -- feedback from the UI ---------------------------------------------------------------------------
def _rate_in_ui(ui: str, trace: str, value: str) -> tuple[int, dict[str, str], str]:
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": ui}
    return _request(ui, "POST", f"/traces/{trace}/feedback", f"value={value}", form)


def test_the_ui_inside_run_rates_as_the_traces_tenant(secured: Secured) -> None:
    """The UI inside `run` hands feedback to the receiver's route itself, with the tenant of the trace it rates."""
    globex, _ = _sdk_send(_http_exporter(secured, TOKENS["globex"]), n=1)
    secured.wait_for("SELECT trace_id FROM traces WHERE trace_id = ?", globex, lambda r: r != [])
    assert _rate_in_ui(secured.ui, globex[0], "down")[0] == 303
    rows = secured.wait_for("SELECT tenant_id, source FROM feedback WHERE trace_id = ?", globex, lambda r: r != [])
    assert rows == [("globex", "ui")]
    secured.wait_for("SELECT feedback_min FROM traces WHERE trace_id = ?", globex, lambda r: r == [(0.0,)])


def test_tracelake_ui_alone_sends_feedback_over_tls_with_its_token(secured: Secured, tmp_path: Path) -> None:
    """`tracelake ui` beside a secured receiver: https with the receiver's CA, a token that may name every
    tenant, the trace's tenant in X-Scope-OrgID; a token that may not write that tenant is refused (403)."""
    acme, _ = _sdk_send(_http_exporter(secured, TOKENS["acme"]), n=1)
    secured.wait_for("SELECT trace_id FROM traces WHERE trace_id = ?", acme, lambda r: r != [])
    servers = []
    for name, token in (("gateway", TOKENS["gateway"]), ("globex", TOKENS["globex"])):
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            f"ui: {{endpoint: 127.0.0.1:0, feedback_url: 'https://{secured.tl.http}/v1/feedback',"
            f" feedback_token: '${{env:UI_TOKEN}}', feedback_ca_file: '{secured.ca.path}'}}\n"
        )
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("UI_TOKEN", token)
            server = ui_server(load(config), lake=secured.tl.lake)
        server.start()
        servers.append(server)
    try:
        gateway, stranger = (f"http://127.0.0.1:{s.port}" for s in servers)
        answer = _rate_in_ui(gateway, acme[0], "up")
        assert answer[0] == 303, answer[2][-2000:]
        status, _, page = _rate_in_ui(stranger, acme[0], "down")
        assert status == 502 and "403" in page and "may not write tenant" in page
    finally:
        for server in servers:
            server.stop()
    rows = secured.wait_for("SELECT tenant_id, value FROM feedback WHERE trace_id = ?", acme, lambda r: r != [])
    assert rows == [("acme", 1.0)]


# -- the SDK settings the README gives ---------------------------------------------------------------
def test_readme_sdk_settings_reach_the_secured_collector(secured: Secured) -> None:
    script = textwrap.dedent(
        """
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))  # everything from the environment
        with tp.get_tracer("readme").start_as_current_span("from the README") as s:
            print(format(s.get_span_context().trace_id, "032x"))
        tp.shutdown()
        """
    )
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://{secured.tl.grpc}",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(secured.ca.path),
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{TOKENS['acme']}",
        "OTEL_SERVICE_NAME": "checkout",
    }
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (trace_id,) = out.stdout.split()
    assert _tenants_of(secured, [trace_id]) == {trace_id: "acme"}


# -- reload over the TLS telemetry endpoint ------------------------------------------------------------
def test_tracelake_reload_speaks_https_to_a_tls_telemetry_endpoint(secured: Secured) -> None:
    tl = secured.tl
    out = run_cli("reload", "--config", str(tl.config), "--endpoint", tl.telemetry, "--cacert", str(secured.ca.path))
    assert out.returncode == 0 and "reloaded (generation 2" in out.stdout, out.stdout + out.stderr
    assert _metric(secured.metrics(), "tracelake_config_generation") == 2


# -- mTLS ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mutual(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    tmp = tmp_path_factory.mktemp("mutual")
    ca = Authority(tmp)
    ca.issue("server")
    tls = f"{{cert_file: {tmp}/server.crt, key_file: {tmp}/server.key, client_ca_file: {ca.path}}}"
    # client certificates without tokens, gRPC beyond loopback: started with --insecure, which acknowledges it
    config = f"""\
        receivers:
          otlp:
            grpc: {{endpoint: 0.0.0.0:0, tls: {tls}}}
            http: {{endpoint: 127.0.0.1:0, tls: {tls}}}
        sinks:
          parquet: {{path: "{{lake}}", roll_seconds: 300ms}}
        worker: {{processes: 1, trace_idle: 500ms, max_batch_delay: 50ms}}
        telemetry: {{endpoint: 127.0.0.1:0}}
        """
    tl = _start(tmp, config, None, "--insecure")
    tl.grpc = tl.grpc.replace("0.0.0.0", "127.0.0.1")  # listening on every address; the certificate names this one
    try:
        yield Secured(tl, ca, tmp)
    finally:
        tl.stop()


def test_mtls_needs_a_valid_client_certificate(mutual: Secured) -> None:
    good = mutual.ca.issue("client", cn="checkout", client=True)
    expired = mutual.ca.issue("expired", cn="old-client", client=True, expired=True)
    other_ca = Authority(mutual.certs, name="other")
    stranger = other_ca.issue("stranger", cn="stranger", client=True)
    acme = TOKENS["acme"]  # sent, and ignored: this receiver has no `auth`

    # a refused handshake is retried until the export timeout: keep it short for the ones meant to fail
    def grpc_with(cert: Any) -> GrpcExporter:
        wait = 3 if cert is good else 1
        if cert is None:
            return _grpc_exporter(mutual, acme, wait)
        return _grpc_exporter(mutual, acme, wait, private_key=cert.key.read_bytes(), certificate_chain=cert.pem())

    def http_with(cert: Any) -> HttpExporter:
        wait = 3 if cert is good else 1
        if cert is None:
            return _http_exporter(mutual, acme, wait)
        return _http_exporter(mutual, acme, wait, client_certificate_file=str(cert.cert), client_key_file=str(cert.key))

    refused: list[str] = []
    for make in (grpc_with, http_with):
        for cert in (None, expired, stranger):
            ids, results = _sdk_send(make(cert), n=1)
            assert results == [SpanExportResult.FAILURE], (make.__name__, cert)
            refused += ids
    landed: list[str] = []
    for make in (grpc_with, http_with):
        ids, results = _sdk_send(make(good), n=1)
        assert results == [SpanExportResult.SUCCESS]
        landed += ids
    _absent(mutual, refused, landed_after=landed)
    text = requests.get(f"http://{mutual.tl.telemetry}/metrics", timeout=10).text
    assert _metric(text, "tracelake_tls_handshake_failures_total", listener="http", reason="handshake") >= 2


# -- safe defaults -----------------------------------------------------------------------------------
def test_listening_beyond_loopback_unprotected_is_said_loudly(tmp_path: Path, mutual: Secured) -> None:
    config = """\
        receivers: {otlp: {grpc: {endpoint: "0.0.0.0:0"}, http: {endpoint: "127.0.0.1:0"}}}
        sinks: {parquet: {path: "{lake}"}}
        worker: {processes: 1}
        telemetry: {endpoint: null}
        """
    tl = _start(tmp_path, config)
    assert tl.stop() == 0
    loud = re.findall(r"WARNING tracelake: !!! INSECURE !!! (.*)", tl.log)
    assert len(loud) == 1 and loud[0].startswith(
        "receivers.otlp.grpc listens on 0.0.0.0:0 without TLS and without auth"
    )
    # acknowledged with --insecure (the mTLS server): said once at info, no warning
    assert "INSECURE" not in mutual.tl.log
    assert "INFO tracelake: --insecure: receivers.otlp.grpc listens on 0.0.0.0:0 without auth:" in mutual.tl.log
    shipped = run_cli(
        "validate",
        str(REPO / "conf" / "tracelake.yaml"),
        env={k: v for k, v in os.environ.items() if not k.startswith("TRACELAKE_")},
    )
    assert shipped.returncode == 0 and "INSECURE" not in shipped.stderr and "without TLS" not in shipped.stderr


def test_readme_central_collector_config_validates(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Securing receivers", 1)[1].split("\n## ", 1)[0]
    config = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert config is not None
    ca = Authority(tmp_path)
    ca.issue("server")
    text = config.group(1).replace("/etc/tracelake/tls/server.crt", str(tmp_path / "server.crt"))
    text = text.replace("/etc/tracelake/tls/server.key", str(tmp_path / "server.key"))
    text = text.replace("/etc/tracelake/tls/clients-ca.crt", str(ca.path))
    (tmp_path / "tokens.yaml").write_text(
        yaml.safe_dump({"tokens": [{"name": "checkout", "sha256": hashlib.sha256(b"t").hexdigest(), "tenant": "acme"}]})
    )
    text = text.replace("/etc/tracelake/tokens.yaml", str(tmp_path / "tokens.yaml"))
    path = tmp_path / "central.yaml"
    path.write_text(text)
    out = run_cli(
        "validate",
        str(path),
        env={**os.environ, "TRACELAKE_GATEWAY_TOKEN": "tlk_gateway"},
    )
    assert out.returncode == 0, out.stderr
    assert "without TLS" not in out.stderr
    assert "receivers: grpc 0.0.0.0:4317 (TLS, auth), http 0.0.0.0:4318 (mTLS, auth)" in out.stdout
