"""Gateways scaled out: several processes on one port (``twin gateway --processes 2``), or
gateways on several hosts (two ports stand for two hosts). A command reaches the gateway
that holds its station, ``CommandUndelivered`` comes only when no gateway does, and a
station that reconnects to another gateway closes its old connection there."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.conftest import read_until, url
from tests.stations import BOOT, RawStation, raw_station
from twin import envelope, runtime
from twin.broker import free_port
from twin.gateway.commands import NOBODY, command
from twin.gateway.connections import holder_at, nobody_delivers, verdict
from twin.settings import Settings

RESERVE = {"id": 7, "expiryDateTime": "2026-03-01T09:00:00.000Z",
           "idToken": {"idToken": "TAG1", "type": "ISO14443"}, "evseId": 1}  # fmt: skip


# -- the decisions, without a broker ----------------------------------------------------------


def test_the_last_announcement_in_the_log_wins() -> None:
    ours = {"station_id": "S", "gateway_id": "a:1", "conn_id": "c1"}
    theirs = {"station_id": "S", "gateway_id": "b:1", "conn_id": "c2"}
    assert verdict("a:1", None, False, theirs) is None, "a station not held here: nothing to do"
    assert verdict("a:1", "c1", False, ours) == "mine"
    assert verdict("a:1", "c1", True, theirs) == "superseded", "another gateway's, after ours: close"
    assert verdict("a:1", "c1", False, theirs) is None, "before ours: ours lands later and wins"
    assert verdict("a:1", "c1", True, None) == "announce again", "a stale withdrawal after ours"
    assert verdict("a:1", "c1", False, None) is None
    older = {"station_id": "S", "gateway_id": "a:1", "conn_id": "c0"}
    assert verdict("a:1", "c1", True, older) is None, "an older connection of ours, replaced here already"


def test_a_command_is_judged_by_who_held_its_station_when_it_was_sent() -> None:
    a, b = {"gateway_id": "a:1", "conn_id": "c1"}, {"gateway_id": "b:1", "conn_id": "c2"}
    changes: list[tuple[int, Any]] = [(100, a), (200, None), (300, b), (400, None)]
    assert [holder_at(changes, ts) for ts in (50, 100, 150, 250, 300, 399, 500)] == [None, a, a, None, b, b, None]
    assert nobody_delivers(None, None)
    assert not nobody_delivers(b, None), "delivered by b, though b has let it go since"
    assert not nobody_delivers(None, b), "b holds it now: b delivers it when it reads it"


# -- helpers ----------------------------------------------------------------------------------


async def wait_table(settings: Settings, predicate: Any, timeout: float = 30) -> dict[str, Any]:
    return await asyncio.to_thread(read_table, settings, predicate, timeout)


def read_table(settings: Settings, predicate: Any, timeout: float) -> dict[str, Any]:
    """gateway.connections as a reader sees it once ``predicate`` holds: station id -> the last
    value (None: withdrawn)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap)
    try:
        topic = settings.topics.connections
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}])
        consumer.seek_to_beginning()
        seen: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 3:  # it holds, and three polls brought nothing newer
            assert time.monotonic() < deadline, f"gateway.connections: {seen}"
            batches = consumer.poll(timeout_ms=200)
            for batch in batches.values():
                for message in batch:
                    seen[message.key.decode()] = orjson.loads(message.value) if message.value else None
            quiet = quiet + 1 if predicate(seen) and not batches else 0
        return seen
    finally:
        consumer.close()


def send(settings: Settings, commands: list[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    for cmd in commands:
        producer.send(settings.topics.commands, key=cmd["station_id"].encode(), value=envelope.dumps(cmd))
    producer.flush()
    producer.close()


def undelivered(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["action"] == "CommandUndelivered"]


async def answer_reservation(st: RawStation) -> list[Any]:
    """Receive the command (a ReserveNow) and accept it."""
    call = await st.recv(timeout=20)
    assert call[0] == 2 and call[2] == "ReserveNow", call
    await st.send([3, call[1], {"status": "Accepted"}])
    return call


# -- two processes on one port ----------------------------------------------------------------


@pytest.fixture
def two_processes(settings: Settings, tmp_path: Path) -> Any:
    """``twin gateway --processes 2`` on a free port: (port, its process)."""
    port = free_port()
    env = {**os.environ, "TWIN_TOPIC_PREFIX": settings.topic_prefix, "TWIN_PARTITIONS": str(settings.partitions),
           "TWIN_CALL_TIMEOUT": "10"}  # fmt: skip
    log = tmp_path / "gateway.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "twin", "gateway", "-b", settings.bootstrap or "", "--port",
                                 str(port), "--processes", "2", "--spool", str(tmp_path / "spool")],
                                stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while log.read_text().count("gateway (csms mode) on") < 2:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield port, proc, log
    finally:
        runtime.stop(proc, signal.SIGTERM, 20)


async def test_two_processes_on_one_port_deliver_each_command_to_its_holder(
    settings: Settings, two_processes: Any
) -> None:
    port, proc, log = two_processes
    async with contextlib.AsyncExitStack() as stack:
        stations: dict[str, RawStation] = {}
        held: dict[str, Any] = {}
        for i in range(24):  # the kernel spreads connections over both; connect until both hold some
            name = f"SP-{i:02d}"
            stations[name] = await stack.enter_async_context(raw_station(f"ws://127.0.0.1:{port}/ocpp/{name}"))
            assert (await stations[name].ask(BOOT))[0] == 3
            if i >= 7:
                names = set(stations)
                held = await wait_table(settings, lambda t, n=names: all(t.get(s) for s in n))
                if len({held[s]["gateway_id"] for s in stations}) == 2:
                    break
        gateways = {held[s]["gateway_id"] for s in stations}
        assert len(gateways) == 2, f"every station on one process: {held}"
        assert all(g.endswith(f":{port}/1") or g.endswith(f":{port}") for g in gateways), gateways
        assert all(held[s]["conn_id"] and held[s]["connected_at"] and held[s]["station_id"] == s for s in stations)

        cmds = {s: command(s, "ReserveNow", RESERVE, "test") for s in stations}
        absent = command("SP-ABSENT", "ReserveNow", RESERVE, "test")
        await asyncio.to_thread(send, settings, [*cmds.values(), absent])
        calls = await asyncio.gather(*(answer_reservation(st) for st in stations.values()))
        for call, st in zip(calls, stations.values(), strict=True):
            assert await st.nothing(within=0.3), "one command, delivered once"
            assert call[3] == RESERVE

        def done(rs: list[dict[str, Any]]) -> bool:
            answered = {r["station_id"] for r in rs if r["action"] == "ReserveNow" and r["msg_type"] == 3}
            return answered == set(stations) and bool(undelivered(rs))

        records = await read_until(settings, done, timeout=60)
        await asyncio.sleep(2)  # a second CommandUndelivered would come from the other judge by now
        records = await read_until(settings, lambda _: True)
    said = undelivered(records)
    assert [(r["station_id"], r["payload"]["command_id"], r["payload"]["reason"]) for r in said] == [
        ("SP-ABSENT", absent["command_id"], NOBODY)
    ], "undelivered only for the absent station, once"
    sent = {r["station_id"]: r for r in records if r["action"] == "ReserveNow" and r["msg_type"] == 2}
    assert set(sent) == set(stations)
    by_conn = {held[s]["conn_id"]: s for s in stations}
    assert all(by_conn[r["conn_id"]] == s for s, r in sent.items()), "each sent on the station's own connection"
    assert proc.poll() is None, log.read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, log.read_text()[-3000:]
    gone = await wait_table(settings, lambda t: all(t.get(s) is None for s in stations))
    assert all(gone[s] is None for s in stations), "closing, each process withdrew its stations"


# -- two gateways, as on two hosts ------------------------------------------------------------


async def test_a_station_moving_to_another_gateway_closes_its_old_connection(gateway: Any, settings: Settings) -> None:
    a, b = await gateway(), await gateway()
    assert a.gateway_id != b.gateway_id
    async with raw_station(url(a, "MV-1")) as old:
        assert (await old.ask(BOOT))[0] == 3
        await wait_table(settings, lambda t: (t.get("MV-1") or {}).get("gateway_id") == a.gateway_id)
        async with raw_station(url(b, "MV-1")) as new:  # the station comes back through another host
            assert (await new.ask(BOOT))[0] == 3
            with pytest.raises(Exception):  # noqa: B017 - closed by gateway a: ConnectionClosed
                await old.recv(timeout=15)
            assert old.ws.close_code == 4000 and "newer connection" in (old.ws.close_reason or "")
            await asyncio.sleep(1)  # a's closing must not withdraw what b now holds
            conn = b.sessions["MV-1"].conn_id
            held = await wait_table(settings, lambda t: (t.get("MV-1") or {}).get("conn_id") == conn)
            assert held["MV-1"]["gateway_id"] == b.gateway_id and "MV-1" not in a.sessions
            cmd = command("MV-1", "ReserveNow", RESERVE, "test")
            await asyncio.to_thread(send, settings, [cmd])
            await answer_reservation(new)
        # gone from every gateway now: the next command is undelivered, once
        await wait_table(settings, lambda t: t.get("MV-1") is None)
        late = command("MV-1", "ReserveNow", RESERVE, "test")
        await asyncio.to_thread(send, settings, [late])
        records = await read_until(settings, lambda rs: bool(undelivered(rs)), timeout=30)
    await asyncio.sleep(1)
    records = await read_until(settings, lambda _: True)
    assert [r["payload"]["command_id"] for r in undelivered(records)] == [late["command_id"]]
    answered = [r for r in records if r["action"] == "ReserveNow" and r["msg_type"] == 3]
    assert [r["conn_id"] for r in answered] == [held["MV-1"]["conn_id"]], "answered on b's connection"
    closed = [r for r in records if r["action"] == "Disconnected"]
    assert {r["payload"]["code"] for r in closed} >= {4000}, closed


async def test_a_gateway_started_again_withdraws_what_its_killed_predecessor_held(settings: Settings) -> None:
    """SIGKILL writes no tombstone: the gateway started again under the same id (its host and
    port) finds its predecessor's announcement and withdraws it, so the judge says undelivered."""
    from twin.gateway.server import Gateway

    gw = Gateway(settings, settings.bootstrap or "", port=0, gateway_id="host-a:9000")
    stale = {"station_id": "KL-1", "gateway_id": "host-a:9000", "conn_id": "dead",
             "connected_at": "2026-03-01T08:00:00.000Z"}  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    producer.send(settings.topics.connections, key=b"KL-1", value=orjson.dumps(stale)).get(10)
    producer.close()
    await gw.start()
    try:
        await wait_table(settings, lambda t: "KL-1" in t and t["KL-1"] is None)
        cmd = command("KL-1", "ReserveNow", RESERVE, "test")
        await asyncio.to_thread(send, settings, [cmd])
        records = await read_until(settings, lambda rs: bool(undelivered(rs)), timeout=30)
    finally:
        await gw.stop()
    assert undelivered(records)[0]["payload"]["command_id"] == cmd["command_id"]
