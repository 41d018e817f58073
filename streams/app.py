"""The Faust app: one agent folds ``ocpp.frames`` into a changelog-backed table of twins with
the same ``apply`` that ``twin rebuild`` uses, publishes each changed twin to the compacted
``twin.state`` and its alerts to ``twin.alerts``.

At least once, on purpose: Faust's exactly-once is unreliable, and the fold makes a
redelivered record a no-op, so the table converges on the rebuild either way. What Faust
loses around a rebalance is made up here: records skipped by the consumer
(``streams.continuity``), records committed but missing from the table (a partition taken
folds the records behind it again, :data:`REFOLD_WINDOW`), and a table recovery waiting for
records its consumer dropped (``streams.recovery``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import weakref
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import faust
import orjson
from faust.streams import _current_event

from streams import access, recovery, signals_archive, views
from streams import sites as site_views
from streams.continuity import QUIET, Continuity
from twin import archive, fold, kafka_security
from twin.alerts import alerts
from twin.settings import Settings
from twin.sites import Site
from twin.tokens import Guard

log = logging.getLogger("twin.worker")

FETCH_MAX_WAIT_MS = 10
"""How long a fetch may wait for data, on Tansu. Faust hard-codes 1,500 ms, and Tansu holds a
fetch for much of that even when data arrives (measured: 360 ms median delivery at 1,500 ms,
3 ms at 10 ms), which put seconds between a frame and its twin. Apache Kafka answers a fetch
as soon as data arrives whatever its wait, so there the cap buys nothing and costs CPU: an
idle worker's consumer polls a hundred times a second (see :func:`holds_fetches`)."""


def holds_fetches(bootstrap: str) -> bool:
    """Whether the broker may hold a fetch after data arrived: Tansu, known here as the broker
    that grants no producer ids (as the gateway's capture mode finds it). Apache Kafka (and
    what speaks its protocol fully) grants them. Unsure (no answer) counts as Tansu: the cap
    then costs CPU, never latency."""
    from twin.broker import grants_idempotence

    def ask() -> bool:
        return asyncio.run(grants_idempotence(bootstrap))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return not ask()
    with ThreadPoolExecutor(1) as pool:  # called from a running loop: ask from a thread of its own
        return not pool.submit(ask).result()


def _quick_fetches() -> None:
    """Cap the fetch wait of the consumers Faust creates (this process only; Tansu only)."""
    import aiokafka

    if getattr(aiokafka.AIOKafkaConsumer, "_twin_quick", False):
        return
    base = aiokafka.AIOKafkaConsumer

    class QuickConsumer(base):  # type: ignore[misc, valid-type]
        _twin_quick = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["fetch_max_wait_ms"] = min(kwargs.get("fetch_max_wait_ms", 500), FETCH_MAX_WAIT_MS)
            super().__init__(*args, **kwargs)

    aiokafka.AIOKafkaConsumer = QuickConsumer  # type: ignore[misc]


BATCH = 2000
BATCH_WINDOW = 0.25
"""The agent folds up to ``BATCH`` frames at a time, waiting at most ``BATCH_WINDOW`` seconds
for them, and writes each changed twin once per batch: Faust's cost is per write, not per
frame folded."""

RECENT = 100
"""Frames kept per station for ``/v1/stations/{id}/frames`` (in memory: a restarted worker
starts the list again)."""
ARCHIVE_BATCH = 20_000
ARCHIVE_WINDOW = 10.0
"""The archive agent writes a file per date at least every ``ARCHIVE_WINDOW`` seconds (or
every ``ARCHIVE_BATCH`` frames): fewer, larger files than a frame at a time."""

REFOLD_WINDOW = 5000
"""Records of ocpp.frames a worker folds again behind the offset it takes a partition at, each
time it takes one: at start, and at each rebalance, kept partitions included.

Its table can lack their effects, though the group committed past them:

- Faust commits a source offset once the events up to it are acknowledged, waiting only for
  the sends attached to them; a table's changelog write is not attached (``send_soon``,
  flushed by the producer afterwards), so a SIGKILL can fall between the commit and the
  changelog write;
- ``take_events`` acknowledges a batch when its generator is closed, so a worker stopped
  while it folds a batch commits the batch unfolded (seen: a clean stop, then the new
  owner one frame short);
- a revoked worker finishing its batch writes the changelog after the new owner has read
  it, and the memory store recovers every partition from its changelog at each rebalance;
- on Tansu, a recovery can stop at a high-water mark short of the true end.

(Rewinding the group's commit instead is refused by Tansu while a dead member's session
lingers.)

The fold makes what the table has a no-op and restores what it lost. It costs one read of at
most ``REFOLD_WINDOW`` records per partition taken (tests/test_reliability.py: a worker
killed mid-stream, a clean stop, a kill during a join; each survivor equals the rebuild)."""


class _Partition:
    """What Faust's stores read of "the current event": its message's partition."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


@contextlib.contextmanager
def on_partition(partition: int) -> Iterator[None]:
    """Table writes from a batch, attributed to the partition their frames came from (a
    store writing outside a one-event stream asks Faust for the current event)."""
    at = _Partition(partition)
    token = _current_event.set(weakref.ref(at))  # type: ignore[arg-type]  # a stand-in, not an event
    try:
        yield
    finally:
        _current_event.reset(token)


def group_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}twin-worker"


def committed(settings: Settings, bootstrap: str) -> dict[int, int]:
    """The worker group's committed position on each ocpp.frames partition that has one."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id(settings), enable_auto_commit=False,
                             **kafka_security.kafka_python(settings))
    try:
        topic = settings.topics.frames
        positions = {
            p: consumer.committed(TopicPartition(topic, p)) for p in consumer.partitions_for_topic(topic) or ()
        }
        return {p: offset for p, offset in sorted(positions.items()) if offset}
    finally:
        consumer.close()


def _going_on(check: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``check`` as a timer that logs its failure and runs again next time: an exception
    out of a Faust timer ends it for good, and a broker away for a moment (the tail check
    reads ocpp.frames directly) or a partition revoked under a check is no reason."""

    async def run() -> None:
        try:
            await check()
        except Exception as exc:
            log.warning("%s failed (%r): again in a moment", check.__name__, exc)

    return run


def create_app(
    settings: Settings,
    bootstrap: str,
    web_port: int,
    data_dir: str = "twin-data/worker",
    expect: dict[int, int] | None = None,
    archive_to: str | None = None,
    sites: list[Site] | None = None,
    guard: Guard | None = None,
    tls: ssl.SSLContext | None = None,
) -> faust.App:
    """The worker; ``expect``: per partition, the first offset it should see (the committed
    position, see :func:`committed`); ``archive_to``: write ocpp.frames to this Parquet archive too;
    ``sites``: the grid connections ``/v1/sites`` shows; ``guard``: who may use the API (none:
    anyone); ``tls``: serve it over HTTPS."""
    tansu = holds_fetches(bootstrap)
    if tansu:
        _quick_fetches()
    # the gap fill on every broker; the read past a quiet partition's last event for the fold
    # on every broker too (on Kafka a rebalance left a partition's last frame unfolded: the
    # reliability suite's survivor one frame short after 120 s), for the archive on Tansu only
    # (there its tail read duplicates what the archive agent still holds; see streams.continuity)
    folded = Continuity("fold", bootstrap, settings.topics.frames, expect, tails=True, refold=REFOLD_WINDOW)
    archived = Continuity("archive", bootstrap, settings.topics.frames, expect, tails=tansu, refold=REFOLD_WINDOW)
    folding = asyncio.Lock()  # the agent and the tail check take turns: read, fold, write
    app = faust.App(
        group_id(settings),
        broker=f"kafka://{bootstrap}",
        **kafka_security.faust_options(settings),
        store=f"{settings.store}://",
        web_port=web_port,
        web_host=settings.host,
        web_bind=settings.host,
        web_ssl_context=tls,
        canonical_url=f"{'https' if tls else 'http'}://{settings.host}:{web_port}",
        datadir=data_dir,
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        table_standby_replicas=0,
        topic_replication_factor=1,
        web_in_thread=False,
        # a worker killed without leaving its group is noticed in 10 s, not Kafka's 45-60 s
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )
    topics = settings.topics
    frames = app.topic(topics.frames, key_serializer="raw", value_serializer="raw", partitions=settings.partitions)
    state = app.topic(topics.state, key_serializer="raw", value_serializer="raw", partitions=settings.partitions)
    alert_topic = app.topic(topics.alerts, key_serializer="raw", value_serializer="raw", partitions=settings.partitions)
    twins = app.Table(
        "twins",
        default=None,
        partitions=settings.partitions,
        # JSON keys: Faust's changelog recovery reads keys back as JSON, whatever the schema
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
    )

    recent: dict[str, deque[dict[str, Any]]] = defaultdict(lambda: deque(maxlen=RECENT))

    def decode(value: bytes) -> dict[str, Any] | None:
        """An envelope with a station, or None: the gateway never writes anything else."""
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
        station = record.get("station_id") if isinstance(record, dict) else None
        return record if isinstance(station, str) and station else None

    def assigned() -> set[int]:
        """This worker's partitions of ocpp.frames."""
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == topics.frames}

    async def fold_batch(records: Iterable[tuple[int, dict[str, Any] | None]]) -> None:
        async with folding:
            await _fold_batch(records)

    async def _fold_batch(records: Iterable[tuple[int, dict[str, Any] | None]]) -> None:
        """Fold (partition, record) pairs in order; then write each changed twin once, to the
        table's changelog (on the partition of its frames) and to twin.state, and the
        batch's alerts after them: for the partitions still this worker's (a fold that ends
        after a rebalance took its partition away leaves the twin to the new owner, who
        folds it again: a late write would leave a stale twin last in the changelog)."""
        changed: dict[str, tuple[int, dict[str, Any]]] = {}
        raised: list[tuple[int, bytes, bytes]] = []
        for partition, record in records:
            if record is None:
                continue
            station = record["station_id"]
            before = changed[station][1] if station in changed else twins.get(station)
            after = fold.apply(before, record)
            if after is before:
                continue  # redelivered: already folded
            changed[station] = (partition, after)
            recent[station].append(views.line(record))
            raised += [(partition, station.encode(), orjson.dumps(alert)) for alert in alerts(record, before, after)]
        if not changed:
            return
        mine = assigned()
        for station, (partition, twin) in changed.items():
            if partition not in mine:
                continue
            # what ``twins[station] = twin`` does inside a one-event stream, here for a batch
            with on_partition(partition):  # the RocksDB store keeps a database per partition
                twins.data[station] = twin
            twins.send_changelog(partition, station, twin)
            await state.send(key=station.encode(), value=orjson.dumps(fold.public(twin)))
        for partition, key, alert in raised:
            if partition in mine:
                await alert_topic.send(key=key, value=alert)

    agents = (folded, archived) if archive_to else (folded,)

    async def tail_check() -> None:
        """Quiet partitions read past their last event, for each agent (see continuity); a
        partition taken and quiet since, from the group's committed offset (see
        :data:`REFOLD_WINDOW`; not the consumer's position, which can be a fetch ahead of
        what the agent has folded)."""
        if views.recovering(app):
            return  # the table is not whole yet: folding into it now would be folding onto nothing
        mine = assigned()
        generation = app.consumer_generation_id
        if any(agent.taken.get(p, -1) != generation for agent in agents for p in mine):
            positions = await asyncio.to_thread(committed, settings, bootstrap)
            for agent in agents:
                for partition in mine:  # the agent may have taken it meanwhile: take is a no-op then
                    agent.take(partition, positions.get(partition, 0), generation)
        for partition, due, records in await folded.tails(mine):
            await fold_batch((partition, record) for record in records)
            folded.advance(partition, due + len(records))
        if archive_to:
            for partition, due, records in await archived.tails(mine):
                await asyncio.to_thread(archive.write, archive_to, sorted(records, key=lambda r: r["ts"]))
                archived.advance(partition, due + len(records))

    async def unstick_recovery() -> None:
        """Faust's recovery, read again where it waits for records it dropped (see recovery)."""
        await recovery.unstick(app)

    for every, check in ((QUIET, tail_check), (recovery.STALL / 2, unstick_recovery)):
        app.timer(every, name=check.__name__)(_going_on(check))

    @app.agent(frames)
    async def fold_frames(stream: Any) -> None:
        async for events in stream.take_events(BATCH, within=BATCH_WINDOW):
            await fold_batch(await folded.with_gaps(events, decode))

    if archive_to:

        @app.agent(frames)
        async def archive_frames(stream: Any) -> None:
            """ocpp.frames into the Parquet archive, a batch at a time. Faust commits a frame
            once both agents have acknowledged it, and this one acknowledges a batch after
            its files are written, but for a batch in hand when the worker stops (see
            :data:`REFOLD_WINDOW`): the records behind each partition taken are written again
            too. At least once (readers drop duplicates)."""
            async for events in stream.take_events(ARCHIVE_BATCH, within=ARCHIVE_WINDOW):
                records = [r for _, r in await archived.with_gaps(events, decode) if r is not None]
                records.sort(key=lambda r: r["ts"])  # partitions interleave: one file per date
                await asyncio.to_thread(archive.write, archive_to, records)

    access.register(app, guard or Guard(None), settings)  # first: its check stands before every page
    views.register(app, twins, frames, recent)
    site_views.register(app, twins, frames, settings, bootstrap, sites or [])
    signals_archive.register(app, settings, bootstrap, archive_to)  # grid.signals beside the frames
    return app
