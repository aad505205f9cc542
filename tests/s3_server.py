"""A real S3-protocol server on loopback for the object-storage tests: moto's standalone server (`moto[server]`),
in a thread of the test process. Every request it serves is counted (`requests`), from its access log."""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow.fs as pafs
from moto.server import ThreadedMotoServer

# credentials moto accepts; tests hand them to `tracelake` subprocesses through the environment, as AWS tools do
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
_LINE = re.compile(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (\S+) HTTP')


class S3Server:
    def __init__(self, port: int = 0) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        host, self.port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{self.port}"
        self.requests: list[tuple[str, str]] = []  # (method, path), in the order served
        self._lock = threading.Lock()
        handler = logging.Handler()
        handler.emit = self._record  # type: ignore[method-assign]
        self._handler = handler
        access = logging.getLogger("werkzeug")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False

    def _record(self, record: logging.LogRecord) -> None:
        m = _LINE.search(record.getMessage())
        if m:
            with self._lock:
                self.requests.append((m.group(1), m.group(2)))

    def stop(self) -> None:
        self._server.stop()
        logging.getLogger("werkzeug").removeHandler(self._handler)

    @property
    def env(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(
            endpoint_override=self.endpoint,
            access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region=CREDENTIALS["AWS_REGION"],
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
        )

    def new_bucket(self) -> str:
        name = f"lake-{uuid.uuid4().hex[:12]}"
        self.filesystem().create_dir(name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        selector = pafs.FileSelector(f"{bucket}/{prefix}".rstrip("/"), recursive=True, allow_not_found=True)
        infos = self.filesystem().get_file_info(selector)
        return sorted(i.path[len(bucket) + 1 :] for i in infos if i.type == pafs.FileType.File)


@contextmanager
def s3_environment(server: S3Server) -> Iterator[None]:
    """This process's AWS environment pointed at the server (pyarrow reads it when a filesystem is made)."""
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def serving_s3() -> Iterator[S3Server]:
    """A server for the length of a test module (a fixture's body), with this process's AWS environment on it."""
    server = S3Server()
    try:
        with s3_environment(server):
            yield server
    finally:
        server.stop()
