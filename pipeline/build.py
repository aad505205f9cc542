"""Build the components of a pipeline from a validated `Config`.

`tracelake run` builds receivers and the ingest chain in its own process and a `Worker` in every
worker process; `tracelake worker` builds only workers. Each piece is built in the process that runs it.
"""

from __future__ import annotations

from core.conventions import CorrelationKeys, Normalizer
from core.processor import Processor, ProcessorContext, Stage
from core.sink import Sink, SinkContext
from pipeline.bus.base import Source
from pipeline.config import Config
from pipeline.config.model import KafkaBusConfig
from pipeline.trace_summary import TraceSummarizer
from pipeline.worker import Worker, WorkerChain
from sinks.artifacts.configured import object_storage


def build_normalizer(config: Config) -> Normalizer:
    k = config.raw.worker.keys
    return Normalizer(CorrelationKeys(tuple(k.session), tuple(k.user), tuple(k.tenant), tuple(k.prompt_version)))


def build_chain(config: Config, stage: Stage, normalizer: Normalizer) -> list[tuple[str, Processor]]:
    chain = []
    # Only Kafka outlives a stop: on the embedded bus a stateful processor decides at shutdown (a worker
    # process that dies gets no shutdown; its replacement replays from the bus either way).
    replayable = isinstance(config.raw.bus, KafkaBusConfig)
    s3 = object_storage(config.view())
    for pid in getattr(config.pipeline, stage):
        spec = config.processors[pid]
        ctx = ProcessorContext(
            processor_id=pid, normalizer=normalizer, stage=stage, replayable_source=replayable, s3_filesystem=s3
        )
        chain.append((pid, spec.factory.build(spec.config, ctx)))
    return chain


def holdback_retention(config: Config) -> float | None:
    """Held-back spans live as long as the longest late-feedback window of the chain's samplers."""
    windows = [
        float(getattr(config.processors[pid].config, "late_feedback_window", 0) or 0) for pid in config.pipeline.process
    ]
    windows = [w for w in windows if w > 0]
    return max(windows) if windows else None


def build_sink(config: Config, sink_id: str) -> Sink:
    spec = config.sinks[sink_id]
    return spec.factory.create(spec.config, SinkContext(sink_id))


def build_worker_chain(config: Config) -> WorkerChain:
    """What a worker runs that a reload may replace: processors, sinks, the non-restart-only settings."""
    w = config.raw.worker
    normalizer = build_normalizer(config)
    return WorkerChain(
        processors=build_chain(config, "process", normalizer),
        sinks=[build_sink(config, sid) for sid in config.pipeline.sinks],
        normalizer=normalizer,
        trace_idle=w.trace_idle,
        trace_max_wait=w.trace_max_wait,
        max_batch_spans=w.max_batch_spans,
        max_batch_delay=w.max_batch_delay,
        holdback_retention=holdback_retention(config),
    )


def build_worker(config: Config, source: Source) -> Worker:
    chain = build_worker_chain(config)
    return Worker(
        source,
        chain.processors,
        chain.sinks,
        chain.normalizer,
        TraceSummarizer(chain.trace_idle, trace_max_wait=chain.trace_max_wait),
        max_batch_spans=chain.max_batch_spans,
        max_batch_delay=chain.max_batch_delay,
        commit_interval=getattr(config.raw.bus, "commit_interval", 1.0),
        holdback_retention=chain.holdback_retention,
    )
