"""Every record of ocpp.frames reaches an agent, even when its consumer skips some.

Offsets on ocpp.frames are dense (no compaction, no transactions), so an event past the
next offset an agent expects means records were not delivered: seen after a restart on
Tansu, around the rebalance that drops a killed worker's member (once: offsets 7-11, then
13-15). The skipped records are read directly, up to ``WINDOW`` of them; a larger gap is a
partition that was away, handled meanwhile by another worker. A skipped last record leaves
no gap behind it, so a partition quiet for ``QUIET`` seconds is read past its last event
too (the consumer delivering it later is a no-op for the fold, a duplicate for the
archive, which readers drop).

On Apache Kafka (tests/test_reliability.py: a broker, a gateway and workers killed under
load, a rebalance) the consumer never skipped a record: the gap check fired only for a
partition that came back after another worker had folded a few hundred records of it,
read again as no-ops. It stays on every broker, a comparison per event, as the guard that
makes a skip harmless wherever it comes from. The read past a quiet partition's end runs
for the fold on every broker: on Kafka it found nothing in most runs, but once after a
rebalance a partition's last frame stayed unfolded (nothing after it to show a gap); it
costs a short read per quiet partition each ``QUIET`` seconds. The archive agent reads tails
on Tansu only (``tails=False`` elsewhere).

The same reads fold records again on purpose: :meth:`Continuity.rewind` makes the records
behind a partition's first offset look skipped, so a worker that takes a partition folds
them again before anything new (see ``streams.app.REFOLD_WINDOW``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from twin import kafka_security

log = logging.getLogger("twin.worker")

WINDOW = 5000
QUIET = 5.0
READ_DEADLINE = 60.0

Record = dict[str, Any]


def read_range(bootstrap: str, topic: str, partition: int, start: int, end: int, to_end: bool = False) -> list[Record]:
    """The records at offsets [start, end) of one partition, read directly: all of them (a
    range of offsets seen exists whole: polls that bring nothing are tried again for
    ``READ_DEADLINE`` seconds, and a read still short is logged), or with ``to_end`` those
    the log holds (read until a poll brings nothing: the end a broker reports can be short
    of the true end, on Tansu)."""
    from kafka import KafkaConsumer, TopicPartition

    tp = TopicPartition(topic, partition)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
                             **kafka_security.kafka_python())
    try:
        consumer.assign([tp])
        consumer.seek(tp, max(0, start))
        found: list[Record] = []
        deadline = time.monotonic() + READ_DEADLINE
        while consumer.position(tp) < end:
            batches = consumer.poll(timeout_ms=1000)
            if not batches and (to_end or time.monotonic() > deadline):
                break
            for message in batches.get(tp, ()):
                if message.offset < end:
                    found.append(orjson.loads(message.value))
        if not to_end and len(found) < end - max(0, start):
            log.warning("partition %d: read %d of offsets %d..%d in %.0f s: folding those",
                        partition, len(found), start, end - 1, READ_DEADLINE)  # fmt: skip
        return found
    finally:
        consumer.close()


class Continuity:
    """One agent's next expected offset per partition, and what it was not delivered."""

    def __init__(
        self, name: str, bootstrap: str, topic: str, start: dict[int, int] | None = None, tails: bool = True,
        refold: int = 0,
    ) -> None:  # fmt: skip
        """``refold``: records read again behind each partition taken (see :meth:`take`)."""
        self.name, self.bootstrap, self.topic, self.reads_tails = name, bootstrap, topic, tails
        self.refold = refold
        self.expected: dict[int, int] = dict(start or {})
        self.heard: dict[int, float] = {}  # partition -> when its last event came
        self.checked: dict[int, tuple[int, float]] = {}  # partition -> (offset looked past, when)
        self.rewound: dict[int, int] = {}  # partition -> the offset it was rewound from (see rewind)
        self.taken: dict[int, int | None] = {}  # partition -> the consumer generation it was taken in
        self.started = time.monotonic()

    def take(self, partition: int, offset: int, generation: int | None) -> None:
        """``partition`` is this agent's from ``offset`` on in consumer ``generation`` (the
        first event of it the generation delivers, or the group's committed offset): the
        first time, :meth:`rewind` it by ``refold`` records."""
        if self.taken.get(partition, -1) != generation:
            self.taken[partition] = generation
            self.rewind(partition, offset, self.refold)

    def rewind(self, partition: int, offset: int, window: int) -> None:
        """Expect ``partition`` again ``window`` records behind ``offset``: its next event (or
        its tail read, when it is quiet) reads them directly first, whatever the distance."""
        self.expected[partition] = max(0, offset - window)
        self.rewound[partition] = offset
        self.checked.pop(partition, None)

    async def with_gaps(
        self, events: list[Any], decode: Callable[[bytes], Record | None]
    ) -> list[tuple[int, Record | None]]:
        """The events' records, each preceded by any its partition skipped, or the records
        behind it when the event is the first of its partition in its consumer generation
        (:meth:`take`). (Gaps are read one after another: reading several partitions' at once
        saved nothing, benches/takeover.py.)"""
        out: list[tuple[int, Record | None]] = []
        for event in events:
            message = event.message
            partition, offset = message.partition, message.offset
            if self.taken.get(partition, -1) != message.generation_id:
                self.take(partition, offset, message.generation_id)
            due = self.expected.get(partition)
            rewound = self.rewound.pop(partition, None)
            if due is not None and due < offset and (offset <= due + WINDOW or rewound is not None):
                missing = await asyncio.to_thread(read_range, self.bootstrap, self.topic, partition, due, offset)
                if rewound is None:
                    log.warning("%s: partition %d skipped offsets %d..%d: read %d records directly",
                                self.name, partition, due, offset - 1, len(missing))  # fmt: skip
                else:
                    log.warning("%s: partition %d taken at offset %d: folding again the last records behind it, "
                                "offsets %d..%d (%d)", self.name, partition, rewound, due, offset - 1,
                                len(missing))  # fmt: skip
                out += [(partition, record) for record in missing]
            out.append((partition, decode(event.value)))
            self.expected[partition] = max(due or 0, offset + 1)
            self.heard[partition] = time.monotonic()
        return out

    async def tails(self, mine: set[int]) -> list[tuple[int, int, list[Record]]]:
        """For each quiet partition of ``mine``: (partition, offset, records found past it).
        Call :meth:`advance` once they are handled. Nothing where ``tails`` is off."""
        if not self.reads_tails:
            return []
        now = time.monotonic()
        found: list[tuple[int, int, list[Record]]] = []
        for partition in sorted(mine & self.expected.keys()):
            due = self.expected[partition]
            if now - self.heard.get(partition, self.started) < QUIET * (1 if partition in self.heard else 3):
                continue
            if self.checked.get(partition, (-1, 0.0))[0] == due and now - self.checked[partition][1] < 60:
                continue  # looked past this offset lately: an idle partition is read once a minute
            self.checked[partition] = (due, now)
            records = await asyncio.to_thread(read_range, self.bootstrap, self.topic, partition, due, due + WINDOW,
                                              to_end=True)  # fmt: skip
            if records and self.expected.get(partition) == due:
                if partition in self.rewound:
                    log.warning("%s: partition %d taken at offset %d, quiet: folding again the last records "
                                "behind it, from offset %d (%d)", self.name, partition, self.rewound[partition], due,
                                len(records))  # fmt: skip
                else:
                    log.warning("%s: partition %d: %d records past offset %d were not delivered: read directly",
                                self.name, partition, len(records), due)  # fmt: skip
                found.append((partition, due, records))
        return found

    def advance(self, partition: int, to: int) -> None:
        self.expected[partition] = max(self.expected.get(partition, 0), to)
        self.rewound.pop(partition, None)
        self.heard[partition] = time.monotonic()
