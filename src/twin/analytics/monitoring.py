"""Monitoring events: every NotifyEvent's event data, with its severity (OCPP 2.1 carries it;
a 2.0.1 event has none and counts as ``unknown``) and component, and the counts by each."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from twin.analytics.frames import query

SEVERITY = {0: "Danger", 1: "Hardware Failure", 2: "System Failure", 3: "Critical", 4: "Error", 5: "Alert",
            6: "Warning", 7: "Notice", 8: "Informational", 9: "Debug"}  # fmt: skip

SQL = """
SELECT station_id, strftime(TRY_CAST(e->>'$.timestamp' AS TIMESTAMPTZ), '%Y-%m-%dT%H:%M:%S.%gZ') AS happened_at,
       e->>'$.component.name' AS component, TRY_CAST(e->>'$.component.evse.id' AS BIGINT) AS evse_id,
       e->>'$.variable.name' AS variable, TRY_CAST(e->>'$.severity' AS INTEGER) AS severity,
       e->>'$.trigger' AS trigger, e->>'$.actualValue' AS actual_value,
       TRY_CAST(e->>'$.variableMonitoringId' AS BIGINT) AS monitor_id
FROM (SELECT station_id, ts, seq, unnest(from_json(payload->'$.eventData', '["JSON"]')) AS e,
             generate_subscripts(from_json(payload->'$.eventData', '["JSON"]'), 1) AS k
      FROM frames WHERE action = 'NotifyEvent' AND msg_type = 2 AND origin = 'cs' AND valid)
WHERE (CAST(? AS TIMESTAMPTZ) IS NULL OR TRY_CAST(e->>'$.timestamp' AS TIMESTAMPTZ) >= CAST(? AS TIMESTAMPTZ))
  AND (CAST(? AS TIMESTAMPTZ) IS NULL OR TRY_CAST(e->>'$.timestamp' AS TIMESTAMPTZ) < CAST(? AS TIMESTAMPTZ))
ORDER BY happened_at, station_id, ts, seq, k  -- a total order: the same rows come in the same order
"""


def monitoring_duckdb(capture: str | Path, since: str | None = None, until: str | None = None) -> list[dict[str, Any]]:
    rows = query(capture, ("NotifyEvent",), SQL, [since, since, until, until])
    for r in rows:
        r["severity_name"] = SEVERITY.get(r["severity"], "unknown") if r["severity"] is not None else "unknown"
    return rows


def counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "events": len(rows),
        "by_severity": dict(Counter(f"{r['severity']} {r['severity_name']}" if r["severity"] is not None
                                    else "unknown" for r in rows).most_common()),
        "by_component": dict(Counter(r["component"] for r in rows).most_common()),
    }  # fmt: skip
