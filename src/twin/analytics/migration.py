"""Migration: where each station stands on the way to OCPP 2.1, from what its traffic shows.

- ``protocol``: the subprotocol of its latest connection;
- ``bidirectional``: it asked for a bidirectional transfer (``AC_BPT`` / ``DC_BPT``, also
  ``*_BPT_DER``) in NotifyEVChargingNeeds, or its inventory says so;
- ``iso15118_20``: it requested or checked ISO 15118-20 certificates
  (Get15118EVCertificate with a ``-20`` schema version) or sent V2X charging parameters,
  or its inventory says ISO 15118 capable.

The inventory is the archive's ``_stations.json`` (or ``CAPTURE.stations.json``) when there
is one; a station it does not list is judged by its traffic alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import orjson

from twin.analytics.frames import connect, rows, sql_list

ACTIONS = ("Connected", "NotifyEVChargingNeeds", "Get15118EVCertificate")

SQL = f"""
WITH latest AS (
    SELECT station_id, arg_max(protocol, ts) AS protocol, max(ts) AS last_seen
    FROM frames WHERE action IN ({sql_list(ACTIONS)}) GROUP BY ALL
),
needs AS (
    SELECT station_id,
           bool_or((payload->>'$.chargingNeeds.requestedEnergyTransfer') LIKE '%BPT%') AS bpt,
           bool_or((payload->'$.chargingNeeds.v2xChargingParameters') IS NOT NULL) AS v2x
    FROM frames WHERE action = 'NotifyEVChargingNeeds' AND msg_type = 2 AND origin = 'cs' AND valid
    GROUP BY ALL
),
certs AS (
    SELECT station_id, bool_or((payload->>'$.iso15118SchemaVersion') LIKE '%15118:-20%') AS iso20
    FROM frames WHERE action = 'Get15118EVCertificate' AND msg_type = 2 AND origin = 'cs' AND valid
    GROUP BY ALL
)
SELECT l.station_id, l.protocol, coalesce(n.bpt, false) AS bidirectional_seen,
       coalesce(c.iso20, false) OR coalesce(n.v2x, false) AS iso15118_20_seen
FROM latest l LEFT JOIN needs n USING (station_id) LEFT JOIN certs c USING (station_id)
ORDER BY l.station_id
"""


def inventory_of(capture: str | Path) -> dict[str, dict[str, Any]]:
    from twin.captures import inventory_path

    path = inventory_path(capture)
    if not path.exists():
        return {}
    return {s["station_id"]: s for s in orjson.loads(path.read_bytes())}


def migration_duckdb(capture: str | Path, con: duckdb.DuckDBPyConnection | None = None) -> list[dict[str, Any]]:
    """``con``: a connection of :func:`frames.connect` whose ``frames`` hold at least
    :data:`ACTIONS` (afir reads the log once for its own checks and these)."""
    known = inventory_of(capture)
    found = rows(con or connect(capture, ACTIONS, once=True), SQL)
    for r in found:
        listed = known.get(r["station_id"], {})
        r["bidirectional"] = bool(r.pop("bidirectional_seen") or listed.get("bidirectional"))
        r["iso15118_20"] = bool(r.pop("iso15118_20_seen") or listed.get("iso15118"))
        r["in_inventory"] = bool(listed)
    return found


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "stations": len(rows),
        "ocpp2.1": sum(r["protocol"] == "ocpp2.1" for r in rows),
        "ocpp2.0.1": sum(r["protocol"] == "ocpp2.0.1" for r in rows),
        "bidirectional": sum(r["bidirectional"] for r in rows),
        "iso15118_20": sum(r["iso15118_20"] for r in rows),
        "ready_for_v2g": sum(r["protocol"] == "ocpp2.1" and r["bidirectional"] for r in rows),
    }
