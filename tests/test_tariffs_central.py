"""Central cost end to end: `twin gateway`, `twin worker`, `twin controller --central-cost` and
a live simulated fleet in which CS-00002 computes no cost (`--central-cost-stations`). The
controller sends CS-00002's running cost as CostUpdated, worked out with
twin.cost.session_cost from the readings in its twin, and its final cost once a transaction
ended, which the station keeps; CS-00003 reports its own cost and is sent none. CS-00002's
clock is set to Europe/Berlin and its EVSE 2 priced by time of day: a session there straddles
11:00 Berlin (10:00 UTC) and is billed as `twin report tariffs` recomputes it. Every frame is
valid for 2.1."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Broker, TopicReader
from tests.test_cli_processes import wait_port
from tests.test_tariffs_live import Stack
from twin import runtime, schemas
from twin.control.cost import cost_updates, final_costs, running_cost
from twin.cost import Sample, session_cost
from twin.schemas import Kind
from twin.tariffs import instant

pytestmark = pytest.mark.one_engine  # see tests/conftest.py

SPEED = 60
TARIFF = {"tariffId": "CENTRAL-1", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.40}],
                                                                 "taxRates": [{"type": "VAT", "tax": 20}]},
          "fixedFee": {"prices": [{"priceFixed": 1.00}], "taxRates": [{"type": "VAT", "tax": 20}]}}  # fmt: skip
# the first visit comes a simulated minute after the start; those at 08:40 forty simulated
# minutes later (40 s here), once the tariff is set
SESSIONS = """session_id,evse_id,arrival,departure,energy_kwh,max_kw,v2g,max_discharge_kw
S0,CS-00001:1,2026-03-02T08:00:00Z,2026-03-02T08:05:00Z,1,11,false,0
S1,CS-00002:1,2026-03-02T08:40:00Z,2026-03-02T10:30:00Z,10,11,false,0
S2,CS-00003:1,2026-03-02T08:40:00Z,2026-03-02T10:30:00Z,10,50,false,0
S3,CS-00002:2,2026-03-02T09:40:00Z,2026-03-02T10:40:00Z,10,11,false,0
"""
ZONED: dict[str, Any] = {}
"""S3's tariff, made when the fleet starts (its clock starts then: S0 a minute later, S3 at 101
minutes, charging for 55 minutes at least): 0.30 a kWh, 0.50 from 128 minutes on, a time of
day in Berlin (UTC+1 in winter, +2 in summer), so read in UTC the change would come after S3."""


def zoned(start: datetime) -> tuple[dict[str, Any], datetime]:
    from zoneinfo import ZoneInfo

    change = (start + timedelta(minutes=128)).astimezone(ZoneInfo("Europe/Berlin")).replace(second=0, microsecond=0)
    until = change + timedelta(hours=12)
    tariff = {"tariffId": "ZONED-1", "currency": "EUR",
              "energy": {"prices": [{"priceKwh": 0.50, "conditions": {"startTimeOfDay": change.strftime("%H:%M"),
                                                                      "endTimeOfDay": until.strftime("%H:%M")}},
                                    {"priceKwh": 0.30}], "taxRates": [{"type": "VAT", "tax": 20}]}}  # fmt: skip
    return tariff, change


@pytest.fixture(scope="module")
def stack(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(broker, tmp_path_factory.mktemp("central"))
    b = broker.bootstrap
    (s.workdir / "sessions.csv").write_text(SESSIONS)
    try:
        gateway = s.spawn("gateway", ["gateway", "-b", b, "--port", str(s.gateway_port),
                                      "--spool", str(s.workdir / "spool")])  # fmt: skip
        wait_port(s.gateway_port, gateway, s.workdir / "gateway.log")
        s.spawn("worker", ["worker", "-b", b, "--web-port", str(s.web_port), "--data-dir", str(s.workdir / "worker"),
                           "--archive", str(s.workdir / "archive")])  # fmt: skip
        s.spawn("controller", ["controller", "-b", b, "--archive", str(s.workdir / "archive"), "--central-cost",
                               "--cost-interval-s", "60", "--time-scale", str(SPEED)])  # fmt: skip
        ZONED["tariff"], ZONED["change"] = zoned(datetime.now(UTC))
        s.spawn("simulator", ["simulate", "--live", f"ws://127.0.0.1:{s.gateway_port}/ocpp", "--stations", "3",
                              "--days", "1", "--speed", str(SPEED), "--sessions", str(s.workdir / "sessions.csv"),
                              "--central-cost-stations", "CS-00002"])  # fmt: skip
        for station in ("CS-00001", "CS-00002", "CS-00003"):
            s.wait(f"{station}'s twin", lambda st=station: (s.twin(st) or {}).get("evses"), timeout=120)  # type: ignore[misc]
        (s.workdir / "zoned.json").write_text(json.dumps(ZONED["tariff"]))  # before S3 comes (100 s here)
        for args in (("zone", "CS-00002", "Europe/Berlin"), ("set", "CS-00002", "--evse", "2",
                                                             str(s.workdir / "zoned.json"))):  # fmt: skip
            code, out, said = s.tariff(*args)
            assert code == 0 and {r["status"] for r in out["results"]} == {"Accepted"}, said
        yield s
    finally:
        for name in ("simulator", "controller", "worker", "gateway"):
            if name in s.procs:
                runtime.stop(s.procs[name], signal.SIGINT, 15)


def test_the_controller_sends_the_running_cost_of_stations_without_local_cost(stack: Stack, tmp_path: Path) -> None:
    tariff = tmp_path / "central.json"
    tariff.write_text(json.dumps(TARIFF))
    code, out, said = stack.tariff("set", "CS-00002", "CS-00003", str(tariff))
    assert code == 0 and {r["status"] for r in out["results"]} == {"Accepted"}, said

    def central() -> dict[str, Any] | None:
        tx = ((stack.twin("CS-00002") or {}).get("evses", {}).get("1") or {}).get("transaction") or {}
        cost = tx.get("cost") or {}
        return tx if cost.get("source") == "central" and (cost.get("total_incl_tax") or 0) > 1.50 else None

    tx = stack.wait("a central cost in CS-00002's twin", central, timeout=150)
    assert tx["cost"]["currency"] == "EUR" and tx["cost"]["final"] is False
    assert [t["tariff"]["tariffId"] for t in tx["tariffs"].values()] == ["CENTRAL-1"]
    local = stack.wait("CS-00003's own cost", lambda: (((stack.twin("CS-00003") or {}).get("evses", {}).get("1") or {})
                                                       .get("transaction") or {}).get("cost"))  # fmt: skip
    assert local["source"] == "local"

    reader = TopicReader(stack.bootstrap, f"{stack.prefix}ocpp.frames")
    try:
        records = reader.wait(lambda rs: sum(r["action"] == "CostUpdated" and r["msg_type"] == 3 for r in rs) >= 3,
                              timeout=60)  # fmt: skip
        for _ in range(5):
            records = reader.poll()
    finally:
        reader.close()
    calls = [r for r in records if r["action"] == "CostUpdated" and r["msg_type"] == 2]
    assert {r["station_id"] for r in calls} == {"CS-00002"}, "CS-00003 computes its own cost"
    assert all(r["origin"] == "csms" for r in calls)
    answered = {(r["conn_id"], r["msg_id"]) for r in records if r["action"] == "CostUpdated" and r["msg_type"] == 3}
    assert all((r["conn_id"], r["msg_id"]) in answered for r in calls[:-1])

    # each amount is session_cost of the energy CS-00002 had reported by then
    mine = [r["payload"] for r in records if r["action"] == "TransactionEvent" and r["msg_type"] == 2
            and r["payload"]["transactionInfo"]["transactionId"] == tx["id"]]  # fmt: skip
    assert not any("costDetails" in p for p in mine), "a station without local cost"
    started = next(p for p in mine if p["eventType"] == "Started")
    start, first_wh = instant(started["timestamp"]), register(started)
    possible = set()
    for p in mine:
        at, wh = instant(p["meterValue"][0]["timestamp"]), register(p)
        cost = session_cost(TARIFF, start, [Sample(at, wh - first_wh)], end=at)
        assert cost.total_incl_tax == pytest.approx((1.00 + 0.40 * (wh - first_wh) / 1000) * 1.2)
        possible.add(round(cost.total_incl_tax, 4))
    sent = [c["payload"]["totalCost"] for c in calls if c["payload"]["transactionId"] == tx["id"]]
    assert len(sent) >= 3 and set(sent) <= possible, (sent, sorted(possible))
    assert sent == sorted(sent), "the cost only grows"

    def sent_since() -> list[float]:
        """What the controller sent for this session so far: it goes on sending while the
        twin is read, so the twin may already hold an amount sent after ``records``."""
        reader = TopicReader(stack.bootstrap, f"{stack.prefix}ocpp.frames")
        try:
            latest = reader.wait(lambda rs: len(rs) >= len(records), timeout=30)
        finally:
            reader.close()
        return [r["payload"]["totalCost"] for r in latest if r["action"] == "CostUpdated" and r["msg_type"] == 2
                and r["payload"]["transactionId"] == tx["id"]]  # fmt: skip

    stack.wait("the twin's cost is one the controller sent", lambda: central_total(stack) in sent_since())

    problems = []
    for r in records:
        if r["msg_type"] in (2, 3) and r["protocol"] == "ocpp2.1":
            kind: Kind = "Request" if r["msg_type"] == 2 else "Response"
            if (v := schemas.problem("ocpp2.1", r["action"], kind, r["payload"])) is not None:
                problems.append(f"{r['action']} {kind}: {v.reason}")
    assert not problems and all(r["valid"] for r in records if r["msg_type"] in (2, 3))


def test_the_final_cost_goes_to_the_station_cut_at_its_local_time(stack: Stack) -> None:
    """S3 on CS-00002's EVSE 2 charges across its tariff's change, a time of day in Berlin. Once
    it ended the controller sends its final cost: session_cost of its readings in the log, in
    Berlin time (read in UTC it would all be at 0.30), the cost `twin report tariffs`
    recomputes. The twin shows it final, the station keeps it."""
    import subprocess
    import sys

    def ended() -> dict[str, Any] | None:
        tx = ((stack.twin("CS-00002") or {}).get("evses", {}).get("2") or {}).get("transaction") or {}
        return tx if (tx.get("cost") or {}).get("final") else None

    tx = stack.wait("S3's final cost in CS-00002's twin", ended, timeout=240)
    assert tx["state"] == "ended" and tx["cost"]["source"] == "central"
    assert (stack.twin("CS-00002") or {})["tariffs"]["time_zone"] == "Europe/Berlin"
    reader = TopicReader(stack.bootstrap, f"{stack.prefix}ocpp.frames")
    try:
        records = reader.wait(lambda rs: any(r["action"] == "CostUpdated" and r["msg_type"] == 3 and r["ts"] >=
                                             tx["cost"]["updated_at"] for r in rs), timeout=60)  # fmt: skip
        for _ in range(3):
            records = reader.poll()
    finally:
        reader.close()
    mine = [r for r in records if r["action"] == "TransactionEvent" and r["msg_type"] == 2
            and r["payload"]["transactionInfo"]["transactionId"] == tx["id"]]  # fmt: skip
    end = next(r for r in mine if r["payload"]["eventType"] == "Ended")
    costs = [r for r in records if r["action"] == "CostUpdated" and r["msg_type"] == 2
             and r["payload"]["transactionId"] == tx["id"]]  # fmt: skip
    final = costs[-1]
    assert final["origin"] == "csms" and final["ts"] > end["ts"], "sent after the Ended event"
    assert final["payload"]["totalCost"] == tx["cost"]["total_incl_tax"]

    started = next(r["payload"] for r in mine if r["payload"]["eventType"] == "Started")
    start, base = instant(started["timestamp"]), register(started)
    samples = [Sample(instant(r["payload"]["meterValue"][0]["timestamp"]), register(r["payload"]) - base)
               for r in mine if r["payload"]["eventType"] != "Started"]  # fmt: skip
    stop = instant(end["payload"]["timestamp"])
    berlin = session_cost(ZONED["tariff"], start, samples, end=stop, tz="Europe/Berlin").total_incl_tax
    utc = session_cost(ZONED["tariff"], start, samples, end=stop).total_incl_tax
    assert start < ZONED["change"] < samples[-1].at, "the session straddles the change in Berlin"
    assert final["payload"]["totalCost"] == pytest.approx(berlin, abs=1e-4) and abs(berlin - (utc or 0)) > 0.05

    deadline = time.monotonic() + 120  # the fleet's day ends 2 simulated minutes after S3: it says what it kept
    while stack.procs["simulator"].poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    said = stack.log("simulator")
    assert re.search(r"reconnects, [1-9][0-9]* final costs from the CSMS", said), said
    stack.procs.pop("simulator")  # done: the others still run
    report = stack.wait("the archive's report of S3", lambda: next(
        (s for s in json.loads(subprocess.run([sys.executable, "-m", "twin", "report", "tariffs", "--archive",
                                                str(stack.workdir / "archive"), "--json"], capture_output=True,
                                               text=True, timeout=120).stdout or "{}").get("sessions", ())
         if s["transaction_id"] == tx["id"] and s["ended_at"]), None), timeout=120)  # fmt: skip
    assert report["time_zone"] == "Europe/Berlin" and report["reported_source"] == "central"
    assert report["reported_incl_tax"] == report["reported"]  # CostUpdated's totalCost includes taxes
    assert report["recomputed_incl_tax"] == pytest.approx(berlin, abs=1e-4) and report["difference"] == pytest.approx(
        0.0, abs=1e-3)  # fmt: skip


def register(payload: dict[str, Any]) -> float:
    values = payload["meterValue"][0]["sampledValue"]
    return float(next(v["value"] for v in values if v.get("measurand") == "Energy.Active.Import.Register"
                      and "phase" not in v))  # fmt: skip


def central_total(stack: Stack) -> float | None:
    tx = ((stack.twin("CS-00002") or {}).get("evses", {}).get("1") or {}).get("transaction") or {}
    return (tx.get("cost") or {}).get("total_incl_tax")


# -- the pure function ---------------------------------------------------------------------------------


def twin(cost: dict[str, Any] | None = None, online: bool = True, state: str = "updated") -> dict[str, Any]:
    tx = {"id": "T1", "state": state, "started_at": "2026-03-02T10:00:00.000Z", "import_wh": 5000.0,
          "tariffs": {"1": {"tariff": TARIFF, "set_at": "2026-03-02T10:00:00.000Z"}}}  # fmt: skip
    if cost is not None:
        tx["cost"] = cost
    energy = {"meter_ts": "2026-03-02T10:30:00.000Z", "direction": "charging", "since": "2026-03-02T10:00:00.000Z"}
    return {"connection": {"online": online}, "evses": {"1": {"transaction": tx, "energy": energy}}}


def test_cost_updates_worked_out_by_hand() -> None:
    """5 kWh at 0.40 and a 1.00 fee, 20% VAT: (1.00 + 2.00) x 1.2 = 3.60. Due first at once, then
    after the interval and only when the total changed; never for a station's own cost, an
    ended transaction or a station offline."""
    now = datetime.fromisoformat("2026-03-02T10:31:00+00:00")
    assert cost_updates({"CS-1": twin()}, now, {}, 60) == [("CS-1", {"totalCost": 3.6, "transactionId": "T1"})]
    just = datetime.fromisoformat("2026-03-02T10:30:30+00:00")
    assert cost_updates({"CS-1": twin()}, now, {"T1": (just, 3.0)}, 60) == []  # within the interval
    earlier = datetime.fromisoformat("2026-03-02T10:29:00+00:00")
    assert cost_updates({"CS-1": twin()}, now, {"T1": (earlier, 3.6)}, 60) == []  # unchanged
    assert len(cost_updates({"CS-1": twin()}, now, {"T1": (earlier, 3.0)}, 60)) == 1
    assert cost_updates({"CS-1": twin({"source": "local"})}, now, {}, 60) == []
    assert cost_updates({"CS-1": twin(state="ended")}, now, {}, 60) == []
    assert cost_updates({"CS-1": twin(online=False)}, now, {}, 60) == []
    assert len(cost_updates({"CS-1": twin({"source": "central"})}, now, {}, 60)) == 1


def test_idle_time_in_the_twin_is_priced_as_idle() -> None:
    """Charged 5 kWh from 10:00 to 10:20, idle since: 10 idle minutes at 0.10 by 10:30, 20% VAT on all."""
    idle = {**TARIFF, "idleTime": {"prices": [{"priceMinute": 0.10}], "taxRates": [{"type": "VAT", "tax": 20}]}}
    tx = {"id": "T1", "started_at": "2026-03-02T10:00:00Z", "import_wh": 5000.0,
          "tariffs": {"1": {"tariff": idle, "set_at": "2026-03-02T10:00:00Z"}}}  # fmt: skip
    energy = {"meter_ts": "2026-03-02T10:30:00Z", "direction": "idle", "since": "2026-03-02T10:20:00Z"}
    total, at = running_cost(tx, energy) or (None, None)
    assert total == pytest.approx(3.6 + 1.2) and at == instant("2026-03-02T10:30:00Z")


# -- one code path: central cost, the twin and the report cut a session alike ---------------------------

TOD_VAT = {"tariffId": "TOD-Z", "currency": "EUR",
           "energy": {"prices": [{"priceKwh": 0.40, "conditions": {"startTimeOfDay": "07:00", "endTimeOfDay": "22:00"}},
                                 {"priceKwh": 0.25}], "taxRates": [{"type": "VAT", "tax": 20}]}}  # fmt: skip
CLOCK = {"setVariableData": [{"component": {"name": "ClockCtrlr"}, "variable": {"name": "TimeZone"},
                              "attributeValue": "Europe/Berlin"}]}  # fmt: skip
CLOCK_OK = {"setVariableResult": [{"attributeStatus": "Accepted", "component": {"name": "ClockCtrlr"},
                                   "variable": {"name": "TimeZone"}}]}  # fmt: skip


def straddling() -> Any:
    """Sunday 1 March 2026, Berlin: a session from 20:00 to 22:30 UTC, 3 kWh each 10 minutes read
    at :05, :15, ... from 20:05 to 21:55 UTC (36 kWh), idle after; the day price (0.40) ends at
    22:00 Berlin, 21:00 UTC, between the readings of 20:55 and 21:05."""
    from tests.scenarios import Script

    s = Script("SC-CC").connect().boot().status(1, "Available")
    s.csms("SetVariables", CLOCK, CLOCK_OK)
    s.csms("SetDefaultTariff", {"evseId": 0, "tariff": TOD_VAT}, {"status": "Accepted"})
    s.at(12 * 60).tx("Started", "TZ1", 0, imp=100_000)
    seq = 1
    for m in range(5, 125, 10):
        s.at(12 * 60 + m).tx("Updated", "TZ1", seq, imp=100_000 + 300 * m)
        seq += 1
    s.at(14 * 60 + 30).tx("Ended", "TZ1", seq, imp=100_000 + 300 * 115)
    return s


def test_central_cost_cuts_at_the_local_boundary_as_the_report_does(tmp_path: Path) -> None:
    """By hand: 60 minutes at 0.40 from 20:00 to 21:00 UTC (interpolated between 20:55 and 21:05:
    18 kWh), then 16.5 kWh at 0.25 to 21:55; 20% VAT: (7.20 + 4.125) x 1.2 = 13.59. Read in UTC
    the day price would run to 22:00 UTC: 34.5 kWh at 0.40."""
    import subprocess
    import sys

    import orjson

    from twin.fold import fold, public
    from twin.tariffs import station_zone

    s = straddling()
    twins = {k: public(v) for k, v in fold(s.records).items()}
    t = twins["SC-CC"]
    tx, energy = t["evses"]["1"]["transaction"], t["evses"]["1"]["energy"]
    assert station_zone(t) == "Europe/Berlin" and tx["state"] == "ended"
    assert [r[0][11:16] for r in tx["readings"]] == ["20:55", "21:05", "21:55", "22:30"]  # the others merged
    total, at = running_cost(tx, energy, station_zone(t)) or (None, None)
    assert total == pytest.approx(13.59) and at == instant("2026-03-01T22:30:00Z")
    assert running_cost(tx, energy) == (round((34.5 * 0.40) * 1.2, 4), at)  # the zone matters
    now = instant("2026-03-01T22:31:00Z")
    assert final_costs(twins, now, {}, 300) == [("SC-CC", {"totalCost": 13.59, "transactionId": "TZ1"})]
    assert final_costs(twins, now, {"TZ1": now}, 300) == []  # sent: waiting for the twin to show it
    later = now + timedelta(seconds=301)
    assert len(final_costs(twins, later, {"TZ1": now}, 300)) == 1  # not shown yet: the call was lost, again
    assert final_costs(twins, instant("2026-03-02T12:00:00Z"), {}, 300) == []  # ended too long ago
    assert cost_updates(twins, now, {}, 60) == []  # ended: no running cost

    capture = tmp_path / "cc.jsonl"
    capture.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in s.records))
    done = subprocess.run([sys.executable, "-m", "twin", "report", "tariffs", "--archive", str(capture), "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    session = json.loads(done.stdout)["sessions"][0]
    assert session["time_zone"] == "Europe/Berlin" and session["recomputed_incl_tax"] == pytest.approx(13.59)

    s.at(14 * 60 + 31).csms("CostUpdated", {"transactionId": "TZ1", "totalCost": 13.59}, {})
    after = public(fold(s.records)["SC-CC"])
    cost = after["evses"]["1"]["transaction"]["cost"]
    assert (cost["source"], cost["final"], cost["total_incl_tax"]) == ("central", True, 13.59)
    assert final_costs({"SC-CC": after}, later, {}, 300) == [], "the twin shows the final cost"
    local = {"SC-CC": {**after, "evses": {"1": {**after["evses"]["1"], "transaction": {**tx, "cost": {
        "source": "local", "final": True}}}}}}  # fmt: skip
    assert final_costs(local, now, {}, 300) == []
