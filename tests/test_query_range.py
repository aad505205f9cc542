"""`tracelake query --since/--until`: the views read the rows of a time range, and on an S3 lake only the hours
overlapping it are listed and opened (issue 18: a query must not list or read the whole bucket)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.testing import spans_batch
from pipeline.trace_summary import TraceSummarizer
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink
from tests.conftest import run_cli
from tests.s3_server import S3Server, serving_s3

# two spans (at :10 and :40, one trace each) in each of four hours: one the day before, three in a row
HOURS = ["2025-11-21T23", "2025-11-22T08", "2025-11-22T09", "2025-11-22T10"]
MINUTES = (10, 40)
COUNT = "SELECT count(*) FROM spans"
ROWS = "SELECT strftime(start_time, '%Y-%m-%dT%H:%M') AS t FROM spans ORDER BY t"
TRACES = "SELECT strftime(start_time, '%Y-%m-%dT%H:%M') AS t, span_count FROM traces ORDER BY t"


def _ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 10**9


def _spans() -> pa.Table:
    rows = [
        {"trace_id": f"{h:016x}{m:016x}", "span_id": f"{h * 100 + m:016x}", "start": _ns(f"{hour}:{m:02d}")}
        for h, hour in enumerate(HOURS, 1)
        for m in MINUTES
    ]
    return spans_batch([{**r, "end": r["start"] + 10**6} for r in rows], "embedded:0@1")


def _write(path: str) -> None:
    """The spans and their trace summaries (one part per trace), through the real sink."""
    spans = _spans()
    sink = ParquetSink(ParquetSinkConfig(path=path))
    sink.write("spans", spans, "embedded:0", (1, 1))
    summarizer = TraceSummarizer(trace_idle=0, clock=lambda: 0.0)
    summarizer.observe(spans)
    for part in summarizer.due(force=True):
        sink.write("traces", part.rows, "embedded:0", (1, 1))
    sink.flush_all()


def _csv(*args: str, env: dict[str, str] | None = None) -> list[str]:
    out = run_cli("query", "--format", "csv", *args, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[1:]


@pytest.fixture(scope="module")
def local_lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    lake = str(tmp_path_factory.mktemp("lake"))
    _write(lake)
    return lake


def test_a_range_reads_exactly_the_rows_in_it(local_lake: str, tmp_path: Path) -> None:
    """Before: no --since/--until (argparse exit 2); a WHERE on dt/hour was the only way."""
    lake = ["--lake", local_lake]
    assert _csv(*lake, ROWS) == [f"{h}:{m}" for h in HOURS for m in MINUTES]
    hours = ["--since", "2025-11-22T08:00", "--until", "2025-11-22T10:00Z"]
    assert _csv(*lake, *hours, ROWS) == ["2025-11-22T08:10", "2025-11-22T08:40", "2025-11-22T09:10", "2025-11-22T09:40"]
    assert _csv(*lake, *hours, TRACES) == [
        "2025-11-22T08:10,1",
        "2025-11-22T08:40,1",
        "2025-11-22T09:10,1",
        "2025-11-22T09:40,1",
    ]
    # ends inside an hour cut rows, not hours; an offset is honoured; one end alone is open on the other side
    assert _csv(*lake, "--since", "2025-11-22T09:30+01:00", "--until", "2025-11-22T09:20", ROWS) == [
        "2025-11-22T08:40",
        "2025-11-22T09:10",
    ]
    assert _csv(*lake, "--until", "2025-11-22", ROWS) == ["2025-11-21T23:10", "2025-11-21T23:40"]
    saved = tmp_path / "count.sql"
    saved.write_text(
        "-- Spans and traces.\nSELECT (SELECT count(*) FROM spans) AS s, (SELECT count(*) FROM traces) AS t\n"
    )
    assert _csv(*lake, "--since", "2025-11-22T09:00", "--saved", str(saved)) == ["4,4"]
    # a duration back from now: these rows are a year old
    assert _csv(*lake, "--since", "7d", COUNT) == ["0"]
    assert _csv(*lake, "--since", "36500d", "--until", "1h", COUNT) == ["8"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "argument --since: expected a duration back from now"),
        (["--until", "1764547200"], "argument --until: expected a duration"),
        (["--since", "2025-13-01"], "got '2025-13-01'"),
        (["--since", "2025-11-22T10:00", "--until", "2025-11-22T09:00"], "--until (2025-11-22T09:00:00Z) must be"),
    ],
)
def test_a_bad_range_exits_2_naming_the_option_and_value(local_lake: str, args: list[str], message: str) -> None:
    out = run_cli("query", "--lake", local_lake, *args, COUNT)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert out.stdout == ""


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with serving_s3() as server:
        yield server


def _served(server: S3Server, since: int) -> tuple[list[str], list[dict[str, str]]]:
    """What the server served since request `since`: the object keys read (GET/HEAD), and the listings' parameters."""
    reads, listings = [], []
    for method, path in server.requests[since:]:
        url = urllib.parse.urlsplit(path)
        if "list-type" in url.query:
            listings.append(dict(urllib.parse.parse_qsl(url.query)))
        elif method in ("GET", "HEAD"):
            reads.append(urllib.parse.unquote(url.path))
    return reads, listings


def test_on_s3_a_range_lists_and_opens_only_its_hours(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    _write(f"s3://{bucket}/lake")
    lake = ["--lake", f"s3://{bucket}/lake"]

    before = len(s3.requests)
    hours = ["--since", "2025-11-22T08:00", "--until", "2025-11-22T10:00"]
    assert _csv(*lake, *hours, COUNT, env=s3.env) == ["4"]
    reads, listings = _served(s3, before)
    assert reads, "the query read nothing"
    assert all("/dt=2025-11-22/hour=08/" in k or "/dt=2025-11-22/hour=09/" in k for k in reads), reads
    # per table: the dt= names (one level), then the one day in range; never the table's whole prefix
    for table in ("spans", "traces", "feedback"):
        of_table = sorted((q["prefix"], q.get("delimiter", "")) for q in listings if f"lake/{table}/" in q["prefix"])
        assert of_table[0] == (f"lake/{table}/", "/"), listings
        assert all(p.startswith(f"lake/{table}/dt=2025-11-22") for p, _ in of_table[1:]), listings
    assert not [q for q in listings if "dt=2025-11-21" in q["prefix"]], listings

    before = len(s3.requests)
    assert _csv(*lake, COUNT, env=s3.env) == ["8"]  # without a range: every hour, as before
    reads, _ = _served(s3, before)
    assert {k.split("/")[5] for k in reads if "/spans/" in k} == {"hour=23", "hour=08", "hour=09", "hour=10"}
