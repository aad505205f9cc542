"""Lake maintenance: compaction (`compact.py`, `background.py`), retention (`retention.py`),
forgetting a user (`forget.py`), saved investigations (`saved_queries.py`).

The lake's layout (hour partitions, file names, replaced files) is sinks/parquet/layout.py, shared with the
sink and the query views. This module holds a per-lake lock so that two maintenance runs (in any
process: the background compactor of each server writing the lake, `tracelake compact`, retention,
forget) never rewrite or delete the same partition at once (on object storage: a lease object taken with a
conditional write, object_lock.py). Writers (`tracelake run` / workers) never take the lock: maintenance is built
to be safe while they write.

Readers take no lock either. Compaction keeps the files it replaced for a grace period, hidden
from new listings (sinks/parquet/layout.py, "Replaced files"), so a query never fails for a file
compaction removed unless it runs longer than that. Retention removes whole hours: a query that
listed one of its files a moment before fails with "Cannot open file … No such file or directory" —
loudly, never with partial rows — and succeeds when run again; `retry_vanished` runs a query again in that case.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import duckdb

from sinks.parquet.layout import Lake

T = TypeVar("T")

# Tables that retention and `tracelake compact` manage. The holdback area is the worker's: it expires it itself;
# the background compactor merges it too.
TABLES = ("spans", "traces", "feedback")
LOCK_NAME = ".maintenance.lock"


class MaintenanceBusy(RuntimeError):
    pass


@contextlib.contextmanager
def maintenance_lock(lake: Path | Lake, wait_s: float = 0.0) -> Iterator[None]:
    """An exclusive flock on `<lake>/.maintenance.lock` (a lake directory), or on object storage a lease object
    taken with a conditional write (object_lock.py), waited for up to `wait_s`."""
    if isinstance(lake, Lake):
        if lake.remote:
            from pipeline.maintenance.object_lock import object_lock

            with object_lock(lake, wait_s):
                yield
            return
        lake = Path(lake.root)
    path = Path(lake) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise MaintenanceBusy(f"another compaction or retention run holds {path}") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def vanished_file(error: BaseException) -> bool:
    """True for DuckDB's error when a listed file was deleted before the scan opened it."""
    text = str(error)
    return isinstance(error, duckdb.IOException) and (
        ("Cannot open file" in text and "No such file" in text) or "No files found that match the pattern" in text
    )


def retry_vanished(query: Callable[[], T], attempts: int = 3) -> T:
    """Run `query` (which must list the lake's files itself, e.g. a query on `pipeline.query.connect`'s
    views) again when compaction or retention removed a file between its listing and its reading."""
    for attempt in range(1, attempts + 1):
        try:
            return query()
        except duckdb.Error as e:
            if attempt == attempts or not vanished_file(e):
                raise
    raise AssertionError("unreachable")
