"""The processor interface (docs/design.md, contract 3) and the registry behind `processors:` in YAML.

A processor is built once from its validated config block and then only sees Arrow tables.
Built-ins register through the `tracelake.processors` entry-point group exactly like
third-party processors do; an entry point names a `ProcessorFactory`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, runtime_checkable

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from pipeline.conventions import Normalizer

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


class Registry:
    """Processor types by name, filled from the entry-point group on first use."""

    _loaded: ClassVar[dict[str, ProcessorFactory] | None] = None

    @classmethod
    def factories(cls) -> dict[str, ProcessorFactory]:
        if cls._loaded is None:
            found: dict[str, ProcessorFactory] = {}
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                factory = ep.load()
                if not isinstance(factory, ProcessorFactory):
                    raise TypeError(f"entry point {ep.name} = {ep.value} is not a ProcessorFactory")
                found[ep.name] = factory
            cls._loaded = found
        return cls._loaded

    @classmethod
    def get(cls, type_name: str) -> ProcessorFactory | None:
        return cls.factories().get(type_name)

    @classmethod
    def register(cls, factory: ProcessorFactory) -> None:
        """For tests and embedding; packages should use the entry-point group."""
        cls.factories()[factory.type] = factory


def processor_type(processor_id: str) -> str:
    """`type/name` ids allow two instances of one type, as in the Collector."""
    return processor_id.split("/", 1)[0]
