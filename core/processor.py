"""The processor interface (docs/design.md, contract 3) and the registry behind `processors:` in YAML.

A processor is built once from its validated config block and then only sees Arrow tables.
Built-ins register through the `tracelake.processors` entry-point group exactly like
third-party processors do; an entry point names a `ProcessorFactory`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from core.conventions import Normalizer
from core.registry import FactoryRegistry, component_type

ENTRY_POINT_GROUP = "tracelake.processors"


class ProcessorConfig(BaseModel):
    """Base for every processor's config block: unknown keys are errors, values are typed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ProcessorContext:
    """What a processor may know about the pipeline it runs in, fixed at build time."""

    processor_id: str
    normalizer: Normalizer = field(default_factory=Normalizer)
    # "ingest" (in the receiver, before the bus) or "process" (in the worker).
    stage: str = "process"
    # True when the bus can replay (Kafka): a stateful processor may then keep undecided state at
    # shutdown/revoke instead of deciding early; the uncommitted offsets bring the spans back.
    replayable_source: bool = False


@runtime_checkable
class Processor(Protocol):
    def process(self, batch: pa.Table) -> pa.Table:
        """Return the batch to pass on (spans schema). Returning fewer rows drops spans."""
        ...


class StatefulProcessor(Processor, Protocol):
    """A processor that holds spans (tail sampling) releases them on tick and on shutdown."""

    def tick(self, now_ns: int) -> pa.Table: ...

    def shutdown(self) -> pa.Table: ...


@dataclass(frozen=True)
class ProcessorFactory:
    type: str
    config_class: type[ProcessorConfig]
    create: Any  # Callable[[ProcessorConfig, ProcessorContext], Processor]
    description: str = ""
    # holds spans across batches (tick/shutdown/low_watermarks): not allowed in the ingest stage
    stateful: bool = False


Registry: FactoryRegistry[ProcessorFactory] = FactoryRegistry(ENTRY_POINT_GROUP, ProcessorFactory)


processor_type = component_type
