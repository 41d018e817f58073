"""A plan as OCPP: the ``SetChargingProfile`` each charging EVSE is sent, and why it got
what it got. Pure.

A ``TxProfile`` for the running transaction, in W, absolute from the moment planned, a
period per change of the planned power (at most ``MAX_PERIODS``; the last holds). Charging
periods carry a ``limit``. On a bidirectional EVSE of an OCPP 2.1 station with V2X allowed, a
period where the plan gives energy back is ``operationMode`` ``CentralSetpoint`` with a
negative ``setpoint`` (and the same ``dischargeLimit``), and the charging periods around it
say ``ChargingOnly``; OCPP 2.0.1 stations get limits alone, valid for 2.0.1.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from twin import envelope
from twin.control.needs import Need
from twin.control.planner import Plan

PROFILE_ID = 7000
"""Profile ids are PROFILE_ID + the EVSE id: each plan replaces the last one on its EVSE."""
STACK_LEVEL = 5
MAX_PERIODS = 24
"""Stations take at least this many periods a schedule (ChargingScheduleMaxPeriods)."""
ROUND_W = 100


def periods(plan: Plan, key: str) -> list[tuple[float, float]]:
    """The plan of one EV as (start in seconds from now, kW), equal neighbours merged."""
    out: list[tuple[float, float]] = []
    for start, kw in zip(plan.starts_s, plan.power_kw.get(key, [0.0]), strict=False):
        watts = round(kw * 1000 / ROUND_W) * ROUND_W
        if not out or out[-1][1] != watts:
            out.append((start, watts))
    return [(start, watts / 1000) for start, watts in out[:MAX_PERIODS]]


def charging_profile(need: Need, plan: Plan, now: datetime) -> dict[str, Any]:
    """The SetChargingProfile request for ``need``'s EVSE."""
    v2x = need.protocol == "ocpp2.1" and need.demand.max_discharge_kw > 0
    schedule = []
    for start, kw in periods(plan, need.key):
        period: dict[str, Any] = {"startPeriod": int(start)}
        if kw < 0 and v2x:
            period.update(limit=0.0, setpoint=kw * 1000, dischargeLimit=kw * 1000, operationMode="CentralSetpoint")
        else:
            period["limit"] = max(kw, 0.0) * 1000
            if v2x:
                period["operationMode"] = "ChargingOnly"
        schedule.append(period)
    return {
        "evseId": need.evse_id,
        "chargingProfile": {
            "id": PROFILE_ID + need.evse_id,
            "stackLevel": STACK_LEVEL,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute",
            "transactionId": need.transaction_id,
            "chargingSchedule": [{
                "id": 1,
                "startSchedule": envelope.iso_ms(now.timestamp()),
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": schedule,
            }],
        },
    }  # fmt: skip


def why(need: Need, kw: float, others: int, limit_kw: float, binding: bool) -> str:
    """One line on what the EV got now, and the reason."""
    d = need.demand
    hours = d.departure_s / 3600
    asked = f"needs {d.energy_kwh:.1f} kWh by {need.departure:%H:%M} ({hours:.1f} h, {need.source})"
    if not need.obeys:
        return (f"{asked}; its EVSE did not take the last profile ({need.profile_status}): counted at its "
                f"{d.max_kw:g} kW")  # fmt: skip
    if kw < -1e-3:
        return f"{asked}; gives back {-kw:.1f} kW: the site is asked to export (or the price pays for it)"
    if d.energy_kwh <= 1e-3:
        return f"{asked}; has what it asked for"
    if kw >= d.max_kw - 1e-3:
        return f"{asked}; at its maximum {d.max_kw:g} kW"
    if kw <= 1e-3:
        return (f"{asked}; waits: {others} other EVs share the site's {limit_kw:g} kW and leave sooner or need "
                "more per hour left")  # fmt: skip
    if binding:
        return f"{asked}; {kw:.1f} of its {d.max_kw:g} kW: the site's {limit_kw:g} kW limit is shared by departure"
    # below its maximum, the limit not binding: the plan maximises each EV's energy by its
    # departure first, so holding back means its need is met all the same (the rest of it in
    # this step, or later where prices make later cheaper)
    return f"{asked}; {kw:.1f} of its {d.max_kw:g} kW: its need is met by departure all the same (the site has room)"
