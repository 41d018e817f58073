"""The gateway as a transparent proxy in front of another CSMS, written here with the
``ocpp`` package's server side: frames relayed unchanged both ways and captured."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import websockets
from ocpp.routing import on
from ocpp.v21 import ChargePoint as CSMS21
from ocpp.v21 import call_result as r21
from ocpp.v201 import ChargePoint as CSMS201
from ocpp.v201 import call_result as r201
from websockets.exceptions import InvalidStatus

from tests.conftest import has, of_station, read_until, url
from tests.stations import BOOT, RESERVE_PAYLOAD, raw_station, session_of_calls, station
from twin.broker import free_port
from twin.settings import Settings

pytestmark = pytest.mark.integration


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Upstream21(CSMS21):
    """An independent OCPP 2.1 CSMS; ``seen`` lists the actions it was asked."""

    seen: list[str]

    @on("BootNotification")
    def boot(self, **_: Any) -> r21.BootNotification:
        self.seen.append("BootNotification")
        return r21.BootNotification(current_time=_now(), interval=300, status="Accepted")

    @on("StatusNotification")
    def status(self, **_: Any) -> r21.StatusNotification:
        self.seen.append("StatusNotification")
        return r21.StatusNotification()

    @on("Heartbeat")
    def heartbeat(self, **_: Any) -> r21.Heartbeat:
        self.seen.append("Heartbeat")
        return r21.Heartbeat(current_time=_now())

    @on("Authorize")
    def authorize(self, **_: Any) -> r21.Authorize:
        self.seen.append("Authorize")
        return r21.Authorize(id_token_info={"status": "Accepted"})

    @on("TransactionEvent")
    def transaction_event(self, **_: Any) -> r21.TransactionEvent:
        self.seen.append("TransactionEvent")
        return r21.TransactionEvent()


class Upstream201(CSMS201):
    seen: list[str]

    @on("BootNotification")
    def boot(self, **_: Any) -> r201.BootNotification:
        self.seen.append("BootNotification")
        return r201.BootNotification(current_time=_now(), interval=300, status="Accepted")

    @on("StatusNotification")
    def status(self, **_: Any) -> r201.StatusNotification:
        self.seen.append("StatusNotification")
        return r201.StatusNotification()

    @on("Heartbeat")
    def heartbeat(self, **_: Any) -> r201.Heartbeat:
        self.seen.append("Heartbeat")
        return r201.Heartbeat(current_time=_now())

    @on("Authorize")
    def authorize(self, **_: Any) -> r201.Authorize:
        self.seen.append("Authorize")
        return r201.Authorize(id_token_info={"status": "Accepted"})

    @on("TransactionEvent")
    def transaction_event(self, **_: Any) -> r201.TransactionEvent:
        self.seen.append("TransactionEvent")
        return r201.TransactionEvent()


UPSTREAM: dict[str, type] = {"ocpp2.1": Upstream21, "ocpp2.0.1": Upstream201}


class Upstream:
    """The other CSMS: records what it saw (paths, headers, actions) and can drop stations."""

    def __init__(self, classes: dict[str, type] | None = None) -> None:
        self.classes = classes or UPSTREAM
        self.port = free_port()
        self.paths: list[str] = []
        self.auth: list[str | None] = []
        self.points: dict[str, Any] = {}
        self.sockets: dict[str, Any] = {}

    async def handler(self, ws: Any) -> None:
        station_id = ws.request.path.rsplit("/", 1)[-1]
        self.paths.append(ws.request.path)
        self.auth.append(ws.request.headers.get("Authorization"))
        cp = self.classes[ws.subprotocol](f"upstream-{station_id}", ws)
        cp.seen = []
        self.points[station_id], self.sockets[station_id] = cp, ws
        with contextlib.suppress(websockets.ConnectionClosed):
            await cp.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/csms"


@contextlib.asynccontextmanager
async def upstream_csms(classes: dict[str, type] | None = None, slow: float = 0.0) -> AsyncIterator[Upstream]:
    """``slow``: seconds the upstream takes over each handshake."""
    up = Upstream(classes)

    async def late(connection: Any, request: Any) -> None:
        await asyncio.sleep(slow)

    async with websockets.serve(up.handler, "127.0.0.1", up.port, subprotocols=["ocpp2.1", "ocpp2.0.1"],  # type: ignore[list-item]
                                process_request=late if slow else None):  # fmt: skip
        yield up


@pytest.mark.parametrize("protocol", ["ocpp2.1", "ocpp2.0.1"])
async def test_proxy_relays_both_ways_and_captures_every_frame(gateway: Any, settings: Settings, protocol: str) -> None:
    async with upstream_csms() as up:
        gw = await gateway(mode="proxy", upstream=up.url)
        async with station(url(gw, "CS-PX"), protocol) as cp:
            await session_of_calls(cp)
            boot = await cp.call(
                cp.calls.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp")
            )
            assert boot.interval == 300, "the upstream's answer, not the gateway's"
        records = of_station(await read_until(settings, has("Disconnected", "CS-PX")), "CS-PX")
    assert up.paths == ["/csms/CS-PX"]
    assert up.points["CS-PX"].seen == [
        "BootNotification",
        "StatusNotification",
        "Heartbeat",
        "Authorize",
        "TransactionEvent",
        "BootNotification",
    ]
    frames = [(r["origin"], r["msg_type"], r["action"]) for r in records if r["msg_type"]]
    assert frames[:2] == [("cs", 2, "BootNotification"), ("csms", 3, "BootNotification")]
    assert len(frames) == 12 and all(r["valid"] for r in records)
    assert records[0]["payload"]["mode"] == "proxy" and records[0]["protocol"] == protocol
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))


async def test_proxy_forwards_credentials_and_relays_upstream_calls(gateway: Any, settings: Settings) -> None:
    async with upstream_csms() as up:
        gw = await gateway(mode="proxy", upstream=up.url)
        async with station(url(gw, "CS-UC"), additional_headers={"Authorization": "Basic Q1MtVUM6c2VjcmV0"}) as cp:
            await cp.call(cp.calls.Heartbeat())
            from ocpp.v21 import call as c21

            answer = await up.points["CS-UC"].call(c21.ReserveNow(**RESERVE_PAYLOAD))
            assert answer.status == "Accepted"
        records = of_station(await read_until(settings, has("ReserveNow", "CS-UC", msg_type=3)), "CS-UC")
    assert up.auth == ["Basic Q1MtVUM6c2VjcmV0"]
    call = next(r for r in records if r["action"] == "ReserveNow" and r["msg_type"] == 2)
    result = next(r for r in records if r["action"] == "ReserveNow" and r["msg_type"] == 3)
    assert call["origin"] == "csms" and result["origin"] == "cs" and result["msg_id"] == call["msg_id"]


async def test_proxy_refuses_the_station_when_the_upstream_is_down(gateway: Any, settings: Settings) -> None:
    gw = await gateway(mode="proxy", upstream=f"ws://127.0.0.1:{free_port()}/nowhere")
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(url(gw, "CS-LONELY"), subprotocols=["ocpp2.1"]):  # type: ignore[list-item]
            pass
    assert refused.value.response.status_code == 502
    records = await read_until(settings, has("Refused", "CS-LONELY"))
    assert "upstream" in records[-1]["payload"]["reason"]


async def test_proxy_closes_the_station_when_the_upstream_drops_it(gateway: Any, settings: Settings) -> None:
    async with upstream_csms() as up:
        gw = await gateway(mode="proxy", upstream=up.url)
        async with raw_station(url(gw, "CS-DROP")) as st:
            await st.ask([2, "h1", "Heartbeat", {}])
            await up.sockets["CS-DROP"].close(1001, "going away")
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(st.ws.recv(), 5)
            assert st.ws.close_code == 1011 and "upstream" in st.ws.close_reason
        records = of_station(await read_until(settings, has("Disconnected", "CS-DROP")), "CS-DROP")
    assert records[-1]["payload"]["code"] == 1011 and "upstream" in records[-1]["payload"]["reason"]


async def test_proxy_delivers_our_commands_without_telling_the_upstream(gateway: Any, settings: Settings) -> None:
    from tests.test_gateway_csms import produce_command
    from twin.gateway.commands import command

    async with upstream_csms() as up:
        gw = await gateway(mode="proxy", upstream=up.url)
        async with station(url(gw, "CS-INJ")) as cp:
            await cp.call(cp.calls.Heartbeat())
            await produce_command(settings, command("CS-INJ", "ReserveNow", RESERVE_PAYLOAD_JSON, "test"))
            await read_until(settings, has("ReserveNow", "CS-INJ", msg_type=3))
            await cp.call(cp.calls.Heartbeat())  # the upstream connection is unharmed
        assert up.points["CS-INJ"].seen == ["Heartbeat", "Heartbeat"]


RESERVE_PAYLOAD_JSON = {
    "id": 7,
    "expiryDateTime": "2026-03-01T09:00:00.000Z",
    "idToken": {"idToken": "TAG1", "type": "ISO14443"},
    "evseId": 1,
}


async def test_a_slow_upstream_does_not_hold_the_admission(
    gateway: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handshake waiting on the upstream CSMS's own handshake gives up its admission slot
    meanwhile: held through it, 2 slots behind an upstream taking 0.6 s would admit 3 stations
    a second, and 8 stations at once would not all get in within the 1.5 s handshake timeout."""
    from twin.gateway import admission

    monkeypatch.setattr(admission, "HANDSHAKES", 2)
    quick = settings.replace(handshake_timeout=1.5)
    async with upstream_csms(slow=0.6) as up:
        gw = await gateway(quick, mode="proxy", upstream=up.url)

        async def boot(i: int) -> None:
            async with raw_station(url(gw, f"CS-SLOW{i}")) as st:
                assert (await st.ask(BOOT))[0] == 3

        await asyncio.gather(*(boot(i) for i in range(8)))
        assert len(up.paths) == 8
    assert gw._admission._value == 2 and not gw._handshakes
