"""Apache Kafka as twin's broker engine, against the real thing (KRaft, one node): durable across
a stop and a crash, ``twin broker --engine kafka`` as a process, the gateway's idempotent
capture on it, and one clear line when Java or the jars are missing.

Needs a Java runtime (17+) and the jars ``make kafka`` fetches; ``make test`` runs it first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from tests.conftest import TopicReader
from tests.stations import BOOT, raw_station
from tests.test_cli_processes import process, wait_port
from twin.broker import BrokerError, KafkaBroker, ensure_topics, free_port, java_binary, wait_for_broker
from twin.settings import Settings


def _no_java() -> str | None:
    try:
        java_binary()
    except BrokerError as exc:
        return str(exc)
    return None


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_no_java() is not None, reason=f"Apache Kafka needs Java: {_no_java()}"),
]
TWIN = [sys.executable, "-m", "twin"]


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One Kafka for the tests that only use it, stopped by its process id."""
    broker = KafkaBroker(free_port(), tmp_path_factory.mktemp("kafka") / "data")
    try:
        yield broker.start()
    finally:
        broker.stop()


def _produce(bootstrap: str, topic: str, n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    sent = [(f"CS-{i % 7:04d}".encode(), f'{{"n": {i}}}'.encode()) for i in range(start, start + n)]
    for key, value in sent:
        producer.send(topic, key=key, value=value)
    producer.flush(30)
    producer.close()
    return sent


def _read_all(bootstrap: str, topic: str, count: int) -> list[tuple[bytes, bytes]]:
    """Every record of ``topic`` as (key, value), partition by partition in offset order; fails
    unless there are exactly ``count``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(parts)
    consumer.seek_to_beginning()
    got: dict[int, list[tuple[bytes, bytes]]] = {tp.partition: [] for tp in parts}
    deadline = time.monotonic() + 30
    while sum(map(len, got.values())) < count and time.monotonic() < deadline:
        for tp, batch in consumer.poll(timeout_ms=200).items():
            got[tp.partition].extend((m.key, m.value) for m in batch)
    for tp, batch in consumer.poll(timeout_ms=500).items():  # nothing more than that
        got[tp.partition].extend((m.key, m.value) for m in batch)
    consumer.close()
    records = [record for p in sorted(got) for record in got[p]]
    assert len(records) == count, f"{len(records)} records, produced {count}"
    return records


def test_kafka_keeps_every_topic_and_record_across_a_stop_and_a_crash(tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    broker = KafkaBroker(free_port(), data)
    settings = Settings(topic_prefix="dur.", partitions=3)
    try:
        broker.start()
        assert broker.formatted and (data / "broker.log").is_file()
        created = ensure_topics(settings, broker.bootstrap)
        assert set(created) == {spec.name for spec in settings.topics.specs()}
        first = _produce(broker.bootstrap, settings.topics.frames, 300)
        broker.stop()
        assert broker.process is None

        broker.start()  # the same directory: nothing formatted again, everything still there
        assert ensure_topics(settings, broker.bootstrap) == [], "every topic survived the restart"
        assert sorted(_read_all(broker.bootstrap, settings.topics.frames, 300)) == sorted(first)
        second = _produce(broker.bootstrap, settings.topics.frames, 200, start=300)
        pid = broker.process.pid if broker.process else -1
        broker.kill()  # SIGKILL: what was acknowledged (acks=all) is kept all the same
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

        broker.port = free_port()  # another client port: the data does not depend on it
        broker.start()
        got = _read_all(broker.bootstrap, settings.topics.frames, 500)
        assert sorted(got) == sorted(first + second)
        for station in {key for key, _ in got}:  # in order per key, as produced
            assert [v for k, v in got if k == station] == [v for k, v in first + second if k == station]
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, settings.topics.state)])
        signals = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, settings.topics.signals)])
        admin.close()
        assert "'cleanup.policy': {'value': 'compact'" in str(configs), f"twin.state is still compacted: {configs}"
        assert "'retention.ms': {'value': '-1'" in str(signals), f"grid.signals is kept whole: {signals}"
    finally:
        broker.stop()
    log = (data / "broker.log").read_text()
    assert log.count("Formatting metadata directory") == 1, "formatted on the first start only"


def test_twin_broker_engine_kafka_as_a_process(tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "kafka"
    bootstrap = f"127.0.0.1:{port}"
    argv = ["broker", "--engine", "kafka", "--port", str(port), "--data-dir", str(data)]
    settings = Settings()
    for run, log in enumerate([tmp_path / "first.log", tmp_path / "second.log"]):
        with process(argv, log) as broker:
            wait_for_broker(bootstrap, timeout=90, process=broker)
            deadline = time.monotonic() + 30
            while "topics:" not in log.read_text() and time.monotonic() < deadline:
                assert broker.poll() is None, log.read_text()
                time.sleep(0.1)
            said = log.read_text()
            assert f"Apache Kafka 4.1.1 (KRaft) on {bootstrap}" in said, said
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            assert {spec.name for spec in settings.topics.specs()} <= set(admin.list_topics())
            admin.close()
            assert ("topics: existing" in said) == (run == 1), "the second start finds the first's topics"
            jvm = int(said.split("(pid ")[1].split(",")[0])
            began = time.monotonic()
            broker.send_signal(signal.SIGTERM)
            assert broker.wait(15) == 0, log.read_text()
            took = time.monotonic() - began
        assert took < 10, f"SIGTERM took {took:.1f} s"
        with pytest.raises(ProcessLookupError):  # the JVM went with it
            os.kill(jvm, 0)
    with pytest.raises(BrokerError):
        wait_for_broker(bootstrap, timeout=0.5)


async def test_the_gateway_captures_idempotently_on_kafka(kafka: KafkaBroker, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "gateway.log"
    args = ["gateway", "--bootstrap", kafka.bootstrap, "--port", str(port), "--spool", str(tmp_path / "spool")]
    with process(args, log, env={"TWIN_TOPIC_PREFIX": "gw."}) as gateway:
        wait_port(port, gateway, log, timeout=60)
        async with raw_station(f"ws://127.0.0.1:{port}/ocpp/CS-KAFKA") as st:
            answer = await st.ask(BOOT, timeout=15)
            assert answer[0] == 3 and answer[2]["status"] == "Accepted"
        reader = TopicReader(kafka.bootstrap, "gw.ocpp.frames")
        records = reader.wait(lambda rs: any(r["action"] == "Disconnected" for r in rs), timeout=30)
        reader.close()
    text = log.read_text()
    assert gateway.returncode == 0, text
    assert "capture mode: idempotent" in text, text
    assert [(r["action"], r["msg_type"]) for r in records] == [
        ("Connected", 0), ("BootNotification", 2), ("BootNotification", 3), ("Disconnected", 0),
    ]  # fmt: skip
    assert {r["station_id"] for r in records} == {"CS-KAFKA"}


def _one_line_error(env: dict[str, str], tmp_path: Path) -> str:
    argv = [*TWIN, "broker", "--engine", "kafka", "--port", str(free_port()), "--data-dir", str(tmp_path / "k")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_missing_jars_or_java_say_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    line = _one_line_error({"TWIN_KAFKA_LIB": str(tmp_path / "empty")}, tmp_path)
    assert line.startswith("error: no Apache Kafka jars in ") and "run `make kafka`" in line
    line = _one_line_error({"PATH": str(tmp_path / "empty"), "JAVA_HOME": ""}, tmp_path)
    assert "install a Java runtime (17+): apt-get install default-jre-headless, or run `make kafka`" in line
    assert not (tmp_path / "k").exists(), "nothing started, nothing written"
