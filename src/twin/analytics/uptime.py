"""Uptime per port (EVSE), station, pool and network, from the log alone.

A port's state over time comes from its StatusNotifications and its station's connection
(the gateway's ``Connected`` / ``Disconnected`` records):

| state | when | NEVI (23 CFR 680.116(b)) | UK (PCPR 2023 reg. 7) |
|---|---|---|---|
| up | Available, Occupied, Reserved, while connected | up | up |
| down | Faulted; or the station offline (between Disconnected and Connected) | outage | down |
| excluded | Unavailable (set by the operator: maintenance) | outage, excluded | down |
| not measured | before the port's first status in the window | — | — |

The station is offline from the ``Disconnected`` of its latest connection to its next
``Connected``; an older connection closing after a newer one came (the gateway closes it then)
does not take it offline, as the twin folds it.

``uptime_pct = (T - (outage - excluded)) / T × 100`` with T the measured minutes (NEVI's
formula, with the window in place of a year's 525,600 minutes). A station offline counts as
down for every port it has. The network figure is the mean of the ports; NEVI asks more than
97% per port, the UK 99% on average over points of 50 kW and more (the rated power comes
from the station inventory; without one, every port counts). AFIR itself sets no uptime
percentage.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twin.analytics.frames import bounds, connect, sql_list
from twin.analytics.migration import inventory_of

UP = {"Available", "Occupied", "Reserved"}
TARGET = {"nevi": 97.0, "uk": 99.0}  # NEVI: each port above it; UK: the network average at least it
UK_MIN_KW = 50.0

SQL = f"""
WITH events AS (
    SELECT station_id, epoch_ms(ts) AS ms, conn_id, seq, action,
           status_notification.evse_id AS evse_id, status_notification.status AS status
    FROM frames
    WHERE (msg_type = 0 AND action IN ('Connected', 'Disconnected'))
       OR (action = 'StatusNotification' AND msg_type = 2 AND origin = 'cs' AND valid)
),
-- a Disconnected counts for the station's latest connection only: an older connection closing
-- after a newer one came (the gateway closes it then) is not the station going offline
changes AS (
    SELECT station_id, ms, conn_id, seq, action = 'Connected' AS online FROM (
        SELECT *, last_value(CASE WHEN action = 'Connected' THEN conn_id END IGNORE NULLS) OVER (
                      PARTITION BY station_id ORDER BY ms, conn_id, seq
                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS latest
        FROM events WHERE action <> 'StatusNotification'
    )
    WHERE action = 'Connected' OR latest IS NULL OR latest = conn_id
),
statuses AS (
    SELECT station_id, evse_id, ms, conn_id, seq, status FROM events
    WHERE action = 'StatusNotification' AND evse_id IS NOT NULL AND status <> ''
),
-- each port's own statuses and every connection change of its station, in log order
timeline AS (
    SELECT p.station_id, p.evse_id, c.ms, c.conn_id, c.seq, c.online, NULL AS status
    FROM (SELECT DISTINCT station_id, evse_id FROM statuses) p JOIN changes c ON c.station_id = p.station_id
    UNION ALL
    SELECT station_id, evse_id, ms, conn_id, seq, NULL, status FROM statuses
),
-- the state from each event to the next (the last: to the window's end), clipped to the window
-- (times in epoch milliseconds: TIMESTAMPTZ arithmetic goes through the ICU calendar)
spans AS (
    SELECT station_id, evse_id, online, status,
           greatest(least(coalesce(next, $end), $end) - greatest(ms, $start), 0) / 60000.0 AS minutes
    FROM (
        SELECT station_id, evse_id, ms,
               last_value(online IGNORE NULLS) OVER w AS online, last_value(status IGNORE NULLS) OVER w AS status,
               lead(ms) OVER (PARTITION BY station_id, evse_id ORDER BY ms, conn_id, seq) AS next
        FROM timeline
        WINDOW w AS (PARTITION BY station_id, evse_id ORDER BY ms, conn_id, seq
                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    )
    WHERE status IS NOT NULL  -- before the port's first status: not measured
)
SELECT station_id, evse_id, sum(minutes) AS measured,
       sum(minutes) FILTER (WHERE online IS NOT DISTINCT FROM false
                            OR status NOT IN ({sql_list(sorted(UP | {'Unavailable'}))})) AS down,
       sum(minutes) FILTER (WHERE online IS DISTINCT FROM false AND status = 'Unavailable') AS unavailable
FROM spans GROUP BY ALL HAVING sum(minutes) > 0
ORDER BY station_id, evse_id
"""
"""Each port's measured, down and unavailable minutes between ``$start`` and ``$end`` (epoch
milliseconds; a station offline: every port down; a port is measured from its first status)."""


def uptime(
    capture: str | Path, rule: str = "nevi", since: str | None = None, until: str | None = None
) -> dict[str, Any]:
    if rule not in TARGET:
        raise ValueError(f"rule is one of {', '.join(TARGET)}")
    con = connect(capture, ("Connected", "Disconnected", "StatusNotification"))
    first, last = bounds(con, capture)
    start = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else first
    end = datetime.fromisoformat(until.replace("Z", "+00:00")) if until else last
    known = inventory_of(capture)
    window = {"start": _ms(start), "end": _ms(end)} if start and end else None
    ports = con.execute(SQL, window).fetchall() if window else []
    out_ports: list[dict[str, Any]] = []
    for station, evse, measured, down, unavailable in ports:
        outage = (down or 0.0) + (unavailable or 0.0)
        excluded = (unavailable or 0.0) if rule == "nevi" else 0.0
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

    by_station: dict[str, list[dict[str, Any]]] = {}
    by_pool: dict[str, list[dict[str, Any]]] = {}
    for p in counted:
        by_station.setdefault(p["station_id"], []).append(p)
        if p["pool_id"]:
            by_pool.setdefault(p["pool_id"], []).append(p)
    stations = [{"station_id": s, "uptime_pct": mean(by_station[s])} for s in sorted(by_station)]
    pools = [{"pool_id": pool, "uptime_pct": mean(by_pool[pool])} for pool in sorted(by_pool)]
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


def _ms(moment: datetime) -> int:
    """Epoch milliseconds, as ``epoch_ms`` gives them (a time without an offset is UTC)."""
    return round((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)
