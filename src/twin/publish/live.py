"""The Kafka side of ``twin ocpi``: the twins (``twin.state``, read from the beginning and
kept), the station inventory (read again when the file changes), the archive's sessions
(recomputed at most every ``SESSIONS_TTL_S``), and commands: queued on ``ocpp.commands``
tagged with their command id in ``customData`` (as ``twin tariff`` does), their answers
found on ``ocpp.frames`` by that tag, ``CommandUndelivered`` and ``CallTimeout`` by the
command id, and no answer by the deadline a timeout. A station's TransactionEvent that names
a ``remoteStartId`` is told to ``on_remote_start`` (which START_SESSION began which session).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from twin import kafka_security
from twin.broker import STOP_WITHIN, stop_quietly
from twin.gateway.commands import command
from twin.publish.party import iso
from twin.settings import Settings

log = logging.getLogger("twin.ocpi")
SESSIONS_TTL_S = 30.0
VENDOR = "twin"


@dataclass
class Pending:
    command_id: str
    station_id: str
    action: str
    deadline: float
    done: Callable[[str, dict[str, Any] | None, str | None], Awaitable[None]]
    call: tuple[str, str] | None = None  # (conn_id, msg_id) of the CALL that carried it


@dataclass
class Fleet:
    """What ``twin ocpi`` knows: twins, inventory, archive sessions, commands in flight."""

    settings: Settings
    bootstrap: str
    command_timeout_s: float = 60.0
    twins: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    static_at: str = "1970-01-01T00:00:00.000Z"
    pending: dict[str, Pending] = field(default_factory=dict)
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)
    on_remote_start: Callable[[int, str], None] | None = None  # (remoteStartId, transaction id)
    _inventory_mtime: float = -1.0
    _sessions: tuple[float, list[dict[str, Any]]] = (0.0, [])
    _calls: dict[tuple[str, str], str] = field(default_factory=dict)
    _producer: Any = None

    # -- the inventory and the archive -----------------------------------------------------------
    def inventory(self) -> list[dict[str, Any]]:
        """The rows of ``_stations.json`` beside the archive; read again when it changes (its
        modification time is the static data's ``last_updated``)."""
        from twin.captures import inventory_path

        if "://" in self.settings.archive:
            return self.rows
        path = inventory_path(self.settings.archive)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return self.rows
        if mtime != self._inventory_mtime:
            try:
                rows = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                log.warning("inventory %s unreadable (%s): keeping the last one", path, exc)
                return self.rows
            self.rows = [r for r in rows if isinstance(r, dict) and r.get("station_id") and r.get("pool_id")]
            self._inventory_mtime = mtime
            self.static_at = iso(datetime.fromtimestamp(mtime, UTC))
        return self.rows

    async def archive_sessions(self) -> list[dict[str, Any]]:
        at, rows = self._sessions
        if time.monotonic() - at < SESSIONS_TTL_S:
            return rows
        rows = await asyncio.to_thread(self._read_sessions)
        self._sessions = (time.monotonic(), rows)
        return rows

    def _read_sessions(self) -> list[dict[str, Any]]:
        from twin.analytics.tariffs import tariffs_report

        archive = self.settings.archive
        if "://" not in archive and not any(Path(archive).rglob("*.parquet")):
            return []
        try:
            return list(tariffs_report(archive)["sessions"])
        except Exception as exc:  # an archive being written: the next read will do
            log.warning("archive sessions unreadable: %r", exc)
            return self._sessions[1]

    # -- commands ---------------------------------------------------------------------------
    async def send(self, station_id: str, action: str, payload: dict[str, Any], by: str,
                   done: Callable[[str, dict[str, Any] | None, str | None], Awaitable[None]],
                   tag: dict[str, Any] | None = None) -> str:  # fmt: skip
        """Queue a call; ``done(outcome, answer, reason)`` is awaited once it has one:
        ``answered``, ``error``, ``undelivered`` or ``timeout``."""
        cmd = command(station_id, action, {}, by)
        cmd["payload"] = {**payload, "customData": {"vendorId": VENDOR, "commandId": cmd["command_id"], **(tag or {})}}
        self.pending[cmd["command_id"]] = Pending(cmd["command_id"], station_id, action,
                                                  time.monotonic() + self.command_timeout_s, done)  # fmt: skip
        await self._producer.send_and_wait(self.settings.topics.commands, key=station_id.encode(),
                                           value=orjson.dumps(cmd))  # fmt: skip
        return str(cmd["command_id"])

    async def _resolve(self, command_id: str, outcome: str, answer: dict[str, Any] | None, reason: str | None) -> None:
        p = self.pending.pop(command_id, None)
        if p is None:
            return
        if p.call is not None:
            self._calls.pop(p.call, None)
        try:
            await p.done(outcome, answer, reason)
        except Exception:
            log.exception("command %s: reporting its result failed", command_id)

    async def _frame(self, r: dict[str, Any]) -> None:
        kind, payload = r.get("msg_type"), r.get("payload") or {}
        if kind == 2 and r.get("action") == "TransactionEvent" and isinstance(payload, dict):
            info = payload.get("transactionInfo") or {}
            remote, tx = info.get("remoteStartId"), info.get("transactionId")
            if isinstance(remote, int) and tx and self.on_remote_start is not None:
                self.on_remote_start(remote, str(tx))
        elif kind == 2 and r.get("origin") == "csms" and isinstance(payload, dict):
            tag = payload.get("customData")
            if isinstance(tag, dict) and tag.get("commandId") in self.pending:
                key = (str(r.get("conn_id")), str(r.get("msg_id")))
                self._calls[key] = tag["commandId"]
                self.pending[tag["commandId"]].call = key
        elif kind in (3, 4, 5):
            command_id = self._calls.get((str(r.get("conn_id")), str(r.get("msg_id"))))
            if command_id is not None:
                if kind == 3:
                    await self._resolve(command_id, "answered", payload, None)
                else:
                    await self._resolve(
                        command_id, "error", None, f"{payload.get('errorCode')}: {payload.get('errorDescription')}"
                    )
        elif kind == 0 and r.get("action") in ("CommandUndelivered", "CallTimeout"):
            command_id = str(payload.get("command_id"))
            if command_id in self.pending:
                undelivered = r["action"] == "CommandUndelivered"
                why = payload.get("reason") if undelivered else f"no answer in {payload.get('timeout_s')} s"
                await self._resolve(command_id, "undelivered" if undelivered else "timeout", None, why)

    async def _deadlines(self) -> None:
        now = time.monotonic()
        for p in [p for p in self.pending.values() if p.deadline <= now]:
            await self._resolve(p.command_id, "timeout", None, f"no answer in {self.command_timeout_s:g} s")

    # -- the loop ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, on_twin: Callable[[str], None] | None = None) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        topics = self.settings.topics
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 2**20,
                                    **kafka_security.aiokafka(self.settings))  # fmt: skip
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=5, **kafka_security.aiokafka(self.settings)
        )
        await consumer.start()
        await self._producer.start()
        try:
            states: list[TopicPartition] = []
            frames: list[TopicPartition] = []
            while not (states and frames) and not stop.is_set():
                await consumer._client.force_metadata_update()
                states = [TopicPartition(topics.state, p) for p in sorted(consumer.partitions_for_topic(topics.state)
                                                                           or ())]  # fmt: skip
                frames = [TopicPartition(topics.frames, p) for p in sorted(consumer.partitions_for_topic(topics.frames)
                                                                            or ())]  # fmt: skip
                if not (states and frames):
                    await asyncio.sleep(0.5)
            consumer.assign([*states, *frames])
            await consumer.seek_to_beginning(*states)
            await consumer.seek_to_end(*frames)
            for tp in frames:
                await consumer.position(tp)  # the end now: answers to what we send from here on are read
            ends = await consumer.end_offsets(states)
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, messages in batch.items():
                    for message in messages:
                        try:
                            body = orjson.loads(message.value) if message.value else None
                        except orjson.JSONDecodeError:
                            continue
                        if tp.topic == topics.state and message.key:
                            station_id = message.key.decode()
                            if isinstance(body, dict):
                                self.twins[station_id] = body
                            else:
                                self.twins.pop(station_id, None)
                            if on_twin is not None:
                                on_twin(station_id)
                        elif isinstance(body, dict):
                            await self._frame(body)
                if not self.caught_up.is_set():
                    positions = {tp: await consumer.position(tp) for tp in states}
                    if all(positions[tp] >= end for tp, end in ends.items()):
                        log.info("ocpi: caught up with %d twins", len(self.twins))
                        self.caught_up.set()
                await self._deadlines()
        finally:
            await stop_quietly(consumer, STOP_WITHIN)
            await stop_quietly(self._producer, STOP_WITHIN)
