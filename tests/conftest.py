"""Fixtures: one embedded broker per test session (a real Kafka-protocol broker), topics
isolated per test by a prefix, gateways started in the test's event loop, and a reader
that waits for records on a topic with kafka-python."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from twin.broker import EmbeddedBroker, ensure_topics, free_port
from twin.gateway.server import Gateway
from twin.settings import Settings

_prefixes = itertools.count(1)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(free_port(), log=log) as embedded:
        yield embedded


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
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
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=200)
        parts = self.consumer.partitions_for_topic(topic) or {0}
        self.consumer.assign([TopicPartition(topic, p) for p in parts])
        self.consumer.seek_to_beginning()
        self.records: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
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
