"""Fixtures: one broker per engine per test session, topics isolated per test by a prefix,
gateways started in the test's event loop, and a reader that waits for records on a topic
with kafka-python.

The integration suite is written once and runs on every engine, as pyeventsourcing runs one
suite on every recorder: the ``engine`` fixture is parametrised over Tansu (embedded, in
memory) and Apache Kafka (KRaft, durable), and ``broker`` (on one session's broker) and
``new_broker`` (a broker of the test's own, to kill and restart) follow it. Test ids say the
engine: ``test_x[tansu]``, ``test_x[kafka]``. ``TWIN_TEST_ENGINES=tansu`` (or ``kafka``, or
``tansu,kafka``, the default) runs a subset; ``make test`` runs both. Where Kafka cannot run
(no Java 17+, or no jars: ``make kafka``), its tests are skipped, saying why.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from twin.broker import BrokerError, EmbeddedBroker, KafkaBroker, ensure_topics, free_port, java_binary, kafka_lib
from twin.gateway.server import Gateway
from twin.settings import Settings

_prefixes = itertools.count(1)

Broker = EmbeddedBroker | KafkaBroker
ENGINES = ("tansu", "kafka")


def engines() -> list[str]:
    """The engines to run the suite on: ``TWIN_TEST_ENGINES`` (comma-separated), else all."""
    wanted = [e.strip() for e in os.environ.get("TWIN_TEST_ENGINES", ",".join(ENGINES)).split(",") if e.strip()]
    unknown = set(wanted) - set(ENGINES)
    if unknown or not wanted:
        raise pytest.UsageError(f"TWIN_TEST_ENGINES: {sorted(unknown) or 'nothing'}; choose from {', '.join(ENGINES)}")
    return wanted


def kafka_missing() -> str | None:
    """Why Apache Kafka cannot run here (no Java 17+, or no jars), or None."""
    try:
        java_binary()
        kafka_lib()
    except BrokerError as exc:
        return str(exc)
    return None


def make_broker(engine: str, port: int, workdir: Path) -> Broker:
    """A broker (not started) of ``engine`` on ``port``; Kafka keeps its data in ``workdir``, so
    a second one made on the same ``workdir`` finds the first one's topics and records."""
    if engine == "kafka":
        return KafkaBroker(port, workdir / "kafka")
    return EmbeddedBroker(port, log=workdir / "tansu.log")


@pytest.fixture(scope="session", params=engines())
def engine(request: pytest.FixtureRequest) -> str:
    """The broker engine of this run of the test: ``tansu`` or ``kafka``."""
    name: str = request.param
    if name == "kafka" and (missing := kafka_missing()) is not None:
        pytest.skip(f"Apache Kafka cannot run here: {missing}")
    return name


@pytest.fixture(scope="session")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Broker]]:
    """The session's brokers, one per engine: ``brokers(engine)`` starts it on first use; all
    are stopped by their process ids when the session ends."""
    running: dict[str, Broker] = {}

    def get(engine: str) -> Broker:
        if engine not in running:
            workdir = tmp_path_factory.mktemp(f"broker-{engine}")
            running[engine] = make_broker(engine, free_port(), workdir).start()
        return running[engine]

    yield get
    for started in running.values():
        started.stop()


@pytest.fixture(scope="session")
def broker(engine: str, brokers: Callable[[str], Broker]) -> Broker:
    """The session's broker of this engine."""
    return brokers(engine)


@pytest.fixture(scope="session")
def kafka_broker(brokers: Callable[[str], Broker]) -> Broker:
    """The session's Apache Kafka, for tests of Kafka alone (skipped where Kafka is not among
    ``TWIN_TEST_ENGINES`` or cannot run)."""
    if "kafka" not in engines():
        pytest.skip("Kafka is not among TWIN_TEST_ENGINES")
    if (missing := kafka_missing()) is not None:
        pytest.skip(f"Apache Kafka cannot run here: {missing}")
    return brokers("kafka")


@pytest.fixture
def new_broker(engine: str, tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Brokers of the test's own, of this engine: ``new_broker(port)`` makes one (not started),
    on this test's data directory (Kafka finds its topics again after a restart; Tansu starts
    empty). Whatever is still running at the end is stopped."""
    made: list[Broker] = []

    def make(port: int | None = None) -> Broker:
        made.append(make_broker(engine, port or free_port(), tmp_path))
        return made[-1]

    yield make
    for b in made:
        b.stop()


def fresh_prefix(name: str) -> str:
    """Topics of their own for one stack of processes: a prefix no other test of this run uses
    (the session's broker keeps every topic until the run ends)."""
    return f"{name}{next(_prefixes)}-{os.getpid()}."


@pytest.fixture
def settings(broker: Broker, tmp_path: Path) -> Settings:
    """Settings with topics of this test's own (a fresh prefix) on the session's broker."""
    s = Settings(
        bootstrap=broker.bootstrap,
        topic_prefix=f"t{next(_prefixes)}.",
        partitions=2,
        spool=str(tmp_path / "spool"),
        gateway_port=0,
        call_timeout=5.0,
    )
    ensure_topics(s, broker.bootstrap)
    return s


GatewayFactory = Callable[..., Any]


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[GatewayFactory]:
    """Start gateways in this test's event loop: ``gw = await gateway(mode=..., ...)``."""
    started: list[Gateway] = []

    async def start(s: Settings | None = None, **kwargs: Any) -> Gateway:
        s = s or settings
        gw = Gateway(s, s.bootstrap or "", port=0, **kwargs)
        await gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in reversed(started):
        await gw.stop()


def url(gw: Gateway, station: str) -> str:
    return f"ws://127.0.0.1:{gw.port}/ocpp/{station}"


class TopicReader:
    """Everything on a topic from the beginning, read with kafka-python."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        # a reader never creates the topic: Tansu made it with its own partition count, for
        # a test reading before the gateway's drainer had made it on a restarted broker
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=200,
                                      allow_auto_create_topics=False)  # fmt: skip
        self.records: list[dict[str, Any]] = []
        self._assign()

    def _assign(self) -> bool:
        """Read every partition from the beginning, once the topic exists."""
        parts = self.consumer.partitions_for_topic(self.topic)
        if parts:
            self.consumer.assign([TopicPartition(self.topic, p) for p in parts])
            self.consumer.seek_to_beginning()
        return bool(parts)

    def poll(self) -> list[dict[str, Any]]:
        if not self.consumer.assignment() and not self._assign():
            time.sleep(0.2)
            return self.records
        for batch in self.consumer.poll(timeout_ms=200).values():
            self.records.extend(orjson.loads(m.value) for m in batch)
        return self.records

    def wait(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.poll()):
                return self.records
        raise AssertionError(f"timed out on {self.topic}; have {len(self.records)}: {self.records[-5:]}")

    def close(self) -> None:
        self.consumer.close()


async def read_until(
    settings: Settings, predicate: Callable[[list[dict[str, Any]]], bool], topic: str | None = None, timeout: float = 15
) -> list[dict[str, Any]]:
    """The records of ``topic`` (default ``ocpp.frames``) once ``predicate`` holds."""
    reader = TopicReader(settings.bootstrap or "", topic or settings.topics.frames)
    try:
        return await asyncio.to_thread(reader.wait, predicate, timeout)
    finally:
        reader.close()


def of_station(records: list[dict[str, Any]], station: str) -> list[dict[str, Any]]:
    return [r for r in records if r["station_id"] == station]


def has(
    action: str, station: str | None = None, count: int = 1, **fields: Any
) -> Callable[[list[dict[str, Any]]], bool]:
    def check(records: list[dict[str, Any]]) -> bool:
        hits = [
            r for r in records
            if r.get("action") == action and (station is None or r["station_id"] == station)
            and all(r.get(k) == v for k, v in fields.items())
        ]  # fmt: skip
        return len(hits) >= count

    return check


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules marked ``one_engine`` (the acting side's end-to-end runs: controller, grid,
    tariffs, OCPI, the live simulator) run on the first engine of ``TWIN_TEST_ENGINES`` only.
    They are Kafka clients like the worker; what the engine must prove (capture, commands,
    spool, bad input, the three-ways suite, the archive, time travel, the API, reliability)
    runs on every engine. Running both for them doubled the suite's slowest minutes."""
    first = engines()[0]
    for item in list(items):
        spec = getattr(item, "callspec", None)
        if item.get_closest_marker("one_engine") and spec is not None and spec.params.get("engine", first) != first:
            items.remove(item)
            config.hook.pytest_deselected(items=[item])
