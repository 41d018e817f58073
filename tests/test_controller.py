"""The controller end to end on the embedded broker: `twin gateway`, `twin worker`, `twin
controller` and a reactive simulated fleet (`twin simulate --live --sessions`) as real
processes. Sites whose limits bind; profiles accepted and obeyed; a station that rejects
them, planned around; a V2G EV giving back when the site is asked to export."""

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

from tests.conftest import TopicReader, fresh_prefix
from tests.test_cli_processes import wait_port
from twin import runtime
from twin.broker import EmbeddedBroker, free_port
from twin.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]
TWIN = [sys.executable, "-m", "twin"]
SPEED = 60  # simulated seconds per second: a planning step of 60 s is one second here
LIMIT_A, LIMIT_B = 30.0, 45.0
TOLERANCE_KW = 0.5  # profiles are in steps of 100 W per EVSE
SITES = [
    {"site_id": "SITE-A", "ean": "871687000000000016", "import_limit_kw": LIMIT_A, "export_limit_kw": 20,
     "stations": ["CS-00001", "CS-00002", "CS-00004"]},
    {"site_id": "SITE-B", "ean": "871687000000000023", "import_limit_kw": LIMIT_B, "export_limit_kw": 0,
     "stations": ["CS-00003", "CS-00005"]},
]  # fmt: skip
# The fleet by index: CS-00001 DC 2.1, CS-00002 AC 2.1 bidirectional, CS-00003 DC 2.1 (rejects
# every profile here), CS-00004 AC 2.0.1, CS-00005 AC 2.1. Together they want 113 kW.
SESSIONS = """session_id,evse_id,arrival,departure,energy_kwh,max_kw,v2g,max_discharge_kw
S1,CS-00001:1,2026-03-02T08:00:00Z,2026-03-02T11:00:00Z,40,50,false,0
S2,CS-00002:1,2026-03-02T08:00:00Z,2026-03-02T11:00:00Z,20,11,true,11
S3,CS-00004:1,2026-03-02T08:00:00Z,2026-03-02T11:00:00Z,20,11,false,0
S4,CS-00003:1,2026-03-02T08:00:00Z,2026-03-02T11:00:00Z,40,40,false,0
S5,CS-00005:1,2026-03-02T08:00:00Z,2026-03-02T11:00:00Z,20,11,false,0
"""


class SiteStack:
    def __init__(self, broker: EmbeddedBroker, workdir: Path, name: str = "ctl") -> None:
        self.broker, self.workdir = broker, workdir
        self.prefix = fresh_prefix(name)
        self.settings = Settings(bootstrap=broker.bootstrap, topic_prefix=self.prefix, partitions=2)
        self.env = {**os.environ, "TWIN_TOPIC_PREFIX": self.prefix, "TWIN_PARTITIONS": "2"}
        self.gateway_port, self.web_port = free_port(), free_port()
        self.sites = workdir / "sites.json"
        self.sites.write_text(json.dumps(SITES))
        self.sessions = workdir / "sessions.csv"
        self.sessions.write_text(SESSIONS)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(TWIN + args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self.procs[name]

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text()[-4000:]

    def get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=5) as response:
                return json.loads(response.read())
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
        raise AssertionError(f"timed out waiting for {what}\ncontroller:\n{self.log('controller')}\n"
                             f"simulator:\n{self.log('simulator')}")  # fmt: skip

    def site(self, site_id: str) -> dict[str, Any] | None:
        site = self.get(f"/v1/sites/{site_id}")
        return site if site and "error" not in site else None

    def plan(self, site_id: str) -> dict[str, Any] | None:
        plan = self.get(f"/v1/sites/{site_id}/plan")
        return plan if plan and "error" not in plan else None

    def samples(self, site_id: str, seconds: float) -> list[dict[str, Any]]:
        out = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            site = self.site(site_id)
            if site:
                out.append(site)
            time.sleep(0.25)
        return out


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteStack]:
    s = SiteStack(broker, tmp_path_factory.mktemp("controller"))
    b = broker.bootstrap
    try:
        gateway = s.spawn("gateway", ["gateway", "-b", b, "--port", str(s.gateway_port),
                                      "--spool", str(s.workdir / "spool")])  # fmt: skip
        wait_port(s.gateway_port, gateway, s.workdir / "gateway.log")
        s.spawn("worker", ["worker", "-b", b, "--web-port", str(s.web_port), "--data-dir", str(s.workdir / "worker"),
                           "--sites", str(s.sites)])  # fmt: skip
        s.wait("the worker's API", lambda: s.get("/v1/sites"), timeout=120)
        s.spawn("controller", ["controller", "-b", b, "--sites", str(s.sites), "--step-s", "60",
                               "--time-scale", str(SPEED)])  # fmt: skip
        s.spawn("simulator", ["simulate", "--live", f"ws://127.0.0.1:{s.gateway_port}/ocpp", "--stations", "5",
                              "--days", "1", "--speed", str(SPEED), "--sessions", str(s.sessions),
                              "--reject-profiles", "CS-00003"])  # fmt: skip
        yield s
    finally:
        for name in ("simulator", "controller", "worker", "gateway"):
            if name in s.procs:
                runtime.stop(s.procs[name], signal.SIGINT, 15)


def _accepted(site: dict[str, Any] | None, stations: set[str]) -> bool:
    if not site:
        return False
    status = {e["station_id"]: e["profile_status"] for e in site["evses"] if e["evse_id"] == 1}
    return all(status.get(st) == "Accepted" for st in stations)


def test_a_site_whose_limit_binds_stays_under_it(stack: SiteStack) -> None:
    site = stack.wait("SITE-A's EVs to accept their profiles",
                      lambda: (lambda v: v if _accepted(v, {"CS-00001", "CS-00002", "CS-00004"}) else None)(
                          stack.site("SITE-A")))  # fmt: skip
    assert site["limit_source"] == "static" and site["import_limit_kw"] == LIMIT_A
    plan = stack.plan("SITE-A")
    assert plan is not None and plan["plan_import_kw"] <= LIMIT_A + 1e-6
    assert {(e["station_id"], e["evse_id"]) for e in plan["evses"]} == {("CS-00001", 1), ("CS-00002", 1),
                                                                         ("CS-00004", 1)}  # fmt: skip
    time.sleep(2 * 60 / SPEED)  # two planning steps
    seen = stack.samples("SITE-A", 4)
    imports = [s["import_kw"] for s in seen]
    assert imports and max(imports) <= LIMIT_A + TOLERANCE_KW, imports
    assert max(imports) >= LIMIT_A * 0.8, f"the limit is used, not left idle: {imports}"
    by_evse = {(e["station_id"], e["evse_id"]): e for e in seen[-1]["evses"]}
    assert by_evse[("CS-00004", 1)]["plan_kw"] is not None  # the 2.0.1 station is planned too


def test_a_station_that_rejects_profiles_is_planned_around(stack: SiteStack) -> None:
    def rejected() -> dict[str, Any] | None:
        plan = stack.plan("SITE-B")
        if not plan:
            return None
        rows = {e["station_id"]: e for e in plan["evses"]}
        refusing = rows.get("CS-00003")
        return plan if refusing and not refusing["obeys"] and "CS-00005" in rows else None

    plan = stack.wait("SITE-B's plan around the refusing station", rejected)
    rows = {e["station_id"]: e for e in plan["evses"]}
    assert rows["CS-00003"]["profile_status"] == "Rejected"
    assert plan["fixed_kw"] == pytest.approx(40.0)  # counted at its maximum
    assert rows["CS-00005"]["plan_kw"] <= LIMIT_B - 40.0 + 1e-6
    assert "did not take the last profile" in rows["CS-00003"]["why"]
    site = stack.site("SITE-B")
    assert site is not None
    assert {e["station_id"]: e["profile_status"] for e in site["evses"] if e["evse_id"] == 1}["CS-00003"] == "Rejected"
    alerts = TopicReader(stack.broker.bootstrap, stack.settings.topics.alerts)
    try:
        found = alerts.wait(lambda rs: any(r["station_id"] == "CS-00003" and r["kind"] == "smart_charging"
                                           for r in rs), timeout=20)  # fmt: skip
    finally:
        alerts.close()
    alert = next(r for r in found if r["station_id"] == "CS-00003" and r["kind"] == "smart_charging")
    assert alert["detail"]["status"] == "Rejected" and alert["detail"]["evse_id"] == "1"
    time.sleep(2 * 60 / SPEED)
    imports = [s["import_kw"] for s in stack.samples("SITE-B", 3)]
    assert imports and max(imports) <= LIMIT_B + TOLERANCE_KW, imports


def test_a_v2g_ev_gives_back_when_the_site_is_asked_to_export(stack: SiteStack) -> None:
    plan = stack.wait("a plan for SITE-A", lambda: stack.plan("SITE-A"))
    result = subprocess.run(TWIN + ["control", "limit", "SITE-A", "--import-kw", "-5", "--for", "90", "--start",
                                    plan["planned_at"], "-b", stack.broker.bootstrap, "--json"],
                            capture_output=True, text=True, env=stack.env, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr

    def giving_back() -> dict[str, Any] | None:
        p = stack.plan("SITE-A")
        if not p or p["limit"]["source"] != "operator":
            return None
        v2g = next((e for e in p["evses"] if e["station_id"] == "CS-00002"), None)
        return p if v2g and v2g["plan_kw"] < 0 else None

    plan = stack.wait("the V2G EV to be planned to give back", giving_back, timeout=60)
    assert plan["limit"]["import_kw"] == -5.0
    v2g = next(e for e in plan["evses"] if e["station_id"] == "CS-00002")
    assert v2g["max_discharge_kw"] > 0 and "gives back" in v2g["why"]
    # its minimum energy is still planned by its departure
    schedule = v2g["schedule"]
    departure_s = (_epoch(v2g["departure"]) - _epoch(plan["planned_at"]))
    planned = sum(kw * (min(end, departure_s) - start) / 3600 for (start, kw), end in
                  zip(schedule, [s for s, _ in schedule[1:]] + [departure_s], strict=True) if start < departure_s)
    assert planned >= v2g["min_kwh"] - 0.1, (planned, v2g)
    others = [e for e in plan["evses"] if e["station_id"] != "CS-00002"]
    assert all(e["plan_kw"] <= 1e-3 for e in others)  # nobody imports while the site must export

    def discharging() -> dict[str, Any] | None:
        site = stack.site("SITE-A")
        rows = {e["station_id"]: e for e in (site or {}).get("evses", ()) if e["evse_id"] == 1}
        v = rows.get("CS-00002")
        return site if v and v["power_kw"] < 0 and v["direction"] == "discharging" else None

    site = stack.wait("CS-00002 to discharge", discharging, timeout=30)
    assert site["export_kw"] > 0 and site["limit_source"] == "operator"
    signals = stack.get("/v1/sites/SITE-A/signals")
    assert signals and any(s["payload_type"] == "IMPORT_CAPACITY_LIMIT" and s["protocol"] == "operator"
                           for s in signals["signals"])  # fmt: skip


def _epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_the_grid_page_shows_each_site_its_limit_and_plan(stack: SiteStack, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:  # fmt: skip
    """The dashboard's Grid & smart charging page, run by AppTest against the worker's API:
    both sites, SITE-A under an operator's limit (and until when), each EVSE's plan and
    profile status, and CS-00003's refusal on SITE-B."""
    from streamlit.testing.v1 import AppTest

    def refused() -> dict[str, Any] | None:
        plan = stack.plan("SITE-B")
        rows = {e["station_id"]: e for e in (plan or {}).get("evses", ())}
        refusing = rows.get("CS-00003")
        return plan if refusing and refusing["profile_status"] == "Rejected" and not refusing["obeys"] else None

    stack.wait("SITE-B's plan around the refusing station", refused)
    plan = stack.wait("a plan for SITE-A", lambda: stack.plan("SITE-A"))
    result = subprocess.run(TWIN + ["control", "limit", "SITE-A", "--import-kw", "25", "--for", "600", "--start",
                                    plan["planned_at"], "-b", stack.broker.bootstrap, "--json"],
                            capture_output=True, text=True, env=stack.env, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr

    def planned_under_the_operator() -> dict[str, Any] | None:
        p = stack.plan("SITE-A")
        site = stack.site("SITE-A")
        if not p or not site or p["limit"]["source"] != "operator" or p["limit"]["import_kw"] != 25.0:
            return None
        return p if site["limit_source"] == "operator" and len(p["evses"]) == 3 else None

    stack.wait("SITE-A planned under the operator's 25 kW", planned_under_the_operator, timeout=60)
    monkeypatch.setenv("TWIN_API", f"http://127.0.0.1:{stack.web_port}")
    monkeypatch.setenv("TWIN_ARCHIVE", str(tmp_path / "none"))
    page = Path(__file__).resolve().parent.parent / "dashboards" / "pages" / "grid.py"
    at = AppTest.from_file(str(page), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]

    sites = at.dataframe[0].value.set_index("site")
    assert list(sites.index) == ["SITE-A", "SITE-B"]
    assert (sites.loc["SITE-A", "limit_kw"], sites.loc["SITE-A", "source"]) == (25.0, "operator")
    assert (sites.loc["SITE-B", "limit_kw"], sites.loc["SITE-B", "source"]) == (LIMIT_B, "static")
    assert sites.loc["SITE-B", "profiles not accepted"] == 1  # CS-00003
    said = " ".join(i.value for i in at.info)
    assert "An operator's limit" in said and "import at most 25.0 kW" in said and " until 20" in said, said
    assert f"static limits are import {LIMIT_A:.1f} kW" in said, said
    shown = {m.label: m.value for m in at.metric}
    assert shown["Import limit in force"] == "25.0 kW" and shown["Import now"].endswith(" kW")
    assert any("Plan " in c.value and "planned at" in c.value for c in at.caption)
    evses = at.dataframe[1].value
    rows = {(r.station, r.evse): r for r in evses.itertuples()}
    for key in (("CS-00001", 1), ("CS-00002", 1), ("CS-00004", 1)):
        row = rows[key]
        assert row.plan_kw >= 0 and row.needs_kwh >= 0 and row.departure and row.why.startswith("needs "), row
        assert row.profile_status == "Accepted", row
    assert len(at.get("vega_lite_chart")) == 1  # the site's planned power against its limit

    at.selectbox(key="grid_site").set_value("SITE-B").run()
    assert not at.exception, [e.value for e in at.exception]
    rows = {(r.station, r.evse): r for r in at.dataframe[1].value.itertuples()}
    refusing = rows[("CS-00003", 1)]
    assert refusing.profile_status == "Rejected" and "did not take the last profile" in refusing.why
    assert rows[("CS-00005", 1)].profile_status == "Accepted"
    assert any("static limits are in force" in c.value for c in at.caption)
