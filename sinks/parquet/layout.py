"""The lake's layout: where each table's files live, what they are called, and which of them a reader reads.

One module for what the sink writes and what compaction, retention, forget, gc and the query views read
(docs/design.md contract 2), so that a name or a rule is written once:

- tables: `<lake>/<table dir>/dt=YYYY-MM-DD/hour=HH/<file>.parquet`, the hour the row's start time (feedback:
  its time) falls in, UTC (`partition_keys`, `hour_partitions`, `HIVE_TYPES`);
- identity: which columns make a row the same row (`IDENTITY`, with `TIE_BREAK` choosing the copy the views
  and compaction keep) and which name a sink's file (`DIGEST_COLUMNS`, `data_file_name`);
- files: the sink's `part-<digest>` / `<source>-<first>-<last>-<digest>` files, compaction's `compacted-` and
  `merged-` outputs (`output_name`), dot-prefixed temp files (`temp_path`, swept by `sweep_temp_files`);
- replaced files: compaction retires its inputs with a record instead of deleting them at once, and a reader
  lists a partition with `live_files` (see "Replaced files" below).

Replaced files. A query lists a table's files when it starts and opens them while it runs. If compaction
deleted its inputs as soon as their outputs were in place, a query that listed an input a moment earlier
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
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core import schema
from sinks.parquet.config import S3Options, lake_scheme

log = logging.getLogger("tracelake.sink.parquet")

# -- identity ---------------------------------------------------------------------------------------
# What makes two rows the same row, as the views de-duplicate them and compaction drops replays (held-back
# spans: as the worker does when it promotes them). Of the copies, the one with the lowest TIE_BREAK is kept.
IDENTITY = {
    "spans": ("trace_id", "span_id"),
    "traces": ("trace_id", "part_id"),
    "feedback": ("trace_id", "span_id", "name", "time", "source"),
    "holdback": ("trace_id", "span_id"),
}
TIE_BREAK = "lake_source"
# The columns whose values name a sink's file: the same rows always get the same name.
DIGEST_COLUMNS = {
    "spans": ("trace_id", "span_id", "lake_source"),
    "holdback": ("trace_id", "span_id", "lake_source"),
    "traces": ("trace_id", "part_id"),
    "feedback": ("trace_id", "time", "name", "lake_source"),
}


def sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def dedup_clause(table: str) -> str:
    """DuckDB's QUALIFY keeping one row per identity (the lowest TIE_BREAK), as the views and compaction do."""
    identity = ", ".join(sql_ident(c) for c in IDENTITY[table])
    return f"QUALIFY row_number() OVER (PARTITION BY {identity} ORDER BY {sql_ident(TIE_BREAK)}) = 1"


# -- partitions ---------------------------------------------------------------------------------------
HOUR_S = 3600.0
PARTITION_FORMAT = "dt=%Y-%m-%d/hour=%H"
# the hive columns a reader gets from the directory names
HIVE_TYPES = {"dt": "DATE", "hour": "INTEGER"}


def table_dir(lake: str | Path, table: str) -> Path:
    return Path(lake) / schema.TABLE_DIRS[table]


def partition_keys(rows: pa.Table, table: str) -> pa.Array:
    """Each row's partition directory (`dt=…/hour=…`), relative to its table's directory."""
    return pc.strftime(rows.column(schema.PARTITION_TIME_COLUMN[table]), format=PARTITION_FORMAT)


def parse_hour(dt_name: str, hour_name: str) -> datetime | None:
    """The UTC start of the hour that directories `dt=YYYY-MM-DD` / `hour=HH` hold; None for other names."""
    if not (dt_name.startswith("dt=") and hour_name.startswith("hour=")):
        return None
    try:
        return datetime.strptime(f"{dt_name[3:]} {hour_name[5:]}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class HourPartition:
    table: str
    path: Path  # the directory; on object storage the key prefix in `lake.fs` (`bucket/prefix/<table>/dt=…/hour=…`)
    start: datetime  # UTC; the partition holds rows with start_time / time in [start, start + 1h)
    lake: Lake | None = None  # set on object storage
    objects: tuple[tuple[str, int], ...] = ()  # object storage: (name, size) of each object, as listed

    @property
    def remote(self) -> bool:
        return self.lake is not None and self.lake.remote

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def end_s(self) -> float:
        return self.start.timestamp() + HOUR_S

    def closed_before(self, cutoff_s: float) -> bool:
        """True when the whole hour lies before `cutoff_s` (unix seconds)."""
        return self.end_s <= cutoff_s


def hour_partitions(
    lake: str | Path | Lake, table: str, lo_s: float | None = None, hi_s: float | None = None
) -> list[HourPartition]:
    """The table's `dt=…/hour=…` directories (prefixes on object storage), oldest first; directories with other
    names are ignored. With `lo_s` / `hi_s` (unix seconds), only the hours overlapping [lo_s, hi_s), and only the
    days that hold them are listed: one listing of the table's `dt=` names, then one per day."""
    if isinstance(lake, Lake):
        if lake.remote:
            return _object_partitions(lake, table, lo_s, hi_s)
        lake = lake.root
    out = []
    for day in table_dir(lake, table).glob("dt=*"):
        if not day_overlaps(day.name, lo_s, hi_s):
            continue
        for d in day.glob("hour=*"):
            start = parse_hour(day.name, d.name)
            if start is not None and _hour_overlaps(start, lo_s, hi_s) and d.is_dir():
                out.append(HourPartition(table, d, start))
    return sorted(out, key=lambda p: (p.start, str(p.path)))


def day_overlaps(dt_name: str, lo_s: float | None, hi_s: float | None) -> bool:
    """Whether a `dt=YYYY-MM-DD` directory may hold hours overlapping [lo_s, hi_s) (other names: yes)."""
    if lo_s is None and hi_s is None:
        return True
    start = parse_hour(dt_name, "hour=00")
    if start is None:
        return True
    return (lo_s is None or start.timestamp() + 24 * HOUR_S > lo_s) and (hi_s is None or start.timestamp() < hi_s)


def _hour_overlaps(start: datetime, lo_s: float | None, hi_s: float | None) -> bool:
    s = start.timestamp()
    return (lo_s is None or s + HOUR_S > lo_s) and (hi_s is None or s < hi_s)


def stored_files(lake: str | Path | Lake, table: str) -> list[Path]:
    """Every Parquet file of the table, retired compaction inputs included (what must be rewritten to forget);
    on object storage, paths in `lake.fs` (`Lake.url` makes them what DuckDB opens)."""
    if isinstance(lake, Lake):
        if lake.remote:
            return [p.path / n for p in _object_partitions(lake, table) for n, _ in p.objects if _is_data(n)]
        lake = lake.root
    return sorted(table_dir(lake, table).glob("dt=*/hour=*/*.parquet"))


def _is_data(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith(".")


# -- file names ---------------------------------------------------------------------------------------
FULL_PREFIX = "compacted-"  # a closed hour's one sorted compaction run
TIER_PREFIX = "merged-"  # a size-tiered merge of a recent hour, or of late files next to a run
_OUTPUT = re.compile(r"^(compacted|merged)-([0-9a-f]{16})-\d{3}\.parquet$")


def file_digest(rows: pa.Table, table: str) -> str:
    """A digest of the rows' DIGEST_COLUMNS: the same rows in the same order give the same digest."""
    h = hashlib.sha256(table.encode())
    for name in DIGEST_COLUMNS[table]:
        col = rows.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        for chunk in col.cast(pa.string()).chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(buf)
    return h.hexdigest()[:24]


def data_file_name(rows: pa.Table, table: str, source: str | None, offsets: tuple[int, int] | None) -> str:
    """The sink's name for a file of these (sorted) rows: a replay of the same offsets rewrites the same name."""
    digest = file_digest(rows, table)
    if source is not None and offsets is not None:
        first, last = offsets  # topic-partition-first-last
        return f"{source.replace('/', '-')}-{first:012d}-{last:012d}-{digest[:12]}.parquet"
    return f"part-{digest}.parquet"


def output_name(prefix: str, digest: str, index: int) -> str:
    """The `index`-th output file of a compaction run."""
    return f"{prefix}{digest}-{index:03d}.parquet"


def full_run_digest(name: str) -> str | None:
    """The run digest of a closed hour's full-merge output (`compacted-…`), else None."""
    m = _OUTPUT.match(name)
    return m.group(2) if m and m.group(1) == "compacted" else None


# -- temp files ---------------------------------------------------------------------------------------
HOST = socket.gethostname().replace(".", "_")
STALE_TEMP_AGE_S = 3600.0  # no single file write takes an hour; anything older is debris
_TEMP = re.compile(r"^\..+\.([^.]+)\.(\d+)\.tmp$")  # .<final name>.<host>.<pid>.tmp


def temp_path(final: Path) -> Path:
    """Where `final` is written before it is renamed into place: dot-prefixed, so no `*.parquet` glob and no
    listing reads it, and named after this host and process, so a sweep knows whether its writer is gone."""
    return final.with_name(f".{final.name}.{HOST}.{os.getpid()}.tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (ours included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temp_files(root: Path, now_s: float | None = None, recursive: bool = True) -> int:
    """Remove temp files a killed writer left behind under `root` (only in `root` itself unless `recursive`).

    A temp file is debris when its writer was on this host and that pid is gone, or when it is older than
    an hour (a writer on another host sharing the lake). Readers never see temp files, so this only
    reclaims space."""
    if not root.exists():
        return 0
    now_s = time.time() if now_s is None else now_s
    removed = 0
    for tmp in root.rglob(".*.tmp") if recursive else root.glob(".*.tmp"):
        m = _TEMP.match(tmp.name)
        try:
            mine_and_dead = m is not None and m.group(1) == HOST and not pid_alive(int(m.group(2)))
            if mine_and_dead or now_s - tmp.stat().st_mtime > STALE_TEMP_AGE_S:
                tmp.unlink()
                removed += 1
        except (OSError, ValueError):
            continue
    if removed:
        log.info("removed %d temp files left by an earlier writer under %s", removed, root)
    return removed


def fsync_dir(path: Path) -> None:
    """Make renames/unlinks in `path` durable (a rename is only on disk once its directory is)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def durable_output(final: Path, sync_dir: bool = True) -> Iterator[BinaryIO]:
    """A file to write `final` through, whole or not at all: a temp file, fsynced and renamed into place on
    success (the directory fsynced too unless `sync_dir` is off), removed on any failure."""
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    if sync_dir:
        fsync_dir(final.parent)


# -- replaced files -------------------------------------------------------------------------------------
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
    body = {"replaced_at": record.replaced_at, "inputs": list(record.inputs), "outputs": list(record.outputs)}
    with durable_output(record.path) as fh:
        fh.write(json.dumps(body).encode())


def _read_record(directory: Path, name: str, read: Callable[[str], bytes] | None = None) -> Replacement | None:
    """The record `name` of a partition (read from `directory`, or with `read(name)`); None for other names."""
    m = _RECORD.match(name)
    if m is None:
        return None
    try:
        data = json.loads(read(name) if read is not None else (directory / name).read_bytes())
        return Replacement(
            directory, m.group(1), float(data["replaced_at"]), tuple(data["inputs"]), tuple(data["outputs"])
        )
    except FileNotFoundError:
        raise _RecordVanished(name) from None
    except (ValueError, KeyError, TypeError):
        return None  # not ours or damaged: hides nothing, so readers may see duplicates, never lose rows


def _live_names(directory: Path, names: list[str], read: Callable[[str], bytes] | None = None) -> list[str]:
    """Of a partition's listing, the Parquet files to read: all but inputs retired by a complete record."""
    parquet = {n for n in names if _is_data(n)}
    retired: set[str] = set()
    for name in names:
        rec = _read_record(directory, name, read)
        if rec is not None and parquet.issuperset(rec.outputs):
            retired.update(rec.inputs)
    return sorted(parquet - retired)


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


def expire_records(directory: Path, grace_s: float, now_s: float) -> list[Replacement]:
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
        try:
            return [directory / n for n in _live_names(directory, names)]
        except _RecordVanished:
            continue  # its inputs may be gone too, and in our listing: list again
    raise OSError(f"{directory}: compaction records kept changing while listing the partition")


def table_files(lake: str | Path, table: str) -> list[Path]:
    """Every live Parquet file of a table, partition by partition (`dt=…/hour=…` order)."""
    files: list[Path] = []
    for directory in sorted(table_dir(lake, table).glob("*/*")):
        if directory.is_dir():
            files.extend(live_files(directory))
    return files


def read_rows(lake: str | Path | Lake, table: str, trace_ids: list[str]) -> pa.Table:
    """The stored rows of these traces in the table's live files, replays included (in file order)."""
    lake = open_lake(lake)
    files = lake_files(lake, table) if trace_ids else []
    if not files:
        return schema.empty(table)
    dataset = ds.dataset(
        [lake.fs_path(f) for f in files],
        format="parquet",
        partitioning="hive",
        partition_base_dir=lake.table_root(table),
        filesystem=lake.fs,
    )
    wanted = schema.TABLES[table]
    columns = [c for c in wanted.names if c in dataset.schema.names]  # files from before a column existed
    found = dataset.to_table(columns=columns, filter=ds.field("trace_id").isin(pa.array(trace_ids, pa.string())))
    return schema.conform(found, wanted)


TRASH = ".trash"


def remove_partition(lake: str | Path, part: HourPartition) -> None:
    """Delete a whole hour: renamed out of the table first (into `<lake>/.trash/`, which no reader lists),
    so a reader sees the whole hour or none of it; then the emptied `dt=` directory goes too."""
    trash = Path(lake) / TRASH
    trash.mkdir(exist_ok=True)
    hour_dir = part.path
    target = trash / f"{part.table}.{hour_dir.parent.name}.{hour_dir.name}.{os.getpid()}.{time.time_ns()}"
    os.replace(hour_dir, target)  # atomic: readers see the hour or nothing
    fsync_dir(hour_dir.parent)
    shutil.rmtree(target, ignore_errors=True)
    with contextlib.suppress(OSError):
        hour_dir.parent.rmdir()  # the dt= directory, once its last hour is gone


def empty_trash(lake: str | Path) -> None:
    """What a run that crashed between `remove_partition`'s rename and delete left behind."""
    for p in (Path(lake) / TRASH).glob("*"):
        shutil.rmtree(p, ignore_errors=True)


# -- where the lake lives ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lake:
    """A lake's location: a local directory (os calls: temp file, fsync, rename) or an S3 prefix (pyarrow.fs:
    an object appears whole when its upload completes, so files are written straight to their final key)."""

    location: str  # as configured
    root: str  # the directory, or `bucket/prefix`
    fs: pafs.FileSystem | None = None  # None: a local directory
    s3: S3Options | None = None  # how `fs` was made (the maintenance lock's conditional writes use the same)

    @property
    def remote(self) -> bool:
        return self.fs is not None

    def table_root(self, table: str) -> str:
        return f"{self.root}/{schema.TABLE_DIRS[table]}"

    def url(self, fs_path: str) -> str:
        """What DuckDB opens and logs show: the local path, or `s3://bucket/key`."""
        return f"s3://{fs_path}" if self.remote else fs_path

    def fs_path(self, url: str | Path) -> str:
        url = str(url)
        return url.removeprefix("s3://") if self.remote else url

    @property
    def artifact_store(self) -> str:
        """The default artifact store, `<lake>/_artifacts` (an `s3://` URI on object storage)."""
        return f"{self.location.rstrip('/')}/_artifacts"

    def __str__(self) -> str:
        return self.location


def open_lake(location: str | Path | Lake, s3: S3Options | None = None) -> Lake:
    """The lake at a configured path (`sinks.parquet.path`, `--lake`): a directory, `file://…` or `s3://…`."""
    if isinstance(location, Lake):
        return location
    text = str(location)
    if lake_scheme(text) == "s3":
        from sinks.parquet.object_store import s3_filesystem

        s3 = s3 or S3Options()
        return Lake(text, text[len("s3://") :].rstrip("/"), s3_filesystem(s3), s3)
    return Lake(text, str(Path(text.removeprefix("file://"))))


def lake_files(lake: Lake, table: str, lo_s: float | None = None, hi_s: float | None = None) -> list[str]:
    """The table's live files (of the hours overlapping [lo_s, hi_s) when given), as the paths or `s3://` URLs
    DuckDB opens."""
    if not lake.remote and lo_s is None and hi_s is None:
        return [str(p) for p in table_files(lake.root, table)]
    return [lake.url(str(f)) for part in hour_partitions(lake, table, lo_s, hi_s) for f in live_paths(part)]


# -- partitions on object storage ---------------------------------------------------------------------------
# There is no rename and no directory on S3: a partition is a key prefix, a file appears whole when its upload
# completes, and the replaced-files records above are objects like any other (one PUT each). Retention retires a
# whole hour with one record naming every file and no outputs, so a new listing sees the hour whole or not at all.


def _object_partitions(
    lake: Lake, table: str, lo_s: float | None = None, hi_s: float | None = None
) -> list[HourPartition]:
    """The table's hours on object storage: one listing of the table's prefix; within [lo_s, hi_s), one listing
    of its `dt=` names and one of each day in range (a time range never lists the rest of the table)."""
    assert lake.fs is not None
    root = lake.table_root(table)
    if lo_s is None and hi_s is None:
        roots = [root]
    else:
        names = lake.fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        roots = sorted(
            i.path for i in names if i.type == pafs.FileType.Directory and day_overlaps(i.base_name, lo_s, hi_s)
        )
    by_dir: dict[str, list[tuple[str, int]]] = {}
    for listed in roots:
        selector = pafs.FileSelector(listed, recursive=True, allow_not_found=True)
        for info in lake.fs.get_file_info(selector):
            if info.type == pafs.FileType.File:
                directory, _, name = info.path.rpartition("/")
                by_dir.setdefault(directory, []).append((name, int(info.size or 0)))
    out = []
    for directory, objects in by_dir.items():
        start = _hour_of(directory)
        if start is not None and _hour_overlaps(start, lo_s, hi_s):
            out.append(HourPartition(table, Path(directory), start, lake, tuple(sorted(objects))))
    return sorted(out, key=lambda p: (p.start, str(p.path)))


def _relist(part: HourPartition) -> HourPartition:
    """The partition as it is now (one listing of its prefix)."""
    assert part.lake is not None and part.lake.fs is not None
    selector = pafs.FileSelector(str(part.path), allow_not_found=True)
    infos = part.lake.fs.get_file_info(selector)
    objects = tuple(sorted((i.base_name, int(i.size or 0)) for i in infos if i.type == pafs.FileType.File))
    return HourPartition(part.table, part.path, part.start, part.lake, objects)


def _reader(part: HourPartition) -> Callable[[str], bytes]:
    assert part.lake is not None and part.lake.fs is not None
    fs = part.lake.fs

    def read(name: str) -> bytes:
        with fs.open_input_stream(str(part.path / name), compression=None) as fh:
            return bytes(fh.read())

    return read


def live_paths(part: HourPartition) -> list[Path]:
    """`live_files` of a partition of any lake (paths in `lake.fs` on object storage)."""
    if not part.remote:
        return live_files(part.path)
    for _ in range(LISTING_ATTEMPTS):
        try:
            return [part.path / n for n in _live_names(part.path, [n for n, _ in part.objects], _reader(part))]
        except _RecordVanished:  # compaction expired a record after our listing: its inputs may be gone too
            part = _relist(part)
    raise OSError(f"{part.path}: compaction records kept changing while listing the partition")


def file_sizes(part: HourPartition, files: list[Path]) -> dict[Path, int]:
    """The size of each of `files` still there (a local file replaced by a replay this instant is left out)."""
    if part.remote:
        listed = dict(part.objects)
        return {f: listed[f.name] for f in files if f.name in listed}
    sizes = {}
    for f in files:
        with contextlib.suppress(FileNotFoundError):
            sizes[f] = f.stat().st_size
    return sizes


def partition_records(part: HourPartition) -> list[Replacement]:
    """`records` of a partition of any lake, oldest first."""
    if not part.remote:
        return records(part.path)
    read = _reader(part)
    found = []
    for name, _size in part.objects:
        with contextlib.suppress(_RecordVanished):
            rec = _read_record(part.path, name, read)
            if rec is not None:
                found.append(rec)
    return sorted(found, key=lambda r: (r.replaced_at, r.digest))


def put_record(part: HourPartition, record: Replacement) -> None:
    """`write_record` on any lake: on object storage one PUT, whole or not at all."""
    if not part.remote:
        write_record(record)
        return
    assert part.lake is not None
    body = {"replaced_at": record.replaced_at, "inputs": list(record.inputs), "outputs": list(record.outputs)}
    put_file(part.lake, str(record.path), pa.py_buffer(json.dumps(body).encode()))


def expire_partition(part: HourPartition, grace_s: float, now_s: float) -> list[Replacement]:
    """`expire_records` on any lake (object storage: the partition listed again first). Caller holds the lock."""
    if not part.remote:
        return expire_records(part.path, grace_s, now_s)
    assert part.lake is not None and part.lake.fs is not None
    done = []
    for rec in partition_records(_relist(part)):
        if rec.replaced_at + grace_s > now_s:
            break
        for name in (*rec.inputs, rec.path.name):  # the inputs first: the record hides them until they are gone
            with contextlib.suppress(FileNotFoundError):
                part.lake.fs.delete_file(str(part.path / name))
        done.append(rec)
    return done


def _hour_of(directory: str) -> datetime | None:
    """The hour a `…/dt=…/hour=…` prefix holds."""
    dt_dir, _, hour_name = directory.rpartition("/")
    return parse_hour(dt_dir.rpartition("/")[2], hour_name)


def drop_partition(lake: Lake, part: HourPartition, now_s: float) -> None:
    """Delete a whole hour so that a reader sees all of it or none of it: a directory is renamed out of the table
    (`remove_partition`); on object storage one record retiring every file of the hour (no outputs) hides them
    from new listings at once, then the files and the record are deleted key by key."""
    if not part.remote:
        remove_partition(lake.root, part)
        return
    names = tuple(sorted(n for n, _ in part.objects if _is_data(n)))
    digest = hashlib.sha256("\0".join((part.name, *names)).encode()).hexdigest()[:16]
    put_record(part, Replacement(part.path, digest, now_s, names, ()))
    expire_partition(part, 0.0, now_s + 1.0)
    assert lake.fs is not None
    for name, _size in _relist(part).objects:  # anything else left there: the hour is past its retention
        with contextlib.suppress(FileNotFoundError):
            lake.fs.delete_file(str(part.path / name))


def expire_hours(lake: Lake, table: str, cutoff_s: float) -> list[str]:
    """Delete the table's hours that ended before `cutoff_s`; returns where they were."""
    removed = []
    for part in hour_partitions(lake, table):
        if part.closed_before(cutoff_s):
            drop_partition(lake, part, time.time())
            removed.append(lake.url(str(part.path)))
    return removed


def upload_file(lake: Lake, local: Path, fs_path: str) -> None:
    """A local file as one object, whole (streamed: a multipart upload completed only after its last part)."""
    assert lake.fs is not None
    with open(local, "rb") as src, lake.fs.open_output_stream(fs_path, compression=None) as out:
        while chunk := src.read(8 * 2**20):
            out.write(chunk)


def put_table(lake: Lake, fs_path: str | Path, rows: pa.Table, sync_dir: bool = True, **options: Any) -> int:
    """`rows` as one Parquet file at `fs_path`, whole or not at all: one upload on object storage, a temp file
    fsynced and renamed on disk (the directory made if needed, and fsynced unless `sync_dir` is off). `options`
    go to `pq.write_table`; returns the file's size."""
    if lake.remote:
        out = pa.BufferOutputStream()
        pq.write_table(rows, out, **options)
        data = out.getvalue()
        put_file(lake, str(fs_path), data)
        return int(data.size)
    path = Path(fs_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with durable_output(path, sync_dir=sync_dir) as fh:
        pq.write_table(rows, fh, **options)
    return path.stat().st_size


def put_file(lake: Lake, fs_path: str, data: pa.Buffer) -> None:
    """One object, whole: uploaded in one go (completed only when every byte is there)."""
    assert lake.fs is not None
    with lake.fs.open_output_stream(fs_path) as out:
        out.write(data)
