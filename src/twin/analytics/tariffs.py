"""Tariffs and cost over a capture (``twin report tariffs``).

- ``prices``: per station, EVSE and day the prices in force (``twin.tariffs.price_at`` at
  the start of the day and at each change within it: the tariffs accepted by then, the
  calendar conditions).
- ``sessions``: per transaction its energy, duration, idle time, the cost the station or
  the CSMS reported (the last ``costDetails``, ``CostUpdated`` or
  ``TransactionEventResponse.totalCost``) and the cost recomputed from the tariff in force at
  its start (and any ChangeTransactionTariff) over the readings it sent, with the
  difference: a billing check.
- ``revenue``: per site (the inventory's, else the station) and day of the sessions' end, the
  recomputed cost excluding tax, and the reported cost where there is one.

A reported cost is compared excluding tax where the report gives it, else including it.

Times of day are each station's local time: the ``ClockCtrlr.TimeZone`` the log shows it was
set to (:func:`twin.tariffs.clock_zone`, UTC where it shows none), as the station, the twin
and central cost read them; a session is priced in the zone of its last event, and a
station's days are its local days (their zone that at the end of the log).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from twin.analytics.frames import connect, rows
from twin.analytics.migration import inventory_of
from twin.cost import Sample, reading, session_cost
from twin.tariffs import DEFAULT_ZONE, Tariff, boundaries, clock_zone, in_force, instant, iso, price_at

ACTIONS = ("SetDefaultTariff", "ChangeTransactionTariff", "ClearTariffs", "TransactionEvent", "CostUpdated",
           "SetVariables", "GetVariables")  # fmt: skip
SQL = """
SELECT station_id, origin, msg_type, msg_id, conn_id, action, CAST(payload AS VARCHAR) AS payload,
       strftime(ts, '%Y-%m-%dT%H:%M:%S.%g') || 'Z' AS ts
FROM frames WHERE msg_type IN (2, 3) ORDER BY ts, conn_id, seq
"""


def tariffs_report(capture: str | Path, since: str | None = None, until: str | None = None) -> dict[str, Any]:
    con = connect(capture, ACTIONS)
    records = rows(con, SQL)
    known = inventory_of(capture)
    calls: dict[tuple[str, str], dict[str, Any]] = {}
    held: dict[tuple[str, str], list[tuple[str, Tariff]]] = defaultdict(list)  # (station, evse) -> (from, tariff)
    txs: dict[str, dict[str, Any]] = {}
    zones: dict[str, str] = {}  # station -> its clock's zone, as the log says so far
    for r in records:
        p = orjson.loads(r["payload"])
        key = (r["conn_id"], r["msg_id"])
        if r["msg_type"] == 2:
            calls[key] = p
            if r["action"] == "TransactionEvent" and r["origin"] == "cs":
                _event(txs, r["station_id"], p, zones.get(r["station_id"], DEFAULT_ZONE))
            continue
        request = calls.pop(key, None)
        if request is None:
            continue
        if r["action"] in ("SetVariables", "GetVariables"):
            zone = clock_zone(r["action"], request, p)
            if zone is not None:
                zones[r["station_id"]] = zone
        elif r["action"] == "SetDefaultTariff" and p.get("status") == "Accepted":
            evse = str(request.get("evseId", 0))
            slot = (r["station_id"], evse)
            kept = [(f, t) for f, t in held[slot] if t.get("tariffId") != request["tariff"].get("tariffId")]
            held[slot] = [*kept, (r["ts"], request["tariff"])]
        elif r["action"] == "ClearTariffs":
            gone = {x.get("tariffId") for x in p.get("clearTariffsResult", ()) if x.get("status") == "Accepted"}
            for k in [k for k in held if k[0] == r["station_id"]]:
                held[k] = [(f, t) for f, t in held[k] if t.get("tariffId") not in gone]
        elif r["action"] == "ChangeTransactionTariff" and p.get("status") == "Accepted":
            tx = txs.get(str(request.get("transactionId")))
            if tx is not None:
                tx["changes"].append((r["ts"], request["tariff"]))
        elif r["action"] == "CostUpdated":
            tx = txs.get(str(request.get("transactionId")))
            if tx is not None:  # CostUpdated's totalCost includes taxes (OCPP 2.1)
                tx["reported"] = tx["reported_incl"] = request.get("totalCost")
                tx["source"] = "central"
        elif r["action"] == "TransactionEvent" and "totalCost" in p:
            tx = txs.get(str((request.get("transactionInfo") or {}).get("transactionId")))
            if tx is not None:
                tx["reported"] = tx["reported_incl"] = p["totalCost"]
                tx["source"] = "central"
    sessions = [s for s in (_session(tx, held) for tx in txs.values()) if s is not None]
    sessions = [s for s in sessions if (since is None or (s["ended_at"] or "") >= since)
                and (until is None or s["started_at"] < until)]  # fmt: skip
    prices = _prices(held, records, since, until, zones)
    revenue: dict[tuple[str, str], dict[str, Any]] = {}
    for s in sessions:
        site = known.get(s["station_id"], {}).get("site_id") or s["station_id"]
        day = (s["ended_at"] or s["started_at"])[:10]
        row = revenue.setdefault((site, day), {"site_id": site, "date": day, "sessions": 0, "currency": s["currency"],
                                               "revenue_excl_tax": 0.0, "reported": 0.0})  # fmt: skip
        row["sessions"] += 1
        row["revenue_excl_tax"] = round(row["revenue_excl_tax"] + (s["recomputed_excl_tax"] or 0.0), 4)
        row["reported"] = round(row["reported"] + (s["reported"] or 0.0), 4)
    return {"prices": prices, "sessions": sorted(sessions, key=lambda s: (s["started_at"], s["transaction_id"])),
            "revenue": sorted(revenue.values(), key=lambda r: (r["date"], r["site_id"]))}  # fmt: skip


def _event(txs: dict[str, dict[str, Any]], station: str, p: dict[str, Any], zone: str) -> None:
    tx_id = str((p.get("transactionInfo") or {}).get("transactionId"))
    tx = txs.setdefault(tx_id, {"transaction_id": tx_id, "station_id": station, "evse_id": None, "started_at": None,
                                "ended_at": None, "start_wh": None, "samples": [], "changes": [], "reported": None,
                                "reported_incl": None, "source": None, "currency": None})  # fmt: skip
    tx["zone"] = zone
    if (p.get("evse") or {}).get("id") is not None:
        tx["evse_id"] = p["evse"]["id"]
    found = reading(p)
    if p.get("eventType") == "Started" or tx["started_at"] is None:
        tx["started_at"] = p.get("timestamp")
        if found is not None and p.get("eventType") == "Started":
            tx["start_wh"] = found[1]
    elif found is not None:
        tx["samples"].append(found)
    if p.get("eventType") == "Ended":
        tx["ended_at"] = p.get("timestamp")
    details = p.get("costDetails")
    if details:
        total = (details.get("totalCost") or {}).get("total") or {}
        tx["reported"] = total.get("exclTax", total.get("inclTax"))
        tx["reported_incl"] = total.get("inclTax")
        tx["source"], tx["currency"] = "local", (details.get("totalCost") or {}).get("currency")


def _session(tx: dict[str, Any], held: dict[tuple[str, str], list[tuple[str, Tariff]]]) -> dict[str, Any] | None:
    if tx["started_at"] is None:
        return None
    start = instant(tx["started_at"])
    mine = held.get((tx["station_id"], str(tx["evse_id"]))) or held.get((tx["station_id"], "0")) or []
    tariff = in_force([t for f, t in mine if instant(f) <= start], start)
    timeline: list[tuple[datetime | None, Tariff]] = [] if tariff is None else [(None, tariff)]
    timeline += [(instant(at), t) for at, t in tx["changes"]]
    base = tx["start_wh"] if tx["start_wh"] is not None else (tx["samples"][0][1] if tx["samples"] else 0.0)
    samples = [Sample(instant(at), wh - base, power) for at, wh, power in tx["samples"]]
    end = instant(tx["ended_at"]) if tx["ended_at"] else (samples[-1].at if samples else start)
    out = {"transaction_id": tx["transaction_id"], "station_id": tx["station_id"], "evse_id": tx["evse_id"],
           "started_at": tx["started_at"], "ended_at": tx["ended_at"],
           "energy_kwh": round(max((s.energy_wh for s in samples), default=0.0) / 1000, 4),
           "duration_min": round((end - start).total_seconds() / 60, 2), "idle_min": None,
           "time_zone": tx["zone"], "tariff_id": None, "currency": tx["currency"], "reported": tx["reported"],
           "reported_incl_tax": tx["reported_incl"], "reported_source": tx["source"],
           "recomputed_excl_tax": None, "recomputed_incl_tax": None, "difference": None}  # fmt: skip
    if timeline:
        cost = session_cost(timeline, start, samples, end=end, tz=tx["zone"])
        out.update(tariff_id=cost.tariff_id, currency=out["currency"] or cost.currency,
                   idle_min=round(cost.idle_s / 60, 2), recomputed_excl_tax=round(cost.total_excl_tax, 4),
                   recomputed_incl_tax=None if cost.total_incl_tax is None
                   else round(cost.total_incl_tax, 4))  # fmt: skip
        if tx["reported"] is not None:
            mine_total = cost.total_excl_tax if tx["source"] == "local" else (cost.total_incl_tax
                                                                             or cost.total_excl_tax)  # fmt: skip
            out["difference"] = round(float(tx["reported"]) - mine_total, 4)
    return out


def _prices(held: dict[tuple[str, str], list[tuple[str, Tariff]]], records: list[dict[str, Any]],
            since: str | None, until: str | None, zones: dict[str, str]) -> list[dict[str, Any]]:  # fmt: skip
    """Per station, EVSE (``0``: every EVSE) and local day: the prices at the day's start and
    each change."""
    from zoneinfo import ZoneInfo

    if not records:
        return []
    first = instant(since or records[0]["ts"])
    last = instant(until or records[-1]["ts"])
    out = []
    for (station, evse), listed in sorted(held.items()):
        if not listed:
            continue
        tz = zones.get(station, DEFAULT_ZONE)
        local = first.astimezone(ZoneInfo(tz))
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        while day <= last:
            end = day + timedelta(days=1)  # wall-clock arithmetic: the next local midnight
            begin = max(day, instant(listed[0][0]))
            if begin >= end:
                day = end
                continue
            active = [t for f, t in listed if instant(f) < end]
            points = [begin] + [c for c in _changes(active, begin, end, tz) if c > begin]
            changes = []
            for at in points:
                now = [t for f, t in listed if instant(f) <= at]
                p, tariff = price_at(now, at, tz=tz), in_force(now, at)
                changes.append({"at": iso(at), "tariff_id": tariff.get("tariffId") if tariff else None,
                                **(p.as_json() if p else {})})  # fmt: skip
            out.append({"station_id": station, "evse_id": evse, "date": day.date().isoformat(), "time_zone": tz,
                        "changes": len(changes) - 1, "prices": changes})  # fmt: skip
            day = end
    return out


def _changes(tariffs: list[Tariff], day: datetime, end: datetime, tz: str) -> list[datetime]:
    out = []
    before = price_at(tariffs, day, tz=tz) if tariffs else None
    for t in boundaries(tariffs, day, end - timedelta(microseconds=1), tz):
        now = price_at(tariffs, t, tz=tz)
        if now != before:
            out.append(t)
            before = now
    return out
