"""The README's first command and quickstart, as written: conf/tracelake.yaml with its full processor chain.

Only the ports move (the config's own environment hooks) so the test can run beside anything else."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipeline.demo import run_demo
from pipeline.query import connect
from tests.conftest import RunningTracelake, make_request

REPO = Path(__file__).resolve().parent.parent
PORTS = {
    "TRACELAKE_GRPC_ENDPOINT": "127.0.0.1:0",
    "TRACELAKE_HTTP_ENDPOINT": "127.0.0.1:0",
    "TRACELAKE_TELEMETRY_ENDPOINT": "127.0.0.1:0",
}
EMAIL = re.compile(rb"[a-z]+\.[a-z]+@example\.(?:com|org)")


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_default_config_end_to_end(tmp_path: Path) -> None:
    env = {**PORTS, "TRACELAKE_HASH_KEY": ""}  # the default config makes its own key file
    tl = RunningTracelake(tmp_path, (REPO / "conf" / "tracelake.yaml").read_text(), env=env)
    try:
        sent = run_demo(tl.grpc, traces=30, seed=7)
        # a full retrieved context, bigger than offload_artifacts.min_bytes, with an address in it
        context = ("Refund policy, section 4. Contact maria.gonzalez@example.com for exceptions. " * 80).strip()
        big = make_request(
            [
                {
                    "trace_id": "ab" * 16,
                    "span_id": "cd" * 8,
                    "name": "retrieve",
                    "attrs": {
                        "openinference.span.kind": "RETRIEVER",
                        "retrieval.documents.0.document.content": context,
                    },
                }
            ]
        )
        posted = urllib.request.urlopen(
            urllib.request.Request(
                f"http://{tl.http}/v1/traces",
                big.SerializeToString(),
                {"Content-Type": "application/x-protobuf"},
            ),
            timeout=30,
        )
        assert posted.status == 200
    finally:
        assert tl.stop() == 0, tl.log  # SIGTERM: tail sampling decides what is pending, sinks flush
    key = tmp_path / ".tracelake" / "hash.key"
    assert key.stat().st_mode & 0o777 == 0o600

    lake = tmp_path / "lake"
    con = connect(lake)
    spans, traces = con.execute("SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM traces)").fetchone() or ()
    assert (spans, traces) == (sent.spans + 1, sent.traces + 1)  # baseline 100%: everything kept
    priced, _unknown = (
        con.execute(
            "SELECT count(*) FILTER (cost_status = 'priced'), count(*) FILTER (cost_status = 'unknown_model') "
            "FROM spans WHERE span_type = 'llm'"
        ).fetchone()
        or ()
    )
    assert priced > 0, "the cost processor priced no LLM call"
    total = con.execute("SELECT sum(cost_usd) FROM traces").fetchone()
    assert total is not None and total[0] > 0
    assert con.execute("SELECT count(*) FROM traces WHERE NOT kept").fetchone() == (0,)

    # the demo plants example.com addresses in prompts: none reaches the lake or the artifact store
    leaked = [f for f in tmp_path.rglob("*") if f.is_file() and "lake" in f.parts and EMAIL.search(f.read_bytes())]
    assert leaked == []
    # redacted in the worker before anything was written, and counted in the lake
    found = con.execute("SELECT count(*) FROM spans WHERE pii_found['EMAIL_ADDRESS'] > 0").fetchone()
    assert found is not None and found[0] > 0
    # `tracelake trace` on the slowest trace, and a saved query, from the same directory a user would use
    (trace_id,) = con.execute("SELECT trace_id FROM traces ORDER BY duration_ms DESC LIMIT 1").fetchone() or ("",)
    shown = _cli(tmp_path, "trace", trace_id)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"trace {trace_id}") and all(len(line) <= 80 for line in shown.stdout.splitlines())
    saved = _cli(tmp_path, "query", "--format", "csv", "--saved", "top_cost_traces")
    assert saved.returncode == 0, saved.stderr
    assert len(saved.stdout.splitlines()) > 1

    # the big payloads were offloaded, and come back through the CLI and SQL
    ref_row = con.execute(
        "SELECT artifacts[1].ref, artifacts[1].bytes FROM spans WHERE artifacts IS NOT NULL"
    ).fetchone()
    assert ref_row is not None, "the demo's retrieved context should exceed offload_artifacts.min_bytes"
    got = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "artifact", "get", "--config", str(tl.config), ref_row[0]],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert got.returncode == 0, got.stderr
    assert len(got.stdout) == ref_row[1] and b"Refund policy" in got.stdout and b"@example.com" not in got.stdout
    via_sql = connect(lake, artifact_stores=[str(lake / "_artifacts")]).execute("SELECT artifact(?)", [ref_row[0]])
    assert via_sql.fetchone() == (got.stdout.decode(),)

    prices = _cli(tmp_path, "prices", "gpt-4o-2024-08-06", "--provider", "openai")
    assert prices.returncode == 0 and "input" in prices.stdout, prices.stderr
    # the demo's hour is still open: maintenance leaves it alone
    compact = _cli(tmp_path, "compact", "--config", str(tl.config), "--older-than", "0s")
    assert compact.returncode == 0 and "0 partitions compacted" in compact.stdout, compact.stdout + compact.stderr
    retention = _cli(tmp_path, "retention", "--config", str(tl.config), "--older-than", "0s", "--dry-run")
    assert retention.returncode == 0 and retention.stdout.startswith("0 partitions to remove"), retention.stdout


# -- the Quickstart as written, against a running server ---------------------------------------
FRESH_S = 5.0  # README, Freshness: a span is queryable this long after its export was acknowledged


def quickstart_commands() -> list[list[str]]:
    """The README Quickstart's shell block as argument lists (quoted SQL spans lines; comments dropped)."""
    readme = (REPO / "README.md").read_text()
    m = re.search(r"^## Quickstart\n.*?```sh\n(.*?)```", readme, re.S | re.M)
    assert m, "README.md has no Quickstart shell block"
    commands: list[list[str]] = []
    pending = ""
    for line in m.group(1).splitlines():
        pending += line + "\n"
        if pending.count('"') % 2 == 0:
            commands.append(shlex.split(pending, comments=True))
            pending = ""
    return [c for c in commands if c]


def test_readme_quickstart_works_as_written_while_the_server_runs(tmp_path: Path) -> None:
    """The shipped config, never stopped: a span exported with the OTel SDK is queryable within 5 s of its
    acknowledgement (before: only after the sink's 60 s roll, and tail sampling's 5 s wait), and the
    Quickstart's commands, run in order with its own sleep, find the demo's spans and traces."""
    tl = RunningTracelake(tmp_path, (REPO / "conf" / "tracelake.yaml").read_text(), env=PORTS)
    try:
        sent = run_demo(tl.grpc, traces=3, seed=11)  # returns once every export was acknowledged
        acked = time.monotonic()
        visible = 0
        while visible < sent.spans and time.monotonic() - acked < 3 * FRESH_S:
            visible = connect(tl.lake).sql("SELECT count(*) FROM spans").fetchall()[0][0]
            time.sleep(0.05)
        waited = time.monotonic() - acked
        assert visible == sent.spans and waited <= FRESH_S, f"{visible}/{sent.spans} spans after {waited:.1f}s"

        printed = []
        for argv in quickstart_commands():
            if argv[0] == "sleep":
                time.sleep(float(argv[1]))
                continue
            assert argv[0] == ".venv/bin/tracelake", argv
            args = [a.replace("127.0.0.1:4317", tl.grpc) for a in argv[1:]]
            if args[0] == "trace":  # the placeholder: the slowest trace, as the second query lists it first
                top = connect(tl.lake).sql("SELECT trace_id FROM traces ORDER BY duration_ms DESC LIMIT 1")
                args = ["trace", top.fetchall()[0][0]]
            done = _cli(tmp_path, *args)
            assert done.returncode == 0, f"{args}: {done.stderr}"
            if args[0] == "query":  # it printed rows, and they are what the lake holds now
                rows = connect(tl.lake).sql(args[1]).fetchall()
                values = [str(row[0])[:12] for row in rows if row[0] is not None]
                assert values and all(v in done.stdout for v in values), (args[1], done.stdout)
            printed.append((args, done.stdout))
    finally:
        assert tl.stop() == 0, tl.log
    assert [args[0] for args, _ in printed] == ["demo", "query", "query", "query", "trace"]
    assert printed[0][1].startswith("sent 50 traces")
    trace_args, trace_out = printed[-1]
    assert trace_out.startswith(f"trace {trace_args[1]}")
