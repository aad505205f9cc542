"""`parquet`: the lake's tables as hive-partitioned, deterministically named Parquet files."""

from __future__ import annotations

from core.sink import SinkConfig, SinkContext, SinkFactory
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink


def _create(config: SinkConfig, context: SinkContext) -> ParquetSink:
    assert isinstance(config, ParquetSinkConfig)
    return ParquetSink(config, sink_id=context.sink_id)


factory = SinkFactory(
    type="parquet",
    config_class=ParquetSinkConfig,
    create=_create,
    description="spans, traces, feedback and held-back spans as Parquet files in hive partitions",
)

__all__ = ["ParquetSink", "ParquetSinkConfig", "factory"]
