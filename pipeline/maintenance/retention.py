"""Retention: delete whole hour partitions (`dt=…/hour=…`) older than each table's age.

Ages are per table because the tables age differently: `spans` (every attribute, prompt and
completion: big, and what privacy rules limit) is hot data for days or weeks, while `traces`
summaries and `feedback` are small and keep cost, latency and quality trends answerable for a year.

A partition goes when its whole hour ended more than the age ago, so no row younger than the age is
ever deleted. The hour directory is first renamed out of the table (into `<lake>/.trash/`, which no
view globs) and then removed: a reader sees the whole hour or none of it, never half a directory.
An emptied `dt=` directory is removed too. On object storage (no rename) one record retiring every file of the
hour hides it from new listings at once, then its objects are deleted (sinks/parquet/layout.py `drop_partition`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pipeline.maintenance import TABLES, maintenance_lock
from sinks.parquet import layout, trace_index


@dataclass(frozen=True)
class RemovedPartition:
    table: str
    partition: str  # dt=YYYY-MM-DD/hour=HH
    path: str
    files: int
    bytes: int

    def line(self, dry_run: bool = False) -> str:
        verb = "would remove" if dry_run else "removed"
        return f"{verb} {self.table}/{self.partition} ({self.files} files, {self.bytes:,} B)"


def apply_retention(
    lake: str | Path | layout.Lake,
    ages_s: Mapping[str, float | None],
    *,
    now_s: float | None = None,
    dry_run: bool = False,
    lock_wait_s: float = 30.0,
) -> list[RemovedPartition]:
    """Delete each table's hour partitions that ended more than `ages_s[table]` seconds ago.

    A table missing from `ages_s`, or with age None, is kept forever."""
    lake = layout.open_lake(lake)
    for table in ages_s:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}: expected one of {', '.join(TABLES)}")
    if not lake.remote and not Path(lake.root).is_dir():
        return []
    now_s = time.time() if now_s is None else now_s
    removed: list[RemovedPartition] = []
    emptied: set[date] = set()  # days that lost `traces` / `feedback` hours: their trace-id index is updated
    with maintenance_lock(lake, lock_wait_s):
        if not dry_run and not lake.remote:
            layout.empty_trash(lake.root)  # left over by a run that crashed between rename and delete
        for table in TABLES:
            age = ages_s.get(table)
            if age is None:
                continue
            for part in layout.hour_partitions(lake, table):
                if not part.closed_before(now_s - age):
                    continue
                if part.remote:
                    objects = dict(part.objects)
                else:
                    objects = {p.name: p.stat().st_size for p in part.path.rglob("*") if p.is_file()}
                files = sum(name.endswith(".parquet") for name in objects)
                removed.append(
                    RemovedPartition(table, part.name, lake.url(str(part.path)), files, sum(objects.values()))
                )
                if not dry_run:
                    layout.drop_partition(lake, part, time.time())
                    if table in trace_index.INDEXED_TABLES:
                        emptied.add(part.start.date())
        indexed = trace_index.index_objects(lake) if emptied else {}
        for day in sorted(emptied & set(indexed)):
            trace_index.update_day(lake, day, indexed[day])
    return removed
