"""Feedback from the UI goes where every other feedback goes: the receiver's `POST /v1/feedback`.

So it travels over the bus as a feedback span of its trace, passes the processor chain (redaction of
the comment, tail sampling's late-feedback rescue of a sampled-out trace) and lands in `feedback`.
Inside `tracelake run` the UI calls the receiver's route in process; `tracelake ui` on its own posts
over HTTP(S) to the receiver named by the config.

Feedback carries the tenant of the trace it rates (README "Securing receivers": it counts only toward
a trace of its own tenant). In process the UI vouches for it itself; over the network it names the
tenant in `X-Scope-OrgID` with `ui.feedback_token`, a token that may write every tenant.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable

from pipeline.bus.base import BusRefused
from pipeline.config import Config
from pipeline.receiver.auth import Caller, Principal
from pipeline.receiver.http_server import Route
from pipeline.receiver.intake import InvalidRequest

# (body (JSON), the rated trace's tenant or None) -> (HTTP status, response body)
FeedbackPost = Callable[[bytes, str | None], tuple[int, bytes]]


class FeedbackUnavailable(RuntimeError):
    """No receiver to send feedback to, or it did not answer."""


def receiver_feedback_url(config: Config) -> str | None:
    """`ui.feedback_url`, else `/v1/feedback` on the config's OTLP/HTTP receiver, else None."""
    if config.raw.ui.feedback_url:
        return config.raw.ui.feedback_url
    http = config.raw.receivers.otlp.http
    if http is None:
        return None
    host, _, port = http.endpoint.rpartition(":")
    if host in ("0.0.0.0", "", "::", "[::]"):  # listening everywhere: reach it on loopback
        host = "127.0.0.1"
    return f"{'https' if http.tls is not None else 'http'}://{host}:{port}/v1/feedback"


def http_poster(
    url: str, token: str | None = None, ca_file: str | None = None, timeout_s: float = 10.0
) -> FeedbackPost:
    """POST to `url`; with `token`, as `Authorization: Bearer` naming the trace's tenant in X-Scope-OrgID."""
    context = ssl.create_default_context(cafile=ca_file) if url.startswith("https:") else None

    def post(body: bytes, tenant: str | None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
            if tenant is not None:
                headers["X-Scope-OrgID"] = tenant
        req = urllib.request.Request(url, body, headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s, context=context) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            raise FeedbackUnavailable(f"the receiver at {url} did not answer: {getattr(e, 'reason', e)}") from None

    return post


def in_process_poster(route: Route) -> FeedbackPost:
    """The receiver's own `/v1/feedback` handler, without the network hop (UI inside `tracelake run`).
    The UI's own access rules stand in for the receiver's tokens: it vouches for the trace's tenant."""

    def post(body: bytes, tenant: str | None) -> tuple[int, bytes]:
        caller = Caller(Principal("ui", tenant)) if tenant is not None else None
        try:
            status, payload, _ctype = route(body, "application/json", caller)
        except InvalidRequest as e:
            return 400, json.dumps({"message": str(e)}).encode()
        except BusRefused as e:  # bus full, Kafka down, a rate limit: the user may try again
            return 503, json.dumps({"message": e.reason}).encode()
        return status, payload

    return post


def error_message(status: int, body: bytes) -> str:
    """The receiver's reason for refusing, from its JSON (`message`) or as text."""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("message"):
            return f"{status}: {doc['message']}"
    except ValueError:
        pass
    return f"{status}: {body[:200].decode('utf-8', 'replace')}"
