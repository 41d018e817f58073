"""One planning decision for one site, pure: the twins, the grid signals and a moment in;
the plan out, as the profiles to send and the document that explains it (what
``control.plans`` carries and ``twin control explain`` prints)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from twin import envelope
from twin.control.needs import DEFAULTS, Defaults, Need, plugged
from twin.control.planner import Limits, adaptive, edges
from twin.control.profiles import charging_profile, periods, why
from twin.sites import Site, limit_at, limits_ahead, prices_ahead


@dataclass
class Decision:
    site_id: str
    document: dict[str, Any]
    profiles: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(station id, SetChargingProfile request) for each EVSE that takes profiles."""


def decide(site: Site, twins: Mapping[str, Mapping[str, Any]], signals: Sequence[Mapping[str, Any]],
           inventory: Mapping[str, Mapping[str, Any]], now: datetime, step_s: float = 300.0,
           defaults: Defaults = DEFAULTS) -> Decision:  # fmt: skip
    """Plan the site's plugged-in EVs under the limits in force from ``now`` on. EVSEs that
    do not take profiles are counted at their maximum and planned around."""
    needs = plugged(site, twins, now, inventory, defaults)
    obeying = [n for n in needs if n.obeys]
    fixed_kw = sum(n.demand.max_kw for n in needs if not n.obeys)
    horizon = max((n.demand.departure_s for n in obeying), default=step_s)
    steps = max(1, int(edges(horizon, step_s)[-1] // step_s))
    imports, exports = limits_ahead(site, signals, now, step_s, steps)
    limits = Limits([kw - fixed_kw for kw in imports], exports, prices_ahead(site, signals, now, step_s, steps))
    began = time.perf_counter()
    plan = adaptive([n.demand for n in obeying], limits, step_s)
    decision_ms = (time.perf_counter() - began) * 1000
    now_kw = plan.now()
    in_force = limit_at(site, signals, now)
    binding = sum(max(0.0, kw) for kw in now_kw.values()) >= limits.import_at(0) - 0.05
    rows = []
    for n in needs:
        kw = now_kw.get(n.key, 0.0) if n.obeys else n.demand.max_kw
        rows.append(_row(n, kw, [] if not n.obeys else periods(plan, n.key),
                         why(n, kw, len(obeying) - 1, in_force.import_kw, binding)))  # fmt: skip
    document = {
        "site_id": site.site_id,
        "planned_at": envelope.iso_ms(now.timestamp()),
        "step_s": step_s,
        "status": plan.status,
        "decision_ms": round(decision_ms, 3),
        "limit": {"import_kw": in_force.import_kw, "export_kw": in_force.export_kw, "source": in_force.source},
        "fixed_kw": float(fixed_kw),
        "plan_import_kw": round(sum(max(0.0, r["plan_kw"]) for r in rows), 3),
        "plan_export_kw": round(-sum(min(0.0, r["plan_kw"]) for r in rows), 3) + 0.0,
        "evses": rows,
    }
    profiles = [(n.station_id, charging_profile(n, plan, now)) for n in obeying]
    return Decision(site.site_id, document, profiles)


def _row(n: Need, kw: float, schedule: list[tuple[float, float]], reason: str) -> dict[str, Any]:
    d = n.demand
    return {
        "station_id": n.station_id, "evse_id": n.evse_id, "transaction_id": n.transaction_id,
        "need_kwh": round(d.energy_kwh, 3), "min_kwh": round(d.min_energy_kwh, 3),
        "departure": envelope.iso_ms(n.departure.timestamp()), "source": n.source,
        "max_kw": d.max_kw, "max_discharge_kw": d.max_discharge_kw, "plan_kw": round(kw, 2) + 0.0,
        "schedule": [[int(start), kw] for start, kw in schedule],
        "profile_status": n.profile_status if n.obeys or n.profile_status else None,
        "obeys": n.obeys, "why": reason,
    }  # fmt: skip
