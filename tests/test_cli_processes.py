"""The CLI contract as outside tools use it: real processes, stopped by their own pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TopicReader
from tests.stations import BOOT, raw_station
from twin import runtime
from twin.broker import BrokerError, free_port, wait_for_broker

pytestmark = pytest.mark.integration
TWIN = [sys.executable, "-m", "twin"]


@contextlib.contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(TWIN + args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        runtime.stop(proc, signal.SIGINT, 10)


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing on port {port}: {log.read_text()}")


async def test_twin_broker_and_twin_gateway_as_processes(engine: str, tmp_path: Path) -> None:
    broker_port, gateway_port = free_port(), free_port()
    bootstrap = f"127.0.0.1:{broker_port}"
    kafka = ["--engine", "kafka", "--data-dir", str(tmp_path / "kafka")] if engine == "kafka" else []
    with process(["broker", "--port", str(broker_port), *kafka], tmp_path / "broker.log") as broker:
        wait_for_broker(bootstrap, timeout=90 if kafka else 20, process=broker)
        args = ["gateway", "--bootstrap", bootstrap, "--port", str(gateway_port), "--spool", str(tmp_path / "spool")]
        with process(args, tmp_path / "gateway.log") as gateway:
            wait_port(gateway_port, gateway, tmp_path / "gateway.log")
            async with raw_station(f"ws://127.0.0.1:{gateway_port}/any/path/CS-PROC") as st:
                assert (await st.ask(BOOT))[0] == 3
            reader = TopicReader(bootstrap, "ocpp.frames")
            records = reader.wait(lambda rs: any(r["action"] == "Disconnected" for r in rs))
            reader.close()
        assert gateway.returncode == 0, (tmp_path / "gateway.log").read_text()
        log = (tmp_path / "gateway.log").read_text()
        # the capture mode in force is stated: Tansu grants no producer ids, Kafka does
        assert f"capture mode: {'idempotent' if kafka else 'acks=all'}" in log, log
    assert broker.returncode == 0
    assert [r["action"] for r in records] == ["Connected", "BootNotification", "BootNotification", "Disconnected"]
    assert all(r["station_id"] == "CS-PROC" for r in records)
    with pytest.raises(BrokerError):  # the broker went with its process
        wait_for_broker(bootstrap, timeout=0.5)


def test_a_clear_error_when_the_cluster_is_unreachable(tmp_path: Path) -> None:
    result = subprocess.run(
        TWIN + ["gateway", "--bootstrap", f"127.0.0.1:{free_port()}", "--port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no Kafka broker answers" in result.stderr and "Traceback" not in result.stderr


def test_a_clear_error_when_the_broker_port_is_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = subprocess.run(TWIN + ["broker", "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "already in use" in result.stderr and "Traceback" not in result.stderr
