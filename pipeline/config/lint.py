"""Chains that are valid but probably wrong: the warnings of `tracelake validate` (exit 1 with `--strict`).

Each check reads the validated config only (no processor is built, no model loaded) and names the key path
of what it warns about. README.md "Changing a chain" lists them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping

from core.processor import processor_type
from pipeline.config.loader import Config, ConfigIssue
from processors.offload_artifacts.order import order_warnings
from processors.redact_pii.config import DEFAULT_HASH_KEYS, RedactPiiConfig
from processors.tail_sampling.config import AndPolicy, CostPolicy, ProbabilisticPolicy, TailSamplingConfig

# What `redact_pii` with spaCy NER costs, measured by benchmarks/redact_bench.py (benchmarks/README.md): about
# 1,200-1,700 spans per CPU-second on prompt-heavy traffic, where the receiver alone takes ~18,000 spans/s.
NER_SPANS_PER_CPU_SECOND = 1_500
RECEIVER_SPANS_PER_SECOND = 18_000


def _chain(config: Config) -> Iterator[tuple[str, str, int]]:
    """(key path, processor id, position in ingest + process) in the order spans meet them."""
    position = 0
    for stage in ("ingest", "process"):
        for i, pid in enumerate(getattr(config.pipeline, stage)):
            yield f"pipelines.traces.{stage}.{i}", pid, position
            position += 1


def _offload_before_redaction(config: Config, env: Mapping[str, str]) -> list[ConfigIssue]:
    p = config.pipeline
    return [ConfigIssue("", w) for w in order_warnings(p.process, ingest_ids=p.ingest)]


def _cost_policies(sampler: TailSamplingConfig) -> list[str]:
    names = []
    for policy in sampler.policies:
        subs = policy.and_.and_sub_policy if isinstance(policy, AndPolicy) else [policy]
        names += [policy.name for sub in subs if isinstance(sub, CostPolicy)]
    return sorted(set(names))


def _sampling_before_cost(config: Config, env: Mapping[str, str]) -> list[ConfigIssue]:
    chain = list(_chain(config))
    costs = [(where, pid, pos) for where, pid, pos in chain if processor_type(pid) == "cost"]
    issues = []
    for where, pid, pos in chain:
        sampler = config.processors[pid].config
        if not isinstance(sampler, TailSamplingConfig) or not (names := _cost_policies(sampler)):
            continue
        if any(p < pos for _w, _pid, p in costs):
            continue
        policies = ", ".join(repr(n) for n in names)
        if costs:
            later_where, later_pid, _ = costs[0]
            why = (
                f"{later_pid!r} ({later_where}) prices spans after it decided, so its cost policy {policies} sees none"
            )
            fix = f"put {later_pid!r} before {pid!r}"
        else:
            why = (
                f"no cost processor runs before it: its cost policy {policies} sees only costs spans report themselves"
            )
            fix = "add `cost` before it"
        issues.append(ConfigIssue(where, f"{pid!r} samples before cost: {why}; {fix}"))
    return issues


def _hashed_keys(config: RedactPiiConfig, user_keys: tuple[str, ...]) -> set[str]:
    """The key globs this instance hashes: its key_actions, then the defaults (user ids) it did not override."""
    hashed = {glob for glob, action in config.key_actions.items() if action == "hash"}
    hashed |= {k for k in (*DEFAULT_HASH_KEYS, *user_keys) if k not in config.key_actions}
    return hashed


def _hash_key_source(config: RedactPiiConfig, env: Mapping[str, str]) -> str:
    if env.get(config.hash_key_env):
        return f"environment variable {config.hash_key_env}"
    return f"file {config.hash_key_file}" if config.hash_key_file else f"environment variable {config.hash_key_env}"


def _hashed_twice_with_other_keys(config: Config, env: Mapping[str, str]) -> list[ConfigIssue]:
    """A token is never hashed again (idempotent), so the first instance's HMAC key decides what is stored."""
    user_keys = tuple(config.raw.worker.keys.user)
    redactors = [
        (where, pid, cfg)
        for where, pid, _ in _chain(config)
        if isinstance(cfg := config.processors[pid].config, RedactPiiConfig)
    ]
    issues = []
    for i, (where, pid, cfg) in enumerate(redactors):
        for first_where, first_pid, first in redactors[:i]:
            shared = sorted(_hashed_keys(first, user_keys) & _hashed_keys(cfg, user_keys))
            key, first_key = _hash_key_source(cfg, env), _hash_key_source(first, env)
            if not shared or key == first_key:
                continue
            issues.append(
                ConfigIssue(
                    where,
                    f"{pid!r} hashes {', '.join(shared)} again, with the HMAC key from {key}, after {first_pid!r} "
                    f"({first_where}) hashed them with the key from {first_key}: a token is never hashed twice, "
                    f"so {pid!r}'s key is never used for them; give both the same hash_key_env / hash_key_file, "
                    "or hash in one of them only",
                )
            )
    return issues


def _keeps_everything(config: Config, env: Mapping[str, str]) -> list[ConfigIssue]:
    issues = []
    for where, pid, _ in _chain(config):
        sampler = config.processors[pid].config
        if not isinstance(sampler, TailSamplingConfig):
            continue
        if all(isinstance(p, ProbabilisticPolicy) for p in sampler.policies) and any(
            isinstance(p, ProbabilisticPolicy) and p.probabilistic.sampling_percentage >= 100 for p in sampler.policies
        ):
            issues.append(
                ConfigIssue(
                    f"processors.{pid}.policies",
                    f"{pid!r} ({where}) keeps every trace (a probabilistic baseline of 100% and no other policy): it "
                    "only holds spans in memory for decision_wait; lower the percentage, add policies, or remove it",
                )
            )
    return issues


def _ner_would_run(config: RedactPiiConfig) -> bool:
    if config.ner == "off" or not config.ner_keys:
        return False
    if config.ner == "on":
        return True
    from processors.redact_pii.engine import find_ner_model

    return find_ner_model(config.ner_model) is not None


def _ingest_too_costly(config: Config, env: Mapping[str, str]) -> list[ConfigIssue]:
    """The ingest chain runs in the one receiving process, under one lock, for every export of every client."""
    issues = []
    for i, pid in enumerate(config.pipeline.ingest):
        cfg = config.processors[pid].config
        if isinstance(cfg, RedactPiiConfig) and _ner_would_run(cfg):
            issues.append(
                ConfigIssue(
                    f"pipelines.traces.ingest.{i}",
                    f"{pid!r} runs spaCy NER in the receiver: about {NER_SPANS_PER_CPU_SECOND:,} spans per "
                    f"CPU-second (benchmarks/README.md) in the one receiving process, for all traffic, where the "
                    f"receiver alone takes ~{RECEIVER_SPANS_PER_SECOND:,} spans/s: exports wait on it and clients "
                    'time out; set ner: "off" here and run NER in `process` (every worker process)',
                )
            )
    return issues


def _raw_pii_on_kafka(config: Config, env: Mapping[str, str]) -> list[ConfigIssue]:
    """Redaction only in the worker is enough on the embedded bus (memory), not on Kafka (brokers keep the log)."""
    if config.raw.bus.type != "kafka" or any(_redacts(config, pid) for pid in config.pipeline.ingest):
        return []
    process = config.pipeline.process
    first = next((i for i, pid in enumerate(process) if _redacts(config, pid)), None)
    if first is None:
        return []
    return [
        ConfigIssue(
            f"pipelines.traces.process.{first}",
            f"{process[first]!r} redacts in the worker, after Kafka: raw PII is stored on the brokers for the "
            f'topic\'s retention; add a pattern-only redact_pii (ner: "off") to `pipelines.traces.ingest` so it '
            'is redacted before the bus (README "Processes")',
        )
    ]


def _redacts(config: Config, pid: str) -> bool:
    return isinstance(config.processors[pid].config, RedactPiiConfig)


CHECKS: list[Callable[[Config, Mapping[str, str]], list[ConfigIssue]]] = [
    _offload_before_redaction,
    _sampling_before_cost,
    _hashed_twice_with_other_keys,
    _keeps_everything,
    _ingest_too_costly,
    _raw_pii_on_kafka,
]


def chain_warnings(config: Config, env: Mapping[str, str] | None = None) -> list[ConfigIssue]:
    """Every warning of every check, in chain order per check."""
    env = os.environ if env is None else env
    return [issue for check in CHECKS for issue in check(config, env)]
