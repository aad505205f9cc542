"""Presidio never touches the network: not while the engine is built, not on the first analysis."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from processors.redact_pii.engine import find_ner_model

REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter so that tldextract, Presidio and spaCy are imported under the guard: a
# module-level download attempt at import time would be caught too.
GUARDED = textwrap.dedent(
    """
    import os, socket
    calls = []
    def refuse(self, address, *a, **k):
        calls.append(address)
        raise OSError("network access attempted: %r" % (address,))
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = lambda address, *a, **k: refuse(None, address)
    socket.getaddrinfo = lambda host, *a, **k: refuse(None, host)  # DNS comes before connect
    os.environ["TRACELAKE_HASH_KEY"] = "no-network-test-key-0123456789"

    from processors.redact_pii import PiiRedactor, RedactPiiConfig
    from processors.redact_pii.testing import make_batch, rows

    p = PiiRedactor(RedactPiiConfig())  # ner: auto, spaCy when the model is installed
    import tldextract
    assert tldextract.extract("mail.example.co.uk").suffix == "co.uk"  # Presidio's email validation path
    out = rows(p.process(make_batch([{"attrs": {
        "gen_ai.input.messages": "Maria Gonzalez (maria@example.co.uk) called from +44 20 7946 0958",
        "x": "sk-proj-Tq8vL2mN4pR6sX0zB3cF5hJ7kW9yA1dE",
    }}])))[0]["attributes"]
    assert "maria@example.co.uk" not in out["gen_ai.input.messages"], out
    assert out["x"] == "<API_KEY>", out
    assert calls == [], calls
    print("ok", p.ner_model)
    """
)


def test_no_network_during_build_and_first_analysis() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", GUARDED], cwd=REPO, capture_output=True, text=True, timeout=120, env={"PATH": ""}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok")
    if find_ner_model(None):
        assert "en_core_web_sm" in proc.stdout, proc.stdout  # the spaCy path was exercised too
