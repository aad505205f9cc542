"""Which Parquet files hold rows of a trace id: an in-memory index of `traces` and `feedback` files.

A trace's summary parts and feedback events may sit in any hour (a late part starts when its late
spans or feedback do), and trace ids are random, so Parquet's min/max statistics cannot skip a file.
Scanning every file's `trace_id` column for one id costs a read of the whole column (2.8 million ids
for a 10-million-span week). Instead the UI keeps, per file, the sorted first 64 bits of the ids it
holds (8 bytes per row: 22 MB for those 2.8 million), read once and kept while the file is unchanged
(same path, size and mtime; compaction and retention replace files, never change them in place). On
object storage a file is read through the lake's filesystem and kept while it is listed with the same size
(`tracelake forget` is the one writer that rewrites an object under its key, with fewer rows).

A lake that compaction has indexed (sinks/parquet/trace_index.py) gives the keys of the files it covers in one read
per day (`seed`, at the server's start), so only the files written since are read one by one.

An answer may name a file that does not hold the id (two ids sharing their first 64 bits, about one
chance in 10^19 per pair), never miss one: the caller's query then filters by the whole id.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from sinks.parquet.layout import Lake
from sinks.parquet.object_store import DuckDBS3
from sinks.parquet.trace_index import file_keys, id_keys, sorted_unique


class TraceIdIndex:
    """Thread-safe; files are read on first use and forgotten when they vanish or change."""

    def __init__(self, lake: Lake, s3: DuckDBS3 | None = None) -> None:
        """`s3`: on object storage, the bridge the reader lists through (it knows each object's listed size)."""
        self.lake = lake
        self._s3 = s3
        self._keys: dict[str, tuple[tuple[int, int], np.ndarray]] = {}
        self._lock = threading.Lock()

    def _stamp(self, path: str) -> tuple[int, int]:
        """What says a file is unchanged: its listed size on object storage, its size and mtime on disk."""
        if self.lake.remote:
            return ((self._s3.listed_size(path) or 0) if self._s3 is not None else 0, 0)
        st = os.stat(path)
        return (st.st_size, st.st_mtime_ns)

    def _file_keys(self, path: str) -> np.ndarray:
        """The keys of one file (a local path or an `s3://` URL); none when it is gone."""
        try:
            stamp = self._stamp(path)
            with self._lock:
                cached = self._keys.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        except FileNotFoundError:
            return np.zeros(0, np.uint64)
        keys = file_keys(self.lake, self.lake.fs_path(path))
        with self._lock:
            self._keys[path] = (stamp, keys)
        return keys

    def seed(self, covered: Mapping[str, np.ndarray], files: Iterable[str]) -> int:
        """Take the keys of those of `files` the lake's own trace-id index covers from it (`covered`:
        sinks/parquet/trace_index.py `covered_keys`, one read per day) instead of reading each file; returns how
        many. On object storage the files' sizes must have been listed (`note_listed`) first."""
        wanted = set(files)
        taken = 0
        for name, keys in covered.items():
            path = self.lake.url(f"{self.lake.root}/{name}")
            if path not in wanted:
                continue
            try:
                stamp = self._stamp(path)
            except FileNotFoundError:
                continue
            with self._lock:
                self._keys.setdefault(path, (stamp, keys))
            taken += 1
        return taken

    def files_with(self, files: Iterable[str], ids: Sequence[str]) -> dict[str, list[str]]:
        """The files (of `files`) that may hold any of `ids`, and which ids each may hold."""
        wanted = id_keys([i.lower() for i in ids])
        out: dict[str, list[str]] = {}
        for path in files:
            keys = self._file_keys(path)
            if keys.size == 0:
                continue
            pos = np.searchsorted(keys, wanted)
            hit = (pos < keys.size) & (keys[np.minimum(pos, keys.size - 1)] == wanted)
            if hit.any():
                out[path] = [i for i, h in zip(ids, hit, strict=True) if h]
        return out

    def keys(self, files: Iterable[str]) -> np.ndarray:
        """Every id key of `files`, sorted and unique."""
        parts = [self._file_keys(p) for p in files]
        return sorted_unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)

    def forget_missing(self, present: Iterable[str]) -> None:
        """Drop files that are gone (compacted away, expired) so the index does not grow forever."""
        keep = set(present)
        with self._lock:
            for path in [p for p in self._keys if p not in keep]:
                del self._keys[path]
