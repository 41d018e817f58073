"""The sites API of the worker: ``GET /v1/sites``, ``/v1/sites/{id}`` and
``/v1/sites/{id}/signals``.

A site's view is :func:`twin.sites.view` of its stations' twins, the limit in force (from
``grid.signals``) and the controller's last plan (from ``control.plans``); the worker reads
both topics whole into memory, as every worker does, so any worker can answer. Its stations'
twins may live on several workers: each answers for its own (``?scope=local``) and the one
asked gathers them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp
import faust
import orjson

from streams.access import forwarded
from streams.views import owned, peers, recovering
from twin import kafka_security
from twin import sites as site_model
from twin.settings import Settings

log = logging.getLogger("twin.worker")
SIGNALS_KEPT = 1000


def register(app: faust.App, twins: Any, frames: Any, settings: Settings, bootstrap: str,
             sites: list[site_model.Site]) -> None:  # fmt: skip
    plans: dict[str, dict[str, Any]] = {}
    signals: dict[str, list[dict[str, Any]]] = {}
    by_id = {s.site_id: s for s in sites}

    @app.task
    async def read_plans_and_signals() -> None:
        """control.plans and grid.signals, whole, then as they come."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        topics = settings.topics
        while True:
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                        **kafka_security.aiokafka(settings),
                                        auto_offset_reset="earliest")  # fmt: skip
            try:
                await consumer.start()
                wanted: list[TopicPartition] = []
                while not wanted:
                    await consumer._client.force_metadata_update()
                    wanted = [TopicPartition(t, p) for t in (topics.plans, topics.signals)
                              for p in sorted(consumer.partitions_for_topic(t) or ())]  # fmt: skip
                    if not wanted:
                        await asyncio.sleep(1)
                consumer.assign(wanted)
                await consumer.seek_to_beginning(*wanted)
                async for message in consumer:
                    try:
                        body = orjson.loads(message.value) if message.value else None
                    except orjson.JSONDecodeError:
                        continue
                    if not isinstance(body, dict):
                        continue
                    if message.topic == topics.plans and message.key:
                        plans[message.key.decode()] = body
                    elif message.topic == topics.signals:
                        kept = signals.setdefault(str(body.get("site_id")), [])
                        kept.append(body)
                        del kept[:-SIGNALS_KEPT]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reading control.plans and grid.signals failed (%r); again in 1 s", exc)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    def local_rows(site: site_model.Site) -> list[dict[str, Any]]:
        held = owned(app, frames)
        local = {station: twins.get(station) for station in site.stations if held(station)}
        return site_model.evses(site, {k: v for k, v in local.items() if v})

    async def gathered(request: Any, path: str, site: site_model.Site) -> list[dict[str, Any]]:
        rows = local_rows(site)
        if request.query.get("scope") == "local":
            return rows
        for url in peers(app):
            with contextlib.suppress(Exception):
                auth = forwarded(request)  # the caller's token: the peer checks it too
                ask = app.http_client.get(f"{url}{path}?scope=local", headers=auth,
                                          timeout=aiohttp.ClientTimeout(total=5))  # fmt: skip
                async with ask as response:
                    rows += (await response.json())["evses"]
        return sorted(rows, key=lambda r: (r["station_id"], str(r["evse_id"])))

    def shown(site: site_model.Site, rows: list[dict[str, Any]]) -> dict[str, Any]:
        now = datetime.now(UTC)
        plan = plans.get(site.site_id)
        planned_at = (plan or {}).get("planned_at")
        if planned_at:  # the plan's own clock (a simulated fleet's may run ahead of ours)
            with contextlib.suppress(ValueError):
                now = max(now, datetime.fromisoformat(planned_at.replace("Z", "+00:00")))
        limit = site_model.limit_at(site, signals.get(site.site_id, []), now)
        return site_model.view(site, rows, limit, plan)

    @app.page("/v1/sites")
    async def all_sites(web: Any, request: Any) -> Any:
        if recovering(app):
            return web.json({"error": "the worker is recovering its twins; try again shortly"}, status=503)
        out = []
        for site in sites:
            out.append(shown(site, await gathered(request, f"/v1/sites/{site.site_id}", site)))
        return web.json({"sites": out})

    @app.page("/v1/sites/{site_id}")
    async def one_site(web: Any, request: Any, site_id: str) -> Any:
        site = by_id.get(site_id)
        if site is None:
            return web.json({"error": f"unknown site {site_id!r}"}, status=404)
        if recovering(app):
            return web.json({"error": "the worker is recovering its twins; try again shortly"}, status=503)
        return web.json(shown(site, await gathered(request, f"/v1/sites/{site_id}", site)))

    @app.page("/v1/sites/{site_id}/signals")
    async def site_signals(web: Any, request: Any, site_id: str) -> Any:
        if site_id not in by_id:
            return web.json({"error": f"unknown site {site_id!r}"}, status=404)
        return web.json({"site_id": site_id, "signals": signals.get(site_id, [])})

    @app.page("/v1/sites/{site_id}/plan")
    async def site_plan(web: Any, request: Any, site_id: str) -> Any:
        if site_id not in by_id:
            return web.json({"error": f"unknown site {site_id!r}"}, status=404)
        plan = plans.get(site_id)
        if plan is None:
            return web.json({"error": f"no plan for site {site_id!r} yet (is `twin controller` running?)"}, status=404)
        return web.json(plan)
