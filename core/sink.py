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
from typing import Protocol, runtime_checkable

import pyarrow as pa

from core.config import Strict
from core.metrics import Sample
from core.registry import FactoryRegistry

ENTRY_POINT_GROUP = "tracelake.sinks"


class SinkWriteError(Exception):
    """`flush_all` could not make rows durable; they stay buffered and the message names where and why."""


class SinkConfig(Strict):
    """Base for every sink's config block."""


@runtime_checkable
class Sink(Protocol):
    """Where a worker's rows go. Built once per worker chain (a reload builds new ones and swaps them in at a
    batch boundary). `write`, `flush_due`, `flush_all` and `low_watermarks` are called from the worker's
    thread only; `buffered_rows`, `backlog_bytes`, `failing` and `metrics` are also read from another thread
    (the worker process's metrics reporter) at any moment: they read counters without locks or I/O, and
    may raise on a dict the worker changes meanwhile (the reporter skips that snapshot). The worker's last
    call is a `flush_all` (at shutdown, or when a reload swaps the sink out); only those reads follow it."""

    sink_id: str

    def write(
        self, table: str, rows: pa.Table, source: str | None = None, offsets: tuple[int, int] | None = None
    ) -> None:
        """Take rows of `table` ("spans", "traces", "feedback", "holdback") that came from `source`'s
        `offsets`; nothing needs to be durable yet. Never called after the worker's last `flush_all`."""
        ...

    def flush_due(self) -> object:
        """Make durable what the sink's own schedule says is due. Called after every worker iteration. Never
        raises for a failed write: it keeps the rows and retries (see `failing`, `backlog_bytes`)."""
        ...

    def flush_all(self, sources: set[str] | None = None, tables: set[str] | None = None) -> object:
        """Make everything (of `sources` / `tables`) durable now; raises SinkWriteError when it cannot (the
        rows stay buffered: the worker retries, and at shutdown gives up after three attempts). Called for
        revoked partitions before their offsets are committed, before a promotion reads the holdback area,
        and for all at shutdown and at a reload's swap."""
        ...

    def low_watermarks(self) -> dict[str, int]:
        """Per source partition, the oldest offset whose rows are not yet durable. The worker never commits
        past it, so what is only in memory comes back after a crash."""
        ...

    @property
    def backlog_bytes(self) -> int:
        """Bytes held because writing fails: above a limit the worker stops taking from the bus (receivers
        then refuse)."""
        ...

    @property
    def failing(self) -> bool:
        """True while writes fail."""
        ...

    @property
    def buffered_rows(self) -> int:
        """Rows taken by `write` and not yet durable (logged when the worker gives up at shutdown)."""
        ...

    def metrics(self) -> list[Sample]:
        """The sink's own series (`tracelake_sink_*`, labelled `sink=<sink_id>`), exported on /metrics beside
        the worker's. Read at any moment, also after the last `flush_all`."""
        ...


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
