"""Hostile input against a real gateway process: hypothesis draws random bytes, huge frames,
deep nesting, wrong types, unknown actions, wrong message types, reused ids and results
for calls never made, each on a fresh connection; then a flood, slow and half-open
connections, and a second connection for a connected station. The gateway answers each as
OCPP-J says (or closes the connection), never crashes, and records every valid frame.

The README's "Hostile input" table says how many inputs of each kind this file tries."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.conftest import TopicReader, has
from tests.stations import BOOT, raw_station
from twin.broker import EmbeddedBroker, free_port
from twin.messages import CS_TO_CSMS

pytestmark = pytest.mark.integration
EXAMPLES = 100  # per kind
PREFIX = "hostile."
MAX_FRAME = 65536


@pytest.fixture(scope="module")
def gateway_url(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`twin gateway` as a process, on topics of its own, with short idle and handshake limits."""
    port = free_port()
    log = tmp_path_factory.mktemp("hostile") / "gateway.log"
    env = {**os.environ, "TWIN_TOPIC_PREFIX": PREFIX, "TWIN_IDLE_TIMEOUT": "2", "TWIN_HANDSHAKE_TIMEOUT": "2",
           "TWIN_SPOOL": str(log.parent / "spool")}  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "twin", "gateway", "--bootstrap", broker.bootstrap, "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            break
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    yield f"ws://127.0.0.1:{port}/ocpp"
    assert proc.poll() is None, f"the gateway died: {log.read_text()[-3000:]}"
    proc.terminate()
    proc.wait(30)


def exchange(url: str, station: str, messages: list[str | bytes], expect: int | None = None,
             wait: float = 3.0) -> list[Any]:  # fmt: skip
    """Send the messages on one connection and read what comes back (decoded frames, or the
    close code): ``expect`` answers (default one per message), or until ``wait`` passes."""
    got: list[Any] = []
    expect = len(messages) if expect is None else expect
    try:
        with connect(f"{url}/{station}", subprotocols=["ocpp2.1"], max_size=None, open_timeout=10) as ws:  # type: ignore[list-item]
            for message in messages:
                ws.send(message)
            with contextlib.suppress(TimeoutError):
                while len(got) < expect:
                    got.append(orjson.loads(ws.recv(timeout=wait)))
    except ConnectionClosed as exc:
        got.append(("closed", exc.rcvd.code if exc.rcvd else None))
    return got


def ocpp_j_answers(got: list[Any]) -> bool:
    """Every answer is an OCPP-J CALLRESULT, CALLERROR or (to a bad CALLRESULT, as 2.1 says)
    CALLRESULTERROR array, or the close of the connection."""
    for item in got:
        if isinstance(item, tuple):
            continue
        if not (isinstance(item, list) and item and item[0] in (3, 4, 5) and len(item) in (3, 5)):
            return False
    return True


def alive(url: str, station: str = "HOSTILE-OK") -> None:
    answer = exchange(url, station, [orjson.dumps([2, "hb", "Heartbeat", {}]).decode()])
    assert answer and answer[0][0] == 3, answer


json_leaf = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
             | st.text(max_size=20))  # fmt: skip
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8),
                          inner, max_size=5), max_leaves=30)  # fmt: skip
KINDS: dict[str, Any] = {
    "random bytes": st.binary(min_size=0, max_size=2000),
    "random text": st.text(max_size=2000),
    "huge frame": st.integers(MAX_FRAME + 1, MAX_FRAME * 6).map(lambda n: f'[2,"h","Heartbeat",{{"x":"{"a" * n}"}}]'),
    "deep nesting": st.integers(50, 200_000).map(lambda depth: "[" * depth + "]" * depth),
    "wrong types": st.tuples(st.sampled_from(sorted(CS_TO_CSMS)), json_value).map(
        lambda t: orjson.dumps([2, "w", t[0], {"reason": t[1], "chargingStation": t[1], "evseId": t[1]}]).decode()),
    "unknown action": st.text(min_size=1, max_size=40).map(lambda a: orjson.dumps([2, "u", "X" + a, {}]).decode()),
    "wrong message type": st.tuples(json_value, json_value).map(lambda t: orjson.dumps([t[0], "m", t[1], {}]).decode()),
    "result for a call never made": st.tuples(st.sampled_from([3, 4, 5]), st.text(max_size=36), json_value).map(
        lambda t: orjson.dumps([t[0], t[1], t[2]] + (["", {}] if t[0] != 3 else [])).decode()),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_gateway_answers_hostile_input_and_survives(gateway_url: str, kind: str) -> None:
    tried = {"n": 0}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large, HealthCheck.large_base_example])  # fmt: skip
    @given(KINDS[kind])
    def attack(message: str | bytes) -> None:
        tried["n"] += 1
        unanswered = kind == "result for a call never made"  # answers are not answered
        got = exchange(gateway_url, f"HOSTILE-{kind.replace(' ', '-')}", [message], wait=0.1 if unanswered else 3.0)
        assert got or unanswered, "no answer"
        assert ocpp_j_answers(got), got

    attack()
    print(f"\n{kind}: {tried['n']} inputs")  # the README's table (pytest -s)
    alive(gateway_url)
    assert tried["n"] >= min(EXAMPLES, 10)


def test_reused_ids_are_refused_and_still_recorded(gateway_url: str, broker: EmbeddedBroker) -> None:
    heartbeat = orjson.dumps([2, "same-id", "Heartbeat", {}]).decode()
    got = exchange(gateway_url, "HOSTILE-REUSE", [heartbeat, heartbeat])
    assert got[0][0] == 3 and got[1][0] == 4  # the second use of an id: CALLERROR
    alive(gateway_url)


def test_a_flood_slows_its_sender_and_loses_nothing(gateway_url: str, broker: EmbeddedBroker) -> None:
    """2,000 Heartbeats as fast as one station can send them: every one answered and recorded
    (past the burst the gateway reads the flooder at its rate: TCP backpressure)."""
    n = 2000
    with connect(f"{gateway_url}/HOSTILE-FLOOD", subprotocols=["ocpp2.1"]) as ws:  # type: ignore[list-item]
        for i in range(n):
            ws.send(orjson.dumps([2, f"f{i}", "Heartbeat", {}]).decode())
        answers = [orjson.loads(ws.recv(timeout=60)) for _ in range(n)]
    assert [a[1] for a in answers] == [f"f{i}" for i in range(n)] and all(a[0] == 3 for a in answers)
    reader = TopicReader(broker.bootstrap, PREFIX + "ocpp.frames")
    try:
        reader.wait(has("Heartbeat", "HOSTILE-FLOOD", 2 * n), timeout=120)  # each CALL and its CALLRESULT
    finally:
        reader.close()


def test_slow_and_half_open_connections_are_closed(gateway_url: str) -> None:
    port = int(gateway_url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port)) as slow:  # a handshake that never finishes
        slow.sendall(b"GET /ocpp/HOSTILE-SLOW HTTP/1.1\r\nHost: x\r\n")
        slow.settimeout(15)
        began = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            while slow.recv(1024):
                pass
        assert time.monotonic() - began < 14  # closed by the gateway's handshake limit (2 s here)
    with connect(f"{gateway_url}/HOSTILE-SILENT", subprotocols=["ocpp2.1"]) as ws:  # type: ignore[list-item]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=15)  # connected, then silent: closed after the idle limit (2 s here)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    alive(gateway_url)


async def test_a_second_connection_replaces_the_first(gateway_url: str, broker: EmbeddedBroker) -> None:
    async with raw_station(f"{gateway_url}/HOSTILE-TWICE") as first:
        assert (await first.ask(BOOT))[0] == 3
        async with raw_station(f"{gateway_url}/HOSTILE-TWICE") as second:
            assert (await second.ask([2, "h2", "Heartbeat", {}]))[0] == 3
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(first.ws.recv(), 5)
            assert first.ws.close_code == 4000
    reader = TopicReader(broker.bootstrap, PREFIX + "ocpp.frames")
    try:
        records = reader.wait(has("Disconnected", "HOSTILE-TWICE", 2), timeout=30)
    finally:
        reader.close()
    connections = {r["conn_id"] for r in records if r["station_id"] == "HOSTILE-TWICE" and r["action"] == "Connected"}
    assert len(connections) == 2


def test_refused_handshakes_are_answered(gateway_url: str) -> None:
    with pytest.raises(InvalidStatus), connect(f"{gateway_url}/HOSTILE-NOPROTO", subprotocols=["ocpp1.6"]):  # type: ignore[list-item]
        pass
    alive(gateway_url)


def test_the_fuzzed_records_are_in_the_log(broker: EmbeddedBroker, gateway_url: str) -> None:
    """What could be parsed is on ocpp.frames (valid or not), what could not on ocpp.deadletter."""
    frames = TopicReader(broker.bootstrap, PREFIX + "ocpp.frames")
    dead = TopicReader(broker.bootstrap, PREFIX + "ocpp.deadletter")
    try:
        assert any(not r.get("valid", True) for r in frames.wait(lambda rs: any(not r["valid"] for r in rs)))
        assert dead.wait(lambda rs: len(rs) > 0)
    finally:
        frames.close()
        dead.close()


def test_the_codec_under_coverage_guided_fuzzing(tmp_path: Path) -> None:
    """atheris (libFuzzer) on ocpp_j.decode: 50,000 inputs grown from one frame of each type."""
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "fuzz" / "codec.py"), str(tmp_path),
                           "-runs=50000", "-max_len=4096"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 50000 runs" in done.stderr
