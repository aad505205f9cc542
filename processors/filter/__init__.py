"""`filter`: drop spans by name, span type, status, kind, service or attribute values.

Modelled on the OpenTelemetry Collector's filter processor; see README.md beside this file.
"""

from __future__ import annotations

from core.processor import ProcessorFactory
from processors.filter.config import FilterConfig, SpanCondition, SpanFilter
from processors.filter.processor import FilterProcessor

factory = ProcessorFactory(
    type="filter",
    config_class=FilterConfig,
    create=FilterProcessor,
    description="drop spans matching any exclude condition, or not matching any include condition",
    example_config={"spans": {"include": [{"span_type": ["llm"]}]}},
)

__all__ = ["FilterConfig", "FilterProcessor", "SpanCondition", "SpanFilter", "factory"]
