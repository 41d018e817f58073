"""The worker's second archive agent: every ``grid.signals`` record into the archive, beside
the frames (``twin.analytics.grid`` says where, and why frame readers never see them), so
that ``twin sites --at`` and ``twin report grid`` know the limit in force at any moment.

At least once, as for the frames: a batch is acknowledged only after its file is written,
and readers keep each record once. Signals are few (a VTN's events, an operator's limits),
so a batch waits at most ``WINDOW`` seconds. ``control.plans`` is not archived: a plan is the
controller's intention, and what it did is in the frames already (the SetChargingProfile
calls it sent and their answers, which the report counts).

An offset past the next one expected on a partition means the consumer skipped records
(Tansu, around a rebalance: see ``streams.continuity``): they are read directly first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
import orjson

from twin import kafka_security
from twin.analytics.grid import write_signals
from twin.settings import Settings

log = logging.getLogger("twin.worker")

BATCH = 1000
WINDOW = 2.0
GAP = 5000
"""Records read directly at most, when a partition skipped some."""

Entry = tuple[int | None, int | None, dict[str, Any]]


def decode(value: bytes | None) -> dict[str, Any] | None:
    try:
        body = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def read_range(bootstrap: str, topic: str, partition: int, start: int, end: int) -> list[Entry]:
    """``(partition, offset, record)`` at offsets [start, end) of one partition, read directly."""
    from kafka import KafkaConsumer, TopicPartition

    tp = TopicPartition(topic, partition)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
                             **kafka_security.kafka_python())
    try:
        consumer.assign([tp])
        consumer.seek(tp, max(0, start))
        found: list[Entry] = []
        while consumer.position(tp) < end:
            batches = consumer.poll(timeout_ms=1000)
            if not batches:
                break
            for message in batches.get(tp, ()):
                body = decode(message.value)
                if message.offset < end and body is not None:
                    found.append((partition, message.offset, body))
        return found
    finally:
        consumer.close()


def register(app: faust.App, settings: Settings, bootstrap: str, archive_to: str | None) -> None:
    """The agent, when the worker archives (``archive_to``)."""
    if not archive_to:
        return
    topic = settings.topics.signals
    signals = app.topic(topic, key_serializer="raw", value_serializer="raw", partitions=settings.partitions)
    expected: dict[int, int] = {}

    @app.agent(signals)
    async def archive_signals(stream: Any) -> None:
        async for events in stream.take_events(BATCH, within=WINDOW):
            entries: list[Entry] = []
            for event in events:
                partition, offset = event.message.partition, event.message.offset
                due = expected.get(partition)
                if due is not None and due < offset <= due + GAP:
                    missing = await asyncio.to_thread(read_range, bootstrap, topic, partition, due, offset)
                    log.warning("signals archive: partition %d skipped offsets %d..%d: read %d records directly",
                                partition, due, offset - 1, len(missing))  # fmt: skip
                    entries += missing
                expected[partition] = max(due or 0, offset + 1)
                body = decode(event.value)
                if body is not None:
                    entries.append((partition, offset, body))
            if entries:
                await asyncio.to_thread(write_signals, archive_to, entries)
