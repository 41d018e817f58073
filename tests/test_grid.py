"""The OpenADR bridge end to end on the embedded broker: the test VTN (validated against the
OpenADR 3.1.1 OpenAPI file), `twin ven`, `twin gateway`, `twin worker`, `twin controller`
and a reactive simulated fleet as real processes. A GAC limit for a site's EAN is in
grid.signals, in force (limit_source openadr) and kept within two planning steps; a price
event makes the bidirectional EV give back; the VTN going away brings the program's
safe-mode limit once the schedule ends, and its return ends it."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.conftest import TopicReader
from tests.test_controller import LIMIT_A, SITES, SPEED, TOLERANCE_KW, TWIN, SiteStack, _accepted
from tests.test_grid_vtn import CLIENT_ID, CLIENT_SECRET, EAN_A, GAC_PROGRAM, Vtn, limit_event, price_event
from twin import runtime
from twin.broker import EmbeddedBroker, free_port

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]
SAFE_KW = 15.0
GRID_KW = 20.0


class GridStack(SiteStack):
    def __init__(self, broker: EmbeddedBroker, workdir: Any) -> None:
        super().__init__(broker, workdir, name="grid")
        self.vtn = Vtn("3.1.1").start()
        self.program = self.vtn.program(GAC_PROGRAM)
        self.vtn.event(limit_event(self.program["id"], SAFE_KW, "0001-01-01T00:00:00Z", "P9999Y", name="safe-mode"))
        self.ven_args: list[str] = []

    def signals(self, site_id: str) -> list[dict[str, Any]]:
        return (self.get(f"/v1/sites/{site_id}/signals") or {}).get("signals", [])


@pytest.fixture(scope="module")
def grid(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GridStack]:
    from tests.test_cli_processes import wait_port

    s = GridStack(broker, tmp_path_factory.mktemp("grid"))
    b = broker.bootstrap
    try:
        gateway = s.spawn("gateway", ["gateway", "-b", b, "--port", str(s.gateway_port),
                                      "--spool", str(s.workdir / "spool")])  # fmt: skip
        wait_port(s.gateway_port, gateway, s.workdir / "gateway.log")
        s.spawn("worker", ["worker", "-b", b, "--web-port", str(s.web_port), "--data-dir", str(s.workdir / "worker"),
                           "--sites", str(s.sites)])  # fmt: skip
        s.wait("the worker's API", lambda: s.get("/v1/sites"), timeout=120)
        s.ven_args = ["ven", "--vtn", s.vtn.url, "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET,
                      "--poll-s", "1", "--callback-port", str(free_port()), "--api",
                      f"http://127.0.0.1:{s.web_port}", "-b", b, "--sites", str(s.sites)]  # fmt: skip
        s.spawn("ven", s.ven_args)
        s.spawn("controller", ["controller", "-b", b, "--sites", str(s.sites), "--step-s", "60",
                               "--time-scale", str(SPEED)])  # fmt: skip
        s.spawn("simulator", ["simulate", "--live", f"ws://127.0.0.1:{s.gateway_port}/ocpp", "--stations", "5",
                              "--days", "1", "--speed", str(SPEED), "--sessions", str(s.sessions),
                              "--reject-profiles", "CS-00003"])  # fmt: skip
        yield s
    finally:
        for name in ("simulator", "controller", "ven", "worker", "gateway"):
            if name in s.procs:
                runtime.stop(s.procs[name], signal.SIGINT, 15)
        s.vtn.close()


def _at(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_limit_event_is_logged_in_force_and_kept(grid: GridStack) -> None:
    grid.wait("SITE-A's EVs to accept their profiles", lambda: _accepted(grid.site("SITE-A"), {
        "CS-00001", "CS-00002", "CS-00004"}))  # fmt: skip
    plan = grid.wait("a plan for SITE-A", lambda: grid.plan("SITE-A"))
    safe = grid.wait("the safe-mode event in grid.signals", lambda: [
        s for s in grid.signals("SITE-A") if s["payload_type"] == "SAFE_MODE_IMPORT_CAPACITY_LIMIT"])
    assert safe[0]["status"] == "accepted" and safe[0]["intervals"][0]["value"] == SAFE_KW
    start = _at(plan["planned_at"])
    grid.vtn.event(limit_event(grid.program["id"], GRID_KW, _iso(start), "PT40M"))
    site = grid.wait("SITE-A under the OpenADR limit", lambda: (lambda v: v if v and v["limit_source"] == "openadr"
                                                                else None)(grid.site("SITE-A")))  # fmt: skip
    assert site["import_limit_kw"] == GRID_KW < LIMIT_A
    ends = _at(_iso(start)) + timedelta(minutes=40)  # and after it, the static limit again
    assert site["next_intervals"][0] == {"start": ends.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "import_limit_kw": LIMIT_A,
                                         "export_limit_kw": 20.0, "limit_source": "static", "event_id": None}
    logged = [s for s in grid.signals("SITE-A") if s["protocol"] == "openadr" and s["payload_type"] ==
              "IMPORT_CAPACITY_LIMIT"]  # fmt: skip
    assert logged and logged[-1]["status"] == "accepted" and logged[-1]["ean"] == EAN_A
    import time

    time.sleep(2 * 60 / SPEED)  # two planning steps
    imports = [s["import_kw"] for s in grid.samples("SITE-A", 3) if s["limit_source"] == "openadr"]
    assert imports and max(imports) <= GRID_KW + TOLERANCE_KW, imports
    assert grid.wait("a report back to the VTN", lambda: grid.vtn.reports, timeout=30)
    # subscribed where the VTN offers it, and called back with the subscription's bearer token
    assert grid.vtn.subscriptions and "notified of CREATE EVENT" in (grid.workdir / "ven.log").read_text()
    assert grid.vtn.violations == [], grid.vtn.violations


def test_a_price_event_makes_the_bidirectional_ev_give_back(grid: GridStack) -> None:
    plan = grid.wait("a plan for SITE-A", lambda: grid.plan("SITE-A"))
    start = _at(plan["planned_at"])
    # dear for the next half hour, cheap after: worth giving back now, charging later
    prices = grid.vtn.program({"programName": "tariff"})
    grid.vtn.event(price_event(prices["id"], [2.0, 2.0] + [0.05] * 12, _iso(start), kind="PRICE"))

    def giving_back() -> dict[str, Any] | None:
        p = grid.plan("SITE-A")
        v2g = next((e for e in (p or {}).get("evses", ()) if e["station_id"] == "CS-00002"), None)
        return p if v2g and v2g["plan_kw"] < 0 else None

    plan = grid.wait("the V2G EV planned to give back on the price", giving_back, timeout=60)
    v2g = next(e for e in plan["evses"] if e["station_id"] == "CS-00002")
    assert v2g["max_discharge_kw"] > 0
    prices = [s for s in grid.signals("SITE-A") if s["payload_type"] == "PRICE"]
    assert prices and prices[-1]["status"] == "accepted" and prices[-1]["currency"] == "EUR"


def test_the_vtn_going_away_brings_safe_mode_after_the_schedule(grid: GridStack) -> None:
    plan = grid.wait("a plan for SITE-A", lambda: grid.plan("SITE-A"))
    start = _at(plan["planned_at"])
    ends = start + timedelta(minutes=10)  # ten minutes of station time: ten seconds here
    grid.vtn.event(limit_event(grid.program["id"], GRID_KW + 2, _iso(start), "PT10M"))
    grid.wait("the short schedule in force", lambda: (lambda v: v if v and v["import_limit_kw"] == GRID_KW + 2
                                                      else None)(grid.site("SITE-A")))  # fmt: skip
    for event_id in [e for e, body in grid.vtn.events.items() if body["eventName"] == "congestion"
                     and body["intervalPeriod"]["duration"] == "PT40M"]:  # fmt: skip
        grid.vtn.delete(event_id)  # the long one, so that the short one is the last schedule
        grid.wait("the deletion in grid.signals", lambda e=event_id: [  # type: ignore[misc]
            s for s in grid.signals("SITE-A") if s["event_id"] == e and s["status"] == "cancelled"])
    grid.vtn.stop()
    site = grid.wait("SITE-A in safe mode", lambda: (lambda v: v if v and v["limit_source"] == "safe-mode"
                                                     else None)(grid.site("SITE-A")), timeout=90)  # fmt: skip
    assert site["import_limit_kw"] == SAFE_KW
    safe = [s for s in grid.signals("SITE-A") if s["protocol"] == "safe-mode"]
    assert safe and safe[-1]["intervals"][0]["start"] == _iso(ends).replace("Z", ".000Z")
    down = [s for s in grid.signals("SITE-A") if s["event_id"] == "vtn-unreachable"]
    assert down and down[-1]["status"] == "rejected" and "unreachable" in down[-1]["reason"]
    alerts = TopicReader(grid.broker.bootstrap, grid.settings.topics.alerts)
    try:  # an alert for each of the site's stations
        found = alerts.wait(lambda rs: {r["station_id"] for r in rs if r["kind"] == "grid_signal" and
                                        r["detail"]["protocol"] == "safe-mode"} >= set(SITES[0]["stations"]),
                            timeout=30)  # fmt: skip
    finally:
        alerts.close()
    safe_alerts = [r for r in found if r["kind"] == "grid_signal" and r["detail"]["protocol"] == "safe-mode"]
    assert all(r["severity"] == "warning" and r["detail"]["site_id"] == "SITE-A" for r in safe_alerts)
    # the VEN restarted while the VTN is still away: it reads grid.signals back, stays in safe
    # mode without entering it twice, and (below) ends it when the VTN answers again
    runtime.stop(grid.procs.pop("ven"), signal.SIGINT, 15)
    mark = (grid.workdir / "ven.log").stat().st_size
    grid.spawn("ven", grid.ven_args)

    def restarted() -> str:
        return (grid.workdir / "ven.log").read_bytes()[mark:].decode(errors="replace")

    grid.wait("the restarted VEN to read back safe mode", lambda: "in safe mode since" in restarted(), timeout=60)
    grid.wait("the restarted VEN to fail to reach the VTN", lambda: "retrying with backoff" in restarted(), timeout=60)
    site = grid.site("SITE-A")
    assert site and (site["limit_source"], site["import_limit_kw"]) == ("safe-mode", SAFE_KW)
    assert [s for s in grid.signals("SITE-A") if s["protocol"] == "safe-mode"] == safe  # not entered twice
    grid.vtn.start()
    grid.wait("safe mode ended when the VTN answers again",
              lambda: (lambda v: v if v and v["limit_source"] != "safe-mode" else None)(grid.site("SITE-A")))
    result = subprocess.run(TWIN + ["ven", "--help"], capture_output=True, text=True, env=grid.env, timeout=60)
    assert result.returncode == 0 and "--vtn" in result.stdout
