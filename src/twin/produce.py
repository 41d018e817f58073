"""A round of records as Kafka produce requests, one per partition leader, sent on an
aiokafka producer's own client, past its accumulator and sender task: the recorder batches
each round itself and keeps one in flight, so what they add is cost (a round handed to them
took about 260 µs of CPU and a dozen turns of the event loop, a request sent straight about
110 µs). What they did besides is done here: the default partitioner's choice, idempotence's
producer id and sequence numbers (from the producer's own state), and the answers' errors.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import DuplicateSequenceNumber, KafkaError, LeaderNotAvailableError, NoError, for_code
from aiokafka.partitioner import murmur2
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from twin.spool import Record

MAX_BATCH_BYTES = 1 << 20
"""Record batch size: any frame the gateway accepts (``max_frame_bytes``) fits, with room."""

REFUSING_CODES = {2: "CORRUPT_MESSAGE", 10: "MESSAGE_TOO_LARGE", 18: "RECORD_LIST_TOO_LARGE", 87: "INVALID_RECORD"}
"""The broker's answers that refuse records for what they are, not for the broker's state."""


class Refused(Exception):
    """Records refused for what they are (larger than the topic's ``max.message.bytes``,
    invalid for the topic): sent again, they are refused again."""


class ProduceRequests:
    """Sends rounds of records; remembers each key's partition. ``timeout`` (s) is the
    broker's to answer a request, and the wait for an idempotent producer's id."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._partitions: dict[str, list[int]] = {}
        self._partition_of: dict[tuple[str, bytes], int] = {}

    def forget(self) -> None:
        """Forget the partitions learnt (a new producer, perhaps a new broker's topics); a
        round sent before keeps what it was sent with."""
        self._partitions, self._partition_of = {}, {}

    async def send(self, producer: AIOKafkaProducer, records: list[Record]) -> Sent:
        """The round as one produce request per partition leader (more where a partition's
        batch is full), sent on the producer's own connections; its ``acks`` are done when
        each is answered. A failed request is not retried here but fails: the recorder
        spools what did not land and starts a new producer."""
        txn = producer._txn_manager  # None unless idempotent
        if txn is not None and not txn.has_pid():
            await asyncio.wait_for(asyncio.shield(txn.wait_for_pid()), self.timeout)
        requests: list[dict[tuple[str, int], _Batch]] = [{}]  # a partition's full batch goes on in the next
        at: dict[tuple[str, int], int] = {}  # the request taking a partition's records: its last, so they stay in order
        cached = self._partition_of
        for topic, key, value in records:
            partition = cached.get((topic, key)) if key is not None else 0
            if partition is None:
                assert key is not None
                partition = await self._partition(producer, topic, key)
            tp = (topic, partition)
            n = at.get(tp, 0)
            batch = requests[n].get(tp)
            if batch is None:
                batch = requests[n][tp] = _Batch()
            if batch.builder.append(batch.count, None, key, value, NO_HEADERS) is None:  # full
                at[tp] = n = n + 1
                if n == len(requests):
                    requests.append({})
                batch = requests[n][tp] = _Batch()
                batch.builder.append(0, None, key, value, NO_HEADERS)  # a batch's first record always fits
            batch.count += 1
        client, loop = producer.client, asyncio.get_running_loop()
        leaders: dict[tuple[str, int], int] = {}
        for topic, partition in {tp for request in requests for tp in request}:  # all, before anything is sent
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            if leader is None or leader < 0:
                client.force_metadata_update()
                raise LeaderNotAvailableError(f"no leader known for {topic}/{partition}")
            leaders[topic, partition] = leader
        acks: list[asyncio.Future[Any]] = []
        carried: list[dict[tuple[str, int], tuple[int, asyncio.Future[Any]]]] = []
        for request in requests:
            by_leader: dict[int, dict[str, list[tuple[int, bytes]]]] = {}
            for (topic, partition), batch in request.items():
                if txn is not None:
                    tp = TopicPartition(topic, partition)
                    sequence = txn.sequence_number(tp)
                    txn.increment_sequence_number(tp, batch.count)
                    batch.builder.set_producer_state(txn.producer_id, txn.producer_epoch, sequence)
                batches = by_leader.setdefault(leaders[topic, partition], {}).setdefault(topic, [])
                batches.append((partition, batch.builder.build()))
            ack_of: dict[int, asyncio.Future[Any]] = {}
            for leader, topics in by_leader.items():
                produce = ProduceRequest(
                    required_acks=-1, timeout=int(self.timeout * 1000),
                    topics=list(topics.items()), transactional_id=None,
                )  # fmt: skip
                acks.append(ack_of.setdefault(leader, loop.create_task(_produce(client, leader, produce))))
            carried.append({tp: (batch.count, ack_of[leaders[tp]]) for tp, batch in request.items()})
        return Sent(acks, carried, self._partitions, self._partition_of)

    async def _partition(self, producer: AIOKafkaProducer, topic: str, key: bytes) -> int:
        """The default partitioner's choice (murmur2 of the key), as every other producer
        of these topics makes it; remembered per key (the caller looks there first)."""
        if topic not in self._partitions:
            self._partitions[topic] = sorted(await producer.partitions_for(topic))
        chosen = _murmur2_choice(self._partitions[topic], key)
        if len(self._partition_of) < 1_000_000:
            self._partition_of[(topic, key)] = chosen
        return chosen


NO_HEADERS: list[Any] = []  # read, never written


class Sent:
    """A round as sent: ``acks``, a future for each produce request, and what each carried (a
    partition's records in a request, in order), so that what surely landed is not sent again
    after another request of the round failed: a record in the log twice is harmless (readers
    keep the first of each ``(conn_id, seq)``), but not free."""

    __slots__ = ("acks", "_carried", "_partitions", "_partition_of")

    def __init__(
        self,
        acks: list[asyncio.Future[Any]],
        carried: list[dict[tuple[str, int], tuple[int, asyncio.Future[Any]]]],
        partitions: dict[str, list[int]],
        partition_of: dict[tuple[str, bytes], int],
    ) -> None:
        self.acks, self._carried = acks, carried
        self._partitions, self._partition_of = partitions, partition_of

    def unlanded(self, records: list[Record]) -> list[tuple[Record, asyncio.Future[Any] | None]]:
        """The round's records still to send, in order: a partition's from its first request
        that did not land on (its later ones too, to keep them in order). Each comes with its
        request's ack where that is the partition's first unlanded request and still in flight
        (it may land yet: the recorder asks before sending it again), else None."""
        first: dict[tuple[str, int], int] = {}  # a partition's first request that did not land
        for n, request in enumerate(self._carried):
            for tp, (_, ack) in request.items():
                if tp not in first and not _landed(ack, tp):
                    first[tp] = n
        if not first:
            return []
        at: dict[tuple[str, int], tuple[int, int]] = {}  # a partition's request, and its records there so far
        again: list[tuple[Record, asyncio.Future[Any] | None]] = []
        for record in records:
            topic, key, _ = record
            tp = (topic, self._partition(topic, key))
            n, seen = at.get(tp, (0, 0))
            while (carried := self._carried[n].get(tp)) is None or seen == carried[0]:
                n, seen = n + 1, 0
            at[tp] = (n, seen + 1)
            start = first.get(tp, len(self._carried))
            if n >= start:  # a later request's records go again even if it lands: they follow
                again.append((record, carried[1] if n == start and not carried[1].done() else None))
        return again

    def _partition(self, topic: str, key: bytes | None) -> int:
        """The partition a record was sent to (as ``ProduceRequests._partition`` chose it)."""
        if key is None:
            return 0
        chosen = self._partition_of.get((topic, key))
        return chosen if chosen is not None else _murmur2_choice(self._partitions[topic], key)


def _murmur2_choice(partitions: list[int], key: bytes) -> int:
    """The default partitioner's choice for a key, as every other producer of these topics
    (Kafka's Java client, aiokafka, kafka-python) makes it."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


def _landed(ack: asyncio.Future[Any], tp: tuple[str, int]) -> bool:
    """Whether a request's records for this partition surely landed."""
    if not ack.done() or ack.cancelled():
        return False
    error = ack.exception()
    return error is None or tp not in getattr(error, "partitions", (tp,))


class _Batch:
    """A partition's record batch in a round: aiokafka's compiled builder and its count (the
    producer's wrapper around it cost a call, a serializer check and keywords a record)."""

    __slots__ = ("builder", "count")

    def __init__(self) -> None:
        self.builder = DefaultRecordBatchBuilder(
            2, 0, is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=0,
            batch_size=MAX_BATCH_BYTES,
        )  # fmt: skip
        self.count = 0


async def _produce(client: Any, leader: int, request: ProduceRequest) -> None:
    """Send one produce request; raises the first partition's error (a duplicate sequence is
    the broker telling an idempotent producer it already has the batch: success), as
    ``Refused`` where it refuses the records themselves."""
    try:
        response = await client.send(leader, request)
    except KafkaError as exc:
        if getattr(exc, "invalid_metadata", False):
            client.force_metadata_update()
        raise
    first: Exception | None = None
    failed: set[tuple[str, int]] = set()  # the others landed
    for topic, partitions in response.topics:
        for answer in partitions:
            if answer[1] in REFUSING_CODES:
                error: Exception = Refused(f"{topic}/{answer[0]}: {REFUSING_CODES[answer[1]]}")
            else:
                kind = for_code(answer[1])
                if kind is NoError or kind is DuplicateSequenceNumber:
                    continue
                if getattr(kind, "invalid_metadata", False):
                    client.force_metadata_update()
                error = kind(f"{topic}/{answer[0]}")
            failed.add((topic, answer[0]))
            first = first or error
    if first is not None:
        first.partitions = failed  # type: ignore[attr-defined]
        raise first


def follow(done: asyncio.Future[None], acks: list[asyncio.Future[Any]]) -> None:
    """Complete ``done`` once every ack has come, with the first failure if any."""
    pending = len(acks)
    if not pending:  # a round of records that all turned out to have landed already
        done.set_result(None)
        return

    def settle(ack: asyncio.Future[Any]) -> None:
        nonlocal pending
        pending -= 1
        if done.done():
            if not ack.cancelled():
                ack.exception()  # retrieved: a late failure is the round's, already told
            return
        if ack.cancelled():
            done.set_exception(ConnectionError("send cancelled"))
        elif ack.exception() is not None:
            done.set_exception(ack.exception())  # type: ignore[arg-type]
        elif pending == 0:
            done.set_result(None)

    for ack in acks:
        ack.add_done_callback(settle)
