"""The `parquet` sink's config block (README "Configuration", `sinks.parquet.*`)."""

from __future__ import annotations

from pydantic import Field

from core.config import Bytes, Seconds
from core.sink import SinkConfig


class ParquetSinkConfig(SinkConfig):
    path: str = "./lake"
    # A partition's buffer is written as one file when it reaches any of these. Rows are queryable
    # once written: roll_seconds bounds how long a row waits under steady load, flush_idle writes a
    # buffer that got nothing new for that long (a burst is queryable right after it ends).
    roll_rows: int = Field(500_000, gt=0)
    roll_bytes: Bytes = 64 * 2**20
    roll_seconds: Seconds = 2.0
    flush_idle: Seconds = 1.0
    compression_level: int = Field(3, ge=1, le=22)
