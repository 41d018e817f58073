"""The HTTP API (ARCHITECTURE.md): JSON, errors as ``{"error": ...}`` with a status code.

Served from the worker's own table: one worker holds every station. (Faust's table routing
crashes while a worker is starting, and would route by a hash of the JSON key while twins
live on the partition of the frame's key; several workers behind one API need a router of
our own.) While the worker rebalances or recovers, station views answer 503."""

from __future__ import annotations

from collections import Counter
from typing import Any

import faust

from twin import capabilities
from twin.fold import public


def row(twin: dict[str, Any]) -> dict[str, Any]:
    """One line of the fleet table."""
    evses = twin.get("evses", {})
    directions = Counter((e.get("energy") or {}).get("direction", "idle") for e in evses.values())
    return {
        "station_id": twin["station_id"],
        "protocol": twin.get("protocol"),
        "online": twin.get("connection", {}).get("online", False),
        "last_seen": twin.get("connection", {}).get("last_seen"),
        "vendor": twin.get("identity", {}).get("vendor"),
        "model": twin.get("identity", {}).get("model"),
        "evses": len(evses),
        "charging": directions["charging"],
        "discharging": directions["discharging"],
        "faulted": sum(e.get("status") == "Faulted" for e in evses.values()),
        "import_wh": sum((e.get("energy") or {}).get("import_wh") or 0 for e in evses.values()),
        "export_wh": sum((e.get("energy") or {}).get("export_wh") or 0 for e in evses.values()),
        "as_of": twin.get("as_of"),
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "stations": len(rows),
        "online": sum(r["online"] for r in rows),
        "charging": sum(r["charging"] > 0 for r in rows),
        "discharging": sum(r["discharging"] > 0 for r in rows),
        "faulted": sum(r["faulted"] > 0 for r in rows),
        "evses": sum(r["evses"] for r in rows),
        "import_wh": sum(r["import_wh"] for r in rows),
        "export_wh": sum(r["export_wh"] for r in rows),
        "protocols": dict(Counter(r["protocol"] or "unknown" for r in rows)),
    }


def register(app: faust.App, twins: Any) -> None:
    def all_rows() -> list[dict[str, Any]]:
        return sorted((row(t) for t in twins.values() if t), key=lambda r: r["station_id"])

    @app.page("/v1/stations")
    async def stations(web: Any, request: Any) -> Any:
        return starting(web) or web.json({"stations": all_rows()})

    def starting(web: Any) -> Any:
        if getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False):
            return web.json({"error": "the worker is recovering its twins; try again shortly"}, status=503)
        return None

    @app.page("/v1/stations/{station_id}")
    async def station(web: Any, request: Any, station_id: str) -> Any:
        busy = starting(web)
        if busy is not None:
            return busy
        twin = twins.get(station_id)
        if twin is None:
            return web.json({"error": f"unknown station {station_id!r}"}, status=404)
        return web.json(public(twin))

    @app.page("/v1/fleet/summary")
    async def fleet_summary(web: Any, request: Any) -> Any:
        return starting(web) or web.json(summary(all_rows()))

    @app.page("/v1/protocols/ocpp-21")
    async def protocol(web: Any, request: Any) -> Any:
        return web.json(capabilities.matrix())

    @app.page("/v1/protocols/ocpp-21/messages")
    async def protocol_messages(web: Any, request: Any) -> Any:
        rows = capabilities.messages()
        return web.json({"actions": len(rows), "messages": rows})
