"""The recorder: puts envelopes on ``ocpp.frames`` (and bad input on ``ocpp.deadletter``)
and tells its caller once they are durable, so the gateway can capture before it
acknowledges: ``record`` returns then, ``record_then`` calls back then.

Records are written in group commits: whatever all sessions hand over within one turn of
the event loop goes out as one produce request (a record batch per partition: ``twin.produce``),
so the cost per record is an append, not a producer call and a future. They reach the log in
the order they were submitted, so a session numbers its frames and submits them without
waiting on each.

Durable means acknowledged by the broker with ``acks=all`` (idempotent where the broker
grants producer ids) or, while the broker is unreachable, written and fsynced to the spool.
What of a failed round did not land is spooled (the partitions the broker took are not sent
twice); while the spool holds anything, new rounds join it behind the old ones; a drainer
sends them on, in order, when the broker is back. A record may so reach Kafka twice;
``(conn_id, seq)`` makes that harmless downstream, and the recorder keeps it rare: a record
whose send timed out may still land (the producer keeps trying), so it is spooled with a
token, the old producer is kept until that send settles, and the drainer skips the record if
it landed after all. What remains is the producer's own retry of a batch in flight when the
broker died, stored twice by a broker that cannot deduplicate (Tansu refuses producer ids to
aiokafka; a real Kafka grants them and drops the retry).

A record the broker refuses for what it is (larger than the topic takes, invalid for it)
would be refused on every try and hold up the spool behind it: the drainer halves what it
sends until that record is alone, keeps it whole in a file beside the spool, notes it on
``ocpp.deadletter``, and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from twin import envelope, kafka_security
from twin.broker import ensure_topics, grants_idempotence, reachable, stop_quietly
from twin.envelope import Envelope
from twin.produce import MAX_BATCH_BYTES, ProduceRequests, Refused, follow
from twin.settings import Settings
from twin.spool import Record, Spool, Token

log = logging.getLogger("twin.capture")


DRAIN_CHUNK = 1000
"""Records the drainer reads from the spool and sends at a time."""
NOTE_RAW_CHARS = 4096
"""What a dead letter keeps of a record the broker refused (the record is kept whole on disk)."""

Then = Callable[[Any, BaseException | None], None]
"""Told once a caller's records are durable: ``then(arg, None)``, or ``then(arg, error)``."""


class Recorder:
    def __init__(self, settings: Settings, bootstrap: str, spool_name: str = "gateway") -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self.topics = settings.topics
        self.mode = "off" if not settings.capture else "starting"
        self.spool = Spool(Path(settings.spool) / f"{spool_name}.jsonl")
        self._producer: AIOKafkaProducer | None = None
        self._idempotent = False
        self._spooling = self.spool.size() > 0  # left over from a crash: drain it first
        self._drainer: asyncio.Task[None] | None = None
        self._uncertain: dict[int, asyncio.Future[Any]] = {}  # token -> first send
        self._tokens = itertools.count(1)
        self._retired: list[AIOKafkaProducer] = []  # kept until their sends settle
        self._queue: list[Record] = []  # the next round
        self._told: list[tuple[Then, Any]] = []  # the next round's callers, told once it is durable
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._requests = ProduceRequests(settings.capture_timeout)
        self._stopping = False
        self.recorded = 0
        self.spooled = 0

    # -- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if not self.settings.capture:
            return
        self._writer = asyncio.get_running_loop().create_task(self._write())
        try:
            self._producer = await self._new_producer()
        except Exception as exc:  # broker not there at start: spool from the first frame
            log.warning("broker %s unreachable at start (%r): spooling", self.bootstrap, exc)
            self._spooling = True
        if self._spooling:
            self._start_drainer()

    async def stop(self) -> None:
        """Stop, once what was submitted is settled (for up to twice ``capture_timeout``):
        acknowledged or spooled, or its caller told why not. A session's last record is
        submitted without waiting for it."""
        self._stopping = True  # a failed round is spooled at once: what of it landed is not waited for
        if self._writer is not None and not self._writer.done():
            try:
                await asyncio.wait_for(self._durable([]), 2 * self.settings.capture_timeout)
            except Exception as exc:
                log.warning("stopping with records not yet durable: %r", exc)
        for task in (self._drainer, self._writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._close_producer()
        await self._close_retired()
        self.spool.close()

    @property
    def spooling(self) -> bool:
        return self._spooling

    # -- recording ----------------------------------------------------------------------
    def record_then(self, envelopes: list[Envelope], then: Then, arg: Any) -> None:
        """Add envelopes to the next round, in order, and go on: ``then(arg, None)`` is
        called once they are durable (acknowledged by the broker, or in the spool),
        ``then(arg, error)`` if they cannot be. For a caller with nothing to do meanwhile (a
        session answering a call): nothing waits, and nothing wakes it a second time."""
        if not self.settings.capture:
            then(arg, None)
            return
        self._submit(self._frames(envelopes), then, arg)

    async def record(self, envelopes: list[Envelope]) -> None:
        """Returns once every envelope is acknowledged by the broker or in the spool."""
        if not self.settings.capture:
            return
        await self._durable(self._frames(envelopes))

    def _frames(self, envelopes: list[Envelope]) -> list[Record]:
        """Envelopes as ``ocpp.frames`` records, keyed by station."""
        topic, dumps = self.topics.frames, envelope.dumps
        return [(topic, e["station_id"].encode(), dumps(e)) for e in envelopes]

    async def deadletter(self, station_id: str | None, reason: str, raw: str, ts: str) -> None:
        if not self.settings.capture:
            return
        await self._durable([self._dead_letter(station_id, reason, raw, ts)])

    def _dead_letter(self, station_id: str | None, reason: str, raw: str, ts: str) -> Record:
        """An ``ocpp.deadletter`` record, keyed by station (empty where unknown)."""
        value: dict[str, Any] = {"station_id": station_id, "ts": ts, "reason": reason, "raw": raw}
        key = station_id.encode() if station_id else None
        return (self.topics.deadletter, key, envelope.dumps(value))

    async def _durable(self, records: list[Record]) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._submit(records, _resolve, waiter)
        await waiter

    def _submit(self, records: list[Record], then: Then, arg: Any) -> None:
        """Every record goes through the rounds, in the order submitted, to the broker or,
        while it is away, to the spool: so the log's order is the order of submission, and a
        caller need not wait for one record to be durable before it submits the next."""
        if not self.settings.capture:
            then(arg, None)
            return
        if self._writer is None or self._writer.done():
            then(arg, ConnectionError("the recorder is not running"))
            return
        if not self._told:
            self._wake.set()
        self._queue.extend(records)
        self._told.append((then, arg))

    async def _write(self) -> None:
        """The writer, a group commit: everything submitted since the last round was acked
        goes out as one produce request; the round's callers are told when all of it is
        acknowledged. What of a round that fails or times out did not land is spooled, in
        order, before anything submitted after it, and its callers are told then (the spool
        is durable); while the spool holds anything, every round joins it there, and the
        drainer sends it on. What was still in flight is spooled with tokens: its send may
        still land, and the drainer skips what did.

        One round is in flight at a time (the producer sends one request to a broker at a
        time anyway). When it is acked, the next round is handed to the producer before the
        acked round's callers are told, and they are told one turn of the loop later: the
        produce request is written first and the broker works on it while the sessions send
        their answers, instead of after them."""
        loop = asyncio.get_running_loop()
        acked: list[tuple[Then, Any]] | None = None  # durable, its callers not yet told
        told: list[tuple[Then, Any]] = []  # the round in hand
        try:
            while True:
                if acked is not None and not self._told:
                    _tell(acked)  # nothing to send first
                    acked = None
                told = []
                await self._wake.wait()
                self._wake.clear()
                records, told = self._queue, self._told
                self._queue, self._told = [], []
                if not told:
                    continue
                if self._spooling:
                    if acked is not None:
                        _tell(acked)
                        acked = None
                    self._spool_round(records, told)
                    continue
                try:
                    if self._producer is None:
                        raise ConnectionError("no producer")
                    sent = await self._requests.send(self._producer, records)
                except Exception as exc:
                    if acked is not None:  # told before the round after it, as on every path
                        _tell(acked)
                        acked = None
                    self._enter_spooling(exc)
                    self._spool_round(records, told)
                    continue
                finally:
                    if acked is not None:
                        loop.call_soon(_tell, acked)  # behind the producer's next turns
                        acked = None
                failure = await self._acked(sent.acks)
                if failure is None:
                    self.recorded += len(records)
                    acked = told
                else:
                    self._enter_spooling(failure)
                    again = sent.unlanded(records)  # what landed is not sent twice
                    self.recorded += len(records) - len(again)
                    self._spool_round([record for record, _ in again], told, [ack for _, ack in again])
        finally:  # stopped: whoever still waits is told
            if acked is not None:
                _tell(acked)
            stopped = ConnectionError("the recorder stopped")
            _tell(told, stopped)
            told, self._queue, self._told = self._told, [], []
            _tell(told, stopped)

    async def _acked(self, acks: list[asyncio.Future[Any]]) -> BaseException | None:
        """None once every ack has come; else the first failure, or a timeout. After a
        failure the round's other requests are given ``capture_timeout`` to settle too: what
        of the round landed is then known, and is not sent again (by a new producer, which
        idempotence cannot tell from a repeat)."""
        timeout = self.settings.capture_timeout
        outcome = asyncio.get_running_loop().create_future()
        follow(outcome, acks)
        await asyncio.wait([outcome], timeout=timeout)
        if not outcome.done():
            outcome.cancel()  # a later failure is the acks' own to tell (``follow``), not left unread here
            return TimeoutError(f"no ack within {timeout} s")
        failure = outcome.exception()
        if failure is not None and not self._stopping and (pending := [ack for ack in acks if not ack.done()]):
            await asyncio.wait(pending, timeout=timeout)
        return failure

    def _spool_round(
        self, records: list[Record], told: list[tuple[Then, Any]], sends: list[asyncio.Future[Any] | None] | None = None
    ) -> None:
        """The round to the spool (what of it did not land), in order, and its callers told:
        durable, or the error that kept it from the disk. ``sends``: each record's send, where
        it may still land."""
        tokens = [self._token(send) for send in sends] if sends is not None else None
        try:
            self.spool.append(records, tokens)
        except Exception as exc:
            log.error("could not spool %d records to %s: %r", len(records), self.spool.path, exc)
            for token in tokens or ():
                self._uncertain.pop(token, None)  # type: ignore[arg-type]
            _tell(told, exc)
            return
        self.spooled += len(records)
        self.recorded += len(records)
        _tell(told)

    def _token(self, send: asyncio.Future[Any] | None) -> Token:
        """A token for a send that may still land, None for one that surely failed."""
        if send is None or (send.done() and (send.cancelled() or send.exception() is not None)):
            return None
        token = next(self._tokens)
        self._uncertain[token] = send
        return token

    # -- the spool ----------------------------------------------------------------------
    def _enter_spooling(self, cause: BaseException) -> None:
        if self._spooling:
            return
        log.warning("capture to %s failed (%r): spooling to %s", self.bootstrap, cause, self.spool.path)
        self._spooling = True
        old, self._producer = self._producer, None
        if old is not None:
            self._retired.append(old)
        self._start_drainer()

    def _start_drainer(self) -> None:
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Sends the spool on, in order, while the writer appends new rounds behind it; once
        all of it is acked the spool is cleared and the writer sends straight again. That
        check and the writer's appends each happen within one turn of the loop, so nothing
        appended is cleared unsent."""
        offset, backoff, chunk = 0, 0.2, DRAIN_CHUNK
        landed: set[int] = set()  # entries (counted from ``offset``) that landed when their chunk failed
        refused = False  # the producer was let go for a refusal: the broker is there, its topics too
        while True:
            try:
                if self._producer is None:
                    self._requests.forget()
                    if not refused:
                        if not await reachable(self.bootstrap):  # before blocking a thread on it
                            raise ConnectionError(f"no broker at {self.bootstrap}")
                        await asyncio.to_thread(ensure_topics, self.settings, self.bootstrap)
                    self._producer, refused = await self._new_producer(), False
                entries, after = self.spool.read(offset, chunk)
                if entries:
                    todo = [i for i, (_, t) in enumerate(entries) if i not in landed and not await self._landed(t)]
                    if todo:
                        records = [entries[i][0] for i in todo]
                        sent = await self._requests.send(self._producer, records)
                        failure = await self._acked(sent.acks)
                        if failure is not None:  # what of it landed is not sent again
                            again = {id(record) for record, _ in sent.unlanded(records)}
                            landed.update(i for i, record in zip(todo, records, strict=True) if id(record) not in again)
                        if isinstance(failure, Refused):
                            if self._idempotent:  # its sequence numbers counted what was refused
                                old, self._producer, refused = self._producer, None, True
                                await stop_quietly(old)
                            left = [i for i in todo if i not in landed]
                            if len(left) > 1:  # halved until the refused record is alone
                                chunk = max(1, len(entries) // 2)
                                continue
                            self._set_aside(entries[left[0]][0], failure)  # kept, even if its note is not
                        elif failure is not None:
                            raise failure
                    for _, token in entries:  # settled: a chunk sent again asks again
                        self._uncertain.pop(token, None)  # type: ignore[arg-type]
                    offset, backoff, chunk = after, 0.2, min(2 * chunk, DRAIN_CHUNK)
                    landed = {i - len(entries) for i in landed if i >= len(entries)}
                    continue
                if self._retired:  # before the check below, which must not wait
                    await self._close_retired()
                    continue
                size = self.spool.size()
                if size == offset:
                    self.spool.clear()
                    self._spooling = False
                    log.info("spool drained: capturing straight to %s again", self.bootstrap)
                    return
                if size < offset:  # emptied under this drainer (another recorder's, same file)
                    log.warning("spool %s shorter than what was drained of it: reading it again", self.spool.path)
                    offset = 0
                    landed.clear()
                await asyncio.sleep(0.05)  # appended meanwhile: read next (and never a loop that does not yield)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("broker still away: %r", exc)
                old, self._producer, refused = self._producer, None, False
                if old is not None:
                    await stop_quietly(old)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _set_aside(self, record: Record, why: Refused) -> None:
        """A record the broker refuses for what it is, out of the spool's way: sent again it
        would be refused again, and everything behind it would wait for good. It is kept
        whole in ``<spool>.refused.jsonl`` beside the spool, and a note of it, its text cut to
        ``NOTE_RAW_CHARS``, goes to ``ocpp.deadletter`` behind what the spool holds."""
        topic, key, value = record
        path = self.spool.path.with_suffix(".refused.jsonl")
        try:
            kept = Spool(path)
            try:
                kept.append([record])
            finally:
                kept.close()
        except OSError as exc:  # the drainer tries it again, after its backoff
            log.error("the broker refused a record of %d bytes for %s (%s), and %s cannot be written (%r)",
                      len(value), topic, why, path, exc)  # fmt: skip
            raise
        log.error("the broker refused a record of %d bytes for %s (%s): kept in %s", len(value), topic, why, path)
        if topic == self.topics.deadletter:  # a note of a note: the file is the record
            return
        text = value.decode(errors="replace")
        try:
            ts = orjson.loads(value).get("ts") or envelope.iso_ms()
        except (orjson.JSONDecodeError, AttributeError):
            ts = envelope.iso_ms()
        note = self._dead_letter(
            key.decode(errors="replace") if key is not None else None,
            f"refused by the broker ({why}): a record of {len(value)} bytes for {topic}, kept in {path}"
            f" (raw cut to {NOTE_RAW_CHARS} characters)",
            text[:NOTE_RAW_CHARS], ts,
        )  # fmt: skip
        try:
            self.spool.append([note])
        except Exception as exc:  # the record is kept: only its note is lost, and said here
            log.error("could not note the refused record on %s (%r)", self.topics.deadletter, exc)

    async def _landed(self, token: Token) -> bool:
        """Whether a spooled record's first send reached the broker after all."""
        send = self._uncertain.get(token) if token is not None else None
        if send is None:
            return False
        # it settles (delivered, or expired by the producer); if not in time, send again
        await asyncio.wait([send], timeout=3 * self.settings.capture_timeout)
        return send.done() and not send.cancelled() and send.exception() is None

    async def _close_retired(self) -> None:
        retired, self._retired = self._retired, []
        for producer in retired:
            await stop_quietly(producer)

    # -- the producer -------------------------------------------------------------------
    async def _decide_mode(self) -> None:
        """Idempotent where the broker grants producer ids (Kafka), else plain ``acks=all``
        (Tansu). Asked of the first broker that answers: at start, or when the drainer finds
        the broker back if it was away at start; the log says which mode is in force."""
        if not await reachable(self.bootstrap):
            raise ConnectionError(f"no broker at {self.bootstrap}")
        self._idempotent = await grants_idempotence(self.bootstrap)
        self.mode = "idempotent" if self._idempotent else "acks=all"
        grants = "grants" if self._idempotent else "grants no"
        log.info("capture mode: %s (broker %s %s producer ids)", self.mode, self.bootstrap, grants)

    async def _new_producer(self) -> AIOKafkaProducer:
        if self.mode == "starting":
            await self._decide_mode()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            **kafka_security.aiokafka(self.settings),
            acks="all",
            enable_idempotence=self._idempotent,
            linger_ms=0,  # the writer batches a round itself: lingering only delays every round
            max_batch_size=MAX_BATCH_BYTES,
            request_timeout_ms=int(self.settings.capture_timeout * 1000),
            retry_backoff_ms=50,
        )
        try:
            await asyncio.wait_for(producer.start(), self.settings.capture_timeout)
        except BaseException:
            await stop_quietly(producer)
            raise
        return producer

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await stop_quietly(producer, timeout=self.settings.capture_timeout)


def _tell(told: list[tuple[Then, Any]], error: BaseException | None = None) -> None:
    """Tell a round's callers it is durable, or the error that kept it from being so."""
    for then, arg in told:
        try:
            then(arg, error)
        except Exception:
            log.exception("a capture's follow-up failed")


def _resolve(waiter: asyncio.Future[None], error: BaseException | None) -> None:
    """``then`` for a caller that waits on a future (unless cancelled meanwhile)."""
    if not waiter.done():
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
