"""The price in force and a session's cost (twin.tariffs), against tariffs worked by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from twin import schemas
from twin.cost import Sample, needed, session_cost
from twin.tariffs import (
    Price,
    TariffError,
    Usage,
    check,
    clock_zone,
    in_force,
    load,
    next_change,
    price_at,
    quote,
    station_zone,
    tax_factor,
)

VAT = [{"type": "VAT", "tax": 21}]
TIME_OF_DAY: dict[str, Any] = {  # 0.40 by day (07:00-22:00), 0.25 at night; 21% VAT
    "tariffId": "TOD", "currency": "EUR",
    "energy": {"prices": [{"priceKwh": 0.40, "conditions": {"startTimeOfDay": "07:00", "endTimeOfDay": "22:00"}},
                          {"priceKwh": 0.25}], "taxRates": VAT},
}  # fmt: skip
WEEKEND: dict[str, Any] = {
    "tariffId": "WE", "currency": "EUR",
    "energy": {"prices": [{"priceKwh": 0.30, "conditions": {"dayOfWeek": ["Saturday", "Sunday"]}},
                          {"priceKwh": 0.35}]},
}  # fmt: skip
MONDAY = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


def at(day: datetime, hh: int, mm: int = 0) -> datetime:
    return day + timedelta(hours=hh, minutes=mm)


def test_time_of_day_prices_and_the_next_change() -> None:
    day = price_at(TIME_OF_DAY, at(MONDAY, 8))
    assert day == Price(energy_per_kwh=0.40, energy_per_kwh_incl_tax=pytest.approx(0.484))
    assert day is not None and day.as_json() == {"energy_per_kwh": 0.40, "energy_per_kwh_incl_tax": 0.484,
                                                 "time_per_min": None, "fixed_fee": None, "idle_per_min": None}
    change = next_change(TIME_OF_DAY, at(MONDAY, 8))
    assert change is not None and change[0] == at(MONDAY, 22) and change[1] is not None
    assert change[1].energy_per_kwh == 0.25 and change[1].energy_per_kwh_incl_tax == pytest.approx(0.3025)
    night = next_change(TIME_OF_DAY, at(MONDAY, 23))
    assert night is not None and night[0] == at(MONDAY, 24 + 7) and night[1] and night[1].energy_per_kwh == 0.40
    assert price_at(TIME_OF_DAY, at(MONDAY, 22)).energy_per_kwh == 0.25  # type: ignore[union-attr]  # end: exclusive
    assert price_at(TIME_OF_DAY, at(MONDAY, 7)).energy_per_kwh == 0.40  # type: ignore[union-attr]  # start: inclusive


def test_a_night_window_wraps_past_midnight_and_local_time_is_the_tariffs() -> None:
    night = {"tariffId": "N", "currency": "EUR", "energy": {"prices": [
        {"priceKwh": 0.20, "conditions": {"startTimeOfDay": "22:00", "endTimeOfDay": "06:00"}}, {"priceKwh": 0.40}]}}
    assert [price_at(night, at(MONDAY, h)).energy_per_kwh for h in (1, 5, 6, 12, 22, 23)] == [  # type: ignore[union-attr]
        0.20, 0.20, 0.40, 0.40, 0.20, 0.20]  # fmt: skip
    # Amsterdam is UTC+1 in March: 22:00 there is 21:00 UTC
    assert price_at(night, at(MONDAY, 21), tz="Europe/Amsterdam").energy_per_kwh == 0.20  # type: ignore[union-attr]
    change = next_change(night, at(MONDAY, 12), tz="Europe/Amsterdam")
    assert change is not None and change[0] == at(MONDAY, 21)


def test_day_of_week_prices_change_at_saturday_midnight() -> None:
    friday = at(MONDAY + timedelta(days=4), 12)
    assert price_at(WEEKEND, friday).energy_per_kwh == 0.35  # type: ignore[union-attr]
    change = next_change(WEEKEND, friday)
    assert change is not None and change[0] == MONDAY + timedelta(days=5) and change[1]
    assert change[1].energy_per_kwh == 0.30
    later = next_change(WEEKEND, change[0])
    assert later is not None and later[0] == MONDAY + timedelta(days=7)  # back to weekdays on Monday


def test_valid_from_in_the_future_and_the_tariff_in_force_among_several() -> None:
    old = {"tariffId": "A", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.30}]}}
    new = {"tariffId": "B", "currency": "EUR", "validFrom": "2026-03-03T00:00:00Z",
           "energy": {"prices": [{"priceKwh": 0.35}]}}  # fmt: skip
    assert price_at(new, at(MONDAY, 12)) is None  # not yet in force
    assert in_force([old, new], at(MONDAY, 12)) is old and in_force([new, old], at(MONDAY, 24)) is new
    q = quote([old, new], at(MONDAY, 12))
    assert q == {"tariff_id": "A", "currency": "EUR", "valid_from": None, "in_force": True,
                 "price_now": {"energy_per_kwh": 0.30, "time_per_min": None, "fixed_fee": None, "idle_per_min": None},
                 "next_change_at": "2026-03-03T00:00:00.000Z",
                 "price_next": {"energy_per_kwh": 0.35, "time_per_min": None, "fixed_fee": None, "idle_per_min": None},
                 "next_tariff_id": "B"}  # fmt: skip
    alone = quote(new, at(MONDAY, 12))
    assert alone is not None and alone["in_force"] is False and alone["price_now"] is None
    assert alone["tariff_id"] == "B" and alone["next_change_at"] == "2026-03-03T00:00:00.000Z"


def test_a_quote_asked_again_and_again_is_a_fresh_one() -> None:
    """Quotes of the same tariffs are reused until the next change: across a validFrom that
    changes the tariff but not the price, a time of day, a skipped hour and a horizon moving."""
    same_price = {"tariffId": "C", "currency": "EUR", "validFrom": "2026-03-02T10:00:00.000500Z",
                  "energy": {"prices": [{"priceKwh": 0.30}]}}  # fmt: skip
    old = {"tariffId": "A", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.30}]}}
    skipped = {"tariffId": "S", "currency": "EUR", "energy": {"prices": [  # 02:30 is no time in Berlin on 29 March
        {"priceKwh": 0.20, "conditions": {"startTimeOfDay": "02:30", "endTimeOfDay": "05:00"}}, {"priceKwh": 0.40}]}}
    far = {"tariffId": "F", "currency": "EUR", "validFrom": "2026-03-12T00:00:00Z", "energy": {"prices": [
        {"priceKwh": 0.50, "conditions": {"dayOfWeek": ["Monday"]}}, {"priceKwh": 0.50}]}}  # fmt: skip
    cases = [([old, same_price], "UTC", MONDAY), (TIME_OF_DAY, "Europe/Berlin", MONDAY), ([old, far], "UTC", MONDAY),
             (skipped, "Europe/Berlin", datetime(2026, 3, 28, 20, tzinfo=UTC))]  # fmt: skip
    for tariffs, tz, start in cases:
        for minutes in range(0, 10 * 24 * 60, 7):
            moment = start + timedelta(minutes=minutes, microseconds=600)
            kept = quote(tariffs, moment, tz=tz)
            tariffs = tariffs if isinstance(tariffs, dict) else list(tariffs)
            fresh = quote(json.loads(json.dumps(tariffs)), moment, tz=tz)  # other objects: not reused
            assert kept == fresh, (tariffs, moment)


def test_tax_rates_stack() -> None:
    assert tax_factor([{"type": "VAT", "tax": 21}]) == pytest.approx(1.21)
    assert tax_factor([{"type": "A", "tax": 10}, {"type": "B", "tax": 5, "stack": 1}]) == pytest.approx(1.155)
    assert tax_factor([{"type": "A", "tax": 10}, {"type": "B", "tax": 5}]) == pytest.approx(1.15)
    assert tax_factor(None) is None


def test_a_session_priced_across_a_time_of_day_change() -> None:
    # 21:00-23:00, 22 kWh evenly, read only at the end: 11 kWh at 0.40 by day, 11 at 0.25 by night
    cost = session_cost(TIME_OF_DAY, at(MONDAY, 21), [Sample(at(MONDAY, 23), 22_000)])
    assert cost.total_excl_tax == pytest.approx(4.40 + 2.75)
    assert cost.total_incl_tax == pytest.approx(7.15 * 1.21)
    assert cost.energy_wh == 22_000 and cost.charging_s == 7_200 and cost.idle_s == 0
    details = cost.cost_details()
    assert details["totalCost"]["total"] == {"exclTax": 7.15, "inclTax": 8.6515}
    assert details["totalUsage"] == {"energy": 22_000, "chargingTime": 7_200, "idleTime": 0}
    payload = {"eventType": "Updated", "timestamp": "2026-03-02T23:00:00Z", "triggerReason": "MeterValuePeriodic",
               "seqNo": 1, "transactionInfo": {"transactionId": "T1"}, "costDetails": details}  # fmt: skip
    assert schemas.problem("ocpp2.1", "TransactionEvent", "Request", payload) is None


def test_idle_fees_after_a_grace_hour_and_a_fixed_fee_with_tax() -> None:
    tariff = {"tariffId": "IDLE", "currency": "EUR",
              "energy": {"prices": [{"priceKwh": 0.30}]},
              "idleTime": {"prices": [{"priceMinute": 0.10, "conditions": {"minIdleTime": 3_600}}]},
              "fixedFee": {"prices": [{"priceFixed": 1.00}], "taxRates": [{"type": "VAT", "tax": 20}]}}  # fmt: skip
    # 10:00-11:00 charging 20 kWh, then idle until 13:00: 6.00 energy, 60 free idle minutes, 60 at 0.10, 1.00 fixed
    samples = [Sample(at(MONDAY, 11), 20_000), Sample(at(MONDAY, 13), 20_000)]
    cost = session_cost(tariff, at(MONDAY, 10), samples)
    assert cost.parts["energy"][0] == pytest.approx(6.00) and cost.parts["idleTime"][0] == pytest.approx(6.00)
    assert cost.parts["fixedFee"] == [1.00, pytest.approx(1.20)]
    assert cost.total_excl_tax == pytest.approx(13.00)
    assert cost.total_incl_tax is None  # energy and idle time give no tax rates
    assert cost.idle_s == 7_200 and cost.charging_s == 3_600 and cost.duration_s == 10_800


def test_min_and_max_cost_bound_the_total() -> None:
    tariff = {"tariffId": "MM", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.50}]},
              "minCost": {"exclTax": 5.0, "inclTax": 6.05}, "maxCost": {"exclTax": 20.0}}  # fmt: skip
    small = session_cost(tariff, at(MONDAY, 10), [Sample(at(MONDAY, 11), 4_000)])
    assert (small.total_excl_tax, small.total_incl_tax, small.type_of_cost) == (5.0, 6.05, "MinCost")
    big = session_cost(tariff, at(MONDAY, 10), [Sample(at(MONDAY, 11), 50_000)])
    assert (big.total_excl_tax, big.type_of_cost) == (20.0, "MaxCost")
    normal = session_cost(tariff, at(MONDAY, 10), [Sample(at(MONDAY, 11), 20_000)])
    assert (normal.total_excl_tax, normal.type_of_cost) == (10.0, "NormalCost")


def test_a_tariff_change_in_mid_session_prices_the_rest_only() -> None:
    a = {"tariffId": "A", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.30}]},
         "chargingTime": {"prices": [{"priceMinute": 0.02}]}}  # fmt: skip
    b = {"tariffId": "B", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.50}]}}
    samples = [Sample(at(MONDAY, 10, 30), 5_500), Sample(at(MONDAY, 12), 22_000)]  # 11 kW throughout
    cost = session_cost([(None, a), (at(MONDAY, 11), b)], at(MONDAY, 10), samples)
    assert cost.parts["energy"][0] == pytest.approx(11 * 0.30 + 11 * 0.50)
    assert cost.parts["chargingTime"][0] == pytest.approx(60 * 0.02)
    assert cost.total_excl_tax == pytest.approx(10.00)


def test_energy_and_power_conditions() -> None:
    tariff = {"tariffId": "E", "currency": "EUR", "energy": {"prices": [
        {"priceKwh": 0.20, "conditions": {"minEnergy": 10_000}},  # past 10 kWh: cheaper
        {"priceKwh": 0.60, "conditions": {"minPower": 50_000}},  # fast charging: dearer
        {"priceKwh": 0.40}]}}  # fmt: skip
    assert price_at(tariff, at(MONDAY, 9)).energy_per_kwh == 0.40  # type: ignore[union-attr]  # power unknown
    assert price_at(tariff, at(MONDAY, 9), Usage(power_w=60_000)).energy_per_kwh == 0.60  # type: ignore[union-attr]
    # 20 kWh at 11 kW: the first 10 at 0.40, the rest at 0.20, cut where the 10th kWh is reached
    cost = session_cost(tariff, at(MONDAY, 9), [Sample(at(MONDAY, 9) + timedelta(hours=20 / 11), 20_000)])
    assert cost.total_excl_tax == pytest.approx(10 * 0.40 + 10 * 0.20)


def test_a_tariff_is_checked_against_the_2_1_schema_naming_the_field(tmp_path: Path) -> None:
    assert check(TIME_OF_DAY)["tariffId"] == "TOD"
    with pytest.raises(TariffError, match=r"^tariff: must contain \['currency'\]"):
        check({"tariffId": "X"})
    with pytest.raises(TariffError, match=r"^energy\.prices\[0\]\.priceKwh: must be number"):
        check({"tariffId": "X", "currency": "EUR", "energy": {"prices": [{"priceKwh": "cheap"}]}})
    with pytest.raises(TariffError, match=r"^energy\.prices\[1\]\.conditions\.startTimeOfDay: '25:00'"):
        check({"tariffId": "X", "currency": "EUR",
               "energy": {"prices": [{"priceKwh": 1}, {"priceKwh": 2, "conditions": {"startTimeOfDay": "25:00"}}]}})
    with pytest.raises(TariffError, match=r"^currency: must be shorter than or equal to 3"):
        check({"tariffId": "X", "currency": "EURO"})
    with pytest.raises(TariffError, match=r"^tariff: must not contain \{'price'\}|additional"):
        check({"tariffId": "X", "currency": "EUR", "price": 1})
    path = tmp_path / "t.json"
    path.write_text(json.dumps(WEEKEND))
    assert load(path) == WEEKEND
    path.write_text("{")
    with pytest.raises(TariffError, match="t.json: not JSON"):
        load(path)


# -- a station's time zone (its clock's, as the log says) ------------------------------------------


def clock_set(zone: str) -> dict[str, Any]:
    return {"setVariableData": [{"component": {"name": "ClockCtrlr"}, "variable": {"name": "TimeZone"},
                                 "attributeValue": zone}]}  # fmt: skip


def clock_result(status: str) -> dict[str, Any]:
    return {"setVariableResult": [{"attributeStatus": status, "component": {"name": "ClockCtrlr"},
                                   "variable": {"name": "TimeZone"}}]}  # fmt: skip


def test_the_stations_zone_is_the_clock_zone_it_accepted_or_reported() -> None:
    assert clock_zone("SetVariables", clock_set("Europe/Berlin"), clock_result("Accepted")) == "Europe/Berlin"
    assert clock_zone("SetVariables", clock_set("Europe/Berlin"), clock_result("Rejected")) is None
    assert clock_zone("SetVariables", clock_set("Mars/Olympus"), clock_result("Accepted")) is None  # no such zone
    other = {"setVariableData": [{"component": {"name": "ClockCtrlr"}, "variable": {"name": "NtpServerUri"},
                                  "attributeValue": "Europe/Berlin"}]}  # fmt: skip
    assert clock_zone("SetVariables", other, clock_result("Accepted")) is None
    got = {"getVariableResult": [{"attributeStatus": "Accepted", "component": {"name": "ClockCtrlr"},
                                  "variable": {"name": "TimeZone"}, "attributeValue": "Europe/Lisbon"}]}  # fmt: skip
    assert clock_zone("GetVariables", {"getVariableData": []}, got) == "Europe/Lisbon"
    for action, request, answer in (("SetVariables", clock_set("Europe/Berlin"), clock_result("Accepted")),
                                    ("GetVariables", {"getVariableData": [{"component": {"name": "ClockCtrlr"},
                                                                           "variable": {"name": "TimeZone"}}]}, got)):
        assert schemas.problem("ocpp2.1", action, "Request", request) is None  # fmt: skip
        assert schemas.problem("ocpp2.1", action, "Response", answer) is None
    assert station_zone({}) == "UTC" and station_zone({"tariffs": {"time_zone": "Europe/Rome"}}) == "Europe/Rome"


def test_times_of_day_follow_the_zone_across_a_daylight_saving_change() -> None:
    """07:00 in Berlin is 06:00 UTC on Saturday 28 March 2026 and 05:00 UTC on the Monday after
    (summer time from the Sunday); in UTC it stays 07:00."""
    saturday, monday = datetime(2026, 3, 28, tzinfo=UTC), datetime(2026, 3, 30, tzinfo=UTC)
    assert next_change(TIME_OF_DAY, at(saturday, 3), tz="Europe/Berlin")[0] == at(saturday, 6)  # type: ignore[index]
    assert next_change(TIME_OF_DAY, at(monday, 3), tz="Europe/Berlin")[0] == at(monday, 5)  # type: ignore[index]
    assert next_change(TIME_OF_DAY, at(monday, 3))[0] == at(monday, 7)  # type: ignore[index]
    # a session 05:00-07:00 UTC on that Monday, 10 kWh evenly: 07:00 in Berlin is 05:00 UTC, all of it by day
    berlin = session_cost(TIME_OF_DAY, at(monday, 5), [Sample(at(monday, 7), 10_000)], tz="Europe/Berlin")
    utc = session_cost(TIME_OF_DAY, at(monday, 5), [Sample(at(monday, 7), 10_000)])
    assert berlin.total_excl_tax == pytest.approx(4.00) and utc.total_excl_tax == pytest.approx(2.50)


def test_readings_that_do_not_change_the_cost_merge() -> None:
    """A reading between two others priced alike is not needed: without it the cost is the
    same. It is needed next to a price boundary (in the station's zone), where charging turns
    idle, and wherever a price depends on the session's progress."""
    start = at(MONDAY, 20)
    readings = [Sample(at(MONDAY, 20, m), 250.0 * m) for m in range(5, 125, 10)]  # 20:05 to 21:55 UTC
    readings += [Sample(at(MONDAY, 22, 20), 28_750.0), Sample(at(MONDAY, 22, 40), 28_750.0)]  # idle from 21:55
    kept = [readings[0]]
    for reading in readings[1:]:
        kept.append(reading)
        if len(kept) >= 2:
            a = kept[-3] if len(kept) >= 3 else Sample(start, 0.0)
            if not needed(TIME_OF_DAY, a, kept[-2], kept[-1], "Europe/Berlin"):
                del kept[-2]
    full = session_cost(TIME_OF_DAY, start, readings, tz="Europe/Berlin")
    short = session_cost(TIME_OF_DAY, start, kept, tz="Europe/Berlin")
    assert len(kept) < len(readings) and short.total_excl_tax == pytest.approx(full.total_excl_tax)
    assert short.idle_s == full.idle_s == 45 * 60
    # 22:00 in Berlin (21:00 UTC) lies between the readings at 20:55 and 21:05 UTC; charging stops at 21:55
    assert [s.at for s in kept] == [at(MONDAY, 20, 55), at(MONDAY, 21, 5), at(MONDAY, 21, 55), at(MONDAY, 22, 40)]
    # in UTC the day ends at 22:00, after charging stopped: the readings either side of it stay
    utc = [readings[0]]
    for reading in readings[1:]:
        utc.append(reading)
        a = utc[-3] if len(utc) >= 3 else Sample(start, 0.0)
        if len(utc) >= 2 and not needed(TIME_OF_DAY, a, utc[-2], utc[-1]):
            del utc[-2]
    assert [s.at for s in utc] == [at(MONDAY, 21, 55), at(MONDAY, 22, 20), at(MONDAY, 22, 40)]
    progress = {"tariffId": "P", "currency": "EUR", "energy": {"prices": [
        {"priceKwh": 0.5, "conditions": {"maxEnergy": 5000}}, {"priceKwh": 0.3}]}}  # fmt: skip
    a, b, c = Sample(at(MONDAY, 1), 1000.0), Sample(at(MONDAY, 2), 2000.0), Sample(at(MONDAY, 3), 3000.0)
    assert needed(progress, a, b, c) and not needed(TIME_OF_DAY, a, b, c)
    assert needed(TIME_OF_DAY, a, b, Sample(at(MONDAY, 3), 2000.0))  # charging, then idle
