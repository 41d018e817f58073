"""A session's cost under its tariffs (OCPP 2.1 Tariff and Cost): from its readings, cut
wherever a price may change (time of day, energy and time thresholds), idle time, min/max
cost, and a tariff changed in mid-session (the cost so far stays). Pure, like the price in
force (:mod:`twin.tariffs`, whose reading of a tariff this follows); the fold, the reports,
the simulated stations and central cost call it.

A session's readings are its TransactionEvents' import registers (:func:`reading`): the
station prices its own cost by them, the report recomputes it from them, and the twin keeps
those of them that change the cost (:func:`needed`) for central cost. So the three cut a
session at a price boundary at the same place: between the readings either side of it, the
energy taken to flow evenly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from twin.messages import IMPORT, P_IMPORT
from twin.tariffs import START, Tariff, Usage, boundaries, component_price


def reading(payload: Mapping[str, Any]) -> tuple[str, float, float | None] | None:
    """A TransactionEvent's reading: when (its meter value's timestamp, else the event's),
    the import register (Wh) and the import power (W) of its first meter value with a
    register (phase totals only); None without one."""
    for mv in payload.get("meterValue") or ():
        values = {}
        for sv in mv.get("sampledValue", ()):
            if "phase" not in sv:
                values[sv.get("measurand", IMPORT)] = float(sv["value"])
        if IMPORT in values:
            at = str(mv.get("timestamp") or payload.get("timestamp"))
            return at, values[IMPORT], values.get(P_IMPORT)
    return None


@dataclass(frozen=True, slots=True)
class Sample:
    """A reading of a session: when, the energy moved since its start (Wh), the power then."""

    at: datetime
    energy_wh: float
    power_w: float | None = None


@dataclass(slots=True)
class Cost:
    """A session's cost by component (excluding tax; including it where the tariff says), its
    usage, and the total after ``minCost``/``maxCost``."""

    currency: str | None = None
    tariff_id: str | None = None
    energy_wh: float = 0.0
    duration_s: float = 0.0
    charging_s: float = 0.0
    idle_s: float = 0.0
    parts: dict[str, list[float | None]] = field(default_factory=dict)  # component -> [excl, incl]
    total_excl_tax: float = 0.0
    total_incl_tax: float | None = None
    type_of_cost: str = "NormalCost"

    def add(self, name: str, excl: float, incl: float | None) -> None:
        part = self.parts.setdefault(name, [0.0, 0.0])
        part[0] = (part[0] or 0.0) + excl
        part[1] = None if incl is None or part[1] is None else part[1] + incl

    def cost_details(self) -> dict[str, Any]:
        """As OCPP 2.1's ``CostDetailsType`` (TransactionEvent.costDetails)."""
        total: dict[str, Any] = {"currency": self.currency or "EUR", "typeOfCost": self.type_of_cost,
                                 "total": _price_type(self.total_excl_tax, self.total_incl_tax)}  # fmt: skip
        names = {"fixedFee": "fixed", "energy": "energy", "chargingTime": "chargingTime", "idleTime": "idleTime",
                 "reservationTime": "reservationTime", "reservationFixed": "reservationFixed"}  # fmt: skip
        for name, (excl, incl) in self.parts.items():
            total[names[name]] = _price_type(excl or 0.0, incl)
        return {"totalCost": total, "totalUsage": {"energy": round(self.energy_wh, 3),
                                                   "chargingTime": int(self.charging_s),
                                                   "idleTime": int(self.idle_s)}}  # fmt: skip


def _price_type(excl: float, incl: float | None) -> dict[str, float]:
    out = {"exclTax": round(excl, 4)}
    if incl is not None:
        out["inclTax"] = round(incl, 4)
    return out


TariffTimeline = Sequence[tuple[datetime | None, Tariff]]
"""A session's tariffs: each from its moment on (the first from the session's start)."""


def twin_timeline(tx: Mapping[str, Any]) -> list[tuple[datetime | None, Tariff]]:
    """A transaction's tariffs as the twin keeps them (``{"1": {"tariff", "set_at"}, ...}``),
    as :func:`session_cost` takes them: the first from the start."""
    from twin.tariffs import instant

    kept = sorted((tx.get("tariffs") or {}).items(), key=lambda kv: int(kv[0]))
    return [(None if i == 0 else instant(v["set_at"]), v["tariff"]) for i, (_, v) in enumerate(kept)]


def _tariff_then(timeline: TariffTimeline, at: datetime) -> Tariff:
    current = timeline[0][1]
    for since, tariff in timeline:
        if since is None or since <= at:
            current = tariff
    return current


def session_cost(tariff: Tariff | TariffTimeline, start: datetime, samples: Sequence[Sample],
                 end: datetime | None = None, usage: Usage = START, tz: str = "UTC",
                 reservation_s: float | None = None) -> Cost:  # fmt: skip
    """The cost of a session from its start, its readings (energy since the start, rising) and
    its end (default: the last reading). Between two readings the energy flows evenly; a
    stretch where it rises is charging time, one where it does not is idle. Each stretch is
    cut where the price may change and priced by the price in force at its start, given the
    session so far. ``tariff``: one tariff, or a timeline of them (a mid-session change)."""
    timeline: TariffTimeline = [(None, tariff)] if isinstance(tariff, Mapping) else list(tariff)
    if not timeline:
        raise ValueError("no tariff")
    first = _tariff_then(timeline, start)
    cost = Cost(currency=first.get("currency"), tariff_id=first.get("tariffId"))
    state = replace(usage, energy_wh=0.0, duration_s=0.0, charging_s=0.0, idle_s=0.0)
    fixed = component_price(first, "fixedFee", start, state, tz)
    if fixed[0] is not None:
        cost.add("fixedFee", fixed[0], fixed[1])
    if reservation_s is not None:
        r_fixed = component_price(first, "reservationFixed", start, state, tz)
        if r_fixed[0] is not None:
            cost.add("reservationFixed", r_fixed[0], r_fixed[1])
        r_time = component_price(first, "reservationTime", start, state, tz)
        if r_time[0] is not None:
            cost.add("reservationTime", r_time[0] * reservation_s / 60,
                     None if r_time[1] is None else r_time[1] * reservation_s / 60)  # fmt: skip
    points = [Sample(start, 0.0)] + sorted((s for s in samples if s.at >= start), key=lambda s: s.at)
    stop = end or points[-1].at
    if points[-1].at < stop:
        points.append(Sample(stop, points[-1].energy_wh, 0.0))
    changes = [since for since, _ in timeline if since is not None]
    limits = _thresholds(t for _, t in timeline)
    for a, b in zip(points, points[1:], strict=False):
        span = (b.at - a.at).total_seconds()
        if span <= 0:
            continue
        moved = max(0.0, b.energy_wh - a.energy_wh)
        charging = moved > 0
        cuts = {*boundaries([t for _, t in timeline], a.at, b.at, tz), *(c for c in changes if a.at < c < b.at),
                *_crossings(limits, state, a.at, b.at, charging, moved / span)}
        edges = [a.at, *sorted(c for c in cuts if c < b.at), b.at]
        for p, q in zip(edges, edges[1:], strict=False):
            share = (q - p).total_seconds() / span
            seconds, wh = span * share, moved * share
            power = b.power_w if b.power_w is not None else wh / seconds * 3600
            state = replace(state, power_w=power)
            tariff_now = _tariff_then(timeline, p)
            if charging:
                _charge(cost, tariff_now, "energy", p, state, tz, wh / 1000)
                _charge(cost, tariff_now, "chargingTime", p, state, tz, seconds / 60)
            else:
                _charge(cost, tariff_now, "idleTime", p, state, tz, seconds / 60)
            state = replace(state, energy_wh=state.energy_wh + wh, duration_s=state.duration_s + seconds,
                            charging_s=state.charging_s + (seconds if charging else 0.0),
                            idle_s=state.idle_s + (0.0 if charging else seconds))  # fmt: skip
    cost.energy_wh, cost.duration_s = state.energy_wh, state.duration_s
    cost.charging_s, cost.idle_s = state.charging_s, state.idle_s
    _total(cost, _tariff_then(timeline, stop))
    return cost


_PROGRESS = {"minTime": "duration_s", "maxTime": "duration_s", "minChargingTime": "charging_s",
             "maxChargingTime": "charging_s", "minIdleTime": "idle_s", "maxIdleTime": "idle_s",
             "minEnergy": "energy_wh", "maxEnergy": "energy_wh"}  # fmt: skip


def _thresholds(tariffs: Iterable[Tariff]) -> dict[str, set[float]]:
    """The values a session's progress (time, charging and idle time, energy) is compared with."""
    out: dict[str, set[float]] = {}
    for tariff in tariffs:
        for name in ("energy", "chargingTime", "idleTime"):
            for p in (tariff.get(name) or {}).get("prices", ()):
                for key, value in (p.get("conditions") or {}).items():
                    if key in _PROGRESS:
                        out.setdefault(_PROGRESS[key], set()).add(abs(float(value)))
    return out


_POWER = ("minPower", "maxPower", "minCurrent", "maxCurrent")


def needed(tariff: Tariff | TariffTimeline, a: Sample, b: Sample, c: Sample, tz: str = "UTC") -> bool:
    """Whether reading ``b``, between ``a`` and ``c``, changes the session's cost: it does
    unless both stretches charge (or both are idle), no price may change between ``a`` and
    ``c`` (a calendar boundary, :func:`first_cut`; a tariff change), and no price depends on
    the session's progress or power (:func:`progress_priced`: ``b`` would move a threshold's
    crossing or the power seen). Without ``b``, :func:`session_cost` gives the same cost:
    each component is linear in the energy and the time of a stretch priced alike."""
    timeline: TariffTimeline = [(None, tariff)] if isinstance(tariff, Mapping) else list(tariff)
    tariffs = [t for _, t in timeline]
    if (b.energy_wh > a.energy_wh) != (c.energy_wh > b.energy_wh):
        return True
    if any(since is not None and a.at < since < c.at for since, _ in timeline):
        return True
    if progress_priced(tariffs):
        return True
    cut = first_cut(tariffs, a.at, tz)
    return cut is not None and cut < c.at


def progress_priced(tariffs: Iterable[Tariff]) -> bool:
    """Whether a price depends on a session's progress (time, energy) or power."""
    listed = list(tariffs)
    return bool(_thresholds(listed)) or any(
        k in (p.get("conditions") or {}) for t in listed for name in ("energy", "chargingTime", "idleTime")
        for p in (t.get(name) or {}).get("prices", ()) for k in _POWER)  # fmt: skip


def first_cut(tariffs: Tariff | Sequence[Tariff], after: datetime, tz: str = "UTC") -> datetime | None:
    """The first moment after ``after`` where a calendar condition or a ``validFrom`` may change
    a price (:func:`twin.tariffs.boundaries`; a local midnight is one, so it is within two
    days); None without tariffs."""
    cuts = boundaries(tariffs, after, after + timedelta(days=2), tz)
    return cuts[0] if cuts else None


def _crossings(limits: Mapping[str, set[float]], state: Usage, a: datetime, b: datetime, charging: bool,
               wh_per_s: float) -> list[datetime]:  # fmt: skip
    """Where within ``(a, b)`` the session's progress crosses a condition's threshold: its
    price may change there."""
    rates = {"duration_s": 1.0, "charging_s": 1.0 if charging else 0.0, "idle_s": 0.0 if charging else 1.0,
             "energy_wh": wh_per_s}  # fmt: skip
    out = []
    for key, values in limits.items():
        rate, now = rates[key], getattr(state, key)
        for value in values:
            if rate > 0 and value > now:
                t = a + timedelta(seconds=(value - now) / rate)
                if a < t < b:
                    out.append(t)
    return out


def _charge(cost: Cost, tariff: Tariff, name: str, at: datetime, state: Usage, tz: str, amount: float) -> None:
    excl, incl = component_price(tariff, name, at, state, tz)
    if excl is not None and amount > 0:
        cost.add(name, excl * amount, None if incl is None else incl * amount)


def _total(cost: Cost, tariff: Tariff) -> None:
    excl = sum(p[0] or 0.0 for p in cost.parts.values())
    incls = [p[1] for p in cost.parts.values()]
    incl = None if not cost.parts or any(i is None for i in incls) else sum(i or 0.0 for i in incls)
    low, high = tariff.get("minCost"), tariff.get("maxCost")
    if low and _below(excl, incl, low):
        cost.type_of_cost = "MinCost"
        excl, incl = low.get("exclTax", excl), low.get("inclTax", incl)
    elif high and _below_or(high, excl, incl):
        cost.type_of_cost = "MaxCost"
        excl, incl = high.get("exclTax", excl), high.get("inclTax", incl)
    cost.total_excl_tax = round(excl, 6)
    cost.total_incl_tax = None if incl is None else round(incl, 6)


def _below(excl: float, incl: float | None, bound: Mapping[str, Any]) -> bool:
    """Whether the total is below the bound (compared without tax where the bound has it)."""
    if "exclTax" in bound:
        return excl < bound["exclTax"]
    return incl is not None and incl < bound["inclTax"]


def _below_or(bound: Mapping[str, Any], excl: float, incl: float | None) -> bool:
    """Whether the total is above the bound."""
    if "exclTax" in bound:
        return excl > bound["exclTax"]
    return incl is not None and incl > bound["inclTax"]


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
