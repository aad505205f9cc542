"""Before / after: the hot path of two checkouts in one run, interleaved, with the ratios after / before.

    python benchmarks/before_after.py --before DIR [--after DIR] [--rounds 3] [--parts processors,throughput]
                                      [--shapes demo,prompt-heavy] [--chains empty,pattern] [--processes 1,auto]
                                      [--traces 8000] [--warmup-traces 300] [--clients 2]
                                      [--bench-traces 6000] [--ner-traces 400] [--pending 10000]
                                      [--settings like|shipped]

Each checkout runs with its own virtualenv, DIR/.venv (`python3 -m venv .venv && .venv/bin/pip install -e
'.[test]'`); --after defaults to this checkout. Made for issue 15 ("behaviour and benchmarks unchanged"):
`git worktree add --detach ../before 82f28ae^1`, then --before ../before.

(1) processors: each checkout runs its own copy of redact_bench.py (--shapes, --bench-traces, --ner-traces,
    chains empty, pattern, default), cost_bench.py (demo traffic, --bench-traces) and tail_sampling_bench.py
    (demo traffic, --pending) with its own interpreter, the same arguments and seeds, so the same requests
    (benchmarks/traffic.py and the demo generator are the same code in both). One pass each (--repeat 1;
    cost_bench 2 for its processor-alone timing); the rounds are the repeats. Besides the rates, the lines
    that say what the processors did (redact counters, cost statuses, sampling decisions) must be equal.
(2) `tracelake run`: throughput.py's embedded cell (`run_embedded`: warm-up burst, idle, timed burst from
    --clients raw-gRPC processes, SIGTERM after the last OK, drained exit, the lake checked with DuckDB) for
    --shapes × --chains × --processes, each server started from its checkout's venv and shipped config
    (throughput.ServerCode) with this script's clients and requests. --settings like (default) makes the
    two configs do the same work where the shipped files differ: sinks.parquet roll_seconds 60s (the
    before tree's shipped value), and where a checkout's shipped file sets them, flush_idle 60s and
    compaction.background false; --settings shipped runs each as shipped.

Order: within a round every benchmark (and every server cell) runs on one checkout and then the other; the
next round starts with the other checkout, so drift over the run hits both alike. Printed: each pass as it
ends, then per figure the median over rounds with min–max for each checkout, and after / before as the
median of the per-round ratios with their min–max (every figure is a rate: above 1 is faster after).
"""

from __future__ import annotations

# first, as in `tracelake run`: importing pipeline configures Arrow's jemalloc before pyarrow loads
import pipeline  # noqa: F401

# isort: split
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from benchmarks import throughput  # noqa: E402
from benchmarks.traffic import SHAPES  # noqa: E402
from pipeline.service import use_server_memory_pool  # noqa: E402

SIDES = ("before", "after")


@dataclass
class Checkout:
    side: str  # "before" / "after"
    root: Path
    code: throughput.ServerCode

    @property
    def python(self) -> str:
        return self.code.python


@dataclass
class Figures:
    """One pass of one benchmark on one checkout: named rates (higher is faster) and what it did."""

    rates: dict[str, float] = field(default_factory=dict)
    behaviour: list[str] = field(default_factory=list)


# -- (1) the processor benchmarks, each checkout's own copy ------------------------------------------
def _number(text: str) -> float:
    return float(text.replace(",", ""))


def parse_redact(out: str) -> Figures:
    """redact_bench.py: per shape, each chain's spans/s and spans/CPU-s, and the processor alone (µs/span)."""
    f = Figures()
    shape = ""
    for line in out.splitlines():
        if m := re.match(r"== (\S+): ", line):
            shape = m.group(1)
        elif m := re.match(r"(empty|pattern|empty@ner|default|presidio)\s+(\d+)\s+([\d,]+)\s+\d+%\s+([\d,]+)\s+"
                           r"\d+%\s+(\S+)$", line):  # fmt: skip
            chain, spans_s, cpu_s, proc_us = m.group(1), m.group(3), m.group(4), m.group(5)
            f.rates[f"redact_bench {shape} {chain} spans/s"] = _number(spans_s)
            f.rates[f"redact_bench {shape} {chain} spans/CPU-s"] = _number(cpu_s)
            if not chain.startswith("empty") and proc_us not in ("-", "0.0"):
                f.rates[f"redact_bench {shape} {chain}: redact_pii alone spans/s"] = 1e6 / _number(proc_us)
        elif line.startswith("  ") and "=" in line:
            f.behaviour.append(f"{shape}{line}")
    return f


def parse_cost(out: str) -> Figures:
    f = Figures()
    for line in out.splitlines():
        if m := re.match(r"\s+(empty chain|\[cost\])\s+([\d,]+)\s+([\d,]+)$", line):
            name = "empty" if m.group(1) == "empty chain" else "cost"
            f.rates[f"cost_bench demo {name} spans/s"] = _number(m.group(2))
            f.rates[f"cost_bench demo {name} spans/CPU-s"] = _number(m.group(3))
        elif m := re.match(r"\(2\) cost.process alone: ([\d,]+) spans/s", line):
            f.rates["cost_bench demo: cost alone spans/s"] = _number(m.group(1))
        elif line.lstrip().startswith(("statuses:", "unknown models:")):
            f.behaviour.append(line.strip())
    return f


def parse_tail_sampling(out: str) -> Figures:
    f = Figures()
    names = {"empty chain": "empty", "[tail_sampling]": "tail_sampling", "tail_sampling alone": ": tail_sampling alone"}
    for line in out.splitlines():
        if m := re.match(r"(empty chain|\[tail_sampling\]|tail_sampling alone)\s+:\s+([\d,]+) spans/s", line):
            f.rates[f"tail_sampling_bench demo {names[m.group(1)]} spans/s".replace(" :", ":")] = _number(m.group(2))
        elif m := re.match(r"memory, .*python state ([\d,]+) B/trace", line):  # as a rate: higher is better
            f.rates["tail_sampling_bench demo: pending traces per MiB of Python state"] = 2**20 / _number(m.group(1))
        elif line.startswith(("decisions", "traffic")):
            f.behaviour.append(line.strip())
    return f


@dataclass(frozen=True)
class Bench:
    script: str
    args: Callable[[argparse.Namespace], list[str]]
    parse: Callable[[str], Figures]


BENCHES = (
    Bench(
        "redact_bench.py",
        lambda a: ["--shapes", ",".join(a.shapes), "--traces", str(a.bench_traces), "--ner-traces",
                   str(a.ner_traces), "--repeat", "1", "--chains", "empty,pattern,default"],
        parse_redact,
    ),
    Bench("cost_bench.py", lambda a: ["--traces", str(a.bench_traces), "--repeat", "2"], parse_cost),
    Bench("tail_sampling_bench.py", lambda a: ["--traces", str(a.bench_traces), "--repeat", "1", "--pending",
                                               str(a.pending)], parse_tail_sampling),
)  # fmt: skip


def run_bench(checkout: Checkout, bench: Bench, args: argparse.Namespace) -> Figures:
    """The checkout's own copy of the script, its interpreter, from its root."""
    cmd = [checkout.python, str(checkout.root / "benchmarks" / bench.script), *bench.args(args)]
    env = {**os.environ, "TRACELAKE_HASH_KEY": throughput.HASH_KEY}
    done = subprocess.run(cmd, cwd=checkout.root, capture_output=True, text=True, timeout=3600, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{checkout.side}: {' '.join(cmd)} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    figures = bench.parse(done.stdout)
    if not figures.rates:
        raise RuntimeError(f"{checkout.side}: no figures in the output of {bench.script}:\n{done.stdout[-3000:]}")
    return figures


# -- (2) tracelake run ---------------------------------------------------------------------------------
def like_for_like(shipped: Path) -> dict[str, Any]:
    """Settings that make both checkouts' servers do the same work where their shipped files differ: roll
    every 60 s (the before tree's shipped value), no idle flush, no background compaction."""
    doc = yaml.safe_load(shipped.read_text())
    parquet: dict[str, Any] = {"roll_seconds": "60s"}
    if "flush_idle" in doc["sinks"]["parquet"]:
        parquet["flush_idle"] = "60s"
    settings: dict[str, Any] = {"sinks": {"parquet": parquet}}
    if "compaction" in doc:
        settings["compaction"] = {"background": False}
    return settings


def run_server(
    checkout: Checkout, traffic: throughput.Traffic, chain: str, processes: str, args: argparse.Namespace, work: Path
) -> tuple[Figures, throughput.Run]:
    setup = throughput.Setup(traffic, chain, processes, args.clients, work, None, 0.0, code=checkout.code)
    try:
        run = throughput.run_embedded(setup)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if run.problems:
        raise RuntimeError(f"{checkout.side} {traffic.shape} {chain} {processes}: " + "; ".join(run.problems))
    cell = f"run {traffic.shape} {chain} processes {processes}"
    rates = {
        f"{cell} accepted/s": run.accepted_rate,
        f"{cell} durable/s": run.durable_rate,
        f"{cell} spans/CPU-s": run.spans / run.cpu,
    }
    return Figures(rates), run


# -- report --------------------------------------------------------------------------------------------
@dataclass
class Table:
    """Every pass's figures per side, in round order."""

    passes: dict[str, list[Figures]] = field(default_factory=lambda: {s: [] for s in SIDES})

    def add(self, side: str, figures: Figures) -> None:
        self.passes[side].append(figures)

    def names(self) -> list[str]:
        seen: dict[str, None] = {}
        for f in self.passes["before"]:
            seen.update(dict.fromkeys(f.rates))
        return list(seen)

    def behaviour_differs(self) -> list[str]:
        out = []
        for i, (b, a) in enumerate(zip(self.passes["before"], self.passes["after"], strict=False), 1):
            if b.behaviour != a.behaviour:
                diff = [f"    before: {x}" for x in b.behaviour if x not in a.behaviour]
                diff += [f"    after:  {x}" for x in a.behaviour if x not in b.behaviour]
                out.append(f"  pass {i}:\n" + "\n".join(diff))
        return out

    def rows(self) -> list[str]:
        out = []
        for name in self.names():
            before = [f.rates[name] for f in self.passes["before"] if name in f.rates]
            after = [f.rates[name] for f in self.passes["after"] if name in f.rates]
            pairs = [
                f_a.rates[name] / f_b.rates[name]
                for f_b, f_a in zip(self.passes["before"], self.passes["after"], strict=False)
                if name in f_b.rates and name in f_a.rates
            ]
            if not pairs:
                continue
            out.append(f"| {name} | {_cell(before)} | {_cell(after)} | {statistics.median(pairs):.2f} "
                       f"({min(pairs):.2f}–{max(pairs):.2f}) |")  # fmt: skip
        return out


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def print_table(title: str, table: Table, rounds: int) -> None:
    print(f"\n== {title}: median (min–max) over {rounds} rounds; after / before: median of the per-round ratios ==")
    print("| figure | before | after | after / before |")
    print("|---|---:|---:|---:|")
    for row in table.rows():
        print(row)
    if any(f.behaviour for f in table.passes["before"]):
        differs = table.behaviour_differs()
        print(
            "what the processors did: "
            + ("the same in every round" if not differs else "DIFFERS\n" + "\n".join(differs))
        )


# -- main ----------------------------------------------------------------------------------------------
def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def checkouts(args: argparse.Namespace) -> list[Checkout]:
    out = []
    for side, root in (("before", args.before), ("after", args.after)):
        root = root.resolve()
        python = root / ".venv" / "bin" / "python"
        if not python.exists():
            raise SystemExit(f"--{side} {root}: no {python}; make it: cd {root} && python3 -m venv .venv && "
                             ".venv/bin/pip install -e '.[test]'")  # fmt: skip
        shipped = root / "conf" / "tracelake.yaml"
        settings = like_for_like(shipped) if args.settings == "like" else {}
        out.append(Checkout(side, root, throughput.ServerCode.checkout(root, settings)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="the checkout before the change (with its .venv)")
    ap.add_argument("--after", type=Path, default=REPO, help="the checkout after (default: this one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parts", default="processors,throughput")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--chains", default="empty,pattern", help="throughput.py chains for (2)")
    ap.add_argument("--processes", default="1,auto")
    ap.add_argument("--traces", type=int, default=8000, help="traces per shape in (2)")
    ap.add_argument("--warmup-traces", type=int, default=300)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--bench-traces", type=int, default=6000, help="traces for the processor benchmarks")
    ap.add_argument("--ner-traces", type=int, default=400, help="redact_bench's NER chain")
    ap.add_argument("--pending", type=int, default=10000, help="tail_sampling_bench's pending traces (memory)")
    ap.add_argument("--settings", choices=["like", "shipped"], default="like")
    ap.add_argument("--seed", type=int, default=0, help="throughput traffic")
    args = ap.parse_args(argv)
    args.shapes, parts = _list(args.shapes), _list(args.parts)
    sides = checkouts(args)
    pool = use_server_memory_pool()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; Arrow memory pool {pool}; "
          f"started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")  # fmt: skip
    for c in sides:
        rev = subprocess.run(["git", "-C", str(c.root), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
        print(f"{c.side:<7} {c.root}  {rev.stdout.strip()[:100]}")
        if "throughput" in parts:
            print(f"        settings over its shipped config: {c.code.settings or 'none'}")
    tables: dict[str, Table] = {}
    t_start = time.monotonic()
    if "processors" in parts:
        for rnd in range(args.rounds):
            order = sides if rnd % 2 == 0 else sides[::-1]
            for bench in BENCHES:
                for c in order:
                    t0 = time.monotonic()
                    figures = run_bench(c, bench, args)
                    tables.setdefault(bench.script, Table()).add(c.side, figures)
                    shown = ", ".join(f"{k.split(' ', 1)[1]} {v:,.0f}" for k, v in list(figures.rates.items())[:4])
                    print(f"round {rnd + 1} {c.side:<6} {bench.script:<23} {time.monotonic() - t0:5.0f}s  {shown} …",
                          flush=True)  # fmt: skip
    others: list[float] = []
    if "throughput" in parts:
        workdir = Path(tempfile.mkdtemp(prefix="tracelake-before-after-"))
        try:
            traffic = {
                s: throughput.prepare(s, args.traces, args.seed, workdir, args.warmup_traces) for s in args.shapes
            }
            for s, t in traffic.items():
                print(f"{s}: {t.spans:,} spans in {t.traces:,} traces (+{t.warm_spans:,} warm-up)")
            print(throughput.HEAD)
            k = 0
            for rnd in range(args.rounds):
                order = sides if rnd % 2 == 0 else sides[::-1]
                for shape in args.shapes:
                    for chain in _list(args.chains):
                        for proc in _list(args.processes):
                            for c in order:
                                k += 1
                                figures, run = run_server(c, traffic[shape], chain, proc, args, workdir / f"run{k}")
                                tables.setdefault("tracelake run", Table()).add(c.side, figures)
                                others.append(run.others)
                                print(f"{throughput.line(run)}  round {rnd + 1} {c.side}", flush=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    minutes = (time.monotonic() - t_start) / 60
    print(f"\nfinished {time.strftime('%Y-%m-%d %H:%M:%S %Z')} after {minutes:.0f} min; load average now "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    if others:
        print(f"other people's work during the timed bursts: {statistics.median(others):.2f} cores median "
              f"({min(others):.2f}–{max(others):.2f}) of {os.cpu_count()}")  # fmt: skip
    for title, table in tables.items():
        print_table(title, table, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
