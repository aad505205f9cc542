"""The processor API: what a processor is, when each of its methods is called, and how it is registered.

A processor is built once by its `ProcessorFactory` from its validated config block and then only sees
Arrow tables in the lake's `spans` schema (core/schema.py). Three levels, each a Protocol (structural:
a third-party class need not inherit from anything here):

- `Processor`: `process` and `stats`. Every processor.
- `StatefulProcessor`: holds spans across batches (tail sampling) and releases them on `tick`,
  `shutdown`, `retire` (a reload replaces the chain) and `on_revoke`; reports what it holds
  (`low_watermarks`) and drops it on `forget`.
- `Sampler`: a stateful processor that decides which traces reach `spans` (the rest wait in the
  holdback area) and may later promote a dropped trace (`take_promotions`).

The worker (pipeline/worker.py) binds these hooks once, when it is built; the factory's `build` checks
that what `create` returned implements the level the factory declares. Built-ins register through the
`tracelake.processors` entry-point group exactly like third-party processors; processors/README.md is
the guide for their authors.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

import pyarrow as pa

from core.config import Strict
from core.conventions import Normalizer
from core.registry import FactoryRegistry, component_type

ENTRY_POINT_GROUP = "tracelake.processors"

# The two columns a Sampler appends to every row it releases.
SAMPLING_KEPT = pa.field("sampling_kept", pa.bool_(), nullable=False)
SAMPLING_REASONS = pa.field("sampling_reasons", pa.list_(pa.string()))


class ProcessorConfig(Strict):
    """Base for every processor's config block: unknown keys are errors, values are typed, frozen."""


Stage = Literal["ingest", "process"]


@dataclass(frozen=True)
class ProcessorContext:
    """What a processor may know about the pipeline it runs in, fixed at build time."""

    processor_id: str
    # The worker's normalizer (the configured correlation keys): call it on a batch whose attributes
    # changed in a way that moves a typed column (model, tokens, user/session ids, span_type, ...).
    normalizer: Normalizer = field(default_factory=Normalizer)
    # "ingest" (in the receiver, before the bus) or "process" (in the worker).
    stage: Stage = "process"
    # True when the bus can replay (Kafka): a stateful processor may then keep undecided state at
    # shutdown/revoke instead of deciding early; the uncommitted offsets bring the spans back.
    replayable_source: bool = False
    # The S3 filesystem of the pipeline's object-storage settings (`sinks.parquet.s3`: endpoint, credentials), made
    # on first call, for processors that write `s3://` URIs (offload_artifacts' store). None: from the environment.
    s3_filesystem: Callable[[], Any] | None = None


@runtime_checkable
class Processor(Protocol):
    """Every processor. Built once per chain; its methods are only ever called from one thread at a time
    (the worker's thread, or in the ingest stage a receiver thread holding the chain's lock)."""

    @property
    def stats(self) -> Mapping[str, object]:
        """The processor's own counters: numbers, or mappings of them (nested keys are joined with dots).
        Exported on /metrics as `tracelake_processor_stat{processor, stat}`; other values are skipped.
        Read from another thread at any time, also after `shutdown`: keep it a plain dict of numbers that
        `process` updates in place. An empty mapping when there is nothing to count."""
        ...

    def process(self, batch: pa.Table) -> pa.Table:
        """Return the rows to pass on.

        Called with a non-empty batch in the `spans` schema (core.schema.SPANS, in that column order),
        plus any columns earlier processors appended (`sampling_kept`, `sampling_reasons`); never after
        `shutdown()`. The result keeps every column of the batch with its type (new columns may be
        appended) and holds a subset of the batch's rows, values changed as the processor wishes.

        A row not returned is dropped for good: it reaches no table and no trace summary, and its bus
        offset is committed with the batch. A `StatefulProcessor` may instead hold it and return it later
        from `tick`, `shutdown` or `on_revoke`; `process` returns rows of the batch it was given only (the
        worker attributes them to the batch's partition and offsets).

        Synthetic feedback spans (scope `tracelake.feedback`, `core.feedback.is_synthetic`) carry feedback
        events through the chain: never drop one and never change its `feedback.*` attributes; a processor
        whose job is the text in them (redaction of `feedback.comment`) may change that. After changing
        attributes that typed columns are derived from, return `context.normalizer(batch)`.
        """
        ...


@runtime_checkable
class StatefulProcessor(Processor, Protocol):
    """A processor that holds spans across batches. Its factory says `stateful=True`; the config refuses it
    in the `ingest` stage. Each method that returns a table returns held rows being released, in the
    schema `process` returns: the worker passes them through the rest of the chain, then to the sinks,
    with partition and offsets taken from their `lake_source`. Every held row is eventually released
    (tick/shutdown/on_revoke) or given up to replay (`forget`), never both."""

    def tick(self, now_ns: int) -> pa.Table:
        """Release what is due. Called after every worker iteration (at least every `max_batch_delay`
        while the bus is idle), never after `shutdown()`. `now_ns` is the wall clock, for information."""
        ...

    def shutdown(self) -> pa.Table:
        """The worker stops: release everything held (embedded bus), or keep it and return an empty table
        when `context.replayable_source` (Kafka replays what was not committed). Called once; nothing but
        `low_watermarks`, `forget` and reads of `stats` follows."""
        ...

    def retire(self) -> pa.Table:
        """The chain is being replaced (a config reload, README "Changing a chain"): release everything held,
        decided now, also when `context.replayable_source` (a replay would reach the new chain, which never
        saw these rows). Called once, at a batch boundary, instead of `shutdown()`; nothing but reads of
        `stats` follows (what it returns is written before the worker commits)."""
        ...

    def on_revoke(self, sources: set[str]) -> pa.Table:
        """The bus partitions `sources` (`"topic/3"`) move to another worker: release (or, replayable, keep
        and stop deciding) what came from them. Followed by a commit, then `forget(sources)`."""
        ...

    def forget(self, sources: set[str] | None) -> None:
        """After the worker's commit: drop state of `sources` (None: all) that their next owner replays.
        Called after `on_revoke(sources)` and, with None, after `shutdown()`."""
        ...

    def low_watermarks(self) -> dict[str, int]:
        """Per bus partition, the lowest offset among held rows (`core.source_ref` parses `lake_source`).
        The worker never commits past it, so held rows come back after a crash. Rows from no partition
        are not reported."""
        ...


@runtime_checkable
class Sampler(StatefulProcessor, Protocol):
    """A stateful processor that keeps or drops whole traces. Every row it releases carries
    `sampling_kept` (bool, not null) and `sampling_reasons` (list<string>): the worker writes kept rows
    to `spans`, dropped rows to the holdback area, and every row into the trace summaries. Run one per chain."""

    def take_promotions(self) -> list[tuple[str, str]]:
        """(trace_id, reason) of dropped traces to move from the holdback area into `spans` (late negative
        feedback), since the last call; each reported once. Called after every worker iteration."""
        ...


ConfigT = TypeVar("ConfigT", bound=ProcessorConfig)


@dataclass(frozen=True)
class ProcessorFactory(Generic[ConfigT]):
    """A processor type: its config model and how to build one. Entry points of `tracelake.processors`
    name an instance of this class."""

    type: str
    config_class: builtins.type[ConfigT]
    create: Callable[[ConfigT, ProcessorContext], Processor]
    description: str = ""
    # holds spans across batches: the created processor is a StatefulProcessor; not allowed in ingest
    stateful: bool = False
    # a config block (as YAML gives it) that makes the processor do real work, for the conformance test
    # (tests/test_processor_conformance.py) and readers; None: `{}` is valid and does real work
    example_config: Mapping[str, Any] | None = None

    def build(self, config: ConfigT, context: ProcessorContext) -> Processor:
        """`create`, then check the result against what this factory declares (TypeError naming what is
        missing), so a chain only ever holds processors whose hooks the worker can bind."""
        processor = self.create(config, context)
        problem = conformance_problem(processor, self.stateful)
        if problem:
            raise TypeError(f"processor {context.processor_id!r} (type {self.type!r}): {problem}")
        return processor


def _members(protocol: type) -> list[str]:
    """The public members a Protocol class declares itself (not those of its bases)."""
    return [name for name in vars(protocol) if not name.startswith("_")]


def conformance_problem(processor: object, stateful: bool) -> str | None:
    """What keeps `processor` from being what its factory declares, or None."""
    kind = type(processor).__qualname__
    missing = [m for m in _members(Processor) if not hasattr(processor, m)]
    held = [m for m in _members(StatefulProcessor) if hasattr(processor, m)]
    sampler = [m for m in _members(Sampler) if hasattr(processor, m)]
    if stateful:
        missing += [m for m in _members(StatefulProcessor) if m not in held]
    elif held or sampler:
        return (
            f"{kind} has {', '.join(held + sampler)} but its factory does not declare stateful=True: "
            "the worker would never call them"
        )
    if sampler:
        missing += [m for m in _members(Sampler) if m not in sampler]
    if missing:
        level = "Sampler" if sampler else "StatefulProcessor" if stateful else "Processor"
        return f"{kind} is not a {level}: it has no {', '.join(missing)} (core/processor.py)"
    return None


Registry: FactoryRegistry[ProcessorFactory[Any]] = FactoryRegistry(ENTRY_POINT_GROUP, ProcessorFactory)


processor_type = component_type
