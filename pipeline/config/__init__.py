from pipeline.config.loader import (
    Config,
    ConfigError,
    ConfigIssue,
    ProcessorSpec,
    default_config,
    load,
    parse,
)

__all__ = ["Config", "ConfigError", "ConfigIssue", "ProcessorSpec", "default_config", "load", "parse"]
