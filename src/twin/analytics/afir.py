"""AFIR checks per charging pool (Regulation (EU) 2023/1804), each ``pass``, ``fail`` or
``unknown`` with the reason.

- Art. 3, TEN-T core network: by end 2025 a pool of at least 400 kW with at least one point
  of 150 kW or more; by end 2027 at least 600 kW with two such points. Comprehensive
  network: at least 300 kW with one 150 kW point (2030), 600 kW with two (2035). Power and
  points come from the station inventory (``_stations.json``): each EVSE is a point at its
  station's rated power (a simplification where EVSEs share a cabinet); a pool without an
  inventory is unknown. Traffic that does not show a capability makes a check unknown, not
  failed.
- Art. 5, the ad hoc price: the price in force (:func:`twin.tariffs.price_at`) on each EVSE
  at the log's end and at each change in the week after it, from the default tariffs the
  log shows in force then (SetDefaultTariff and ClearTariffs, Accepted; an EVSE's own, else
  its station's). At points of 50 kW and more it is per kWh, and a per-minute occupancy
  (idle) fee is the only other price allowed: a per-minute charging price or a session fee
  fails, as does a moment without a per-kWh price. Below 50 kW (a check only where a pool
  has such points) an ad hoc price is in force at every moment, and the reason lists its
  components. The inventory's ``kind`` is the EVSE kind a tariff's ``evseKind`` meets.
- Art. 5(8): smart-charging capable: every station of the pool accepted a charging profile.
- ISO 15118-20 (Delegated Regulation 2025/656, from 2027): every station shows it (see
  migration).
- Art. 20, dynamic data: how late status reached the log (capture time minus the station's
  timestamp, 95th percentile); twin's own threshold, not the regulation's: 60 s.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from twin.analytics import migration
from twin.analytics.frames import bounds, connect, rows
from twin.analytics.migration import inventory_of
from twin.publish.afir import art20
from twin.tariffs import DEFAULT_ZONE, Price, Tariff, Usage, boundaries, clock_zone, iso, price_at

THRESHOLDS = [  # (rule, minimum pool kW, minimum points of >= 150 kW)
    ("Art. 3 TEN-T core, end 2025", 400.0, 1),
    ("Art. 3 TEN-T core, end 2027", 600.0, 2),
    ("Art. 3 TEN-T comprehensive, 2030", 300.0, 1),
    ("Art. 3 TEN-T comprehensive, 2035", 600.0, 2),
]
FRESH_S = 60.0

SQL = """
WITH profiles AS (
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
SELECT s.station_id, coalesce(p.accepted, false) AS smart, d.p95_s
FROM (SELECT DISTINCT station_id FROM frames_all) s
LEFT JOIN profiles p USING (station_id)
LEFT JOIN status_delay d USING (station_id)
"""
TARIFFS_SQL = """
SELECT c.station_id, c.action, CAST(c.payload AS VARCHAR) AS request, CAST(a.payload AS VARCHAR) AS answer
FROM frames c JOIN frames a ON a.conn_id = c.conn_id AND a.msg_id = c.msg_id AND a.origin = 'cs' AND a.msg_type = 3
                               AND a.action = c.action  -- an answer's is its CALL's: fewer row groups
WHERE c.msg_type = 2 AND c.origin = 'csms' AND (c.action IN ('SetDefaultTariff', 'ClearTariffs')
      OR c.action IN ('SetVariables', 'GetVariables') AND CAST(c.payload AS VARCHAR) LIKE '%TimeZone%')
ORDER BY a.ts, a.conn_id, a.seq
"""
FAST_KW = 50.0
PER_KWH = "Art. 5(4) ad hoc price per kWh at 50 kW and more"
COMPONENTS = "Art. 5 ad hoc price and its components below 50 kW"


def afir(capture: str | Path) -> list[dict[str, Any]]:
    known = inventory_of(capture)
    # the log read once (a table: SQL names frames five times), for these checks and migration's
    con = connect(capture, ("SetDefaultTariff", "ClearTariffs", "SetVariables", "GetVariables", "SetChargingProfile",
                            "StatusNotification", *migration.ACTIONS), once=True)  # fmt: skip
    seen = {r["station_id"]: r for r in rows(con, SQL)}
    iso20 = {r["station_id"]: r["iso15118_20"] for r in migration.migration_duckdb(capture, con)}
    held, zones = _held(rows(con, TARIFFS_SQL))
    end = bounds(con, capture)[1]
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
        checks += _ad_hoc([{**s, "time_zone": zones.get(s["station_id"], DEFAULT_ZONE)} for s in listed], held, end)
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
        checks.append(art20(listed, stations, held))
        out.append({"pool_id": pool_id, "stations": stations, "total_kw": total_kw, "points_150kw": points_150,
                    "checks": checks})  # fmt: skip
    return out


def _held(found: list[dict[str, Any]]) -> tuple[dict[tuple[str, str], list[Tariff]], dict[str, str]]:
    """Per (station, EVSE) the default tariffs accepted and not cleared by the log's end, as
    the twin's fold keeps them (EVSE ``0``: the whole station); and each station's clock zone
    at the end (:func:`twin.tariffs.clock_zone`), in which the tariffs' times of day are read."""
    held: dict[tuple[str, str], list[Tariff]] = {}
    zones: dict[str, str] = {}
    for r in found:
        request, answer, station = orjson.loads(r["request"]), orjson.loads(r["answer"]), r["station_id"]
        zone = clock_zone(r["action"], request, answer)
        if zone is not None:
            zones[station] = zone
        elif r["action"] == "SetDefaultTariff" and answer.get("status") == "Accepted":
            tariff = request.get("tariff") or {}
            slot = (station, str(request.get("evseId", 0)))
            held[slot] = [*(t for t in held.get(slot, ()) if t.get("tariffId") != tariff.get("tariffId")), tariff]
        elif r["action"] == "ClearTariffs":
            gone = {x.get("tariffId") for x in answer.get("clearTariffsResult", ()) if x.get("status") == "Accepted"}
            evse = request.get("evseId")
            for slot in [k for k in held if k[0] == station and (evse is None or k[1] == str(evse))]:
                held[slot] = [t for t in held[slot] if t.get("tariffId") not in gone]
    return held, zones


def _prices(tariffs: list[Tariff], end: datetime, station: dict[str, Any]) -> list[tuple[datetime, Price | None]]:
    """The price in force at ``end`` and at each change in the week after it, the times of
    day read in the station's zone."""
    usage, tz = Usage(evse_kind=station.get("kind")), station.get("time_zone", DEFAULT_ZONE)
    moments = [end, *boundaries(tariffs, end, end + timedelta(days=7), tz)]
    return [(t, price_at(tariffs, t, usage, tz)) for t in moments]


def _fault(station: dict[str, Any], held: dict[tuple[str, str], list[Tariff]], end: datetime | None) -> str | None:
    """What is wrong with the ad hoc price on a station's EVSEs; None: nothing."""
    fast = station["max_kw"] >= FAST_KW
    for evse in range(1, int(station.get("evses") or 1) + 1):
        sid = station["station_id"]
        tariffs = held.get((sid, str(evse))) or held.get((sid, "0")) or []
        name = sid if int(station.get("evses") or 1) == 1 else f"{sid} EVSE {evse}"
        if not tariffs or end is None:
            return f"{name}: no default tariff in force"
        for at, price in _prices(tariffs, end, station):
            when = iso(at)
            if price is None or not any(v is not None for v in price.as_json().values()):
                return f"{name}: no ad hoc price in force at {when}"
            if not fast:
                continue
            if price.energy_per_kwh is None:
                return f"{name}: no per-kWh price at {when}"
            if price.time_per_min is not None:
                return f"{name}: a per-minute charging price at {when}"
            if price.fixed_fee is not None:
                return f"{name}: a session fee at {when}"
    return None


def _components(stations: list[dict[str, Any]], held: dict[tuple[str, str], list[Tariff]],
                end: datetime | None) -> str:  # fmt: skip
    names = {"energy_per_kwh": "per kWh", "time_per_min": "per minute charging", "fixed_fee": "per session",
             "idle_per_min": "per minute idle"}  # fmt: skip
    seen: set[str] = set()
    for s in stations:
        for key in [k for k in held if k[0] == s["station_id"]]:
            for _, price in _prices(held[key], end, s) if end is not None else ():
                seen |= {k for k, v in (price.as_json() if price else {}).items() if v is not None}
    return ", ".join(label for key, label in names.items() if key in seen) or "none"


def _judge(rule: str, stations: list[dict[str, Any]], held: dict[tuple[str, str], list[Tariff]],
           end: datetime | None, said: str) -> dict[str, str]:  # fmt: skip
    """Fail on a fault of a 2.1 station; a 2.0.1 station (the inventory's ``protocol``) has no
    tariff messages, so one without a tariff leaves the check unknown, not failed."""
    failed: list[str] = []
    unknown: list[str] = []
    for s in stations:
        fault = _fault(s, held, end)
        if fault is None:
            continue
        if s.get("protocol") == "ocpp2.0.1" and not any(k[0] == s["station_id"] for k in held):
            unknown.append(f"{s['station_id']}: OCPP 2.0.1 has no tariff messages, its price is not in the log")
        else:
            failed.append(fault)
    if failed:
        return _check(rule, False, "; ".join(failed + unknown))
    return _check(rule, None, "; ".join(unknown)) if unknown else _check(rule, True, said)


def _ad_hoc(stations: list[dict[str, Any]], held: dict[tuple[str, str], list[Tariff]],
            end: datetime | None) -> list[dict[str, str]]:  # fmt: skip
    """Art. 5's checks of a pool's ad hoc price (the inventory's stations of the pool)."""
    if not stations:
        return [_check(PER_KWH, None, "rated power unknown")]
    fast = [s for s in stations if s["max_kw"] >= FAST_KW]
    slow = [s for s in stations if s["max_kw"] < FAST_KW]
    out = [_check(PER_KWH, True, "no point of 50 kW or more") if not fast else
           _judge(PER_KWH, fast, held, end, f"per kWh (an occupancy fee at most beside it) on every station of 50 kW "
                                            f"or more ({len(fast)}) at every price in force")]  # fmt: skip
    if slow:
        said = f"in force on every station below 50 kW ({len(slow)}): {_components(slow, held, end)}"
        out.append(_judge(COMPONENTS, slow, held, end, said))
    return out


def _check(rule: str, ok: bool | None, why: str) -> dict[str, str]:
    return {"rule": rule, "result": "unknown" if ok is None else "pass" if ok else "fail", "why": why}
