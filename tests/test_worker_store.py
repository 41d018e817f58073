"""The worker's table of twins on RocksDB (``--store rocksdb``): twins folded, kept on disk
in the data directory, and there again after a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from tests.scenarios import SCENARIOS
from twin import envelope
from twin.broker import EmbeddedBroker, free_port
from twin.settings import Settings

pytestmark = pytest.mark.integration


def twin_of(port: int, station: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/stations/{station}", timeout=3) as response:
            value: dict[str, Any] = json.loads(response.read())
            return value
    except Exception:
        return None


def wait_twin(worker: subprocess.Popen[bytes], port: int, station: str, frames: int, log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert worker.poll() is None, log.read_text()[-3000:]
        twin = twin_of(port, station)
        if twin and twin.get("frames_folded") == frames:
            return twin
        time.sleep(0.3)
    raise AssertionError(
        f"no twin of {station} at {frames} frames: {twin_of(port, station)}\n{log.read_text()[-3000:]}"
    )


def test_twins_on_rocksdb_survive_a_restart(broker: EmbeddedBroker, settings: Settings, tmp_path: Path) -> None:
    script = SCENARIOS["v2g"][0]()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for record in script.records:
        producer.send(settings.topics.frames, key=record["station_id"].encode(), value=envelope.dumps(record))
    producer.flush()
    producer.close()
    env = {**os.environ, "TWIN_TOPIC_PREFIX": settings.topic_prefix, "TWIN_PARTITIONS": str(settings.partitions)}
    port, data = free_port(), tmp_path / "worker"
    command = [sys.executable, "-m", "twin", "worker", "-b", broker.bootstrap, "--web-port", str(port),
               "--data-dir", str(data), "--store", "rocksdb"]  # fmt: skip
    log = tmp_path / "worker.log"
    twins = []
    for _ in range(2):  # fold, stop; start again on the same data directory
        with log.open("ab") as out:
            worker = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            twins.append(wait_twin(worker, port, script.station, len(script.records), log))
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    assert twins[0] == twins[1]
    SCENARIOS["v2g"][1](twins[1])
    assert list(data.rglob("CURRENT")), "RocksDB files in the worker's data directory"


def test_an_unknown_store_is_refused(broker: EmbeddedBroker) -> None:
    done = subprocess.run([sys.executable, "-m", "twin", "worker", "-b", broker.bootstrap, "--store", "mongo"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and "memory or rocksdb" in done.stderr
