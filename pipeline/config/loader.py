"""Read a YAML file into a validated `Config`, or fail naming file, key path and what is wrong."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import TypeAdapter, ValidationError

from core import sink
from core.command import ConfigView
from core.processor import ProcessorConfig, ProcessorFactory, Registry, processor_type
from core.registry import component_type
from pipeline.config.model import PipelineConfig, RawConfig

if TYPE_CHECKING:
    from sinks.parquet.layout import Lake

_ENV = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class ConfigIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__("\n".join(f"{source}: {i}" for i in issues))


@dataclass(frozen=True)
class ProcessorSpec:
    id: str
    factory: ProcessorFactory
    config: ProcessorConfig


@dataclass(frozen=True)
class SinkSpec:
    id: str
    factory: sink.SinkFactory
    config: sink.SinkConfig


@dataclass(frozen=True)
class Config:
    source: str
    raw: RawConfig
    processors: dict[str, ProcessorSpec]
    sinks: dict[str, SinkSpec]
    pipeline: PipelineConfig
    warnings: list[ConfigIssue] = field(default_factory=list)

    @property
    def lake_path(self) -> str:
        """The lake the investigation commands read: the first sink that has a `path`."""
        paths = (getattr(s.config, "path", None) for s in self.sinks.values())
        return next((p for p in paths if isinstance(p, str)), "./lake")

    def lake(self, location: str | None = None) -> Lake:
        """The lake at `location` (default `lake_path`): a directory or `s3://…`, reached with the `s3` options of
        the parquet sink that writes there (else the AWS environment's)."""
        from sinks.parquet.config import ParquetSinkConfig
        from sinks.parquet.layout import open_lake

        location = location or self.lake_path
        sinks = [s.config for s in self.sinks.values() if isinstance(s.config, ParquetSinkConfig)]
        return open_lake(location, next((s.s3 for s in sinks if s.path == location), None))

    def view(self) -> ConfigView:
        """What a command plugin (core.command) and the lake readers may see: the validated blocks by id."""
        return ConfigView(
            source=self.source,
            processors={pid: spec.config for pid, spec in self.processors.items()},
            sinks={sid: spec.config for sid, spec in self.sinks.items()},
            lake_path=self.lake_path,
        )


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def substitute_env(node: Any, path: str, issues: list[ConfigIssue], env: dict[str, str]) -> Any:
    """Collector-style `${env:VAR}` / `${env:VAR:-default}` in string values, after YAML parsing."""
    if isinstance(node, dict):
        return {k: substitute_env(v, _join(path, k), issues, env) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_env(v, _join(path, i), issues, env) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        issues.append(ConfigIssue(path, f"environment variable {name} is not set (or use ${{env:{name}:-default}})"))
        return ""

    whole = _ENV.fullmatch(node)
    out = _ENV.sub(repl, node)
    if whole:  # a value that is only a reference takes the YAML type of what it expands to
        try:
            return yaml.safe_load(out) if out else out
        except yaml.YAMLError:
            return out
    return out


def pydantic_issues(err: ValidationError, prefix: str) -> list[ConfigIssue]:
    out = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"] if not str(p).startswith("function-")]
        if len(loc) > 1 and loc[0] == "bus" and loc[1] in ("embedded", "kafka"):
            del loc[1]  # pydantic puts the union's tag in the path; users wrote bus.<key>
        # pydantic names union branches/validators in the location; keep only real keys
        path = ".".join([prefix, *loc] if prefix else loc)
        msg = e["msg"]
        for noise in _PYDANTIC_PREFIXES:  # "Value error, expected a duration…": the validator's own words
            msg = msg.removeprefix(noise)
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif (
            "input" in e
            and e["type"] not in ("missing",)
            and not isinstance(e["input"], dict | list)
            and repr(e["input"]) not in msg  # validators often name the value already
        ):
            msg = f"{msg} (got {e['input']!r})"
        out.append(ConfigIssue(path, msg))
    return out


_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def _pipelines(document: dict[str, Any], raw: RawConfig | None) -> dict[str, PipelineConfig] | None:
    """The pipelines block, also when another section of the file is wrong (None if it is wrong itself:
    its errors are already reported), so that references to undefined processors are found in the same run."""
    if raw is not None:
        return raw.pipelines
    try:
        return _PIPELINES.validate_python(document.get("pipelines", {"traces": {}}))
    except ValidationError:
        return None


_PIPELINES: TypeAdapter[dict[str, PipelineConfig]] = TypeAdapter(dict[str, PipelineConfig])


def parse(document: Any, source: str, env: dict[str, str] | None = None) -> Config:
    issues: list[ConfigIssue] = []
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(source, [ConfigIssue("", "expected a mapping at the top level")])
    document = substitute_env(document, "", issues, dict(os.environ) if env is None else env)
    raw: RawConfig | None = None
    try:
        raw = RawConfig.model_validate(document)
    except ValidationError as err:
        issues.extend(pydantic_issues(err, ""))

    # Processor and sink blocks are checked even when another section is wrong: every error at once.
    proc_blocks = document.get("processors") or {}
    processors: dict[str, ProcessorSpec] = {}
    for pid, block in proc_blocks.items() if isinstance(proc_blocks, dict) else ():
        factory = Registry.get(processor_type(pid))
        if factory is None:
            known = ", ".join(sorted(Registry.factories())) or "none"
            issues.append(
                ConfigIssue(f"processors.{pid}", f"unknown processor type {processor_type(pid)!r} (known: {known})")
            )
            continue
        try:
            cfg = factory.config_class.model_validate(block or {})
        except ValidationError as err:
            issues.extend(pydantic_issues(err, f"processors.{pid}"))
            continue
        processors[pid] = ProcessorSpec(pid, factory, cfg)

    sink_blocks = document.get("sinks", {"parquet": {}})
    sinks: dict[str, SinkSpec] = {}
    for sid, block in sink_blocks.items() if isinstance(sink_blocks, dict) else ():
        sink_factory = sink.Registry.get(component_type(sid))
        if sink_factory is None:
            known = ", ".join(sorted(sink.Registry.factories())) or "none"
            issues.append(ConfigIssue(f"sinks.{sid}", f"unknown sink type {component_type(sid)!r} (known: {known})"))
            continue
        try:
            sinks[sid] = SinkSpec(sid, sink_factory, sink_factory.config_class.model_validate(block or {}))
        except ValidationError as err:
            issues.extend(pydantic_issues(err, f"sinks.{sid}"))

    pipelines = _pipelines(document, raw)
    if pipelines is not None:
        _check_references(pipelines, proc_blocks, sink_blocks, processors, issues)
    if raw is None:
        raise ConfigError(source, _once(issues))
    pipeline = raw.pipelines.get("traces") or PipelineConfig()
    ml = raw.memory_limiter
    if ml is not None and ml.spike_limit >= ml.limit:
        issues.append(ConfigIssue("memory_limiter.spike_limit", "must be smaller than limit"))
    if issues:
        raise ConfigError(source, _once(issues))
    return Config(source=source, raw=raw, processors=processors, sinks=sinks, pipeline=pipeline)


def _once(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    return list(dict.fromkeys(issues))


def _check_references(
    pipelines: dict[str, PipelineConfig],
    proc_blocks: Any,
    sink_blocks: Any,
    processors: dict[str, ProcessorSpec],
    issues: list[ConfigIssue],
) -> None:
    """The pipeline names processors and sinks defined in the file, each once, each where it can run."""
    defined_processors = set(proc_blocks) if isinstance(proc_blocks, dict) else set()
    defined_sinks = set(sink_blocks) if isinstance(sink_blocks, dict) else set()
    pipeline = pipelines.get("traces")
    for name in pipelines:
        if name != "traces":
            issues.append(ConfigIssue(f"pipelines.{name}", "only the 'traces' pipeline is supported"))
    if pipeline is None:
        issues.append(ConfigIssue("pipelines", "a 'traces' pipeline is required"))
        pipeline = PipelineConfig()
    for stage in ("ingest", "process"):
        seen: set[str] = set()
        for i, pid in enumerate(getattr(pipeline, stage)):
            where = f"pipelines.traces.{stage}.{i}"
            if pid not in defined_processors:
                issues.append(ConfigIssue(where, f"processor {pid!r} is not defined under processors"))
            if pid in seen:
                issues.append(ConfigIssue(where, f"processor {pid!r} appears twice"))
            seen.add(pid)
    for i, pid in enumerate(pipeline.ingest):
        spec = processors.get(pid)
        if spec is not None and spec.factory.stateful:
            issues.append(
                ConfigIssue(
                    f"pipelines.traces.ingest.{i}",
                    f"processor {pid!r} holds spans across requests and can only run in process",
                )
            )
    if not pipeline.sinks:
        issues.append(ConfigIssue("pipelines.traces.sinks", "at least one sink is required"))
    for i, sid in enumerate(pipeline.sinks):
        if sid not in defined_sinks:
            issues.append(ConfigIssue(f"pipelines.traces.sinks.{i}", f"sink {sid!r} is not defined under sinks"))


def load(path: str | Path, env: dict[str, str] | None = None) -> Config:
    p = Path(path)
    source = str(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(source, [ConfigIssue("", f"cannot read: {e.strerror}")]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(source, [ConfigIssue(where, f"invalid YAML: {problem}")]) from None
    return parse(document, source, env)


def default_config() -> Config:
    return parse({}, "<defaults>")
