"""Where a row came from: the `lake_source` column, `<bus>:<partition>@<offset>`.

A bus whose progress is committed (Kafka, and the embedded bus of `tracelake run` between its receivers
and worker processes) names every message by partition and offset; a worker commits a partition only up
to the oldest offset whose rows are not yet durable in the lake. Rows held by a processor carry their
`lake_source`, so whoever releases them can tell which partition and offset they pin. This module is the
one place that writes and reads that format.

    kafka:otlp_spans/3@1200          Kafka topic otlp_spans, partition 3, offset 1200
    embedded:20261203T0745-1a2b3c/0@57   the embedded bus of one `tracelake run` start, partition 0
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

PATTERN = r"^(?:kafka|embedded):(?P<partition>.+)@(?P<offset>\d+)$"


def source_ref(bus: str, partition: str, offset: int) -> str:
    return f"{bus}:{partition}@{offset}"


def partitions(sources: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The partition of each source (null for rows that came from no committed bus)."""
    return pc.struct_field(pc.extract_regex(sources, PATTERN), "partition")


def partitions_and_offsets(sources: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """(partition, offset) columns of each source; nulls where a source names no committed bus."""
    parts = pc.extract_regex(sources, PATTERN)
    return pc.struct_field(parts, "partition"), pc.cast(pc.struct_field(parts, "offset"), pa.int64())
