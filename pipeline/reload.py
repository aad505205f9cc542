"""Reloading a running server's config (README "Changing a chain"): what a reload may change, what it answers.

The supervisor (`tracelake run` / `receiver` / `worker`, pipeline/service.py) owns a reload: it validates the
file with the same loader as a start, refuses keys that only a restart can change (`restart_only_changes`),
swaps the ingest chain it runs itself and has every worker process swap its chain and sinks at a batch
boundary (pipeline/worker_pool.py). SIGHUP, `POST /-/reload` and `tracelake reload` all end up here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Config
from pipeline.config.loader import ConfigIssue

# Keys whose value is built into something a reload does not rebuild, and why (the message names each key).
RESTART_ONLY: dict[str, str] = {
    "receivers": "the receivers listen with it",
    "bus": "receivers and workers are connected through it",
    "worker.processes": "the bus is partitioned by it",
    "telemetry": "the telemetry endpoint (which answers reloads) and logging are set up at start",
    "memory_limiter": "the memory limiter is started with it",
    "compaction": "the background compactor is started with it",
    "ui": "the UI server is started with it",
}


def _leaves(node: Any, path: str) -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{path}.{key}" if path else str(key)))
        return out
    return {path: node}


def _lakes(config: Config) -> dict[str, str]:
    """Sink id → the lake directory it writes, for the pipeline's sinks that write one."""
    out = {}
    for sid in config.pipeline.sinks:
        path = getattr(config.sinks[sid].config, "path", None)
        if isinstance(path, str):
            out[sid] = path
    return out


def restart_only_changes(old: Config, new: Config) -> list[ConfigIssue]:
    """One issue per key that differs between `old` and `new` and that only a restart can change."""
    before, after = _leaves(old.raw.model_dump(mode="json"), ""), _leaves(new.raw.model_dump(mode="json"), "")
    issues = []
    for key in sorted(set(before) | set(after)):
        prefix = next((p for p in RESTART_ONLY if key == p or key.startswith(p + ".")), None)
        if prefix is None or before.get(key) == after.get(key):
            continue
        was = repr(before[key]) if key in before else "unset"
        now = repr(after[key]) if key in after else "unset"
        issues.append(ConfigIssue(key, f"changed from {was} to {now}: needs a restart ({RESTART_ONLY[prefix]})"))
    lakes_before, lakes_after = _lakes(old), _lakes(new)
    for sid, path in lakes_after.items():
        if path not in lakes_before.values():
            issues.append(
                ConfigIssue(
                    f"sinks.{sid}.path",
                    f"a lake the server does not write yet ({path!r}): needs a restart (the background "
                    "compactor and the UI follow the lakes the server started with)",
                )
            )
    for sid, path in lakes_before.items():
        if path not in lakes_after.values():
            issues.append(
                ConfigIssue(
                    "pipelines.traces.sinks",
                    f"no sink writes the lake {path!r} ({sid!r} did) any more: needs a restart",
                )
            )
    return issues


def config_digest(config: Config) -> str:
    """A short sha256 of the validated config (after ${env:} substitution): what /metrics says is running."""
    return hashlib.sha256(config.raw.model_dump_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did. `changed`: the server runs (at least partly) the new config; `errors` say what not."""

    ok: bool
    changed: bool
    generation: int
    config: str
    sha256: str
    errors: list[str] = field(default_factory=list)

    @property
    def http_status(self) -> int:
        """200 swapped; 422 refused (invalid, or restart-only keys: nothing changed); 500 a part kept its old chain."""
        if self.ok:
            return 200
        return 500 if self.changed else 422

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "changed": self.changed,
            "generation": self.generation,
            "config": self.config,
            "sha256": self.sha256,
            "errors": self.errors,
        }
