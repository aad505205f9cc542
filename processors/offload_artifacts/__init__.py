"""`offload_artifacts`: large attribute values out of the spans, into a content-addressed store.

See README.md beside this file for the config keys, the reference format and why the processor
must run after redact_pii.
"""

from __future__ import annotations

from core.processor import ProcessorFactory
from processors.offload_artifacts.config import OffloadArtifactsConfig
from processors.offload_artifacts.order import order_warnings
from processors.offload_artifacts.processor import ArtifactOffloader, ArtifactStoreError

factory = ProcessorFactory(
    type="offload_artifacts",
    config_class=OffloadArtifactsConfig,
    create=ArtifactOffloader,
    description="large attribute values become artifact:sha256:<hex> references into a content-addressed store",
)

__all__ = ["ArtifactOffloader", "ArtifactStoreError", "OffloadArtifactsConfig", "factory", "order_warnings"]
