"""`redact_pii`: typed placeholders instead of PII and secrets, before anything reaches the lake.

See README.md beside this file for the config keys, the fast path and the trade-off of running it in
the `ingest` chain.
"""

from __future__ import annotations

from core.processor import ProcessorFactory
from processors.redact_pii import engine as _engine  # noqa: F401  (offline tldextract before presidio loads)
from processors.redact_pii.config import RedactPiiConfig
from processors.redact_pii.hash_key import HashKeyMissing
from processors.redact_pii.processor import PiiRedactor

factory = ProcessorFactory(
    type="redact_pii",
    config_class=RedactPiiConfig,
    create=PiiRedactor,
    description="PII and secrets in every span string become typed placeholders (Presidio, RE2 fast path)",
)

__all__ = ["HashKeyMissing", "PiiRedactor", "RedactPiiConfig", "factory"]
