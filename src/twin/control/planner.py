"""The planner: how much power each plugged-in EV gets at each planning step, under its
site's limits. Pure: the EVs present, the limits and the step in; a plan out. The live
controller, ``twin control simulate`` and the tests call these same functions.

``adaptive`` (the default) is model-predictive: a linear programme over the EVs present now
and the steps until the last of them leaves (HiGHS, through scipy), of which the first step
is sent; the next step plans again from what happened. It maximises the energy delivered by
each EV's departure, a kWh sooner worth a little more than a kWh later (room for whoever
arrives next; Lee et al.'s "quick charge" objective in ACN), within:

- each step's site import limit (a negative one asks the site to export at least that much,
  met as far as the V2G EVs present can) and export limit;
- each EV's maximum charge and discharge power, and what it asked for;
- each EV's minimum energy by departure (V2X ``evMinEnergyRequest``), met whenever it can be,
  before anything else: a driver's minimum outranks the grid's request for export;
- each V2G battery's energy above its floor: discharge never takes more than that.

With a price per step (the grid issue's signals), the objective also saves cost: charging
moves to cheap steps, and a V2G EV discharges in dear steps and recharges in cheap ones,
while the energy asked for keeps its priority. The baselines (``uncontrolled``, ``edf``,
``llf``, ``round-robin``) are the textbook online algorithms as Caltech's ACN-Sim runs them,
each allocating the site limit one step at a time (:mod:`twin.control.baselines`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EPS_KWH = 1e-6
HORIZON_S = 48 * 3600
"""How far ahead a plan looks at most."""
FINE_STEPS, MEDIUM_STEPS = 12, 72
"""The first hour (of 5-minute steps) is planned a step at a time, the next five in blocks of
three steps, the rest in blocks of twelve: what is sent now is decided as finely, the
programme is a third of the size (a plan for 50 EVs 48 -> 18 ms)."""
SOONER = 0.1
"""How much more a kWh now is worth than one at the horizon's end."""
PRICE_WEIGHT = 0.4
"""What the dearest step's price takes off a kWh's worth (the cheapest: nothing): below the
worth of energy itself, so prices move energy in time but never withhold it."""
URGENCY = 0.02
"""At most this much more is a kWh now worth to the EV leaving first than to the one leaving
last: a tie-break, small beside the worth of energy itself."""
SHORTFALL = 10_000.0
"""The cost of a kWh of an EV's minimum energy not delivered by its departure."""
EXPORT_SHORTFALL = 1000.0
"""The cost of a kWh the site was asked to export and did not."""


@dataclass(frozen=True, slots=True)
class Demand:
    """One EV as the planner sees it: times in seconds from now, energy in kWh, power in kW."""

    key: str
    energy_kwh: float
    """What it still wants by departure."""
    departure_s: float
    max_kw: float
    max_discharge_kw: float = 0.0
    """0 unless bidirectional with V2X allowed."""
    min_energy_kwh: float = 0.0
    """What it must have by departure (at most ``energy_kwh``)."""
    battery_kwh: float = math.inf
    """What discharging may take from its battery from now on."""
    arrival_s: float = 0.0
    """After now only for the offline optimum, which knows every session in advance."""


@dataclass(frozen=True, slots=True)
class Limits:
    """A site's limits per step from now (the last value holds beyond); prices per kWh."""

    import_kw: Sequence[float]
    export_kw: Sequence[float] = (math.inf,)
    price: Sequence[float] | None = None

    @classmethod
    def constant(cls, import_kw: float, export_kw: float = math.inf) -> Limits:
        return cls((import_kw,), (export_kw,))

    def import_at(self, step: int) -> float:
        return self.import_kw[min(step, len(self.import_kw) - 1)]

    def export_at(self, step: int) -> float:
        return self.export_kw[min(step, len(self.export_kw) - 1)]


@dataclass(frozen=True)
class Plan:
    """Each EV's power per period from now (kW; negative: discharging); period ``k`` runs
    from ``starts_s[k]`` (seconds from now) to the next start."""

    starts_s: list[float]
    power_kw: dict[str, list[float]] = field(default_factory=dict)
    status: str = "optimal"

    def now(self) -> dict[str, float]:
        """The first period's power of each EV: what is in force until the next plan."""
        return {key: (periods[0] if periods else 0.0) for key, periods in self.power_kw.items()}

    @classmethod
    def idle(cls, demands: Sequence[Demand], status: str = "optimal") -> Plan:
        return cls([0.0], {d.key: [0.0] for d in demands}, status)


def edges(until_s: float, step_s: float) -> np.ndarray:
    """The periods' boundaries from now to ``until_s`` (see FINE_STEPS)."""
    out = [0.0]
    while out[-1] < min(until_s, HORIZON_S):
        k = len(out) - 1
        width = 1 if k < FINE_STEPS else 3 if k < FINE_STEPS + (MEDIUM_STEPS - FINE_STEPS) // 3 else 12
        out.append(out[-1] + width * step_s)
    return np.array(out)


def _per_period(values: Callable[[int], float], bounds: np.ndarray, step_s: float,
                how: Callable[..., Any]) -> np.ndarray:  # fmt: skip
    """A per-step series (``values(step)``) over each period: ``how`` of its steps."""
    out = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        first, last = round(start / step_s), round(end / step_s)
        out.append(how([values(t) for t in range(first, last)]))
    return np.array(out, dtype=float)


def _hours(demand: Demand, bounds: np.ndarray) -> np.ndarray:
    """Hours of each period the EV is there (a partial period counts in part)."""
    there = np.minimum(bounds[1:], demand.departure_s) - np.maximum(bounds[:-1], demand.arrival_s)
    return np.clip(there, 0, None) / 3600


class _Programme:
    """A linear programme in the shape scipy's HiGHS takes, built a block of variables at a
    time: minimise cost @ x, A_ub x <= b_ub, A_eq x = 0, lower <= x <= upper."""

    def __init__(self) -> None:
        self.n = 0
        self.cost: list[np.ndarray] = []
        self.lower: list[np.ndarray] = []
        self.upper: list[np.ndarray] = []
        self.ub: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
        self.rhs: list[float] = []
        self.eq: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
        self.eq_rows = 0

    def variables(self, cost: np.ndarray, upper: np.ndarray, lower: float = 0.0) -> np.ndarray:
        columns = np.arange(self.n, self.n + cost.size)
        self.n += cost.size
        self.cost.append(cost)
        self.upper.append(upper)
        self.lower.append(np.full(cost.size, lower))
        return columns

    def at_most(self, rows: np.ndarray, columns: np.ndarray, coefficients: np.ndarray) -> None:
        """Entries of rows already opened with :meth:`rows`."""
        for part, value in zip(self.ub, (rows, columns, coefficients), strict=True):
            part.append(value)

    def rows(self, bounds: Sequence[float]) -> np.ndarray:
        first = len(self.rhs)
        self.rhs.extend(bounds)
        return np.arange(first, len(self.rhs))

    def equal_zero(self, count: int) -> np.ndarray:
        first = self.eq_rows
        self.eq_rows += count
        return np.arange(first, self.eq_rows)

    def solve(self) -> np.ndarray | None:
        from scipy.optimize import linprog
        from scipy.sparse import coo_matrix

        def matrix(parts: tuple[list[np.ndarray], ...], height: int) -> Any:
            rows, columns, values = (np.concatenate(p) for p in parts)
            return coo_matrix((values, (rows, columns)), shape=(height, self.n)).tocsr()

        extra: dict[str, Any] = {}
        if self.eq_rows:
            extra = {"A_eq": matrix(self.eq, self.eq_rows), "b_eq": np.zeros(self.eq_rows)}
        bounds = np.stack([np.concatenate(self.lower), np.concatenate(self.upper)], axis=1)
        result = linprog(np.concatenate(self.cost), A_ub=matrix(self.ub, len(self.rhs)), b_ub=np.array(self.rhs),
                         bounds=bounds, method="highs", **extra)  # fmt: skip
        return None if result.x is None else np.asarray(result.x)


def adaptive(demands: Sequence[Demand], limits: Limits, step_s: float = 300.0, uniform: bool = False) -> Plan:
    """The plan of the linear programme described in the module's docstring; ``uniform``:
    every period one step, however far (the offline optimum's days)."""
    live = [d for d in demands if d.departure_s > d.arrival_s and (d.max_kw > 0 or d.max_discharge_kw > 0)]
    if not live:
        return Plan.idle(demands)
    until = max(d.departure_s for d in live)
    bounds = np.arange(0, until + step_s, step_s) if uniform else edges(until, step_s)
    periods = bounds.size - 1
    width_h = np.diff(bounds) / 3600
    dear = np.zeros(periods)  # 0 in the cheapest period, 1 in the dearest
    priced = False
    if limits.price is not None and len(limits.price):
        prices = limits.price
        price = _per_period(lambda t: prices[min(t, len(prices) - 1)], bounds, step_s, np.mean)
        if price.max() > price.min():
            dear = (price - price.min()) / (price.max() - price.min())
            priced = True
    mid = (bounds[:-1] + bounds[1:]) / 2
    worth = 1.0 - SOONER * mid / bounds[-1] - PRICE_WEIGHT * dear
    # a kWh given back costs a kWh delivered now, less what the grid pays for it; no "sooner"
    # term, or charging early to give back late would pay for itself
    give_back = 1.0 + 1e-3 - PRICE_WEIGHT * dear
    imports = _per_period(limits.import_at, bounds, step_s, min)
    exports = _per_period(limits.export_at, bounds, step_s, min)

    lp = _Programme()
    site: list[tuple[np.ndarray, np.ndarray, float]] = []  # (periods, columns, +1 import / -1 export)
    planned: list[tuple[Demand, np.ndarray, np.ndarray, np.ndarray | None]] = []
    for d in live:
        hours = _hours(d, bounds)
        there = np.nonzero(hours > 0)[0]
        if there.size == 0:
            continue
        h = hours[there]
        # the sooner it leaves, the more its kWh now are worth: of two EVs that can both
        # finish, the one leaving first charges first (EDF's order where it costs nothing)
        urgency = URGENCY * (1 - mid[there] / bounds[-1]) * (1 - min(d.departure_s, bounds[-1]) / bounds[-1])
        charge = lp.variables(-(worth[there] + urgency) * h, np.full(there.size, max(d.max_kw, 0.0)))
        site.append((there, charge, 1.0))
        discharge = None
        energy = lp.rows([max(d.energy_kwh, 0.0)])  # never more than it asked for
        lp.at_most(np.repeat(energy, there.size), charge, h)
        if d.max_discharge_kw > 0:
            # V2G serves the grid: an EV gives back only where the site is asked to export or
            # prices pay for it, never to charge another EV behind the same meter
            serves = (imports[there] < 0) | priced
            discharge = lp.variables(give_back[there] * h, np.where(serves, d.max_discharge_kw, 0.0))
            site.append((there, discharge, -1.0))
            lp.at_most(np.repeat(energy, there.size), discharge, -h)
            if math.isfinite(d.battery_kwh):  # the battery's floor: given back so far <= battery_kwh
                taken = lp.variables(np.zeros(there.size), np.full(there.size, max(d.battery_kwh, 0.0)), -np.inf)
                k = lp.equal_zero(there.size)  # taken[k] = taken[k-1] + (discharge[k] - charge[k]) h[k]
                for part, value in zip(lp.eq, (
                    np.concatenate([k, k, k, k[1:]]),
                    np.concatenate([taken, discharge, charge, taken[:-1]]),
                    np.concatenate([np.ones(k.size), -h, h, -np.ones(k.size - 1)]),
                ), strict=True):  # fmt: skip
                    part.append(value)
        if d.min_energy_kwh > EPS_KWH:  # delivered + shortfall >= minimum, the shortfall costly
            short = lp.variables(np.array([SHORTFALL]), np.array([np.inf]))
            row = lp.rows([-min(d.min_energy_kwh, d.energy_kwh)])
            lp.at_most(np.repeat(row, there.size + 1), np.concatenate([charge, short]), np.concatenate([-h, [-1.0]]))
            if discharge is not None:
                lp.at_most(np.repeat(row, there.size), discharge, h)
        planned.append((d, there, charge, discharge))
    if not planned:
        return Plan.idle(demands)

    # each period: sum of power <= its import limit; -sum of power <= its export limit
    import_rows = lp.rows(imports.tolist())
    forced = np.nonzero(imports < 0)[0]  # the site is asked to export: a shortfall, costly
    if forced.size:
        short = lp.variables(EXPORT_SHORTFALL * width_h[forced], -imports[forced])
        lp.at_most(import_rows[forced], short, -np.ones(forced.size))
    bounded = np.isfinite(exports)
    export_rows = np.full(periods, -1)
    export_rows[bounded] = lp.rows(exports[bounded].tolist())
    for there, columns, sign in site:
        lp.at_most(import_rows[there], columns, np.full(there.size, sign))
        keep = bounded[there]
        lp.at_most(export_rows[there[keep]], columns[keep], np.full(int(keep.sum()), -sign))
    if forced.size and not priced:  # what is given back goes to the grid: no more than it asked for
        cap_rows = np.full(periods, -1)
        cap_rows[forced] = lp.rows((-imports[forced]).tolist())
        for there, columns, sign in site:
            keep = imports[there] < 0
            if sign < 0 and keep.any():
                lp.at_most(cap_rows[there[keep]], columns[keep], np.ones(int(keep.sum())))

    x = lp.solve()
    if x is None:
        return Plan.idle(demands, status="infeasible")
    power: dict[str, list[float]] = {d.key: [0.0] for d in demands}
    for d, there, charge, discharge in planned:
        series = np.zeros(int(there.max()) + 1)
        series[there] = x[charge]
        if discharge is not None:
            series[there] -= x[discharge]
        power[d.key] = [float(v) for v in series]  # unrounded: rounding up would put the site over its limit
    return Plan(bounds[:-1].tolist(), power)
