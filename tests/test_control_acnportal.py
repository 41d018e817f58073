"""Our textbook baselines agree with Caltech's own: acnportal 0.3.3 (ACN-Sim), run through its
Simulator and Interface on the same small case, step by step.

One voltage, 1000 V, so that 1 A is 1 kW; one constraint over every EVSE, the site's limit;
each EV's battery as large as its request, so that acnportal's EV stops when it has what it
asked for, as ours does. acnportal must be installed (the dev extras): without it this module
fails, it does not skip.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from acnportal.acnsim import EV, EVSE, Battery, ChargingNetwork, Current, EventQueue, PluginEvent, Simulator
from acnportal.algorithms import (
    RoundRobin,
    SortedSchedulingAlgo,
    UncontrolledCharging,
    earliest_deadline_first,
    first_come_first_served,
    least_laxity_first,
)

from twin.control import evaluate
from twin.control.planner import Demand, Limits, Plan
from twin.control.sessions import Session

VOLTS = 1000.0
STEP_S = 300
START = datetime(2026, 3, 2, 8, tzinfo=UTC)
LIMIT_KW = 25.0

CASE = [  # EVSE, arrival step, departure step, kWh, max kW
    ("EVSE-1", 0, 6, 3.0, 7.4),  # full in 25 minutes: the last step takes only what it still needs
    ("EVSE-2", 0, 12, 20.0, 11.0),
    ("EVSE-3", 0, 9, 5.0, 22.0),
    ("EVSE-4", 1, 24, 30.0, 22.0),
    ("EVSE-5", 2, 18, 8.0, 7.4),
]
STEPS = 24
INCREMENT = 0.1
"""acnportal's RoundRobin raises every EV by this much in turn: our water-filling is its limit."""
BISECTION = 0.01
"""How closely acnportal's sorted algorithms find the EV that meets the limit (their eps)."""

ALGORITHMS = {
    "edf": (lambda: SortedSchedulingAlgo(earliest_deadline_first), BISECTION),
    "llf": (lambda: SortedSchedulingAlgo(least_laxity_first), BISECTION),
    "round-robin": (lambda: RoundRobin(first_come_first_served, continuous_inc=INCREMENT), INCREMENT),
    "uncontrolled": (UncontrolledCharging, 1e-9),
}


def acnportal_rates(
    algorithm: object, case: Sequence[tuple[str, int, int, float, float]], limit_kw: float
) -> np.ndarray:
    """What each EV drew at each step in acnportal's Simulator (kW; a row per EVSE)."""
    network = ChargingNetwork()
    for evse, *_, max_kw in case:
        network.register_evse(EVSE(evse, max_rate=max_kw), VOLTS, 0)
    network.add_constraint(Current(network.station_ids), limit_kw, name="site")
    events = EventQueue()
    for evse, arrival, departure, kwh, max_kw in case:
        ev = EV(arrival, departure, kwh, evse, f"S-{evse}", Battery(kwh, 0, max_kw))
        events.add_event(PluginEvent(arrival, ev))
    simulator = Simulator(network, algorithm, events, START, period=STEP_S / 60, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # uncontrolled's schedules break the limit, and acnportal says so
        simulator.run()
    return simulator.charging_rates * VOLTS / 1000


def our_rates(policy: str, case: Sequence[tuple[str, int, int, float, float]], limit_kw: float,
              monkeypatch: pytest.MonkeyPatch) -> np.ndarray:  # fmt: skip
    """What our policy gives each EV at each step of ``evaluate.run`` (kW; a row per EVSE)."""
    sessions = [Session(f"S-{evse}", evse, START + timedelta(seconds=a * STEP_S), START + timedelta(seconds=d * STEP_S),
                        kwh, max_kw) for evse, a, d, kwh, max_kw in case]  # fmt: skip
    decided: list[dict[str, float]] = []
    plan_with = evaluate.POLICIES[policy]

    def recording(demands: Sequence[Demand], limits: Limits, step_s: float) -> Plan:
        plan = plan_with(demands, limits, step_s)
        decided.append(plan.now())
        return plan

    monkeypatch.setitem(evaluate.POLICIES, policy, recording)
    evaluate.run(sessions, limit_kw, STEP_S, policy)
    assert len(decided) == STEPS  # someone is plugged in at every step
    return np.array([[step.get(f"S-{evse}", 0.0) for step in decided] for evse, *_ in case])


@pytest.mark.parametrize("policy", ALGORITHMS)
def test_the_first_step_agrees_with_acnportal(policy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make, tolerance = ALGORITHMS[policy]
    theirs = acnportal_rates(make(), CASE, LIMIT_KW)[:, 0]
    ours = our_rates(policy, CASE, LIMIT_KW, monkeypatch)[:, 0]
    assert ours == pytest.approx(theirs, abs=tolerance + 1e-9), f"ours {ours}, acnportal {theirs}"
    if policy != "uncontrolled":
        assert ours.sum() == pytest.approx(LIMIT_KW, abs=tolerance * len(CASE))  # the limit binds


@pytest.mark.parametrize("policy", ALGORITHMS)
def test_every_step_agrees_with_acnportal(policy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrivals, EVs filling up and leaving, the order changing as laxities do: the same
    allocations at each of the 24 steps, within what acnportal resolves (its increment or its
    bisection's eps) for every step an EV's remaining energy has drifted by."""
    make, tolerance = ALGORITHMS[policy]
    theirs = acnportal_rates(make(), CASE, LIMIT_KW)[:, :STEPS]
    ours = our_rates(policy, CASE, LIMIT_KW, monkeypatch)
    worst = float(np.abs(ours - theirs).max())
    assert worst <= 2 * tolerance + 1e-9, f"{policy}: differs by {worst} kW\nours\n{ours}\nacnportal\n{theirs}"
    assert ours.sum(axis=0).max() <= (math.inf if policy == "uncontrolled" else LIMIT_KW + 1e-9)


def test_the_case_orders_the_evs_differently_by_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The case discriminates: EDF, LLF and round robin give different first steps (agreeing
    with acnportal on one policy does not make the others agree by accident)."""
    first = {p: tuple(np.round(our_rates(p, CASE, LIMIT_KW, monkeypatch)[:, 0], 3)) for p in ALGORITHMS}
    assert len(set(first.values())) == len(first), first
