"""`twin tariff` end to end: `twin gateway`, `twin worker` and a live simulated fleet as
processes on the embedded broker; the commands set, get, change and clear tariffs on OCPP 2.1
stations and print their answers, refuse a 2.0.1 station, and the stations' local cost
reaches the twin. Every frame is checked against its version's schema."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Broker, TopicReader, fresh_prefix
from tests.test_cli_processes import wait_port
from twin import runtime, schemas
from twin.broker import free_port
from twin.schemas import Kind

pytestmark = pytest.mark.one_engine  # see tests/conftest.py

TWIN = [sys.executable, "-m", "twin"]
SPEED = 60
TOD = {"tariffId": "TOD-1", "currency": "EUR",
       "energy": {"prices": [{"priceKwh": 0.45, "conditions": {"startTimeOfDay": "07:00", "endTimeOfDay": "22:00"}},
                             {"priceKwh": 0.30}], "taxRates": [{"type": "VAT", "tax": 21}]},
       "idleTime": {"prices": [{"priceMinute": 0.10, "conditions": {"minIdleTime": 600}}]}}  # fmt: skip
FLAT = {"tariffId": "DRV-9", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.25}]}}
# the first visit comes a simulated minute after the start, the others keep their spacing: the
# sessions on EVSE 2 start 40 simulated minutes later, once the tariffs are set
SESSIONS = """session_id,evse_id,arrival,departure,energy_kwh,max_kw,v2g,max_discharge_kw
S0,CS-00003:1,2026-03-02T08:00:00Z,2026-03-02T08:05:00Z,1,11,false,0
S1,CS-00003:2,2026-03-02T08:40:00Z,2026-03-02T12:00:00Z,30,50,false,0
S2,CS-00002:2,2026-03-02T08:40:00Z,2026-03-02T09:20:00Z,5,11,false,0
"""


class Stack:
    def __init__(self, broker: Broker, workdir: Path) -> None:
        self.workdir, self.bootstrap = workdir, broker.bootstrap
        self.prefix = fresh_prefix("tar")
        self.env = {**os.environ, "TWIN_TOPIC_PREFIX": self.prefix, "TWIN_PARTITIONS": "2"}
        self.gateway_port, self.web_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.web_port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(TWIN + args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self.procs[name]

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text()[-4000:]

    def twin(self, station: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.api}/v1/stations/{station}", timeout=5) as response:
                value: dict[str, Any] = json.loads(response.read())
                return value
        except Exception:
            return None

    def wait(self, what: str, probe: Callable[[], Any], timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                assert proc.poll() is None, f"the {name} stopped:\n{self.log(name)}"
            value = probe()
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}\nsimulator:\n{self.log('simulator')}")

    def tariff(self, *args: str) -> tuple[int, dict[str, Any], str]:
        broker = [] if args[0] == "show" else ["-b", self.bootstrap]  # show asks the API only
        done = subprocess.run([*TWIN, "tariff", *args, *broker, "--api", self.api, "--json"],
                              capture_output=True, text=True, env=self.env, timeout=90)  # fmt: skip
        return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr


@pytest.fixture(scope="module")
def stack(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(broker, tmp_path_factory.mktemp("tariffs"))
    b = broker.bootstrap
    (s.workdir / "sessions.csv").write_text(SESSIONS)
    try:
        gateway = s.spawn("gateway", ["gateway", "-b", b, "--port", str(s.gateway_port),
                                      "--spool", str(s.workdir / "spool")])  # fmt: skip
        wait_port(s.gateway_port, gateway, s.workdir / "gateway.log")
        s.spawn("worker", ["worker", "-b", b, "--web-port", str(s.web_port), "--data-dir", str(s.workdir / "worker")])
        s.spawn("simulator", ["simulate", "--live", f"ws://127.0.0.1:{s.gateway_port}/ocpp", "--stations", "5",
                              "--days", "1", "--speed", str(SPEED), "--sessions", str(s.workdir / "sessions.csv")])
        for station in ("CS-00001", "CS-00002", "CS-00003", "CS-00004", "CS-00005"):
            s.wait(f"{station}'s twin", lambda st=station: (s.twin(st) or {}).get("evses"), timeout=120)  # type: ignore[misc]
        yield s
    finally:
        for name in ("simulator", "worker", "gateway"):
            if name in s.procs:
                runtime.stop(s.procs[name], signal.SIGINT, 15)


def by_station(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["station_id"]: r for r in result["results"]}


def test_tariffs_set_get_change_clear_through_the_gateway(stack: Stack, tmp_path: Path) -> None:
    tod, flat, dollars = tmp_path / "tod.json", tmp_path / "flat.json", tmp_path / "usd.json"
    tod.write_text(json.dumps(TOD))
    flat.write_text(json.dumps(FLAT))
    dollars.write_text(json.dumps({**FLAT, "tariffId": "USD", "currency": "USD"}))
    code, out, said = stack.tariff("set", "CS-00002", "CS-00003", "CS-00005", "CS-00004", str(tod))
    answers = by_station(out)
    assert answers["CS-00002"]["status"] == answers["CS-00003"]["status"] == "Accepted", said
    assert answers["CS-00005"]["status"] == "ConditionNotSupported"  # every fifth station prices without conditions
    assert answers["CS-00004"]["outcome"] == "refused" and "2.0.1" in answers["CS-00004"]["reason"]
    assert code == 1  # one station could not take it
    again = stack.tariff("set", "CS-00002", str(tod))[1]
    assert by_station(again)["CS-00002"]["status"] == "Accepted"  # the same tariff again
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tariffId": "B", "currency": "EUR", "energy": {"prices": [{"priceKwh": "x"}]}}))
    code, _, said = stack.tariff("set", "CS-00002", str(bad))
    assert code == 2 and "energy.prices[0].priceKwh" in said

    # the twin knows the tariff and its price now
    twin = stack.wait("the price in the twin", lambda: ((stack.twin("CS-00002") or {}).get("evses", {}).get("1") or {})
                      .get("tariff"))  # fmt: skip
    assert twin["tariff_id"] == "TOD-1" and twin["price_now"]["energy_per_kwh"] in (0.45, 0.30)
    assert twin["next_change_at"] is not None
    code, shown, _ = stack.tariff("show", "CS-00002")
    assert code == 0 and shown["evses"]["1"]["tariff"]["tariff_id"] == "TOD-1"
    assert (shown["time_zone"], shown["time_zone_known"]) == ("UTC", False)  # no clock zone set: UTC

    code, got, _ = stack.tariff("get", "CS-00003")
    answer = by_station(got)["CS-00003"]["answer"]
    assert answer["status"] == "Accepted" and answer["tariffAssignments"][0]["tariffId"] == "TOD-1"
    table = subprocess.run([*TWIN, "tariff", "get", "CS-00003", "-b", stack.bootstrap, "--api", stack.api],
                           capture_output=True, text=True, env=stack.env, timeout=90)  # fmt: skip
    said = " ".join(table.stderr.split())  # the console wraps, wherever
    assert table.returncode == 0 and "tariffs held" in said and "TOD-1 DefaultTariff" in said, table.stderr

    # a session started under the tariff: the station's local cost reaches the twin
    def costed() -> dict[str, Any] | None:
        evse = (stack.twin("CS-00003") or {}).get("evses", {}).get("2") or {}
        cost = (evse.get("transaction") or {}).get("cost")
        return evse["transaction"] if cost and cost["source"] == "local" and cost["total_excl_tax"] else None

    tx = stack.wait("a local cost", costed, timeout=120)
    assert tx["cost"]["currency"] == "EUR" and tx["cost"]["total_incl_tax"] > tx["cost"]["total_excl_tax"]
    code, changed, _ = stack.tariff("change", tx["id"], str(flat))
    assert code == 0 and by_station(changed)["CS-00003"]["status"] == "Accepted"
    assert by_station(stack.tariff("change", tx["id"], str(dollars))[1])["CS-00003"]["status"] == "NoCurrencyChange"
    missing = stack.tariff("change", "no-such-tx", str(flat), "--station", "CS-00003")[1]
    assert by_station(missing)["CS-00003"]["status"] == "TxNotFound"
    stack.wait("the driver tariff in the twin", lambda: ((stack.twin("CS-00003") or {})["evses"]["2"].get("tariff")
                                                         or {}).get("source") == "driver")  # fmt: skip

    code, cleared, _ = stack.tariff("clear", "CS-00002", "--tariff-id", "TOD-1")
    assert code == 0 and by_station(cleared)["CS-00002"]["answer"]["clearTariffsResult"] == [
        {"tariffId": "TOD-1", "status": "Accepted"}]  # fmt: skip
    code, every, said = stack.tariff("clear", "--all", "--tariff-id", "NO-SUCH")  # every 2.1 station the twin knows
    statuses = {r["station_id"]: r["status"] for r in every["results"]}
    assert code == 0 and statuses == dict.fromkeys(("CS-00001", "CS-00002", "CS-00003", "CS-00005"), "NoTariff"), said

    reader = TopicReader(stack.bootstrap, f"{stack.prefix}ocpp.frames")
    try:
        records = reader.wait(lambda rs: len(rs) > 50, timeout=30)
        for _ in range(5):
            records = reader.poll()
    finally:
        reader.close()
    tariff_frames = [r for r in records if r["action"] in ("SetDefaultTariff", "ChangeTransactionTariff",
                                                            "ClearTariffs", "GetTariffs")]  # fmt: skip
    assert len(tariff_frames) >= 14
    problems = []
    for r in records:
        if r["msg_type"] in (2, 3) and r["protocol"] == "ocpp2.1":
            kind: Kind = "Request" if r["msg_type"] == 2 else "Response"
            if (v := schemas.problem("ocpp2.1", r["action"], kind, r["payload"])) is not None:
                problems.append(f"{r['action']} {kind}: {v.reason}")
    assert not problems and all(r["valid"] for r in records if r["msg_type"] in (2, 3))
    assert any("costDetails" in r["payload"] for r in records if r["action"] == "TransactionEvent")


def test_site_names_the_stations_of_a_site(tmp_path: Path) -> None:
    """`--site SITE` sends to the site's stations (sites as `twin controller` reads them); an
    unknown site is one clear line naming the known ones."""
    from twin.cli.tariff import _targets
    from twin.settings import Settings

    sites = tmp_path / "sites.json"
    sites.write_text(json.dumps([{"site_id": "SITE-A", "ean": "871687000000000016", "import_limit_kw": 50,
                                  "export_limit_kw": 0, "stations": ["CS-1", "CS-2"]}]))  # fmt: skip
    assert _targets([], False, "SITE-A", None, Settings.load(sites=str(sites))) == ["CS-1", "CS-2"]
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps(FLAT))
    done = subprocess.run([*TWIN, "tariff", "set", "--site", "SITE-B", str(flat)], capture_output=True, text=True,
                          env={**os.environ, "TWIN_SITES": str(sites)}, timeout=60)  # fmt: skip
    assert done.returncode != 0 and "no site 'SITE-B' (sites: SITE-A)" in done.stderr
