"""CSMS-initiated calls: consumed from ``ocpp.commands`` and delivered to connected stations.

A command for a station that is not connected here, or whose payload is not valid, is not
dropped: a ``CommandUndelivered`` record goes to ``ocpp.frames`` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from twin import envelope, kafka_security, schemas
from twin.messages import csms_initiated

if TYPE_CHECKING:
    from twin.gateway.server import Gateway

log = logging.getLogger("twin.gateway")
GROUP = "twin-gateway"
"""Consumer group of the gateways, behind the topic prefix like every name on the cluster."""


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
        self._deliveries: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.gateway.settings.capture:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._deliveries) if t is not None]
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
            # (5 s on Tansu), and each gateway sees every command.
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
                    await self.deliver(dict(cmd))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("command consumer failed (%r); retrying", exc)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def deliver(self, cmd: dict[str, Any]) -> None:
        station_id = str(cmd.get("station_id", ""))
        action, payload = str(cmd.get("action", "")), cmd.get("payload")
        session = self.gateway.sessions.get(station_id)
        problem = (
            "station not connected to this gateway"
            if session is None
            else command_problem(action, payload, session.protocol)
        )
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
