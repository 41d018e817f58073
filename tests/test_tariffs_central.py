"""Central cost end to end: `twin gateway`, `twin worker`, `twin controller --central-cost` and
a live simulated fleet in which CS-00002 computes no cost (`--central-cost-stations`). The
controller sends CS-00002's running cost as CostUpdated, worked out with
twin.cost.session_cost from the energy in its twin; CS-00003 reports its own cost and is
sent none. Every frame is valid for 2.1."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Broker, TopicReader
from tests.test_cli_processes import wait_port
from tests.test_tariffs_live import Stack
from twin import runtime, schemas
from twin.control.cost import cost_updates, running_cost
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
"""


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
        s.spawn("simulator", ["simulate", "--live", f"ws://127.0.0.1:{s.gateway_port}/ocpp", "--stations", "3",
                              "--days", "1", "--speed", str(SPEED), "--sessions", str(s.workdir / "sessions.csv"),
                              "--central-cost-stations", "CS-00002"])  # fmt: skip
        for station in ("CS-00001", "CS-00002", "CS-00003"):
            s.wait(f"{station}'s twin", lambda st=station: (s.twin(st) or {}).get("evses"), timeout=120)  # type: ignore[misc]
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
    stack.wait("the twin's cost is the last one sent", lambda: central_total(stack) in sent)

    problems = []
    for r in records:
        if r["msg_type"] in (2, 3) and r["protocol"] == "ocpp2.1":
            kind: Kind = "Request" if r["msg_type"] == 2 else "Response"
            if (v := schemas.problem("ocpp2.1", r["action"], kind, r["payload"])) is not None:
                problems.append(f"{r['action']} {kind}: {v.reason}")
    assert not problems and all(r["valid"] for r in records if r["msg_type"] in (2, 3))


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
