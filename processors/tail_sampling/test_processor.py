"""The contract with the worker: holding, releasing, decision cache, late feedback, memory bound, offsets."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from core import schema
from core.feedback import FEEDBACK_SCOPE
from core.processor import ProcessorContext, Registry
from pipeline.config import parse
from processors.tail_sampling import TailSampler, factory
from processors.tail_sampling.testing import Clock, batch, concat, decisions, feedback, sampler, span, tid

ERRORS = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
THUMBS_DOWN = {"name": "thumbs_down", "type": "feedback", "feedback": {"max_value": 0}}
POLICIES = [ERRORS, THUMBS_DOWN]


def _ids(table: pa.Table) -> list[str]:
    return table.column("trace_id").to_pylist()


def _setup(**settings: Any) -> tuple[TailSampler, Clock]:
    clock = Clock()
    return sampler(POLICIES, clock, **settings), clock


def test_output_is_the_input_schema_plus_two_columns() -> None:
    ts, clock = _setup()
    expected = [*schema.SPANS.names, "sampling_kept", "sampling_reasons"]
    empty_in = ts.process(schema.SPANS.empty_table())
    assert empty_in.column_names == expected and empty_in.num_rows == 0
    assert ts.tick(0).column_names == expected
    assert ts.process(batch([span(0, error="x")])).num_rows == 0  # held
    clock.advance(11)
    out = ts.tick(0)
    assert out.column_names == expected
    assert out.schema.field("sampling_kept") == pa.field("sampling_kept", pa.bool_(), nullable=False)
    assert out.schema.field("sampling_reasons").type == pa.list_(pa.string())
    assert decisions(out) == {tid(0): (True, ["errors"])}
    assert ts.shutdown().column_names == expected
    # a second tail sampler's columns replace the first's instead of clashing
    again = TailSampler(ts.config, clock=clock)
    again.process(out)
    clock.advance(11)
    assert again.tick(0).column_names == expected


def test_wait_counts_from_the_last_span() -> None:
    ts, clock = _setup()
    ts.process(batch([span(0, 1, error="x"), span(1, 1)]))
    clock.advance(6)
    ts.process(batch([span(0, 2)]))
    clock.advance(5)  # trace 1 idle 11 s, trace 0 idle 5 s
    assert _ids(ts.tick(0)) == [tid(1)]
    clock.advance(4.9)
    assert ts.tick(0).num_rows == 0
    clock.advance(0.2)
    out = ts.tick(0)
    assert sorted(out.column("span_id").to_pylist()) == [f"{1:016x}", f"{2:016x}"]
    assert decisions(out) == {tid(0): (True, ["errors"])}
    assert ts.stats["traces_kept"] == 1 and ts.stats["traces_dropped"] == 1 and ts.stats["pending_traces"] == 0


def test_late_spans_follow_the_decision() -> None:
    ts, clock = _setup()
    ts.process(batch([span(0, 1, error="x"), span(1, 1)]))
    clock.advance(11)
    ts.tick(0)
    out = ts.process(batch([span(0, 2), span(1, 2, error="late error"), span(2, 1)]))
    assert decisions(out) == {tid(0): (True, ["errors"]), tid(1): (False, [])}  # trace 2 is new: held
    assert ts.stats["late_spans_kept"] == 1 and ts.stats["late_spans_dropped"] == 1
    assert ts.stats["pending_traces"] == 1


def test_feedback_rows_are_released_at_once() -> None:
    ts, clock = _setup()
    ts.process(batch([span(0), span(1)]))
    out = ts.process(concat(feedback(0, 0.0), feedback(1, 1.0)))
    assert decisions(out, feedback_rows=True) == {tid(0): (True, []), tid(1): (True, [])}
    assert set(out.column("scope_name").to_pylist()) == {FEEDBACK_SCOPE}
    clock.advance(11)
    assert decisions(ts.tick(0)) == {tid(0): (True, ["thumbs_down"]), tid(1): (False, [])}
    # feedback for a decided trace carries its decision
    out = ts.process(feedback(0, 1.0))
    assert decisions(out, feedback_rows=True) == {tid(0): (True, ["thumbs_down"])}


def test_rows_released_at_once_are_not_released_again() -> None:
    ts, clock = _setup()
    ts.process(batch([span(0)]))
    clock.advance(11)
    ts.tick(0)  # trace 0 decided (dropped)
    mixed = concat(
        batch([span(1, 1), span(0, 2), span(1, 2)], source="kafka:spans/0@500"),
        feedback(1, 3.0, source="kafka:spans/0@400"),
        batch([span(2, 1, attrs={"feedback.value": 1})], source="kafka:spans/0@300"),
        batch([span(2, 2)], source="kafka:spans/0@600"),
    )
    now = ts.process(mixed)
    assert sorted(zip(_ids(now), now.column("span_id").to_pylist(), strict=True)) == [
        (tid(0), f"{2:016x}"),
        (tid(1), now.column("span_id").to_pylist()[_ids(now).index(tid(1))]),  # the feedback span
        (tid(2), f"{1:016x}"),
    ]
    assert ts.stats["held_spans"] == 3
    assert ts.low_watermarks() == {"spans/0": 500}  # released rows (300, 400) do not hold offsets back
    clock.advance(11)
    later = ts.tick(0)
    assert sorted(zip(_ids(later), later.column("span_id").to_pylist(), strict=True)) == [
        (tid(1), f"{1:016x}"),
        (tid(1), f"{2:016x}"),
        (tid(2), f"{2:016x}"),
    ]


def test_late_negative_feedback_promotes_a_dropped_trace() -> None:
    ts, clock = _setup()
    ts.process(batch([span(0, 1), span(1, 1)]))
    clock.advance(11)
    assert decisions(ts.tick(0)) == {tid(0): (False, []), tid(1): (False, [])}
    out = ts.process(concat(feedback(0, -1.0), feedback(1, 2.0)))
    assert decisions(out, feedback_rows=True) == {tid(0): (True, ["thumbs_down"]), tid(1): (False, [])}
    assert ts.take_promotions() == [(tid(0), "thumbs_down")]
    assert ts.take_promotions() == []
    assert ts.stats["promotions"] == 1
    # the cache now says kept: later spans are kept, more feedback promotes nothing again
    out = ts.process(concat(batch([span(0, 2), span(1, 2)]), feedback(0, 0.0)))
    assert decisions(out) == {tid(0): (True, ["thumbs_down"]), tid(1): (False, [])}
    assert ts.take_promotions() == []


def test_late_feedback_outside_the_window_promotes_nothing() -> None:
    ts, clock = _setup(late_feedback_window="1h")
    ts.process(batch([span(0)]))
    clock.advance(11)
    ts.tick(0)
    clock.advance(3601)
    assert decisions(ts.process(feedback(0, 0.0)), feedback_rows=True) == {tid(0): (False, [])}
    assert ts.take_promotions() == []


def test_negative_feedback_for_an_unknown_trace_asks_for_promotion() -> None:
    ts, _clock = _setup()  # e.g. after a restart: the trace's spans may be in the holdback area
    out = ts.process(concat(feedback(5, 0.0), feedback(6, 0.5)))
    assert decisions(out, feedback_rows=True) == {tid(5): (True, ["thumbs_down"]), tid(6): (True, [])}
    assert ts.take_promotions() == [(tid(5), "thumbs_down")]
    assert decisions(ts.process(batch([span(5), span(6)]))) == {tid(5): (True, ["thumbs_down"])}
    assert ts.stats["pending_traces"] == 1  # trace 6 waits for its decision as usual


def test_positive_feedback_keeps_nothing() -> None:
    ts, clock = _setup()
    ts.process(batch([span(0)]))
    ts.process(feedback(0, 1.0))
    clock.advance(11)
    assert decisions(ts.tick(0)) == {tid(0): (False, [])}
    ts.process(feedback(0, 0.5))
    assert ts.take_promotions() == [] and ts.stats["promotions"] == 0


def test_feedback_does_not_extend_the_wait() -> None:
    ts, clock = _setup()
    ts.process(batch([span(0)]))
    clock.advance(9)
    ts.process(feedback(0, 0.0))
    clock.advance(2)
    assert decisions(ts.tick(0)) == {tid(0): (True, ["thumbs_down"])}


def test_num_traces_decides_the_least_recently_active_early() -> None:
    ts, clock = _setup(num_traces=3)
    ts.process(batch([span(0, 1), span(1, 1, error="x"), span(2, 1)], source="kafka:spans/0@10"))
    clock.advance(1)
    ts.process(batch([span(0, 2)], source="kafka:spans/0@11"))  # trace 0 is active again
    clock.advance(1)
    out = ts.process(batch([span(3), span(4)], source="kafka:spans/0@12"))
    assert out.num_rows == 0  # early decisions leave with the next tick, not with this batch
    assert ts.stats["decided_early"] == 2 and ts.stats["pending_traces"] == 3
    assert ts.low_watermarks() == {"spans/0": 10}  # decided but not yet released rows still count
    out = ts.tick(0)
    assert decisions(out) == {tid(1): (True, ["errors"]), tid(2): (False, [])}
    assert ts.low_watermarks() == {"spans/0": 10}  # trace 0's first span
    clock.advance(11)
    ts.tick(0)
    assert ts.low_watermarks() == {} and ts.stats["pending_traces"] == 0


def test_low_watermarks_per_partition_and_their_advance() -> None:
    ts, clock = _setup()
    ts.process(
        concat(
            batch([span(0, 1)], source="kafka:otlp_spans/3@1200"),
            batch([span(1, 1)], source="kafka:otlp_spans/3@1300"),
            batch([span(2, 1)], source="kafka:otlp_spans/7@5"),
            batch([span(3, 1)], source="embedded:42"),
            batch([span(4, 1)], source="kafka:a/b/c/11@9"),
            batch([span(5, 1)], source="kafka:otlp_spans/7@3"),  # one trace from two partitions
            batch([span(5, 2)], source="kafka:otlp_spans/3@1100"),
        )
    )
    assert ts.low_watermarks() == {"otlp_spans/3": 1100, "otlp_spans/7": 3, "a/b/c/11": 9}
    clock.advance(1)
    ts.process(batch([span(5, 3)], source="kafka:otlp_spans/3@1500"))
    assert ts.low_watermarks() == {"otlp_spans/3": 1100, "otlp_spans/7": 3, "a/b/c/11": 9}
    ts.forget({"otlp_spans/7"})  # drops trace 2 and trace 5 (partly from partition 7)
    assert ts.low_watermarks() == {"otlp_spans/3": 1200, "a/b/c/11": 9}
    clock.advance(4)
    ts.process(batch([span(1, 2)], source="kafka:otlp_spans/3@1400"))
    clock.advance(6)
    released = ts.tick(0)  # all but trace 1
    assert sorted(_ids(released)) == sorted([tid(0), tid(3), tid(4)])
    assert ts.low_watermarks() == {"otlp_spans/3": 1300}
    clock.advance(10)
    ts.tick(0)
    assert ts.low_watermarks() == {}


def test_replayable_shutdown_keeps_state_until_forget() -> None:
    clock = Clock()
    ts = sampler(POLICIES, clock, replayable=True)
    ts.process(batch([span(0, error="x"), span(1)], source="kafka:spans/2@50"))
    out = ts.shutdown()
    assert out.num_rows == 0 and out.column_names[-2:] == ["sampling_kept", "sampling_reasons"]
    clock.advance(60)
    assert ts.tick(0).num_rows == 0  # frozen: nothing decided behind the replay's back
    assert ts.low_watermarks() == {"spans/2": 50}
    ts.forget(None)
    assert ts.low_watermarks() == {} and ts.stats["pending_traces"] == 0 and ts.stats["held_spans"] == 0


def test_replayable_shutdown_releases_what_was_decided_early() -> None:
    """Rows decided early (num_traces) are released by shutdown() itself: the worker ticks nothing after it."""
    clock = Clock()
    ts = sampler(POLICIES, clock, replayable=True, num_traces=1)
    ts.process(batch([span(0, error="x")], source="kafka:spans/2@50"))
    ts.process(batch([span(1)], source="kafka:spans/2@51"))  # over num_traces: trace 0 is decided now
    assert decisions(ts.shutdown()) == {tid(0): (True, ["errors"])}
    assert ts.low_watermarks() == {"spans/2": 51}  # trace 1 stays for the replay


def test_embedded_shutdown_decides_everything() -> None:
    ts, _clock = _setup()
    ts.process(batch([span(0, error="x"), span(1)], source="embedded:1"))
    assert decisions(ts.shutdown()) == {tid(0): (True, ["errors"]), tid(1): (False, [])}
    assert ts.stats["pending_traces"] == 0


def test_revoke_with_kafka_freezes_only_those_partitions() -> None:
    clock = Clock()
    ts = sampler(POLICIES, clock, replayable=True)
    ts.process(
        concat(batch([span(0)], source="kafka:spans/0@7"), batch([span(1, error="x")], source="kafka:spans/1@8"))
    )
    assert ts.on_revoke({"spans/0"}).num_rows == 0
    clock.advance(11)
    assert decisions(ts.tick(0)) == {tid(1): (True, ["errors"])}
    assert ts.low_watermarks() == {"spans/0": 7}
    ts.forget({"spans/0"})
    assert ts.low_watermarks() == {} and ts.stats["pending_traces"] == 0
    # the partition comes back: its replayed spans start over
    ts.process(batch([span(0)], source="kafka:spans/0@7"))
    clock.advance(11)
    assert decisions(ts.tick(0)) == {tid(0): (False, [])}


def test_revoke_without_replay_decides_the_revoked_traces() -> None:
    ts, _clock = _setup()
    ts.process(concat(batch([span(0)], source="kafka:spans/0@7"), batch([span(1)], source="kafka:spans/1@8")))
    assert _ids(ts.on_revoke({"spans/0"})) == [tid(0)]
    assert ts.low_watermarks() == {"spans/1": 8}


def test_partial_release_and_held_batch_cleanup() -> None:
    ts, clock = _setup()
    traces = 40
    ts.process(batch([span(t, n) for t in range(traces) for n in (1, 2)]))
    for t in range(0, traces, 2):  # half the traces get one more span later
        clock.advance(0.01)
        ts.process(batch([span(t, 3)]))
    clock.advance(10 - 0.01 * (traces // 2) + 0.001)
    first = ts.tick(0)
    assert sorted(set(_ids(first))) == sorted(tid(t) for t in range(1, traces, 2))
    assert first.num_rows == traces  # two spans each
    assert ts.stats["held_spans"] == traces // 2 * 3
    clock.advance(1)
    second = ts.tick(0)
    assert second.num_rows == traces // 2 * 3
    assert ts._held == {} and ts._pending == {}


def test_staggered_releases_compact_held_batches_and_release_each_span_once() -> None:
    ts, clock = _setup()
    traces = 60
    ts.process(batch([span(t, n) for t in range(traces) for n in (1, 2, 3)]))
    # trace t gets one more span after t // 10 seconds: six release waves out of one held batch
    for wave in range(1, 6):
        clock.advance(1)
        ts.process(batch([span(t, 3 + wave) for t in range(wave * 10, traces)]))
    seen: list[tuple[str, str]] = []
    sizes = []
    for _ in range(6):
        clock.advance(1 if seen else 5)
        out = ts.tick(0)
        seen += list(zip(_ids(out), out.column("span_id").to_pylist(), strict=True))
        sizes.append(sum(h.table.num_rows for h in ts._held.values()))
        assert sum(h.live for h in ts._held.values()) == ts.stats["held_spans"]
    assert len(seen) == len(set(seen)) == traces * 3 + sum(traces - w * 10 for w in range(1, 6))
    assert ts._held == {} and ts._pending == {}
    # a held batch is compacted once less than half of it is live, dropped once nothing is
    assert sizes == [330, 330, 330, 180, 130, 0]


def test_decision_cache_is_bounded() -> None:
    ts, clock = _setup(decision_cache_size=2)
    ts.process(batch([span(0, error="x"), span(1), span(2)]))
    clock.advance(11)
    ts.tick(0)
    # trace 0 was decided first and forgotten: its late span waits for a decision of its own
    out = ts.process(batch([span(0, 2), span(1, 2), span(2, 2)]))
    assert sorted(_ids(out)) == [tid(1), tid(2)]
    assert ts.stats["pending_traces"] == 1


def test_zero_decision_cache_still_answers_feedback() -> None:
    ts, _clock = _setup(decision_cache_size=0)
    out = ts.process(feedback(3, 0.0))
    assert decisions(out, feedback_rows=True) == {tid(3): (True, ["thumbs_down"])}
    assert ts.take_promotions() == [(tid(3), "thumbs_down")]


def test_many_traces_many_batches() -> None:
    ts, clock = _setup()
    total = 0
    for b in range(20):
        rows = [span(t, b + 1, error="x" if t % 7 == 0 else None) for t in range(b * 5, b * 5 + 50)]
        total += len(rows)
        ts.process(batch(rows, source=f"kafka:spans/0@{b}"))
        clock.advance(1)
    clock.advance(11)
    out = ts.tick(0)
    assert out.num_rows == total
    kept = {t for t, (k, _) in decisions(out).items() if k}
    assert kept == {tid(t) for t in range(0, 145) if t % 7 == 0}
    assert ts._held == {}


def test_no_python_value_type_inference_on_the_hot_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow infers bare Python values' types by trying `import dateutil` each time (~45 µs a call)."""
    policies = [
        *POLICIES,
        {"name": "vip", "type": "string_attribute", "string_attribute": {"key": "tenant.id", "values": ["acme"]}},
        {"name": "n", "type": "numeric_attribute", "numeric_attribute": {"key": "k", "min_value": 1, "max_value": 5}},
        {"name": "named", "type": "feedback", "feedback": {"max_value": 0, "names": ["x"]}},
        {"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 50}},
        {"name": "c", "type": "cost", "cost": {"min_usd": 1}},
        {"name": "l", "type": "latency", "latency": {"threshold_ms": 1}},
    ]
    clock = Clock()
    ts = sampler(policies, clock, num_traces=5)
    warm = concat(batch([span(t, error="x") for t in range(8)], cost=[0.5] * 8), feedback(0, 0.0))
    ts.process(warm)  # first calls may import lazily
    clock.advance(11)
    ts.tick(0)
    more = concat(batch([span(t, n=2) for t in range(20, 30)], cost=[0.5] * 10), feedback(1, 0.0))
    late = batch([span(0, n=9)])
    imports: list[str] = []
    real_import = __import__

    def spy(name: str, *args: Any, **kwargs: Any) -> Any:
        imports.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("builtins.__import__", spy)
    ts.process(more)
    ts.process(late)
    clock.advance(11)
    ts.tick(0)
    ts.low_watermarks()
    ts.on_revoke({"spans/0"})
    monkeypatch.undo()
    assert imports == []


@pytest.mark.parametrize("replayable", [False, True])
def test_factory_from_yaml(replayable: bool) -> None:
    Registry.register(factory)
    doc = {
        "processors": {"tail_sampling": {"decision_wait": "5s", "policies": [ERRORS]}},
        "pipelines": {"traces": {"process": ["tail_sampling"]}},
    }
    spec = parse(doc, "<test>").processors["tail_sampling"]
    assert spec.factory.stateful
    proc = spec.factory.create(spec.config, ProcessorContext("tail_sampling", replayable_source=replayable))
    assert isinstance(proc, TailSampler) and proc.replayable is replayable
    assert proc.config.decision_wait == 5.0


# -- early release ------------------------------------------------------------------------------
def _span_ids(table: pa.Table) -> list[tuple[str, str]]:
    return sorted(zip(_ids(table), table.column("span_id").to_pylist(), strict=True))


def test_a_trace_kept_for_good_is_released_at_once_and_its_later_spans_pass_through() -> None:
    clock = Clock()
    ts = sampler(POLICIES, clock, early_release=True)
    out = ts.process(batch([span(0, 1), span(1, 1, error="boom")], source="kafka:spans/0@10"))
    assert _span_ids(out) == [(tid(1), f"{1:016x}")] and decisions(out) == {tid(1): (True, ["errors"])}
    assert ts.low_watermarks() == {"spans/0": 10}  # trace 0 is still held

    # trace 0 turns into an error: this batch's span now, the span held since offset 10 on the next tick
    out = ts.process(batch([span(0, 2, error="late"), span(1, 2)], source="kafka:spans/0@11"))
    assert _span_ids(out) == [(tid(0), f"{2:016x}"), (tid(1), f"{2:016x}")]
    assert decisions(out) == {tid(0): (True, ["errors"]), tid(1): (True, ["errors"])}
    assert ts.low_watermarks() == {"spans/0": 10}  # the released-early rows wait in the outbox
    ticked = ts.tick(0)
    assert _span_ids(ticked) == [(tid(0), f"{1:016x}")] and decisions(ticked) == {tid(0): (True, ["errors"])}
    assert ts.low_watermarks() == {} and ts.stats["held_spans"] == 0
    assert ts.stats["released_early"] == 2 and ts.stats["pending_traces"] == 2

    # the decision itself still waits for decision_wait after the last span; it releases nothing more
    clock.advance(9)
    thumbs = ts.process(feedback(1, 0.0))  # folded into the pending trace: a second reason
    assert decisions(thumbs, feedback_rows=True) == {tid(1): (True, ["errors", "thumbs_down"])}
    clock.advance(2)
    assert ts.tick(0).num_rows == 0
    assert ts.stats["traces_kept"] == 2 and ts.stats["pending_traces"] == 0
    assert ts.stats["kept_by.thumbs_down"] == 1
    late = ts.process(batch([span(1, 3)]))
    assert decisions(late) == {tid(1): (True, ["errors", "thumbs_down"])}


def test_only_monotone_keeps_release_early() -> None:
    """A keep that more spans could undo (an upper bound, an inverted match) waits for the decision."""
    clock = Clock()
    policies = [
        {"name": "short", "type": "span_count", "span_count": {"min_spans": 1, "max_spans": 3}},
        {
            "name": "no_debug",
            "type": "string_attribute",
            "string_attribute": {"key": "debug", "values": ["1"], "invert_match": True},
        },
        {"name": "fast", "type": "latency", "latency": {"threshold_ms": 0, "upper_threshold_ms": 50}},
    ]
    ts = sampler(policies, clock, early_release=True)
    assert ts.process(batch([span(0, 1), span(0, 2)])).num_rows == 0
    clock.advance(11)
    assert decisions(ts.tick(0)) == {tid(0): (True, ["short", "no_debug", "fast"])}
    assert ts.stats["released_early"] == 0


def test_probabilistic_100_percent_releases_every_trace_with_its_first_batch() -> None:
    """The shipped config: baseline at 100% keeps everything, so nothing waits for decision_wait."""
    clock = Clock()
    baseline = {"name": "baseline", "type": "probabilistic", "probabilistic": {"sampling_percentage": 100}}
    ts = sampler([*POLICIES, baseline], clock, early_release=True)
    rows = [span(t, n) for t in range(40) for n in (1, 2)]
    out = ts.process(batch(rows))
    assert out.num_rows == 80 and {k for k, _ in decisions(out).values()} == {True}
    assert ts.stats["held_spans"] == 0
    clock.advance(11)
    assert ts.tick(0).num_rows == 0 and ts.stats["traces_kept"] == 40
