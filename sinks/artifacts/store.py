"""ArtifactStore: content-addressed, zstd-compressed, write-once objects keyed by sha256.

Layout: `<root>/sha256/<hex[0:2]>/<hex[2:4]>/<hex>.zst`. Two levels of fan-out (65,536
directories / key prefixes) keep every directory small and let object stores list and shard
by prefix. Each object is one standard zstd frame, so `zstd -dc <path>` reads it without
tracelake.

Roots:
- a plain path or `file://` URI (`file://./lake/_artifacts` is relative to the working
  directory, `file:///srv/artifacts` absolute): written with os calls, temp file + fsync +
  rename, so a reader never sees half an object and a crash never leaves a truncated one (which,
  write-once, would never be repaired); write_many() syncs a whole batch of new objects with two
  syncfs calls instead of one fsync each;
- any other URI (`s3://bucket/prefix`, `gs://…`, `hdfs://…`) goes through
  `pyarrow.fs.FileSystem.from_uri`. Object stores publish an object atomically when its upload
  completes, so objects are written in place there; other filesystems get temp + move.
  An `s3://` store configured in tracelake is opened with the pipeline's object-storage settings
  (`sinks.parquet.s3`, sinks/artifacts/configured.py `open_store`), tested against moto's S3 server.

Write-once: an object that exists is not rewritten. The one exception is the refresh that the
garbage collector's grace period relies on: `write()` of an existing object older than
`refresh_after_s` bumps its modification time (utime on files; on object stores, which cannot
touch, by re-uploading the identical bytes). See gc.py for why.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeAlias

import pyarrow as pa
import pyarrow.fs as pafs

from sinks.artifacts.refs import _HEX, digest_of, make_ref

PutStatus = Literal["created", "exists", "refreshed"]
Data: TypeAlias = bytes | bytearray | memoryview | pa.Buffer

# Filesystems whose writes become visible atomically on close: no temp object + move there
# (a move is a server-side copy + delete on these).
_ATOMIC_PUT_TYPES = frozenset({"s3", "gcs", "abfs", "azure"})


class ArtifactNotFoundError(FileNotFoundError):
    """The reference is well-formed but no object holds it (deleted by gc, or another store)."""


class ArtifactCorruptError(ValueError):
    """An object whose content does not hash to its name: never hand it out as the original."""


@dataclass(frozen=True)
class ArtifactInfo:
    ref: str
    path: str
    size: int  # compressed bytes
    mtime: float | None  # seconds since the epoch; None when the filesystem does not say


class _Backend(Protocol):
    # True when touch() must upload the object again (no way to set a modification time)
    touch_rewrites: bool

    def describe(self, rel: str) -> str: ...
    def stat(self, rel: str) -> tuple[int, float | None] | None: ...
    def write(self, rel: str, data: bytes) -> None: ...
    def touch(self, rel: str, data: bytes) -> None: ...
    def read(self, rel: str) -> bytes: ...
    def delete(self, rel: str) -> bool: ...
    def list(self, rel_dir: str) -> Iterator[tuple[str, int, float | None]]: ...


class _LocalBackend:
    """Plain files with os calls: fastest, fsync + rename for atomicity, utime for refresh."""

    touch_rewrites = False

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self, rel: str) -> str:
        return str(self.root / rel)

    def stat(self, rel: str) -> tuple[int, float | None] | None:
        try:
            st = os.stat(self.root / rel)
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime

    def write(self, rel: str, data: bytes) -> None:
        tmp = self._write_tmp(rel, data, fsync=True)
        self._publish(rel, tmp)

    def write_batch(self, items: Sequence[tuple[str, bytes]]) -> list[OSError | None]:
        """Many new objects with two filesystem syncs instead of one fsync each (4x faster here).

        Temp files are written without fsync, one syncfs makes their data durable, the renames
        publish them, a second syncfs makes the renames durable before any span that references
        them can reach a Parquet file. Without syncfs (not Linux), each temp file is fsynced."""
        results: list[OSError | None] = [None] * len(items)
        pending: list[tuple[int, str, Path]] = []
        for i, (rel, data) in enumerate(items):
            try:
                pending.append((i, rel, self._write_tmp(rel, data, fsync=False)))
            except OSError as e:
                results[i] = e
        try:
            if pending and not _syncfs(self.root):
                for _, _, tmp in pending:
                    _fsync_path(tmp)
        except OSError as e:
            for i, _, tmp in pending:
                tmp.unlink(missing_ok=True)
                results[i] = e
            return results
        published = []
        for i, rel, tmp in pending:
            try:
                self._publish(rel, tmp)
                published.append(i)
            except OSError as e:
                results[i] = e
        try:
            if published:
                _syncfs(self.root)
        except OSError as e:
            for i in published:
                results[i] = e
        return results

    def _write_tmp(self, rel: str, data: bytes, fsync: bool) -> Path:
        final = self.root / rel
        tmp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            fh = open(tmp, "wb")  # noqa: SIM115 - closed below, the retry needs the open outside `with`
        except FileNotFoundError:
            final.parent.mkdir(parents=True, exist_ok=True)
            fh = open(tmp, "wb")  # noqa: SIM115
        try:
            with fh:
                fh.write(data)
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _publish(self, rel: str, tmp: Path) -> None:
        try:
            # a concurrent writer of the same hash wrote the same bytes: replacing is harmless
            os.replace(tmp, self.root / rel)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def touch(self, rel: str, data: bytes) -> None:
        os.utime(self.root / rel)

    def read(self, rel: str) -> bytes:
        with open(self.root / rel, "rb") as fh:
            return fh.read()

    def delete(self, rel: str) -> bool:
        try:
            os.unlink(self.root / rel)
        except FileNotFoundError:
            return False
        return True

    def list(self, rel_dir: str) -> Iterator[tuple[str, int, float | None]]:
        base = self.root / rel_dir
        for d1 in _scandir(base):
            if not d1.is_dir() or len(d1.name) != 2:
                continue
            for d2 in _scandir(Path(d1.path)):
                if not d2.is_dir() or len(d2.name) != 2:
                    continue
                for f in _scandir(Path(d2.path)):
                    if f.name.endswith(".zst") and not f.name.startswith("."):
                        try:
                            st = f.stat()
                        except FileNotFoundError:  # deleted while listing
                            continue
                        yield f"{rel_dir}/{d1.name}/{d2.name}/{f.name}", st.st_size, st.st_mtime


_LIBC: ctypes.CDLL | None = None


def _syncfs(path: Path) -> bool:
    """syncfs(2) on the filesystem holding `path`; False where the call does not exist."""
    global _LIBC
    if not sys.platform.startswith("linux"):
        return False
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    fn = getattr(_LIBC, "syncfs", None)
    if fn is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
    return True


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        return []


class _ArrowBackend:
    """Any pyarrow filesystem (S3, GCS, HDFS, mock, …) under a base path."""

    touch_rewrites = True

    def __init__(self, fs: pafs.FileSystem, base: str, uri: str) -> None:
        self.fs = fs
        self.base = base.rstrip("/")
        self.uri = uri.rstrip("/")
        self.atomic_put = fs.type_name in _ATOMIC_PUT_TYPES

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if self.base else rel

    def describe(self, rel: str) -> str:
        return f"{self.uri}/{rel}"

    def stat(self, rel: str) -> tuple[int, float | None] | None:
        info = self.fs.get_file_info(self._path(rel))
        if info.type == pafs.FileType.NotFound:
            return None
        return int(info.size or 0), (info.mtime.timestamp() if info.mtime is not None else None)

    def write(self, rel: str, data: bytes) -> None:
        # compression=None everywhere: pyarrow would otherwise zstd a ".zst" path a second time
        final = self._path(rel)
        if self.atomic_put:
            with self.fs.open_output_stream(final, compression=None) as out:
                out.write(data)
            return
        parent = final.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        name = final.rsplit("/", 1)[1]
        tmp = f"{parent}/.{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with self.fs.open_output_stream(tmp, compression=None) as out:
                out.write(data)
            self.fs.move(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
            raise

    def touch(self, rel: str, data: bytes) -> None:
        # pyarrow filesystems cannot set a modification time: upload the identical bytes again
        self.write(rel, data)

    def read(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self._path(rel), compression=None) as f:
            return bytes(f.read())

    def delete(self, rel: str) -> bool:
        try:
            self.fs.delete_file(self._path(rel))
        except FileNotFoundError:
            return False
        return True

    def list(self, rel_dir: str) -> Iterator[tuple[str, int, float | None]]:
        selector = pafs.FileSelector(self._path(rel_dir), recursive=True, allow_not_found=True)
        prefix = f"{self.base}/" if self.base else ""
        for info in sorted(self.fs.get_file_info(selector), key=lambda i: i.path):
            if info.type != pafs.FileType.File or not info.base_name.endswith(".zst"):
                continue
            if info.base_name.startswith("."):
                continue
            rel = info.path[len(prefix) :] if info.path.startswith(prefix) else info.path
            yield rel, int(info.size or 0), (info.mtime.timestamp() if info.mtime is not None else None)


def _local_root(uri: str) -> Path | None:
    """The directory of a plain path or file:// URI; None for other schemes."""
    if "://" not in uri:
        return Path(uri)
    scheme, rest = uri.split("://", 1)
    if scheme != "file":
        return None
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    return Path(rest or ".")


class ArtifactStore:
    """Content-addressed blobs: put(bytes) -> `artifact:sha256:<hex>`, get(ref) -> the exact bytes."""

    def __init__(
        self,
        uri: str,
        *,
        filesystem: pafs.FileSystem | None = None,
        compression_level: int = 3,
        refresh_after_s: float = 600.0,
        max_workers: int = 8,
    ) -> None:
        """`filesystem` forces the pyarrow path with `uri` as a path inside it (tests, custom credentials)."""
        self.uri = uri
        self.refresh_after_s = refresh_after_s
        self.max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._codec = pa.Codec("zstd", compression_level=compression_level)
        local = None if filesystem is not None else _local_root(uri)
        self._backend: _Backend
        if filesystem is not None:  # `s3://bucket/prefix` is `bucket/prefix` in an S3FileSystem
            self._backend = _ArrowBackend(filesystem, uri.split("://", 1)[-1], uri)
        elif local is not None:
            self._backend = _LocalBackend(local)
        else:
            fs, base = pafs.FileSystem.from_uri(uri)  # raises on unknown schemes / missing credentials
            self._backend = _ArrowBackend(fs, base, uri)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.uri!r})"

    # -- addressing -------------------------------------------------------------------------
    @staticmethod
    def relpath(digest: str) -> str:
        return f"sha256/{digest[:2]}/{digest[2:4]}/{digest}.zst"

    def location(self, ref: str) -> str:
        """Where the object of `ref` lives (path or URI), for messages and for `zstd -dc`."""
        return self._backend.describe(self.relpath(digest_of(ref)))

    # -- writing ----------------------------------------------------------------------------
    def put(self, data: Data) -> str:
        """Store `data` unless an identical object exists; returns its reference."""
        digest = hashlib.sha256(data).hexdigest()
        self.write(digest, data)
        return make_ref(digest)

    def write(self, digest: str, data: Data) -> tuple[PutStatus, int]:
        """Store `data` whose sha256 the caller computed already (the processor hashes once).

        Returns what happened and the compressed bytes uploaded (0 when the object existed).
        Raises OSError (pyarrow's errors are OSErrors too) when the store cannot be written."""
        rel = self.relpath(digest)
        found = self._backend.stat(rel)
        if found is not None:
            mtime = found[1]
            if mtime is not None and time.time() - mtime > self.refresh_after_s:
                payload = self._compress(data) if self._backend.touch_rewrites else b""
                self._backend.touch(rel, payload)
                return "refreshed", len(payload)
            return "exists", 0
        payload = self._compress(data)
        self._backend.write(rel, payload)
        return "created", len(payload)

    def write_many(self, items: Sequence[tuple[str, Data]]) -> list[tuple[PutStatus, int] | OSError]:
        """write() for many objects. A failure is returned in the item's place, never raised, so
        that one bad object does not hide the others' outcome.

        Files: new objects are made durable together (see _LocalBackend.write_batch). Other
        filesystems: `max_workers` threads, since uploads wait on the network, not the CPU."""
        if len(items) <= 1:
            return [self._try_write(d, data) for d, data in items]
        if isinstance(self._backend, _LocalBackend):
            return self._write_many_local(self._backend, items)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="artifact-store")
        return list(self._pool.map(lambda item: self._try_write(*item), items))

    def _write_many_local(
        self, backend: _LocalBackend, items: Sequence[tuple[str, Data]]
    ) -> list[tuple[PutStatus, int] | OSError]:
        results: list[tuple[PutStatus, int] | OSError] = [OSError("not written")] * len(items)
        new: list[tuple[int, str, bytes]] = []
        for i, (digest, data) in enumerate(items):
            rel = self.relpath(digest)
            try:
                found = backend.stat(rel)
                if found is None:
                    new.append((i, rel, self._compress(data)))
                    continue
                if found[1] is not None and time.time() - found[1] > self.refresh_after_s:
                    backend.touch(rel, b"")
                    results[i] = ("refreshed", 0)
                else:
                    results[i] = ("exists", 0)
            except OSError as e:
                results[i] = e
        errors = backend.write_batch([(rel, payload) for _, rel, payload in new])
        for (i, _, payload), err in zip(new, errors, strict=True):
            results[i] = err if err is not None else ("created", len(payload))
        return results

    def _try_write(self, digest: str, data: Data) -> tuple[PutStatus, int] | OSError:
        try:
            return self.write(digest, data)
        except OSError as e:  # pyarrow's IO errors are OSErrors
            return e

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _compress(self, data: Data) -> bytes:
        buf = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
        return bytes(self._codec.compress(buf, asbytes=True))

    # -- reading ----------------------------------------------------------------------------
    def get(self, ref: str) -> bytes:
        """The original bytes. ArtifactNotFoundError if absent, ArtifactCorruptError if damaged."""
        digest = digest_of(ref)
        rel = self.relpath(digest)
        try:
            raw = self._backend.read(rel)
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact {make_ref(digest)} at {self._backend.describe(rel)}") from None
        except OSError:
            # some filesystems (S3) report a missing key as a generic OSError
            if self._backend.stat(rel) is None:
                raise ArtifactNotFoundError(
                    f"no artifact {make_ref(digest)} at {self._backend.describe(rel)}"
                ) from None
            raise
        try:
            data = pa.CompressedInputStream(pa.BufferReader(raw), "zstd").read()
        except (OSError, pa.ArrowException) as e:
            raise ArtifactCorruptError(f"{self._backend.describe(rel)}: not a zstd frame: {e}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactCorruptError(f"{self._backend.describe(rel)}: content does not match its sha256")
        return bytes(data)

    def exists(self, ref: str) -> bool:
        return self._backend.stat(self.relpath(digest_of(ref))) is not None

    def info(self, ref: str) -> ArtifactInfo | None:
        rel = self.relpath(digest_of(ref))
        found = self._backend.stat(rel)
        if found is None:
            return None
        return ArtifactInfo(make_ref(digest_of(ref)), self._backend.describe(rel), found[0], found[1])

    def iter_objects(self) -> Iterator[ArtifactInfo]:
        """Every object with size and modification time (temp files and strangers skipped)."""
        for rel, size, mtime in self._backend.list("sha256"):
            digest = rel.rsplit("/", 1)[-1][: -len(".zst")]
            if _HEX.match(digest) and rel == self.relpath(digest):
                yield ArtifactInfo(make_ref(digest), self._backend.describe(rel), size, mtime)

    def iter_refs(self) -> Iterator[str]:
        for info in self.iter_objects():
            yield info.ref

    # -- deleting ---------------------------------------------------------------------------
    def delete(self, ref: str) -> bool:
        """Remove an object; False if it was not there. Only the garbage collector should call this."""
        return self._backend.delete(self.relpath(digest_of(ref)))
