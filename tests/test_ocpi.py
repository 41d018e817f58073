"""``twin ocpi`` end to end: `twin gateway`, `twin worker`, a live simulated fleet and `twin
ocpi` as real processes, and a test eMSP (an aiohttp server in a thread) that registers with
token A, reads every module with pagination, sends each command and receives the results,
and takes pushed Locations (failing for a while first), Sessions and CDRs; a second eMSP
beside it; and stations of the tests' own (OCPP-J over a websocket, in a thread) for what
the simulator does not do: begin a transaction on RequestStartTransaction, never answer, go
offline. Every OCPI object is parsed by an
independent implementation of the OCPI 2.2.1 models: ``extrawest-ocpi`` (pydantic 1), in a
virtual environment of its own that the suite creates once and keeps
(``TWIN_OCPI_VENV``, default ``~/.cache/twin-tests/extrawest-ocpi``)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from aiohttp import web

from tests.test_cli_processes import wait_port
from twin import runtime
from twin.broker import free_port
from twin.publish import status as st

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]
TWIN = [sys.executable, "-m", "twin"]
TOKEN_A, TOKEN_B, PUSH_TOKEN = "token-a-for-tests", "emsp-token-b", "push-token"
EXTRAWEST = "extrawest-ocpi==2025.7.16"
TEST_POOL = "POOL-TESTS"
TARIFF = {"tariffId": "DC-EU-1", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.59}]},
          "idleTime": {"prices": [{"priceMinute": 0.1}]}}  # fmt: skip
CHECK = '''
import json, sys
from py_ocpi.core.schemas import OCPIResponse
from py_ocpi.modules.cdrs.v_2_2_1.schemas import Cdr
from py_ocpi.modules.commands.v_2_2_1.schemas import CommandResponse, CommandResult
from py_ocpi.modules.credentials.v_2_2_1.schemas import Credentials
from py_ocpi.modules.locations.v_2_2_1.schemas import EVSE, Connector, Location
from py_ocpi.modules.sessions.v_2_2_1.schemas import Session
from py_ocpi.modules.tariffs.v_2_2_1.schemas import Tariff
from py_ocpi.modules.versions.v_2_2_1.schemas import VersionDetail
from pydantic import ValidationError
MODELS = {m.__name__: m for m in (OCPIResponse, Cdr, CommandResponse, CommandResult, Credentials, EVSE, Connector,
                                  Location, Session, Tariff, VersionDetail)}
errors = []
for model, obj in json.load(sys.stdin):
    try:
        MODELS[model].parse_obj(obj)
    except ValidationError as exc:
        errors.append(f"{model}: {exc}")
print(json.dumps(errors))
'''


# -- the independent models ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ocpi_models() -> Callable[[str, list[Any]], None]:
    """``check(model, objects)``: parse with extrawest-ocpi's OCPI 2.2.1 models, in their venv."""
    venv = Path(os.environ.get("TWIN_OCPI_VENV", Path.home() / ".cache" / "twin-tests" / "extrawest-ocpi"))
    python = venv / "bin" / "python"
    if not (venv / ".ready").is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        pip = subprocess.run([str(python), "-m", "pip", "install", "-q", EXTRAWEST], capture_output=True, text=True)
        if pip.returncode != 0:
            pytest.skip(f"cannot install {EXTRAWEST} into {venv}: {pip.stderr[-500:]}")
        (venv / ".ready").write_text(EXTRAWEST)

    def check(model: str, objects: list[Any]) -> None:
        done = subprocess.run([str(python), "-c", CHECK], input=json.dumps([[model, o] for o in objects]),
                              capture_output=True, text=True, check=True)  # fmt: skip
        errors = json.loads(done.stdout)
        assert not errors, "\n".join(errors[:3])

    return check


# -- the test eMSP -----------------------------------------------------------------------------------


class Emsp:
    """An eMSP: versions and endpoints for the handshake, a commands receiver for
    CommandResults, a locations receiver for pushes (answering 503 while ``failing``), and
    sessions and cdrs receivers."""

    def __init__(self, token_b: str = TOKEN_B, country_code: str = "DE", party_id: str = "EMS") -> None:
        self.token_b, self.country_code, self.party_id = token_b, country_code, party_id
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/ocpi/emsp"
        self.results: list[tuple[str, str, dict[str, Any]]] = []
        self.pushes: list[tuple[str, str, dict[str, Any]]] = []
        self.sessions: list[tuple[str, dict[str, Any]]] = []  # (path after the receiver's URL, Session)
        self.cdrs: list[dict[str, Any]] = []
        self.refused_pushes = 0
        self.failing = True
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _authorised(self, request: web.Request, token: str) -> bool:
        return request.headers.get("Authorization") == "Token " + base64.b64encode(token.encode()).decode()

    async def versions(self, request: web.Request) -> web.Response:
        assert self._authorised(request, self.token_b)
        return web.json_response({"status_code": 1000, "timestamp": _now(),
                                  "data": [{"version": "2.2.1", "url": f"{self.base}/2.2.1"}]})  # fmt: skip

    async def details(self, request: web.Request) -> web.Response:
        assert self._authorised(request, self.token_b)
        endpoints = [{"identifier": "credentials", "role": "SENDER", "url": f"{self.base}/2.2.1/credentials"},
                     {"identifier": "commands", "role": "SENDER", "url": f"{self.base}/2.2.1/commands"},
                     {"identifier": "locations", "role": "RECEIVER", "url": f"{self.base}/2.2.1/locations"},
                     {"identifier": "sessions", "role": "RECEIVER", "url": f"{self.base}/2.2.1/sessions"},
                     {"identifier": "cdrs", "role": "RECEIVER", "url": f"{self.base}/2.2.1/cdrs"}]
        return web.json_response({"status_code": 1000, "timestamp": _now(),
                                  "data": {"version": "2.2.1", "endpoints": endpoints}})  # fmt: skip

    async def result(self, request: web.Request) -> web.Response:
        assert self._authorised(request, self.token_b)
        self.results.append((request.match_info["command"], request.match_info["uid"], await request.json()))
        return web.json_response({"status_code": 1000, "timestamp": _now()})

    async def pushed(self, request: web.Request) -> web.Response:
        assert self._authorised(request, PUSH_TOKEN)
        if self.failing:
            self.refused_pushes += 1
            return web.Response(status=503, text="down for maintenance")
        self.pushes.append((request.method, request.match_info["tail"], await request.json()))
        return web.json_response({"status_code": 1000, "timestamp": _now()})

    async def session(self, request: web.Request) -> web.Response:
        assert self._authorised(request, self.token_b)
        self.sessions.append((request.match_info["tail"], await request.json()))
        return web.json_response({"status_code": 1000, "timestamp": _now()})

    async def cdr(self, request: web.Request) -> web.Response:
        assert self._authorised(request, self.token_b)
        self.cdrs.append(await request.json())
        return web.json_response({"status_code": 1000, "timestamp": _now()})

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/ocpi/emsp/versions", self.versions)
        app.router.add_get("/ocpi/emsp/2.2.1", self.details)
        app.router.add_post("/ocpi/emsp/2.2.1/commands/{command}/{uid}", self.result)
        app.router.add_route("*", "/ocpi/emsp/2.2.1/locations/{tail:.*}", self.pushed)
        app.router.add_put("/ocpi/emsp/2.2.1/sessions/{tail:.*}", self.session)
        app.router.add_post("/ocpi/emsp/2.2.1/cdrs", self.cdr)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# -- stations of the tests' own ----------------------------------------------------------------------


class Station:
    """An OCPP 2.1 station (raw OCPP-J, its own event loop in a thread): boots, says EVSE 1 is
    Available, then answers the CSMS: RequestStartTransaction begins a transaction that names
    the remoteStartId, RequestStopTransaction ends it, anything else Accepted. ``silent``:
    it answers nothing. ``calls``: every CSMS call it was sent. :meth:`leave` drops the
    connection (the station is offline)."""

    def __init__(self, gateway_port: int, station_id: str, silent: bool = False) -> None:
        self.url, self.silent = f"ws://127.0.0.1:{gateway_port}/ocpp/{station_id}", silent
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.gone: asyncio.Event | None = None
        self.waiting: dict[str, asyncio.Future[Any]] = {}
        self.numbers = iter(range(1, 10**6))
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),), daemon=True)
        self.thread.start()
        assert self.ready.wait(30), f"{station_id} did not come online: {self.error!r}"

    async def _run(self) -> None:
        self.gone = asyncio.Event()
        try:
            async with websockets.connect(self.url, subprotocols=["ocpp2.1"]) as ws:  # type: ignore[list-item]
                self.ws = ws
                reader = asyncio.create_task(self._read())
                await self._call("BootNotification", {"reason": "PowerUp", "chargingStation": {
                    "model": "Test", "vendorName": "twin tests"}})  # fmt: skip
                await self._call("StatusNotification", {"timestamp": _now(), "connectorStatus": "Available",
                                                        "evseId": 1, "connectorId": 1})  # fmt: skip
                self.ready.set()
                await self.gone.wait()
                reader.cancel()
        except BaseException as exc:
            self.error = exc
            raise

    async def _call(self, action: str, payload: dict[str, Any]) -> Any:
        msg_id = f"t{next(self.numbers)}"
        self.waiting[msg_id] = asyncio.get_running_loop().create_future()
        await self.ws.send(orjson.dumps([2, msg_id, action, payload]).decode())
        return await asyncio.wait_for(self.waiting[msg_id], 30)

    async def _read(self) -> None:
        async for text in self.ws:
            msg = orjson.loads(text)
            if msg[0] in (3, 4) and msg[1] in self.waiting:
                self.waiting.pop(msg[1]).set_result(msg[2])
            elif msg[0] == 2:
                self.calls.append((msg[2], msg[3]))
                if not self.silent:
                    asyncio.create_task(self._answer(msg[1], msg[2], msg[3]))

    async def _answer(self, msg_id: str, action: str, payload: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps([3, msg_id, {"status": "Accepted"}]).decode())
        if action == "RequestStartTransaction":
            self.tx = f"TX-{msg_id}-{payload['remoteStartId']}"
            await self._call("TransactionEvent", {
                "eventType": "Started", "timestamp": _now(), "triggerReason": "RemoteStart", "seqNo": 0,
                "transactionInfo": {"transactionId": self.tx, "chargingState": "Charging",
                                    "remoteStartId": payload["remoteStartId"]},
                "evse": {"id": 1, "connectorId": 1}, "idToken": payload["idToken"],
                "meterValue": [{"timestamp": _now(), "sampledValue": [
                    {"value": 1000.0, "measurand": "Energy.Active.Import.Register"}]}]})  # fmt: skip
        elif action == "RequestStopTransaction":
            await self._call("TransactionEvent", {
                "eventType": "Ended", "timestamp": _now(), "triggerReason": "RemoteStop", "seqNo": 1,
                "transactionInfo": {"transactionId": payload["transactionId"], "stoppedReason": "Remote"},
                "meterValue": [{"timestamp": _now(), "sampledValue": [
                    {"value": 3500.0, "measurand": "Energy.Active.Import.Register"}]}]})  # fmt: skip

    def leave(self) -> None:
        """Drop the connection: from now on the station is offline."""
        if self.gone is not None:
            self.loop.call_soon_threadsafe(self.gone.set)
        self.thread.join(10)


# -- the stack ---------------------------------------------------------------------------------------


class Stack:
    def __init__(self, bootstrap: str, workdir: Path) -> None:
        self.workdir = workdir
        self.bootstrap = bootstrap
        prefix = f"ocpi{os.getpid()}{int(time.time()) % 10000}."
        self.env = {**os.environ, "TWIN_TOPIC_PREFIX": prefix, "TWIN_PARTITIONS": "2"}
        self.gateway_port, self.web_port, self.ocpi_port = free_port(), free_port(), free_port()
        self.archive = workdir / "archive"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.token_c: str | None = None
        self.emsp = Emsp()
        self.stations: list[Station] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ocpi_port}"

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(TWIN + args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self.procs[name]

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text()[-3000:]

    def call(self, method: str, path: str, token: str | None = None, body: Any = None,
             raw_token: bool = False) -> tuple[int, dict[str, str], Any]:  # fmt: skip
        headers = {"Content-Type": "application/json", "X-Request-ID": "req-1"}
        token = token if token is not None else self.token_c
        if token:
            headers["Authorization"] = "Token " + (token if raw_token else base64.b64encode(token.encode()).decode())
        data = json.dumps(body).encode() if body is not None else None
        url = path if path.startswith("http") else f"{self.base}{path}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, dict(r.headers), json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")

    def add_to_inventory(self, pool: str, *station_ids: str) -> None:
        """Stations of the tests' own in the inventory, one pool of their own."""
        path = self.archive / "_stations.json"
        rows = json.loads(path.read_text())
        rows += [{**rows[0], "station_id": sid, "pool_id": pool, "pool_name": pool, "site_id": "SITE-TESTS",
                  "protocol": "ocpp2.1", "evses": 1} for sid in station_ids]  # fmt: skip
        path.write_text(json.dumps(rows))

    def station(self, station_id: str, silent: bool = False) -> Station:
        """One of the tests' stations, online in the twin."""
        station = Station(self.gateway_port, station_id, silent)
        self.stations.append(station)
        self.wait(f"{station_id} online and Available in its twin", lambda: st.twin_status(
            self.api(f"/v1/stations/{station_id}"), "1") == "Available")  # fmt: skip
        return station

    def api(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=5) as r:
                return json.loads(r.read())
        except Exception:
            return None

    def wait(self, what: str, probe: Callable[[], Any], timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if name != "tariff":
                    assert proc.poll() is None, f"the {name} stopped:\n{self.log(name)}"
            value = probe()
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}\nocpi:\n{self.log('ocpi')}")


@pytest.fixture(scope="module")
def stack(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(broker.bootstrap, tmp_path_factory.mktemp("ocpi"))
    b = broker.bootstrap
    try:
        gateway = s.spawn("gateway", ["gateway", "-b", b, "--port", str(s.gateway_port),
                                      "--spool", str(s.workdir / "spool")])  # fmt: skip
        wait_port(s.gateway_port, gateway, s.workdir / "gateway.log")
        s.spawn("worker", ["worker", "-b", b, "--web-port", str(s.web_port), "--archive", str(s.archive),
                           "--data-dir", str(s.workdir / "worker")])  # fmt: skip
        s.wait("the worker's API", lambda: s.api("/v1/fleet/summary"), timeout=120)
        s.spawn("simulator", ["simulate", "--live", f"ws://127.0.0.1:{s.gateway_port}/ocpp", "--stations", "5",
                              "--days", "1", "--speed", "60", "--inventory", str(s.archive)])  # fmt: skip
        s.wait("five twins", lambda: len((s.api("/v1/stations") or {}).get("stations", ())) >= 5)
        s.add_to_inventory(TEST_POOL, "CS-ROAM", "CS-SILENT", "CS-GONE")
        s.spawn("ocpi", ["ocpi", "-b", b, "--port", str(s.ocpi_port), "--archive", str(s.archive),
                         "--data-dir", str(s.workdir / "ocpi-data"), "--ocpi-token-a", TOKEN_A,
                         "--command-timeout", "20", "--push", f"{s.emsp.base}/2.2.1/locations",
                         "--push-token", PUSH_TOKEN])  # fmt: skip
        wait_port(s.ocpi_port, s.procs["ocpi"], s.workdir / "ocpi.log")
        tariff = s.workdir / "tariff.json"
        tariff.write_text(json.dumps(TARIFF))
        done = subprocess.run([*TWIN, "tariff", "set", "CS-00001", "CS-00002", str(tariff), "-b", b, "--api",
                               f"http://127.0.0.1:{s.web_port}", "--json"], env=s.env, capture_output=True,
                              timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        yield s
    finally:
        s.emsp.stop()
        for station in s.stations:
            station.leave()
        for name in ("ocpi-quick", "ocpi", "simulator", "worker", "gateway"):
            if name in s.procs:
                runtime.stop(s.procs[name], signal.SIGINT, 15)


def _register(stack: Stack) -> str:
    if stack.token_c is None:
        stack.token_c = _register_at(stack, stack.emsp, stack.base)
    return stack.token_c


def _register_at(stack: Stack, emsp: Emsp, base: str) -> str:
    """``emsp`` registers at the twin ocpi at ``base`` with token A; its token C."""
    ours = {"token": emsp.token_b, "url": f"{emsp.base}/versions",
            "roles": [{"role": "EMSP", "business_details": {"name": f"Test eMSP {emsp.party_id}"},
                       "party_id": emsp.party_id, "country_code": emsp.country_code}]}  # fmt: skip
    status, _, body = stack.call("POST", f"{base}/ocpi/2.2.1/credentials", TOKEN_A, ours)
    assert status == 200 and body["status_code"] == 1000, body
    return str(body["data"]["token"])


def _read_all(stack: Stack, module: str, limit: int = 2, token: str | None = None) -> list[dict[str, Any]]:
    url: str | None = f"/ocpi/2.2.1/{module}?limit={limit}"
    out: list[dict[str, Any]] = []
    total = None
    while url:
        status, headers, body = stack.call("GET", url, token)
        assert status == 200 and body["status_code"] == 1000, body
        assert int(headers["X-Limit"]) == limit
        total = int(headers["X-Total-Count"])
        out += body["data"]
        link = headers.get("Link")
        url = link.split(">")[0].lstrip("<") if link else None
    assert len(out) == total
    return out


# -- the tests ---------------------------------------------------------------------------------------


def test_without_a_valid_token_401_with_an_ocpi_status(stack: Stack, ocpi_models: Any) -> None:
    for token in ("", "wrong"):
        status, _, body = stack.call("GET", "/ocpi/2.2.1/locations", token)
        assert status == 401 and body["status_code"] == 2000 and "timestamp" in body
        assert "no valid 'Authorization: Token" in body["status_message"]
    status, _, body = stack.call("GET", "/ocpi/versions", "wrong")
    assert status == 401


def test_handshake_then_token_a_is_spent_and_c_reads_versions(stack: Stack, ocpi_models: Any) -> None:
    token_c = _register(stack)
    assert token_c != TOKEN_A
    status, _, body = stack.call("GET", "/ocpi/2.2.1/credentials")
    assert status == 200 and body["data"]["roles"][0]["role"] == "CPO"
    ocpi_models("Credentials", [body["data"]])
    status, _, body = stack.call("GET", "/ocpi/2.2.1/locations", TOKEN_A)
    assert status == 401 and "token A is for registering only" in body["status_message"]
    assert stack.call("POST", "/ocpi/2.2.1/credentials", body={"token": "x", "url": "y", "roles": []})[0] == 405
    status, headers, body = stack.call("GET", "/ocpi/2.2.1")
    assert headers.get("X-Request-ID") == "req-1"
    ocpi_models("VersionDetail", [body["data"]])
    ocpi_models("OCPIResponse", [body])
    assert {e["identifier"] for e in body["data"]["endpoints"]} >= {"credentials", "locations", "tariffs", "sessions",
                                                                    "cdrs", "commands"}  # fmt: skip
    assert stack.call("GET", "/ocpi/2.2.1/locations", token_c, raw_token=True)[0] == 200  # 2.1.1's plain token


def test_credentials_update_then_delete(stack: Stack) -> None:
    """PUT credentials with a new token B: a new token C, the old one refused; DELETE: the
    party is gone, its token refused."""
    emsp = Emsp("upd-token-b-1", "BE", "UPD")
    try:
        first = _register_at(stack, emsp, stack.base)
        emsp.token_b = "upd-token-b-2"
        ours = {"token": emsp.token_b, "url": f"{emsp.base}/versions", "roles": [{"role": "EMSP", "business_details": {
            "name": "Test eMSP UPD"}, "party_id": "UPD", "country_code": "BE"}]}  # fmt: skip
        status, _, body = stack.call("PUT", "/ocpi/2.2.1/credentials", first, ours)
        assert status == 200 and body["status_code"] == 1000, body
        second = body["data"]["token"]
        assert second != first and stack.call("GET", "/ocpi/2.2.1/locations", first)[0] == 401
        assert stack.call("GET", "/ocpi/2.2.1/locations", second)[0] == 200
        assert stack.call("DELETE", "/ocpi/2.2.1/credentials", second)[0] == 200
        assert stack.call("GET", "/ocpi/2.2.1/locations", second)[0] == 401
        with urllib.request.urlopen(f"{stack.base}/status") as r:
            assert "BE*UPD" not in {p["party"] for p in json.loads(r.read())["parties"]}
    finally:
        emsp.stop()


def test_unknown_module_or_version_is_an_ocpi_404(stack: Stack) -> None:
    _register(stack)
    for path in ("/ocpi/2.2.1/chargingprofiles", "/ocpi/2.1.1/locations", "/ocpi/3.0"):
        status, _, body = stack.call("GET", path)
        assert status == 404 and body["status_code"] == 2000, (path, body)


def test_locations_paginated_with_the_twins_statuses(stack: Stack, ocpi_models: Any) -> None:
    _register(stack)
    inventory = json.loads((stack.archive / "_stations.json").read_text())
    stack.wait("tariffs in force", lambda: len(_read_all(stack, "tariffs")) >= 2)
    found = _read_all(stack, "locations", limit=1)
    assert sorted(x["id"] for x in found) == sorted({r["pool_id"] for r in inventory})
    ocpi_models("Location", found)
    evses = {e["uid"]: e for x in found for e in x["evses"]}
    assert len(evses) == sum(r["evses"] for r in inventory)
    twin = stack.api("/v1/stations/CS-00001")
    assert evses["CS-00001*1"]["status"] in (st.ocpi(twin, "1"), "CHARGING", "AVAILABLE", "RESERVED")
    assert evses["CS-00001*1"]["evse_id"] == "NL*TWN*ECS00001*1"
    connector = evses["CS-00001*1"]["connectors"][0]
    assert connector["tariff_ids"] == ["DC-EU-1", "DC-EU-1-ADHOC"]
    assert connector["max_electric_power"] == int(inventory[0]["max_kw"] * 1000)
    late = _now()
    window = f"date_from={late[:19]}Z&date_to=2100-01-01T00:00:00Z"
    status, headers, body = stack.call("GET", f"/ocpi/2.2.1/locations?{window}")
    assert status == 200 and int(headers["X-Total-Count"]) <= len(found)
    status, _, body = stack.call("GET", f"/ocpi/2.2.1/locations/{found[0]['id']}/{found[0]['evses'][0]['uid']}/1")
    assert status == 200
    ocpi_models("Connector", [body["data"]])
    assert stack.call("GET", "/ocpi/2.2.1/locations/NOPE")[2]["status_code"] == 2003


def test_tariffs_in_force_with_the_ad_hoc_one(stack: Stack, ocpi_models: Any) -> None:
    _register(stack)
    tariffs = _read_all(stack, "tariffs")
    ocpi_models("Tariff", tariffs)
    by_id = {t["id"]: t for t in tariffs}
    assert by_id["DC-EU-1-ADHOC"]["type"] == "AD_HOC_PAYMENT"
    energy = by_id["DC-EU-1"]["elements"][0]["price_components"][0]
    assert energy == {"type": "ENERGY", "price": 0.59, "step_size": 1}
    assert by_id["DC-EU-1"]["elements"][1]["price_components"][0]["price"] == pytest.approx(6.0)  # 0.10/min


def _command(stack: Stack, name: str, body: dict[str, Any], uid: str, emsp: Emsp | None = None,
             token: str | None = None, base: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``emsp`` (the stack's) sends a command with its token C to twin ocpi at ``base``."""
    body = {"response_url": f"{(emsp or stack.emsp).base}/2.2.1/commands/{name}/{uid}", **body}
    status, _, answer = stack.call("POST", f"{base or stack.base}/ocpi/2.2.1/commands/{name}", token, body)
    assert status in (200, 400), answer
    return answer


def _result(stack: Stack, name: str, uid: str, emsp: Emsp | None = None) -> dict[str, Any]:
    emsp = emsp or stack.emsp
    return stack.wait(f"the {name} result", lambda: next((r for c, u, r in emsp.results if (c, u) == (name, uid)),
                                                         None), timeout=60)  # fmt: skip


def _token(uid: str = "EMS-TOKEN-1", country_code: str = "DE", party_id: str = "EMS") -> dict[str, Any]:
    return {"country_code": country_code, "party_id": party_id, "uid": uid, "type": "APP_USER",
            "contract_id": f"{country_code}-{party_id}-C12345678-X", "issuer": "Test eMSP", "valid": True,
            "whitelist": "ALLOWED", "last_updated": _now()}  # fmt: skip


def test_commands_reach_the_stations_and_their_answers_come_back(stack: Stack, ocpi_models: Any) -> None:
    _register(stack)
    pool = json.loads((stack.archive / "_stations.json").read_text())[0]["pool_id"]
    expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    reserve = {"token": _token(), "expiry_date": expiry, "reservation_id": "R-1", "location_id": pool,
               "evse_uid": "CS-00001*1"}  # fmt: skip
    answer = _command(stack, "RESERVE_NOW", reserve, "r1")
    assert answer["data"]["result"] == "ACCEPTED", answer
    ocpi_models("CommandResponse", [answer["data"]])
    result = _result(stack, "RESERVE_NOW", "r1")
    ocpi_models("CommandResult", [result])
    assert result["result"] == "ACCEPTED", result
    roaming = stack.wait("the roaming reservation", lambda: next(
        (r for r in json.loads(urllib.request.urlopen(f"{stack.base}/status").read())["reservations"]
         if r["reservation_id"] == "R-1"), None))  # fmt: skip
    assert roaming["party"] == "DE*EMS" and roaming["station_id"] == "CS-00001"
    reservation = stack.wait("the reservation in the twin", lambda: ((stack.api("/v1/stations/CS-00001") or {})
                                                                     .get("reservations") or {}).get(
        str(roaming["ocpp_id"])))  # fmt: skip
    assert reservation["id_token"] == "EMS-TOKEN-1"
    assert reservation["roaming"] == {"party": "DE*EMS", "command": "RESERVE_NOW", "reservation_id": "R-1"}

    replay = _command(stack, "RESERVE_NOW", reserve, "r1-again")
    assert replay["data"]["result"] == "REJECTED" and "replayed" in replay["data"]["message"][0]["text"]
    past = {**reserve, "reservation_id": "R-OLD", "expiry_date": "2020-01-01T00:00:00Z"}
    expired = _command(stack, "RESERVE_NOW", past, "r-old")
    assert expired["data"]["result"] == "REJECTED" and "past" in expired["data"]["message"][0]["text"]

    assert _command(stack, "CANCEL_RESERVATION", {"reservation_id": "R-1"}, "c1")["data"]["result"] == "ACCEPTED"
    assert _result(stack, "CANCEL_RESERVATION", "c1")["result"] == "ACCEPTED"
    unknown = _command(stack, "CANCEL_RESERVATION", {"reservation_id": "R-NEVER"}, "c2")
    assert _result(stack, "CANCEL_RESERVATION", "c2")["result"] == "UNKNOWN_RESERVATION", unknown

    start = {"token": _token(), "location_id": pool, "evse_uid": "CS-00001*1"}
    assert _command(stack, "START_SESSION", start, "s1")["data"]["result"] == "ACCEPTED"
    assert _result(stack, "START_SESSION", "s1")["result"] == "ACCEPTED"
    assert _command(stack, "STOP_SESSION", {"session_id": "NO-SUCH-TX"}, "x1")["data"]["result"] == "UNKNOWN_SESSION"
    unlock = {"location_id": pool, "evse_uid": "CS-00001*1", "connector_id": "1"}
    assert _command(stack, "UNLOCK_CONNECTOR", unlock, "u1")["data"]["result"] == "ACCEPTED"
    assert _result(stack, "UNLOCK_CONNECTOR", "u1")["result"] == "ACCEPTED"


def test_bad_commands_are_refused_and_nothing_is_sent(stack: Stack) -> None:
    _register(stack)
    pool = json.loads((stack.archive / "_stations.json").read_text())[0]["pool_id"]
    status, _, body = stack.call("POST", "/ocpi/2.2.1/commands/RESERVE_NOW",
                                 body={"response_url": "http://x", "reservation_id": "R-9"})  # fmt: skip
    assert status == 400 and body["status_code"] == 2001
    assert "token" in body["status_message"] and "expiry_date" in body["status_message"]
    nowhere = _command(stack, "UNLOCK_CONNECTOR", {"location_id": pool, "evse_uid": "CS-99999*1",
                                                   "connector_id": "1"}, "u9")  # fmt: skip
    assert nowhere["data"]["result"] == "REJECTED"
    journal = [json.loads(x) for x in (stack.workdir / "ocpi-data" / "commands.jsonl").read_text().splitlines()]
    refused = [e for e in journal if e.get("refused") or e.get("sent") is False]
    assert any("2001" in str(e.get("refused")) for e in refused)
    assert any(e.get("response") == "REJECTED" and "CS-99999" in e.get("message", "") for e in refused)


def test_sessions_and_cdrs_go_to_the_emsp_whose_token_it_was_and_no_other(stack: Stack, ocpi_models: Any) -> None:
    """Two eMSPs registered; DE*EMS starts a session and stops it: DE*EMS alone is sent its
    Session (PUT, ACTIVE then COMPLETED) and its CDR (POST), and reads them; FR*OTH is sent
    nothing and reads nothing of it. The simulated fleet's sessions (our own RFID tokens) go
    to neither."""
    ems = _register(stack)
    other = Emsp("other-token-b", "FR", "OTH")
    try:
        oth = _register_at(stack, other, stack.base)
        stack.station("CS-ROAM")
        start = {"token": _token("EMS-DRIVER-7"), "location_id": TEST_POOL, "evse_uid": "CS-ROAM*1"}
        assert _command(stack, "START_SESSION", start, "roam-start")["data"]["result"] == "ACCEPTED"
        assert _result(stack, "START_SESSION", "roam-start")["result"] == "ACCEPTED"
        path, active = stack.wait("DE*EMS sent its session", lambda: next(
            ((p, b) for p, b in stack.emsp.sessions if b["evse_uid"] == "CS-ROAM*1"), None))  # fmt: skip
        assert path == f"NL/TWN/{active['id']}" and active["status"] == "ACTIVE"
        assert active["cdr_token"]["uid"] == "EMS-DRIVER-7" and active["auth_method"] == "COMMAND"
        stop = _command(stack, "STOP_SESSION", {"session_id": active["id"]}, "roam-stop")
        assert stop["data"]["result"] == "ACCEPTED", stop
        assert _result(stack, "STOP_SESSION", "roam-stop")["result"] == "ACCEPTED"
        cdr = stack.wait("DE*EMS sent its CDR", lambda: next((c for c in stack.emsp.cdrs if c["id"] == active["id"]),
                                                             None))  # fmt: skip
        completed = [b for _, b in stack.emsp.sessions if b["id"] == active["id"] and b["status"] == "COMPLETED"]
        assert completed, [b["status"] for _, b in stack.emsp.sessions]
        ocpi_models("Session", [b for _, b in stack.emsp.sessions])
        ocpi_models("Cdr", stack.emsp.cdrs)
        assert cdr["cdr_token"]["party_id"] == "EMS" and cdr["total_energy"] == pytest.approx(2.5)
        assert cdr["cdr_location"]["evse_id"] == "NL*TWN*ECSROAM*1"
        assert {(c["cdr_token"]["country_code"], c["cdr_token"]["party_id"]) for c in stack.emsp.cdrs} == {
            ("DE", "EMS")}  # fmt: skip

        mine = {s["id"]: s for s in _read_all(stack, "sessions", limit=5, token=ems)}
        assert mine[active["id"]]["status"] == "COMPLETED"
        assert {s["cdr_token"]["party_id"] for s in mine.values()} == {"EMS"}
        assert active["id"] in {c["id"] for c in _read_all(stack, "cdrs", limit=5, token=ems)}
        theirs = _read_all(stack, "sessions", limit=5, token=oth) + _read_all(stack, "cdrs", limit=5, token=oth)
        assert all(x["cdr_token"]["party_id"] == "OTH" for x in theirs), theirs
        with urllib.request.urlopen(f"{stack.base}/status") as r:
            parties = {p["party"]: p for p in json.loads(r.read())["parties"]}
        assert parties["DE*EMS"]["push"]["sent"] >= 3 and "sessions" in parties["DE*EMS"]["receives"]
        assert other.sessions == [] and other.cdrs == [] and (parties["FR*OTH"]["push"] or {}).get("sent", 0) == 0
    finally:
        other.stop()


def test_a_command_a_station_never_answers_ends_in_timeout(stack: Stack) -> None:
    """A second twin ocpi with --command-timeout 3: START_SESSION to a station that takes the
    call and never answers; the eMSP's response_url gets CommandResult TIMEOUT."""
    silent = stack.station("CS-SILENT", silent=True)
    port = free_port()
    quick = f"http://127.0.0.1:{port}"
    stack.spawn("ocpi-quick", ["ocpi", "-b", stack.bootstrap, "--port", str(port), "--archive", str(stack.archive),
                               "--data-dir", str(stack.workdir / "ocpi-quick-data"), "--ocpi-token-a", TOKEN_A,
                               "--command-timeout", "3"])  # fmt: skip
    wait_port(port, stack.procs["ocpi-quick"], stack.workdir / "ocpi-quick.log")
    token = _register_at(stack, stack.emsp, quick)
    stack.wait("CS-SILENT AVAILABLE at the second twin ocpi", lambda: any(
        e["uid"] == "CS-SILENT*1" and e["status"] == "AVAILABLE"
        for x in stack.call("GET", f"{quick}/ocpi/2.2.1/locations?limit=500", token)[2]["data"] for e in x["evses"]))
    start = {"token": _token(), "location_id": TEST_POOL, "evse_uid": "CS-SILENT*1"}
    answer = _command(stack, "START_SESSION", start, "silent", token=token, base=quick)
    assert answer["data"] == {"result": "ACCEPTED", "timeout": 3}, answer
    result = _result(stack, "START_SESSION", "silent")
    assert result["result"] == "TIMEOUT", result
    assert "did not answer" in result["message"][0]["text"]
    assert [a for a, _ in silent.calls if a == "RequestStartTransaction"] == ["RequestStartTransaction"]  # delivered
    journal = [json.loads(x) for x in (stack.workdir / "ocpi-quick-data" / "commands.jsonl").read_text().splitlines()]
    assert any(e.get("outcome") == "timeout" and e.get("result") == "TIMEOUT" for e in journal), journal


def test_a_command_for_an_offline_station_is_answered_and_nothing_is_sent(stack: Stack) -> None:
    """RESERVE_NOW for an EVSE whose station has gone offline: EVSE_INOPERATIVE at the
    response URL, saying it is offline, journaled, nothing sent; once the station is back,
    the same reservation is made (the refused one took nothing)."""
    _register(stack)
    gone = stack.station("CS-GONE")
    gone.leave()
    stack.wait("CS-GONE offline in its twin", lambda: st.twin_status(stack.api("/v1/stations/CS-GONE"), "1")
               == "offline")  # fmt: skip
    stack.wait("CS-GONE offline at twin ocpi", lambda: any(
        e["uid"] == "CS-GONE*1" and e["status"] == "UNKNOWN"
        for x in _read_all(stack, "locations", limit=50) for e in x["evses"]))  # fmt: skip
    expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    reserve = {"token": _token(), "expiry_date": expiry, "reservation_id": "R-GONE", "location_id": TEST_POOL,
               "evse_uid": "CS-GONE*1"}  # fmt: skip
    answer = _command(stack, "RESERVE_NOW", reserve, "gone")
    assert "CS-GONE*1 is offline" in answer["data"]["message"][0]["text"], answer
    result = _result(stack, "RESERVE_NOW", "gone")
    assert result["result"] == "EVSE_INOPERATIVE" and "offline" in result["message"][0]["text"], result
    journal = [json.loads(x) for x in (stack.workdir / "ocpi-data" / "commands.jsonl").read_text().splitlines()]
    entry = next(e for e in journal if (e.get("body") or {}).get("reservation_id") == "R-GONE")
    assert entry["sent"] is False and entry["result"] == "EVSE_INOPERATIVE" and "command_id" not in entry
    with urllib.request.urlopen(f"{stack.base}/status") as r:
        assert "R-GONE" not in {x["reservation_id"] for x in json.loads(r.read())["reservations"]}

    back = stack.station("CS-GONE")
    assert "ReserveNow" not in [a for a, _ in back.calls]  # nothing was kept for it
    again = _command(stack, "RESERVE_NOW", reserve, "back")
    assert again["data"]["result"] == "ACCEPTED", again
    assert _result(stack, "RESERVE_NOW", "back")["result"] == "ACCEPTED"
    assert [a for a, _ in back.calls if a == "ReserveNow"] == ["ReserveNow"]


def test_datex2_feeds_are_served_as_xml_and_json(stack: Stack) -> None:
    xmlschema = pytest.importorskip("xmlschema")
    xsd = Path(__file__).resolve().parents[2] / "shared" / "datex2" / "xsd" / "DATEXII_3_D2Payload.xsd"
    for feed in ("table", "status"):
        with urllib.request.urlopen(f"{stack.base}/datex2/v3/afir/{feed}") as r:
            xml = r.read().decode()
        if xsd.is_file():
            assert xmlschema.XMLSchema(str(xsd)).is_valid(xml)
        with urllib.request.urlopen(f"{stack.base}/datex2/v3/afir/{feed}?format=json") as r:
            assert "payload" in json.loads(r.read())


def test_push_survives_a_receiver_that_fails_then_recovers(stack: Stack) -> None:
    pools = {r["pool_id"] for r in json.loads((stack.archive / "_stations.json").read_text())}
    stack.wait("pushes refused", lambda: stack.emsp.refused_pushes >= 2, timeout=60)
    stack.emsp.failing = False
    stack.wait("every Location PUT once it recovers", lambda: {p.split("/")[2] for m, p, _ in stack.emsp.pushes
                                                             if m == "PUT"} >= pools, timeout=120)  # fmt: skip
    with urllib.request.urlopen(f"{stack.base}/status") as r:
        push = json.loads(r.read())["push"]
    assert push["failures"] >= 2 and push["sent"] >= len(pools)
    # statuses that changed while it failed (CS-GONE went and came back, a simulated fleet charges) follow
    method, path, patch = stack.wait("an EVSE status PATCHed", lambda: next(
        (p for p in stack.emsp.pushes if p[0] == "PATCH"), None), timeout=120)  # fmt: skip
    assert set(patch) == {"status", "last_updated"} and len(path.split("/")) == 4
    put = next(b for m, _, b in stack.emsp.pushes if m == "PUT")
    assert put["evses"] and put["country_code"] == "NL"


def test_the_dashboard_says_where_each_feed_is_and_when_it_was_last_served(stack: Stack,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The Feeds page (AppTest) on this stack's twin ocpi: every feed's URL, the DATEX II
    status feed just served (XML, when), the registered eMSPs and their roles, the locations
    push's count; and, with no twin ocpi where TWIN_OCPI points, a warning that says so."""
    from streamlit.testing.v1 import AppTest

    _register(stack)
    urllib.request.urlopen(f"{stack.base}/datex2/v3/afir/status").read()
    monkeypatch.setenv("TWIN_API", f"http://127.0.0.1:{stack.web_port}")
    monkeypatch.setenv("TWIN_ARCHIVE", str(stack.archive))
    monkeypatch.setenv("TWIN_OCPI", stack.base)
    page = str(Path(__file__).resolve().parents[1] / "dashboards" / "pages" / "feeds.py")
    at = AppTest.from_file(page, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Feeds: OCPI & DATEX II"
    assert f"{stack.base}/ocpi/versions" in at.caption[0].value
    feeds = {r["feed"]: r for r in at.dataframe[0].value.to_dict("records")}
    assert feeds["datex2 status"]["url"] == f"{stack.base}/datex2/v3/afir/status"
    assert feeds["datex2 status"]["result"] == "XML" and feeds["datex2 status"]["last_served"] != "never"
    assert feeds["ocpi locations"]["to"] == "DE*EMS"
    parties = {r["party"]: r for r in at.dataframe[1].value.to_dict("records")}
    assert parties["DE*EMS"]["role"] == "EMSP" and "sessions" in parties["DE*EMS"]["receives"]
    assert int(next(m.value for m in at.metric if m.label == "Pushed")) > 0

    monkeypatch.setenv("TWIN_OCPI", f"http://127.0.0.1:{free_port()}")
    at = AppTest.from_file(page, default_timeout=60).run()
    assert not at.exception and "`twin ocpi` is not reachable" in at.warning[0].value
