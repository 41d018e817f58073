"""A simulated station's side of tariffs (twin.tariffs_station): its clock's zone set by the
CSMS, its local cost read in that zone, and the central cost it is told, final once the
transaction ended."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.test_tariffs_central import CLOCK, TOD_VAT
from twin import schemas
from twin.tariffs_station import StationTariffs


def event(kind: str, at: str, wh: float) -> dict[str, Any]:
    return {"eventType": kind, "timestamp": at, "seqNo": 0, "triggerReason": "MeterValuePeriodic",
            "transactionInfo": {"transactionId": "T1"}, "evse": {"id": 1, "connectorId": 1},
            "meterValue": [{"timestamp": at, "sampledValue": [
                {"value": wh, "measurand": "Energy.Active.Import.Register"}]}]}  # fmt: skip


def session(station: StationTariffs) -> dict[str, Any]:
    """20:00-22:00 UTC on Sunday 1 March 2026, 10 kWh read at 21:00 UTC, 20 kWh at 22:00."""
    station.set_default({"evseId": 0, "tariff": TOD_VAT})
    station.cost(1, event("Started", "2026-03-01T20:00:00.000Z", 1000))
    station.cost(1, event("Updated", "2026-03-01T21:00:00.000Z", 11_000))
    ended = event("Ended", "2026-03-01T22:00:00.000Z", 21_000)
    station.cost(1, ended)
    return ended


def test_the_clock_zone_the_csms_sets_prices_the_local_cost() -> None:
    """In UTC the day price (0.40) runs to 22:00: 20 kWh at 0.40. In Berlin it ends at 21:00 UTC:
    10 kWh at 0.40, 10 at 0.25."""
    utc = StationTariffs(2)
    assert session(utc)["costDetails"]["totalCost"]["total"]["exclTax"] == pytest.approx(8.00)
    berlin = StationTariffs(2)
    answer = berlin.set_variables(CLOCK)
    assert answer == {"setVariableResult": [{"attributeStatus": "Accepted", "component": {"name": "ClockCtrlr"},
                                             "variable": {"name": "TimeZone"}}]}  # fmt: skip
    assert schemas.problem("ocpp2.1", "SetVariables", "Response", answer) is None
    ended = session(berlin)
    assert ended["costDetails"]["totalCost"]["total"] == {"exclTax": 6.5, "inclTax": 7.8}
    wrong = {"setVariableData": [{**CLOCK["setVariableData"][0], "attributeValue": "Nowhere/Else"}]}
    assert berlin.set_variables(wrong)["setVariableResult"][0]["attributeStatus"] == "Rejected"  # type: ignore[index]
    assert berlin.time_zone == "Europe/Berlin"
    other = {"setVariableData": [{"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
                                  "attributeValue": "60"}]}  # fmt: skip
    assert berlin.set_variables(other) is None  # not the clock's zone: answered as before


def test_a_station_without_local_cost_keeps_the_final_cost_it_is_told() -> None:
    station = StationTariffs(2, local_cost=False)
    ended = session(station)
    assert "costDetails" not in ended
    station.cost(1, {**event("Started", "2026-03-01T23:00:00.000Z", 21_000),
                     "transactionInfo": {"transactionId": "T2"}})  # fmt: skip
    assert station.told_cost("T2", 1.5) is False and station.told == {"T2": 1.5}  # T2 runs: a running total
    assert station.told_cost("T1", 7.8) is True and station.final == {"T1": 7.8}  # T1 ended: its final cost
    assert station.told_cost("T2", 2.0, ended=True) is True  # TransactionEventResponse.totalCost at Ended
    assert station.final == {"T1": 7.8, "T2": 2.0}


def test_the_answers_a_station_gives_to_tariffs_it_cannot_take() -> None:
    from tests.test_tariffs import TIME_OF_DAY
    from twin.tariffs_station import MAX_TARIFFS

    station = StationTariffs(2)
    assert station.set_default({"evseId": 1, "tariff": TIME_OF_DAY}) == {"status": "Accepted"}
    assert station.set_default({"evseId": 1, "tariff": TIME_OF_DAY}) == {"status": "Accepted"}  # the same again
    other = {**TIME_OF_DAY, "energy": {"prices": [{"priceKwh": 0.1}]}}
    assert station.set_default({"evseId": 1, "tariff": other})["status"] == "DuplicateTariffId"
    for n in range(1, MAX_TARIFFS):
        assert station.set_default({"evseId": 1, "tariff": {**other, "tariffId": f"X{n}"}})["status"] == "Accepted"
    assert station.set_default({"evseId": 1, "tariff": {**other, "tariffId": "MORE"}})["status"] == "TooManyElements"
    assert station.set_default({"evseId": 3, "tariff": other})["status"] == "Rejected"  # no EVSE 3
    bad = station.set_default({"evseId": 0, "tariff": {"tariffId": "B", "currency": "EUR", "energy": {"prices": [
        {"priceKwh": "cheap"}]}}})  # fmt: skip
    assert bad["status"] == "Rejected" and "energy.prices[0].priceKwh" in bad["statusInfo"]["additionalInfo"]
    simple = StationTariffs(2, simple=True)
    assert simple.set_default({"evseId": 0, "tariff": TIME_OF_DAY})["status"] == "ConditionNotSupported"
    assert simple.set_default({"evseId": 0, "tariff": other})["status"] == "Accepted"
    for answer in (bad, simple.set_default({"evseId": 0, "tariff": TIME_OF_DAY})):
        assert schemas.problem("ocpp2.1", "SetDefaultTariff", "Response", answer) is None
    assert station.change({"transactionId": "NONE", "tariff": other}, datetime.now(UTC))["status"] == "TxNotFound"
