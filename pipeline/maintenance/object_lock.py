"""The maintenance lock of a lake on object storage: a lease object taken with a conditional write.

There is no flock on S3. The lock is the object `<lake>/.maintenance.lock`, created with `If-None-Match: *` (S3
and MinIO refuse the PUT with 412 when the key exists, so exactly one of two racing processes gets it). The holder
renews the lease every LEASE_S / 4 with `If-Match: <its ETag>` and deletes it with `If-Match` when done. A holder
that dies (SIGKILL, lost host) leaves the object behind: once it is older than LEASE_S by the server's own clock
(its Last-Modified against the Date of the server's reply, so hosts' clocks need not agree) another process takes
it over, again with `If-Match` on the ETag it saw, so two processes never both take over one expired lease.

pyarrow's S3 filesystem sends no conditional headers, so this takes botocore (the AWS SDK for Python) with the
lake's endpoint and credentials (sinks/parquet/object_store.py `s3_client`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

from pipeline.maintenance import LOCK_NAME, MaintenanceBusy
from sinks.parquet.config import S3Options
from sinks.parquet.layout import Lake

log = logging.getLogger("tracelake.maintenance")

LEASE_S = 120.0  # a holder that stops renewing loses the lock this long after its last renewal
POLL_S = 0.5


def _status(error: Exception) -> int:
    return int(getattr(error, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class ObjectLease:
    """One process's hold on the lease object (see the module docstring)."""

    def __init__(self, lake: Lake) -> None:
        from sinks.parquet.object_store import s3_client

        self.bucket, _, prefix = lake.root.partition("/")
        self.key = f"{prefix}/{LOCK_NAME}" if prefix else LOCK_NAME
        self.url = f"s3://{self.bucket}/{self.key}"
        self.client = s3_client(lake.s3 or S3Options())
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.etag: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "renewed_at": time.time()}).encode()

    def _put(self, **condition: str) -> bool:
        """One conditional PUT; False when the condition does not hold (someone else's lease)."""
        from botocore.exceptions import ClientError

        try:
            reply = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(), **condition)
        except ClientError as e:
            if _status(e) in (409, 412):  # 409: a concurrent conditional write to the same key
                return False
            raise
        self.etag = reply["ETag"]
        return True

    def _expired_etag(self) -> tuple[str | None, str]:
        """The ETag of the current lease object when it is expired (None while it is live), and who holds it."""
        from botocore.exceptions import ClientError

        try:
            reply: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if _status(e) == 404:  # released this instant: the next create may win
                return None, "nobody"
            raise
        server_now = parsedate_to_datetime(reply["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (server_now - reply["LastModified"]).total_seconds()
        holder = f"a lease renewed {age:.0f}s ago"
        return (reply["ETag"] if age > LEASE_S else None), holder

    def acquire(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            if self._put(IfNoneMatch="*"):
                break
            expired, holder = self._expired_etag()
            if expired is not None and self._put(IfMatch=expired):
                log.warning("took over the maintenance lock %s: its holder stopped renewing it", self.url)
                break
            if time.monotonic() >= deadline:
                raise MaintenanceBusy(f"another compaction or retention run holds {self.url} ({holder})")
            time.sleep(POLL_S)
        self._renewer = threading.Thread(target=self._renew, name="maintenance-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 4):
            try:
                if not self._put(IfMatch=self.etag or "*"):
                    self.lost = True
                    log.error("lost the maintenance lock %s: another process took it over", self.url)
                    return
            except Exception:  # the next round tries again; the lease outlives three missed renewals
                log.warning("cannot renew the maintenance lock %s", self.url, exc_info=True)

    def release(self) -> None:
        from botocore.exceptions import ClientError

        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.etag is None or self.lost:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except ClientError as e:  # taken over meanwhile (412) or gone: not ours to delete
            log.warning("maintenance lock %s not released: %s", self.url, e)


@contextlib.contextmanager
def object_lock(lake: Lake, wait_s: float = 0.0) -> Iterator[ObjectLease]:
    lease = ObjectLease(lake)
    lease.acquire(wait_s)
    try:
        yield lease
    finally:
        lease.release()
