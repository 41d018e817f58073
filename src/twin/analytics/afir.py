"""AFIR checks per charging pool (Regulation (EU) 2023/1804), each ``pass``, ``fail`` or
``unknown`` with the reason.

- Art. 3, TEN-T core network: by end 2025 a pool of at least 400 kW with at least one point
  of 150 kW or more; by end 2027 at least 600 kW with two such points. Comprehensive
  network: at least 300 kW with one 150 kW point (2030), 600 kW with two (2035). Power and
  points come from the station inventory (``_stations.json``): each EVSE is a point at its
  station's rated power (a simplification where EVSEs share a cabinet); a pool without an
  inventory is unknown. Traffic that does not show a capability makes a check unknown, not
  failed.
- Art. 5(4): at points of 50 kW and more the ad hoc price is per kWh: a default tariff with
  an energy price (SetDefaultTariff) was set on every such station.
- Art. 5(8): smart-charging capable: every station of the pool accepted a charging profile.
- ISO 15118-20 (Delegated Regulation 2025/656, from 2027): every station shows it (see
  migration).
- Art. 20, dynamic data: how late status reached the log (capture time minus the station's
  timestamp, 95th percentile); twin's own threshold, not the regulation's: 60 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twin.analytics import migration
from twin.analytics.frames import connect, rows
from twin.analytics.migration import inventory_of

THRESHOLDS = [  # (rule, minimum pool kW, minimum points of >= 150 kW)
    ("Art. 3 TEN-T core, end 2025", 400.0, 1),
    ("Art. 3 TEN-T core, end 2027", 600.0, 2),
    ("Art. 3 TEN-T comprehensive, 2030", 300.0, 1),
    ("Art. 3 TEN-T comprehensive, 2035", 600.0, 2),
]
FRESH_S = 60.0

SQL = """
WITH tariffs AS (
    SELECT c.station_id, bool_or((c.payload->'$.tariff.energy') IS NOT NULL) AS per_kwh
    FROM frames c JOIN frames a ON a.conn_id = c.conn_id AND a.msg_id = c.msg_id AND a.origin = 'cs' AND a.msg_type = 3
                                   AND a.action = 'SetDefaultTariff'  -- an answer's is its CALL's: fewer row groups
    WHERE c.action = 'SetDefaultTariff' AND c.msg_type = 2 AND c.origin = 'csms' AND a.payload->>'$.status' = 'Accepted'
    GROUP BY ALL
),
profiles AS (
    SELECT c.station_id, true AS accepted
    FROM frames c JOIN frames a ON a.conn_id = c.conn_id AND a.msg_id = c.msg_id AND a.origin = 'cs' AND a.msg_type = 3
                                   AND a.action = 'SetChargingProfile'
    WHERE c.action = 'SetChargingProfile' AND c.msg_type = 2 AND c.origin = 'csms'
      AND a.payload->>'$.status' = 'Accepted'
    GROUP BY ALL
),
status_delay AS (
    SELECT station_id,
           quantile_cont((epoch_ms(ts) - epoch_ms(status_notification.happened)) / 1000.0, 0.95)
               AS p95_s  -- epoch milliseconds: date_diff on TIMESTAMPTZ goes through the ICU calendar
    FROM frames WHERE action = 'StatusNotification' AND msg_type = 2 AND origin = 'cs' AND valid
    GROUP BY ALL
)
SELECT s.station_id, coalesce(t.per_kwh, false) AS per_kwh, coalesce(p.accepted, false) AS smart, d.p95_s
FROM (SELECT DISTINCT station_id FROM frames_all) s
LEFT JOIN tariffs t USING (station_id) LEFT JOIN profiles p USING (station_id)
LEFT JOIN status_delay d USING (station_id)
"""


def afir(capture: str | Path) -> list[dict[str, Any]]:
    known = inventory_of(capture)
    # the log read once (a table: SQL names frames five times), for these checks and migration's
    con = connect(capture, ("SetDefaultTariff", "SetChargingProfile", "StatusNotification", *migration.ACTIONS),
                  once=True)  # fmt: skip
    seen = {r["station_id"]: r for r in rows(con, SQL)}
    iso20 = {r["station_id"]: r["iso15118_20"] for r in migration.migration_duckdb(capture, con)}
    pools: dict[str, list[str]] = {}
    for station in sorted(seen):
        pools.setdefault(known.get(station, {}).get("pool_id") or f"(no pool) {station}", []).append(station)
    out = []
    for pool_id, stations in sorted(pools.items()):
        listed = [known[s] for s in stations if s in known]
        total_kw = sum(s["max_kw"] * s["evses"] for s in listed) if listed else None
        points_150 = sum(s["evses"] for s in listed if s["max_kw"] >= 150) if listed else None
        checks = []
        for rule, kw, points in THRESHOLDS:
            if total_kw is None or points_150 is None:
                checks.append(_check(rule, None, "no station inventory: rated power unknown"))
            else:
                ok = total_kw >= kw and points_150 >= points
                checks.append(_check(rule, ok, f"{total_kw:g} kW, {points_150} points of 150 kW or more "
                                               f"(needs {kw:g} kW and {points})"))  # fmt: skip
        fast = [s for s in stations if known.get(s, {}).get("max_kw", 0) >= 50]
        if not listed:
            checks.append(_check("Art. 5(4) ad hoc price per kWh at 50 kW and more", None, "rated power unknown"))
        elif not fast:
            checks.append(_check("Art. 5(4) ad hoc price per kWh at 50 kW and more", True, "no point of 50 kW or more"))
        else:
            missing = [s for s in fast if not seen[s]["per_kwh"]]
            checks.append(_check("Art. 5(4) ad hoc price per kWh at 50 kW and more", not missing,
                                 f"no per-kWh default tariff seen on {', '.join(missing)}" if missing
                                 else f"per-kWh tariff on all {len(fast)} stations of 50 kW or more"))  # fmt: skip
        unsmart = [s for s in stations if not seen[s]["smart"]]
        checks.append(_check("Art. 5(8) smart charging", None if unsmart else True,
                             f"no accepted charging profile seen on {', '.join(unsmart)}" if unsmart
                             else "every station accepted a charging profile"))  # fmt: skip
        not20 = [s for s in stations if not iso20.get(s)]
        checks.append(_check("ISO 15118-20 (from 2027)", None if not20 else True,
                             f"not shown by {', '.join(not20)}" if not20 else "every station shows it"))  # fmt: skip
        delays = [seen[s]["p95_s"] for s in stations if seen[s]["p95_s"] is not None]
        if not delays:
            checks.append(_check("Art. 20 dynamic data (status) freshness", None, "no status seen"))
        else:
            worst = max(delays)
            checks.append(_check("Art. 20 dynamic data (status) freshness", worst <= FRESH_S,
                                 f"status reached the log {worst:.1f} s late (p95, worst station); twin's bar "
                                 f"{FRESH_S:g} s"))  # fmt: skip
        out.append({"pool_id": pool_id, "stations": stations, "total_kw": total_kw, "points_150kw": points_150,
                    "checks": checks})  # fmt: skip
    return out


def _check(rule: str, ok: bool | None, why: str) -> dict[str, str]:
    return {"rule": rule, "result": "unknown" if ok is None else "pass" if ok else "fail", "why": why}
