"""The `parquet` sink's config block (README "Configuration", `sinks.parquet.*`)."""

from __future__ import annotations

import os
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from core.config import Bytes, Seconds, Strict
from core.sink import SinkConfig

# Where a lake can live: a local (or shared POSIX) directory, or an S3-compatible bucket.
LAKE_SCHEMES = ("file", "s3")


class S3Options(Strict):
    """How to reach an `s3://` lake. Anything left unset comes the way AWS tools take it: AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE and ~/.aws, instance or pod roles, AWS_REGION,
    AWS_ENDPOINT_URL. Secrets are never printed (pydantic SecretStr)."""

    region: str | None = None
    endpoint_override: str | None = None  # an S3-compatible server: `http://minio:9000`, `https://...`
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    session_token: SecretStr | None = None
    connect_timeout: Seconds = 5.0
    request_timeout: Seconds = 30.0

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> S3Options:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("access_key and secret_key go together: set both, or neither (then the environment's)")
        return self


class ParquetSinkConfig(SinkConfig):
    # A directory (`./lake`, `/srv/lake`, `file:///srv/lake`) or `s3://bucket/prefix` (README "Lake on object
    # storage"); any other scheme is refused here rather than written to a local directory named after it.
    path: str = "./lake"
    s3: S3Options = Field(default_factory=S3Options)
    # A partition's buffer is written as one file when it reaches any of these. Rows are queryable
    # once written: roll_seconds bounds how long a row waits under steady load, flush_idle writes a
    # buffer that got nothing new for that long (a burst is queryable right after it ends).
    roll_rows: int = Field(500_000, gt=0)
    roll_bytes: Bytes = 64 * 2**20
    roll_seconds: Seconds = 2.0
    flush_idle: Seconds = 1.0
    compression_level: int = Field(3, ge=1, le=22)

    @field_validator("path")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        return check_lake_path(value)


def lake_scheme(path: str) -> Literal["file", "s3"]:
    """`s3` for `s3://…`, `file` for a plain path or `file://…` (after `check_lake_path`)."""
    return "s3" if urlsplit(path).scheme.lower() == "s3" else "file"


def check_lake_path(value: str) -> str:
    """The lake path as given, or ValueError naming what is wrong with it."""
    scheme = urlsplit(value).scheme.lower()
    windows_drive = os.name == "nt" and len(scheme) == 1
    if scheme and scheme not in LAKE_SCHEMES and not windows_drive:
        raise ValueError(
            f"unsupported lake location {value!r}: scheme {scheme + '://'!r} is not supported "
            "(use a directory, file:///dir or s3://bucket/prefix)"
        )
    if scheme == "s3":
        parts = urlsplit(value)
        if not parts.netloc:
            raise ValueError(f"{value!r} names no bucket: use s3://bucket/prefix")
    return value
