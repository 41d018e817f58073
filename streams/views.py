"""The HTTP API (ARCHITECTURE.md): JSON, errors as ``{"error": ...}`` with a status code.

Any worker answers for any station. A twin lives with the worker that folds its frames'
partition of ocpp.frames, so a request for a station is routed by that topic's partition of
the station id (Faust's topic routing: the same murmur2 the gateway partitions with), and
the lists gather every worker's rows (``?scope=local``: this worker's alone). While the
worker rebalances or recovers, station views answer 503."""

from __future__ import annotations

from collections import Counter
from typing import Any

import aiohttp
import faust
import orjson
from faust.exceptions import SameNode

from streams.access import forwarded
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


def line(record: dict[str, Any]) -> dict[str, Any]:
    """One frame on a station's timeline: what it was, and the start of its payload."""
    payload = orjson.dumps(record.get("payload")).decode()
    return {
        "ts": record.get("ts"), "origin": record.get("origin"), "msg_type": record.get("msg_type"),
        "action": record.get("action"), "msg_id": record.get("msg_id"), "valid": record.get("valid"),
        "payload": payload if len(payload) <= 160 else payload[:159] + "…",
    }  # fmt: skip


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


def recovering(app: faust.App) -> bool:
    """The worker is rebalancing or recovering its table: its twins are not whole yet."""
    return bool(getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False))


def peers(app: faust.App) -> list[str]:
    """The other workers' base URLs, from the group's last assignment."""
    me = str(app.conf.canonical_url).rstrip("/")
    try:
        hosts = app.router.external_topics_metadata()
    except Exception:
        return []
    return sorted({str(host).rstrip("/") for host in hosts} - {me})


def owned(app: faust.App, frames: Any) -> Any:
    """Whether a station's twin is this worker's now: its frames' partition (the producers'
    murmur2 of the station id) is assigned here. The table keeps the twins of a partition
    taken away by a rebalance (on Kafka a partition moves while both workers live; Tansu's
    slow join hid it), and those must not be listed twice."""
    from aiokafka.partitioner import murmur2

    try:
        mine = {tp.partition for tp in app.consumer.assignment() if tp.topic == frames.get_topic_name()}
    except Exception:  # no consumer yet
        return lambda station: True
    count = int(frames.partitions or 1)
    if not mine:
        return lambda station: True  # not assigned yet: answer with what there is
    return lambda station: (murmur2(str(station).encode()) & 0x7FFFFFFF) % count in mine


def register(app: faust.App, twins: Any, frames: Any, recent: dict[str, Any]) -> None:
    def local_rows() -> list[dict[str, Any]]:
        held = owned(app, frames)
        return [row(t) for t in twins.values() if t and held(t["station_id"])]

    def others() -> list[str]:
        return peers(app)

    async def all_rows(request: Any) -> tuple[list[dict[str, Any]], list[str]]:
        """Every worker's rows (this one's alone with ``?scope=local``), and the workers
        that did not answer."""
        rows = local_rows()
        missing: list[str] = []
        if request.query.get("scope") != "local":
            for url in others():
                try:
                    auth = forwarded(request)  # the caller's token: the peer checks it too
                    ask = app.http_client.get(f"{url}/v1/stations?scope=local", headers=auth,
                                              timeout=aiohttp.ClientTimeout(total=5))  # fmt: skip
                    async with ask as response:
                        rows += (await response.json())["stations"]
                except Exception:
                    missing.append(url)
        return sorted(rows, key=lambda r: r["station_id"]), missing

    async def listing(web: Any, request: Any, shape: Any) -> Any:
        """Every worker's rows, shaped into a body; which workers did not answer, said."""
        busy = starting(web)
        if busy is not None:
            return busy
        rows, missing = await all_rows(request)
        body: dict[str, Any] = shape(rows)
        if missing:
            body["unreachable_workers"] = missing
        return web.json(body)

    @app.page("/v1/stations")
    async def stations(web: Any, request: Any) -> Any:
        return await listing(web, request, lambda rows: {"stations": rows})

    def starting(web: Any) -> Any:
        if recovering(app):
            return web.json({"error": "the worker is recovering its twins; try again shortly"}, status=503)
        return None

    async def routed(web: Any, request: Any, station_id: str) -> Any:
        """The owning worker's answer, or None when the station is this worker's."""
        busy = starting(web)
        if busy is not None:
            return busy
        if request.query.get("scope") != "local":
            try:
                return await app.router.route_topic_req(frames, station_id.encode(), web, request)
            except SameNode:
                pass  # ours
            except Exception:
                pass  # no assignment known yet: answer from here
        if twins.get(station_id) is None:
            return web.json({"error": f"unknown station {station_id!r}"}, status=404)
        return None

    @app.page("/v1/stations/{station_id}")
    async def station(web: Any, request: Any, station_id: str) -> Any:
        answer = await routed(web, request, station_id)
        return answer if answer is not None else web.json(public(twins[station_id]))

    @app.page("/v1/stations/{station_id}/frames")
    async def station_frames(web: Any, request: Any, station_id: str) -> Any:
        """The station's latest frames, newest first (``?limit=``, at most the worker keeps)."""
        answer = await routed(web, request, station_id)
        if answer is not None:
            return answer
        try:
            limit = max(1, int(request.query.get("limit", "50")))
        except ValueError:
            return web.json({"error": "limit is a number"}, status=400)
        lines = list(recent.get(station_id, ()))[::-1][:limit]
        return web.json({"station_id": station_id, "frames": lines})

    @app.page("/v1/fleet/summary")
    async def fleet_summary(web: Any, request: Any) -> Any:
        return await listing(web, request, summary)

    @app.page("/v1/protocols/ocpp-21")
    async def protocol(web: Any, request: Any) -> Any:
        return web.json(capabilities.matrix())

    @app.page("/v1/protocols/ocpp-21/messages")
    async def protocol_messages(web: Any, request: Any) -> Any:
        rows = capabilities.messages()
        return web.json({"actions": len(rows), "messages": rows})
