"""`tracelake ui` on a big lake: how long the list, a trace page and the other pages take to answer.

    python benchmarks/ui_bench.py DIR [--spans 10000000] [--runs 7] [--traces 7]

DIR is a lake made by benchmarks/ui_lake.py (made there first when DIR does not exist: 10 million
spans of demo traffic over seven days, compacted, takes about 25 minutes here). The benchmark starts
`tracelake ui --lake DIR` as its own process, as a user would, and times whole HTTP requests (query,
render, transfer) from this process, one at a time:

- cold: the first list page after the server printed its URL (the id index is still being read);
- then, after the index is read, each page `--runs` times: the list (newest first, page 5, with
  filters, a text search, sorted by cost and by duration, thumbs-down only), trace pages of `--traces`
  different kept traces spread over the week (each id opened once, so no cache of that trace's files
  helps), the span pane, a sampled-out trace, the dashboards for 24 hours (all tenants, one tenant) and
  for 7 days, and a saved SQL query.

Prints min / median / max milliseconds per page and the rows or bytes each answer had.
"""

from __future__ import annotations

import argparse
import http.client
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import duckdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))


def get(port: int, path: str) -> tuple[float, int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    seconds = time.perf_counter() - t0
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: {resp.status} {body[:300]!r}")
    return seconds, resp.status, body


def start_ui(lake: Path) -> tuple[subprocess.Popen[str], int, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "ui", "--lake", str(lake), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"open http://127\.0\.0\.1:(\d+)/", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            return proc, int(m.group(1)), time.perf_counter() - t0
    raise RuntimeError("tracelake ui did not start")


def sample(lake: Path, n: int) -> tuple[list[str], str, str]:
    """`n` kept traces with an LLM call spread over the lake's hours, and one sampled-out trace."""
    glob = str(lake / "traces" / "*" / "*" / "*.parquet")
    con = duckdb.connect()
    kept = con.execute(
        f"""SELECT trace_id FROM (
              SELECT trace_id, ntile({n}) OVER (ORDER BY start_time) AS bucket FROM read_parquet('{glob}')
              WHERE kept AND llm_count >= 2 AND span_count >= 4)
            QUALIFY row_number() OVER (PARTITION BY bucket ORDER BY trace_id) = 1"""
    ).fetchall()
    dropped = con.execute(f"SELECT trace_id FROM read_parquet('{glob}') WHERE NOT kept LIMIT 1").fetchall()
    spans = str(lake / "spans" / "*" / "*" / "*.parquet")
    span = con.execute(
        f"SELECT span_id FROM read_parquet('{spans}') WHERE trace_id = ? AND span_type = 'llm' LIMIT 1",
        [kept[0][0]],
    ).fetchall()
    return [r[0] for r in kept], dropped[0][0], span[0][0]


def report(label: str, times: list[float], note: str) -> None:
    ms = sorted(t * 1000 for t in times)
    print(
        f"  {label:<38} min {ms[0]:7.0f}  median {statistics.median(ms):7.0f}  max {ms[-1]:7.0f} ms  ({note})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lake", type=Path)
    ap.add_argument("--spans", type=int, default=10_000_000, help="size of the lake to make when DIR is missing")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--traces", type=int, default=7, help="different trace pages to open")
    args = ap.parse_args(argv)
    if not args.lake.exists():
        from ui_lake import main as make_lake

        make_lake([str(args.lake), "--spans", str(args.spans)])
    files = sum(1 for _ in args.lake.glob("*/*/*/*.parquet"))
    size = sum(p.stat().st_size for p in args.lake.glob("*/*/*/*.parquet"))
    spans = (
        duckdb.connect()
        .execute(f"SELECT count(*) FROM read_parquet('{args.lake}/spans/*/*/*.parquet')")
        .fetchall()[0][0]
    )
    print(f"lake {args.lake}: {spans:,} span rows, {files} files, {size / 2**20:,.0f} MiB")
    traces, dropped, span_id = sample(args.lake, args.traces)

    proc, port, startup = start_ui(args.lake)
    try:
        cold, _, body = get(port, "/traces")
        print(f"  server up in {startup:.2f}s; first list page (id index still being read): {cold * 1000:.0f} ms")
        time.sleep(0)
        while True:  # the index is read in the background: wait until a trace page no longer waits on it
            t, _, _ = get(port, f"/traces/{traces[0]}")
            if t < 2:
                break
        pages = [
            ("list: newest 50", "/traces"),
            ("list: page 5", "/traces?page=5"),
            ("list: errors", "/traces?status=error"),
            ("list: service + model", "/traces?service=research-assistant&model=gpt-4o"),
            ("list: search 'refund'", "/traces?q=refund"),
            ("list: tenant, no match (whole week)", "/traces?tenant=nobody"),
            ("list: by cost (whole week)", "/traces?sort=cost"),
            ("list: by duration (whole week)", "/traces?sort=duration"),
            ("list: thumbs-down", "/traces?feedback=down"),
            ("span pane", f"/traces/{traces[0]}/spans/{span_id}"),
            ("sampled-out trace page", f"/traces/{dropped}"),
            ("dashboards: 24h", "/dashboards?range=24h"),
            ("dashboards: 24h, one tenant", "/dashboards?range=24h&tenant=globex"),
            ("dashboards: 7d", "/dashboards?range=7d"),
            ("sql: saved top_cost_traces", "/sql?saved=top_cost_traces"),
        ]
        for label, path in pages:
            times, sizes = [], []
            for _ in range(args.runs):
                t, _, body = get(port, path)
                times.append(t)
                sizes.append(len(body))
            rows = len(re.findall(rb"<tr[^>]*data-trace=", body))
            report(label, times, f"{rows} rows, {sizes[-1] / 1024:.0f} KiB" if rows else f"{sizes[-1] / 1024:.0f} KiB")
        times = []
        for trace_id in traces:  # each trace once: nothing of it is cached yet
            t, _, body = get(port, f"/traces/{quote(trace_id)}")
            times.append(t)
        report(f"trace page ({len(traces)} different traces)", times, f"{body.count(b'wf-row ')} spans in the last")
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
