"""Files compaction replaced: readable for a grace period, invisible to new readers, then deleted.

A query lists a table's files when it starts and opens them while it runs. If compaction deleted
its inputs as soon as their outputs were in place, a query that listed an input a moment earlier
would fail with "No such file". So compaction retires its inputs instead of deleting them:

1. the outputs are renamed into the partition directory (and the directory fsynced);
2. a replacement record `.replaced-<digest>.json` is written next to them (temp name, fsync,
   rename): which inputs the outputs replace, and when;
3. `compaction.grace` later (the next compaction run after that) the inputs are deleted, then the
   record. Records of a partition expire oldest first, so a record's outputs always exist while
   the record does (an output retired by a later run outlives this record).

Readers list a partition with `live_files`: every `*.parquet` file except the inputs named by a
record whose outputs are all in the same listing. A reader therefore sees the inputs (listed before
step 2) or the outputs, never neither; when it sees both (a listing between steps 1 and 2, or a
listing that missed a record) the views' de-duplication reads each row once. The files a listing
returns stay on disk for at least the grace period, so a query shorter than that never meets a
deleted file. Retired files are not hidden from raw `read_parquet('…/*.parquet')` globs, which read
them twice during the grace period (as they may read replay duplicates).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from core import schema
from pipeline.maintenance import fsync_dir

RECORD_PREFIX = ".replaced-"
_RECORD = re.compile(r"^\.replaced-([0-9a-f]{16})\.json$")
LISTING_ATTEMPTS = 5


@dataclass(frozen=True)
class Replacement:
    """One compaction of one partition: `outputs` hold every row of `inputs`, since `replaced_at`."""

    directory: Path
    digest: str
    replaced_at: float  # unix seconds
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def path(self) -> Path:
        return self.directory / f"{RECORD_PREFIX}{self.digest}.json"


class _RecordVanished(Exception):
    """A record listed a moment ago was expired (its inputs deleted) before it could be read."""


def write_record(record: Replacement) -> None:
    """Make the inputs invisible to new listings (the outputs must already be in place)."""
    body = json.dumps(
        {"replaced_at": record.replaced_at, "inputs": list(record.inputs), "outputs": list(record.outputs)}
    ).encode()
    tmp = record.directory / f"{record.path.name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, record.path)
    fsync_dir(record.directory)


def _read_record(directory: Path, name: str) -> Replacement | None:
    m = _RECORD.match(name)
    if m is None:
        return None
    try:
        data = json.loads((directory / name).read_bytes())
        return Replacement(
            directory, m.group(1), float(data["replaced_at"]), tuple(data["inputs"]), tuple(data["outputs"])
        )
    except FileNotFoundError:
        raise _RecordVanished(name) from None
    except (ValueError, KeyError, TypeError):
        return None  # not ours or damaged: hides nothing, so readers may see duplicates, never lose rows


def records(directory: Path) -> list[Replacement]:
    """The partition's replacement records, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        with contextlib.suppress(_RecordVanished):
            rec = _read_record(directory, name)
            if rec is not None:
                found.append(rec)
    return sorted(found, key=lambda r: (r.replaced_at, r.digest))


def expire(directory: Path, grace_s: float, now_s: float) -> list[Replacement]:
    """Delete the inputs of records older than the grace period, then the records (oldest first;
    stops at the first record still in its grace period). Caller holds the maintenance lock."""
    done = []
    for rec in records(directory):
        if rec.replaced_at + grace_s > now_s:
            break
        for name in rec.inputs:
            (directory / name).unlink(missing_ok=True)
        fsync_dir(directory)
        rec.path.unlink(missing_ok=True)
        done.append(rec)
    if done:
        fsync_dir(directory)
    return done


def live_files(directory: Path) -> list[Path]:
    """The partition's Parquet files a new reader should read: all but retired compaction inputs."""
    for _ in range(LISTING_ATTEMPTS):
        try:
            names = os.listdir(directory)
        except FileNotFoundError:  # retention removed the hour
            return []
        parquet = {n for n in names if n.endswith(".parquet") and not n.startswith(".")}
        retired: set[str] = set()
        try:
            for name in names:
                rec = _read_record(directory, name)
                if rec is not None and parquet.issuperset(rec.outputs):
                    retired.update(rec.inputs)
        except _RecordVanished:
            continue  # its inputs may be gone too, and in our listing: list again
        return [directory / n for n in sorted(parquet - retired)]
    raise OSError(f"{directory}: compaction records kept changing while listing the partition")


def table_files(lake: Path, table: str) -> list[Path]:
    """Every live Parquet file of a table, partition by partition (`dt=…/hour=…` order)."""
    root = Path(lake) / schema.TABLE_DIRS[table]
    files: list[Path] = []
    for directory in sorted(root.glob("*/*")):
        if directory.is_dir():
            files.extend(live_files(directory))
    return files
