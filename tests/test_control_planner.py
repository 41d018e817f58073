"""The planner, the baselines and the evaluation in virtual time: properties over random fleets
and limits (the site's import under its limit, never more than an EV asked or its maximum,
no discharge from a unidirectional EV, departure-aware order, causality, V2G's floor and
minimum), and ``twin control simulate`` on cases worked by hand."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import twin.cli  # noqa: F401  - registers the commands
from twin.cli.app import app
from twin.control import baselines, evaluate
from twin.control.planner import Demand, Limits, Plan, adaptive
from twin.control.sessions import Session

STEP_S = 300.0
TOL = 1e-6
H = 3600.0


def offline_lp(demands: Sequence[Demand], limits: Limits, step_s: float = STEP_S) -> Plan:
    """The programme the offline optimum solves: every period one step."""
    return adaptive(demands, limits, step_s, uniform=True)


PLANNERS: dict[str, Callable[..., Plan]] = {
    "adaptive": adaptive,
    "offline-lp": offline_lp,
    "edf": baselines.edf,
    "llf": baselines.llf,
    "round-robin": baselines.round_robin,
}
"""Every policy that must keep the site under its limit (``uncontrolled`` does not)."""

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- reading a plan


def _ends(plan: Plan, step_s: float) -> list[float]:
    """Each period's end: the next start; a one-period plan is in force for one step, the last
    period of a longer one lasts past every departure (all of them within the 48 h horizon)."""
    if len(plan.starts_s) == 1:
        return [step_s]
    return [*plan.starts_s[1:], math.inf]


def _power(plan: Plan, key: str, k: int) -> float:
    series = plan.power_kw.get(key, [])
    return series[k] if k < len(series) else 0.0


def _there_h(plan: Plan, d: Demand, step_s: float) -> list[float]:
    """Hours of each period the EV is plugged in."""
    return [max(0.0, min(end, d.departure_s) - max(start, d.arrival_s)) / H
            for start, end in zip(plan.starts_s, _ends(plan, step_s), strict=True)]  # fmt: skip


def _site_kw(plan: Plan, k: int) -> float:
    return sum(_power(plan, key, k) for key in plan.power_kw)


def _limit(values: Callable[[int], float], plan: Plan, k: int, step_s: float) -> float:
    """The tightest of a per-step limit over period ``k``'s steps."""
    first = round(plan.starts_s[k] / step_s)
    end = _ends(plan, step_s)[k]
    last = first + 1 if math.isinf(end) else max(first + 1, round(end / step_s))
    return min(values(t) for t in range(first, last))


def _energy(plan: Plan, d: Demand, step_s: float) -> float:
    """Net kWh the plan gives the EV (discharge counts against it)."""
    hours = _there_h(plan, d, step_s)
    return sum(_power(plan, d.key, k) * h for k, h in enumerate(hours))


def _given_back(plan: Plan, d: Demand, step_s: float) -> list[float]:
    """Net kWh taken from the battery by the end of each period."""
    out, taken = [], 0.0
    for k, h in enumerate(_there_h(plan, d, step_s)):
        taken -= _power(plan, d.key, k) * h
        out.append(taken)
    return out


def check_plan(plan: Plan, demands: Sequence[Demand], limits: Limits, step_s: float = STEP_S) -> None:
    """Every property a plan must have, whatever the policy (``uncontrolled`` aside)."""
    assert plan.status == "optimal"
    assert all(d.key in plan.power_kw for d in demands)
    for k in range(len(plan.starts_s)):
        site = _site_kw(plan, k)
        cap = _limit(limits.import_at, plan, k, step_s)
        if cap >= 0:  # a negative limit asks for export: met as far as the V2G EVs can
            assert site <= cap + TOL, f"period {k}: the site imports {site} kW over its limit {cap}"
        export = _limit(limits.export_at, plan, k, step_s)
        assert -site <= export + TOL, f"period {k}: the site exports {-site} kW over its limit {export}"
    for d in demands:
        hours = _there_h(plan, d, step_s)
        for k, h in enumerate(hours):
            p = _power(plan, d.key, k)
            assert p <= d.max_kw + TOL, f"{d.key} period {k}: {p} kW over its maximum {d.max_kw}"
            assert p >= -d.max_discharge_kw - TOL, f"{d.key} period {k}: discharging {-p} kW, may {d.max_discharge_kw}"
            if h == 0:
                assert abs(p) <= TOL, f"{d.key} period {k}: {p} kW while not plugged in"
        got = _energy(plan, d, step_s)
        assert got <= d.energy_kwh + TOL * max(1.0, d.energy_kwh), f"{d.key}: {got} kWh, asked {d.energy_kwh}"
        if math.isfinite(d.battery_kwh):
            worst = max(_given_back(plan, d, step_s), default=0.0)
            assert worst <= d.battery_kwh + TOL, f"{d.key}: {worst} kWh taken, its floor allows {d.battery_kwh}"


# ---------------------------------------------------------------- strategies

POWER = st.sampled_from([3.7, 7.4, 11.0, 22.0]) | st.floats(0.5, 50.0)


@st.composite
def fleets(draw: st.DrawFn, v2g: bool = False, max_size: int = 8) -> list[Demand]:
    """EVs plugged in now (and, for the LPs, some arriving later: the offline optimum's case),
    departing within 30 h; with ``v2g``, some bidirectional with a minimum and a floor."""
    out = []
    for i in range(draw(st.integers(1, max_size))):
        departure = draw(st.floats(60.0, 30 * H))
        arrival = draw(st.just(0.0) | st.floats(0.0, departure - 30))
        energy = draw(st.floats(0.0, 80.0))
        extra: dict[str, float] = {}
        if v2g and draw(st.booleans()):
            extra = {"max_discharge_kw": draw(POWER), "min_energy_kwh": draw(st.floats(0.0, 1.0)) * energy,
                     "battery_kwh": draw(st.just(math.inf) | st.floats(0.0, 60.0))}  # fmt: skip
        out.append(Demand(f"EV{i}", energy, departure, draw(POWER), arrival_s=arrival, **extra))
    return out


@st.composite
def site_limits(draw: st.DrawFn, v2g: bool = False) -> Limits:
    """A constant or a per-step import limit (with ``v2g``: some steps asking for export, an
    export limit, a price series)."""
    level = st.floats(0.0, 120.0)
    if v2g:
        level = level | st.floats(-30.0, -0.1)
    imports = draw(st.lists(level, min_size=1, max_size=40))
    exports = draw(st.lists(st.just(math.inf) | st.floats(0.0, 50.0), min_size=1, max_size=3)) if v2g else [math.inf]
    price = draw(st.none() | st.lists(st.floats(0.01, 1.0), min_size=1, max_size=40)) if v2g else None
    return Limits(imports, exports, price)


# ---------------------------------------------------------------- properties of a plan


@pytest.mark.parametrize("name", PLANNERS)
@PROPERTY
@given(demands=fleets(), limits=site_limits())
def test_a_plan_keeps_every_limit(name: str, demands: list[Demand], limits: Limits) -> None:
    """The site's import never above its limit in any period; no EV above its maximum, above
    what it asked for, or given power while it is not there; no unidirectional EV discharging."""
    check_plan(PLANNERS[name](demands, limits, STEP_S), demands, limits)


@pytest.mark.parametrize("name", PLANNERS)
@PROPERTY
@given(demands=fleets(v2g=True), limits=site_limits(v2g=True))
def test_a_plan_with_v2g_keeps_every_limit(name: str, demands: list[Demand], limits: Limits) -> None:
    """The same with bidirectional EVs, export requests, export limits and prices: discharge
    within each EV's power and battery floor, none from a unidirectional EV."""
    check_plan(PLANNERS[name](demands, limits, STEP_S), demands, limits)


def test_seven_evs_sharing_a_limit_stay_under_it() -> None:
    """Seven EVs on a 10 kW limit: shares like 1.4286 kW rounded up would put the site over."""
    demands = [Demand(f"EV{i}", 30.0, 3 * H + 600 * i, 11.0) for i in range(7)]
    limits = Limits.constant(10.0)
    plan = adaptive(demands, limits, STEP_S)
    check_plan(plan, demands, limits)
    assert _site_kw(plan, 0) == pytest.approx(10.0, abs=1e-6)


def test_uncontrolled_gives_every_ev_its_most_whatever_the_limit() -> None:
    demands = [Demand("A", 30.0, 4 * H, 11.0), Demand("B", 0.5, 4 * H, 22.0),
               Demand("C", 9.0, 8 * H, 7.4, arrival_s=600)]  # fmt: skip
    now = baselines.uncontrolled(demands, Limits.constant(5.0), STEP_S).now()
    assert now == {"A": 11.0, "B": pytest.approx(6.0), "C": 0.0}  # B: 0.5 kWh in 5 minutes; C not here yet


# ---------------------------------------------------------------- departure-aware order

ORDERED = ["adaptive", "offline-lp", "edf", "llf", "round-robin"]


@pytest.mark.parametrize("name", ORDERED)
@PROPERTY
@given(energy=st.floats(1.0, 40.0), max_kw=POWER, departure=st.floats(0.25 * H, 12 * H),
       later=st.floats(600.0, 12 * H), share=st.floats(0.05, 0.95))  # fmt: skip
@example(energy=10.0, max_kw=11.0, departure=4 * H, later=4 * H, share=5 / 22)
def test_the_earlier_departure_gets_at_least_as_much_now(name: str, energy: float, max_kw: float, departure: float,
                                                        later: float, share: float) -> None:  # fmt: skip
    """Two EVs alike but for departure, a limit that binds: whatever order they come in, the
    one leaving first is given at least as much power now as the other."""
    early = Demand("b-early", energy, departure, max_kw)  # named to sort after the late one
    late = Demand("a-late", energy, departure + later, max_kw)
    limit = share * (baselines.most(early, STEP_S) + baselines.most(late, STEP_S))
    for demands in ([early, late], [late, early]):
        now = PLANNERS[name](demands, Limits.constant(limit), STEP_S).now()
        assert now["b-early"] >= now["a-late"] - TOL, f"limit {limit}: {now}"


def test_adaptive_serves_first_the_ev_that_cannot_wait() -> None:
    """One leaves in an hour, one in eight, both want 11 kWh at 11 kW on an 11 kW limit: only
    all of the first hour to the first EV delivers everything."""
    demands = [Demand("later", 11.0, 8 * H, 11.0), Demand("soon", 11.0, 1 * H, 11.0)]
    plan = adaptive(demands, Limits.constant(11.0), STEP_S)
    assert plan.now() == {"later": pytest.approx(0.0, abs=1e-6), "soon": pytest.approx(11.0)}
    assert _energy(plan, demands[1], STEP_S) == pytest.approx(11.0)
    assert _energy(plan, demands[0], STEP_S) == pytest.approx(11.0)


# ---------------------------------------------------------------- causality (evaluate.run)

DAY = datetime(2026, 3, 2, 7, tzinfo=UTC)


@st.composite
def days(draw: st.DrawFn) -> list[Session]:
    """A few sessions over six hours, at any second (not aligned to the steps)."""
    out = []
    for i in range(draw(st.integers(2, 7))):
        arrival = DAY + timedelta(seconds=draw(st.integers(0, 5 * 3600)))
        stay = timedelta(seconds=draw(st.integers(600, 4 * 3600)))
        v2g = draw(st.booleans())
        max_kw = draw(st.sampled_from([7.4, 11.0, 22.0]))
        out.append(Session(f"S{i}", f"EVSE-{i}", arrival, arrival + stay, draw(st.floats(1.0, 40.0)), max_kw,
                           v2g, max_kw if v2g else 0.0))  # fmt: skip
    return out


def _recorded(monkeypatch: pytest.MonkeyPatch, name: str, calls: list[dict[str, float]]) -> None:
    """Record what the policy gives each session at each decision of ``evaluate.run``; the
    policy is never shown an EV that has not arrived."""
    policy = evaluate.POLICIES[name]

    def recording(demands: Sequence[Demand], limits: Limits, step_s: float) -> Plan:
        assert all(d.arrival_s <= 0 for d in demands), "shown an EV still to come"
        plan = policy(demands, limits, step_s)
        calls.append(plan.now())
        return plan

    monkeypatch.setitem(evaluate.POLICIES, name, recording)


@pytest.mark.parametrize("name", list(evaluate.POLICIES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])  # fmt: skip
@given(sessions=days(), cut=st.integers(1, 6 * 3600), limit=st.floats(5.0, 60.0))
def test_sessions_arriving_later_change_nothing_before_they_arrive(monkeypatch: pytest.MonkeyPatch, name: str,
                                                                   sessions: list[Session], cut: int,
                                                                   limit: float) -> None:  # fmt: skip
    """Appending sessions that arrive after T changes nothing delivered before T: the site's
    power step by step, and each session's power at every decision, up to T."""
    t = DAY + timedelta(seconds=cut)
    before = [s for s in sessions if s.arrival <= t]
    after = [s for s in sessions if s.arrival > t]
    if not before:
        return
    with monkeypatch.context() as m:
        alone: list[dict[str, float]] = []
        _recorded(m, name, alone)
        first = evaluate.run(before, limit, STEP_S, name)
    with monkeypatch.context() as m:
        joined: list[dict[str, float]] = []
        _recorded(m, name, joined)
        both = evaluate.run(before + after, limit, STEP_S, name)
    start = math.floor(min(s.arrival.timestamp() for s in before) / STEP_S) * STEP_S
    steps = math.ceil((t.timestamp() - start) / STEP_S)  # the steps that start at or before T
    pad = [0.0] * steps  # a run ends with its last departure
    assert (both.site_kw + pad)[:steps] == (first.site_kw + pad)[:steps]
    late = {s.session_id for s in after}
    shared = next((i for i, c in enumerate(joined) if late & c.keys()), len(joined))
    assert joined[:shared] == alone[:shared]


@pytest.mark.parametrize("name", ["adaptive", "edf", "llf", "round-robin"])
def test_a_synthetic_day_stays_under_the_limit(name: str) -> None:
    from twin.control.sessions import synthetic

    result = evaluate.run(synthetic(evses=12, sessions=24, seed=3), 20.0, STEP_S, name)
    assert result.peak_kw <= 20.0 + TOL
    assert 0 < result.energy_share <= 1.0


# ---------------------------------------------------------------- V2G


def test_an_export_request_makes_a_v2g_ev_discharge_and_still_meet_its_minimum() -> None:
    """The site asked to export 5 kW for an hour: the bidirectional EV gives 5 kW back, then
    charges; its 15 kWh minimum is met by departure and no more than its 10 kWh is taken."""
    ev = Demand("V", 20.0, 8 * H, 11.0, max_discharge_kw=11.0, min_energy_kwh=15.0, battery_kwh=10.0)
    other = Demand("U", 10.0, 8 * H, 11.0)
    limits = Limits([-5.0] * 12 + [50.0])
    plan = adaptive([ev, other], limits, STEP_S)
    check_plan(plan, [ev, other], limits)
    for k in range(12):
        assert _site_kw(plan, k) <= -5.0 + TOL
        assert _power(plan, "V", k) == pytest.approx(-5.0)
        assert _power(plan, "U", k) == pytest.approx(0.0, abs=TOL)
    assert _energy(plan, ev, STEP_S) >= 15.0 - TOL
    assert _energy(plan, other, STEP_S) == pytest.approx(10.0)


@PROPERTY
@given(export=st.floats(0.5, 22.0), window=st.integers(1, 12), max_kw=POWER, spare=st.floats(0.0, 20.0),
       energy=st.floats(1.0, 60.0), minimum=st.floats(0.0, 1.0), slack=st.floats(0.1, 10.0))  # fmt: skip
def test_v2g_meets_export_minimum_and_floor_when_it_can(
    export: float, window: int, max_kw: float, spare: float, energy: float, minimum: float, slack: float
) -> None:
    """An export request the V2G EV can meet from its battery, and time after it to recharge to
    its minimum: the export is met in every step asked, the minimum by departure, the floor
    never crossed."""
    given_h = export * window * STEP_S / H
    need = minimum * energy
    departure = window * STEP_S + (need + given_h) / max_kw * H + slack * H
    assume(departure <= 40 * H)  # within the planner's 48 h horizon
    ev = Demand("V", energy, departure, max_kw, max_discharge_kw=max(export, max_kw), min_energy_kwh=need,
                battery_kwh=given_h + spare)  # fmt: skip
    other = Demand("U", 30.0, departure, 11.0)
    limits = Limits([-export] * window + [max_kw + 11.0])
    plan = adaptive([ev, other], limits, STEP_S)
    check_plan(plan, [ev, other], limits)
    for k in range(window):
        assert _site_kw(plan, k) <= -export + 1e-5, f"period {k}: {_site_kw(plan, k)} kW"
    assert _energy(plan, ev, STEP_S) >= need - 1e-5


def test_while_the_site_exports_v2g_charges_no_other_ev() -> None:
    """Asked to export 1 kW for a step, the V2G EV gives back just that: discharging more to
    charge the EV beside it cycles energy through its battery for nothing (the module: V2G
    serves the grid, never to charge another EV behind the same meter)."""
    ev = Demand("V", 1.0, 1.75 * H, 3.7, max_discharge_kw=3.7, battery_kwh=1.1)
    other = Demand("U", 30.0, 1.75 * H, 11.0)
    plan = adaptive([ev, other], Limits([-1.0, 14.7]), STEP_S)
    assert _power(plan, "U", 0) == pytest.approx(0.0, abs=TOL)
    assert _power(plan, "V", 0) == pytest.approx(-1.0)


def test_a_price_series_moves_v2g_discharge_to_dear_periods_and_charging_to_cheap_ones() -> None:
    """Dear for two hours, cheap for four, dear for two: the bidirectional EV gives back in
    the dear hours and charges in the cheap ones, and still leaves with all it asked for; the
    unidirectional EV charges only when it is cheap; the battery floor holds."""
    price = [0.40] * 24 + [0.10] * 48 + [0.40] * 24
    ev = Demand("V", 10.0, 8 * H, 11.0, max_discharge_kw=11.0, battery_kwh=20.0)
    uni = Demand("U", 10.0, 8 * H, 11.0)
    limits = Limits((100.0,), price=price)
    plan = adaptive([ev, uni], limits, STEP_S)
    check_plan(plan, [ev, uni], limits)
    dear = [k for k, s in enumerate(plan.starts_s) if s < 2 * H or s >= 6 * H]
    cheap = [k for k, s in enumerate(plan.starts_s) if 2 * H <= s < 6 * H]
    assert all(_power(plan, "V", k) <= TOL for k in dear)
    assert min(_power(plan, "V", k) for k in dear) < -1.0
    assert all(_power(plan, "V", k) >= -TOL for k in cheap)
    assert max(_power(plan, "V", k) for k in cheap) > 1.0
    assert all(abs(_power(plan, "U", k)) <= TOL for k in dear)
    assert _energy(plan, ev, STEP_S) == pytest.approx(10.0, abs=1e-5)
    assert _energy(plan, uni, STEP_S) == pytest.approx(10.0, abs=1e-5)


def test_without_an_export_request_or_prices_v2g_gives_nothing_back() -> None:
    """Behind one meter, discharging one EV to charge another is no service to the grid."""
    demands = [Demand("V", 5.0, 8 * H, 11.0, max_discharge_kw=11.0), Demand("U", 60.0, 2 * H, 22.0)]
    plan = adaptive(demands, Limits.constant(22.0), STEP_S)
    assert all(p >= -TOL for p in plan.power_kw["V"])


# ---------------------------------------------------------------- twin control simulate, by hand

CSV = """session_id,evse_id,arrival,departure,energy_kwh,max_kw
A,EVSE-1,2026-03-02T08:00:00Z,2026-03-02T09:00:00Z,8,7
B,EVSE-2,2026-03-02T08:00:00Z,2026-03-02T12:00:00Z,20,7
"""
"""A leaves after an hour wanting 8 kWh, B after four wanting 20; both draw 7 kW at most; the
site has 10 kW, a decision an hour (steps at 8, 9, 10 and 11 h)."""

BY_HAND = {
    # A 7 (its max) + B 3, then B 7, 7, 3: A is 1 kWh short, B gets its 20
    "edf": {"energy_delivered_kwh": 27.0, "energy_share": 0.9643, "demands_met_share": 0.5, "peak_kw": 10.0},
    # laxity: A 1 - 8/7 < 0, B 4 - 20/7 > 0: A first, as EDF
    "llf": {"energy_delivered_kwh": 27.0, "energy_share": 0.9643, "demands_met_share": 0.5, "peak_kw": 10.0},
    # 5 and 5, then B 7, 7, 1: A gets 5 of 8
    "round-robin": {"energy_delivered_kwh": 25.0, "energy_share": 0.8929, "demands_met_share": 0.5, "peak_kw": 10.0},
    # 7 + 7 = 14 kW over the limit, then B 7, 6, 0
    "uncontrolled": {"energy_delivered_kwh": 27.0, "energy_share": 0.9643, "demands_met_share": 0.5, "peak_kw": 14.0},
    # A can only charge in its hour, at 7 kW at most: the optimum, 27 kWh
    "adaptive": {"energy_delivered_kwh": 27.0, "energy_share": 0.9643, "demands_met_share": 0.5, "peak_kw": 10.0},
}


@pytest.mark.parametrize("policy", BY_HAND)
def test_control_simulate_on_two_evs_by_hand(tmp_path, policy: str) -> None:
    path = tmp_path / "sessions.csv"
    path.write_text(CSV)
    result = CliRunner().invoke(app, ["control", "simulate", str(path), "--site-limit-kw", "10", "--step-s", "3600",
                                      "--policy", policy, "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["policy"] == policy
    assert doc["sessions"] == 2
    assert doc["energy_requested_kwh"] == 28.0
    assert doc["decisions"] == 4
    assert doc["export_kwh"] == 0.0
    for key, value in BY_HAND[policy].items():
        assert doc[key] == pytest.approx(value, abs=1e-3), key
    assert set(doc) == {"policy", "sessions", "site_limit_kw", "step_s", "energy_requested_kwh",
                        "energy_delivered_kwh", "energy_share", "demands_met_share", "peak_kw", "decisions",
                        "decision_ms_p50", "decision_ms_p95", "decision_ms_max", "export_kwh"}  # fmt: skip


def test_control_simulate_all_adds_the_offline_optimum(tmp_path) -> None:
    path = tmp_path / "sessions.csv"
    path.write_text(CSV)
    result = CliRunner().invoke(app, ["control", "simulate", str(path), "--site-limit-kw", "10", "--step-s", "3600",
                                      "--policy", "all", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    docs = {d["policy"]: d for d in json.loads(result.stdout)["policies"]}
    assert set(docs) == {*BY_HAND, "offline"}
    assert docs["offline"]["energy_delivered_kwh"] == pytest.approx(27.0, abs=1e-3)
    assert docs["offline"]["decisions"] == 1


def test_control_simulate_names_the_bad_line(tmp_path) -> None:
    path = tmp_path / "sessions.csv"
    path.write_text(CSV + "C,EVSE-3,2026-03-02T08:00:00Z,2026-03-02T09:00:00Z,lots,7\n")
    result = CliRunner().invoke(app, ["control", "simulate", str(path), "--site-limit-kw", "10", "--json"])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "line 4" in said and "energy_kwh" in said and "lots" in said
    assert "Traceback" not in result.output
