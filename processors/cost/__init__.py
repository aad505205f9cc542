"""`cost`: dollars on every LLM call from provider-reported tokens and genai-prices (or YAML overrides).

See README.md beside this file for the config keys, the token arithmetic per attribute dialect and
`tracelake prices`.
"""

from __future__ import annotations

from core.processor import ProcessorFactory
from processors.cost.config import CostConfig, PriceOverride, load_overrides_file
from processors.cost.prices import GENAI_PRICES_VERSION, PriceTable, ResolvedPrice, describe
from processors.cost.processor import CostProcessor

factory = ProcessorFactory(
    type="cost",
    config_class=CostConfig,
    create=CostProcessor,
    description="cost_usd / cost_status on every LLM span from genai-prices, with YAML price overrides",
)

__all__ = [
    "GENAI_PRICES_VERSION",
    "CostConfig",
    "CostProcessor",
    "PriceOverride",
    "PriceTable",
    "ResolvedPrice",
    "describe",
    "factory",
    "load_overrides_file",
]
