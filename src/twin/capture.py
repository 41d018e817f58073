"""The recorder: puts envelopes on ``ocpp.frames`` (and bad input on ``ocpp.deadletter``)
and returns only once they are durable, so the gateway can capture before it acknowledges.

Durable means acknowledged by the broker with ``acks=all`` (idempotent where the broker
grants producer ids) or, while the broker is unreachable, written and fsynced to the spool.
While the spool holds anything, new records join it behind the old ones; a drainer sends
them on, in order, when the broker is back. A record may so reach Kafka twice; ``(conn_id,
seq)`` makes that harmless downstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from twin import envelope
from twin.broker import ensure_topics, grants_idempotence
from twin.envelope import Envelope
from twin.settings import Settings
from twin.spool import Record, Spool

log = logging.getLogger("twin.capture")


class Recorder:
    def __init__(self, settings: Settings, bootstrap: str, spool_name: str = "gateway") -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self.topics = settings.topics
        self.mode = "off" if not settings.capture else "starting"
        self.spool = Spool(Path(settings.spool) / f"{spool_name}.jsonl")
        self._producer: AIOKafkaProducer | None = None
        self._idempotent = False
        self._lock = asyncio.Lock()
        self._spooling = self.spool.size() > 0  # left over from a crash: drain it first
        self._drainer: asyncio.Task[None] | None = None
        self.recorded = 0
        self.spooled = 0

    # -- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if not self.settings.capture:
            return
        self._idempotent = await grants_idempotence(self.bootstrap)
        self.mode = "idempotent" if self._idempotent else "acks=all"
        log.info("capture mode: %s (broker %s)", self.mode, self.bootstrap)
        try:
            self._producer = await self._new_producer()
        except Exception as exc:  # broker not there at start: spool from the first frame
            log.warning("broker %s unreachable at start (%r): spooling", self.bootstrap, exc)
            self._spooling = True
        if self._spooling:
            self._start_drainer()

    async def stop(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
        await self._close_producer()
        self.spool.close()

    @property
    def spooling(self) -> bool:
        return self._spooling

    # -- recording ----------------------------------------------------------------------
    async def record(self, envelopes: list[Envelope]) -> None:
        """Returns once every envelope is acknowledged by the broker or in the spool."""
        if not self.settings.capture:
            return
        records: list[Record] = [
            (self.topics.frames, e["station_id"].encode(), envelope.dumps(e)) for e in envelopes
        ]
        await self._put(records)
        self.recorded += len(records)

    async def deadletter(self, station_id: str | None, reason: str, raw: str, ts: str) -> None:
        if not self.settings.capture:
            return
        value: dict[str, Any] = {"station_id": station_id, "ts": ts, "reason": reason, "raw": raw}
        key = station_id.encode() if station_id else None
        await self._put([(self.topics.deadletter, key, envelope.dumps(value))])

    async def _put(self, records: list[Record]) -> None:
        while True:
            if not self._spooling:
                try:
                    await asyncio.wait_for(self._send(records), self.settings.capture_timeout)
                    return
                except Exception as exc:
                    await self._enter_spooling(exc)
            async with self._lock:
                if self._spooling:  # not drained while we waited for the lock
                    self.spool.append(records)
                    self.spooled += len(records)
                    return

    async def _send(self, records: list[Record]) -> None:
        producer = self._producer
        if producer is None:
            raise ConnectionError("no producer")
        futures = [await producer.send(t, v, key=k) for t, k, v in records]
        await asyncio.gather(*futures)

    # -- the spool ----------------------------------------------------------------------
    async def _enter_spooling(self, cause: BaseException) -> None:
        async with self._lock:
            if self._spooling:
                return
            log.warning("broker %s unreachable (%r): spooling to %s", self.bootstrap, cause, self.spool.path)
            self._spooling = True
        old, self._producer = self._producer, None
        if old is not None:
            asyncio.get_running_loop().create_task(_quietly_stop(old))
        self._start_drainer()

    def _start_drainer(self) -> None:
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        offset, backoff = 0, 0.2
        while True:
            try:
                if self._producer is None:
                    await asyncio.to_thread(ensure_topics, self.settings, self.bootstrap)
                    self._producer = await self._new_producer()
                records, after = self.spool.read(offset)
                if records:
                    await asyncio.wait_for(self._send(records), self.settings.capture_timeout)
                    offset, backoff = after, 0.2
                    continue
                async with self._lock:
                    if self.spool.size() == offset:
                        self.spool.clear()
                        self._spooling = False
                        log.info("spool drained: capturing straight to %s again", self.bootstrap)
                        return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("broker still away: %r", exc)
                old, self._producer = self._producer, None
                if old is not None:
                    await _quietly_stop(old)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    # -- the producer -------------------------------------------------------------------
    async def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=self._idempotent,
            linger_ms=1,
            request_timeout_ms=int(self.settings.capture_timeout * 1000),
            retry_backoff_ms=50,
        )
        try:
            await asyncio.wait_for(producer.start(), self.settings.capture_timeout)
        except BaseException:
            await _quietly_stop(producer)
            raise
        return producer

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly_stop(producer, timeout=self.settings.capture_timeout)


async def _quietly_stop(producer: AIOKafkaProducer, timeout: float = 1.0) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(producer.stop(), timeout)
