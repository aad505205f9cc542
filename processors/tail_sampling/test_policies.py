"""Each policy type on hand-built traces, decided through the processor as the worker drives it."""

from __future__ import annotations

import math
import random
from typing import Any

import pyarrow as pa

from processors.tail_sampling.config import ProbabilisticBlock
from processors.tail_sampling.policies import MAX_U64, Probabilistic, collector_threshold, fnv1a_64
from processors.tail_sampling.testing import Clock, batch, concat, decide, feedback, sampler, span, tid


def _kept(policy: dict[str, Any], *batches: pa.Table) -> dict[str, tuple[bool, list[str]]]:
    clock = Clock()
    return decide(sampler([policy], clock), clock, *batches)


def _kept_ids(policy: dict[str, Any], *batches: pa.Table) -> set[str]:
    return {t for t, (kept, _) in _kept(policy, *batches).items() if kept}


def test_status_code() -> None:
    policy = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
    b = batch([span(0, 1), span(0, 2, error="boom"), span(1, 1), span(1, 2)])
    assert _kept(policy, b) == {tid(0): (True, ["errors"]), tid(1): (False, [])}
    unset = {"name": "unset", "type": "status_code", "status_code": {"status_codes": ["UNSET", "OK"]}}
    assert _kept_ids(unset, batch([span(0, 1, error="x")]), batch([span(1, 1)])) == {tid(1)}


def test_feedback_inside_the_wait_keeps_the_trace() -> None:
    policy = {"name": "thumbs_down", "type": "feedback", "feedback": {"max_value": 0}}
    b = batch([span(0), span(1), span(2)])
    fb = concat(feedback(0, 0.0), feedback(1, 1.0), feedback(2, -1.0), feedback(2, 5.0))
    assert _kept_ids(policy, b, fb) == {tid(0), tid(2)}


def test_feedback_names_filter_and_feedback_on_real_spans() -> None:
    policy = {"name": "bad_answer", "type": "feedback", "feedback": {"max_value": 0.5, "names": ["answer"]}}
    b = batch([span(0), span(1), span(2, 1, attrs={"feedback.value": 0.1, "feedback.name": "answer"}), span(2, 2)])
    fb = concat(feedback(0, 0.0, name="answer"), feedback(1, 0.0, name="latency"))
    assert _kept_ids(policy, b, fb) == {tid(0), tid(2)}
    # an unnamed feedback.value is named "feedback", like in the feedback table
    unnamed = {"name": "f", "type": "feedback", "feedback": {"max_value": 0, "names": ["feedback"]}}
    assert _kept_ids(unnamed, batch([span(0, 1, attrs={"feedback.value": "0"}), span(0, 2)])) == {tid(0)}
    # non-numeric values are feedback events without a value
    assert _kept_ids(policy, batch([span(0, 1, attrs={"feedback.value": "meh"}), span(0, 2)])) == set()


def test_cost_sums_spans_and_all_null_never_matches() -> None:
    policy = {"name": "expensive", "type": "cost", "cost": {"min_usd": 0.25}}
    b = batch(
        [span(0, 1), span(0, 2), span(1, 1), span(1, 2), span(2, 1), span(3, 1)],
        cost=[0.2, 0.05, 0.1, None, None, 0.3],
    )
    assert _kept_ids(policy, b) == {tid(0), tid(3)}
    zero = {"name": "priced", "type": "cost", "cost": {"min_usd": 0}}
    assert _kept_ids(zero, batch([span(0), span(1)], cost=[None, 0.0])) == {tid(1)}


def test_latency_is_earliest_start_to_latest_end_across_batches() -> None:
    policy = {"name": "slow", "type": "latency", "latency": {"threshold_ms": 8000}}
    first = batch([span(0, 1, at_ms=0, ms=100), span(1, 1, at_ms=0, ms=7000)])
    later = batch([span(0, 2, at_ms=7990, ms=10), span(1, 2, at_ms=1000, ms=6999)])
    assert _kept_ids(policy, first, later) == {tid(0)}
    band = {"name": "band", "type": "latency", "latency": {"threshold_ms": 100, "upper_threshold_ms": 200}}
    assert _kept_ids(band, batch([span(0, ms=150), span(1, ms=250), span(2, ms=50)])) == {tid(0)}


def test_latency_ignores_synthetic_feedback_spans() -> None:
    policy = {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}}
    fb = feedback(0, 1.0)  # its time is far from the span's
    fb = fb.set_column(
        fb.schema.get_field_index("end_time"),
        "end_time",
        pa.array([2**62], pa.int64()).cast(fb.schema.field("end_time").type),
    )
    assert _kept_ids(policy, batch([span(0, ms=10)]), fb) == set()


def test_string_attribute_span_first_then_resource() -> None:
    policy = {"name": "vip", "type": "string_attribute", "string_attribute": {"key": "tenant.id", "values": ["acme"]}}
    spans = batch([span(0, attrs={"tenant.id": "acme"}), span(1, attrs={"tenant.id": "other"})])
    resource = batch([span(2), span(3, attrs={"tenant.id": "other"})], resource={"tenant.id": "acme"})
    assert _kept_ids(policy, spans, resource) == {tid(0), tid(2)}


def test_string_attribute_regex_and_invert() -> None:
    regex = {
        "name": "gpt",
        "type": "string_attribute",
        "string_attribute": {
            "key": "gen_ai.request.model",
            "values": ["^gpt-4", "mini$"],
            "enabled_regex_matching": True,
        },
    }
    b = batch(
        [
            span(0, attrs={"gen_ai.request.model": "gpt-4o"}),
            span(1, attrs={"gen_ai.request.model": "o3-mini"}),
            span(2, attrs={"gen_ai.request.model": "claude"}),
            span(3),
        ]
    )
    assert _kept_ids(regex, b) == {tid(0), tid(1)}
    invert = {
        "name": "not_healthchecks",
        "type": "string_attribute",
        "string_attribute": {"key": "http.route", "values": ["/health"], "invert_match": True},
    }
    b = batch(
        [span(0, 1, attrs={"http.route": "/health"}), span(0, 2), span(1, attrs={"http.route": "/chat"}), span(2)]
    )
    assert _kept_ids(invert, b) == {tid(1), tid(2)}


def test_numeric_attribute() -> None:
    policy = {
        "name": "long",
        "type": "numeric_attribute",
        "numeric_attribute": {"key": "gen_ai.usage.input_tokens", "min_value": 1000},
    }
    b = batch(
        [
            span(0, attrs={"gen_ai.usage.input_tokens": 5000}),
            span(1, attrs={"gen_ai.usage.input_tokens": 999}),
            span(2, attrs={"gen_ai.usage.input_tokens": "lots"}),
            span(3, attrs={"gen_ai.usage.input_tokens": 1000.0}),
        ]
    )
    assert _kept_ids(policy, b) == {tid(0), tid(3)}
    band = {
        "name": "band",
        "type": "numeric_attribute",
        "numeric_attribute": {"key": "score", "min_value": -1, "max_value": 1, "invert_match": True},
    }
    assert _kept_ids(band, batch([span(0, attrs={"score": 0.5}), span(1, attrs={"score": 3}), span(2)])) == {
        tid(1),
        tid(2),
    }


def test_span_count_ignores_feedback_spans() -> None:
    policy = {"name": "big", "type": "span_count", "span_count": {"min_spans": 3, "max_spans": 4}}
    b = batch([span(0, n) for n in range(1, 4)] + [span(1, n) for n in range(1, 3)] + [span(2, n) for n in range(1, 6)])
    assert _kept_ids(policy, b, feedback(1, 3.0)) == {tid(0)}


def test_always_sample_and_and() -> None:
    assert _kept_ids({"name": "all", "type": "always_sample"}, batch([span(0), span(1)])) == {tid(0), tid(1)}
    policy = {
        "name": "slow_errors",
        "type": "and",
        "and": {
            "and_sub_policy": [
                {"name": "e", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                {"name": "s", "type": "latency", "latency": {"threshold_ms": 1000}},
            ]
        },
    }
    b = batch([span(0, 1, ms=2000, error="x"), span(1, 1, ms=10, error="x"), span(2, 1, ms=2000)])
    assert _kept(policy, b) == {tid(0): (True, ["slow_errors"]), tid(1): (False, []), tid(2): (False, [])}


def test_every_matching_policy_is_a_reason() -> None:
    clock = Clock()
    ts = sampler(
        [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "all", "type": "always_sample"},
            {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1}},
        ],
        clock,
    )
    assert decide(ts, clock, batch([span(0, error="x", ms=5)]))[tid(0)] == (True, ["errors", "all", "slow"])
    assert ts.stats["kept_by.errors"] == ts.stats["kept_by.all"] == ts.stats["kept_by.slow"] == 1


# -- probabilistic --------------------------------------------------------------------------------
def test_fnv_and_threshold_match_the_collector() -> None:
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C  # the FNV reference test vector
    assert collector_threshold(1.0) == MAX_U64
    assert collector_threshold(0.0) == 0
    assert collector_threshold(0.5) == 2**63 - 1  # (2^64-1)/2 truncated
    assert abs(collector_threshold(0.1) - MAX_U64 // 10) < 2**12


def test_probabilistic_share_is_within_five_sigma() -> None:
    rnd = random.Random(7)
    ids = [f"{rnd.getrandbits(128):032x}" for _ in range(20_000)]
    for pct in (10.0, 50.0, 1.5):
        policy = Probabilistic("p", ProbabilisticBlock(sampling_percentage=pct))
        k = sum(policy.evaluate(t, []) for t in ids)
        n, p = len(ids), pct / 100
        assert abs(k - n * p) <= 5 * math.sqrt(n * p * (1 - p)), (pct, k)
    assert not any(Probabilistic("p", ProbabilisticBlock(sampling_percentage=0)).evaluate(t, []) for t in ids[:2000])
    assert all(Probabilistic("p", ProbabilisticBlock(sampling_percentage=100)).evaluate(t, []) for t in ids[:2000])


def test_vectorized_hash_equals_the_python_one() -> None:
    rnd = random.Random(3)
    ids = [f"{rnd.getrandbits(128):032x}" for _ in range(2000)] + ["ff" * 16, "00" * 16]
    for pct, salt in ((10.0, ""), (63.0, "s"), (100.0, "")):
        policy = Probabilistic("p", ProbabilisticBlock(sampling_percentage=pct, hash_salt=salt))
        assert policy.sample(ids) == [policy.hash(t) <= policy.threshold for t in ids]
    odd = ["not-hex", "abc", *ids[:3]]  # falls back to the per-trace path, same answers
    assert policy.sample(odd) == [policy.hash(t) <= policy.threshold for t in odd]
    assert policy.sample([]) == []


def test_probabilistic_is_deterministic_across_samplers_and_salted() -> None:
    rnd = random.Random(11)
    ids = [f"{rnd.getrandbits(128):032x}" for _ in range(3000)]
    b = batch([span(t) for t in ids])
    policy = {"name": "baseline", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}}
    first, second = _kept_ids(policy, b), _kept_ids(policy, b)
    assert first == second and 200 < len(first) < 400
    salted = {**policy, "probabilistic": {"sampling_percentage": 10, "hash_salt": "tier-2"}}
    other = _kept_ids(salted, b)
    assert 200 < len(other) < 400 and len(first & other) < 100  # independent draws overlap ~1%
    # an explicit salt equal to the Collector's default is the default
    default = {**policy, "probabilistic": {"sampling_percentage": 10, "hash_salt": "default-hash-seed"}}
    assert _kept_ids(default, b) == first
