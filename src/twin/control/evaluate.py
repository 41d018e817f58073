"""Policies in virtual time: ``twin control simulate`` and ``benches/control.py``.

Ideal EVs (each takes exactly the power it is given, up to its maximum) arrive and leave as
the sessions say; at each planning step the policy sees the EVs present then, and nothing of
the EVs still to come, as the live controller does, and its first step's power is applied
until the next. An EV is planned from the first step that starts after it arrives. The
offline optimum plans every session at once, knowing all arrivals: the ceiling no online
policy can pass, on the same steps.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from twin.control import baselines
from twin.control.planner import Demand, Limits, Plan, adaptive
from twin.control.sessions import Session

Policy = Callable[[Sequence[Demand], Limits, float], Plan]
POLICIES: dict[str, Policy] = {
    "adaptive": adaptive,
    "uncontrolled": baselines.uncontrolled,
    "edf": baselines.edf,
    "llf": baselines.llf,
    "round-robin": baselines.round_robin,
}
MET_KWH = 0.1
"""A session's demand is met when it received its request within this much."""


@dataclass
class Evaluation:
    policy: str
    sessions: int
    site_limit_kw: float
    step_s: float
    energy_requested_kwh: float
    energy_delivered_kwh: float
    energy_share: float
    demands_met_share: float
    peak_kw: float
    decisions: int
    decision_ms_p50: float
    decision_ms_p95: float
    decision_ms_max: float
    export_kwh: float
    site_kw: list[float] = field(default_factory=list, repr=False)
    """The site's power in each step, from the first step on (for the chart)."""

    def document(self) -> dict[str, Any]:
        """The JSON document (the contract's keys)."""
        return {k: v for k, v in asdict(self).items() if k != "site_kw"}


def _start(sessions: Sequence[Session], step_s: float) -> float:
    first = min(s.arrival.timestamp() for s in sessions)
    return math.floor(first / step_s) * step_s


def _demand(s: Session, t: float, delivered: float, step_s: float) -> Demand:
    arrival = math.ceil(s.arrival.timestamp() / step_s) * step_s  # planned from the next step
    return Demand(
        key=s.session_id,
        energy_kwh=max(0.0, s.energy_kwh - delivered),
        departure_s=s.departure.timestamp() - t,
        max_kw=s.max_kw,
        max_discharge_kw=s.discharge_kw,
        arrival_s=max(0.0, arrival - t),
    )


def run(sessions: Sequence[Session], site_limit_kw: float, step_s: float = 300.0, policy: str = "adaptive",
        export_limit_kw: float = math.inf) -> Evaluation:  # fmt: skip
    """Play the sessions through ``policy`` in virtual time."""
    plan_with = POLICIES[policy]
    limits = Limits.constant(site_limit_kw, export_limit_kw)
    delivered = {s.session_id: 0.0 for s in sessions}
    exported = 0.0
    site_kw: list[float] = []
    timings: list[float] = []
    if sessions:
        t = _start(sessions, step_s)
        end = max(s.departure.timestamp() for s in sessions)
        order = sorted(sessions, key=lambda s: s.arrival)
        while t < end:
            present = [s for s in order if s.arrival.timestamp() <= t < s.departure.timestamp()]
            power = 0.0
            if present:
                demands = [_demand(s, t, delivered[s.session_id], step_s) for s in present]
                began = time.perf_counter()
                plan = plan_with(demands, limits, step_s)
                timings.append((time.perf_counter() - began) * 1000)
                now = plan.now()
                for s in present:
                    kw = now.get(s.session_id, 0.0)
                    hours = (min(t + step_s, s.departure.timestamp()) - t) / 3600
                    energy = min(kw * hours, s.energy_kwh - delivered[s.session_id])  # an ideal EV stops when full
                    delivered[s.session_id] += energy
                    exported += max(0.0, -energy)
                    power += kw
            site_kw.append(round(power, 3))
            t += step_s
    return _evaluation(policy, sessions, site_limit_kw, step_s, delivered, exported, site_kw, timings)


def offline(sessions: Sequence[Session], site_limit_kw: float, step_s: float = 300.0,
            export_limit_kw: float = math.inf) -> Evaluation:  # fmt: skip
    """The offline optimum: one programme over every session, arrivals known in advance."""
    if not sessions:
        return _evaluation("offline", sessions, site_limit_kw, step_s, {}, 0.0, [], [])
    t = _start(sessions, step_s)
    demands = [_demand(s, t, 0.0, step_s) for s in sessions]
    began = time.perf_counter()
    plan = adaptive(demands, Limits.constant(site_limit_kw, export_limit_kw), step_s, uniform=True)
    timings = [(time.perf_counter() - began) * 1000]
    steps = len(plan.starts_s)
    site_kw = [0.0] * steps
    delivered = {}
    for s, d in zip(sessions, demands, strict=True):
        series = plan.power_kw[d.key]
        energy = 0.0
        for k, kw in enumerate(series):
            hours = max(0.0, min(step_s, d.departure_s - k * step_s)) / 3600
            energy += kw * hours
            site_kw[k] += kw
        delivered[s.session_id] = min(energy, s.energy_kwh)
    return _evaluation("offline", sessions, site_limit_kw, step_s, delivered, 0.0,
                       [round(kw, 3) for kw in site_kw], timings)  # fmt: skip


def _evaluation(policy: str, sessions: Sequence[Session], site_limit_kw: float, step_s: float,
                delivered: dict[str, float], exported: float, site_kw: list[float],
                timings: list[float]) -> Evaluation:  # fmt: skip
    requested = sum(s.energy_kwh for s in sessions)
    got = sum(delivered.values())
    met = sum(delivered.get(s.session_id, 0.0) >= s.energy_kwh - MET_KWH for s in sessions)
    ordered = sorted(timings)

    def quantile(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else 0.0

    return Evaluation(
        policy=policy,
        sessions=len(sessions),
        site_limit_kw=site_limit_kw,
        step_s=step_s,
        energy_requested_kwh=round(requested, 3),
        energy_delivered_kwh=round(got, 3),
        energy_share=round(got / requested, 4) if requested else 1.0,
        demands_met_share=round(met / len(sessions), 4) if sessions else 1.0,
        peak_kw=round(max(site_kw, default=0.0), 3),
        decisions=len(timings),
        decision_ms_p50=round(statistics.median(ordered), 3) if ordered else 0.0,
        decision_ms_p95=quantile(0.95),
        decision_ms_max=round(ordered[-1], 3) if ordered else 0.0,
        export_kwh=round(exported, 3),
        site_kw=site_kw,
    )
