"""The gateway in csms mode on the embedded broker: every frame, both directions, recorded
with every envelope field, before the station sees its answer."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import weakref
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request
from websockets.protocol import State

from tests.conftest import has, of_station, read_until, url
from tests.stations import BOOT, raw_station, session_of_calls, station
from twin.envelope import FIELDS
from twin.gateway.commands import command
from twin.settings import Settings

pytestmark = pytest.mark.integration
TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def check_envelopes(records: list[dict[str, Any]], station_id: str, protocol: str) -> None:
    """Every field of every envelope of one connection, and seq from 1 in log order."""
    assert records, "nothing recorded"
    conn = records[0]["conn_id"]
    for seq, r in enumerate(records, start=1):
        assert tuple(r) == FIELDS
        assert r["station_id"] == station_id and r["protocol"] == protocol
        assert r["conn_id"] == conn and r["seq"] == seq
        assert TS_RE.fullmatch(r["ts"])
        assert r["origin"] in ("cs", "csms", "gateway")
        assert isinstance(r["msg_id"], str) and r["msg_id"]
        assert isinstance(r["payload"], dict)
        assert r["valid"] is (r["error"] is None)
    assert records[0]["action"] == "Connected" and records[0]["msg_type"] == 0
    assert records[0]["payload"]["subprotocol"] == protocol


@pytest.mark.parametrize("protocol", ["ocpp2.1", "ocpp2.0.1"])
async def test_a_station_session_is_recorded_frame_for_frame(gateway: Any, settings: Settings, protocol: str) -> None:
    gw = await gateway()
    async with station(url(gw, "CS-A"), protocol) as cp:
        await session_of_calls(cp)
    records = of_station(await read_until(settings, has("Disconnected", "CS-A")), "CS-A")
    check_envelopes(records, "CS-A", protocol)
    kinds = [(r["origin"], r["msg_type"], r["action"]) for r in records]
    assert kinds == [
        ("gateway", 0, "Connected"),
        ("cs", 2, "BootNotification"), ("csms", 3, "BootNotification"),
        ("cs", 2, "StatusNotification"), ("csms", 3, "StatusNotification"),
        ("cs", 2, "Heartbeat"), ("csms", 3, "Heartbeat"),
        ("cs", 2, "Authorize"), ("csms", 3, "Authorize"),
        ("cs", 2, "TransactionEvent"), ("csms", 3, "TransactionEvent"),
        ("gateway", 0, "Disconnected"),
    ]  # fmt: skip
    assert all(r["valid"] for r in records)
    call, answer = records[1], records[2]
    assert answer["msg_id"] == call["msg_id"]
    assert call["payload"]["chargingStation"] == {"model": "M1", "vendorName": "Acme"}
    assert answer["payload"]["status"] == "Accepted" and answer["payload"]["interval"] == 1800
    meter = records[9]["payload"]["meterValue"][0]["sampledValue"][0]
    assert meter["measurand"] == "Energy.Active.Import.Register"


async def test_send_frames_are_recorded_and_never_answered(gateway: Any, settings: Settings) -> None:
    gw = await gateway()
    stream = [6, "s-1", "NotifyPeriodicEventStream", {"id": 1, "pending": 0, "basetime": "2026-03-01T08:00:00Z",
                                                       "data": [{"t": 0, "v": "11.5"}]}]  # fmt: skip
    async with raw_station(url(gw, "CS-S")) as st:
        await st.send(stream)
        assert await st.nothing(within=0.7)
        assert (await st.ask(BOOT))[0] == 3  # the connection is still served
    records = of_station(await read_until(settings, has("NotifyPeriodicEventStream", "CS-S")), "CS-S")
    send = next(r for r in records if r["msg_type"] == 6)
    assert send["action"] == "NotifyPeriodicEventStream" and send["valid"] and send["origin"] == "cs"
    assert not any(r["msg_type"] in (3, 4) and r["msg_id"] == "s-1" for r in records)


async def produce_command(settings: Settings, cmd: dict[str, Any]) -> None:
    from kafka import KafkaProducer

    from twin import envelope

    def go() -> None:
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        producer.send(settings.topics.commands, key=cmd["station_id"].encode(), value=envelope.dumps(cmd)).get(10)
        producer.close()

    await asyncio.to_thread(go)


RESERVE = {
    "id": 7,
    "expiryDateTime": "2026-03-01T09:00:00.000Z",
    "idToken": {"idToken": "TAG1", "type": "ISO14443"},
    "evseId": 1,
}


async def test_calls_sent_without_waiting_are_answered_and_recorded_in_order(gateway: Any, settings: Settings) -> None:
    """A session answers a call once it is captured, without waiting for it before it reads
    the next frame: so a station that sends calls back to back (OCPP asks it not to) still
    gets its answers in order, and the log holds its frames in the order sent, numbered in
    that order, with a frame the session waits on before it answers (not OCPP-J: its dead
    letter first) and an invalid call among them."""
    gw = await gateway()
    sent: list[str] = []
    async with raw_station(url(gw, "CS-PIPE")) as st:
        assert (await st.ask(BOOT))[0] == 3
        for k in range(30):
            if k == 10:
                await st.send([9, "bad-1", "X", {}])  # not OCPP-J: dead-lettered, then a CALLERROR
                sent.append("bad-1")
            if k == 20:
                await st.send([2, "bad-2", "BootNotification", {}])  # invalid: a CALLERROR
                sent.append("bad-2")
            await st.send([2, f"h-{k}", "Heartbeat", {}])
            sent.append(f"h-{k}")
        answers = [await st.recv(timeout=10) for _ in sent]
    assert [a[1] for a in answers] == sent
    assert [a[0] for a in answers] == [4 if i.startswith("bad") else 3 for i in sent]
    records = of_station(await read_until(settings, has("Disconnected", "CS-PIPE")), "CS-PIPE")
    # as every reader of the log does, a record sent twice counts once: on Apache Kafka a
    # just-created topic can refuse the dead letter (NotLeaderForPartition) while the frames
    # of the same request were written, and the round is spooled and sent again whole
    records = list({(r["conn_id"], r["seq"]): r for r in records}.values())  # each where it came first
    check_envelopes(records, "CS-PIPE", "ocpp2.1")
    calls = [r["msg_id"] for r in records if r["origin"] == "cs"]
    assert calls == ["boot-1"] + [i for i in sent if i != "bad-1"]  # bad-1 is in the dead letters
    answered = [r["msg_id"] for r in records if r["origin"] == "csms"]
    assert answered == ["boot-1", *sent]


@pytest.mark.parametrize("protocol", ["ocpp2.1", "ocpp2.0.1"])
async def test_csms_initiated_calls_reach_the_station_and_its_answer_is_recorded(
    gateway: Any, settings: Settings, protocol: str
) -> None:
    gw = await gateway()
    async with station(url(gw, "CS-C"), protocol) as cp:
        await cp.call(cp.calls.Heartbeat())
        await produce_command(settings, command("CS-C", "ReserveNow", RESERVE, "test"))
        records = await read_until(settings, has("ReserveNow", "CS-C", msg_type=3))
    calls = [r for r in records if r["action"] == "ReserveNow"]
    call, answer = calls
    assert (call["origin"], call["msg_type"], call["payload"]) == ("csms", 2, RESERVE)
    assert (answer["origin"], answer["msg_type"], answer["msg_id"]) == ("cs", 3, call["msg_id"])
    assert answer["payload"] == {"status": "Accepted"} and answer["valid"]


async def test_a_command_for_an_absent_station_is_recorded_as_undelivered(gateway: Any, settings: Settings) -> None:
    await gateway()
    cmd = command("CS-NOBODY", "ReserveNow", RESERVE, "test")
    await produce_command(settings, cmd)
    records = await read_until(settings, has("CommandUndelivered", "CS-NOBODY"))
    record = next(r for r in records if r["action"] == "CommandUndelivered")
    assert record["payload"]["command_id"] == cmd["command_id"]
    assert record["payload"]["reason"] == "station not connected to any gateway"
    assert record["origin"] == "gateway" and record["msg_type"] == 0


async def test_one_outstanding_call_per_direction_and_a_call_timeout(gateway: Any, settings: Settings) -> None:
    gw = await gateway(settings.replace(call_timeout=1.0))
    async with raw_station(url(gw, "CS-T")) as st:
        await st.ask(BOOT)
        await produce_command(settings, command("CS-T", "ReserveNow", RESERVE, "test"))
        await produce_command(settings, command("CS-T", "CancelReservation", {"reservationId": 7}, "test"))
        first = await st.recv()
        assert first[2] == "ReserveNow"
        assert await st.nothing(within=0.6), "a second CALL came while the first was outstanding"
        second = await st.recv(timeout=3)  # after the first timed out
        assert second[2] == "CancelReservation"
        await st.send([3, second[1], {"status": "Accepted"}])
        records = await read_until(settings, has("CancelReservation", "CS-T", msg_type=3))
    timeout = next(r for r in records if r["action"] == "CallTimeout")
    assert timeout["payload"]["action"] == "ReserveNow" and timeout["payload"]["msg_id"] == first[1]


async def test_a_bad_callresult_is_answered_with_callresulterror(gateway: Any, settings: Settings) -> None:
    gw = await gateway()
    async with raw_station(url(gw, "CS-R")) as st:
        await st.ask(BOOT)
        await produce_command(settings, command("CS-R", "ReserveNow", RESERVE, "test"))
        call = await st.recv()
        reply = await st.ask([3, call[1], {"status": "Maybe"}])
        assert reply[:3] == [5, call[1], "PropertyConstraintViolation"]
        records = await read_until(settings, has("ReserveNow", "CS-R", msg_type=5))
    bad = next(r for r in records if r["action"] == "ReserveNow" and r["msg_type"] == 3)
    assert bad["valid"] is False and "status" in bad["error"]
    sent = next(r for r in records if r["msg_type"] == 5)
    assert sent["origin"] == "csms" and sent["payload"]["errorCode"] == "PropertyConstraintViolation"


async def test_callresulterror_from_a_station_is_recorded_with_its_action(gateway: Any, settings: Settings) -> None:
    gw = await gateway()
    async with raw_station(url(gw, "CS-E")) as st:
        await st.ask(BOOT)
        await produce_command(settings, command("CS-E", "ReserveNow", RESERVE, "test"))
        call = await st.recv()
        await st.send([4, call[1], "NotSupported", "no reservations here", {}])
        records = await read_until(settings, has("ReserveNow", "CS-E", msg_type=4))
    error = next(r for r in records if r["msg_type"] == 4)
    assert error["payload"] == {
        "errorCode": "NotSupported",
        "errorDescription": "no reservations here",
        "errorDetails": {},
    }
    assert error["origin"] == "cs" and error["valid"]


async def test_subprotocol_negotiation(gateway: Any, settings: Settings) -> None:
    gw = await gateway()
    async with websockets.connect(url(gw, "CS-P1"), subprotocols=["ocpp2.0.1", "ocpp2.1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "ocpp2.1"
    async with websockets.connect(url(gw, "CS-P2"), subprotocols=["ocpp2.0.1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "ocpp2.0.1"
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(url(gw, "CS-P3"), subprotocols=["ocpp1.6"]):  # type: ignore[list-item]
            pass
    assert refused.value.response.status_code == 400
    with pytest.raises(InvalidStatus):
        async with websockets.connect(url(gw, "CS-P4")):
            pass
    records = await read_until(settings, has("Refused", count=2))
    refusal = next(r for r in records if r["station_id"] == "CS-P3")
    assert "ocpp1.6" in refusal["payload"]["reason"] and refusal["origin"] == "gateway"


async def test_a_closed_connection_is_freed_without_the_cyclic_collector(gateway: Any, settings: Settings) -> None:
    """A station's connection goes with its last reference, closed cleanly or reset, not at
    the next full collection: in a gateway of thousands of connections those are rare, and
    closed connections piled up until one came (websockets' subprotocol callback closed over
    the connection: a cycle, broken once the connection is lost)."""
    gw = await gateway()
    gone: list[weakref.ref[Any]] = []
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # only reference counting frees anything from here
    try:
        async with raw_station(url(gw, "CS-FREE1")) as st:
            assert (await st.ask(BOOT))[0] == 3
            gone.append(weakref.ref(gw.sessions["CS-FREE1"].ws))
        async with raw_station(url(gw, "CS-FREE2")) as st:
            assert (await st.ask(BOOT))[0] == 3
            gone.append(weakref.ref(gw.sessions["CS-FREE2"].ws))
            st.ws.transport.abort()  # a reset: no closing handshake
        await read_until(settings, has("Disconnected", count=2))
        for _ in range(50):  # the handler returns just after recording Disconnected
            if all(ref() is None for ref in gone):
                break
            await asyncio.sleep(0.1)
        assert [ref() is None for ref in gone] == [True, True]
    finally:
        if was_enabled:
            gc.enable()


async def test_a_wave_of_closed_connections_gives_their_memory_back(
    gateway: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a wave of closings has passed, and the reconnections after it, the gateway hands
    what the C allocator kept of the closed connections back to the system: once per wave,
    not while connections still close or open, and not for a few closings."""
    from twin import runtime
    from twin.gateway import server

    given: list[int] = []
    real = runtime.give_back_memory

    def counted() -> bool:
        given.append(gw.closed)
        return real()

    monkeypatch.setattr(server, "GIVE_BACK_AFTER", 3)
    monkeypatch.setattr(server, "GIVE_BACK_CHECK", 1.0)
    monkeypatch.setattr(runtime, "give_back_memory", counted)
    gw = await gateway()
    for n in range(2):  # two stations: fewer than a wave
        async with raw_station(url(gw, f"CS-WAVE{n}")) as st:
            assert (await st.ask(BOOT))[0] == 3
    await read_until(settings, has("Disconnected", count=2))
    await asyncio.sleep(2.5)
    assert given == []
    async with raw_station(url(gw, "CS-WAVE2")) as st:
        assert (await st.ask(BOOT))[0] == 3
    async with contextlib.AsyncExitStack() as back:  # stations reconnecting, one every 0.1 s
        for n in range(20):
            st = await back.enter_async_context(raw_station(url(gw, f"CS-BACK{n}")))
            assert (await st.ask(BOOT))[0] == 3
            await asyncio.sleep(0.1)
        assert given == [], "given back while stations were still connecting"
        for _ in range(50):
            if given:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.5)  # and only once for the wave
        assert given == [3]


async def test_a_station_back_is_answered_while_its_old_connection_still_closes(gateway: Any) -> None:
    """A station that reconnects is served at once: the gateway closes its old connection
    meanwhile, not first (after a blip, the old one's end may not be read for a while, and
    a peer that does not answer the close keeps it closing for the close timeout)."""
    gw = await gateway()
    async with raw_station(url(gw, "CS-BACK"), close_timeout=0.2) as old:  # its own close: not 10 s
        assert (await old.ask(BOOT))[0] == 3
        first = gw.sessions["CS-BACK"]
        old.ws.transport.pause_reading()  # the old peer reads nothing more: it never answers the close
        async with raw_station(url(gw, "CS-BACK")) as new:
            assert (await new.ask([2, "hb", "Heartbeat", {}], timeout=5))[0] == 3
            assert gw.sessions["CS-BACK"] is not first
            assert first.ws.state is State.CLOSING, "answered only after the old connection closed"


async def test_a_connection_keeps_no_handshake_headers(gateway: Any, settings: Settings) -> None:
    """The handshake's request and response headers (4 KiB a connection) are let go once the
    Connected record is built from them; the connection goes on as before."""
    gw = await gateway()
    lean = f"CS-LEAN{gw.port}"  # a path of this run's own
    async with raw_station(url(gw, lean)) as st:
        assert (await st.ask(BOOT))[0] == 3
        ws = gw.sessions[lean].ws
        assert ws.request is not None and len(ws.request.headers) == 0 and ws.response is None
        requests = [o for o in gc.get_objects() if type(o) is Request and o.path == f"/ocpp/{lean}"]
        kept = [r for r in requests if r.headers and r is not st.ws.request]  # the station's own is the other
        assert kept == [], "a request's headers still held (websockets' parser holds the request too)"
        assert (await st.ask([2, "hb", "Heartbeat", {}]))[0] == 3
    connected = await read_until(settings, has("Connected"))
    assert [r["payload"]["subprotocol"] for r in of_station(connected, lean) if r["action"] == "Connected"] == [
        "ocpp2.1"
    ]


def test_memory_freed_goes_back_to_the_system() -> None:
    """``give_back_memory`` returns the C allocator's free pages (glibc's ``malloc_trim``):
    200 MB of buffers freed leave the resident set without it."""
    from twin import runtime

    def resident() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096

    held = [bytearray(3000) for _ in range(70_000)]  # from malloc's heap, not Python's arenas
    before = resident()
    del held
    assert runtime.give_back_memory()
    assert before - resident() > 100 * 2**20


async def test_cli_send_validates_then_queues(gateway: Any, settings: Settings) -> None:
    from typer.testing import CliRunner

    from twin.cli import app

    gw = await gateway()
    runner = CliRunner()
    env = {"TWIN_TOPIC_PREFIX": settings.topic_prefix}
    import json

    seven = json.dumps({**RESERVE, "id": "seven"})
    bad = runner.invoke(app, ["send", "CS-X", "ReserveNow", seven, "-b", settings.bootstrap or ""], env=env)
    assert bad.exit_code == 1 and "TypeConstraintViolation" in bad.output
    wrong_way = runner.invoke(app, ["send", "CS-X", "Heartbeat", "{}", "-b", settings.bootstrap or ""], env=env)
    assert wrong_way.exit_code == 1 and "sent by stations" in wrong_way.output
    async with station(url(gw, "CS-X")) as cp:
        await cp.call(cp.calls.Heartbeat())
        ok = await asyncio.to_thread(
            runner.invoke,
            app,
            ["send", "CS-X", "ReserveNow", json.dumps(RESERVE), "-b", settings.bootstrap or "", "--json"],
            env=env,
        )
        assert ok.exit_code == 0, ok.output
        assert json.loads(ok.stdout)["action"] == "ReserveNow"
        await read_until(settings, has("ReserveNow", "CS-X", msg_type=3))


async def test_a_mass_reconnect_is_admitted_a_few_at_a_time_and_leaks_no_slot(
    gateway: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a network blip every station reconnects at once: the gateway admits a few
    handshakes at a time (thousands at once filled its event loop until capture acks timed out
    and it spooled with the broker alive); every station still gets in, and a station that
    leaves half-way through its handshake does not keep its slot."""
    from twin.gateway import admission

    monkeypatch.setattr(admission, "HANDSHAKES", 3)
    quick = settings.replace(handshake_timeout=1.0)
    gw = await gateway(quick)
    request = (
        f"GET /ocpp/CS-GONE HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp2.1\r\n\r\n"
    )
    _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(request.encode())
    await writer.drain()
    writer.transport.abort()  # gone before the answer

    async def boot(i: int) -> None:
        async with raw_station(url(gw, f"CS-M{i:02d}")) as st:
            assert (await st.ask(BOOT))[0] == 3

    await asyncio.gather(*(boot(i) for i in range(20)))
    records = await read_until(settings, has("Disconnected", count=20))
    assert {r["station_id"] for r in records if r["action"] == "Connected"} >= {f"CS-M{i:02d}" for i in range(20)}
    await asyncio.sleep(quick.handshake_timeout + 1.5)  # the half-done handshake's slot expires
    assert gw._admission._value == 3 and not gw._handshakes
