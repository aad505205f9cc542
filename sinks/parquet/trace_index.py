"""The lake's trace-id index: which `traces` / `feedback` files hold a trace id, without opening them.

Trace ids are random, so no file's min/max statistics can rule one out, and a lookup that opens every file
reads a footer per object of the lake (on S3 a request or two each). Like Tempo's per-block bloom filters and
tenant index, the lake keeps, per day, one small Parquet object naming the files of that day's `traces` and
`feedback` hours and the trace ids each holds:

    <lake>/_index/trace_ids/dt=YYYY-MM-DD/<digest>.parquet
      key   uint64   the first 64 bits of a trace id (`id_keys`), sorted, in row groups of `ROW_GROUP_ROWS`
      file  uint32   which file: a position in the footer's `tracelake.covers` (a JSON list of paths relative
                     to the lake root, e.g. `traces/dt=2026-12-01/hour=10/compacted-….parquet`)

A lookup reads one footer and one row group per day (min/max statistics of the sorted `key` column name the
row group), then opens only the files that may hold the id, plus the live files no index covers (written
since the day's index was built: the open hours, a late file). The answer may name a file that does not hold
the id (two ids sharing 64 bits, or rows `forget` removed), never miss one.

Compaction builds a day's index (`update_day`) when it merged a closed hour of that day, or when the day has
closed hours and no index yet, under the lake's maintenance lock: the rows of the previous index whose files
are still live are kept, files not covered yet are read (their `trace_id` column only), the new object is
written whole under a name that digests what it covers, and then the older objects of the day are deleted.
Files are never changed in place but by `forget`, which only removes rows, so an index stays true for the
files it names; a reader that lists two objects of one day (between the write and the delete) uses both.
Retention updates the index of a day it removed hours of (`update_day` again: the day's rows for files
still there are kept, nothing is read); a day with no file left loses its index. `forget` updates the days
whose files it rewrote, reading those files again, so a forgotten trace's id leaves the index too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sinks.parquet import layout
from sinks.parquet.layout import Lake

log = logging.getLogger(__name__)

INDEX_DIR = "_index/trace_ids"
INDEXED_TABLES = ("traces", "feedback")
ROW_GROUP_ROWS = 16 * 1024
COVERS_KEY = b"tracelake.covers"
INDEX_SCHEMA = pa.schema([pa.field("key", pa.uint64(), nullable=False), pa.field("file", pa.uint32(), False)])

# -- keys: the first 64 bits of a trace id ------------------------------------------------------------------
# ASCII hex digit -> its value (anything else maps to 0: ids are validated lowercase hex elsewhere)
_HEX = np.zeros(256, np.uint64)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
_SHIFTS = np.arange(60, -4, -4, dtype=np.uint64)  # 16 nibbles, most significant first


def id_keys(ids: Sequence[str]) -> np.ndarray:
    """The first 64 bits of each 32-hex-digit trace id, as uint64."""
    raw = np.asarray(ids, dtype="S32")
    if raw.size == 0:
        return np.zeros(0, np.uint64)
    return _keys_of(raw.view(np.uint8).reshape(len(raw), 32))


def _keys_of(digits: np.ndarray) -> np.ndarray:
    """Rows of ASCII hex digits (n, >= 16) -> uint64 of the first 16."""
    return np.bitwise_or.reduce(_HEX[digits[:, :16]] << _SHIFTS, axis=1)


def column_keys(column: pa.ChunkedArray) -> np.ndarray:
    """id_keys of a Parquet `trace_id` column, straight from Arrow's buffers when every id is 32 bytes."""
    arr = column.combine_chunks().drop_null()
    if len(arr) == 0:
        return np.zeros(0, np.uint64)
    if pa.types.is_string(arr.type) and pc.all(pc.equal(pc.binary_length(arr), 32)).as_py():
        offsets = np.frombuffer(arr.buffers()[1], np.int32, len(arr) + 1, arr.offset * 4)
        data = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
        return _keys_of(data.reshape(len(arr), 32))
    return id_keys(arr.to_pylist())


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """np.unique for uint64 by sorting (numpy 2.4's np.unique hashes and is ~20x slower on millions)."""
    keys = np.sort(keys)
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if keys.size else keys


def common_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The keys in both sorted arrays."""
    small, big = (a, b) if a.size <= b.size else (b, a)
    if small.size == 0 or big.size == 0:
        return small[:0]
    pos = np.minimum(np.searchsorted(big, small), big.size - 1)
    return small[big[pos] == small]


def file_keys(lake: Lake, fs_path: str) -> np.ndarray:
    """The sorted, unique keys of one lake file (its `trace_id` column only); none when it is gone."""
    try:
        ids = pq.read_table(fs_path, columns=["trace_id"], filesystem=_fs(lake))
    except FileNotFoundError:
        return np.zeros(0, np.uint64)
    return sorted_unique(column_keys(ids.column("trace_id")))


# -- where the index lives -----------------------------------------------------------------------------------
def _fs(lake: Lake) -> pafs.FileSystem:
    return lake.fs if lake.fs is not None else pafs.LocalFileSystem()


def index_root(lake: Lake) -> str:
    return f"{lake.root}/{INDEX_DIR}"


def _day_of(dt_name: str) -> date | None:
    start = layout.parse_hour(dt_name, "hour=00")
    return start.date() if start is not None else None


def _day_start_s(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def index_objects(lake: Lake) -> dict[date, list[pafs.FileInfo]]:
    """Every index object, by day (one listing of `_index/trace_ids/`)."""
    selector = pafs.FileSelector(index_root(lake), recursive=True, allow_not_found=True)
    out: dict[date, list[pafs.FileInfo]] = {}
    for info in _fs(lake).get_file_info(selector):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
            continue
        day = _day_of(info.path.rpartition("/")[0].rpartition("/")[2])
        if day is not None and not info.base_name.startswith("."):
            out.setdefault(day, []).append(info)
    return out


def _relative(lake: Lake, fs_path: str) -> str:
    return fs_path[len(lake.root) + 1 :] if fs_path.startswith(lake.root + "/") else fs_path


def _day_files(lake: Lake, day: date) -> list[str]:
    """The live `traces` and `feedback` files of a day, as paths relative to the lake root."""
    lo = _day_start_s(day)
    return [
        _relative(lake, str(f))
        for table in INDEXED_TABLES
        for part in layout.hour_partitions(lake, table, lo, lo + 24 * layout.HOUR_S)
        for f in layout.live_paths(part)
    ]


# -- reading ---------------------------------------------------------------------------------------------------
class _DayIndex:
    """One index object, opened: its footer read (on S3 a HEAD for the size, then one ranged GET)."""

    def __init__(self, lake: Lake, info: pafs.FileInfo) -> None:
        self.path = info.path
        self._file = pq.ParquetFile(_fs(lake).open_input_file(info.path))
        self.covers: list[str] = json.loads((self._file.schema_arrow.metadata or {}).get(COVERS_KEY, b"[]"))

    def files_holding(self, wanted: np.ndarray) -> set[str]:
        """The covered files that may hold any of the (sorted) keys: only the row groups whose min/max admit
        one of them are read."""
        meta = self._file.metadata
        found: set[int] = set()
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(0).statistics
            if stats is not None and stats.has_min_max:
                lo, hi = np.uint64(stats.min), np.uint64(stats.max)
                if not ((wanted >= lo) & (wanted <= hi)).any():
                    continue
            rows = self._file.read_row_group(i, columns=["key", "file"])
            keys = rows.column("key").to_numpy()
            hit = np.isin(keys, wanted)
            found.update(int(f) for f in rows.column("file").to_numpy()[hit])
        return {self.covers[f] for f in found}

    def table(self) -> pa.Table:
        return self._file.read(columns=["key", "file"])


def covered_keys(lake: Lake) -> dict[str, np.ndarray]:
    """Every file the lake's index covers (paths relative to the lake root) with the keys it holds, sorted and
    unique: one whole read per index object instead of one per file (the UI's in-memory index starts from it)."""
    out: dict[str, np.ndarray] = {}
    for infos in index_objects(lake).values():
        for info in infos:
            try:
                day = _DayIndex(lake, info)
            except FileNotFoundError:
                continue
            rows = day.table()
            files, keys = rows.column("file").to_numpy(), rows.column("key").to_numpy()
            order = np.argsort(files, kind="stable")  # keys stay sorted within each file
            bounds = np.searchsorted(files[order], np.arange(len(day.covers) + 1))
            for i, name in enumerate(day.covers):
                out[name] = keys[order[bounds[i] : bounds[i + 1]]]
    return out


@dataclass(frozen=True)
class Candidates:
    """Where rows of some trace ids may be: per indexed table, the files to open (as DuckDB opens them)."""

    files: dict[str, list[str]]
    # the earliest hour (unix seconds) the index does not cover: a `traces` file no index names, or the hours
    # after the newest one an index covers; None when no index covers anything (every hour is uncovered)
    unindexed_since_s: float | None


INDEX_READERS = 8  # day indexes read at once (on S3 each is a HEAD and two ranged GETs of latency)


def _probe(lake: Lake, info: pafs.FileInfo, wanted: np.ndarray) -> tuple[list[str], set[str]] | None:
    """(what a day index covers, which of those may hold the keys); None when it was replaced since the listing."""
    try:
        day = _DayIndex(lake, info)
    except FileNotFoundError:
        return None
    return day.covers, day.files_holding(wanted)


def candidate_files(
    lake: Lake, trace_ids: Sequence[str], lo_s: float | None = None, hi_s: float | None = None
) -> Candidates:
    """For `traces` and `feedback`: the live files that may hold rows of the ids — those the day indexes name,
    and every file no index covers; with `lo_s` / `hi_s`, of the hours overlapping [lo_s, hi_s) only. Lists
    those two tables and the index; reads each day's index footer and the row groups that may hold the ids;
    opens no data file."""
    wanted = np.sort(id_keys([i.lower() for i in trace_ids]))
    days = [
        info
        for day, infos in index_objects(lake).items()
        if layout.day_overlaps(f"dt={day.isoformat()}", lo_s, hi_s)
        for info in infos
    ]
    covered: set[str] = set()
    hits: set[str] = set()
    with ThreadPoolExecutor(max_workers=min(INDEX_READERS, max(len(days), 1))) as pool:
        for probed in pool.map(lambda info: _probe(lake, info, wanted), days):
            if probed is not None:
                covered.update(probed[0])
                hits |= probed[1]
    files: dict[str, list[str]] = {}
    uncovered_hours: list[float] = []
    newest_covered: float | None = None
    for table in INDEXED_TABLES:
        files[table] = []
        for part in layout.hour_partitions(lake, table, lo_s, hi_s):
            for f in map(str, layout.live_paths(part)):
                name = _relative(lake, f)
                if name not in covered:
                    files[table].append(lake.url(f))
                    if table == "traces":
                        uncovered_hours.append(part.start.timestamp())
                elif name in hits:
                    files[table].append(lake.url(f))
                if name in covered and table == "traces":
                    newest_covered = max(newest_covered or part.end_s, part.end_s)
    since = min([*uncovered_hours, *([newest_covered] if newest_covered is not None else [])], default=None)
    return Candidates(files, since if newest_covered is not None else None)


# -- writing (compaction, under the maintenance lock) --------------------------------------------------------
def days_to_index(lake: Lake, cutoff_s: float, merged: Iterable[date]) -> list[date]:
    """The days whose index a compaction run should bring up to date: those it merged a closed hour of, and
    those with closed `traces` / `feedback` hours and no index yet (a lake from before the index existed, a
    day whose hours needed no merge)."""
    have = set(index_objects(lake))
    days = set(merged)
    for table in INDEXED_TABLES:
        for part in layout.hour_partitions(lake, table):  # one listing (a range would list each day: more requests)
            if part.closed_before(cutoff_s) and part.start.date() not in have:
                days.add(part.start.date())
    return sorted(days)


def update_day(lake: Lake, day: date, existing: list[pafs.FileInfo] | None = None, changed: Iterable[str] = ()) -> int:
    """Bring the day's index up to date with its live files; returns how many files were read for it.
    `existing`: the day's index objects, when the caller has listed them; `changed`: files (fs paths) rewritten
    under their own names since they were indexed (`forget`), read again so that the ids they lost go."""
    existing = index_objects(lake).get(day, []) if existing is None else existing
    files = sorted(set(_day_files(lake, day)))
    position = {f: i for i, f in enumerate(files)}
    parts: list[pa.Table] = []
    reread = {_relative(lake, str(f)) for f in changed}
    known = set(reread)  # files the new index has rows for (those in `reread` are read below)
    for info in existing:
        try:
            old = _DayIndex(lake, info)
        except FileNotFoundError:
            continue
        still = [f for f in old.covers if f in position and f not in known]
        if not still:
            continue
        known.update(still)
        remap = np.array([position.get(f, -1) if f in still else -1 for f in old.covers], np.int64)
        rows = old.table()
        to = remap[rows.column("file").to_numpy()]
        keep = to >= 0
        parts.append(pa.table({"key": rows.column("key").to_numpy()[keep], "file": to[keep].astype(np.uint32)}))
    read = 0
    for f in files:
        if f in known and f not in reread:
            continue
        keys = file_keys(lake, f"{lake.root}/{f}")
        read += 1
        parts.append(pa.table({"key": keys, "file": np.full(keys.size, position[f], np.uint32)}))
    rows = pa.concat_tables(parts).cast(INDEX_SCHEMA) if parts else INDEX_SCHEMA.empty_table()
    rows = rows.sort_by([("key", "ascending"), ("file", "ascending")])
    digest = hashlib.sha256("\0".join(files).encode()).hexdigest()[:16]
    day_dir = f"{index_root(lake)}/dt={day.isoformat()}"
    target = f"{day_dir}/{digest}.parquet"
    if files and (reread or not any(i.path == target for i in existing)):  # same files, other rows: rewritten
        meta = {COVERS_KEY: json.dumps(files).encode()}
        layout.put_table(
            lake,
            target,
            rows.replace_schema_metadata(meta),
            row_group_size=ROW_GROUP_ROWS,
            compression="zstd",
            write_statistics=True,
        )
    for info in existing:
        if info.path != target:
            with contextlib.suppress(FileNotFoundError):
                _fs(lake).delete_file(info.path)
    return read
