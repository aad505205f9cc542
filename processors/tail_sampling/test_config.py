"""Config: the brief's example parses; wrong blocks name their key path; random garbage never crashes."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from core.processor import ProcessorContext, Registry
from pipeline.config import ConfigError, parse
from processors.tail_sampling import TailSampler, TailSamplingConfig, factory
from processors.tail_sampling.config import AndPolicy, LatencyPolicy, ProbabilisticPolicy
from processors.tail_sampling.testing import Clock, batch, feedback, span

EXAMPLE = """
tail_sampling:
  decision_wait: 10s
  num_traces: 50000
  decision_cache_size: 200000
  late_feedback_window: 24h
  policies:
    - {name: errors,      type: status_code,   status_code:   {status_codes: [ERROR]}}
    - {name: thumbs_down, type: feedback,      feedback:      {max_value: 0}}
    - {name: expensive,   type: cost,          cost:          {min_usd: 0.25}}
    - {name: slow,        type: latency,       latency:       {threshold_ms: 8000}}
    - {name: vip,         type: string_attribute, string_attribute: {key: tenant.id, values: [acme]}}
    - {name: baseline,    type: probabilistic, probabilistic: {sampling_percentage: 10}}
    - {name: long_prompt, type: numeric_attribute, numeric_attribute: {key: llm.tokens, min_value: 50000}}
    - {name: big,         type: span_count,    span_count:    {min_spans: 50}}
    - {name: everything,  type: always_sample}
    - name: slow_errors
      type: and
      and:
        and_sub_policy:
          - {name: e, type: status_code, status_code: {status_codes: [ERROR]}}
          - {name: s, type: latency, latency: {threshold_ms: 2000}}
"""


def _issues(block: Any) -> list[str]:
    """Key paths and messages as `tracelake validate` prints them."""
    Registry.register(factory)
    doc = {"processors": {"tail_sampling": block}, "pipelines": {"traces": {"process": ["tail_sampling"]}}}
    with pytest.raises(ConfigError) as err:
        parse(doc, "<test>")
    return [str(i) for i in err.value.issues]


def test_the_documented_example_parses() -> None:
    block = yaml.safe_load(EXAMPLE)["tail_sampling"]
    cfg = TailSamplingConfig.model_validate(block)
    assert (cfg.decision_wait, cfg.late_feedback_window, cfg.num_traces) == (10.0, 86400.0, 50000)
    assert [p.name for p in cfg.policies][:3] == ["errors", "thumbs_down", "expensive"]
    assert isinstance(cfg.policies[3], LatencyPolicy) and cfg.policies[3].latency.threshold_ms == 8000
    assert isinstance(cfg.policies[5], ProbabilisticPolicy) and cfg.policies[5].probabilistic.hash_salt == ""
    assert isinstance(cfg.policies[-1], AndPolicy) and len(cfg.policies[-1].and_.and_sub_policy) == 2
    Registry.register(factory)
    doc = {"processors": {"tail_sampling": block}, "pipelines": {"traces": {"process": ["tail_sampling"]}}}
    assert parse(doc, "<test>").processors["tail_sampling"].config == cfg


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({}, "processors.tail_sampling.policies: Field required"),
        ({"policies": []}, "processors.tail_sampling.policies: List should have at least 1 item"),
        (
            {"policies": [{"name": "a", "type": "latency", "latency": {"threshold_ms": "slow"}}]},
            "processors.tail_sampling.policies.0.latency.threshold_ms: Input should be a valid number",
        ),
        (
            {"policies": [{"name": "a", "type": "latency"}]},
            "processors.tail_sampling.policies.0.latency: Field required",
        ),
        (
            {"policies": [{"name": "a", "type": "latency", "latency": {"threshold_ms": 1}, "cost": {}}]},
            "processors.tail_sampling.policies.0.cost: unknown key",
        ),
        (
            {"policies": [{"name": "a", "type": "rate_limiting"}]},
            "processors.tail_sampling.policies.0: Input tag 'rate_limiting' found using 'type' does not match",
        ),
        ({"policies": [{"name": "a"}]}, "processors.tail_sampling.policies.0: Unable to extract tag using"),
        (
            {"policies": [{"name": "a", "type": "always_sample"}, {"name": "a", "type": "always_sample"}]},
            "processors.tail_sampling.policies.1.name: duplicate policy name 'a' (also policies.0.name)",
        ),
        (
            {"policies": [{"name": "x,y", "type": "always_sample"}]},
            "processors.tail_sampling.policies.0.name: policy names may not contain commas",
        ),
        (
            {"policies": [{"name": "s", "type": "status_code", "status_code": {"status_codes": ["FAILED"]}}]},
            "processors.tail_sampling.policies.0.status_code.status_codes.0: Input should be 'OK', 'ERROR' or 'UNSET'",
        ),
        (
            {"policies": [{"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 101}}]},
            "processors.tail_sampling.policies.0.probabilistic.sampling_percentage: Input should be less than",
        ),
        (
            {
                "policies": [
                    {
                        "name": "r",
                        "type": "string_attribute",
                        "string_attribute": {"key": "k", "values": ["ok", "(open"], "enabled_regex_matching": True},
                    }
                ]
            },
            "processors.tail_sampling.policies.0.string_attribute: values.1: invalid regular expression '(open'",
        ),
        (
            {"policies": [{"name": "n", "type": "numeric_attribute", "numeric_attribute": {"key": "k"}}]},
            "processors.tail_sampling.policies.0.numeric_attribute: set min_value, max_value or both",
        ),
        (
            {"policies": [{"name": "c", "type": "span_count", "span_count": {"min_spans": 5, "max_spans": 2}}]},
            "processors.tail_sampling.policies.0.span_count: max_spans must be >= min_spans",
        ),
        (
            {
                "policies": [
                    {
                        "name": "both",
                        "type": "and",
                        "and": {
                            "and_sub_policy": [
                                {"name": "e", "type": "latency", "latency": {"threshold_ms": -1}},
                                {"name": "e", "type": "always_sample"},
                            ]
                        },
                    }
                ]
            },
            "processors.tail_sampling.policies.0.and.and_sub_policy.0.latency.threshold_ms: Input should be greater",
        ),
        (
            {
                "policies": [
                    {
                        "name": "both",
                        "type": "and",
                        "and": {"and_sub_policy": [{"name": "e", "type": "and", "and": {"and_sub_policy": []}}]},
                    }
                ]
            },
            "processors.tail_sampling.policies.0.and.and_sub_policy.0: Input tag 'and' found",
        ),
        (
            {
                "policies": [
                    {
                        "name": "both",
                        "type": "and",
                        "and": {"and_sub_policy": [{"name": "e", "type": "always_sample"}] * 2},
                    }
                ]
            },
            "processors.tail_sampling.policies.0.and.and_sub_policy.1.name: duplicate policy name 'e'",
        ),
        (
            {"decision_wait": "soon", "policies": [{"name": "a", "type": "always_sample"}]},
            "processors.tail_sampling.decision_wait: expected a duration like 5s",
        ),
        (
            {"num_traces": 0, "policies": [{"name": "a", "type": "always_sample"}]},
            "processors.tail_sampling.num_traces: Input should be greater than 0",
        ),
        (
            {"policies": [{"name": "a", "type": "always_sample"}], "bogus": 1},
            "processors.tail_sampling.bogus: unknown key",
        ),
    ],
)
def test_errors_name_the_key_path(block: Any, expected: str) -> None:
    issues = _issues(block)
    assert any(i.startswith(expected) for i in issues), issues


# -- fuzz ---------------------------------------------------------------------------------------
GARBAGE: list[Any] = [None, 0, -1, 1.5, float("nan"), True, "", "x", "10s", "(", [], [1], {}, {"a": 1}, 10**30]


def _mutate(node: Any, rnd: random.Random) -> Any:
    """Replace, drop or add one thing somewhere in the document."""
    if isinstance(node, dict) and node and rnd.random() < 0.7:
        key = rnd.choice(list(node))
        action = rnd.random()
        if action < 0.2:
            del node[key]
        elif action < 0.3:
            node[rnd.choice(["bogus", "type", "name", "and", "values", "max_value"])] = rnd.choice(GARBAGE)
        elif action < 0.6:
            node[key] = rnd.choice(GARBAGE)
        else:
            node[key] = _mutate(node[key], rnd)
        return node
    if isinstance(node, list) and node and rnd.random() < 0.7:
        i = rnd.randrange(len(node))
        if rnd.random() < 0.5:
            node[i] = _mutate(node[i], rnd)
        else:
            node.append(copy.deepcopy(rnd.choice(node)))
        return node
    return rnd.choice(GARBAGE)


def test_fuzzed_configs_fail_with_key_paths_or_build_a_working_sampler() -> None:
    Registry.register(factory)
    base = yaml.safe_load(EXAMPLE)["tail_sampling"]
    rnd = random.Random(1234)
    probe = [batch([span(0, 1, error="x"), span(1, 1, attrs={"tenant.id": "acme"})]), feedback(0, 0.0)]
    valid = invalid = 0
    for _ in range(400):
        block = copy.deepcopy(base)
        for _ in range(rnd.randint(1, 3)):
            block = _mutate(block, rnd)
        doc = {"processors": {"tail_sampling": block}, "pipelines": {"traces": {"process": ["tail_sampling"]}}}
        try:
            spec = parse(doc, "<fuzz>").processors["tail_sampling"]
        except ConfigError as e:
            invalid += 1
            assert e.issues
            for issue in e.issues:
                assert issue.path.startswith("processors.tail_sampling"), issue
                assert ".latency.latency" not in issue.path and ".and.and." not in issue.path, issue
            continue
        valid += 1
        assert isinstance(spec.config, TailSamplingConfig)
        clock = Clock()
        ts = TailSampler(spec.config, ProcessorContext("tail_sampling"), clock=clock)
        for b in probe:
            ts.process(b)
        clock.advance(spec.config.decision_wait + 1)
        ts.tick(0)
        ts.shutdown()
    assert valid > 20 and invalid > 200


@pytest.mark.parametrize("garbage", [*GARBAGE, ["policies"], {"policies": "all"}, {"policies": [None]}])
def test_garbage_blocks_are_validation_errors(garbage: Any) -> None:
    with pytest.raises(ValidationError):
        TailSamplingConfig.model_validate(garbage)
