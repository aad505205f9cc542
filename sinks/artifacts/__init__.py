"""Artifact store: where offload_artifacts puts large values, and the ways back to them.

store.ArtifactStore (content-addressed objects), sql.register_artifact_function (DuckDB
`artifact(ref)`), gc.collect (retention of unreferenced objects), configured.store_uris (the stores a
config names), cli (`tracelake artifact get`, `tracelake gc`, mounted through `tracelake.commands`).
`tracelake trace` shows offloaded values (pipeline/trace_view.py).
"""

from __future__ import annotations

from sinks.artifacts.refs import REF_PREFIX, digest_of, is_ref, make_ref
from sinks.artifacts.store import ArtifactCorruptError, ArtifactInfo, ArtifactNotFoundError, ArtifactStore

__all__ = [
    "REF_PREFIX",
    "ArtifactCorruptError",
    "ArtifactInfo",
    "ArtifactNotFoundError",
    "ArtifactStore",
    "digest_of",
    "is_ref",
    "make_ref",
]
