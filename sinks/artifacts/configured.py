"""The artifact stores a config names: every distinct `store:` of its offload_artifacts blocks.

Read by `tracelake artifact get` / `gc` (sinks/artifacts/cli.py) and by the lake readers (`tracelake query`,
`trace`, `forget`, `ui`), which resolve `artifact(ref)` through the same stores.
"""

from __future__ import annotations

from pathlib import Path

from core.command import ConfigView

OFFLOAD_TYPE = "offload_artifacts"


def store_uris(config: ConfigView) -> list[str]:
    """Distinct stores of the config's offload_artifacts processors, or `<lake>/_artifacts`."""
    uris: list[str] = []
    for block in config.processors_of_type(OFFLOAD_TYPE):
        uri = getattr(block, "store", None)
        if isinstance(uri, str) and uri not in uris:
            uris.append(uri)
    return uris or [str(Path(config.lake_path) / "_artifacts")]
