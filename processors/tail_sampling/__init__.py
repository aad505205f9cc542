"""`tail_sampling`: keep or drop whole traces once they are complete, by Collector-style policies.

See README.md beside this file for the config keys, the policies and the contract with the worker
(held spans, decision cache, late feedback, Kafka offsets).
"""

from __future__ import annotations

from core.processor import ProcessorFactory
from processors.tail_sampling.config import TailSamplingConfig
from processors.tail_sampling.processor import TailSampler

factory = ProcessorFactory(
    type="tail_sampling",
    config_class=TailSamplingConfig,
    create=TailSampler,
    description="holds each trace until it is complete, then keeps it when any policy does (errors, cost, "
    "latency, feedback, attributes, probabilistic)",
    stateful=True,
    example_config={
        "decision_wait": "0s",
        "policies": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "thumbs_down", "type": "feedback", "feedback": {"max_value": 0}},
            {"name": "half", "type": "probabilistic", "probabilistic": {"sampling_percentage": 50}},
        ],
    },
)

__all__ = ["TailSampler", "TailSamplingConfig", "factory"]
