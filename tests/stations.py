"""Charging stations for tests: the ``ocpp`` package's client side, and a raw one for the
frames that package cannot send (SEND, CALLRESULTERROR, garbage)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import websockets
from ocpp.routing import on
from ocpp.v21 import ChargePoint as ChargePoint21
from ocpp.v21 import call as call21
from ocpp.v21 import call_result as result21
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201

TS = "2026-03-01T08:00:00.000Z"


class Station21(ChargePoint21):
    @on("ReserveNow")
    def on_reserve_now(self, **_: Any) -> result21.ReserveNow:
        return result21.ReserveNow(status="Accepted")


class Station201(ChargePoint201):
    @on("ReserveNow")
    def on_reserve_now(self, **_: Any) -> result201.ReserveNow:
        return result201.ReserveNow(status="Accepted")


STATIONS = {"ocpp2.1": (Station21, call21), "ocpp2.0.1": (Station201, call201)}


@contextlib.asynccontextmanager
async def station(url: str, protocol: str = "ocpp2.1", **connect: Any) -> AsyncIterator[Any]:
    """A running ``ocpp`` ChargePoint; ``cp.calls`` is the version's call module."""
    cls, calls = STATIONS[protocol]
    async with websockets.connect(url, subprotocols=[protocol], **connect) as ws:  # type: ignore[list-item]
        cp = cls(url.rsplit("/", 1)[-1], ws)
        cp.calls = calls
        task = asyncio.get_running_loop().create_task(cp.start())
        try:
            yield cp
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def session_of_calls(cp: Any) -> None:
    """The usual opening of a station: boot, status, heartbeat, a metered transaction."""
    c = cp.calls
    await cp.call(c.BootNotification(charging_station={"model": "M1", "vendor_name": "Acme"}, reason="PowerUp"))
    await cp.call(c.StatusNotification(timestamp=TS, connector_status="Available", evse_id=1, connector_id=1))
    await cp.call(c.Heartbeat())
    await cp.call(c.Authorize(id_token={"id_token": "TAG1", "type": "ISO14443"}))
    await cp.call(
        c.TransactionEvent(
            event_type="Started", timestamp=TS, trigger_reason="Authorized", seq_no=0,
            transaction_info={"transaction_id": "T1", "charging_state": "Charging"},
            evse={"id": 1, "connector_id": 1}, id_token={"id_token": "TAG1", "type": "ISO14443"},
            meter_value=[{"timestamp": TS, "sampled_value": [
                {"value": 1000.0, "measurand": "Energy.Active.Import.Register"},
                {"value": 7200.0, "measurand": "Power.Active.Import"}]}],
        )
    )  # fmt: skip


class RawStation:
    """A websocket that speaks whatever text it is told to."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def send(self, message: Any) -> None:
        await self.ws.send(message if isinstance(message, str | bytes) else orjson.dumps(message).decode())

    async def recv(self, timeout: float = 5) -> list[Any]:
        value: list[Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        return value

    async def nothing(self, within: float = 0.5) -> bool:
        try:
            await asyncio.wait_for(self.ws.recv(), within)
        except TimeoutError:
            return True
        return False

    async def ask(self, message: Any, timeout: float = 5) -> list[Any]:
        await self.send(message)
        return await self.recv(timeout)


@contextlib.asynccontextmanager
async def raw_station(url: str, protocol: str = "ocpp2.1", **connect: Any) -> AsyncIterator[RawStation]:
    async with websockets.connect(url, subprotocols=[protocol], max_size=None, **connect) as ws:  # type: ignore[list-item]
        yield RawStation(ws)


BOOT = [2, "boot-1", "BootNotification", {"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}}]

RESERVE_PAYLOAD = {  # ReserveNow as the ocpp package's dataclasses spell it
    "id": 7, "expiry_date_time": "2026-03-01T09:00:00.000Z",
    "id_token": {"id_token": "TAG1", "type": "ISO14443"}, "evse_id": 1,
}  # fmt: skip
