"""Artifact store: where offload_artifacts puts large values, and the ways back to them.

store.ArtifactStore (content-addressed objects), sql.register_artifact_function (DuckDB
`artifact(ref)`), gc.collect (retention of unreferenced objects), cli.add_commands
(`tracelake artifact get`, `tracelake gc`), display.artifact_lines (`tracelake trace`).
"""

from __future__ import annotations

from sinks.artifacts.display import artifact_lines
from sinks.artifacts.refs import REF_PREFIX, digest_of, is_ref, make_ref
from sinks.artifacts.store import ArtifactCorruptError, ArtifactInfo, ArtifactNotFoundError, ArtifactStore

__all__ = [
    "REF_PREFIX",
    "ArtifactCorruptError",
    "ArtifactInfo",
    "ArtifactNotFoundError",
    "ArtifactStore",
    "artifact_lines",
    "digest_of",
    "is_ref",
    "make_ref",
]
