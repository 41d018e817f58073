"""Uptime per port (EVSE), station, pool and network, from the log alone.

A port's state over time comes from its StatusNotifications and its station's connection
(the gateway's ``Connected`` / ``Disconnected`` records):

| state | when | NEVI (23 CFR 680.116(b)) | UK (PCPR 2023 reg. 7) |
|---|---|---|---|
| up | Available, Occupied, Reserved, while connected | up | up |
| down | Faulted; or the station offline (between Disconnected and Connected) | outage | down |
| excluded | Unavailable (set by the operator: maintenance) | outage, excluded | down |
| not measured | before the port's first status in the window | — | — |

``uptime_pct = (T - (outage - excluded)) / T × 100`` with T the measured minutes (NEVI's
formula, with the window in place of a year's 525,600 minutes). A station offline counts as
down for every port it has. The network figure is the mean of the ports; NEVI asks more than
97% per port, the UK 99% on average over points of 50 kW and more (the rated power comes
from the station inventory; without one, every port counts). AFIR itself sets no uptime
percentage.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from twin.analytics.frames import connect
from twin.analytics.migration import inventory_of

UP = {"Available", "Occupied", "Reserved"}
TARGET = {"nevi": 97.0, "uk": 99.0}  # NEVI: each port above it; UK: the network average at least it
UK_MIN_KW = 50.0

SQL = """
SELECT station_id, ts, action,
       TRY_CAST(payload->>'$.evseId' AS BIGINT) AS evse_id, payload->>'$.connectorStatus' AS status
FROM frames
WHERE (msg_type = 0 AND action IN ('Connected', 'Disconnected'))
   OR (action = 'StatusNotification' AND msg_type = 2 AND origin = 'cs' AND valid)
ORDER BY station_id, ts, conn_id, seq
"""


def _minutes(a: datetime, b: datetime) -> float:
    return max(0.0, (b - a).total_seconds() / 60)


def uptime(
    capture: str | Path, rule: str = "nevi", since: str | None = None, until: str | None = None
) -> dict[str, Any]:
    if rule not in TARGET:
        raise ValueError(f"rule is one of {', '.join(TARGET)}")
    con = connect(capture, ("Connected", "Disconnected", "StatusNotification"))
    rows = con.execute(SQL).fetchall()
    bounds = con.execute("SELECT min(ts), max(ts) FROM frames_all").fetchone()
    start = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else bounds[0] if bounds else None
    end = datetime.fromisoformat(until.replace("Z", "+00:00")) if until else bounds[1] if bounds else None
    known = inventory_of(capture)
    ports: dict[tuple[str, int], dict[str, float]] = {}
    if start is not None and end is not None:
        by_station: dict[str, list[tuple[Any, ...]]] = {}
        for r in rows:
            by_station.setdefault(r[0], []).append(r)
        for station, events in by_station.items():
            _station(station, events, start, end, rule, ports)
    out_ports: list[dict[str, Any]] = []
    for (station, evse), t in sorted(ports.items()):
        measured = t["measured"]
        outage = t["down"] + t["unavailable"]
        excluded = t["unavailable"] if rule == "nevi" else 0.0
        pct = round(100 * (measured - (outage - excluded)) / measured, 3) if measured else None
        kw = known.get(station, {}).get("max_kw")
        out_ports.append({"station_id": station, "evse_id": evse, "pool_id": known.get(station, {}).get("pool_id"),
                          "max_kw": kw, "uptime_pct": pct, "down_minutes": round(outage, 2),
                          "excluded_minutes": round(excluded, 2), "measured_minutes": round(measured, 2)})  # fmt: skip
    target = TARGET[rule]
    counted = [p for p in out_ports if p["uptime_pct"] is not None]
    if rule == "uk":
        counted = [p for p in counted if p["max_kw"] is None or p["max_kw"] >= UK_MIN_KW]
    for p in out_ports:
        p["pass"] = None if p["uptime_pct"] is None else (p["uptime_pct"] > target if rule == "nevi" else None)

    def mean(items: list[dict[str, Any]]) -> float | None:
        return round(sum(p["uptime_pct"] for p in items) / len(items), 3) if items else None

    stations = [{"station_id": s, "uptime_pct": mean([p for p in counted if p["station_id"] == s])}
                for s in sorted({p["station_id"] for p in counted})]  # fmt: skip
    pools = [{"pool_id": pool, "uptime_pct": mean([p for p in counted if p["pool_id"] == pool])}
             for pool in sorted({p["pool_id"] for p in counted if p["pool_id"]})]  # fmt: skip
    network = mean(counted)
    if rule == "nevi":
        verdict = all(p["pass"] for p in counted) if counted else None
    else:
        verdict = network >= target if network is not None else None
    return {
        "rule": rule, "from": start.isoformat().replace("+00:00", "Z") if start else None,
        "to": end.isoformat().replace("+00:00", "Z") if end else None, "target_pct": target,
        "ports": out_ports, "stations": stations, "pools": pools,
        "network": {"uptime_pct": network, "ports_counted": len(counted), "pass": verdict},
    }  # fmt: skip


def _station(station: str, events: list[tuple[Any, ...]], start: datetime, end: datetime, rule: str,
             ports: dict[tuple[str, int], dict[str, float]]) -> None:  # fmt: skip
    online: bool | None = None
    status: dict[int, str] = {}
    last = start

    def account(until: datetime) -> None:
        nonlocal last
        a, b = max(last, start), min(until, end)
        if b > a:
            for evse, state in status.items():
                t = ports.setdefault((station, evse), {"measured": 0.0, "down": 0.0, "unavailable": 0.0})
                span = _minutes(a, b)
                t["measured"] += span
                if online is False or state == "Faulted":
                    t["down"] += span
                elif state == "Unavailable":
                    t["unavailable"] += span
                elif state not in UP:
                    t["down"] += span
        last = max(last, until)

    for _, ts, action, evse, state in events:
        account(ts)
        if action == "Connected":
            online = True
        elif action == "Disconnected":
            online = False
        elif evse is not None and state:
            status[evse] = state
    account(end)
