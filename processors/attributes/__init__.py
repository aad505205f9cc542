"""`attributes`: insert, update, upsert, delete, hash and rename span or resource attributes.

Modelled on the OpenTelemetry Collector's attributes processor; see README.md beside this file.
"""

from __future__ import annotations

from core.processor import ProcessorFactory
from processors.attributes.config import AttributeAction, AttributesConfig
from processors.attributes.processor import AttributesProcessor

factory = ProcessorFactory(
    type="attributes",
    config_class=AttributesConfig,
    create=AttributesProcessor,
    description="insert/update/upsert/delete/hash/rename span and resource attributes (Collector-style)",
    example_config={"actions": [{"key": "*", "action": "hash"}]},
)

__all__ = ["AttributeAction", "AttributesConfig", "AttributesProcessor", "factory"]
