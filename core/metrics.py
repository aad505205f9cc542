"""Metric samples: what components report about themselves, in a form that crosses processes.

Components (receivers, buses, the worker, processors, sinks) expose `metrics()` returning plain
`Sample`s read from their own counters; nothing on the hot path touches a metrics library. A worker
process sends its samples to `tracelake run` once a second, and the telemetry endpoint merges the
samples of every process (`merge`: counters and gauges of the same name and labels add up) before
turning them into Prometheus families.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a metric. `name` has no `_total` suffix (the exposition adds it for counters).

    A histogram sample carries cumulative bucket counts as (upper bound, count) in `buckets` and the
    sum of observations in `value`."""

    name: str
    kind: Kind
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    buckets: tuple[tuple[float, float], ...] = ()


def counter(name: str, help: str, value: float, **labels: str) -> Sample:
    return Sample(name, "counter", help, float(value), tuple(sorted(labels.items())))


def gauge(name: str, help: str, value: float, **labels: str) -> Sample:
    return Sample(name, "gauge", help, float(value), tuple(sorted(labels.items())))


def flatten_stats(stats: Mapping[str, object], prefix: str = "") -> Iterable[tuple[str, float]]:
    """A processor's nested stats dict as dotted keys with numeric values (other values are skipped)."""
    for key, value in stats.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from flatten_stats(value, name)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield name, float(value)


def merge(groups: Iterable[Iterable[Sample]]) -> list[Sample]:
    """Samples of several processes as one: values (and histogram buckets) of equal name and labels add up."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], Sample] = {}
    for samples in groups:
        for s in samples:
            key = (s.name, s.labels)
            have = out.get(key)
            if have is None:
                out[key] = s
                continue
            buckets = have.buckets
            if s.buckets:
                buckets = (
                    tuple((bound, a + b) for (bound, a), (_, b) in zip(have.buckets, s.buckets, strict=True))
                    if have.buckets
                    else s.buckets
                )
            out[key] = Sample(s.name, s.kind, s.help, have.value + s.value, s.labels, buckets)
    return list(out.values())
