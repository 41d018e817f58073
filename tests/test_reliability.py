"""Reliability on Apache Kafka: twin's promises with a process killed (SIGKILL) under load.

- **The broker**, killed mid-stream and restarted on its data: every frame a station got an
  answer for is in ocpp.frames exactly once after dedupe by ``(conn_id, seq)``, in order per
  connection; the spool drained; the duplicates counted and bounded.
- **A gateway**, killed: its stations reconnect to a second gateway process, and every CALL
  answered before the kill (and after) is in the log with its answer: capture before
  acknowledge.
- **The worker**, killed mid-stream and started again: its twins equal ``twin rebuild`` of the
  log, and each station's ``frames_folded`` is the number of distinct frames it has in the log
  (no frame folded twice into a counter).
- **A rebalance**: of two workers one stops cleanly, then (a third having joined) one is
  killed; the survivor answers for every station, and its twins equal the rebuild.

Kafka only: a killed Tansu loses its topics (it keeps them in memory), so the broker's promise
cannot hold there, and ``test_gateway_spool`` covers what can. Bounded: ``STATIONS`` stations,
each with one CALL outstanding at a time, for seconds per phase.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.app import committed
from tests.conftest import Broker, TopicReader
from tests.test_cli_processes import wait_port
from twin import runtime
from twin.broker import KafkaBroker, ensure_topics, free_port
from twin.gateway.server import Gateway
from twin.settings import Settings

pytestmark = pytest.mark.integration
TWIN = [sys.executable, "-m", "twin"]
STATIONS = 12
_prefixes = itertools.count(1)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Fleet:
    """Stations on raw websockets, each in a closed loop: one CALL at a time (a boot, a
    transaction started, then heartbeats and metered TransactionEvent updates), every answer
    noted with when it came. A station whose connection drops (or cannot open) tries again,
    on the next gateway URL in turn, and goes on where it was."""

    def __init__(self, urls: list[str], n: int, tag: str, pace: float = 0.05) -> None:
        self.urls, self.pace = urls, pace
        self.names = [f"{tag}-{i:02d}" for i in range(n)]
        self.answered: dict[str, list[tuple[float, str]]] = defaultdict(list)  # station -> (when, msg_id)
        self.connected: dict[str, list[str]] = defaultdict(list)  # station -> the URL of each connection
        self.errors: list[Any] = []
        self._sent: Counter[str] = Counter()
        self._seq_no: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._task: asyncio.Future[Any] | None = None

    def _next(self, station: str) -> list[Any]:
        k = self._sent[station]
        self._sent[station] += 1
        msg_id = f"{station}-{k}"
        if k == 0:
            return [2, msg_id, "BootNotification",
                    {"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}}]  # fmt: skip
        if k % 2:
            return [2, msg_id, "Heartbeat", {}]
        seq_no = self._seq_no[station]
        self._seq_no[station] += 1
        event = {
            "eventType": "Started" if seq_no == 0 else "Updated", "timestamp": now(),
            "triggerReason": "Authorized" if seq_no == 0 else "MeterValuePeriodic", "seqNo": seq_no,
            "transactionInfo": {"transactionId": f"T-{station}", "chargingState": "Charging"},
            "meterValue": [{"timestamp": now(), "sampledValue": [
                {"value": 1000.0 + 10 * k, "measurand": "Energy.Active.Import.Register"}]}],
        }  # fmt: skip
        if seq_no == 0:
            event["evse"] = {"id": 1, "connectorId": 1}
        return [2, msg_id, "TransactionEvent", event]

    async def _station(self, station: str) -> None:
        turn = 0
        while not self._stop.is_set():
            base = self.urls[turn % len(self.urls)]
            try:
                async with websockets.connect(f"{base}/{station}", subprotocols=["ocpp2.1"], open_timeout=5,  # type: ignore[list-item]
                                              ping_interval=None, close_timeout=2) as ws:  # fmt: skip
                    self.connected[station].append(base)
                    while not self._stop.is_set():
                        call = self._next(station)
                        await ws.send(orjson.dumps(call).decode())
                        answer = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
                        if answer[0] != 3 or answer[1] != call[1]:
                            self.errors.append((call, answer))
                        else:
                            self.answered[station].append((time.monotonic(), call[1]))
                        await asyncio.sleep(self.pace)
            except (websockets.WebSocketException, OSError, TimeoutError):
                turn += 1
                await asyncio.sleep(0.2)

    def start(self) -> None:
        self._task = asyncio.gather(*(self._station(s) for s in self.names))

    async def stop(self) -> None:
        """Each station finishes its call in hand and closes its connection."""
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 60)

    def count(self, since: float = 0.0) -> int:
        return sum(when >= since for answers in self.answered.values() for when, _ in answers)

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self._task is None or not self._task.done(), self._task.exception()
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.count()} answers"
            await asyncio.sleep(0.1)


def read_log(bootstrap: str, topic: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 60) -> list[
        dict[str, Any]]:  # fmt: skip
    """Every record of ``topic`` once ``done`` holds, and once two more polls bring nothing."""
    reader = TopicReader(bootstrap, topic)
    try:
        records = reader.wait(done, timeout)
        for _ in range(3):
            records = reader.poll()
        return records
    finally:
        reader.close()


def has_every_answer(fleet: Fleet, before: float = float("inf")) -> Callable[[list[dict[str, Any]]], bool]:
    """The log holds every CALL the fleet had answered (before ``before``), and its answer."""
    wanted = {(s, msg_id) for s, answers in fleet.answered.items() for when, msg_id in answers if when < before}

    def check(records: list[dict[str, Any]]) -> bool:
        calls = {(r["station_id"], r["msg_id"]) for r in records if r["msg_type"] == 2 and r["origin"] == "cs"}
        results = {(r["station_id"], r["msg_id"]) for r in records if r["msg_type"] == 3 and r["origin"] == "csms"}
        return wanted <= calls and wanted <= results

    return check


def deduped(records: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """The log per connection, the first of each ``(conn_id, seq)`` in log order (what every
    reader keeps), and how many duplicates were dropped. Fails on a gap or a frame out of
    order in a connection."""
    by_conn: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()
    for r in records:
        if (r["conn_id"], r["seq"]) not in seen:
            seen.add((r["conn_id"], r["seq"]))
            by_conn[r["conn_id"]].append(r)
    for conn, frames in by_conn.items():
        seqs = [r["seq"] for r in frames]
        assert seqs == list(range(1, len(seqs) + 1)), f"{conn}: a gap or a frame out of order: {seqs[:40]}"
    return by_conn, len(records) - len(seen)


# -- the broker ------------------------------------------------------------------------------


async def test_a_broker_killed_under_load_keeps_every_answered_frame(tmp_path: Path) -> None:
    port = free_port()
    brokers = [KafkaBroker(port, tmp_path / "kafka")]
    await asyncio.to_thread(brokers[0].start)
    settings = Settings(bootstrap=brokers[0].bootstrap, topic_prefix="bk.", spool=str(tmp_path / "spool"),
                        capture_timeout=1.0, partitions=2)  # fmt: skip
    ensure_topics(settings, brokers[0].bootstrap)
    gw = Gateway(settings, brokers[0].bootstrap, port=0)
    await gw.start()
    fleet = Fleet([f"ws://127.0.0.1:{gw.port}/ocpp"], STATIONS, "BK")
    try:
        assert gw.recorder.mode == "idempotent"
        fleet.start()
        await fleet.until(lambda: fleet.count() >= 10 * STATIONS, "load before the kill")
        brokers[0].kill()  # mid-stream: CALLs in flight
        await fleet.until(lambda: gw.recorder.spooled >= 10 * STATIONS, "answers from the spool")
        brokers.append(KafkaBroker(port, tmp_path / "kafka"))  # the same data directory
        await asyncio.to_thread(brokers[1].start)
        back = time.monotonic()
        await fleet.until(lambda: not gw.recorder.spooling, "the spool drained", timeout=90)
        await fleet.until(lambda: fleet.count(since=back) >= 10 * STATIONS, "load after the restart")
        await fleet.stop()
        done = has_every_answer(fleet)
        records = await asyncio.to_thread(read_log, brokers[1].bootstrap, settings.topics.frames,
                                          lambda rs: done(rs) and sum(r["action"] == "Disconnected" for r in rs)
                                          >= STATIONS)  # fmt: skip
        assert not gw.recorder.spooling and gw.recorder.spool.size() == 0, "the spool drained"
    finally:
        await gw.stop()
        for broker in brokers:
            broker.stop()
    assert not fleet.errors, fleet.errors[:3]
    by_conn, duplicates = deduped(records)  # in order per connection, no gap
    assert len(by_conn) == STATIONS, "one connection each: the broker's death never reached a station"
    answered = sum(len(a) for a in fleet.answered.values())
    for station in fleet.names:
        calls = [r["msg_id"] for conn in by_conn.values() for r in conn if r["station_id"] == station
                 and r["msg_type"] == 2]  # fmt: skip
        assert calls == [msg_id for _, msg_id in fleet.answered[station]], f"{station}: every answered CALL, once"
    # a duplicate can only be a record in flight when the broker died, sent again from the
    # spool: at most a CALL and its answer per station (one outstanding CALL each)
    print(f"\nbroker killed: {answered} CALLs answered, {gw.recorder.spooled} records spooled, "
          f"{len(records)} records read, {duplicates} duplicates")  # fmt: skip
    assert duplicates <= 2 * STATIONS, f"{duplicates} duplicates"


# -- processes on the session's Kafka --------------------------------------------------------


class Processes:
    """``twin`` processes on one topic prefix of the session's Kafka, logging to ``workdir``;
    each stopped by its pid at the end (SIGINT, then SIGKILL after 15 s)."""

    def __init__(self, broker: Broker, workdir: Path) -> None:
        self.bootstrap, self.workdir = broker.bootstrap, workdir
        self.prefix = f"rel{next(_prefixes)}-{os.getpid()}."
        self.settings = Settings(bootstrap=broker.bootstrap, topic_prefix=self.prefix, partitions=2)
        ensure_topics(self.settings, broker.bootstrap)
        self.env = {**os.environ, "TWIN_TOPIC_PREFIX": self.prefix, "TWIN_PARTITIONS": "2"}
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(TWIN + args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]

    def gateway(self, name: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        proc = self.spawn(name, ["gateway", "-b", self.bootstrap, "--port", str(port),
                                 "--spool", str(self.workdir / f"{name}-spool")])  # fmt: skip
        wait_port(port, proc, self.workdir / f"{name}.log", timeout=60)
        return proc, f"ws://127.0.0.1:{port}/ocpp"

    def worker(self, name: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        proc = self.spawn(name, ["worker", "-b", self.bootstrap, "--web-port", str(port),
                                 "--data-dir", str(self.workdir / name)])  # fmt: skip
        return proc, port

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            runtime.stop(proc, signal.SIGINT, 15)


@pytest.fixture
def procs(kafka_broker: Broker, tmp_path: Path) -> Iterator[Processes]:
    p = Processes(kafka_broker, tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


def api(port: int, path: str) -> tuple[int, Any]:
    """(status, body) of a GET on a worker's API; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def distinct_frames(records: list[dict[str, Any]]) -> Counter[str]:
    """Each station's frames in the log, each ``(conn_id, seq)`` counted once."""
    return Counter(station for station, _, _ in {(r["station_id"], r["conn_id"], r["seq"]) for r in records})


def wait_folded(p: Processes, proc: subprocess.Popen[bytes], name: str, port: int, stations: list[str],
                timeout: float = 120) -> dict[str, int]:  # fmt: skip
    """Until the worker's twin of every station has folded every frame of it in the log (the
    log read once the fleet has stopped); returns frames_folded per station."""
    records = read_log(p.bootstrap, p.settings.topics.frames,
                       lambda rs: sum(r["action"] == "Disconnected" for r in rs) >= len(stations))  # fmt: skip
    want = distinct_frames(records)
    deadline = time.monotonic() + timeout
    got: dict[str, int] = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, p.log(name)
        got = {s: (api(port, f"/v1/stations/{s}")[1] or {}).get("frames_folded", -1) for s in stations}
        if got == {s: want[s] for s in stations}:
            return got
        assert all(got[s] <= want[s] for s in stations), f"folded more frames than the log holds: {got} {want}"
        time.sleep(0.5)
    raise AssertionError(f"twins at {got}, the log holds {dict(want)}\n{p.log(name)}")


def rebuild_differences(p: Processes, port: int) -> list[Any]:
    out = subprocess.run(TWIN + ["rebuild", "-b", p.bootstrap, "--verify", "--api", f"http://127.0.0.1:{port}",
                                 "--json"], capture_output=True, text=True, env=p.env, timeout=120)  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    result = json.loads(out.stdout)
    differences: list[Any] = result["differences"]
    return differences


def answers_all(port: int, stations: list[str]) -> bool:
    return all(api(port, f"/v1/stations/{s}")[0] == 200 for s in stations)


async def folds_a_partition(p: Processes, proc: subprocess.Popen[bytes], port: int, name: str,
                            timeout: float) -> None:  # fmt: skip
    """Until the worker folds a partition of its own (its ``?scope=local`` list has a station)."""
    began = time.monotonic()
    while not ((await asyncio.to_thread(api, port, "/v1/stations?scope=local"))[1] or {}).get("stations"):
        assert proc.poll() is None, p.log(name)
        # a group's join can wait on the session's broker after a long suite: the limit is generous
        assert time.monotonic() - began < timeout, f"{name} folds no partition after {timeout} s\n{p.log(name)}"
        await asyncio.sleep(0.5)


async def wait_answers_all(proc: subprocess.Popen[bytes], port: int, stations: list[str], log: Callable[[], str],
                           timeout: float = 90) -> float:  # fmt: skip
    """Seconds until the worker answers 200 for every station."""
    began = time.monotonic()
    while not await asyncio.to_thread(answers_all, port, stations):
        assert proc.poll() is None, log()
        assert time.monotonic() - began < timeout, f"not every station answered in {timeout} s\n{log()}"
        await asyncio.sleep(0.5)
    return time.monotonic() - began


# -- a gateway -------------------------------------------------------------------------------


async def test_a_gateway_killed_under_load_loses_no_answered_call(procs: Processes) -> None:
    first, first_url = procs.gateway("gateway-a")
    second, second_url = procs.gateway("gateway-b")
    fleet = Fleet([first_url, second_url], STATIONS, "GK")  # on the first; on the second after a drop
    fleet.start()
    try:
        await fleet.until(lambda: fleet.count() >= 10 * STATIONS, "load before the kill")
        first.kill()  # SIGKILL: no goodbye to its stations, nor a Disconnected record
        killed = time.monotonic()
        await fleet.until(lambda: all(len(fleet.connected[s]) >= 2 for s in fleet.names), "every station back")
        await fleet.until(lambda: fleet.count(since=killed + 1) >= 10 * STATIONS, "load on the second gateway")
    finally:
        await fleet.stop()
    assert second.poll() is None, procs.log("gateway-b")
    assert not fleet.errors, fleet.errors[:3]
    assert all(fleet.connected[s][1] == second_url for s in fleet.names), "each reconnected to the second"
    before = sum(when < killed for answers in fleet.answered.values() for when, _ in answers)
    records = await asyncio.to_thread(read_log, procs.bootstrap, procs.settings.topics.frames,
                                      has_every_answer(fleet, before=killed))  # fmt: skip
    assert has_every_answer(fleet)(records), "and every CALL answered after it, by the second gateway"
    by_conn, _ = deduped(records)  # in order per connection, no gap, on both gateways
    assert len(by_conn) == 2 * STATIONS
    print(f"\ngateway killed: {before} CALLs answered before the kill, every one in the log")


# -- the worker ------------------------------------------------------------------------------


async def test_a_worker_killed_mid_stream_equals_the_rebuild(procs: Processes) -> None:
    _, url = procs.gateway("gateway")
    worker, port = procs.worker("worker")
    fleet = Fleet([url], STATIONS, "WK")
    fleet.start()
    try:
        await wait_answers_all(worker, port, fleet.names, lambda: procs.log("worker"))
        began = time.monotonic()
        while len(await asyncio.to_thread(committed, procs.settings, procs.bootstrap)) < 2:
            assert time.monotonic() - began < 60, "the worker never committed a position on each partition"
            await asyncio.sleep(0.5)  # then the restarted worker starts past frames it must not fold again
        worker.kill()  # mid-stream: no goodbye to its group
        killed = time.monotonic()
        await fleet.until(lambda: fleet.count(since=killed) >= 5 * STATIONS, "load while no worker runs")
        worker, port = procs.worker("worker-again")  # the same group, a fresh data directory
        await wait_answers_all(worker, port, fleet.names, lambda: procs.log("worker-again"))
        await asyncio.sleep(2)
    finally:
        await fleet.stop()
    assert not fleet.errors, fleet.errors[:3]
    await asyncio.to_thread(wait_folded, procs, worker, "worker-again", port, fleet.names)
    assert await asyncio.to_thread(rebuild_differences, procs, port) == []
    assert "folding again the last records" in procs.log("worker-again")


# -- a rebalance -----------------------------------------------------------------------------


async def test_a_partition_taken_over_is_folded_again_behind_its_position(procs: Processes) -> None:
    """What a worker recovers from the changelog when it takes a partition over can lack records
    the group committed past: a worker killed between its commit and its changelog write, a
    batch Faust acknowledged unfolded at a stop, a revoked worker's late write. Here the last
    changelog write of one station is its first twin, as a late write would leave it: the
    worker that takes the partition folds again the records behind the group's committed offset,
    and is whole.
    The partition is quiet then (the fleet has stopped), so no new event shows the gap."""
    _, url = procs.gateway("gateway")
    fleet = Fleet([url], STATIONS, "TO", pace=0.1)
    fleet.start()
    try:
        one, one_port = procs.worker("worker-1")
        await wait_answers_all(one, one_port, fleet.names, lambda: procs.log("worker-1"))
        await asyncio.sleep(2)  # worker-1 folds both partitions for a while
        two, two_port = procs.worker("worker-2")
        await folds_a_partition(procs, two, two_port, "worker-2", timeout=180)
        await asyncio.sleep(3)  # worker-2 folds its partition for a while: worker-1 no longer sees it
    finally:
        await fleet.stop()
    assert not fleet.errors, fleet.errors[:3]
    await asyncio.to_thread(wait_folded, procs, two, "worker-2", two_port, fleet.names)
    station = api(two_port, "/v1/stations?scope=local")[1]["stations"][0]["station_id"]
    changelog = f"{procs.prefix}twin-worker-twins-changelog"
    key = orjson.dumps(station)  # the table's keys are JSON

    now_folded = api(two_port, f"/v1/stations/{station}")[1]["frames_folded"]

    def twins_in_changelog() -> list[Any]:
        consumer = KafkaConsumer(bootstrap_servers=procs.bootstrap, consumer_timeout_ms=2000)
        try:
            consumer.assign([TopicPartition(changelog, p) for p in consumer.partitions_for_topic(changelog) or ()])
            consumer.seek_to_beginning()
            return [m for m in consumer if m.key == key]
        finally:
            consumer.close()

    began = time.monotonic()  # worker-2's last write of the twin has landed: the stale one comes after it
    while orjson.loads((written := twins_in_changelog())[-1].value)["frames_folded"] != now_folded:
        assert time.monotonic() - began < 30, "worker-2's last twin never reached the changelog"
    first = written[0]  # the station's first twin in the changelog
    assert orjson.loads(first.value)["frames_folded"] < now_folded / 2, "a twin from the start"
    producer = KafkaProducer(bootstrap_servers=procs.bootstrap, acks="all")
    producer.send(changelog, key=key, value=first.value, partition=first.partition).get(timeout=10)
    producer.close()

    two.send_signal(signal.SIGTERM)  # worker-1 takes the partition and recovers the stale twin
    assert two.wait(30) == 0, procs.log("worker-2")
    await asyncio.to_thread(wait_folded, procs, one, "worker-1", one_port, fleet.names)
    assert await asyncio.to_thread(rebuild_differences, procs, one_port) == []
    assert f"partition {first.partition} taken at offset" in procs.log("worker-1"), procs.log("worker-1")


async def test_a_rebalance_keeps_every_station_answered(procs: Processes) -> None:
    _, url = procs.gateway("gateway")
    fleet = Fleet([url], STATIONS, "RB", pace=0.1)
    fleet.start()
    try:
        one, one_port = procs.worker("worker-1")
        await wait_answers_all(one, one_port, fleet.names, lambda: procs.log("worker-1"))
        two, two_port = procs.worker("worker-2")

        def split() -> bool:
            local = [api(p, "/v1/stations?scope=local")[1] for p in (one_port, two_port)]
            return all(rows and rows["stations"] for rows in local)

        began = time.monotonic()
        while not await asyncio.to_thread(split):  # each worker folds a partition
            assert two.poll() is None, procs.log("worker-2")
            # a group's join can wait on the session's broker after a long suite: the limit
            # is generous, and a miss shows both workers' logs
            assert time.monotonic() - began < 180, f"{procs.log('worker-1')}\n---\n{procs.log('worker-2')}"
            await asyncio.sleep(0.5)
        print(f"\neach worker folded a partition {time.monotonic() - began:.1f} s after the second started")
        one.send_signal(signal.SIGTERM)  # a clean stop: it leaves the group
        assert one.wait(30) == 0, procs.log("worker-1")
        took = await wait_answers_all(two, two_port, fleet.names, lambda: procs.log("worker-2"))
        print(f"\nafter a clean stop, the survivor answered for every station in {took:.1f} s")

        three, three_port = procs.worker("worker-3")
        await folds_a_partition(procs, three, three_port, "worker-3", timeout=90)
        await asyncio.sleep(2)
        two.kill()  # no goodbye: the group notices at the session timeout
        took = await wait_answers_all(three, three_port, fleet.names, lambda: procs.log("worker-3"))
        print(f"after a kill, the survivor answered for every station in {took:.1f} s")
        await asyncio.sleep(1)
    finally:
        await fleet.stop()
    assert not fleet.errors, fleet.errors[:3]
    await asyncio.to_thread(wait_folded, procs, three, "worker-3", three_port, fleet.names)
    listed = api(three_port, "/v1/stations")[1]["stations"]
    assert [r["station_id"] for r in listed] == sorted(fleet.names), "the survivor lists every station once"
    assert await asyncio.to_thread(rebuild_differences, procs, three_port) == []
