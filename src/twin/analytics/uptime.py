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
KEPT = sql_list(sorted(UP | {"Unavailable"}))  # not down by the status itself (Unavailable: excluded, or down)
TARGET = {"nevi": 97.0, "uk": 99.0}  # NEVI: each port above it; UK: the network average at least it
UK_MIN_KW = 50.0

SQL = f"""
-- a Disconnected counts for the station's latest connection only: an older connection closing
-- after a newer one came (the gateway closes it then) is not the station going offline
WITH changes AS (
    SELECT station_id, ms, conn_id, seq, action = 'Connected' AS online FROM (
        SELECT *, last_value(CASE WHEN action = 'Connected' THEN conn_id END IGNORE NULLS) OVER (
                      PARTITION BY station_id ORDER BY ms, conn_id, seq
                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS latest
        FROM (SELECT station_id, epoch_ms(ts) AS ms, conn_id, seq, action FROM frames
              WHERE msg_type = 0 AND action IN ('Connected', 'Disconnected'))
    )
    WHERE action = 'Connected' OR latest IS NULL OR latest = conn_id
),
-- the station offline: from such a Disconnected to its next change (the last: to the window's end)
-- (times in epoch milliseconds: TIMESTAMPTZ arithmetic goes through the ICU calendar)
offline AS (
    SELECT station_id, ms AS left_at, coalesce(next, $end) AS back_at FROM (
        SELECT station_id, ms, online, lead(ms) OVER (PARTITION BY station_id ORDER BY ms, conn_id, seq) AS next
        FROM changes
    )
    WHERE NOT online
),
-- each port's status from one StatusNotification to its next (the last: to the window's end),
-- clipped to the window; before the port's first status it is not measured
spans AS (
    SELECT station_id, evse_id, status, greatest(ms, $start) AS since,
           least(coalesce(lead(ms) OVER (PARTITION BY station_id, evse_id ORDER BY ms, conn_id, seq), $end), $end)
               AS until
    FROM (SELECT station_id, status_notification.evse_id AS evse_id, status_notification.status AS status,
                 epoch_ms(ts) AS ms, conn_id, seq
          FROM frames
          WHERE action = 'StatusNotification' AND msg_type = 2 AND origin = 'cs' AND valid
            AND status_notification.evse_id IS NOT NULL AND status_notification.status <> '')
),
-- a port up (or excluded) while its station is offline is down for that time
cut AS (
    SELECT s.station_id, s.evse_id,
           sum(least(s.until, o.back_at) - greatest(s.since, o.left_at)) AS offline,
           sum(least(s.until, o.back_at) - greatest(s.since, o.left_at))
               FILTER (WHERE s.status = 'Unavailable') AS offline_unavailable
    FROM spans s JOIN offline o
      ON o.station_id = s.station_id AND o.left_at < s.until AND o.back_at > s.since
    WHERE s.since < s.until AND s.status IN ({KEPT})
    GROUP BY ALL
),
ports AS (
    SELECT station_id, evse_id, sum(greatest(until - since, 0)) AS measured,
           sum(greatest(until - since, 0)) FILTER (WHERE status NOT IN ({KEPT})) AS down,
           sum(greatest(until - since, 0)) FILTER (WHERE status = 'Unavailable') AS unavailable
    FROM spans GROUP BY ALL
)
SELECT station_id, evse_id, measured / 60000.0 AS measured,
       (coalesce(down, 0) + coalesce(offline, 0)) / 60000.0 AS down,
       (coalesce(unavailable, 0) - coalesce(offline_unavailable, 0)) / 60000.0 AS unavailable
FROM ports LEFT JOIN cut USING (station_id, evse_id)
WHERE measured > 0
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
