"""The reference format `artifact:sha256:<hex>` that replaces an offloaded attribute value.

The GenAI semantic conventions allow uploading content "in the telemetry processing pipeline"
and leave the reference format open; this is tracelake's answer. The hex is the lowercase
sha256 of the exact UTF-8 bytes of the original value, so a reference is also a checksum.
"""

from __future__ import annotations

import re

REF_PREFIX = "artifact:sha256:"
# RE2 and Python `re` alike: used with pyarrow.compute and in Python
REF_PATTERN = r"^artifact:sha256:[0-9a-f]{64}$"
_REF = re.compile(REF_PATTERN)
_HEX = re.compile(r"^[0-9a-f]{64}$")


def make_ref(digest: str) -> str:
    return REF_PREFIX + digest


def is_ref(value: object) -> bool:
    return isinstance(value, str) and _REF.match(value) is not None


def digest_of(ref: str) -> str:
    """The sha256 hex of a reference; a bare 64-char hex is accepted too (handy on the command line)."""
    text = ref.strip()
    if _REF.match(text):
        return text[len(REF_PREFIX) :]
    if _HEX.match(text):
        return text
    raise ValueError(f"not an artifact reference (expected {REF_PREFIX}<64 lowercase hex>): {ref!r}")
