"""CSMS-initiated calls: consumed from ``ocpp.commands`` and delivered to connected stations.

Every gateway reads every command, and the one that holds the station's connection delivers
it. A command is never dropped: a ``CommandUndelivered`` record goes to ``ocpp.frames`` with
the reason when its payload is not valid (the holder says so) or when no gateway holds the
station. Who says the latter must be one gateway, and one that is there: the gateways share
the command partitions in a consumer group (``twin-gateway.undelivered``), and the member
that owns a command's partition judges it by the table of ``gateway.connections``, once that
table is at least as new as the command: undelivered when nobody held the station when the
command was sent (the records' timestamps) and nobody holds it now. Kafka's group, not a
protocol of ours, so keeps one judge per partition while gateways come and go, on one host
or several; a judge that dies leaves its partitions, from their committed position, to
another. A gateway that held the station when the command was sent and no longer does says
undelivered itself; were both to say it, the record's ``(conn_id, seq)`` makes the second a
duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from twin import envelope, kafka_security, schemas
from twin.broker import STOP_WITHIN, stop_quietly
from twin.gateway.connections import nobody_delivers
from twin.messages import csms_initiated

if TYPE_CHECKING:
    from twin.gateway.server import Gateway

log = logging.getLogger("twin.gateway")
GROUP = "twin-gateway"
"""Consumer group of the gateways, behind the topic prefix like every name on the cluster."""
JUDGES = "twin-gateway.undelivered"
"""Consumer group that shares the command partitions among the gateways: who says undelivered."""
NOBODY = "station not connected to any gateway"


def command(station_id: str, action: str, payload: dict[str, Any], requested_by: str) -> dict[str, Any]:
    """A command as ARCHITECTURE.md spells it."""
    return {
        "command_id": secrets.token_hex(8),
        "station_id": station_id,
        "action": action,
        "payload": payload,
        "requested_at": envelope.iso_ms(),
        "requested_by": requested_by,
    }


def command_problem(action: str, payload: Any, protocol: str = "ocpp2.1") -> str | None:
    """Why a command cannot be sent to a station, or None."""
    if not csms_initiated(action):
        return f"{action} is sent by stations, not by the CSMS"
    violation = schemas.problem(protocol, action, "Request", payload)
    return None if violation is None else f"{violation.code}: {violation.reason}"


class CommandInbox:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._task: asyncio.Task[None] | None = None
        self._judge: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.gateway.settings.capture:
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._judge = asyncio.get_running_loop().create_task(self._judge_undelivered())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, self._judge, *self._deliveries) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def _run(self) -> None:
        settings = self.gateway.settings
        while True:
            # Partitions are assigned, not subscribed: the group only keeps our committed
            # position, so a gateway starts delivering at once instead of after a rebalance
            # (5 s on Tansu), and each gateway sees every command (the holder delivers).
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.gateway.bootstrap, **kafka_security.aiokafka(settings),
                group_id=f"{settings.topic_prefix}{GROUP}",
                auto_offset_reset="earliest",
                enable_auto_commit=True,
                auto_commit_interval_ms=1000,
            )
            try:
                await consumer.start()
                topic = settings.topics.commands
                partitions = consumer.partitions_for_topic(topic)
                while not partitions:
                    await asyncio.sleep(0.2)
                    await consumer._client.force_metadata_update()
                    partitions = consumer.partitions_for_topic(topic)
                consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
                async for message in consumer:
                    try:
                        cmd = envelope.loads(message.value)
                    except Exception:
                        log.warning("unreadable command at offset %s", message.offset)
                        continue
                    await self.deliver(dict(cmd), message.timestamp)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("command consumer failed (%r); retrying", exc)
                await asyncio.sleep(1)
            finally:
                await stop_quietly(consumer, STOP_WITHIN)

    async def _judge_undelivered(self) -> None:
        """As a member of the judges' group: each command of our partitions whose station no
        gateway holds is recorded undelivered. Positions are committed after judging, so a
        judge's death leaves its commands to the next owner (judged twice at worst)."""
        settings = self.gateway.settings
        connections = self.gateway.connections
        while True:
            consumer = AIOKafkaConsumer(
                settings.topics.commands,
                bootstrap_servers=self.gateway.bootstrap, **kafka_security.aiokafka(settings),
                group_id=f"{settings.topic_prefix}{JUDGES}",
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                fetch_max_wait_ms=100,
            )
            try:
                await consumer.start()
                while True:
                    batches = await consumer.getmany(timeout_ms=500, max_records=500)
                    if not batches:
                        continue
                    fresh = await connections.caught_up()
                    for messages in batches.values():
                        for message in messages:
                            with contextlib.suppress(Exception):
                                cmd = dict(envelope.loads(message.value))
                                station_id = str(cmd.get("station_id", ""))
                                if station_id in self.gateway.sessions:
                                    continue  # ours: delivered (or refused) by deliver()
                                then = connections.holder_at(station_id, message.timestamp)
                                if nobody_delivers(then, connections.holder(station_id)):
                                    reason = NOBODY if fresh else f"{NOBODY} (as far as this gateway knew)"
                                    await self._undelivered(cmd, reason)
                    await consumer.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("judging undelivered commands failed (%r); retrying", exc)
                await asyncio.sleep(1)
            finally:
                await stop_quietly(consumer, STOP_WITHIN)

    async def deliver(self, cmd: dict[str, Any], ts: int) -> None:
        """Send a command (sent at ``ts``, ms) to its station if its connection is here."""
        station_id = str(cmd.get("station_id", ""))
        action, payload = str(cmd.get("action", "")), cmd.get("payload")
        session = self.gateway.sessions.get(station_id)
        if session is None:
            then = self.gateway.connections.holder_at(station_id, ts)
            if then is not None and then.get("gateway_id") == self.gateway.gateway_id:
                await self._undelivered(cmd, NOBODY)  # held here when sent, closed since: the judge thinks it ours
            return  # another gateway's, or nobody's: the judge says so
        problem = command_problem(action, payload, session.protocol)
        if problem is not None:
            await self._undelivered(cmd, problem)
            return
        assert session is not None and isinstance(payload, dict)
        task = asyncio.get_running_loop().create_task(
            _send(session.call(action, payload, command_id=cmd.get("command_id")))
        )
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _undelivered(self, cmd: dict[str, Any], reason: str) -> None:
        command_id = str(cmd.get("command_id") or secrets.token_hex(8))
        record = envelope.lifecycle(
            "CommandUndelivered",
            {"command_id": command_id, "action": cmd.get("action"), "reason": reason,
             "requested_by": cmd.get("requested_by"), "requested_at": cmd.get("requested_at")},
            station_id=str(cmd.get("station_id", "")), protocol="",
            conn_id=f"cmd-{command_id}", seq=1,
        )  # fmt: skip
        await self.gateway.recorder.record([record])
        log.info("command %s for %s undelivered: %s", command_id, cmd.get("station_id"), reason)


async def _send(call: Any) -> None:
    with contextlib.suppress(Exception):  # a closed connection: the Disconnected record says so
        await call
