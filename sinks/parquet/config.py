"""The `parquet` sink's config block (README "Configuration", `sinks.parquet.*`)."""

from __future__ import annotations

from pydantic import Field

from core.config import Bytes, Seconds
from core.sink import SinkConfig


class ParquetSinkConfig(SinkConfig):
    path: str = "./lake"
    # A partition's open file is written when it reaches any of these.
    roll_rows: int = Field(500_000, gt=0)
    roll_bytes: Bytes = 64 * 2**20
    roll_seconds: Seconds = 60.0
    compression_level: int = Field(3, ge=1, le=22)
