"""The recorder: puts envelopes on ``ocpp.frames`` (and bad input on ``ocpp.deadletter``)
and returns only once they are durable, so the gateway can capture before it acknowledges.

Records are written in group commits: whatever all sessions hand over within one turn of
the event loop goes out as one produce request (a record batch per partition), so the cost per
record is an append, not a producer call and a future.

Durable means acknowledged by the broker with ``acks=all`` (idempotent where the broker
grants producer ids) or, while the broker is unreachable, written and fsynced to the spool.
While the spool holds anything, new records join it behind the old ones; a drainer sends
them on, in order, when the broker is back. A record may so reach Kafka twice; ``(conn_id,
seq)`` makes that harmless downstream, and the recorder keeps it rare: a record whose send
timed out may still land (the producer keeps trying), so it is spooled with a token, the
old producer is kept until that send settles, and the drainer skips the record if it landed
after all. What remains is the producer's own retry of a batch in flight when the broker
died, stored twice by a broker that cannot deduplicate (Tansu refuses producer ids to
aiokafka; a real Kafka grants them and drops the retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import DuplicateSequenceNumber, KafkaError, LeaderNotAvailableError, NoError, for_code
from aiokafka.partitioner import murmur2
from aiokafka.protocol.produce import ProduceRequest

from twin import envelope, kafka_security
from twin.broker import ensure_topics, grants_idempotence, reachable
from twin.envelope import Envelope
from twin.settings import Settings
from twin.spool import Record, Spool, Token

log = logging.getLogger("twin.capture")
MAX_BATCH_BYTES = 1 << 20
"""Record batch size: any frame the gateway accepts (``max_frame_bytes``) fits, with room."""


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
        self._uncertain: dict[int, asyncio.Future[None]] = {}  # token -> first send
        self._tokens = itertools.count(1)
        self._retired: list[AIOKafkaProducer] = []  # kept until their sends settle
        self._queue: list[Record] = []  # the next round
        self._waiters: list[asyncio.Future[None]] = []  # the next round's callers, woken once it is acked
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._partitions: dict[str, list[int]] = {}
        self._partition_of: dict[tuple[str, bytes], int] = {}
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
    async def record(self, envelopes: list[Envelope]) -> None:
        """Returns once every envelope is acknowledged by the broker or in the spool."""
        if not self.settings.capture:
            return
        topic, dumps = self.topics.frames, envelope.dumps
        records: list[Record] = [(topic, e["station_id"].encode(), dumps(e)) for e in envelopes]
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
            outcome: asyncio.Future[None] | None = None
            if not self._spooling:
                try:
                    await self._submit(records)
                    return
                except Exception as exc:
                    outcome = getattr(exc, "outcome", None)
                    await self._enter_spooling(exc)
            async with self._lock:
                if self._spooling:  # not drained while we waited for the lock
                    self.spool.append(records, [self._token(outcome) for _ in records])
                    self.spooled += len(records)
                    return

    def _token(self, send: asyncio.Future[None] | None) -> Token:
        """A token for a send that may still land, None for one that surely failed."""
        if send is None or (send.done() and (send.cancelled() or send.exception() is not None)):
            return None
        token = next(self._tokens)
        self._uncertain[token] = send
        return token

    def _submit(self, records: list[Record]) -> asyncio.Future[None]:
        """Add records to the next round; the future is done once it is acked. Each caller
        waits on a future of its own: a cancelled caller cancels only its own, and the round
        wakes each caller with one callback (a shared future, shielded, took two and a future
        more). A function, not a coroutine: one frame less to enter and leave per caller."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._waiters:
            self._wake.set()
        self._queue.extend(records)
        self._waiters.append(waiter)
        return waiter

    async def _write(self) -> None:
        """The writer, a group commit: everything submitted since the last round was acked
        goes out as one produce request; the round's callers are woken when all of it is
        acknowledged, with the first error, or with a timeout. A timed-out round's error
        carries ``outcome``, which settles when the producer knows what became of it.

        One round is in flight at a time (the producer sends one request to a broker at a
        time anyway). When it is acked, the next round is handed to the producer before the
        acked round's sessions are woken, and they are woken one turn of the loop later: the
        produce request is written first and the broker works on it while the sessions send
        their answers, instead of after them."""
        loop = asyncio.get_running_loop()
        acked: list[asyncio.Future[None]] | None = None  # acked, its sessions not yet woken
        try:
            while True:
                if not self._waiters and acked is not None:
                    _settle(acked)  # nothing to send first
                    acked = None
                await self._wake.wait()
                self._wake.clear()
                records, done = self._queue, self._waiters
                self._queue, self._waiters = [], []
                if not done:
                    continue
                producer = self._producer
                try:
                    if producer is None:
                        raise ConnectionError("no producer")
                    acks = await self._send_batches(producer, records)
                except Exception as exc:
                    _settle(done, exc)
                    continue
                finally:
                    if acked is not None:
                        loop.call_soon(_settle, acked)  # behind the producer's next turns
                        acked = None
                outcome = loop.create_future()
                _follow(outcome, acks)
                await asyncio.wait([outcome], timeout=self.settings.capture_timeout)
                if not outcome.done():
                    late = TimeoutError(f"no ack within {self.settings.capture_timeout} s")
                    late.outcome = outcome  # type: ignore[attr-defined]
                    _settle(done, late)
                elif outcome.exception() is not None:
                    _settle(done, outcome.exception())
                else:
                    acked = done
        finally:
            if acked is not None:
                _settle(acked)

    async def _send_batches(self, producer: AIOKafkaProducer, records: list[Record]) -> list[asyncio.Future[Any]]:
        """The round as one produce request per partition leader, sent on the producer's own
        connections; the futures are done when each is answered.

        The writer already batches and keeps one round in flight, so the producer's
        accumulator and sender task are bypassed: handing them a round took about 260 µs of
        CPU and a dozen turns of the event loop, a request sent straight about 110 µs. What
        they did besides is done here: idempotence's producer id and sequence numbers (from
        the producer's own state), and the answer's errors; a failed round is not retried
        here but fails, and the recorder spools it and starts a new producer."""
        txn = producer._txn_manager  # None unless idempotent
        if txn is not None and not txn.has_pid():
            await asyncio.wait_for(asyncio.shield(txn.wait_for_pid()), self.settings.capture_timeout)
        requests: list[dict[tuple[str, int], Any]] = [{}]  # a partition's full batch moves to the next request
        cached = self._partition_of
        for topic, key, value in records:
            partition = cached.get((topic, key)) if key is not None else 0
            if partition is None:
                assert key is not None
                partition = await self._partition(producer, topic, key)
            tp = (topic, partition)
            for request in requests:
                builder = request.get(tp)
                if builder is None:
                    builder = request[tp] = producer.create_batch()
                if builder.append(key=key, value=value, timestamp=None) is not None:
                    break
                if builder.record_count() == 0:
                    raise ValueError(f"a record of {len(value)} bytes exceeds the batch size")
            else:
                builder = producer.create_batch()
                if builder.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a record of {len(value)} bytes exceeds the batch size")
                requests.append({tp: builder})
        client, loop = producer.client, asyncio.get_running_loop()
        leaders: dict[tuple[str, int], int] = {}
        for topic, partition in {tp for request in requests for tp in request}:  # all, before anything is sent
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            if leader is None or leader < 0:
                client.force_metadata_update()
                raise LeaderNotAvailableError(f"no leader known for {topic}/{partition}")
            leaders[topic, partition] = leader
        sent: list[asyncio.Future[Any]] = []
        for request in requests:
            by_leader: dict[int, dict[str, list[tuple[int, bytes]]]] = {}
            for (topic, partition), builder in request.items():
                if txn is not None:
                    tp = TopicPartition(topic, partition)
                    sequence = txn.sequence_number(tp)
                    txn.increment_sequence_number(tp, builder.record_count())
                    builder._set_producer_state(txn.producer_id, txn.producer_epoch, sequence)
                batches = by_leader.setdefault(leaders[topic, partition], {}).setdefault(topic, [])
                batches.append((partition, builder._build()))
            for leader, topics in by_leader.items():
                produce = ProduceRequest(
                    required_acks=-1, timeout=int(self.settings.capture_timeout * 1000),
                    topics=list(topics.items()), transactional_id=None,
                )  # fmt: skip
                sent.append(loop.create_task(_produce(client, leader, produce)))
        return sent

    async def _partition(self, producer: AIOKafkaProducer, topic: str, key: bytes) -> int:
        """The default partitioner's choice (murmur2 of the key), as every other producer
        of these topics makes it; remembered per key (the caller looks there first)."""
        if topic not in self._partitions:
            self._partitions[topic] = sorted(await producer.partitions_for(topic))
        partitions = self._partitions[topic]
        chosen = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        if len(self._partition_of) < 1_000_000:
            self._partition_of[(topic, key)] = chosen
        return chosen

    # -- the spool ----------------------------------------------------------------------
    async def _enter_spooling(self, cause: BaseException) -> None:
        async with self._lock:
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
        offset, backoff = 0, 0.2
        while True:
            try:
                if self._producer is None:
                    self._partitions.clear()
                    self._partition_of.clear()
                    if not await reachable(self.bootstrap):  # before blocking a thread on it
                        raise ConnectionError(f"no broker at {self.bootstrap}")
                    await asyncio.to_thread(ensure_topics, self.settings, self.bootstrap)
                    self._producer = await self._new_producer()
                entries, after = self.spool.read(offset)
                if entries:
                    await self._submit([r for r, token in entries if not await self._landed(token)])
                    offset, backoff = after, 0.2
                    continue
                async with self._lock:
                    size = self.spool.size()
                    if size == offset:
                        self.spool.clear()
                        self._spooling = False
                        log.info("spool drained: capturing straight to %s again", self.bootstrap)
                    elif size < offset:  # emptied under this drainer (another recorder's, same file)
                        log.warning("spool %s shorter than what was drained of it: reading it again", self.spool.path)
                        offset = 0
                if not self._spooling:
                    await self._close_retired()
                    return
                await asyncio.sleep(0.05)  # appended meanwhile: read next (and never a loop that does not yield)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("broker still away: %r", exc)
                old, self._producer = self._producer, None
                if old is not None:
                    await _quietly_stop(old)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _landed(self, token: Token) -> bool:
        """Whether a spooled record's first send reached the broker after all."""
        send = self._uncertain.pop(token, None) if token is not None else None
        if send is None:
            return False
        # it settles (delivered, or expired by the producer); if not in time, send again
        await asyncio.wait([send], timeout=3 * self.settings.capture_timeout)
        return send.done() and not send.cancelled() and send.exception() is None

    async def _close_retired(self) -> None:
        retired, self._retired = self._retired, []
        for producer in retired:
            await _quietly_stop(producer)

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
            await _quietly_stop(producer)
            raise
        return producer

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly_stop(producer, timeout=self.settings.capture_timeout)


async def _produce(client: Any, leader: int, request: ProduceRequest) -> None:
    """Send one produce request; raises the first partition's error (a duplicate sequence is
    the broker telling an idempotent producer it already has the batch: success)."""
    try:
        response = await client.send(leader, request)
    except KafkaError as exc:
        if getattr(exc, "invalid_metadata", False):
            client.force_metadata_update()
        raise
    for topic, partitions in response.topics:
        for answer in partitions:
            error = for_code(answer[1])
            if error is not NoError and error is not DuplicateSequenceNumber:
                if getattr(error, "invalid_metadata", False):
                    client.force_metadata_update()
                raise error(f"{topic}/{answer[0]}")


def _settle(waiters: list[asyncio.Future[None]], error: BaseException | None = None) -> None:
    """Wake a round's callers (those not cancelled meanwhile), with its error if any."""
    for waiter in waiters:
        if not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)


def _follow(done: asyncio.Future[None], acks: list[asyncio.Future[Any]]) -> None:
    """Complete ``done`` once every ack has come, with the first failure if any."""
    pending = len(acks)
    if not pending:  # a round of records that all turned out to have landed already
        done.set_result(None)
        return

    def settle(ack: asyncio.Future[Any]) -> None:
        nonlocal pending
        pending -= 1
        if done.done():
            return
        if ack.cancelled():
            done.set_exception(ConnectionError("send cancelled"))
        elif ack.exception() is not None:
            done.set_exception(ack.exception())  # type: ignore[arg-type]
        elif pending == 0:
            done.set_result(None)

    for ack in acks:
        ack.add_done_callback(settle)


async def _quietly_stop(producer: AIOKafkaProducer, timeout: float = 1.0) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(producer.stop(), timeout)
