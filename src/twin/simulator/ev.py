"""One EV's session as physics: what it draws under the charging profile in force, and what
that does to its battery. Pure: no I/O, no clock, no randomness. The live simulator steps it
between meter readings; a virtual-time evaluator can step it the same way.

Power is in W, positive for charging (import) and negative for discharging (export); energy
in Wh; times in seconds (since the epoch, or since a schedule's start where it says so).

A profile's ``chargingRateUnit`` A is turned into W at ``AC_VOLTS`` per phase times the
period's ``numberPhases`` (3 when absent) on AC, and at ``DC_VOLTS`` on DC.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

AC_VOLTS = 230.0
AC_PHASES = 3
DC_VOLTS = 400.0
MET_WH = 1.0
"""A need within this of its target counts as met (float steps never land exactly on it)."""
WEEK_S, DAY_S = 7 * 86_400, 86_400


@dataclass(frozen=True)
class EV:
    """What the EV can do where it is plugged in (its limits and the EVSE's, whichever lower)."""

    battery_wh: float
    max_charge_w: float
    max_discharge_w: float = 0.0  # 0: it cannot give energy back
    floor_wh: float = 0.0  # it never discharges below this much stored energy


@dataclass(frozen=True)
class EVState:
    stored_wh: float  # energy in the battery
    target_wh: float  # stored energy the driver asked for by departure
    imported_wh: float = 0.0  # this session, through the EVSE
    exported_wh: float = 0.0
    power_w: float = 0.0  # what it drew over the last step

    @property
    def need_wh(self) -> float:
        return max(0.0, self.target_wh - self.stored_wh)

    def soc(self, ev: EV) -> float:
        return 100.0 * self.stored_wh / ev.battery_wh if ev.battery_wh > 0 else 0.0


@dataclass(frozen=True)
class Setting:
    """What one schedule period asks, in W; ``None`` where it says nothing."""

    mode: str = "ChargingOnly"  # the period's operationMode
    limit_w: float | None = None
    setpoint_w: float | None = None  # CentralSetpoint: negative = discharge
    discharge_limit_w: float | None = None  # <= 0


FREE = Setting()
"""No profile in force: the EV draws what it can."""


def power(ev: EV, state: EVState, setting: Setting, dt_s: float) -> float:
    """The power the EV draws over ``dt_s`` seconds under ``setting``: the lowest of its max,
    the period's limit and what it still needs (as a rate over the step); under
    CentralSetpoint the setpoint, bounded by its max, the battery's room or, discharging, the
    discharge limit and the energy above its floor; nothing when Idle."""
    if setting.mode == "Idle" or dt_s <= 0:
        return 0.0
    per_s = 3_600.0 / dt_s  # Wh over the step -> W
    limit = math.inf if setting.limit_w is None else max(0.0, setting.limit_w)
    if setting.mode == "CentralSetpoint" and setting.setpoint_w is not None:
        if setting.setpoint_w < 0:
            cap = ev.max_discharge_w
            if setting.discharge_limit_w is not None:
                cap = min(cap, abs(setting.discharge_limit_w))
            above_floor = max(0.0, state.stored_wh - ev.floor_wh)
            w = min(-setting.setpoint_w, cap, above_floor * per_s)
            return -w if w > 0 else 0.0
        room = max(0.0, ev.battery_wh - state.stored_wh)
        return max(0.0, min(setting.setpoint_w, ev.max_charge_w, limit, room * per_s))
    need = state.need_wh if state.need_wh >= MET_WH else 0.0
    return max(0.0, min(ev.max_charge_w, limit, need * per_s))


def step(ev: EV, state: EVState, setting: Setting, dt_s: float) -> EVState:
    """The state after ``dt_s`` seconds under ``setting``."""
    if dt_s <= 0:
        return state
    w = power(ev, state, setting, dt_s)
    wh = w * dt_s / 3_600.0
    return replace(
        state,
        stored_wh=state.stored_wh + wh,
        imported_wh=state.imported_wh + max(wh, 0.0),
        exported_wh=state.exported_wh + max(-wh, 0.0),
        power_w=w,
    )


def charging_state(state: EVState) -> str:
    """OCPP's chargingState for the last step: energy flowing either way is Charging; none
    because the EV has what it asked for is SuspendedEV; none because the EVSE holds it back
    (Idle, a zero limit) is SuspendedEVSE."""
    if state.power_w != 0:
        return "Charging"
    return "SuspendedEV" if state.need_wh < MET_WH else "SuspendedEVSE"


# -- charging profiles --------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start_s: float  # since the schedule's start
    setting: Setting


@dataclass(frozen=True)
class Profile:
    """A charging profile as a station keeps it: its first schedule, in W."""

    id: int
    stack_level: int
    purpose: str
    evse_id: int
    kind: str  # Absolute, Relative, Recurring, Dynamic
    periods: tuple[Period, ...]
    transaction_id: str | None = None
    start: float | None = None  # startSchedule (s since the epoch); Relative: None
    duration_s: float | None = None
    recurrency_s: float | None = None  # Recurring: a day or a week
    valid_from: float | None = None
    valid_to: float | None = None

    def base(self, t: float, tx_start: float | None) -> float | None:
        """When the schedule in force at ``t`` began (None: not started)."""
        if self.kind == "Relative":
            return tx_start
        if self.start is None or self.start > t:
            return None if self.start is not None else tx_start
        if self.recurrency_s:
            return self.start + (t - self.start) // self.recurrency_s * self.recurrency_s
        return self.start

    def setting_at(self, t: float, tx_start: float | None) -> Setting | None:
        """The period in force at ``t``; None when the profile says nothing then."""
        if (self.valid_from is not None and t < self.valid_from) or (self.valid_to is not None and t >= self.valid_to):
            return None
        base = self.base(t, tx_start)
        if base is None:
            return None
        elapsed = t - base
        if elapsed < 0 or (self.duration_s is not None and elapsed >= self.duration_s):
            return None
        current = None
        for period in self.periods:
            if period.start_s <= elapsed:
                current = period.setting
        return current

    def next_change(self, t: float, tx_start: float | None) -> float:
        """The first moment after ``t`` at which :meth:`setting_at` may change."""
        moments = [m for m in (self.valid_from, self.valid_to, self.start) if m is not None]
        base = self.base(t, tx_start)
        if base is not None:
            moments += [base + p.start_s for p in self.periods]
            if self.duration_s is not None:
                moments.append(base + self.duration_s)
            if self.recurrency_s:
                moments.append(base + self.recurrency_s)
        return min((m for m in moments if m > t), default=math.inf)


def profile_of(request: Mapping[str, Any], received_at: float, ac: bool = True) -> Profile:
    """A SetChargingProfileRequest's profile. An Absolute or Dynamic profile without a
    ``startSchedule`` starts when received."""
    p = request["chargingProfile"]
    schedule = p["chargingSchedule"][0]
    amps = schedule["chargingRateUnit"] == "A"
    periods = tuple(
        Period(float(period["startPeriod"]), _setting(period, amps, ac))
        for period in sorted(schedule["chargingSchedulePeriod"], key=lambda x: x["startPeriod"])
    )
    kind = p["chargingProfileKind"]
    start = _epoch(schedule.get("startSchedule"))
    if start is None and kind in ("Absolute", "Dynamic"):
        start = received_at
    recurrency = {"Daily": DAY_S, "Weekly": WEEK_S}.get(p.get("recurrencyKind", "")) if kind == "Recurring" else None
    return Profile(
        id=int(p["id"]),
        stack_level=int(p["stackLevel"]),
        purpose=p["chargingProfilePurpose"],
        evse_id=int(request.get("evseId", 0)),
        kind=kind,
        periods=periods,
        transaction_id=p.get("transactionId"),
        start=start,
        duration_s=schedule.get("duration"),
        recurrency_s=recurrency,
        valid_from=_epoch(p.get("validFrom")),
        valid_to=_epoch(p.get("validTo")),
    )


def _setting(period: Mapping[str, Any], amps: bool, ac: bool) -> Setting:
    scale = (AC_VOLTS * period.get("numberPhases", AC_PHASES) if ac else DC_VOLTS) if amps else 1.0

    def watts(key: str) -> float | None:
        value = period.get(key)
        return None if value is None else float(value) * scale

    return Setting(
        mode=period.get("operationMode", "ChargingOnly"),
        limit_w=watts("limit"),
        setpoint_w=watts("setpoint"),
        discharge_limit_w=watts("dischargeLimit"),
    )


def _epoch(iso: str | None) -> float | None:
    return None if not iso else datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def in_force(profiles: Iterable[Profile], t: float, evse_id: int, tx_id: str | None,
             tx_start: float | None) -> Setting:  # fmt: skip
    """What an EVSE's transaction obeys at ``t``: the TxProfile for its transaction, else a
    TxDefaultProfile (the EVSE's own before the station-wide one, evseId 0), the highest
    ``stackLevel`` of those that say something then; else :data:`FREE`."""
    ranked: list[tuple[int, int, int, Setting]] = []
    for p in profiles:
        if p.evse_id not in (0, evse_id):
            continue
        if p.purpose == "TxProfile" and tx_id is not None and p.transaction_id == tx_id:
            rank = 2
        elif p.purpose == "TxDefaultProfile":
            rank = 1
        else:
            continue
        setting = p.setting_at(t, tx_start)
        if setting is not None:
            ranked.append((rank, p.stack_level, int(p.evse_id == evse_id), setting))
    return max(ranked, key=lambda r: r[:3])[3] if ranked else FREE


def advance(ev: EV, state: EVState, profiles: Iterable[Profile], t0: float, t1: float, evse_id: int,
            tx_id: str | None, tx_start: float | None) -> tuple[EVState, Setting]:  # fmt: skip
    """The state at ``t1`` from ``t0``, stepping at every moment a profile's period changes;
    and the setting in force over the last step. ``state.power_w`` is that step's power."""
    kept = list(profiles)
    setting = in_force(kept, t0, evse_id, tx_id, tx_start)
    t = t0
    while t < t1:
        setting = in_force(kept, t, evse_id, tx_id, tx_start)
        until = min([t1, *(p.next_change(t, tx_start) for p in kept)])
        state = step(ev, state, setting, until - t)
        t = until
    return state, setting


def retuned(ev: EV, state: EVState, profiles: Iterable[Profile], t: float, evse_id: int, tx_id: str | None,
            tx_start: float | None, horizon_s: float) -> tuple[EVState, Setting]:  # fmt: skip
    """The state at ``t`` once the profiles changed then: the same energy, the power the EV
    draws from ``t`` on (over ``horizon_s``, the next reading's distance). A reading taken at
    the moment a profile lands tells what the EVSE does now, not the step before it."""
    setting = in_force(list(profiles), t, evse_id, tx_id, tx_start)
    return replace(state, power_w=power(ev, state, setting, horizon_s)), setting
