"""Which EVs come to which EVSE, and when: drawn from the seed, or from an operator's
sessions (read by :mod:`twin.control.sessions`, the one reader of that CSV). Pure: the live
simulator plays the visits planned here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from twin.control.sessions import Session, SessionsError
from twin.simulator.fleet import Station
from twin.simulator.station import AC_HOURS, DC_HOURS, Rates

FIRST_ARRIVAL_S = 60.0
"""A sessions file's first car arrives this long (simulated) after the start."""
FLOOR_SOC = 0.2  # EVs keep a fifth of their battery when they give energy back


@dataclass(frozen=True)
class Visit:
    """One EV at one EVSE: times in s since the epoch, energy in Wh, power in W."""

    session_id: str
    station_id: str
    evse: int
    arrival: float
    departure: float
    battery_wh: float
    stored_wh: float  # at arrival
    energy_wh: float  # what the driver wants added by departure
    max_charge_w: float  # the EV's own limit (the EVSE's is applied where it plugs in)
    max_discharge_w: float = 0.0  # > 0: a V2G EV
    iso15118: bool = False  # talks ISO 15118 (eMAID, SoC, charging needs)
    from_file: bool = False

    @property
    def floor_wh(self) -> float:
        return FLOOR_SOC * self.battery_wh


def from_rows(rows: Sequence[Session], fleet: Sequence[Station], start: datetime) -> list[Visit]:
    """The rows as visits to the fleet's EVSEs, shifted so the first car comes
    :data:`FIRST_ARRIVAL_S` after ``start``. ``STATION:N`` names an EVSE of the fleet; any
    other ``evse_id`` takes the fleet's next EVSE (stations in order, their EVSEs in order)
    not named that way, in order of first appearance."""
    by_id = {s.station_id: s for s in fleet}
    prefixes = {s.station_id.rsplit("-", 1)[0] for s in fleet}
    named: dict[str, tuple[Station, int]] = {}
    for row in rows:
        station_id, sep, n = row.evse_id.rpartition(":")
        head, _, number = station_id.rpartition("-")
        if sep and station_id not in by_id and head in prefixes and number.isdigit():
            raise SessionsError(f"line {row.line}: {station_id} is not one of the fleet's {len(fleet)} stations "
                                f"(more --stations?)")  # fmt: skip
        if sep and station_id in by_id:
            if not n.isdigit() or not 1 <= int(n) <= by_id[station_id].evses:
                raise SessionsError(f"line {row.line}: {station_id} has EVSEs 1 to {by_id[station_id].evses}, "
                                    f"not {n!r}")  # fmt: skip
            named[row.evse_id] = (by_id[station_id], int(n))
    taken = set((s.station_id, n) for s, n in named.values())
    free = iter([(s, n) for s in fleet for n in range(1, s.evses + 1) if (s.station_id, n) not in taken])
    shift = start + timedelta(seconds=FIRST_ARRIVAL_S) - min(row.arrival for row in rows)
    visits = []
    for row in rows:
        if row.evse_id not in named:
            place = next(free, None)
            if place is None:
                raise SessionsError(f"line {row.line}: the sessions name more EVSEs than the fleet's "
                                    f"{sum(s.evses for s in fleet)} (more --stations?)")  # fmt: skip
            named[row.evse_id] = place
        station, evse = named[row.evse_id]
        energy = row.energy_kwh * 1000
        battery = max(60_000.0, energy / 0.55)  # room for the energy asked, above 40% at arrival
        v2g = row.v2g and station.bidirectional
        discharge = row.discharge_kw * 1000 if v2g else 0.0
        visits.append(Visit(row.session_id, station.station_id, evse, (row.arrival + shift).timestamp(),
                            (row.departure + shift).timestamp(), battery, 0.4 * battery, energy, row.max_kw * 1000,
                            discharge, station.iso15118 or v2g, from_file=True))  # fmt: skip
    return visits


def generate(station: Station, seed: int, start: datetime, days: float, rates: Rates | None = None) -> list[Visit]:
    """A station's visits over ``days`` from ``start``, drawn from the seed: per EVSE-day a
    Poisson number of cars at the hours AC or DC drivers come, and a car at EVSE 1 within
    the first twenty minutes so that a live demo moves at once. A car coming while the bay
    is taken goes elsewhere."""
    r = rates or Rates()
    rng = random.Random(f"live:{seed}:{station.index}")
    dc = station.kind == "DC"
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    t0, end = start.timestamp(), start.timestamp() + days * 86_400
    visits: list[Visit] = []
    for evse in range(1, station.evses + 1):
        arrivals = [t0 + rng.randint(2, 20) * 60] if evse == 1 else []
        for day in range(math.ceil(days) + 1):
            rate = r.dc_sessions_per_evse_day if dc else r.ac_sessions_per_evse_day
            hours = rng.choices(range(24), weights=DC_HOURS if dc else AC_HOURS, k=_poisson(rng, rate))
            arrivals += [midnight + day * 86_400 + (h + rng.random()) * 3_600 for h in hours]
        free = t0
        for n, arrive in enumerate(sorted(a for a in arrivals if t0 <= a < end)):
            if arrive < free:
                continue  # the bay is taken: the driver goes elsewhere
            visit = _visit(station, evse, n, arrive, rng, r, first=evse == 1 and n == 0)
            visits.append(visit)
            free = visit.departure + 60
    return visits


def _visit(station: Station, evse: int, n: int, arrive: float, rng: random.Random, r: Rates,
           first: bool) -> Visit:  # fmt: skip
    dc = station.kind == "DC"
    battery = rng.choice((50, 64, 77, 82)) * 1000.0
    stored = battery * rng.randint(10, 50) / 100
    energy = min(rng.lognormvariate(math.log((r.dc_kwh_median if dc else r.ac_kwh_median) * 1000), 0.5),
                 0.95 * battery - stored)  # fmt: skip
    max_w = rng.choice((50, 100, 150, 200, 250) if dc else (7.4, 11, 11, 22)) * 1000.0
    v2g = station.bidirectional and (first or rng.random() < r.v2g_share)
    iso = station.iso15118 and (v2g or first or rng.random() < r.iso15118_share)
    hours = energy / min(max_w, station.max_kw * 1000)
    dwell = hours * 3_600 * (rng.uniform(1.1, 1.5) if dc else rng.uniform(1.3, 3.0)) + rng.randint(5, 45) * 60
    if v2g:
        dwell *= 2  # V2G EVs stay plugged in long: that is what makes them useful to the grid
    return Visit(f"{station.station_id}-{evse}-{n + 1}", station.station_id, evse, arrive, arrive + dwell, battery,
                 stored, energy, max_w, max_w * 0.8 if v2g else 0.0, iso)  # fmt: skip


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def by_station(visits: Iterable[Visit]) -> dict[str, list[Visit]]:
    out: dict[str, list[Visit]] = {}
    for v in sorted(visits, key=lambda v: v.arrival):
        out.setdefault(v.station_id, []).append(v)
    return out
