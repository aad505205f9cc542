"""Freshness the server cannot give must not go unnoticed: spans waiting in the bus are reported."""

from __future__ import annotations

import logging
import time

import pytest

from pipeline import service
from pipeline.config import parse
from tests.conftest import make_request


def test_spans_waiting_in_the_bus_beyond_the_freshness_target_are_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse(
        {
            "receivers": {"otlp": {"grpc": {"endpoint": "127.0.0.1:0"}}},
            "telemetry": {"endpoint": None},
            "compaction": {"background": False},
        },
        "t.yaml",
        env={},
    )
    svc = service.Service(config)  # not started: nothing takes from the bus
    try:
        assert svc.warn_if_behind() is False  # an empty bus is never behind
        request = make_request([{"trace_id": "ab" * 16, "span_id": "cd" * 8}])
        svc.publisher.publish(request, None, 1)  # type: ignore[union-attr]
        monkeypatch.setattr(service, "BEHIND_WARNING_S", 0.05)
        assert svc.warn_if_behind() is False  # published a moment ago
        time.sleep(0.1)
        with caplog.at_level(logging.WARNING, logger="tracelake"):
            assert svc.warn_if_behind() is True
            assert svc.warn_if_behind() is False  # once a minute, not every half second
            assert svc.warn_if_behind(now=time.monotonic() + service.BEHIND_WARNING_EVERY_S) is True
    finally:
        if svc.workers is not None:  # launched by the constructor
            svc.workers.kill()
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "the worker is 0 s behind",
        "the worker is 0 s behind",
    ]
    assert "1 spans wait in the bus" in caplog.records[0].getMessage()
