"""Bearer-token authentication of exports and feedback (`receivers.otlp.auth`).

Clients send `authorization: Bearer <token>` (OTel SDKs: `OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<token>`).
tracelake keeps only each token's SHA-256: the config and the tokens file hold digests (or the
name of an environment variable holding the token, hashed at start), so neither a leaked config nor
memory dump gives a token away. Tokens are long random strings (`tracelake token new`), so a plain
SHA-256 is the right hash: slow password hashes exist for guessable secrets and would cost every
request. A presented token is hashed and looked up by its digest, never compared as text: what the
lookup's timing could reveal is about a digest, and a digest gives no way back to a token (the
constant-time property a `hmac.compare_digest` of the tokens would give, without a pass over every
token per request).

No token material is ever logged or counted: failures are counted by reason, and logged (at most
every few seconds) with the peer and the reason only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError

from core import metrics
from pipeline.config.model import AuthConfig, TokenConfig
from pipeline.receiver.watched_files import WatchedFiles

log = logging.getLogger("tracelake.auth")

# Reasons a request is refused before anything is read (HTTP 401 / gRPC UNAUTHENTICATED).
MISSING = "missing_token"
MALFORMED = "malformed_header"
UNKNOWN = "unknown_token"
# ...and after (HTTP 403 / gRPC PERMISSION_DENIED): a tenant the token may not write.
DENIED = "tenant_denied"


class Unauthenticated(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TenantDenied(Exception):
    """The token may not write this tenant: HTTP 403 / gRPC PERMISSION_DENIED; nothing is kept."""


class TokenFileError(Exception):
    """The tokens file (or an inline token) is unusable; the message names the file and the entry."""


@dataclass(frozen=True)
class Principal:
    """Who sent a request: the token's name (never the token) and the tenants it may write."""

    name: str
    tenant: str  # stamped on what it sends; the default when it may choose
    tenants: frozenset[str] = frozenset()  # further tenants it may name
    any_tenant: bool = False  # tenants: "*"

    @property
    def may_choose(self) -> bool:
        return self.any_tenant or bool(self.tenants)

    def may_write(self, tenant: str) -> bool:
        return tenant == self.tenant or self.any_tenant or tenant in self.tenants


@dataclass(frozen=True)
class Caller:
    """A request's credentials, as the tenancy step needs them."""

    principal: Principal
    # the tenant named for the whole request (X-Scope-OrgID header / x-scope-orgid metadata), if any
    claimed_tenant: str | None = None


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    """256 random bits, URL-safe, with a prefix that secret scanners and people recognise."""
    return "tlk_" + secrets.token_urlsafe(32)


_TOKENS_FILE = TypeAdapter(dict[str, list[TokenConfig]])


def _principals(entries: Iterable[tuple[str, TokenConfig]], env: dict[str, str]) -> dict[bytes, Principal]:
    out: dict[bytes, Principal] = {}
    names: dict[str, str] = {}
    for where, entry in entries:
        if entry.sha256 is not None:
            digest = bytes.fromhex(entry.sha256)
        else:
            token = env.get(entry.token_env or "")
            if not token:
                raise TokenFileError(f"{where}.token_env: environment variable {entry.token_env} is not set or empty")
            digest = token_digest(token)
        if digest in out:
            raise TokenFileError(f"{where}: the same token as {names[digest.hex()]}")
        if entry.name in names.values():
            raise TokenFileError(f"{where}.name: {entry.name!r} names two tokens; names identify tokens in logs")
        names[digest.hex()] = where
        tenants = entry.tenants
        out[digest] = Principal(
            name=entry.name,
            tenant=entry.tenant,
            tenants=frozenset() if tenants is None or tenants == "*" else frozenset(tenants),
            any_tenant=tenants == "*",
        )
    return out


def read_tokens_file(path: str) -> list[tuple[str, TokenConfig]]:
    """Entries of a tokens file (`tokens: [...]`), each with where it is, for error messages."""
    from pipeline.config.loader import pydantic_issues

    try:
        document = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise TokenFileError(f"{path}: cannot read the tokens file: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise TokenFileError(f"{path}: not YAML: {e}") from None
    if not isinstance(document, dict) or set(document) != {"tokens"}:
        raise TokenFileError(f"{path}: expected a mapping with one key, tokens: a list of tokens")
    try:
        parsed = _TOKENS_FILE.validate_python(document)
    except ValidationError as err:
        raise TokenFileError("; ".join(f"{path}: {issue}" for issue in pydantic_issues(err, ""))) from None
    return [(f"{path}: tokens[{i}]", entry) for i, entry in enumerate(parsed["tokens"])]


def load_principals(config: AuthConfig, env: dict[str, str] | None = None) -> dict[bytes, Principal]:
    """Every token of the config and of its tokens file, by digest; TokenFileError names what is wrong."""
    env = dict(os.environ) if env is None else env
    entries = [(f"receivers.otlp.auth.tokens[{i}]", t) for i, t in enumerate(config.tokens)]
    if config.tokens_file is not None:
        entries += read_tokens_file(config.tokens_file)
    return _principals(entries, env)


class AuthStats:
    """Refused credentials by transport and reason (no token material); warnings at most every 10 s."""

    LOG_EVERY = 10.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures: Counter[tuple[str, str]] = Counter()
        self._unlogged: Counter[str] = Counter()
        self._logged_at = 0.0

    def failed(self, transport: str, reason: str, peer: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.failures[(transport, reason)] += 1
            self._unlogged[reason] += 1
            if now - self._logged_at < self.LOG_EVERY:
                return
            self._logged_at = now
            counts, self._unlogged = self._unlogged, Counter()
        summary = ", ".join(f"{n} {r}" for r, n in sorted(counts.items()))
        log.warning("refused credentials (%s over %s, the latest from %s)", summary, transport, peer)

    def metrics(self) -> list[metrics.Sample]:
        return [
            metrics.counter(
                "tracelake_receiver_auth_failures",
                "requests refused for their credentials: missing_token, malformed_header, unknown_token (401 / "
                "UNAUTHENTICATED), tenant_denied (403 / PERMISSION_DENIED)",
                n,
                transport=transport,
                reason=reason,
            )
            for (transport, reason), n in sorted(self.failures.items())
        ]


class Authenticator:
    """Bearer token → Principal. The tokens file is read again when it changes (revocation without restart)."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self.stats = AuthStats()
        self._principals = load_principals(config)
        self._watch = WatchedFiles([config.tokens_file], config.reload_interval) if config.tokens_file else None
        log.info("authentication on: %d tokens", len(self._principals))

    def _reload(self) -> None:
        if self._watch is None or not self._watch.due():
            return
        try:
            principals = load_principals(self.config)
        except TokenFileError as e:
            self._watch.retry_soon()
            log.error("keeping the tokens loaded before: %s", e)
            return
        self._principals = principals
        log.info("tokens file %s reloaded: %d tokens", self.config.tokens_file, len(principals))

    def authenticate(self, authorization: str | None, claimed_tenant: str | None, transport: str, peer: str) -> Caller:
        """The caller behind an `authorization` header, or Unauthenticated (counted, logged without the token)."""
        self._reload()
        if not authorization:
            self._fail(transport, MISSING, peer)
            raise Unauthenticated(MISSING, "missing credentials: send authorization: Bearer <token>")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            self._fail(transport, MALFORMED, peer)
            raise Unauthenticated(MALFORMED, "the authorization header must be: Bearer <token>")
        principal = self._principals.get(token_digest(token))
        if principal is None:
            self._fail(transport, UNKNOWN, peer)
            raise Unauthenticated(UNKNOWN, "invalid token")
        claimed = (claimed_tenant or "").strip() or None
        return Caller(principal, claimed)

    def denied(self, transport: str, peer: str) -> None:
        """Count a request refused because its token may not write the tenant it names."""
        self.stats.failed(transport, DENIED, peer)

    def _fail(self, transport: str, reason: str, peer: str) -> None:
        self.stats.failed(transport, reason, peer)
