"""`tracelake forget --user-id`: a user's traces leave every table and partition, and their artifacts the store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipeline.query import connect
from tests.conftest import RunningTracelake, config_yaml, make_request

KEY = "forget-tests-key-0123456789abcdef"
HOUR_NS = 3600 * 10**9
ALICE, BOB = "alice@corp.example", "bob@corp.example"
SHARED = "Shared system prompt for every support conversation. " * 40  # the same bytes in both users' traces
PRIVATE = "Alice's own retrieved contract text, clause by clause. " * 40


def _post(url: str, body: bytes, content_type: str) -> int:
    req = urllib.request.Request(url, body, {"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status


def _trace(trace_id: str, user: str, start: int, context: str) -> dict[str, object]:
    return {
        "root": {
            "trace_id": trace_id,
            "span_id": trace_id[:16],
            "name": "chat",
            "start": start,
            "end": start + 10**9,
            "attrs": {"user.id": user, "gen_ai.system_instructions": SHARED},
        },
        "child": {
            "trace_id": trace_id,
            "span_id": trace_id[:14] + "ff",
            "parent": trace_id[:16],
            "name": "retrieve",
            "start": start + 1000,
            "end": start + 10**8,
            "attrs": {"retrieval.documents.0.document.content": context},
        },
    }


def test_forget_removes_a_users_traces_across_partitions_and_their_artifacts(tmp_path: Path) -> None:
    processors = '{redact_pii: {ner: "off"}, offload_artifacts: {min_bytes: 1KiB, store: "{lake}/_artifacts"}}'
    tl = RunningTracelake(
        tmp_path,
        config_yaml(process="[redact_pii, offload_artifacts]", processors=processors),
        env={"TRACELAKE_HASH_KEY": KEY},
    )
    now = time.time_ns()
    alice_traces = ["a1" * 16, "a2" * 16]
    bob_trace = "b0" * 16
    spans = []
    for tid, start in zip(alice_traces, (now - 3 * HOUR_NS, now), strict=True):  # two hour partitions
        t = _trace(tid, ALICE, start, PRIVATE if tid == alice_traces[0] else SHARED)
        spans += [t["root"], t["child"]]
    b = _trace(bob_trace, BOB, now, "Bob's retrieved FAQ entry about invoices. " * 40)
    spans += [b["root"], b["child"]]
    try:
        assert (
            _post(f"http://{tl.http}/v1/traces", make_request(spans).SerializeToString(), "application/x-protobuf")
            == 200
        )
        for tid in (alice_traces[1], bob_trace):
            fb = {"trace_id": tid, "name": "user_thumbs", "value": 0.0, "comment": "wrong answer"}
            assert _post(f"http://{tl.http}/v1/feedback", json.dumps(fb).encode(), "application/json") == 202
        time.sleep(2.5)  # past trace_idle, so feedback and spans meet in the summaries
    finally:
        assert tl.stop() == 0, tl.log
    lake = tmp_path / "lake"
    before = connect(lake)
    assert before.execute("SELECT count(DISTINCT dt || hour) FROM spans WHERE trace_id LIKE 'a%'").fetchone() == (2,)
    store = lake / "_artifacts"
    objects_before = {p.name for p in store.rglob("*.zst")}
    assert len(objects_before) == 3  # shared, Alice's private context, Bob's FAQ

    dry = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "forget", "--config", str(tl.config), "--user-id", ALICE, "--dry-run"],
        capture_output=True,
        text=True,
        env={"TRACELAKE_HASH_KEY": KEY, "PATH": ""},
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would remove 2 traces"), dry.stdout
    assert before.execute("SELECT count(*) FROM spans").fetchone() == (6,)  # a dry run changes nothing

    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "forget", "--config", str(tl.config), "--user-id", ALICE],
        capture_output=True,
        text=True,
        env={"TRACELAKE_HASH_KEY": KEY, "PATH": ""},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "removed 2 traces" in out.stdout and "artifacts deleted: 1" in out.stdout, out.stdout

    after = connect(lake, artifact_stores=[str(store)])
    for table in ("spans", "traces", "feedback"):
        rows = after.execute(f"SELECT DISTINCT trace_id FROM {table} ORDER BY 1").fetchall()
        assert rows == [(bob_trace,)], (table, rows)
    assert after.execute("SELECT count(*) FROM spans").fetchone() == (2,)
    # Bob's artifacts, including the one Alice shared, still resolve; Alice's private context is gone
    texts = {
        r[0]
        for r in after.execute(
            "SELECT artifact(v) FROM spans, unnest(map_values(attributes)) t(v) WHERE starts_with(v, 'artifact:')"
        ).fetchall()
    }
    assert SHARED.strip() in {t.strip() for t in texts}
    assert len({p.name for p in store.rglob("*.zst")}) == 2
    assert not any(b"contract text" in f.read_bytes() for f in lake.rglob("*.parquet"))
    # Alice's early hour held nothing else: its files are gone, no temp files are left
    assert not list(lake.rglob("*.tmp"))
