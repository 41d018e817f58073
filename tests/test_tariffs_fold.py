"""The tariffs aspect of the twin: tariffs held, each EVSE's price at the twin's as_of, the
driver tariff of a transaction and its running cost (local and central), rebuild = live."""

from __future__ import annotations

from typing import Any

from tests.scenarios import Script
from twin import schemas
from twin.fold import fold, public
from twin.schemas import Kind

VAT = [{"type": "VAT", "tax": 21}]
TOD = {"tariffId": "TOD", "currency": "EUR",
       "energy": {"prices": [{"priceKwh": 0.40, "conditions": {"startTimeOfDay": "07:00", "endTimeOfDay": "22:00"}},
                             {"priceKwh": 0.25}], "taxRates": VAT},
       "idleTime": {"prices": [{"priceMinute": 0.10}]}}  # fmt: skip
FLAT = {"tariffId": "FLAT-2", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.33}]}}
DRIVER = {"tariffId": "DRV-1", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.29}]}}
CHANGED = {"tariffId": "DRV-2", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.19}]}}
TOKEN = {"idToken": "TAG1", "type": "ISO14443"}


def te(s: Script, kind: str, seq: int, imp: float, cost: float | None = None, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "eventType": kind, "timestamp": s.now, "seqNo": seq, "triggerReason": "MeterValuePeriodic",
        "transactionInfo": {"transactionId": "T1"}, "evse": {"id": 1, "connectorId": 1},
        "meterValue": [{"timestamp": s.now, "sampledValue": [{"value": imp, "measurand":
                                                              "Energy.Active.Import.Register"}]}], **extra,
    }  # fmt: skip
    if cost is not None:
        payload["costDetails"] = {
            "totalCost": {"currency": "EUR", "typeOfCost": "NormalCost",
                          "total": {"exclTax": cost, "inclTax": round(cost * 1.21, 4)}},
            "totalUsage": {"energy": imp - 1000, "chargingTime": 60, "idleTime": 0}}  # fmt: skip
    return payload


def tariff_script() -> Script:
    s = Script("SC-TAR").connect().boot().status(1, "Available").status(2, "Available")
    s.csms("SetDefaultTariff", {"evseId": 0, "tariff": TOD}, {"status": "Accepted"})
    s.csms("SetDefaultTariff", {"evseId": 2, "tariff": FLAT}, {"status": "Accepted"})
    s.csms("SetDefaultTariff", {"evseId": 2, "tariff": {**FLAT, "tariffId": "X"}}, {"status": "Rejected"})
    s.at(60).cs("Authorize", {"idToken": TOKEN}, {"idTokenInfo": {"status": "Accepted"}, "tariff": DRIVER})
    s.cs("TransactionEvent", te(s, "Started", 0, 1000, idToken=TOKEN))
    s.at(70).cs("TransactionEvent", te(s, "Updated", 1, 3000, cost=0.58))
    s.csms("ChangeTransactionTariff", {"transactionId": "T1", "tariff": CHANGED}, {"status": "Accepted"})
    s.csms("CostUpdated", {"transactionId": "T1", "totalCost": 0.80}, {})
    s.at(80).cs("TransactionEvent", te(s, "Ended", 2, 4000, cost=0.77))
    return s


def test_each_evse_shows_its_price_now_and_next_and_the_session_its_cost() -> None:
    s = tariff_script()
    t = public(fold(s.records)["SC-TAR"])
    e1, e2 = t["evses"]["1"], t["evses"]["2"]
    assert e1["tariff"]["tariff_id"] == "TOD" and e1["tariff"]["source"] == "default"  # the driver's ended with T1
    assert e1["tariff"]["price_now"] == {"energy_per_kwh": 0.40, "energy_per_kwh_incl_tax": 0.484,
                                         "time_per_min": None, "fixed_fee": None, "idle_per_min": 0.10}  # fmt: skip
    assert e1["tariff"]["next_change_at"] == "2026-03-01T22:00:00.000Z"
    assert e1["tariff"]["price_next"]["energy_per_kwh"] == 0.25
    assert e2["tariff"]["tariff_id"] == "FLAT-2" and e2["tariff"]["next_change_at"] is None  # its own tariff
    tx = e1["transaction"]
    assert [x["tariff"]["tariffId"] for x in tx["tariffs"].values()] == ["DRV-1", "DRV-2"]
    assert tx["cost"] == {"total_excl_tax": 0.77, "total_incl_tax": 0.9317, "currency": "EUR", "source": "local",
                          "type_of_cost": "NormalCost", "updated_at": tx["ended_at"], "final": True,
                          "failed": False}  # fmt: skip
    assert t["tariffs"]["default"]["2"]["tariff_id"] == "FLAT-2" and "X" not in str(t["tariffs"]["installed"])


def test_mid_session_the_driver_tariff_and_central_cost_show() -> None:
    s = tariff_script()
    upto = next(i for i, r in enumerate(s.records) if r["action"] == "CostUpdated" and r["msg_type"] == 3)
    t = public(fold(s.records[: upto + 1])["SC-TAR"])
    e1 = t["evses"]["1"]
    assert e1["tariff"]["tariff_id"] == "DRV-2" and e1["tariff"]["source"] == "driver"
    assert e1["tariff"]["price_now"]["energy_per_kwh"] == 0.19
    cost = e1["transaction"]["cost"]
    assert cost["source"] == "central" and cost["total_incl_tax"] == 0.80 and cost["final"] is False
    before = public(fold(s.records[: upto - 3])["SC-TAR"])  # before ChangeTransactionTariff and CostUpdated
    assert before["evses"]["1"]["tariff"]["tariff_id"] == "DRV-1"
    assert before["evses"]["1"]["transaction"]["cost"]["source"] == "local"


def test_the_price_follows_the_clock_of_the_records() -> None:
    s = tariff_script()
    s.at(14 * 60 + 5).cs("Heartbeat", {}, {"currentTime": s.now})  # 22:05: night
    t = public(fold(s.records)["SC-TAR"])
    night = t["evses"]["1"]["tariff"]
    assert night["price_now"]["energy_per_kwh"] == 0.25 and night["next_change_at"] == "2026-03-02T07:00:00.000Z"
    s.csms("ClearTariffs", {"tariffIds": ["TOD"]}, {"clearTariffsResult": [{"tariffId": "TOD", "status": "Accepted"}]})
    t = public(fold(s.records)["SC-TAR"])
    assert t["evses"]["1"]["tariff"] is None and t["evses"]["2"]["tariff"]["tariff_id"] == "FLAT-2"


def test_a_future_tariff_is_announced_then_in_force() -> None:
    later = {**FLAT, "tariffId": "NEXT", "validFrom": "2026-03-01T10:00:00Z"}
    s = Script("SC-FUT").connect().boot().status(1, "Available")
    s.csms("SetDefaultTariff", {"evseId": 1, "tariff": FLAT}, {"status": "Accepted"})
    s.csms("SetDefaultTariff", {"evseId": 1, "tariff": {**later, "energy": {"prices": [{"priceKwh": 0.5}]}}},
           {"status": "Accepted"})  # fmt: skip
    t = public(fold(s.records)["SC-FUT"])["evses"]["1"]["tariff"]
    assert (t["tariff_id"], t["next_change_at"], t["next_tariff_id"]) == ("FLAT-2", "2026-03-01T10:00:00.000Z", "NEXT")
    s.at(121).status(1, "Available")
    t = public(fold(s.records)["SC-FUT"])["evses"]["1"]["tariff"]
    assert (t["tariff_id"], t["price_now"]["energy_per_kwh"], t["next_change_at"]) == ("NEXT", 0.5, None)


def test_every_scripted_frame_is_valid_2_1() -> None:
    for r in tariff_script().records:
        if r["msg_type"] in (2, 3):
            kind: Kind = "Request" if r["msg_type"] == 2 else "Response"
            assert schemas.problem("ocpp2.1", r["action"], kind, r["payload"]) is None, r


def clock(zone: str) -> dict[str, Any]:
    return {"setVariableData": [{"component": {"name": "ClockCtrlr"}, "variable": {"name": "TimeZone"},
                                 "attributeValue": zone}]}  # fmt: skip


def clock_result(status: str) -> dict[str, Any]:
    return {"setVariableResult": [{"attributeStatus": status, "component": {"name": "ClockCtrlr"},
                                   "variable": {"name": "TimeZone"}}]}  # fmt: skip


def test_the_times_of_day_are_the_stations_clock_zone() -> None:
    """TOD's day ends at 22:00 local: 22:00 UTC while the log names no zone, 21:00 UTC once the
    station accepted Europe/Berlin (UTC+1 in March), 13:00 UTC once it says Asia/Tokyo."""
    s = Script("SC-ZONE").connect().boot().status(1, "Available")
    s.csms("SetDefaultTariff", {"evseId": 0, "tariff": TOD}, {"status": "Accepted"})  # Sunday 08:00 UTC

    def shown() -> tuple[Any, Any]:
        t = public(fold(s.records)["SC-ZONE"])
        return (t.get("tariffs") or {}).get("time_zone"), t["evses"]["1"]["tariff"]["next_change_at"]

    assert shown() == (None, "2026-03-01T22:00:00.000Z")
    s.csms("SetVariables", clock("Europe/Berlin"), clock_result("Accepted"))
    assert shown() == ("Europe/Berlin", "2026-03-01T21:00:00.000Z")
    s.csms("SetVariables", clock("Asia/Tokyo"), clock_result("Rejected"))
    assert shown() == ("Europe/Berlin", "2026-03-01T21:00:00.000Z")
    got = {"getVariableResult": [{"attributeStatus": "Accepted", "component": {"name": "ClockCtrlr"},
                                  "variable": {"name": "TimeZone"}, "attributeValue": "Asia/Tokyo"}]}  # fmt: skip
    s.csms("GetVariables", {"getVariableData": [{"component": {"name": "ClockCtrlr"},
                                                 "variable": {"name": "TimeZone"}}]}, got)  # fmt: skip
    assert shown() == ("Asia/Tokyo", "2026-03-01T13:00:00.000Z")  # 17:00 in Tokyo now; its day ends at 22:00
    for r in s.records:
        if r["msg_type"] in (2, 3):
            kind: Kind = "Request" if r["msg_type"] == 2 else "Response"
            assert schemas.problem("ocpp2.1", r["action"], kind, r["payload"]) is None, r


def test_the_csms_total_in_the_answer_to_ended_is_the_final_central_cost() -> None:
    """TransactionEventResponse.totalCost: at Updated the running cost, at Ended the final one;
    a later CostUpdated of the ended transaction is final too."""
    s = Script("SC-TEC").connect().boot().status(1, "Available")
    s.csms("SetDefaultTariff", {"evseId": 0, "tariff": FLAT}, {"status": "Accepted"})
    s.cs("TransactionEvent", te(s, "Started", 0, 1000))
    s.at(10).cs("TransactionEvent", te(s, "Updated", 1, 2000), {"totalCost": 0.33})
    cost = public(fold(s.records)["SC-TEC"])["evses"]["1"]["transaction"]["cost"]
    assert (cost["source"], cost["total_incl_tax"], cost["final"]) == ("central", 0.33, False)
    s.at(20).cs("TransactionEvent", te(s, "Ended", 2, 3000), {"totalCost": 0.66})
    cost = public(fold(s.records)["SC-TEC"])["evses"]["1"]["transaction"]["cost"]
    assert (cost["total_incl_tax"], cost["final"], cost["currency"]) == (0.66, True, "EUR")
    s.at(21).csms("CostUpdated", {"transactionId": "T1", "totalCost": 0.70}, {})
    cost = public(fold(s.records)["SC-TEC"])["evses"]["1"]["transaction"]["cost"]
    assert (cost["total_incl_tax"], cost["final"]) == (0.70, True)
