"""The reactive live simulator: the EV's physics (pure), the sessions CSV, what a station
accepts, and stations that obey profiles sent through a real gateway and the log."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from tests.conftest import has, of_station, read_until, url
from tests.test_gateway_csms import produce_command
from twin import schemas
from twin.control.sessions import SessionsError, parse
from twin.gateway.commands import command
from twin.gateway.responder import Context, respond
from twin.settings import Settings
from twin.simulator import build, live, sessions
from twin.simulator.ev import (
    EV,
    FREE,
    EVState,
    Profile,
    Setting,
    advance,
    charging_state,
    in_force,
    power,
    profile_of,  # fmt: skip
    step,
)

pytestmark = pytest.mark.one_engine  # see tests/conftest.py

TWIN = [sys.executable, "-m", "twin"]
T0 = datetime(2026, 3, 2, 8, tzinfo=UTC).timestamp()


# -- the EV (pure) ------------------------------------------------------------------------------


def test_a_limit_caps_the_power_and_the_registers_follow() -> None:
    ev, st = EV(60_000, 11_000), EVState(20_000, 30_000)
    assert power(ev, st, FREE, 60) == 11_000  # no profile: its max
    after = step(ev, st, Setting(limit_w=3_000), 60)
    assert after.power_w == 3_000
    assert after.imported_wh == pytest.approx(50) and after.stored_wh == pytest.approx(20_050)
    assert after.soc(ev) == pytest.approx(100 * 20_050 / 60_000)
    assert charging_state(after) == "Charging"
    assert power(ev, st, Setting(mode="Idle", limit_w=5_000), 60) == 0


def test_the_need_met_draws_nothing_and_says_suspended_ev() -> None:
    ev, st = EV(60_000, 11_000), EVState(20_000, 20_100)
    full = step(ev, st, FREE, 60)  # needs 100 Wh: 6 kW over the minute, not 11
    assert full.power_w == pytest.approx(6_000) and full.need_wh == pytest.approx(0)
    done = step(ev, full, FREE, 60)
    assert done.power_w == 0 and done.stored_wh == full.stored_wh
    assert charging_state(done) == "SuspendedEV"
    assert charging_state(step(ev, st, Setting(limit_w=0), 60)) == "SuspendedEVSE"


def test_a_negative_setpoint_discharges_down_to_the_floor() -> None:
    ev = EV(60_000, 11_000, max_discharge_w=7_000, floor_wh=12_000)
    st = EVState(12_300, 30_000)
    central = Setting(mode="CentralSetpoint", setpoint_w=-10_000)
    powers = []
    for _ in range(5):
        st = step(ev, st, central, 60)
        powers.append(st.power_w)
    assert powers[:2] == [-7_000, -7_000]  # its max discharge, under the setpoint's 10 kW
    assert powers[2] == pytest.approx(-4_000)  # the last 66.7 Wh above the floor, over the minute
    assert powers[3:] == [0, 0] and str(powers[3]) == "0.0"  # not -0.0
    assert st.stored_wh == pytest.approx(12_000) and st.exported_wh == pytest.approx(300)
    assert st.imported_wh == 0 and charging_state(st) == "SuspendedEVSE"
    limited = Setting(mode="CentralSetpoint", setpoint_w=-10_000, discharge_limit_w=-2_000)
    assert power(ev, EVState(30_000, 40_000), limited, 60) == -2_000
    assert power(EV(60_000, 11_000), EVState(30_000, 40_000), central, 60) == 0  # cannot discharge
    charge = Setting(mode="CentralSetpoint", setpoint_w=4_000)
    assert power(ev, EVState(30_000, 30_000), charge, 60) == 4_000  # charges at the setpoint, need or not


def test_registers_and_soc_stay_consistent_whatever_the_steps() -> None:
    ev = EV(50_000, 22_000, max_discharge_w=10_000, floor_wh=10_000)
    start = st = EVState(20_000, 35_000)
    settings = [FREE, Setting(limit_w=5_000), Setting(mode="CentralSetpoint", setpoint_w=-8_000),
                Setting(mode="Idle"), Setting(limit_w=0), FREE]  # fmt: skip
    for i in range(60):
        st = step(ev, st, settings[i % len(settings)], 30 + i)
        assert st.stored_wh - start.stored_wh == pytest.approx(st.imported_wh - st.exported_wh)
        assert ev.floor_wh - 1e-6 <= st.stored_wh <= ev.battery_wh + 1e-6
        assert st.soc(ev) == pytest.approx(100 * st.stored_wh / ev.battery_wh)


def profile(pid: int, purpose: str, periods: list[dict[str, Any]], stack: int = 0, evse: int = 1,
            unit: str = "W", **extra: Any) -> dict[str, Any]:  # fmt: skip
    kind = "Absolute" if "startSchedule" in extra else "Relative"
    schedule = {"id": 1, "chargingRateUnit": unit, "chargingSchedulePeriod": periods}
    if "startSchedule" in extra:
        schedule["startSchedule"] = extra.pop("startSchedule")
    body = {"id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose, "chargingProfileKind": kind,
            "chargingSchedule": [schedule], **extra}  # fmt: skip
    return {"evseId": evse, "chargingProfile": body}


def test_the_profile_in_force_tx_over_default_highest_stack_level() -> None:
    default = profile_of(profile(1, "TxDefaultProfile", [{"startPeriod": 0, "limit": 7_000}], stack=5, evse=0), T0)
    low = profile_of(profile(2, "TxProfile", [{"startPeriod": 0, "limit": 4_000}], transactionId="T1"), T0)
    high = profile_of(profile(3, "TxProfile", [{"startPeriod": 0, "limit": 2_000},
                                               {"startPeriod": 600, "limit": 3_000}], stack=2,
                              transactionId="T1"), T0)  # fmt: skip
    other = profile_of(profile(4, "TxProfile", [{"startPeriod": 0, "limit": 1}], stack=9, transactionId="T2"), T0)
    kept = [default, low, high, other]
    assert in_force(kept, T0 + 10, 1, "T1", T0).limit_w == 2_000
    assert in_force(kept, T0 + 700, 1, "T1", T0).limit_w == 3_000  # Relative: from the transaction's start
    assert in_force(kept, T0 + 10, 2, "T9", T0).limit_w == 7_000  # evseId 0: every EVSE's default
    assert in_force([other], T0 + 10, 1, "T1", T0) is FREE
    amps = profile_of(profile(5, "TxProfile", [{"startPeriod": 0, "limit": 16}], unit="A", transactionId="T1"), T0)
    assert amps.periods[0].setting.limit_w == 16 * 230 * 3
    absolute = profile_of(profile(6, "TxDefaultProfile", [{"startPeriod": 0, "limit": 1_000}],
                                  startSchedule="2026-03-02T09:00:00Z"), T0)  # fmt: skip
    assert in_force([absolute], T0 + 3_599, 1, None, None) is FREE
    assert in_force([absolute], T0 + 3_600, 1, None, None).limit_w == 1_000


def test_advance_steps_at_every_period_boundary() -> None:
    p: Profile = profile_of(profile(1, "TxProfile", [{"startPeriod": 0, "limit": 3_600},
                                                     {"startPeriod": 30, "limit": 7_200}],
                                    transactionId="T1"), T0)  # fmt: skip
    ev = EV(60_000, 11_000)
    st, setting = advance(ev, EVState(10_000, 40_000), [p], T0, T0 + 60, 1, "T1", T0)
    assert st.imported_wh == pytest.approx(3_600 * 30 / 3_600 + 7_200 * 30 / 3_600)  # 30 + 60 Wh
    assert st.power_w == 7_200 and setting.limit_w == 7_200


# -- what a station takes -----------------------------------------------------------------------

V2X_PERIOD = {"startPeriod": 0, "setpoint": -5_000, "dischargeLimit": -10_000, "operationMode": "CentralSetpoint"}


def fleet5() -> dict[str, Any]:
    return {s.station_id: s for s in build(5, 1)[1]}


def test_a_station_rejects_what_it_cannot_do() -> None:
    stations = fleet5()
    bidi, uni, old = stations["CS-00002"], stations["CS-00001"], stations["CS-00004"]
    assert bidi.bidirectional and bidi.protocol == "ocpp2.1" and not uni.bidirectional and old.protocol == "ocpp2.0.1"
    v2x = profile(1, "TxProfile", [V2X_PERIOD], transactionId="T1")
    plain = profile(2, "TxProfile", [{"startPeriod": 0, "limit": 3_000}], transactionId="T1")
    running, ev2g = {1: "T1"}, {1: True}
    assert live.review(bidi, v2x, running, ev2g) == ("Accepted", None, None)
    assert live.review(uni, v2x, running, ev2g)[:2] == ("Rejected", "UnsupportedParam")
    assert live.review(old, v2x, running, ev2g)[:2] == ("Rejected", "UnsupportedParam")
    assert live.review(bidi, v2x, running, {1: False})[:2] == ("Rejected", "UnsupportedParam")
    assert live.review(old, plain, running, ev2g)[0] == "Accepted"
    assert live.review(old, plain, {1: "T7"}, ev2g)[:2] == ("Rejected", "TxNotFound")
    assert live.review(old, {**plain, "evseId": 9}, running, ev2g)[:2] == ("Rejected", "UnknownEvse")
    assert live.review(old, plain, running, ev2g, refuse=True)[:2] == ("Rejected", "NotSupported")
    idle = profile(3, "TxDefaultProfile", [{"startPeriod": 0, "limit": 0, "operationMode": "Idle"}], evse=0)
    assert live.review(uni, idle, {}, {})[0] == "Accepted"


# -- the sessions CSV ---------------------------------------------------------------------------

HEADER = "session_id,evse_id,arrival,departure,energy_kwh,max_kw,v2g,max_discharge_kw\n"


def test_a_sessions_file_drives_the_named_evses_and_maps_the_others_in_order() -> None:
    text = HEADER + (
        "s1,garage-7,2025-06-01T08:00:00Z,2025-06-01T12:00:00Z,20,11,,\n"
        "s2,CS-00001:1,2025-06-01T07:30:00Z,2025-06-01T09:00:00Z,10.5,50,false,\n"
        "s3,CS-00002:2,2025-06-01T09:00:00+00:00,2025-06-01T18:00:00Z,15,11,true,7\n"
        "s4,garage-8,2025-06-01T10:00:00Z,2025-06-01T11:00:00Z,5,7.4,,\n"
        "s5,garage-7,2025-06-01T13:00:00Z,2025-06-01T15:00:00Z,5,11,,\n"
    )  # fmt: skip
    rows = parse(text)
    assert [r.line for r in rows] == [2, 3, 4, 5, 6] and rows[2].v2g and rows[2].max_discharge_kw == 7
    fleet = build(3, 1)[1]
    start = datetime(2026, 3, 2, 12, tzinfo=UTC)
    visits = {v.session_id: v for v in sessions.from_rows(rows, fleet, start)}
    placed = {k: (v.station_id, v.evse) for k, v in visits.items()}
    # the others take the fleet's EVSEs in order, skipping those named
    named = {("CS-00001", 1), ("CS-00002", 2)}
    first_free = [(s.station_id, n) for s in fleet for n in range(1, s.evses + 1) if (s.station_id, n) not in named]
    assert placed == {"s1": first_free[0], "s2": ("CS-00001", 1), "s3": ("CS-00002", 2), "s4": first_free[1],
                      "s5": first_free[0]}  # fmt: skip
    first = start.timestamp() + sessions.FIRST_ARRIVAL_S
    assert visits["s2"].arrival == first and visits["s1"].arrival == first + 1_800  # shifted, spacing kept
    assert visits["s3"].departure - visits["s3"].arrival == 9 * 3_600
    assert visits["s3"].max_discharge_w == 7_000 and visits["s1"].max_discharge_w == 0  # v2g on a bidirectional one
    assert visits["s2"].energy_wh == 10_500 and visits["s2"].max_charge_w == 50_000


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ("s2,e1,2025-06-01T09:00:00Z,2025-06-01T08:00:00Z,5,11,,", "departure"),
        ("s2,e1,yesterday,2025-06-01T08:00:00Z,5,11,,", "arrival is not an ISO-8601 time"),
        ("s2,e1,2025-06-01T07:00:00Z,2025-06-01T08:00:00Z,lots,11,,", "energy_kwh is not a number"),
        ("s2,e1,2025-06-01T07:00:00Z,2025-06-01T08:00:00Z,5,0,,", "max_kw must be above 0"),
        ("s2,e1,2025-06-01T07:00:00Z,2025-06-01T08:00:00Z,5,11,maybe,", "v2g is true or false"),
        (",e1,2025-06-01T07:00:00Z,2025-06-01T08:00:00Z,5,11,,", "session_id is empty"),
    ],
)  # fmt: skip
def test_a_bad_row_names_its_line(row: str, says: str) -> None:
    good = "s1,e1,2025-06-01T07:00:00Z,2025-06-01T08:00:00Z,5,11,,\n"
    with pytest.raises(SessionsError, match=f"^line 3: .*{says}"):
        parse(HEADER + good + row + "\n")


def test_a_sessions_file_that_does_not_fit_the_fleet_says_so() -> None:
    fleet = build(2, 1)[1]
    start = datetime(2026, 3, 2, tzinfo=UTC)
    with pytest.raises(SessionsError, match="^line 1: the header lacks max_kw"):
        parse("session_id,evse_id,arrival,departure,energy_kwh\n")
    unknown = parse(HEADER + "s1,CS-00009:1,2025-06-01T07:00:00Z,2025-06-01T08:00:00Z,5,11,,\n")
    with pytest.raises(SessionsError, match="^line 2: CS-00009 is not one of the fleet's 2 stations"):
        sessions.from_rows(unknown, fleet, start)
    evses = sum(s.evses for s in fleet)
    many = HEADER + "".join(f"s{i},bay{i},2025-06-01T07:00:00Z,2025-06-01T08:00:00Z,5,11,,\n" for i in range(evses + 1))
    with pytest.raises(SessionsError, match=f"^line {evses + 2}: the sessions name more EVSEs"):
        sessions.from_rows(parse(many), fleet, start)


def test_the_cli_names_the_bad_line_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "sessions.csv"
    bad.write_text(HEADER + "s1,e1,2025-06-01T07:00:00Z,2025-06-01T08:00:00Z,5,11,,\n"
                            "s2,e2,2025-06-01T07:00:00Z,soon,5,11,,\n")  # fmt: skip
    done = subprocess.run([*TWIN, "simulate", "--live", "ws://127.0.0.1:9/ocpp", "--sessions", str(bad)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    said = " ".join(done.stderr.split())  # as Rich wraps it
    assert "line 3: departure is not an ISO-8601 time" in said and "Traceback" not in said


# -- stations that obey, through a real gateway -------------------------------------------------


class Sent:
    """Every frame the simulated stations sent, checked against its protocol's schemas."""

    def __init__(self) -> None:
        self.frames: list[live.Sent] = []

    def __call__(self, frame: live.Sent) -> None:
        self.frames.append(frame)

    def problems(self) -> list[str]:
        return [f"{f.station_id} {f.action} {f.kind}: {v.reason}" for f in self.frames
                if (v := schemas.problem(f.protocol, f.action, f.kind, f.payload)) is not None]  # fmt: skip


@contextlib.asynccontextmanager
async def simulating(target: str, visits: list[sessions.Visit], stations: int = 5, speed: float = 300,
                     **options: Any) -> AsyncIterator[Sent]:  # fmt: skip
    sent = Sent()
    start = datetime.now(UTC)
    opts = live.Options(target, speed, days=1, on_sent=sent, start=start, **options)
    stop = asyncio.Event()
    fleet = build(stations, 1)[1]
    task = asyncio.create_task(live.run(fleet, sessions.by_station(visits), opts, stop))
    try:
        yield sent
    finally:
        stop.set()
        summary = await asyncio.wait_for(task, 15)
        assert summary.errors == 0, summary


def csv_visits(rows: str, stations: int = 5) -> list[sessions.Visit]:
    return sessions.from_rows(parse(HEADER + rows), build(stations, 1)[1], datetime.now(UTC))


def meter_of(record: dict[str, Any]) -> dict[str, float]:
    return {v["measurand"]: v["value"] for v in record["payload"]["meterValue"][0]["sampledValue"]}


def updates_after(records: list[dict[str, Any]], station: str, answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in of_station(records, station) if r["action"] == "TransactionEvent" and r["msg_type"] == 2
            and r["payload"]["eventType"] == "Updated" and r["conn_id"] == answer["conn_id"]
            and r["seq"] > answer["seq"]]  # fmt: skip


def enough_updates(station: str, n: int) -> Callable[[list[dict[str, Any]]], bool]:
    def check(records: list[dict[str, Any]]) -> bool:
        answers = [
            r for r in of_station(records, station) if r["action"] == "SetChargingProfile" and r["msg_type"] == 3
        ]
        return bool(answers) and len(updates_after(records, station, answers[-1])) >= n

    return check


async def started(settings: Settings, station: str) -> str:
    records = await read_until(settings, has("TransactionEvent", station, msg_type=2), timeout=20)
    first = next(r for r in of_station(records, station) if r["action"] == "TransactionEvent")
    return str(first["payload"]["transactionInfo"]["transactionId"])


def outcomes(records: list[dict[str, Any]], station: str) -> list[dict[str, Any]]:
    """The station's answers to SetChargingProfile and the commands the gateway did not deliver."""
    return [r for r in of_station(records, station)
            if (r["action"], r["msg_type"]) in (("SetChargingProfile", 3), ("CommandUndelivered", 0))]  # fmt: skip


async def send_profile(settings: Settings, station: str, request: dict[str, Any]) -> dict[str, Any]:
    """The outcome of a SetChargingProfile sent through ocpp.commands (one at a time)."""
    before = len(outcomes(await read_until(settings, lambda _: True), station))
    await produce_command(settings, command(station, "SetChargingProfile", request, "test"))
    records = await read_until(settings, lambda rs: len(outcomes(rs, station)) > before, timeout=20)
    return outcomes(records, station)[-1]


async def test_a_limit_is_obeyed_and_what_a_station_cannot_do_is_rejected(gateway: Any, settings: Settings) -> None:
    gw = await gateway(mode="csms")
    rows = ("dc,CS-00001:1,2025-06-01T08:00:00Z,2025-06-01T20:00:00Z,40,150,,\n"
            "old,CS-00004:1,2025-06-01T08:00:00Z,2025-06-01T20:00:00Z,20,11,,\n"
            "ac,CS-00005:1,2025-06-01T08:00:00Z,2025-06-01T20:00:00Z,20,11,,\n")  # fmt: skip
    async with simulating(
        url(gw, "x").rsplit("/", 1)[0], csv_visits(rows), reject_profiles=frozenset({"CS-00005"})
    ) as sent:
        tx = await started(settings, "CS-00001")
        limit = profile(11, "TxProfile", [{"startPeriod": 0, "limit": 3_000.0}], stack=1, transactionId=tx)
        answer = await send_profile(settings, "CS-00001", limit)
        assert answer["payload"] == {"status": "Accepted"}
        records = await read_until(settings, enough_updates("CS-00001", 5), timeout=30)
        updates = [meter_of(r) | {"at": r["payload"]["timestamp"]} for r in updates_after(records, "CS-00001", answer)]
        for before, after in zip(updates[1:], updates[2:], strict=False):  # the first may be on its way already
            assert 0 < after["Power.Active.Import"] <= 3_000
            hours = (datetime.fromisoformat(after["at"]) - datetime.fromisoformat(before["at"])) / timedelta(hours=1)
            drawn = after["Energy.Active.Import.Register"] - before["Energy.Active.Import.Register"]
            assert drawn == pytest.approx(3_000 * hours, abs=0.2)  # the register follows what was drawn

        v2x = profile(12, "TxProfile", [V2X_PERIOD], transactionId=tx)  # V2X on a unidirectional station
        answer = await send_profile(settings, "CS-00001", v2x)
        assert answer["payload"]["status"] == "Rejected"
        assert answer["payload"]["statusInfo"]["reasonCode"] == "UnsupportedParam" and answer["valid"]
        # on OCPP 2.0.1 the gateway itself refuses it: those fields are not in 2.0.1's schema
        old_tx = await started(settings, "CS-00004")
        answer = await send_profile(settings, "CS-00004", profile(13, "TxProfile", [V2X_PERIOD], transactionId=old_tx))
        assert answer["action"] == "CommandUndelivered" and "Violation" in answer["payload"]["reason"]
        low = [{"startPeriod": 0, "limit": 2_000.0}]
        answer = await send_profile(settings, "CS-00004", profile(14, "TxProfile", low, transactionId="not-running"))
        assert answer["payload"]["status"] == "Rejected"
        assert answer["payload"]["statusInfo"]["reasonCode"] == "TxNotFound"
        ac_tx = await started(settings, "CS-00005")  # --reject-profiles
        answer = await send_profile(settings, "CS-00005", profile(15, "TxProfile", low, transactionId=ac_tx))
        assert answer["payload"]["status"] == "Rejected"
    assert sent.frames and not sent.problems()
    assert all(r["valid"] for r in records if r["origin"] == "cs")


async def test_a_negative_setpoint_makes_a_v2g_ev_give_energy_back(gateway: Any, settings: Settings) -> None:
    gw = await gateway(mode="csms")
    rows = "v2g,CS-00002:1,2025-06-01T08:00:00Z,2025-06-01T20:00:00Z,20,11,true,10\n"
    async with simulating(url(gw, "x").rsplit("/", 1)[0], csv_visits(rows)) as sent:
        records = await read_until(settings, has("NotifyEVChargingNeeds", "CS-00002", msg_type=2), timeout=20)
        needs = next(r for r in records if r["action"] == "NotifyEVChargingNeeds")["payload"]["chargingNeeds"]
        assert needs["requestedEnergyTransfer"] == "AC_BPT" and needs["controlMode"] == "DynamicControl"
        assert needs["v2xChargingParameters"]["maxDischargePower"] == 10_000
        assert needs["acChargingParameters"]["energyAmount"] == 20_000
        tx = await started(settings, "CS-00002")
        discharge = profile(21, "TxProfile", [V2X_PERIOD], transactionId=tx)
        answer = await send_profile(settings, "CS-00002", discharge)
        assert answer["payload"] == {"status": "Accepted"}
        records = await read_until(settings, enough_updates("CS-00002", 4), timeout=30)
        updates = updates_after(records, "CS-00002", answer)[1:]
        meters = [meter_of(r) for r in updates]
        assert all(m["Power.Active.Export"] == 5_000 and m["Power.Active.Import"] == 0 for m in meters)
        earlier = [meter_of(r) for r in of_station(records, "CS-00002") if r["action"] == "TransactionEvent"
                   and r["msg_type"] == 2 and r["seq"] < answer["seq"]]  # fmt: skip
        assert all(str(m["Power.Active.Export"]) == "0.0" for m in earlier)  # charging: no export, and not -0.0
        exports = [m["Energy.Active.Export.Register"] for m in meters]
        assert exports == sorted(exports) and exports[-1] > exports[0]
        assert all(r["payload"]["transactionInfo"]["operationMode"] == "CentralSetpoint" for r in updates)
        socs = [m["SoC"] for m in meters]
        assert socs[-1] < socs[0]
    assert not sent.problems()


async def test_a_drawn_fleet_boots_and_a_car_charges_at_once(gateway: Any, settings: Settings) -> None:
    gw = await gateway(mode="csms")
    fleet = build(5, 1)[1]
    start = datetime.now(UTC)
    visits = [v for s in fleet for v in sessions.generate(s, 1, start, 1)]
    soon = start.timestamp() + 1_200
    assert {v.station_id for v in visits if v.evse == 1 and v.arrival <= soon} == {s.station_id for s in fleet}
    async with simulating(url(gw, "x").rsplit("/", 1)[0], visits, speed=600) as sent:
        await read_until(settings, has("BootNotification", count=10), timeout=20)

        def charging(records: list[dict[str, Any]]) -> bool:
            return any(r["station_id"] == "CS-00001" and r["action"] == "TransactionEvent" and r["msg_type"] == 2
                       and meter_of(r).get("Power.Active.Import", 0) > 0 for r in records)  # fmt: skip

        records = await read_until(settings, charging, timeout=20)
    boots = {r["station_id"] for r in records if r["action"] == "BootNotification" and r["msg_type"] == 2}
    assert boots == {s.station_id for s in fleet}
    assert sum(r["action"] == "StatusNotification" and r["msg_type"] == 2 for r in records) >= sum(
        s.evses for s in fleet
    )
    assert sent.frames and not sent.problems()
    assert all(r["valid"] for r in records if r["origin"] == "cs")


async def test_faults_and_outages_are_played_live_and_recorded(gateway: Any, settings: Settings) -> None:
    """--faults and --outages live: an empty bay goes Faulted with a NotifyEvent of the
    connector's problem and comes back Available; a station loses its network (1006 at the
    gateway) and comes back without a reboot, its EVSEs' statuses sent again. Every frame
    valid; none of it without the options (the other tests here)."""
    gw = await gateway(mode="csms")

    def played(records: list[dict[str, Any]]) -> bool:
        faulted = [r for r in records if r["action"] == "StatusNotification" and r["msg_type"] == 2
                   and r["payload"]["connectorStatus"] == "Faulted"]  # fmt: skip
        lost = [r for r in records if r["action"] == "Disconnected" and (r["payload"] or {}).get("code") == 1006]
        back = [r for r in records if r["action"] == "Connected" and any(
            d["station_id"] == r["station_id"] and d["ts"] < r["ts"] for d in lost)]  # fmt: skip
        statuses = [r for r in records if r["action"] == "StatusNotification" and r["msg_type"] == 2]
        return bool(faulted and lost and back) and has("NotifyEvent", msg_type=2)(records) and any(
            r["payload"]["connectorStatus"] == "Available" and r["ts"] > min(f["ts"] for f in faulted)
            for r in statuses)  # fmt: skip

    async with simulating(url(gw, "x").rsplit("/", 1)[0], [], stations=2, speed=3_600, faults_per_day=100,
                          outages_per_day=60) as sent:  # fmt: skip
        records = await read_until(settings, played, timeout=30)
    assert sum(r["action"] == "BootNotification" and r["msg_type"] == 2 for r in records) == 2  # no reboot
    problem = next(r for r in records if r["action"] == "NotifyEvent" and r["msg_type"] == 2)["payload"]["eventData"][0]
    assert (problem["component"]["name"], problem["variable"]["name"], problem["actualValue"]) == (
        "Connector", "Problem", "true")  # fmt: skip
    assert all(r["valid"] for r in records if r["origin"] == "cs") and not sent.problems()


async def test_a_2_0_1_station_rejects_v2x_sent_to_it_directly() -> None:
    """The gateway never lets a V2X profile reach an OCPP 2.0.1 station; a CSMS of ours here does."""
    answers: asyncio.Queue[list[Any]] = asyncio.Queue()

    async def csms(ws: ServerConnection) -> None:
        request = profile(1, "TxDefaultProfile", [V2X_PERIOD], evse=0)
        async for text in ws:
            frame = orjson.loads(text)
            if frame[0] == 2:
                await ws.send(
                    orjson.dumps([3, frame[1], respond(frame[2], frame[3], Context("ocpp2.0.1", 60))]).decode()
                )
                if frame[2] == "StatusNotification":
                    await ws.send(orjson.dumps([2, "p1", "SetChargingProfile", request]).decode())
            else:
                await answers.put(frame)

    async with serve(csms, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"]) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        station = build(4, 1)[1][3]
        assert station.protocol == "ocpp2.0.1"
        async with simulating(f"ws://127.0.0.1:{port}/ocpp", [], stations=4) as sent:
            answer = await asyncio.wait_for(answers.get(), 10)
    assert answer[2]["status"] == "Rejected" and answer[2]["statusInfo"]["reasonCode"] == "UnsupportedParam"
    assert not sent.problems()


async def test_a_dropped_station_reconnects_without_a_reboot_and_sends_what_it_held() -> None:
    calls: list[tuple[int, str, dict[str, Any]]] = []  # (connection, action, payload)
    connections = 0

    async def csms(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        n = connections
        async for text in ws:
            frame = orjson.loads(text)
            if frame[0] != 2:
                continue
            calls.append((n, frame[2], frame[3]))
            answer = respond(frame[2], frame[3], Context("ocpp2.1", 60))
            await ws.send(orjson.dumps([3, frame[1], answer]).decode())
            if n == 1 and frame[2] == "TransactionEvent" and frame[3]["eventType"] == "Updated":
                await ws.close(1011)  # the CSMS drops the station
                return

    async with serve(csms, "127.0.0.1", 0, subprotocols=["ocpp2.1"]) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        visits = csv_visits("a,CS-00001:1,2025-06-01T08:00:00Z,2025-06-01T20:00:00Z,40,50,,\n", stations=1)
        async with simulating(f"ws://127.0.0.1:{port}/ocpp", visits, stations=1) as sent:
            for _ in range(100):
                if sum(n == 2 and action == "TransactionEvent" for n, action, _ in calls) >= 3:
                    break
                await asyncio.sleep(0.1)
    again = [(action, payload) for n, action, payload in calls if n == 2]
    assert again and again[0][0] == "StatusNotification" and "BootNotification" not in [a for a, _ in again]
    assert any(p.get("offline") for a, p in again if a == "TransactionEvent")  # due while it was away
    seq = [p["seqNo"] for _, a, p in calls if a == "TransactionEvent"]
    assert seq == list(range(len(seq)))  # nothing lost, nothing twice
    assert not sent.problems()


def test_clear_charging_profile_removes_what_it_names() -> None:
    station = build(1, 1)[1][0]
    agent = live.StationAgent(station, [], live.Options("ws://unused"), live.Clock(T0, 1), live.Summary())
    cap = profile(7, "TxDefaultProfile", [{"startPeriod": 0, "limit": 5_000}], evse=0)
    assert agent.answer("SetChargingProfile", cap) == {"status": "Accepted"} and set(agent.profiles) == {7}
    assert agent.answer("ClearChargingProfile", {"chargingProfileId": 8}) == {"status": "Unknown"}
    criteria = {"chargingProfileCriteria": {"chargingProfilePurpose": "TxDefaultProfile", "evseId": 0}}
    assert agent.answer("ClearChargingProfile", criteria) == {"status": "Accepted"} and not agent.profiles
    assert agent.answer("ClearChargingProfile", {}) == {"status": "Unknown"}
    for action in ("GetVariables", "TriggerMessage", "RequestStartTransaction"):  # the smallest valid answer
        assert schemas.problem(station.protocol, action, "Response", agent.answer(action, {})) is None


def test_a_reading_as_a_profile_lands_tells_the_power_from_then_on() -> None:
    """A profile caught the EV up to the moment it landed; a meter reading then (off the
    station's reading grid) gives what the EVSE draws now, not the step before: a report
    holds a reading's power until the next one."""
    from twin.simulator import payloads

    station = build(1, 1)[1][0]
    agent = live.StationAgent(station, [], live.Options("ws://unused"), live.Clock(T0, 1), live.Summary())
    e = agent.evses[1]
    e.ev, e.state, e.tx_id, e.tx_start = EV(60_000, 11_000), EVState(20_000, 40_000, power_w=11_000), "T1", T0
    e.last_t = agent.clock.now()

    def reading() -> float:
        return next(v["value"] for v in payloads.meter(station, e, e.last_t)["sampledValue"]
                    if v["measurand"] == "Power.Active.Import")  # fmt: skip

    cap = profile(7, "TxDefaultProfile", [{"startPeriod": 0, "limit": 3_000}], evse=0)
    assert agent.answer("SetChargingProfile", cap) == {"status": "Accepted"}
    assert reading() == 3_000 and e.setting.limit_w == 3_000
    assert agent.answer("ClearChargingProfile", {"chargingProfileId": 7}) == {"status": "Accepted"}
    assert reading() == 11_000 and e.setting == FREE


# -- the command --------------------------------------------------------------------------------


async def test_the_command_runs_a_sessions_file_and_stops_on_sigterm(gateway: Any, settings: Settings,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    gw = await gateway(mode="csms")
    target = url(gw, "x").rsplit("/", 1)[0]
    csv = tmp_path / "sessions.csv"
    csv.write_text(HEADER + "a,bay-1,2025-06-01T08:00:00Z,2025-06-01T08:20:00Z,3,11,,\n"
                            "b,CS-00002:2,2025-06-01T08:05:00Z,2025-06-01T08:30:00Z,3,11,true,5\n")  # fmt: skip
    done = await asyncio.create_subprocess_exec(
        *TWIN, "simulate", "--live", target, "--stations", "2", "--sessions", str(csv), "--speed", "600", "--json",
        "--reject-profiles", "CS-00001", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await asyncio.wait_for(done.communicate(), 60)  # ends after the last departure
    assert done.returncode == 0, err.decode()
    summary = orjson.loads(out)
    assert summary["stations"] == 2 and summary["sessions"] == 2 and summary["errors"] == 0
    assert {"frames_sent", "answers_received", "profiles_accepted", "profiles_rejected"} <= summary.keys()
    assert summary["answers_received"] == summary["frames_sent"] > 10
    records = await read_until(settings, has("TransactionEvent", count=4, msg_type=2), timeout=20)
    ended = [r for r in records if r["action"] == "TransactionEvent" and r["msg_type"] == 2
             and r["payload"]["eventType"] == "Ended"]  # fmt: skip
    assert {(r["station_id"], r["payload"]["evse"]["id"]) for r in ended} == {("CS-00001", 1), ("CS-00002", 2)}

    process = await asyncio.create_subprocess_exec(
        *TWIN, "simulate", "--live", target, "--stations", "2", "--prefix", "SIG", "--speed", "60", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    await read_until(settings, has("BootNotification", "SIG-00002", msg_type=3), timeout=30)
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    assert orjson.loads(out)["stations"] == 2 and "Traceback" not in err.decode()
    records = await read_until(settings, has("Disconnected", "SIG-00002"), timeout=20)
    assert [
        r["payload"]["code"] for r in records if r["action"] == "Disconnected" and r["station_id"] == "SIG-00001"
    ] == [1000]
