"""``twin ven``: the OpenADR VEN as a process. Thin: it asks the VTN, and what the VTN says
goes through :mod:`twin.grid.openadr` (each event version to records) and
:mod:`twin.grid.safe_mode` (an outage to records); every record goes to ``grid.signals``
(key: site id), where the controller, the worker's API and the archive read it.

What the VEN remembers between polls (:class:`Ven`) is what it wrote: each event's last
version, so an unchanged event is not written again and a deleted one is cancelled, and
the safe-mode records in force. Bad answers (not JSON, wrong schema, 401/403, 5xx,
timeouts) are a log line, a rejected record per site (once per outage, not per retry), a
backoff, and safe mode; nothing is obeyed that was not accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from twin import envelope, kafka_security, tokens
from twin.broker import STOP_WITHIN, stop_quietly
from twin.grid import openadr, safe_mode
from twin.grid.client import VtnClient, VtnError, backoff
from twin.sites import Site

log = logging.getLogger("twin.ven")


def _ts(moment: datetime) -> str:
    return envelope.iso_ms(moment.timestamp())


class Ven:
    """The VEN's memory, and what to write as the VTN answers or does not. No I/O."""

    def __init__(self, sites: Sequence[Site]) -> None:
        self.sites = list(sites)
        self.seen: dict[str, int] = {}  # event id -> the version last written
        self.written: dict[str, list[dict[str, Any]]] = {}  # event id -> its records, as last written
        self.log: list[dict[str, Any]] = []  # every record written (what safe mode reads)
        self.safe: dict[str, dict[str, Any]] = {}  # site id -> its safe-mode record in force
        self.outage: str | None = None  # why the VTN is not heard, while it is not
        self.unreadable: set[bytes] = set()  # events without an id, already recorded
        self.restored: set[str] = set()  # events known from the log, not (yet) from this VTN

    def restore(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Remember what a VEN of these sites wrote before (``grid.signals`` read back at
        start): each event's last version (so an unchanged event is not written again, and
        one the VTN deleted meanwhile is cancelled), the program's safe-mode limit, and the
        safe-mode records in force, with the outage that brought them (so that a VEN restarted
        while the VTN is away neither forgets safe mode nor enters it twice, and ends it when
        the VTN answers again). Other writers' records (operators, sites not ours) are left."""
        mine = [dict(r) for r in records if r.get("site_id") in {s.site_id for s in self.sites}
                and r.get("protocol") in (openadr.PROTOCOL, safe_mode.SAFE_PROTOCOL)]  # fmt: skip
        self.log = mine[-5000:]
        number: dict[str, int] = {}  # event id -> its newest version
        last: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}  # that version's records (later wins)
        for record in mine:
            event_id, version = str(record.get("event_id")), int(record.get("modification_number") or 0)
            if version > number.get(event_id, -1):
                number[event_id], last[event_id] = version, {}
            if version == number[event_id]:
                last[event_id][(str(record["site_id"]), str(record.get("payload_type")))] = record
        for event_id, by_site in last.items():
            newest = list(by_site.values())
            if newest[0].get("protocol") == safe_mode.SAFE_PROTOCOL:
                for record in newest:
                    if record.get("status") == "accepted":
                        self.safe[str(record["site_id"])] = record
                        self.outage = str(record.get("reason") or "the VTN could not be heard")
            elif newest[0].get("program_id") != "vtn" and any(x.get("status") != "cancelled" for x in newest):
                self.written[event_id] = newest
                self.seen[event_id] = number[event_id]
                self.restored.add(event_id)

    def _keep(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        out = list(records)
        self.log += out
        del self.log[:-5000]
        return out

    def heard(self, programs: Sequence[Any], events: Sequence[Any], now: datetime) -> list[dict[str, Any]]:
        """The VTN answered with these programs and events: the records of every event
        version not written before, cancellations of events gone, and the end of safe mode."""
        received = _ts(now)
        out: list[dict[str, Any]] = []
        if self.outage is not None:
            log.info("the VTN answers again (it had failed: %s)", self.outage)
            self.outage = None
            out += [safe_mode.leave(record, now) for record in self.safe.values()]
            self.safe.clear()
        by_program = {p.get("id"): p for p in programs if isinstance(p, dict)}
        present: set[str] = set()
        for event in events:
            event_id = event.get("id") if isinstance(event, dict) else None
            if isinstance(event_id, str):
                present.add(event_id)
                number = openadr.version(event)
                if self.seen.get(event_id) == number:
                    continue
                self.seen[event_id] = number
            else:  # no id to know it by: once per content
                mark = orjson.dumps(event, option=orjson.OPT_SORT_KEYS, default=str)
                if mark in self.unreadable:
                    continue
                self.unreadable.add(mark)
            records = openadr.signals(event, by_program.get(event.get("programID")) if isinstance(event, dict)
                                      else None, self.sites, received)  # fmt: skip
            for r in records:
                if r["status"] == "rejected":
                    log.warning("event %s (program %s) for site %s rejected: %s", r["event_id"], r["program_id"],
                                r["site_id"] or f"EAN {r['ean']}", r["reason"])  # fmt: skip
            if isinstance(event_id, str):
                self.written[event_id] = records
            out += records
        self.restored -= present  # heard again: this VTN's
        for event_id in [e for e in self.written if e not in present]:
            if event_id in self.restored and self.written[event_id][0].get("program_id") not in by_program:
                continue  # read back from the log, of a program this VTN does not list: another VEN's
            self.restored.discard(event_id)
            out += openadr.cancelled([r for r in self.written.pop(event_id) if r["site_id"]], received)
            self.seen.pop(event_id, None)
        return self._keep(out)

    def failed(self, error: VtnError, now: datetime) -> list[dict[str, Any]]:
        """The VTN could not be heard: the first failure of an outage is recorded for every
        site, with safe mode where a program gave a safe-mode limit."""
        reason = f"VTN {error.kind}: {error}"
        if self.outage is not None:
            return []
        self.outage = reason
        out = openadr.failure(self.sites, _ts(now), reason)
        for site in self.sites:
            entered = safe_mode.enter(site, self.log, now, reason)
            if entered is not None:
                self.safe[site.site_id] = entered
                out.append(entered)
        return self._keep(out)

    def active(self, moments: Mapping[str, datetime]) -> list[dict[str, Any]]:
        """Accepted capacity-limit records with an interval running at their site's moment
        (``moments``: site id -> the stations' time there), each with that interval's index."""
        out = []
        for records in self.written.values():
            for r in records:
                moment = moments.get(r["site_id"])
                if moment is None or r["status"] != "accepted" or r["payload_type"] not in openadr.CAPACITY:
                    continue
                for i, interval in enumerate(r["intervals"]):
                    start = datetime.fromisoformat(interval["start"].replace("Z", "+00:00"))
                    if start <= moment and (moment - start).total_seconds() < interval["duration_s"]:
                        out.append({**r, "interval_index": i, "at": moment})
        return out


def report(client_name: str, event_id: str, program_id: str, rows: Sequence[Mapping[str, Any]],
           now: datetime) -> dict[str, Any]:  # fmt: skip
    """An OpenADR 3 report of what each targeted site draws now: DEMAND (import, kW) and
    EXPORT_DEMAND (export, kW; a privately defined payload type, as the spec allows)."""
    return {
        "programID": program_id, "eventID": event_id, "clientName": client_name, "reportName": f"twin-{event_id}",
        "payloadDescriptors": [
            {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "DEMAND", "readingType": "DIRECT_READ",
             "units": "KW"},
            {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "EXPORT_DEMAND", "readingType": "DIRECT_READ",
             "units": "KW"}],
        "resources": [{"resourceName": str(row["site_id"]), "intervals": [{
            "id": int(row.get("interval_id", 0)),
            "intervalPeriod": {"start": _ts(now), "duration": "PT0S"},
            "payloads": [{"type": "DEMAND", "values": [float(row.get("import_kw") or 0.0)]},
                         {"type": "EXPORT_DEMAND", "values": [float(row.get("export_kw") or 0.0)]}]}]}
            for row in rows],
    }  # fmt: skip


async def measured(api: str, session: Any) -> dict[str, dict[str, Any]]:
    """Each site's import and export now, from the worker's ``/v1/sites`` (none if away)."""
    try:
        async with session.get(f"{api.rstrip('/')}/v1/sites") as response:
            body = await response.json(content_type=None)
        return {s["site_id"]: s for s in body.get("sites", ())}
    except Exception as exc:
        log.debug("the worker's /v1/sites did not answer (%r): no report this round", exc)
        return {}


def recall(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Everything on ``grid.signals`` now (none before its first record): what this VEN, or
    the one before it, wrote, for :meth:`Ven.restore`."""
    from twin.captures import TopicLog

    try:
        return [dict(r) for r in TopicLog(bootstrap, topic) if isinstance(r, dict)]
    except ValueError:  # no such topic yet: no partition to read
        return []


async def run(vtn: str, client_id: str, client_secret: str, sites: Sequence[Site], bootstrap: str, topics: Any,
              stop: asyncio.Event, poll_s: float = 30.0, api: str | None = None, callback_port: int | None = None,
              client_name: str = "twin") -> None:  # fmt: skip
    """Poll (and, with ``callback_port``, be called back), write, report, until ``stop``."""
    import aiohttp
    from aiokafka import AIOKafkaProducer

    ven = Ven(sites)
    before = await asyncio.to_thread(recall, bootstrap, topics.signals)
    ven.restore(before)
    log.info("ven: %d records of grid.signals read back (%d events remembered%s)", len(before), len(ven.written),
             f"; in safe mode since: {ven.outage}" if ven.safe else "")  # fmt: skip
    client = VtnClient(vtn, client_id, client_secret)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **kafka_security.aiokafka())
    await producer.start()
    wake = asyncio.Event()
    called_with = secrets.token_urlsafe(24)  # the VTN sends it back on each notification (its bearerToken)
    callback = await _callback_server(callback_port, wake, called_with) if callback_port else None
    subscribed = False
    failures = 0
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5), headers=tokens.headers())  # the API's token

    async def write(records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            key = (r.get("site_id") or r.get("ean") or "").encode() or None
            await producer.send(topics.signals, key=key, value=orjson.dumps(r))
            if r.get("protocol") == safe_mode.SAFE_PROTOCOL or (r.get("event_id") == "vtn-unreachable"):
                for station in next((s.stations for s in sites if s.site_id == r.get("site_id")), ()):
                    detail = {k: r[k] for k in ("site_id", "reason", "status", "protocol")}
                    alert = {"station_id": station, "ts": r["received_at"], "kind": "grid_signal",
                             "severity": "warning", "detail": detail}  # fmt: skip
                    await producer.send(topics.alerts, key=station.encode(), value=orjson.dumps(alert))
        await producer.flush()

    log.info("ven: %d sites (%s), VTN %s, polling every %g s%s", len(sites), ", ".join(s.site_id for s in sites),
             vtn, poll_s, f", callbacks on port {callback_port}" if callback_port else "")  # fmt: skip
    try:
        while not stop.is_set():
            now = datetime.now(UTC)
            try:
                programs = await client.programs()
                events = await client.events()
                records = ven.heard(programs, events, now)
                failures = 0
                await write(records)
                if records:
                    log.info("ven: %d records written (%d events)", len(records), len(events))
                if callback is not None and not subscribed:
                    with contextlib.suppress(VtnError):
                        await client.subscribe(client_name, f"http://127.0.0.1:{callback_port}/notification",
                                               bearer=called_with)  # fmt: skip
                        subscribed = True
                        log.info("ven: subscribed to event notifications")
                if api:
                    await _report(client, ven, client_name, await measured(api, http), now)
            except VtnError as exc:
                failures += 1
                log.warning("ven: the VTN failed (%s, %d in a row): %s; retrying with backoff", exc.kind, failures,
                            exc)  # fmt: skip
                await write(ven.failed(exc, now))
                await _wait(stop, wake, backoff(failures, poll_s))
                continue
            await _wait(stop, wake, asyncio.sleep(poll_s))
    finally:
        with contextlib.suppress(Exception):
            await client.close()
        with contextlib.suppress(Exception):
            await http.close()
        await stop_quietly(producer, STOP_WITHIN)
        if callback is not None:
            with contextlib.suppress(Exception):
                await callback.cleanup()


async def _report(client: VtnClient, ven: Ven, client_name: str, sites_now: Mapping[str, Mapping[str, Any]],
                  now: datetime) -> None:  # fmt: skip
    """Report what each site under a running limit draws. A site's moment is the stations'
    time its last plan was made at (a simulated fleet's clock is not ours), else now."""
    moments = {}
    for site_id, site in sites_now.items():
        planned = site.get("planned_at")
        moments[site_id] = datetime.fromisoformat(planned.replace("Z", "+00:00")) if planned else now
    by_event: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in ven.active(moments):
        site = sites_now[r["site_id"]]
        by_event.setdefault((r["program_id"], r["event_id"]), []).append(
            {"site_id": r["site_id"], "interval_id": r["interval_index"], "import_kw": site.get("import_kw"),
             "export_kw": site.get("export_kw"), "at": r["at"]})  # fmt: skip
    for (program_id, event_id), rows in by_event.items():
        await client.report(report(client_name, event_id, program_id, rows, rows[0]["at"]))


async def _wait(stop: asyncio.Event, wake: asyncio.Event, pause: Any) -> None:
    """Sleep the pause, or less: until stopped or called back."""
    sleeper = asyncio.ensure_future(pause)
    stopper, waker = asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())
    await asyncio.wait({sleeper, stopper, waker}, return_when=asyncio.FIRST_COMPLETED)
    for task in (sleeper, stopper, waker):
        task.cancel()
    wake.clear()


async def _callback_server(port: int, wake: asyncio.Event, bearer: str) -> Any:
    """The webhook the VTN calls on a change: any notification with the subscription's
    ``bearer`` means "poll now"; one without it is refused (401)."""
    from aiohttp import web

    async def notified(request: web.Request) -> web.Response:
        if not hmac.compare_digest(tokens.bearer(request.headers.get("Authorization")) or "", bearer):
            return web.json_response({"error": "no or wrong bearer token"}, status=401)
        with contextlib.suppress(Exception):
            body = await request.json()
            log.info("ven: notified of %s %s", body.get("operation"), body.get("objectType"))
        wake.set()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/notification", notified)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner
