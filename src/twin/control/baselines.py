"""The textbook online algorithms, as Caltech's ACN-Sim (acnportal) runs them on one site
limit: at each step, the EVs present are sorted, then each is given the most it can take
(its maximum power, or what it still needs within the step) in that order while the limit
has room. ``round-robin`` shares the limit equally instead (the limit of ACN's RoundRobin as
its increment goes to zero: every EV gets the same, and what one cannot take goes to the
others). ``uncontrolled`` gives every EV its most and ignores the limit.

Each returns the first step's power only, as a :class:`~twin.control.planner.Plan`: these
algorithms plan no further than the step they are in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twin.control.planner import Demand, Limits, Plan


def most(d: Demand, step_s: float) -> float:
    """The most an EV can take this step: its maximum power, or what it still needs spread
    over the part of the step it is there."""
    hours = min(step_s, d.departure_s) / 3600
    if hours <= 0 or d.energy_kwh <= 0:
        return 0.0
    return max(0.0, min(d.max_kw, d.energy_kwh / hours))


def _present(demands: Sequence[Demand]) -> list[Demand]:
    return [d for d in demands if d.arrival_s <= 0 < d.departure_s]


def _greedy(order: Callable[[Demand], tuple[float, str]]) -> Callable[[Sequence[Demand], Limits, float], Plan]:
    def policy(demands: Sequence[Demand], limits: Limits, step_s: float = 300.0) -> Plan:
        room = max(0.0, limits.import_at(0))
        power = {d.key: 0.0 for d in demands}
        for d in sorted(_present(demands), key=order):
            power[d.key] = give = min(most(d, step_s), room)
            room -= give
        return Plan([0.0], {key: [kw] for key, kw in power.items()})

    return policy


edf = _greedy(lambda d: (d.departure_s, d.key))
"""Earliest deadline first."""


def _laxity(d: Demand) -> tuple[float, str]:
    """Hours it could wait and still get what it needs at full power."""
    full = d.energy_kwh / d.max_kw if d.max_kw > 0 else float("inf")
    return d.departure_s / 3600 - full, d.key


llf = _greedy(_laxity)
"""Least laxity first."""


def round_robin(demands: Sequence[Demand], limits: Limits, step_s: float = 300.0) -> Plan:
    """Equal shares by water-filling: the EVs that need less than a share get what they need,
    the rest split what is left."""
    room = max(0.0, limits.import_at(0))
    power = {d.key: 0.0 for d in demands}
    wanting = sorted((most(d, step_s), d.key) for d in _present(demands))
    while wanting:
        share = room / len(wanting)
        need, key = wanting[0]
        if need > share:
            for _, k in wanting:
                power[k] = share
            break
        power[key] = need
        room -= need
        wanting.pop(0)
    return Plan([0.0], {key: [kw] for key, kw in power.items()})


def uncontrolled(demands: Sequence[Demand], limits: Limits, step_s: float = 300.0) -> Plan:
    """Every EV at the most it can take, whatever the limit."""
    power = {d.key: 0.0 for d in demands}
    for d in _present(demands):
        power[d.key] = most(d, step_s)
    return Plan([0.0], {key: [kw] for key, kw in power.items()})
