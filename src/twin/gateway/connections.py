"""Which gateway holds each station's connection: the compacted ``gateway.connections`` topic.

Gateways scale out (several processes on one port, several hosts behind a TCP balancer), so
a command on ``ocpp.commands`` must find the one gateway that holds its station. Each gateway
announces every connection it accepts (key: station id, value: ``{"station_id",
"gateway_id", "conn_id", "connected_at"}``) and withdraws it with a tombstone when it closes,
and every gateway reads the whole topic into a table. The log's order decides, the same on
every gateway: the last announcement of a station wins. A gateway that reads another
gateway's announcement of a station after its own closes its connection (4000), the newer
connection wins, as it does within one process.

Races heal themselves rather than being locked out (there is no lock across hosts):
- a tombstone written by a gateway whose connection closed after the station had already
  reconnected elsewhere lands after the new announcement; the new holder reads it and
  announces again;
- a gateway started again under the same id (host:port, the process's index) withdraws what
  its previous life announced and never withdrew (SIGKILL);
- a broker that comes back empty (Tansu) or lost an announcement: each time the table is
  read again from its start, every gateway announces again what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from twin import envelope, kafka_security
from twin.broker import STOP_WITHIN, stop_quietly
from twin.gateway.session import close_quietly

if TYPE_CHECKING:
    from twin.gateway.server import Gateway
    from twin.gateway.session import Session

SENDS_A_TURN = 64
"""Announcements and withdrawals handed to the producer in one turn of the loop: after a
network blip the table's writer had 9,500 withdrawals to send, 0.05-0.19 s of sends in one
step, which every station's call in flight waited through."""
log = logging.getLogger("twin.gateway")
Entry = dict[str, Any]
Verdict = Literal["mine", "superseded", "announce again"] | None


def verdict(me: str, held: str | None, seen_own: bool, record: Entry | None) -> Verdict:
    """What a gateway does on reading ``record`` (None: a tombstone) for a station of which it
    holds the connection ``held`` (None: none), ``seen_own``: its own announcement of that
    connection was read already (so ``record`` comes after it in the log)."""
    if held is None:
        return None
    if record is not None and record.get("conn_id") == held:
        return "mine"
    if not seen_own:  # our announcement is still on its way: it lands later and wins
        return None
    if record is None:  # someone withdrew the station while we hold it: say so again
        return "announce again"
    if record.get("gateway_id") != me:
        return "superseded"
    return None  # an older connection of ours, replaced here already


HISTORY_MS = 600_000
"""How long a station's past holders are kept: commands are judged by who held the station
when they were sent, up to this late."""


def holder_at(changes: list[tuple[int, Entry | None]], ts: int) -> Entry | None:
    """Who held a station at ``ts`` (ms), by its changes ``(ts, entry or None)`` in log order."""
    for when, entry in reversed(changes):
        if when <= ts:
            return entry
    return None


def nobody_delivers(then: Entry | None, now: Entry | None) -> bool:
    """Whether a command is undeliverable everywhere: nobody held its station when it was sent
    (``then``), nor holds it now. A gateway that held it then and not now says so itself."""
    return then is None and now is None


class Connections:
    """This gateway's announcements, and the table of every gateway's."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.table: dict[str, Entry] = {}
        self.changes: dict[str, list[tuple[int, Entry | None]]] = {}  # station -> (ts, entry) of late
        self._seen: set[str] = set()  # conn ids of ours read back from the topic
        self._superseded: set[str] = set()  # conn ids of ours another gateway's replaced
        self._pending: dict[str, Entry | None] = {}  # station -> what to write next
        self._wake = asyncio.Event()
        self._writing = False
        self._loaded = asyncio.Event()  # the table read once to its end
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def topic(self) -> str:
        return self.gateway.settings.topics.connections

    @property
    def me(self) -> str:
        return self.gateway.gateway_id

    async def start(self) -> None:
        if not self.gateway.settings.capture:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._write()), loop.create_task(self._read())]

    async def stop(self, within: float = 3.0) -> None:
        """Stop, first writing what is pending (the withdrawals of a gateway closing) for
        up to ``within`` seconds."""
        deadline = time.monotonic() + within
        while (self._pending or self._writing) and self._tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []

    # -- this gateway's connections -------------------------------------------------------
    def announce(self, session: Session) -> None:
        self._put(session.station_id, {
            "station_id": session.station_id, "gateway_id": self.me,
            "conn_id": session.conn_id, "connected_at": envelope.iso_ms(), "mode": self.gateway.mode,
        })  # fmt: skip

    def withdraw(self, session: Session) -> None:
        """The connection closed; its station is no longer held here (unless another
        gateway's announcement replaced it: then the table already says so)."""
        self._seen.discard(session.conn_id)
        if session.conn_id in self._superseded:
            self._superseded.discard(session.conn_id)
            return
        self._put(session.station_id, None)

    def holder(self, station_id: str) -> Entry | None:
        return self.table.get(station_id)

    def holder_at(self, station_id: str, ts: int) -> Entry | None:
        """Who held the station at ``ts`` (ms, a record's timestamp), as far as the table knows."""
        return holder_at(self.changes.get(station_id, []), ts)

    async def caught_up(self, timeout: float = 3.0) -> bool:
        """Wait until the table holds everything on the topic as of now (so it is at least
        as new as a command just read); False if that took longer than ``timeout``."""
        consumer = self._consumer
        if consumer is None or not self._loaded.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._loaded.wait(), timeout)
            consumer = self._consumer
            if consumer is None or not self._loaded.is_set():
                return False
        deadline = time.monotonic() + timeout
        try:
            ends = await consumer.end_offsets(list(consumer.assignment()))
            while time.monotonic() < deadline:
                if all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                    return True
                await asyncio.sleep(0.02)
        except Exception as exc:  # the broker away, the consumer being replaced
            log.debug("connection table not caught up: %r", exc)
        return False

    def _put(self, station_id: str, value: Entry | None) -> None:
        if not self.gateway.settings.capture:
            return
        self._pending[station_id] = value  # the latest per station is all a compacted topic keeps
        self._wake.set()

    async def _write(self) -> None:
        producer: AIOKafkaProducer | None = None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                batch, self._pending = self._pending, {}
                self._writing = True
                try:
                    if producer is None:
                        producer = AIOKafkaProducer(bootstrap_servers=self.gateway.bootstrap, acks="all", linger_ms=2,
                                                    **kafka_security.aiokafka(self.gateway.settings))
                        await producer.start()
                    sent = []
                    for n, (station, value) in enumerate(batch.items(), 1):
                        value_bytes = None if value is None else orjson.dumps(value)
                        sent.append(await producer.send(self.topic, key=station.encode(), value=value_bytes))
                        if n % SENDS_A_TURN == 0:
                            await asyncio.sleep(0)  # a turn for the stations' calls meanwhile
                    await asyncio.wait_for(asyncio.gather(*sent), 10)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("announcing connections failed (%r); retrying", exc)
                    for station, value in batch.items():  # unless something newer came meanwhile
                        self._pending.setdefault(station, value)
                    if producer is not None:
                        await stop_quietly(producer, STOP_WITHIN)
                    producer = None
                    await asyncio.sleep(1)
                    self._wake.set()
                finally:
                    self._writing = False
        finally:
            if producer is not None:
                await stop_quietly(producer, STOP_WITHIN)

    # -- the table ------------------------------------------------------------------------
    async def _read(self) -> None:
        """Read the topic from its start into the table, for good; after a failure, again."""
        while True:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.gateway.bootstrap, enable_auto_commit=False,
                                        **kafka_security.aiokafka(self.gateway.settings),
                                        auto_offset_reset="earliest", fetch_max_wait_ms=100)  # fmt: skip
            try:
                await consumer.start()
                partitions = consumer.partitions_for_topic(self.topic)
                while not partitions:
                    await asyncio.sleep(0.2)
                    await consumer._client.force_metadata_update()
                    partitions = consumer.partitions_for_topic(self.topic)
                assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                consumer.assign(assigned)
                await consumer.seek_to_beginning(*assigned)
                ends = await consumer.end_offsets(assigned)
                self.table.clear()
                self.changes.clear()
                self._seen.clear()
                self._consumer = consumer
                loading = True
                while True:
                    batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                    for records in batches.values():
                        for record in records:
                            value = orjson.loads(record.value) if record.value else None
                            self._apply(record.key.decode(), value, record.timestamp)
                    if loading and all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                        loading = False
                        self._reconcile()
                        self._loaded.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reading %s failed (%r); reading it again", self.topic, exc)
                await asyncio.sleep(1)
            finally:
                self._loaded.clear()
                self._consumer = None
                await stop_quietly(consumer, STOP_WITHIN)

    def _apply(self, station_id: str, value: Entry | None, ts: int) -> None:
        if value is None:
            self.table.pop(station_id, None)
        else:
            self.table[station_id] = value
        changes = self.changes.setdefault(station_id, [])
        changes.append((ts, value))
        while len(changes) > 1 and changes[0][0] < ts - HISTORY_MS:
            del changes[0]
        if value is None and len(changes) == 1:
            del self.changes[station_id]  # withdrawn long enough: nothing to remember
        session = self.gateway.sessions.get(station_id)
        if session is None:
            return
        if value is not None and value.get("mode", self.gateway.mode) != self.gateway.mode:
            return  # a twin proxy in front of a twin CSMS on one cluster: both hold the station, each its side
        held = session.conn_id
        match verdict(self.me, held, held in self._seen, value):
            case "mine":
                self._seen.add(held)
            case "announce again":
                self._seen.discard(held)
                self.announce(session)
            case "superseded":
                assert value is not None
                self._superseded.add(held)
                why = f"replaced by a newer connection of this station (on gateway {value.get('gateway_id')})"
                log.info("%s moved to gateway %s: closing its connection here", station_id, value.get("gateway_id"))
                self.gateway.spawn(close_quietly(session.ws, 4000, why))

    def _reconcile(self) -> None:
        """Once the table is read to its end: announce what we hold and the table does not
        say (a broker that lost it), withdraw what it says we hold and we do not (a previous
        life of this gateway that was killed)."""
        for station_id, session in list(self.gateway.sessions.items()):
            entry = self.table.get(station_id)
            if session.conn_id in self._superseded:
                continue
            if entry is None or entry.get("conn_id") != session.conn_id:
                self.announce(session)
        for station_id, entry in list(self.table.items()):
            mine = entry.get("gateway_id") == self.me
            if mine and station_id not in self.gateway.sessions and station_id not in self._pending:
                self._put(station_id, None)
