"""The scenario suite, written once (``tests/scenarios.py``), run three ways: through
``apply`` directly, through the live pipeline (stations on real websockets -> gateway ->
embedded broker -> Faust worker), and through ``twin rebuild`` of what the pipeline
captured. The same twins come out; the live and rebuilt ones field for field.

The gateway and the worker run as ``twin`` processes, stopped by their pid; a worker killed
with SIGKILL mid-stream recovers its twins from the changelog and still equals the rebuild.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.conftest import fresh_prefix
from tests.scenarios import SCENARIOS, Script, stable
from tests.test_cli_processes import wait_port
from tests.test_gateway_csms import produce_command
from twin import captures, runtime
from twin.broker import EmbeddedBroker, free_port
from twin.fold import fold, public
from twin.gateway.commands import command
from twin.settings import Settings

pytestmark = pytest.mark.integration
TWIN = [sys.executable, "-m", "twin"]


class Pipeline:
    def __init__(self, broker: EmbeddedBroker, workdir: Path) -> None:
        self.broker, self.workdir = broker, workdir
        self.prefix = fresh_prefix("scn")
        self.settings = Settings(bootstrap=broker.bootstrap, topic_prefix=self.prefix, partitions=2)
        self.gateway_port, self.web_port = free_port(), free_port()
        self.env = {**os.environ, "TWIN_TOPIC_PREFIX": self.prefix, "TWIN_PARTITIONS": "2"}
        self.gateway: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            return subprocess.Popen(TWIN + args, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def start_gateway(self) -> None:
        self.gateway = self._spawn(["gateway", "-b", self.broker.bootstrap, "--port", str(self.gateway_port),
                                    "--spool", str(self.workdir / "spool")], "gateway")  # fmt: skip

    def start_worker(self) -> None:
        self.worker = self._spawn(["worker", "-b", self.broker.bootstrap, "--web-port", str(self.web_port),
                                   "--data-dir", str(self.workdir / "worker"), "--archive", str(self.archive)],
                                  "worker")  # fmt: skip

    @property
    def archive(self) -> Path:
        return self.workdir / "archive"

    def get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(self.api + path, timeout=5) as response:
                return json.loads(response.read())
        except Exception:
            return None

    def wait_twin(self, station: str, frames: int, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        twin = None
        while time.monotonic() < deadline:
            assert self.worker is not None and self.worker.poll() is None, self.log("worker")
            twin = self.get(f"/v1/stations/{station}")
            if twin and "error" not in twin and twin["frames_folded"] >= frames:
                return dict(twin)
            time.sleep(0.3)
        raise AssertionError(f"{station}: live twin not at {frames} frames: {twin}\n{self.log('worker')}")

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text()[-3000:]

    def stop(self, proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGINT) -> None:
        if proc is not None:
            runtime.stop(proc, sig, 15)


@pytest.fixture(scope="module")
def pipeline(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    p = Pipeline(broker, tmp_path_factory.mktemp("pipeline"))
    p.start_gateway()
    p.start_worker()
    try:
        assert p.gateway is not None
        wait_port(p.gateway_port, p.gateway, p.workdir / "gateway.log")
        probe = Script("SC-PROBE").connect().boot()
        asyncio.run(_drive_all(p, probe))
        p.wait_twin("SC-PROBE", len(probe.records), timeout=120)  # the worker is assigned and folding
        yield p
    finally:
        p.stop(p.worker)
        p.stop(p.gateway)


async def _drive_all(p: Pipeline, script: Script) -> None:
    ws = await drive(p, script)
    if ws is not None:
        await ws.close()


async def drive(p: Pipeline, script: Script, records: list[dict[str, Any]] | None = None, ws: Any = None) -> Any:
    """Play a script against the live gateway: the station's calls over its websocket (the
    gateway answers), the CSMS's calls through ocpp.commands (the station answers as
    scripted). Returns the open websocket, if the script leaves it open."""
    url = f"ws://127.0.0.1:{p.gateway_port}/ocpp/{script.station}"
    todo = script.records if records is None else records
    i = 0
    while i < len(todo):
        r = todo[i]
        kind, origin, action = r["msg_type"], r["origin"], r["action"]
        if kind == 0 and action == "Connected":
            ws = await websockets.connect(url, subprotocols=[script.protocol])  # type: ignore[list-item]
        elif kind == 0 and action == "Disconnected":
            await ws.close()
            ws = None
        elif origin == "cs" and kind == 6:
            await ws.send(json.dumps([6, r["msg_id"], action, r["payload"]]))
        elif origin == "cs" and kind == 2:
            await ws.send(json.dumps([2, r["msg_id"], action, r["payload"]]))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 15))
            assert answer[0] == 3, f"{action}: {answer}"
            i += 1  # the scripted answer: the gateway gave its own
        elif origin == "csms" and kind == 2:
            await produce_command(p.settings, command(script.station, action, r["payload"], "scenario"))
            call = json.loads(await asyncio.wait_for(ws.recv(), 15))
            assert call[0] == 2 and call[2] == action, call
            await ws.send(json.dumps([3, call[1], todo[i + 1]["payload"]]))
            i += 1
        i += 1
    return ws


def wait_committed(p: Pipeline, timeout: float = 30) -> None:
    """Until the worker's consumer group has committed every record now on ocpp.frames."""
    from kafka import KafkaConsumer, TopicPartition

    from tests.conftest import TopicReader

    reader = TopicReader(p.broker.bootstrap, p.settings.topics.frames)
    count: dict[int, int] = {}
    for _ in range(10):  # read to the end: Tansu's end offsets fall short after a batch
        for batch in reader.consumer.poll(timeout_ms=300).values():
            for m in batch:
                count[m.partition] = max(count.get(m.partition, 0), m.offset + 1)
    reader.close()
    group = KafkaConsumer(
        bootstrap_servers=p.broker.bootstrap, group_id=f"{p.prefix}twin-worker", enable_auto_commit=False
    )
    deadline = time.monotonic() + timeout
    committed: dict[int, int] = {}
    try:
        while time.monotonic() < deadline:
            for part in count:
                committed[part] = group.committed(TopicPartition(p.settings.topics.frames, part)) or -1
            if all(committed[part] >= end for part, end in count.items()):
                return
            time.sleep(0.5)
    finally:
        group.close()
    raise AssertionError(f"the worker committed {committed}, the log holds {count}")


def rebuild_verify(p: Pipeline) -> dict[str, Any]:
    out = subprocess.run(TWIN + ["rebuild", "-b", p.broker.bootstrap, "--verify", "--api", p.api, "--json"],
                         capture_output=True, text=True, env=p.env, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scripted_frame_is_valid_for_its_version(name: str) -> None:
    from twin import schemas

    script = SCENARIOS[name][0]()
    for r in script.records:
        if r["msg_type"] in (2, 3, 6):
            kind = "Request" if r["msg_type"] in (2, 6) else "Response"
            problem = schemas.problem(script.protocol, r["action"], kind, r["payload"])
            assert problem is None, f"{r['action']} {kind}: {problem and problem.reason}"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_the_same_twin_three_ways(pipeline: Pipeline, name: str) -> None:
    build, expect = SCENARIOS[name]
    script = build()
    direct = public(fold(script.records)[script.station])  # 1: apply
    expect(direct)
    ws = await drive(pipeline, script)  # 2: the live pipeline
    try:
        live = await asyncio.to_thread(pipeline.wait_twin, script.station, len(script.records))
        expect(live)
        assert stable(live) == stable(direct)
        result = await asyncio.to_thread(rebuild_verify, pipeline)  # 3: twin rebuild of the capture
        assert result["differences"] == [], result["differences"][:5]
    finally:
        if ws is not None:
            await ws.close()


async def test_a_killed_worker_recovers_from_the_changelog(pipeline: Pipeline) -> None:
    build, expect = SCENARIOS["v2g"]
    script = build()
    script.station = "SC-KILL"
    script.records = [{**r, "station_id": "SC-KILL"} for r in script.records]
    half = len(script.records) // 2
    if script.records[half - 1]["msg_type"] == 2:
        half += 1  # never cut between a call and its answer
    ws = await drive(pipeline, script, script.records[:half])
    await asyncio.to_thread(pipeline.wait_twin, "SC-KILL", half)
    # The worker's group has committed past every frame so far: after the kill, a new worker
    # does not read them again, so the first half of this session can only come back from
    # the changelog of the twins table.
    await asyncio.to_thread(wait_committed, pipeline)
    pipeline.stop(pipeline.worker, signal.SIGKILL)  # mid-stream, no goodbye to its group
    try:
        ws = await drive(pipeline, script, script.records[half:], ws)  # captured while it is down
        pipeline.start_worker()
        live = await asyncio.to_thread(pipeline.wait_twin, "SC-KILL", len(script.records), 60)
        assert "folding again the last records" in pipeline.log("worker"), "the restarted worker rewound its position"
        expect(live)
        result = await asyncio.to_thread(rebuild_verify, pipeline)
        assert result["differences"] == [], result["differences"][:5]
    finally:
        with contextlib.suppress(Exception):
            await ws.close()


async def test_twin_state_and_alerts_are_published(pipeline: Pipeline) -> None:
    from tests.conftest import TopicReader

    script = SCENARIOS["identity-2.1"][0]()  # a connector goes Faulted, then the station goes offline
    script.station = "SC-ALERT"
    script.records = [{**r, "station_id": "SC-ALERT"} for r in script.records]
    await _drive_all(pipeline, script)
    await asyncio.to_thread(pipeline.wait_twin, "SC-ALERT", len(script.records))

    def latest_state(records: list[dict[str, Any]]) -> dict[str, Any] | None:
        mine = [r for r in records if r.get("station_id") == "SC-ALERT"]
        return mine[-1] if mine else None

    reader = TopicReader(pipeline.broker.bootstrap, pipeline.settings.topics.state)
    states = await asyncio.to_thread(
        reader.wait, lambda rs: (latest_state(rs) or {}).get("frames_folded") == len(script.records)
    )
    reader.close()
    assert latest_state(states) == pipeline.get("/v1/stations/SC-ALERT"), "twin.state carries the live twin"
    reader = TopicReader(pipeline.broker.bootstrap, pipeline.settings.topics.alerts)
    alerts = await asyncio.to_thread(
        reader.wait, lambda rs: {"fault", "offline"} <= {a["kind"] for a in rs if a["station_id"] == "SC-ALERT"}
    )
    reader.close()
    fault = next(a for a in alerts if a["station_id"] == "SC-ALERT" and a["kind"] == "fault")
    assert fault["severity"] == "high" and fault["detail"] == {"evse_id": 2, "connector_id": 1}
    assert set(fault) == {"station_id", "ts", "kind", "severity", "detail"}


def test_the_protocol_endpoints_and_json_errors(pipeline: Pipeline) -> None:
    matrix = pipeline.get("/v1/protocols/ocpp-21")
    names = {c["capability"] for c in matrix["capabilities"]}
    assert {"remote start/stop", "V2G (bidirectional)", "reservations", "TLS / security profile 3"} <= names
    messages = pipeline.get("/v1/protocols/ocpp-21/messages")
    assert messages["actions"] == 91
    boot = next(m for m in messages["messages"] if m["action"] == "BootNotification")
    assert boot == {
        "action": "BootNotification",
        "direction": "CS->CSMS",
        "since": "ocpp2.0.1",
        "send": False,
        "folded": True,
    }
    summary = pipeline.get("/v1/fleet/summary")
    assert summary["stations"] >= 1 and "ocpp2.1" in summary["protocols"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(pipeline.api + "/v1/stations/NOBODY", timeout=5)
    assert missing.value.code == 404 and json.loads(missing.value.read()) == {"error": "unknown station 'NOBODY'"}


def test_time_travel_and_rebuild_from_a_capture(tmp_path: Path) -> None:
    from twin.captures import write_jsonl

    script = SCENARIOS["v2g"][0]()
    capture = tmp_path / "v2g.jsonl"
    write_jsonl(capture, script.records)
    charging_at = script.records[12]["ts"]  # after the first Updated, before the profile and discharge
    out = subprocess.run(TWIN + ["state", script.station, "--capture", str(capture), "--at", charging_at, "--json"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    then = json.loads(out.stdout)
    assert then["evses"]["1"]["energy"]["direction"] == "charging" and then["frames_folded"] == 13
    out = subprocess.run(TWIN + ["rebuild", str(capture), "--json"], capture_output=True, text=True, timeout=60)
    rebuilt = json.loads(out.stdout)
    assert rebuilt["stations"] == 1 and rebuilt["frames"] == len(script.records)
    assert rebuilt["twins"][script.station] == public(fold(script.records)[script.station])


def test_the_worker_archives_every_frame(pipeline: Pipeline) -> None:
    """The archive agent: what ocpp.frames holds ends up in the Parquet archive, as the
    same envelopes (readers drop the duplicates at-least-once may write)."""
    from tests.conftest import TopicReader

    reader = TopicReader(pipeline.broker.bootstrap, pipeline.settings.topics.frames)
    logged = reader.wait(lambda rs: len(rs) > 10)
    time.sleep(1)
    logged = reader.poll()
    reader.close()
    key = lambda r: (r["conn_id"], r["seq"])  # noqa: E731
    deadline = time.monotonic() + 60
    archived: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if pipeline.archive.exists():
            archived = list(captures.read(pipeline.archive))
            if {key(r) for r in logged} <= {key(r) for r in archived}:
                break
        time.sleep(1)
    by_key = {key(r): r for r in archived}
    assert [by_key.get(key(r)) for r in logged] == logged, "every logged frame, archived as it was"
    assert all(p.name.startswith("date=") for p in pipeline.archive.iterdir())
