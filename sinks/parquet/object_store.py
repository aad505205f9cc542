"""The lake on S3-compatible object storage: the pyarrow filesystem, and DuckDB reading through it.

Writing: pyarrow's S3FileSystem. An object appears whole when its upload completes (pyarrow always
uploads as a multipart upload: create, one part per 10 MiB, complete), never half, so the sink writes a
file straight to its final, deterministic key, without the temp name and rename a directory needs.

Reading: DuckDB 2.0 cannot load its httpfs extension here (no package ships it for 2.0 and nothing may be
downloaded at run time), so a DuckDB connection gets the same pyarrow filesystem as an fsspec filesystem
(`register`): `read_parquet('s3://bucket/…')` then reads the footer and the row groups a query needs with
ranged GETs. Each object is opened once per connection (one HEAD for its size) and every later open, size
or time look-up DuckDB makes reuses that handle: a lake object does not change once written (a replay
rewrites the same bytes), except that `tracelake forget` uploads a file again, smaller, under its key. A
long-lived reader (the UI) tells the bridge the sizes each listing shows (`note_listed`): a changed object is
opened afresh, and its `modified()` (from then on the time the bridge saw the change) tells DuckDB its cached
footer is stale.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
from fsspec.implementations.arrow import ArrowFSWrapper
from pydantic import SecretStr

from sinks.parquet.config import S3Options


def s3_filesystem(options: S3Options) -> pafs.S3FileSystem:
    """An S3FileSystem from the config's keys; what they leave unset comes from the AWS environment."""
    kwargs: dict[str, Any] = {
        "connect_timeout": options.connect_timeout,
        "request_timeout": options.request_timeout,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
    }
    if options.region:
        kwargs["region"] = options.region
    endpoint = endpoint_of(options)
    if endpoint:
        kwargs["endpoint_override"] = endpoint
    if options.access_key is not None:
        kwargs["access_key"] = _secret(options.access_key)
        kwargs["secret_key"] = _secret(options.secret_key)
        if options.session_token is not None:
            kwargs["session_token"] = _secret(options.session_token)
    return pafs.S3FileSystem(**kwargs)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def endpoint_of(options: S3Options) -> str | None:
    """As AWS tools take it: the config key, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (None: AWS S3 itself)."""
    return options.endpoint_override or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def s3_client(options: S3Options) -> Any:
    """A botocore S3 client with the same endpoint and credentials as `s3_filesystem`, for what pyarrow cannot
    send: conditional writes (`If-None-Match` / `If-Match`, pipeline/maintenance/object_lock.py), and multipart
    uploads to list and abort (`abort_abandoned_uploads`)."""
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    logging.getLogger("botocore.credentials").setLevel(logging.WARNING)  # "Found credentials in …" on every run
    endpoint = endpoint_of(options)
    config = Config(
        connect_timeout=options.connect_timeout,
        read_timeout=options.request_timeout,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint else {},
    )
    return session.create_client(
        "s3",
        region_name=options.region or session.get_config_variable("region") or "us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=_secret(options.access_key),
        aws_secret_access_key=_secret(options.secret_key),
        aws_session_token=_secret(options.session_token),
        config=config,
    )


def abort_abandoned_uploads(
    options: S3Options, root: str, older_than_s: float, now: datetime | None = None, dry_run: bool = False
) -> list[str]:
    """Abort the multipart uploads under `root` (`bucket/prefix`) begun more than `older_than_s` before `now` (the
    server's `Initiated` time against this host's clock): what a writer killed mid-upload leaves behind, invisible
    but billed. A live upload takes seconds (a sink file, a compaction output), so an hour-old one has no writer.
    Returns the keys (would be) aborted."""
    client = s3_client(options)
    bucket, _, prefix = root.partition("/")
    now = now or datetime.now(UTC)
    aborted = []
    for page in client.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, Prefix=f"{prefix.rstrip('/')}/" if prefix else ""
    ):
        for upload in page.get("Uploads", []):
            if (now - upload["Initiated"]).total_seconds() <= older_than_s:
                continue
            if not dry_run:
                try:
                    client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                except client.exceptions.NoSuchUpload:  # completed or aborted meanwhile
                    continue
            aborted.append(upload["Key"])
    return aborted


_UNCHANGING = datetime(2000, 1, 1, tzinfo=UTC)


class _SharedReader(io.RawIOBase):
    """One open of a lake object for DuckDB: its own position over a handle shared by every open of the object
    on the connection (pyarrow's `read_at` is thread-safe), so the object's size is asked for once (one HEAD)."""

    def __init__(self, handle: pa.NativeFile, size: int) -> None:
        self._handle = handle
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        data = self._handle.read_at(end - self._pos, self._pos)
        self._pos = end
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class DuckDBS3(ArrowFSWrapper):
    """A pyarrow S3FileSystem as the fsspec filesystem DuckDB calls for `s3://` paths (read-only).

    `confined_to` (`bucket/prefix`): every path outside it, or with a `.` / `..` segment, is refused with a
    PermissionError. The UI's SQL console reads through such a bridge: DuckDB's `allowed_directories` compares
    `s3://` paths as text, so `s3://bucket/lake/../other/…` would pass it, and the credentials may reach more
    than the lake."""

    protocol = "s3"
    root_marker = ""

    def __init__(self, fs: pafs.FileSystem, confined_to: str | None = None, **kwargs: Any) -> None:
        super().__init__(fs, **kwargs)
        # least recently used first, at most MAX_KNOWN each: a long-running UI meets every object compaction ever
        # wrote, and one forgotten is only opened (HEAD) again when next read
        self._handles: OrderedDict[str, tuple[pa.NativeFile, int]] = OrderedDict()
        self._listed: OrderedDict[str, int] = OrderedDict()  # sizes from listings (`note_listed`)
        self._changed: dict[str, datetime] = {}  # when `note_listed` saw an object change (rare: `forget`; kept)
        self._lock = threading.Lock()
        self._root = confined_to.strip("/") if confined_to else None
        self.heads = 0  # objects opened (pyarrow asks S3 for each one's size once), for benchmarks

    def _inside(self, path: str) -> str:
        """`path` without `s3://`, or PermissionError when the bridge is confined and the path is not inside."""
        stripped: str = self._strip_protocol(path)
        if self._root is not None:
            norm = posixpath.normpath(stripped)
            if norm != stripped.rstrip("/") or not (norm == self._root or norm.startswith(self._root + "/")):
                raise PermissionError(f"s3://{stripped} is outside the lake (s3://{self._root}/)")
        return stripped

    def ls(self, path: str, detail: bool = False, **kwargs: Any) -> Any:
        return super().ls(self._inside(path), detail=detail, **kwargs)

    def exists(self, path: str) -> bool:
        return bool(super().exists(self._inside(path)))

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> Any:
        return super().cat_file(self._inside(path), start, end, **kwargs)

    def _handle(self, path: str) -> tuple[pa.NativeFile, int]:
        path = self._inside(path)
        with self._lock:
            found = self._handles.get(path)
            if found is not None:
                self._handles.move_to_end(path)
        if found is None:
            handle = self.fs.open_input_file(path)  # HEAD: the size; then ranged GETs per read
            found = (handle, handle.size())
            with self._lock:
                self.heads += 1
                found = self._handles.setdefault(path, found)
                _trim(self._handles)
        return found

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        stripped = self._inside(path)
        with self._lock:
            known = self._handles.get(stripped)
        if known is not None:
            return {"name": stripped, "size": known[1], "type": "file"}
        try:
            _handle, size = self._handle(stripped)  # a file: its one HEAD opens it too
        except (OSError, ValueError):
            return super().info(path, **kwargs)  # a prefix ("directory"), or nothing there
        return {"name": stripped, "size": size, "type": "file"}

    def modified(self, path: str) -> datetime:
        """No request (not the object's Last-Modified): a fixed time in the past, so DuckDB keeps the footers it read,
        or the time `note_listed` saw the object change, so DuckDB reads its footer again."""
        with self._lock:
            return self._changed.get(self._inside(path), _UNCHANGING)

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, **kwargs: Any) -> Any:
        if mode != "rb":
            raise PermissionError(f"the lake is read-only through DuckDB: cannot open {path} for {mode!r}")
        handle, size = self._handle(path)
        return _SharedReader(handle, size)  # unbuffered: each read DuckDB makes is one ranged GET

    def note_listed(self, sizes: Mapping[str, int]) -> None:
        """The sizes a listing just showed (paths without `s3://`): objects known with another size are opened again
        when next read."""
        with self._lock:
            for path, size in sizes.items():
                self._listed[path] = size
                self._listed.move_to_end(path)
            _trim(self._listed)
            for path, size in sizes.items():
                known = self._handles.get(path)
                if known is not None and known[1] != size:
                    del self._handles[path]
                    self._changed[path] = datetime.now(UTC)

    def listed_size(self, path: str) -> int | None:
        """The object's size as last noted from a listing (`note_listed`), if it was."""
        with self._lock:
            return self._listed.get(self._strip_protocol(path))


MAX_KNOWN = 16_384  # objects a bridge keeps open (their sizes), and listed sizes it remembers


def _trim(known: OrderedDict[str, Any]) -> None:
    while len(known) > MAX_KNOWN:
        known.popitem(last=False)


def register(con: duckdb.DuckDBPyConnection, fs: pafs.FileSystem | DuckDBS3) -> DuckDBS3:
    """Let `con` read `s3://…` through `fs` (once per connection); a bridge given is shared with other
    connections, and so is what it knows of the objects it opened."""
    bridge = fs if isinstance(fs, DuckDBS3) else DuckDBS3(fs)
    con.register_filesystem(bridge)
    return bridge
