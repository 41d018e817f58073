"""OpenADR 2.0b through ``openleadr`` (its VEN client; it ships a VTN too, which the tests
use): each oadrEvent becomes the OpenADR 3 shape :mod:`twin.grid.openadr` reads, so one set
of rules judges both, and its records carry 2.0b's own modification number.

Mapping: ``LOAD_CONTROL`` / ``x-loadControlCapacity`` (kW) is an import capacity limit,
``ELECTRICITY_PRICE`` a price; targets whose ``resource_id`` or ``group_id`` is an EAN18
name sites. The VEN opts in to an event any of whose records were accepted, out otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from twin import envelope, kafka_security
from twin.broker import STOP_WITHIN, stop_quietly
from twin.grid import openadr
from twin.sites import IMPORT_LIMIT, PRICE, Site

log = logging.getLogger("twin.ven")
SIGNALS = {("LOAD_CONTROL", "x-loadControlCapacity"): IMPORT_LIMIT, ("ELECTRICITY_PRICE", "price"): PRICE,
           ("ELECTRICITY_PRICE", "priceRelative"): None}  # fmt: skip


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return envelope.iso_ms((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())
    return str(value)


def _duration(value: Any) -> str:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value or 0)
    return f"PT{seconds:g}S"


def as_openadr3(event: Mapping[str, Any]) -> dict[str, Any]:
    """An openleadr event (2.0b) in the 3.0.1 shape."""
    descriptor = event.get("event_descriptor") or {}
    eans = [str(t.get(k)) for t in event.get("targets") or () for k in ("resource_id", "group_id")
            if isinstance(t, dict) and t.get(k) and openadr.EAN18.match(str(t.get(k)))]  # fmt: skip
    intervals: list[dict[str, Any]] = []
    kinds: list[str] = []
    for sig in event.get("event_signals") or ():
        kind = SIGNALS.get((sig.get("signal_name"), sig.get("signal_type")))
        if kind is None:
            kind = f"{sig.get('signal_name')}/{sig.get('signal_type')}"  # recorded as not folded
        kinds.append(kind)
        for interval in sig.get("intervals") or ():
            intervals.append({"id": len(intervals), "intervalPeriod": {
                "start": _iso(interval.get("dtstart")), "duration": _duration(interval.get("duration"))},
                "payloads": [{"type": kind, "values": [interval.get("signal_payload")]}]})  # fmt: skip
    return {
        "id": str(descriptor.get("event_id")), "programID": str(descriptor.get("market_context") or "2.0b")
        .replace("://", "-").replace("/", "-").replace(".", "-"),
        "eventName": descriptor.get("event_id"),
        "targets": [{"type": "POWER_SERVICE_LOCATION", "values": eans}] if eans else None,
        "payloadDescriptors": [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": k, "units": "KW"
                                if k == IMPORT_LIMIT else None} for k in dict.fromkeys(kinds)],
        "intervals": intervals,
    }  # fmt: skip


def records(event: Mapping[str, Any], sites: Sequence[Site], received_at: str) -> list[dict[str, Any]]:
    """The grid.signals records of one 2.0b event version (cancelled: every record cancelled)."""
    descriptor = event.get("event_descriptor") or {}
    number = int(descriptor.get("modification_number") or 0)
    out = [{**r, "modification_number": number} for r in openadr.signals(as_openadr3(event), None, sites, received_at)]
    if descriptor.get("event_status") == "cancelled":
        out = [{**r, "status": "cancelled", "reason": "the VTN cancelled the event"} for r in out]
    return out


async def run(vtn: str, ven_name: str, sites: Sequence[Site], bootstrap: str, topics: Any, stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaProducer
    from openleadr import OpenADRClient

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **kafka_security.aiokafka())
    await producer.start()

    async def on_event(event: dict[str, Any]) -> str:
        written = records(event, sites, envelope.iso_ms())
        for r in written:
            if r["status"] == "rejected":
                log.warning("2.0b event %s rejected for %s: %s", r["event_id"], r["site_id"] or r["ean"], r["reason"])
            key = (r.get("site_id") or r.get("ean") or "").encode() or None
            await producer.send(topics.signals, key=key, value=orjson.dumps(r))
        await producer.flush()
        return "optIn" if any(r["status"] == "accepted" for r in written) else "optOut"

    client = OpenADRClient(ven_name=ven_name, vtn_url=vtn, disable_signature=True)
    client.add_handler("on_event", on_event)
    client.add_handler("on_update_event", on_event)
    log.info("ven: OpenADR 2.0b VTN %s as %s, %d sites", vtn, ven_name, len(sites))
    try:
        await client.run()
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await client.stop()
        await stop_quietly(producer, STOP_WITHIN)
