"""The lake on S3: a real S3-protocol server on loopback (moto's standalone server, tests/s3_server.py).

Covers writing every table as whole objects under deterministic keys, reading them back with DuckDB through
the pyarrow filesystem (no extension download), held-back spans, an unreachable server that comes back, the
real OpenTelemetry SDK into `tracelake run` with an `s3://` lake, and a SIGKILLed worker process (exact counts).
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from core.sink import SinkWriteError
from pipeline.config import ConfigError, parse
from pipeline.holdback import Holdback
from pipeline.query import connect
from pipeline.testing import spans_batch
from sinks.parquet.config import ParquetSinkConfig, S3Options
from sinks.parquet.sink import ParquetSink
from tests.conftest import RunningTracelake, config_yaml
from tests.s3_server import CREDENTIALS, S3Server, s3_environment, serving_s3
from tests.test_worker_processes import send_and_kill_worker_1

T0 = 1_763_800_000 * 10**9  # 2025-11-22T08:26:40Z
HOUR = 3600 * 10**9


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with serving_s3() as server:
        yield server


def _sink(server: S3Server, bucket: str, **kw: object) -> ParquetSink:
    """A sink whose S3 settings come from config keys (endpoint and keys), not from the environment."""
    options = S3Options(
        endpoint_override=server.endpoint,
        access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region="us-east-1",
        connect_timeout=1.0,
        request_timeout=5.0,
    )
    return ParquetSink(ParquetSinkConfig(path=f"s3://{bucket}/lake", s3=options, **kw))  # type: ignore[arg-type]


def _spans(n: int, prefix: str = "a", start: int = T0, source: str = "embedded:0@1", first: int = 0) -> pa.Table:
    rows = [
        {"trace_id": f"{prefix}{i:031x}", "span_id": f"{i + 1:016x}", "start": start, "end": start + 10**6}
        for i in range(first, first + n)
    ]
    return spans_batch(rows, source)


@pytest.mark.parametrize("path", ["hdfs://namenode/lake", "gs://bucket/lake", "ftp://host/lake", "s3:///lake"])
def test_a_lake_location_that_cannot_work_is_refused_at_load(path: str) -> None:
    """Before: `s3://…` and any other scheme were taken as a relative directory (`s3:/bucket/…`), exit 0."""
    with pytest.raises(ConfigError) as err:
        parse({"sinks": {"parquet": {"path": path}}}, "t.yaml")
    text = str(err.value)
    assert "sinks.parquet.path" in text and ("not supported" in text or "names no bucket" in text), text


def test_secrets_in_the_config_are_never_printed() -> None:
    cfg = ParquetSinkConfig(path="s3://b/lake", s3=S3Options(access_key="AKIAEXAMPLE", secret_key="very-secret"))
    assert "very-secret" not in repr(cfg) and "very-secret" not in str(cfg.model_dump())
    with pytest.raises(ValueError, match="access_key and secret_key go together"):
        S3Options(access_key="AKIAEXAMPLE")


def test_every_table_is_written_as_whole_objects_and_read_back_with_duckdb(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    sink = _sink(s3, bucket)
    sink.write("spans", pa.concat_tables([_spans(3), _spans(2, "b", T0 + HOUR)]), "embedded:0", (1, 2))
    before = len(s3.requests)
    written = sink.flush_all()
    assert sorted(w.path.split("/lake/")[1].rsplit("/", 1)[0] for w in written) == [
        "spans/dt=2025-11-22/hour=08",
        "spans/dt=2025-11-22/hour=09",
    ]
    # nothing but the uploads: no listing, no rename (copy + delete), no temp object
    methods = [m for m, _ in s3.requests[before:]]
    assert "GET" not in methods and "DELETE" not in methods and "HEAD" not in methods, methods
    keys = s3.keys(bucket)
    assert keys == sorted(w.path.removeprefix(f"s3://{bucket}/") for w in written)
    assert all(not k.rsplit("/", 1)[1].startswith(".") for k in keys)

    # a replay of the same offsets writes the same keys again, and the views read each row once
    replay = _sink(s3, bucket)
    replay.write("spans", pa.concat_tables([_spans(3), _spans(2, "b", T0 + HOUR)]), "embedded:0", (1, 2))
    assert sorted(w.path for w in replay.flush_all()) == sorted(w.path for w in written)
    assert s3.keys(bucket) == keys

    con = connect(f"s3://{bucket}/lake")
    assert con.execute("SELECT count(*), count(DISTINCT trace_id) FROM spans").fetchone() == (5, 5)
    hours = con.execute("SELECT dt::VARCHAR, hour, count(*) FROM spans GROUP BY ALL ORDER BY ALL").fetchall()
    assert hours == [("2025-11-22", 8, 3), ("2025-11-22", 9, 2)]
    assert not Path("s3:").exists()
    with pytest.raises(duckdb.Error, match="read-only through DuckDB"):  # the views' filesystem never writes
        con.execute(f"COPY (SELECT 1) TO 's3://{bucket}/lake/spans/x.csv'")
    assert s3.keys(bucket) == keys


def test_held_back_spans_are_promoted_and_expire_on_s3(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    sink = _sink(s3, bucket)
    holdback = Holdback([sink], retention_s=3600)
    dropped = _spans(4, "d")
    holdback.hold(dropped, "embedded:0", (5, 5))
    sink.flush_all()
    assert [k.split("/")[1] for k in s3.keys(bucket)] == ["_holdback"]
    holdback.promote([(dropped.column("trace_id")[0].as_py(), "feedback")])
    sink.flush_all()
    con = connect(f"s3://{bucket}/lake")
    assert con.execute("SELECT count(*) FROM spans").fetchone() == (1,)
    assert con.execute("SELECT bool_or(kept) FROM traces").fetchone() == (True,)
    holdback.expire(now_s=T0 / 1e9 + 2 * 3600 + 3600)  # the hour ended more than the retention ago
    assert not [k for k in s3.keys(bucket) if "/_holdback/" in k]
    assert s3.keys(bucket, "lake/spans")


def test_an_unreachable_server_keeps_rows_and_recovers_without_restart(tmp_path: Path) -> None:
    """The server stops (the sink keeps the rows, reports failing, retries with backoff), then comes back on
    the same address: the next due flush writes everything, once."""
    server = S3Server()
    port = server.port
    bucket = server.new_bucket()
    sink = _sink(server, bucket, roll_rows=1)
    server.stop()
    try:
        sink.write("spans", _spans(4), "embedded:0", (1, 4))
        assert sink.flush_due() == []
        assert sink.failing and sink.buffered_rows == 4 and sink.backlog_bytes > 0
        assert sink.low_watermarks() == {"embedded:0": 1}  # nothing committed past what is not written
        with pytest.raises(SinkWriteError, match=f"cannot write 4 spans rows to s3://{bucket}/lake/spans/"):
            sink.flush_all()
    finally:
        server = S3Server(port)  # moto keeps its buckets in the process: the same store comes back
    try:
        (w,) = sink.flush_all()
        assert w.rows == 4 and not sink.failing and sink.low_watermarks() == {}
        with s3_environment(server):
            con = connect(f"s3://{bucket}/lake")
            assert con.execute("SELECT count(*) FROM spans").fetchone() == (4,)
    finally:
        server.stop()


def _s3_config(bucket: str, server: S3Server, processes: int = 1) -> str:
    cfg = config_yaml().replace("worker: {", f"worker: {{processes: {processes}, ")
    return cfg.replace(
        'parquet: {path: "{lake}", roll_seconds: 1s}',
        f'parquet: {{path: "s3://{bucket}/lake", roll_seconds: 1s, s3: {{endpoint_override: "{server.endpoint}"}}}}',
    )


def _query(config: Path, sql: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "query", "--config", str(config), "--format", "csv", sql],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_sdk_into_an_s3_lake_end_to_end(s3: S3Server, tmp_path: Path) -> None:
    """Before: `tracelake run` with `path: s3://…` exited 0, wrote a local `s3:` directory, left the bucket empty."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    bucket = s3.new_bucket()
    tl = RunningTracelake(tmp_path, _s3_config(bucket, s3), env=CREDENTIALS)
    try:
        tp = TracerProvider(resource=Resource.create({"service.name": "s3-e2e"}))
        tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=tl.grpc, insecure=True)))
        tracer = tp.get_tracer("e2e")
        for i in range(20):
            with tracer.start_as_current_span(f"request {i}"), tracer.start_as_current_span("chat gpt-4o") as s:
                s.set_attributes(
                    {
                        "gen_ai.operation.name": "chat",
                        "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o",
                        "gen_ai.usage.input_tokens": 10,
                    }
                )
        tp.shutdown()
    finally:
        assert tl.stop() == 0, tl.log
    assert not (tmp_path / "s3:").exists()
    tables = {k.split("/")[1] for k in s3.keys(bucket)}
    assert {"spans", "traces"} <= tables, tables
    assert _query(tl.config, "SELECT count(*), count(DISTINCT trace_id) FROM spans").endswith("\n40,20")
    assert _query(tl.config, "SELECT count(*), sum(llm_count) FROM traces").endswith("\n20,20")


def test_a_killed_worker_process_loses_and_duplicates_nothing_on_s3(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    tl = RunningTracelake(tmp_path, _s3_config(bucket, s3, processes=2), env=CREDENTIALS)
    try:
        send_and_kill_worker_1(tl, 40, 15)
    finally:
        assert tl.stop() == 0, tl.log
    assert "died" in tl.log
    con = connect(f"s3://{bucket}/lake")
    # every span of every acknowledged export, once; two workers' files side by side in one bucket
    assert con.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans").fetchone() == (2400, 2400)
    assert con.execute("SELECT count(*) FROM traces").fetchone() == (800,)
    sources = {k.rsplit("/", 1)[1].split("-")[2] for k in s3.keys(bucket, "lake/spans")}
    assert sources == {"0", "1"}, sources


def test_a_trace_lookup_asks_each_object_once_and_reads_only_its_footer_elsewhere(s3: S3Server) -> None:
    """`tracelake trace`'s read on an S3 lake: one listing per table, one HEAD per object (its size; DuckDB's
    later opens, size and time look-ups reuse it), ranged GETs, and the row groups of the other files skipped by
    their trace-id statistics."""
    bucket = s3.new_bucket()
    sink = _sink(s3, bucket)
    for i, prefix in enumerate("abcdef"):  # six files over three hours
        sink.write("spans", _spans(300, prefix, T0 + (i % 3) * HOUR), "embedded:0", (i, i))
        sink.flush_all()
    wanted = _spans(300, "c", T0 + 2 * HOUR).column("trace_id")[7].as_py()
    fs = s3.filesystem()
    objects = [i for i in fs.get_file_info(pafs.FileSelector(bucket, recursive=True)) if i.type == pafs.FileType.File]
    before = len(s3.requests)
    con = connect(f"s3://{bucket}/lake")
    rows = con.execute("SELECT span_id FROM spans WHERE trace_id = ?", [wanted]).fetchall()
    assert len(rows) == 1
    served = s3.requests[before:]
    heads = [p for m, p in served if m == "HEAD"]
    assert sorted(heads) == sorted(f"/{bucket}/{o.path[len(bucket) + 1 :]}" for o in objects), heads
    listings = [p for m, p in served if m == "GET" and "list-type=2" in p]
    assert len(listings) == 3  # spans, traces, feedback: never the whole bucket
    reads = [p for m, p in served if m == "GET" and "list-type=2" not in p]
    assert len(reads) <= 2 * len(objects), reads


# -- maintenance on S3 -------------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=120, env={**os.environ}
    )


def _lake_config(tmp_path: Path, bucket: str, server: S3Server, extra: str = "") -> Path:
    path = tmp_path / "lake.yaml"
    path.write_text(
        f'sinks:\n  parquet: {{path: "s3://{bucket}/lake", s3: {{endpoint_override: "{server.endpoint}"}}}}\n{extra}'
    )
    return path


def test_compaction_during_writes_counts_every_row_once(s3: S3Server) -> None:
    """A sink keeps adding small files to a closed hour while compaction merges it over and over: every reader
    counts each row once (inputs and outputs never both), and at the end the hour is a few files with every row."""
    import threading

    from pipeline.maintenance.compact import Compactor

    bucket = s3.new_bucket()
    lake = f"s3://{bucket}/lake"
    batches, per_batch = 24, 25
    written = threading.Event()
    compacted = threading.Semaphore(0)  # released by each compaction run that merged something
    done_batches: list[int] = []

    def write() -> None:
        try:
            sink = _sink(s3, bucket)
            for i in range(batches):
                sink.write("spans", _spans(per_batch, first=i * per_batch), "embedded:0", (i, i))
                sink.flush_all()
                done_batches.append(i)
                if i % 8 == 7:  # let a compaction merge among the writes, however busy the machine is
                    compacted.acquire(timeout=60)
        finally:
            written.set()

    writer = threading.Thread(target=write)
    writer.start()
    compactor = Compactor(lake, tables=("spans",), grace_s=0.0)
    runs = merged = 0
    seen: list[tuple[int, int, int]] = []
    while not written.is_set() or runs < 2:
        before = len(done_batches)
        report = compactor.run(older_than_s=0)
        runs += 1
        done = len([r for r in report.compacted if r.error is None])
        merged += done
        if done:
            compacted.release()
        assert not report.errors, report.lines()
        count, distinct = (
            connect(lake).execute("SELECT count(*), count(DISTINCT span_id || trace_id) FROM spans").fetchone()
        )
        seen.append((before, count, distinct))
        assert count == distinct and count >= before * per_batch, seen
    writer.join()
    assert len(done_batches) == batches
    assert merged >= 2, seen  # it really merged while the writer wrote
    con = connect(lake)
    assert con.execute("SELECT count(*), count(DISTINCT trace_id) FROM spans").fetchone() == (600, 600)
    compactor.run(older_than_s=0)
    keys = s3.keys(bucket, "lake/spans")
    assert [k.rsplit("/", 1)[1].split("-")[0] for k in keys] == ["compacted"], keys  # no record, no input left
    assert connect(lake).execute("SELECT count(*) FROM spans").fetchone() == (600,)


def test_the_maintenance_lock_on_s3_is_a_conditional_write_lease(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.maintenance import MaintenanceBusy, maintenance_lock
    from pipeline.maintenance import object_lock as lock_module
    from sinks.parquet.layout import open_lake

    bucket = s3.new_bucket()
    lake = open_lake(f"s3://{bucket}/lake")
    with maintenance_lock(lake):
        assert s3.keys(bucket) == ["lake/.maintenance.lock"]
        with pytest.raises(MaintenanceBusy, match=f"s3://{bucket}/lake/.maintenance.lock"), maintenance_lock(lake):
            pass
    assert s3.keys(bucket) == []  # released
    # a holder that died leaves its lease behind: taken over once it is older than the lease, by the server's clock
    monkeypatch.setattr(lock_module, "LEASE_S", 1.0)
    dead = lock_module.ObjectLease(lake)
    dead.acquire(0.0)
    dead._stop.set()  # it stops renewing, as a SIGKILLed process would
    with pytest.raises(MaintenanceBusy), maintenance_lock(lake):
        pass
    with maintenance_lock(lake, wait_s=5.0):
        assert s3.keys(bucket) == ["lake/.maintenance.lock"]


def test_retention_and_forget_on_s3_through_the_cli(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    sink = _sink(s3, bucket)
    user = _spans(3, "e", T0 + 2 * HOUR)
    user = user.set_column(user.schema.get_field_index("user_id"), "user_id", pa.array(["u-42"] * 3, pa.string()))
    sink.write("spans", pa.concat_tables([_spans(4, "a"), _spans(5, "b", T0 + 2 * HOUR), user]), "embedded:0", (1, 3))
    sink.flush_all()
    config = _lake_config(tmp_path, bucket, s3)
    lake = f"s3://{bucket}/lake"

    out = _cli("forget", "--config", str(config), "--user-id", "u-42")
    assert out.returncode == 0, out.stderr
    assert "removed 3 traces" in out.stdout and "spans: 3 rows" in out.stdout, out.stdout
    con = connect(lake)
    assert con.execute("SELECT count(*), count(*) FILTER (WHERE user_id = 'u-42') FROM spans").fetchone() == (9, 0)

    out = _cli("retention", "--config", str(config), "--table", "spans", "--older-than", "1d")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("removed spans/") == 2, out.stdout  # both hours of 2025: whole hours, nothing else
    assert connect(lake).execute("SELECT count(*) FROM spans").fetchone() == (0,)
    assert s3.keys(bucket, "lake/spans") == []

    sink.write("spans", _spans(6, "c"), "embedded:0", (4, 4))
    sink.flush_all()
    sink.write("spans", _spans(6, "c"), "embedded:0", (4, 4))  # the same offsets again: a replay, same key
    sink.write("spans", _spans(2, "d"), "embedded:0", (5, 5))
    sink.flush_all()
    out = _cli("compact", "--config", str(config), "--older-than", "0s")
    assert out.returncode == 0, out.stderr
    assert "compacted spans/dt=2025-11-22/hour=08: 2 files" in out.stdout, out.stdout
    assert connect(lake).execute("SELECT count(*) FROM spans").fetchone() == (8,)


def test_artifacts_offloaded_to_s3_with_the_lakes_s3_settings_are_read_back(s3: S3Server, tmp_path: Path) -> None:
    """offload_artifacts' `store: s3://…` reaches the server through `sinks.parquet.s3` (the environment's endpoint
    is wrong on purpose); `tracelake artifact get` and `artifact()` in `tracelake query` read the value back."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    bucket = s3.new_bucket()
    yaml = config_yaml(
        process="[offload_artifacts]",
        processors=f'{{offload_artifacts: {{min_bytes: 64, store: "s3://{bucket}/art"}}}}',
    )
    yaml = yaml.replace(
        'parquet: {path: "{lake}", roll_seconds: 1s}',
        f'parquet: {{path: "s3://{bucket}/lake", roll_seconds: 1s, s3: {{endpoint_override: "{s3.endpoint}"}}}}',
    )
    wrong = {**CREDENTIALS, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens there
    prompt = "You are a careful assistant. " * 20
    tl = RunningTracelake(tmp_path, yaml, env=wrong)
    try:
        tp = TracerProvider()
        tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=tl.grpc, insecure=True)))
        with tp.get_tracer("t").start_as_current_span("chat") as span:
            span.set_attribute("gen_ai.system_instructions", prompt)
        tp.shutdown()
    finally:
        assert tl.stop() == 0, tl.log
    assert [k for k in s3.keys(bucket, "art") if k.endswith(".zst")], s3.keys(bucket)
    env = {**os.environ, **wrong}
    ref = _query_env(tl.config, "SELECT attributes['gen_ai.system_instructions'] FROM spans", env).splitlines()[-1]
    assert ref.startswith("artifact:sha256:"), ref
    got = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "artifact", "get", "--config", str(tl.config), ref],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert got.returncode == 0 and got.stdout == prompt, got.stderr
    sql = "SELECT artifact(attributes['gen_ai.system_instructions']) = $$" + prompt + "$$ FROM spans"
    assert _query_env(tl.config, sql, env).splitlines()[-1] == "true"


def _query_env(config: Path, sql: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "query", "--config", str(config), "--format", "csv", sql],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _get(base: str, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(base.rstrip("/") + path, timeout=60) as resp:
        return resp.status, resp.read().decode()


def _sql(base: str, sql: str) -> str:
    """The console's page for `sql`, unescaped."""
    return html.unescape(_get(base, "/sql?" + urllib.parse.urlencode({"q": sql}))[1])


def _sql_value(base: str, expr: str, source: str = "traces") -> str:
    """The console's one value of `expr` (marked `@@v=…`: a marker the page's echo of the query does not hold)."""
    page = _sql(base, f"SELECT '@@' || 'v=' || ({expr}) FROM {source}")
    m = re.search(r"@@v=([^\s<]*)", page)
    assert m, page
    return m.group(1)


def test_the_ui_reads_an_s3_lake(s3: S3Server, tmp_path: Path) -> None:
    """Before: `tracelake ui` exited 2 for an `s3://` lake (and the UI inside `tracelake run` read a local `s3:`
    directory). Now the UI inside `tracelake run` (the config's lake and its `s3` settings) and `tracelake ui
    --lake s3://…` (the environment's) show the traces list, a trace with its offloaded value, the dashboards and
    the SQL console over the bucket; the console reads nothing outside the lake."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    bucket, elsewhere = s3.new_bucket(), s3.new_bucket()
    s3.filesystem().open_output_stream(f"{elsewhere}/secret.csv").close()
    yaml = config_yaml(
        process="[offload_artifacts]",
        processors=f'{{offload_artifacts: {{min_bytes: 64, store: "s3://{bucket}/lake/_artifacts"}}}}',
        extra="ui: {enabled: true, endpoint: 127.0.0.1:0}\n",
    ).replace(
        'parquet: {path: "{lake}", roll_seconds: 1s}',
        f'parquet: {{path: "s3://{bucket}/lake", roll_seconds: 1s, s3: {{endpoint_override: "{s3.endpoint}"}}}}',
    )
    prompt = "You are the S3 lake's careful assistant. " * 10
    tl = RunningTracelake(tmp_path, yaml, env={**CREDENTIALS, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    try:
        ui = next(m.group(1) for line in tl.log_lines if (m := re.search(r"tracelake ui listening on (\S+)/$", line)))
        tp = TracerProvider(resource=Resource.create({"service.name": "s3-ui"}))
        tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=tl.grpc, insecure=True)))
        for i in range(3):
            tracer = tp.get_tracer("t")
            with tracer.start_as_current_span(f"request {i}"), tracer.start_as_current_span("chat gpt-4o") as span:
                span.set_attributes(
                    {
                        "gen_ai.operation.name": "chat",
                        "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o",
                        "gen_ai.usage.input_tokens": 100,
                        "gen_ai.usage.output_tokens": 7,
                        "gen_ai.system_instructions": prompt,
                    }
                )
        tp.shutdown()
        deadline = time.monotonic() + 60
        while _sql_value(ui, "count(*)") != "3":
            assert time.monotonic() < deadline, _sql(ui, "SELECT count(*) FROM traces")
            time.sleep(0.5)
        _check_ui_pages(ui, bucket, elsewhere, prompt)
    finally:
        assert tl.stop() == 0, tl.log
    assert not (tmp_path / "s3:").exists() and not Path("s3:").exists()

    # `tracelake ui --lake s3://…`: endpoint and keys from the environment, as AWS tools take them
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "ui", "--lake", f"s3://{bucket}/lake", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **s3.env},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"open (http://\S+?)/? \(lake s3://", line)
        assert m, line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        _check_ui_pages(m.group(1), bucket, elsewhere, prompt)
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def _check_ui_pages(ui: str, bucket: str, elsewhere: str, prompt: str) -> None:
    status, page = _get(ui, "/traces?range=all")
    assert status == 200 and all(f"request {i}" in page for i in range(3)), page
    trace_ids = sorted(set(re.findall(r'href="/traces/([0-9a-f]{32})"', page)))
    assert len(trace_ids) == 3, trace_ids
    trace = _get(ui, f"/traces/{trace_ids[0]}")[1]
    assert "chat gpt-4o" in trace and "request " in trace
    span_ids = set(re.findall(r'data-span="([0-9a-f]{16})"', trace))
    assert len(span_ids) == 2, trace
    panes = "".join(_get(ui, f"/traces/{trace_ids[0]}/spans/{span_id}")[1] for span_id in span_ids)
    refs = set(re.findall(r"artifact:sha256:[0-9a-f]{64}", panes))
    assert len(refs) == 1, refs  # the offloaded system prompt, by reference
    assert _get(ui, f"/artifacts/{refs.pop()}")[1] == prompt  # and its value on demand, from the bucket
    dashboards = _get(ui, "/dashboards?range=all")[1]
    assert "gpt-4o" in dashboards, dashboards
    counts = _sql(ui, "SELECT 'n=' || count(*) || ',' || sum(llm_count) || ',' || sum(input_tokens) FROM traces")
    assert "n=3,3,300" in counts, counts
    assert "n=6" in _sql(
        ui, "SELECT 'n=' || count(*) FROM read_parquet('s3://" + bucket + "/lake/spans/*/*/*.parquet')"
    )
    for outside, refusal in (
        (f"SELECT * FROM read_csv('s3://{elsewhere}/secret.csv')", "Permission Error"),
        (f"SELECT * FROM glob('s3://{elsewhere}/*')", "Permission Error"),
        (f"SELECT * FROM read_csv('s3://{bucket}/lake/../../{elsewhere}/secret.csv')", "is outside the lake"),
        ("SELECT * FROM read_text('/etc/hostname')", "Permission Error"),
    ):
        answer = _sql(ui, outside)
        assert refusal in answer and 'id="sql-result"' not in answer, (outside, answer)


def test_a_running_ui_sees_an_object_forget_rewrote_under_the_same_key(s3: S3Server) -> None:
    """`tracelake forget` uploads a file again under its key without the user's rows. A UI that has read the object
    before (its size and footer cached for the server's life) reads the new object, not the old footer's offsets;
    so does its SQL console (its object sizes are shared by every query)."""
    import pyarrow.parquet as pq

    from pipeline.ui.lake import LakeReader
    from pipeline.ui.sql_console import SqlSandbox
    from pipeline.ui.trace_detail import load_trace
    from sinks.parquet.layout import open_lake, put_file

    bucket = s3.new_bucket()
    sink = _sink(s3, bucket)
    sink.write("spans", _spans(300, "f"), "embedded:0", (1, 1))
    [written] = sink.flush_all()
    ids = _spans(300, "f").column("trace_id").to_pylist()
    reader = LakeReader(f"s3://{bucket}/lake")
    console = SqlSandbox(f"s3://{bucket}/lake")
    count = "SELECT count(*) FROM spans"
    try:
        assert load_trace(reader, ids[7]) is not None and load_trace(reader, ids[8]) is not None
        assert console.run(count).rows == [["300"]]
        lake = open_lake(f"s3://{bucket}/lake")
        key = lake.fs_path(written.path)
        old = pq.read_table(key, filesystem=lake.fs)
        out = pa.BufferOutputStream()
        pq.write_table(old.filter(pa.compute.not_equal(old.column("trace_id"), ids[7])), out)
        put_file(lake, key, out.getvalue())
        assert load_trace(reader, ids[7]) is None
        kept = load_trace(reader, ids[8])
        assert kept is not None and [r.span.span_id for r in kept.waterfall] == [f"{9:016x}"]
        assert console.run(count).rows == [["299"]]
    finally:
        reader.close()
        console.close()


def test_a_trace_lookup_with_the_index_opens_only_the_traces_files(s3: S3Server) -> None:
    """`tracelake trace` on S3 once compaction has indexed the days: the index (one object per day), the traces and
    feedback files it names, and the spans of the trace's own hours; no other object is opened, and `spans/` is
    listed only for the days the trace spans."""
    from pipeline.maintenance.compact import Compactor
    from pipeline.query import connect_trace
    from sinks.parquet.layout import open_lake
    from tests.test_trace_index import HOURS, LATE, _rows, _write_hours

    bucket = s3.new_bucket()
    _write_hours(f"s3://{bucket}/lake", _sink(s3, bucket))
    lake = open_lake(f"s3://{bucket}/lake")
    assert not Compactor(lake).run(0).errors
    whole = _rows(connect(lake), LATE)
    before = len(s3.requests)
    looked_up = _rows(connect_trace(lake, LATE), LATE)
    served = s3.requests[before:]
    assert looked_up == whole and looked_up["spans"].num_rows == 6
    paths = [urllib.parse.unquote(p) for _, p in served]
    objects = [p.split("?")[0] for p in paths if "list-type=2" not in p]
    opened = {o.split("/lake/")[1].rsplit("/", 1)[0] for o in objects if "/lake/" in o}
    late_hours = {f"dt={_hour(h)[0]}/hour={_hour(h)[1]}" for h in (HOURS[0], HOURS[1], HOURS[2])}
    assert opened == {f"spans/{h}" for h in late_hours} | {
        f"traces/{h}" for h in (late_hours - {f"dt={_hour(HOURS[1])[0]}/hour={_hour(HOURS[1])[1]}"})
    } | {f"_index/trace_ids/dt={_hour(HOURS[0])[0]}", f"_index/trace_ids/dt={_hour(HOURS[2])[0]}"}, opened
    spans_listings = [p for p in paths if "list-type=2" in p and "lake/spans" in p]
    assert all("delimiter=/" in p or "spans/dt=" in p for p in spans_listings), spans_listings
    assert len(served) <= 40, Counter(m for m, _ in served)


def _hour(ns: int) -> tuple[str, str]:
    t = datetime.fromtimestamp(ns / 1e9, UTC)
    return t.date().isoformat(), f"{t.hour:02d}"


def test_the_readers_bridge_remembers_a_bounded_number_of_objects(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running UI meets every object compaction ever wrote: the bridge keeps the most recently used ones open
    and opens a forgotten one again when it is next read."""
    from sinks.parquet import object_store

    monkeypatch.setattr(object_store, "MAX_KNOWN", 3)
    bucket = s3.new_bucket()
    fs = s3.filesystem()
    for i in range(5):
        with fs.open_output_stream(f"{bucket}/o{i}") as out:
            out.write(b"x" * (i + 1))
    bridge = object_store.DuckDBS3(fs)
    bridge.note_listed({f"{bucket}/o{i}": i + 1 for i in range(5)})
    assert [bridge.listed_size(f"s3://{bucket}/o{i}") for i in range(5)] == [None, None, 3, 4, 5]
    for i in range(5):
        assert bridge.cat_file(f"s3://{bucket}/o{i}") == b"x" * (i + 1)
        assert bridge.info(f"s3://{bucket}/o{i}")["size"] == i + 1
    assert bridge.heads == 5 and len(bridge._handles) == 3
    assert bridge.info(f"s3://{bucket}/o4")["size"] == 5 and bridge.heads == 5  # still open
    with bridge.open(f"s3://{bucket}/o0") as fh:  # forgotten: opened again
        assert fh.read() == b"x"
    assert bridge.heads == 6 and len(bridge._handles) == 3


def test_the_ui_on_an_indexed_s3_lake_starts_without_opening_a_traces_file(s3: S3Server) -> None:
    from pipeline.maintenance.compact import Compactor
    from pipeline.ui.lake import LakeReader
    from tests.test_trace_index import RATED, _write_hours

    bucket = s3.new_bucket()
    _write_hours(f"s3://{bucket}/lake", _sink(s3, bucket))
    assert not Compactor(f"s3://{bucket}/lake").run(0).errors
    reader = LakeReader(f"s3://{bucket}/lake")
    before = len(s3.requests)
    reader.warm()
    opened = [p for m, p in s3.requests[before:] if "list-type=2" not in p]
    assert opened and all("/_index/trace_ids/" in p for p in opened), opened
    assert [h.start_ns for h in reader.hours_holding("feedback", [RATED])]


def test_gc_aborts_the_uploads_a_dead_writer_left_under_the_lake(s3: S3Server, tmp_path: Path) -> None:
    from datetime import timedelta

    from sinks.parquet.object_store import abort_abandoned_uploads, s3_client

    bucket = s3.new_bucket()
    client = s3_client(S3Options())
    keys = ["lake/spans/dt=2026-12-01/hour=10/a.parquet", "lake/_artifacts/ab/cd", "elsewhere/x"]
    started = [client.create_multipart_upload(Bucket=bucket, Key=k)["UploadId"] for k in keys]
    client.upload_part(Bucket=bucket, Key=keys[0], UploadId=started[0], PartNumber=1, Body=b"x" * 100)
    initiated = max(u["Initiated"] for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"])
    # moto stamps every upload with one fixed time: `now` says how long ago that was
    young = abort_abandoned_uploads(S3Options(), f"{bucket}/lake", 3600, now=initiated + timedelta(minutes=10))
    assert young == []
    config = _lake_config(tmp_path, bucket, s3)
    dry = _cli("gc", "--config", str(config), "--force", "--dry-run")
    assert dry.returncode == 0 and "would abort 2 incomplete uploads begun more than 3600s ago" in dry.stdout, dry
    done = _cli("gc", "--config", str(config), "--force")
    assert done.returncode == 0 and f"s3://{bucket}/lake: aborted 2 incomplete uploads" in done.stdout, done
    assert [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == ["elsewhere/x"]
