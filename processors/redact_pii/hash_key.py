"""The `hash` action: where its HMAC key comes from, and the token it turns an id into.

A token carries its own form, `hmac:` + 32 hex digits, so that hashing is idempotent: a value that is
already a token is left as it is. That is what lets the same config hash `user.id` in the receiver's
ingest chain and again in the worker (conf/tracelake.yaml) and still store HMAC(id), not
HMAC(HMAC(id)), whatever the chain. `tracelake forget` derives the same token from the raw id, plus the
forms older versions stored (see `lookup_tokens`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path

from processors.redact_pii.config import RedactPiiConfig

log = logging.getLogger("tracelake.processor.redact_pii")

MIN_HASH_KEY_BYTES = 16
TOKEN_PREFIX = "hmac:"
# RE2 and Python: a value that is exactly one token (surrounding whitespace is not allowed)
TOKEN_RE = r"^hmac:[0-9a-f]{32}$"
_TOKEN = re.compile(TOKEN_RE)


class HashKeyMissing(RuntimeError):
    """`hash` is configured (it is by default, for user ids) but no key could be read."""


def read_hash_key(config: RedactPiiConfig) -> bytes:
    """The HMAC key: from the environment variable, else from hash_key_file. No silent default: a key that
    every install derives the same way would make the hashes reversible by anyone with a list of user ids."""
    raw = os.environ.get(config.hash_key_env, "")
    source = f"environment variable {config.hash_key_env}"
    if not raw and config.hash_key_file:
        path = Path(config.hash_key_file)
        source = f"hash_key_file {path}"
        try:
            if config.create_hash_key_file and not path.exists():
                _create_key_file(path)
            raw = path.read_text().strip()
        except OSError as e:
            raise HashKeyMissing(f"redact_pii: cannot read {source}: {e.strerror}") from None
    if not raw:
        raise HashKeyMissing(
            f"redact_pii: `hash` needs an HMAC key (user ids are hashed by default) and {source} is not set. "
            f"Set it to a random secret shared by every tracelake process writing the same lake, e.g. "
            f"`export {config.hash_key_env}=$(openssl rand -hex 32)`, or point hash_key_file at a file that holds "
            f"it. Changing the key changes every hashed id."
        )
    key = raw.encode()
    if len(key) < MIN_HASH_KEY_BYTES:
        raise HashKeyMissing(f"redact_pii: the key from {source} is shorter than {MIN_HASH_KEY_BYTES} bytes")
    return key


def _create_key_file(path: Path) -> None:
    """A fresh 256-bit key, readable by this user only; O_EXCL so two processes starting together agree."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    log.warning("redact_pii: created a new hash key in %s; keep it: a new key changes every hashed id", path)


def _hex(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


def hash_value(key: bytes, value: str) -> str:
    """`hmac:` + HMAC-SHA256 (128 bits, hex): same id → same token (joinable), not reversible without the key.
    A value that already is a token is returned unchanged (hashing twice must not change it)."""
    if is_token(value):
        return value
    return TOKEN_PREFIX + _hex(key, value)


def is_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX) and _TOKEN.match(value) is not None


def lookup_tokens(key: bytes, raw_id: str) -> list[str]:
    """Every form `raw_id` may be stored in by a redact_pii with this key: the token, and what lakes written
    before tokens carried their form hold (32 bare hex digits; and HMAC of that, when the shipped config
    hashed in the receiver and again in the worker)."""
    legacy = _hex(key, raw_id)
    return [hash_value(key, raw_id), legacy, _hex(key, legacy)]
