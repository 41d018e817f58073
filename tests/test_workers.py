"""Worker deployments: the table of twins on RocksDB (``--store rocksdb``), kept on disk and
there again after a restart; and two workers sharing the partitions, either answering for
any station."""

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


def get(port: int, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return json.loads(response.read())
    except Exception:
        return None


def test_two_workers_answer_for_every_station(broker: EmbeddedBroker, settings: Settings, tmp_path: Path) -> None:
    from kafka.partitioner.default import murmur2

    stations = [f"SC-TWO-{i}" for i in range(8)]
    assert {(murmur2(s.encode()) & 0x7FFFFFFF) % settings.partitions for s in stations} == {0, 1}
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    counts = {}
    for station in stations:
        script = SCENARIOS["identity-2.1"][0]()
        script.station = station
        counts[station] = len(script.records)
        for record in script.records:
            producer.send(
                settings.topics.frames, key=station.encode(), value=envelope.dumps({**record, "station_id": station})
            )
    producer.flush()
    producer.close()
    env = {**os.environ, "TWIN_TOPIC_PREFIX": settings.topic_prefix, "TWIN_PARTITIONS": str(settings.partitions)}
    ports = [free_port(), free_port()]
    workers = []
    try:
        for n, port in enumerate(ports):
            with (tmp_path / f"worker{n}.log").open("ab") as out:
                command = [sys.executable, "-m", "twin", "worker", "-b", broker.bootstrap, "--web-port", str(port),
                           "--data-dir", str(tmp_path / f"w{n}")]  # fmt: skip
                workers.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env))
            time.sleep(3)
        deadline = time.monotonic() + 120
        split: list[set[str]] = []
        while time.monotonic() < deadline:  # both assigned, all folded
            assert all(w.poll() is None for w in workers), (tmp_path / "worker1.log").read_text()[-3000:]
            local = [get(port, "/v1/stations?scope=local") for port in ports]
            if all(local):
                split = [{r["station_id"] for r in rows["stations"]} for rows in local]
                if all(split) and not (split[0] & split[1]) and split[0] | split[1] == set(stations):
                    break
            time.sleep(1)
        assert all(split) and split[0] | split[1] == set(stations), f"split {split}"
        for station in stations:
            answers = [get(port, f"/v1/stations/{station}") for port in ports]
            assert answers[0] == answers[1] and answers[0]["frames_folded"] == counts[station], station
        for port in ports:
            assert [r["station_id"] for r in get(port, "/v1/stations")["stations"]] == sorted(stations)
            assert get(port, "/v1/fleet/summary")["stations"] == len(stations)
        assert get(ports[0], "/v1/stations/NOPE") is None, "404 from the owner, routed"
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(30)
