"""`tracelake validate --strict`: chains that are valid but probably wrong are named with their key path, the
fixed chain is not, the shipped configs pass, and --strict exits 1 on a warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import parse
from pipeline.config.lint import chain_warnings

REPO = Path(__file__).resolve().parent.parent
SAMPLER_WITH_COST = {"policies": [{"name": "expensive", "type": "cost", "cost": {"min_usd": 0.25}}]}


def _warnings(
    processors: dict, ingest: list[str] | None = None, process: list[str] | None = None, **env: str
) -> list[str]:
    doc = {"processors": processors, "pipelines": {"traces": {"ingest": ingest or [], "process": process or []}}}
    return [str(w) for w in chain_warnings(parse(doc, "t.yaml", env={}), env=env)]


def test_offload_before_redaction() -> None:
    procs = {"offload_artifacts": {}, "redact_pii": {"ner": "off"}}
    (w,) = _warnings(procs, process=["offload_artifacts", "redact_pii"])
    assert w.startswith("pipelines.traces.process.0: 'offload_artifacts' runs before 'redact_pii'"), w
    assert _warnings(procs, process=["redact_pii", "offload_artifacts"]) == []


def test_sampling_before_cost_when_a_cost_policy_is_used() -> None:
    procs = {"tail_sampling": SAMPLER_WITH_COST, "cost": {}}
    (w,) = _warnings(procs, process=["tail_sampling", "cost"])
    assert w.startswith("pipelines.traces.process.0: 'tail_sampling' samples before cost: 'cost'"), w
    assert "'expensive'" in w and "put 'cost' before 'tail_sampling'" in w
    (w,) = _warnings({"tail_sampling": SAMPLER_WITH_COST}, process=["tail_sampling"])
    assert "no cost processor runs before it" in w
    # inside an `and` policy too
    nested = {
        "policies": [{"name": "big", "type": "and", "and": {"and_sub_policy": [SAMPLER_WITH_COST["policies"][0]]}}]
    }
    assert len(_warnings({"tail_sampling": nested, "cost": {}}, process=["tail_sampling", "cost"])) == 1
    assert _warnings(procs, process=["cost", "tail_sampling"]) == []
    latency = {"policies": [{"name": "slow", "type": "latency", "latency": {"threshold_ms": 10}}]}
    assert _warnings({"tail_sampling": latency, "cost": {}}, process=["tail_sampling", "cost"]) == []


def test_hash_twice_with_different_keys() -> None:
    procs = {
        "redact_pii/ingest": {"ner": "off", "hash_key_file": "/keys/a"},
        "redact_pii": {"ner": "off", "hash_key_file": "/keys/b"},
    }
    (w,) = _warnings(procs, ingest=["redact_pii/ingest"], process=["redact_pii"])
    assert w.startswith("pipelines.traces.process.0: 'redact_pii' hashes enduser.id, user.id again"), w
    assert "file /keys/b" in w and "file /keys/a" in w
    # the environment variable wins over both files: one key, no warning (as conf/tracelake.yaml with the variable)
    assert _warnings(procs, ingest=["redact_pii/ingest"], process=["redact_pii"], TRACELAKE_HASH_KEY="k" * 32) == []
    same = {k: {**v, "hash_key_file": "/keys/a"} for k, v in procs.items()}
    assert _warnings(same, ingest=["redact_pii/ingest"], process=["redact_pii"]) == []
    # different keys, but the second one does not hash user ids
    other = {**procs, "redact_pii": {**procs["redact_pii"], "key_actions": {"user.id": "redact", "enduser.id": "drop"}}}
    assert _warnings(other, ingest=["redact_pii/ingest"], process=["redact_pii"]) == []


def test_probabilistic_baseline_of_100_percent_alone() -> None:
    everything = {"policies": [{"name": "all", "type": "probabilistic", "probabilistic": {"sampling_percentage": 100}}]}
    (w,) = _warnings({"tail_sampling": everything}, process=["tail_sampling"])
    assert w.startswith(
        "processors.tail_sampling.policies: 'tail_sampling' (pipelines.traces.process.0) keeps every"
    ), w
    ten = {"policies": [{"name": "some", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}}]}
    assert _warnings({"tail_sampling": ten}, process=["tail_sampling"]) == []
    errors = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
    baseline = {"policies": [errors, everything["policies"][0]]}
    assert _warnings({"tail_sampling": baseline}, process=["tail_sampling"]) == []


def test_an_ingest_chain_the_receiver_cannot_afford() -> None:
    (w,) = _warnings({"redact_pii": {"ner": "on"}}, ingest=["redact_pii"])
    assert w.startswith("pipelines.traces.ingest.0: 'redact_pii' runs spaCy NER in the receiver"), w
    assert _warnings({"redact_pii": {"ner": "off"}}, ingest=["redact_pii"]) == []
    assert _warnings({"redact_pii": {"ner": "on"}}, process=["redact_pii"]) == []  # every worker process runs it


def _validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "validate", *args], capture_output=True, text=True, cwd=REPO
    )


@pytest.mark.parametrize("name", ["tracelake.yaml", "kafka.yaml"])
def test_the_shipped_configs_pass_strict(name: str) -> None:
    out = _validate("--strict", str(REPO / "conf" / name))
    assert out.returncode == 0 and "warning" not in out.stderr, out.stderr


def test_strict_exits_1_on_warnings(tmp_path: Path) -> None:
    risky = tmp_path / "risky.yaml"
    risky.write_text(
        "processors: {tail_sampling: {policies: [{name: expensive, type: cost, cost: {min_usd: 1}}]}, cost: {}}\n"
        "pipelines: {traces: {process: [tail_sampling, cost]}}\n"
    )
    relaxed = _validate(str(risky))
    assert relaxed.returncode == 0
    assert f"{risky}: warning: pipelines.traces.process.0: 'tail_sampling' samples before cost" in relaxed.stderr
    strict = _validate("--strict", str(risky))
    assert strict.returncode == 1, strict.stderr
    assert "1 warning(s) and --strict: exit 1" in strict.stderr
