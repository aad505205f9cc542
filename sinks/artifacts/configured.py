"""The artifact stores a config names: every distinct `store:` of its offload_artifacts blocks.

Read by `tracelake artifact get` / `gc` (sinks/artifacts/cli.py) and by the lake readers (`tracelake query`,
`trace`, `forget`, `ui`), which resolve `artifact(ref)` through the same stores.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.command import ConfigView
from sinks.artifacts.store import ArtifactStore
from sinks.parquet.config import ParquetSinkConfig, S3Options, lake_scheme

OFFLOAD_TYPE = "offload_artifacts"


def object_storage(config: ConfigView) -> Callable[[], Any]:
    """The S3 filesystem `s3://` stores are reached with: the first parquet sink's `s3` block (endpoint, credentials;
    what it leaves unset comes from the environment), made when first asked for."""
    sinks = [s for s in config.sinks.values() if isinstance(s, ParquetSinkConfig)]
    options = sinks[0].s3 if sinks else S3Options()

    @functools.cache
    def filesystem() -> Any:
        from sinks.parquet.object_store import s3_filesystem

        return s3_filesystem(options)

    return filesystem


def open_store(uri: str, s3_filesystem: Callable[[], Any] | None = None, **options: Any) -> ArtifactStore:
    """The store at `uri`; an `s3://` one through `s3_filesystem()` (`object_storage`), else the environment's."""
    if lake_scheme(uri) != "s3":
        return ArtifactStore(uri, **options)
    if s3_filesystem is None:
        s3_filesystem = object_storage(ConfigView("<defaults>", {}, {}, "./lake"))
    return ArtifactStore(uri, filesystem=s3_filesystem(), **options)


def open_stores(config: ConfigView) -> list[ArtifactStore]:
    """`store_uris`, opened (`s3://` ones with the config's object-storage settings)."""
    s3 = object_storage(config)
    return [open_store(uri, s3) for uri in store_uris(config)]


def store_uris(config: ConfigView) -> list[str]:
    """Distinct stores of the config's offload_artifacts processors, or `<lake>/_artifacts`."""
    uris: list[str] = []
    for block in config.processors_of_type(OFFLOAD_TYPE):
        uri = getattr(block, "store", None)
        if isinstance(uri, str) and uri not in uris:
            uris.append(uri)
    if uris:
        return uris
    if lake_scheme(config.lake_path) == "s3":
        return [f"{config.lake_path.rstrip('/')}/_artifacts"]
    return [str(Path(config.lake_path) / "_artifacts")]
