"""The sink interface: where the worker's rows go, and the registry behind `sinks:` in YAML.

A sink is built once per worker from its validated config block. It buffers rows of the lake's tables
(core/schema.py) and makes them durable on its own schedule; the worker commits bus offsets only up to
what every sink reports durable (`low_watermarks`). Sinks register through the `tracelake.sinks`
entry-point group exactly as processors do.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from core.config import Strict
from core.metrics import Sample
from core.registry import FactoryRegistry

ENTRY_POINT_GROUP = "tracelake.sinks"


class SinkWriteError(Exception):
    """`flush_all` could not make rows durable; they stay buffered and the message names where and why."""


class SinkConfig(Strict):
    """Base for every sink's config block."""


class Sink(Protocol):
    sink_id: str

    def write(
        self, table: str, rows: pa.Table, source: str | None = None, offsets: tuple[int, int] | None = None
    ) -> None:
        """Take rows of `table` ("spans", "traces", "feedback", "holdback") that came from `source`'s
        `offsets`; nothing needs to be durable yet."""
        ...

    def flush_due(self) -> object:
        """Make durable what the sink's own schedule says is due. Never raises for a failed write: it
        keeps the rows and retries (see `failing`, `backlog_bytes`)."""
        ...

    def flush_all(self, sources: set[str] | None = None, tables: set[str] | None = None) -> object:
        """Make everything (of `sources` / `tables`) durable now; raises when it cannot."""
        ...

    def low_watermarks(self) -> dict[str, int]:
        """Per source partition, the oldest offset whose rows are not yet durable."""
        ...

    @property
    def backlog_bytes(self) -> int:
        """Bytes held because writing fails: the worker stops taking from the bus above a limit."""
        ...

    @property
    def failing(self) -> bool: ...

    @property
    def buffered_rows(self) -> int: ...

    def metrics(self) -> list[Sample]: ...


@dataclass(frozen=True)
class SinkContext:
    sink_id: str


@dataclass(frozen=True)
class SinkFactory:
    type: str
    config_class: builtins.type[SinkConfig]
    create: Callable[[SinkConfig, SinkContext], Sink]
    description: str = ""


Registry: FactoryRegistry[SinkFactory] = FactoryRegistry(ENTRY_POINT_GROUP, SinkFactory)
