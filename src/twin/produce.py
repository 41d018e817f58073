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


class ProduceRequests:
    """Sends rounds of records; remembers each key's partition. ``timeout`` (s) is the
    broker's to answer a request, and the wait for an idempotent producer's id."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._partitions: dict[str, list[int]] = {}
        self._partition_of: dict[tuple[str, bytes], int] = {}

    def forget(self) -> None:
        """Forget the partitions learnt (a new producer, perhaps a new broker's topics)."""
        self._partitions.clear()
        self._partition_of.clear()

    async def send(self, producer: AIOKafkaProducer, records: list[Record]) -> list[asyncio.Future[Any]]:
        """The round as one produce request per partition leader (more where a partition's
        batch is full), sent on the producer's own connections; the futures are done when
        each is answered. A failed request is not retried here but fails: the recorder
        spools its round and starts a new producer."""
        txn = producer._txn_manager  # None unless idempotent
        if txn is not None and not txn.has_pid():
            await asyncio.wait_for(asyncio.shield(txn.wait_for_pid()), self.timeout)
        requests: list[dict[tuple[str, int], _Batch]] = [{}]  # a partition's full batch moves to the next request
        cached = self._partition_of
        for topic, key, value in records:
            partition = cached.get((topic, key)) if key is not None else 0
            if partition is None:
                assert key is not None
                partition = await self._partition(producer, topic, key)
            tp = (topic, partition)
            for request in requests:
                batch = request.get(tp)
                if batch is None:
                    batch = request[tp] = _Batch()
                if batch.builder.append(batch.count, None, key, value, NO_HEADERS) is not None:
                    batch.count += 1
                    break
                if batch.count == 0:
                    raise ValueError(f"a record of {len(value)} bytes exceeds the batch size")
            else:
                batch = _Batch()
                if batch.builder.append(0, None, key, value, NO_HEADERS) is None:
                    raise ValueError(f"a record of {len(value)} bytes exceeds the batch size")
                batch.count = 1
                requests.append({tp: batch})
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
            for (topic, partition), batch in request.items():
                if txn is not None:
                    tp = TopicPartition(topic, partition)
                    sequence = txn.sequence_number(tp)
                    txn.increment_sequence_number(tp, batch.count)
                    batch.builder.set_producer_state(txn.producer_id, txn.producer_epoch, sequence)
                batches = by_leader.setdefault(leaders[topic, partition], {}).setdefault(topic, [])
                batches.append((partition, batch.builder.build()))
            for leader, topics in by_leader.items():
                produce = ProduceRequest(
                    required_acks=-1, timeout=int(self.timeout * 1000),
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


NO_HEADERS: list[Any] = []  # read, never written


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
            return
        if ack.cancelled():
            done.set_exception(ConnectionError("send cancelled"))
        elif ack.exception() is not None:
            done.set_exception(ack.exception())  # type: ignore[arg-type]
        elif pending == 0:
            done.set_result(None)

    for ack in acks:
        ack.add_done_callback(settle)
