"""One planning decision, pure: what a CSMS knows of each plugged-in EV (from twins folded
from real frames), the profiles it sends (valid for each station's OCPP version), and the
explanation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.scenarios import Script
from twin import fold, schemas
from twin.alerts import alerts
from twin.control.decision import decide
from twin.control.needs import Defaults, plugged
from twin.control.planner import Plan
from twin.control.profiles import MAX_PERIODS, charging_profile, periods
from twin.sites import IMPORT_LIMIT, Site

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SITE = Site("S1", "871687000000000016", 30.0, 20.0, ("CS-V2G", "CS-AC", "CS-OLD"))
INVENTORY = {"CS-V2G": {"max_kw": 11.0, "bidirectional": True}, "CS-AC": {"max_kw": 22.0},
             "CS-OLD": {"max_kw": 22.0, "protocol": "ocpp2.0.1"}}  # fmt: skip
V2X_NEEDS = {"requestedEnergyTransfer": "AC_BPT", "departureTime": "2026-03-01T12:00:00Z",
             "controlMode": "DynamicControl",
             "v2xChargingParameters": {"maxChargePower": 11000, "maxDischargePower": 11000,
                                       "evTargetEnergyRequest": 20000, "evMinEnergyRequest": 8000,
                                       "evMinV2XEnergyRequest": -6000}}  # fmt: skip


def _session(station: str, protocol: str = "ocpp2.1", needs: dict[str, Any] | None = None) -> Script:
    s = Script(station, protocol).connect().boot()
    s.tx("Started", f"{station}-T1", 0, imp=1000.0, p_imp=0.0)
    if needs is not None:
        s.cs("NotifyEVChargingNeeds", {"evseId": 1, "chargingNeeds": needs}, {"status": "Accepted"})
    s.tx("Updated", f"{station}-T1", 1, imp=3000.0, p_imp=11000.0)  # 2 kWh moved
    return s


def _twins(*scripts: Script) -> dict[str, Any]:
    return fold.fold([r for s in scripts for r in s.records])


def test_what_the_controller_knows_comes_from_the_needs_or_the_stated_defaults() -> None:
    twins = _twins(_session("CS-V2G", needs=V2X_NEEDS), _session("CS-AC"))
    needs = {n.station_id: n for n in plugged(SITE, twins, NOW, INVENTORY, Defaults(20.0, 4.0))}
    v2g, ac = needs["CS-V2G"], needs["CS-AC"]
    assert v2g.source == "needs" and ac.source == "default"
    assert v2g.demand.energy_kwh == 18.0 and v2g.demand.min_energy_kwh == 6.0  # asked for, less the 2 kWh moved
    assert v2g.demand.max_kw == 11.0 and v2g.demand.max_discharge_kw == 11.0
    assert v2g.demand.battery_kwh == 8.0  # the 2 kWh moved, and 6 kWh above its V2X floor
    assert v2g.departure == datetime(2026, 3, 1, 12, tzinfo=UTC) and v2g.demand.departure_s == 3 * 3600
    assert ac.demand.energy_kwh == 18.0 and ac.demand.max_kw == 22.0 and ac.demand.max_discharge_kw == 0.0
    assert ac.departure.hour == 12  # 4 h after its start (08:00 in the script)
    assert v2g.obeys and ac.obeys


def test_needs_of_an_earlier_session_are_not_this_ones() -> None:
    s = _session("CS-AC", needs={**V2X_NEEDS, "requestedEnergyTransfer": "AC_three_phase"})
    s.tx("Ended", "CS-AC-T1", 2, imp=4000.0).tx("Started", "CS-AC-T2", 0, imp=4000.0)
    need = plugged(SITE, _twins(s), NOW, INVENTORY)[0]
    assert need.transaction_id == "CS-AC-T2" and need.source == "default"


def test_profiles_are_valid_for_each_stations_version_and_v2x_only_where_it_can_be() -> None:
    twins = _twins(_session("CS-V2G", needs=V2X_NEEDS), _session("CS-OLD", "ocpp2.0.1"))
    export = [{"site_id": "S1", "protocol": "operator", "program_id": "o", "event_id": "x", "modification_number": 0,
               "payload_type": IMPORT_LIMIT, "status": "accepted", "received_at": "2026-03-01T08:59:00Z",
               "intervals": [{"start": "2026-03-01T09:00:00Z", "duration_s": 1800, "value": -5}]}]  # fmt: skip
    decision = decide(SITE, twins, export, INVENTORY, NOW)
    sent = dict(decision.profiles)
    for station, protocol in (("CS-V2G", "ocpp2.1"), ("CS-OLD", "ocpp2.0.1")):
        assert schemas.problem(protocol, "SetChargingProfile", "Request", sent[station]) is None, station
    v2g_periods = sent["CS-V2G"]["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
    assert v2g_periods[0]["operationMode"] == "CentralSetpoint" and v2g_periods[0]["setpoint"] < 0
    assert any(p.get("operationMode") == "ChargingOnly" and p["limit"] > 0 for p in v2g_periods)  # refills later
    old_periods = sent["CS-OLD"]["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
    assert all(set(p) == {"startPeriod", "limit"} and p["limit"] >= 0 for p in old_periods)
    assert sent["CS-OLD"]["chargingProfile"]["transactionId"] == "CS-OLD-T1"
    rows = {r["station_id"]: r for r in decision.document["evses"]}
    assert rows["CS-V2G"]["plan_kw"] <= -5.0 + 1e-6 and rows["CS-OLD"]["plan_kw"] == 0.0
    assert decision.document["limit"] == {"import_kw": -5.0, "export_kw": 20.0, "source": "operator"}
    assert "gives back" in rows["CS-V2G"]["why"]


def test_an_evse_that_refused_its_profile_is_counted_at_its_maximum() -> None:
    refusing = _session("CS-AC")
    profile = charging_profile(plugged(SITE, _twins(refusing), NOW, INVENTORY)[0],
                               Plan([0.0], {"CS-AC:1": [5.0]}), NOW)  # fmt: skip
    refusing.csms("SetChargingProfile", profile, {"status": "Rejected", "statusInfo": {"reasonCode": "NoTx"}})
    twins = _twins(refusing, _session("CS-V2G", needs=V2X_NEEDS))
    decision = decide(SITE, twins, [], INVENTORY, NOW)
    rows = {r["station_id"]: r for r in decision.document["evses"]}
    assert not rows["CS-AC"]["obeys"] and rows["CS-AC"]["profile_status"] == "Rejected"
    assert decision.document["fixed_kw"] == 22.0
    assert rows["CS-V2G"]["plan_kw"] <= 30.0 - 22.0 + 1e-6  # what the limit leaves
    assert [station for station, _ in decision.profiles] == ["CS-V2G"]  # none sent to the refusing EVSE
    record = refusing.records[-1]
    before = fold.fold(refusing.records[:-1])["CS-AC"]
    raised = alerts(record, before, fold.apply(before, record))
    assert [(a["kind"], a["detail"]["status"], a["detail"]["reason"]) for a in raised] == [
        ("smart_charging", "Rejected", "NoTx")]


def test_a_schedule_is_at_most_max_periods_long_and_merges_equal_neighbours() -> None:
    plan = Plan([float(k * 300) for k in range(60)], {"k": [float(k % 2) for k in range(50)] + [3.0] * 10})
    assert len(periods(plan, "k")) == MAX_PERIODS
    plan = Plan([0.0, 300.0, 600.0, 900.0], {"k": [11.0, 11.0, 4.04, 4.0]})
    assert periods(plan, "k") == [(0.0, 11.0), (600.0, 4.0)]
