"""Tariffs and cost (OCPP 2.1 I01-I12): the tariffs a station holds, each EVSE's price in
force at the twin's ``as_of``, a transaction's driver tariff and its running cost.

- ``tariffs.installed``: per EVSE (``"0"``: all of them) the default tariffs a station
  accepted (SetDefaultTariff; a tariff of the same id replaces it; ClearTariffs removes);
  ``tariffs.default`` the last one set per EVSE, in brief.
- ``tariffs.drivers``: the tariff an AuthorizeResponse gave an id token, for the
  transaction it starts.
- ``evses.{id}.tariff``: the tariff in force on the EVSE (its transaction's driver tariff
  while one runs, else the EVSE's default, else the station's), its price now and the next
  change (:func:`twin.tariffs.quote`), computed at the record's time. It is computed again
  when a record arrives past ``next_change_at``, so the price shown is never older than the
  station's last frame.
- ``evses.{id}.transaction.tariffs``: the tariffs of the transaction from its start, each
  from when it was set (ChangeTransactionTariff), for cost computed centrally: an object
  ``{"1": {"tariff", "set_at"}, "2": ...}`` in order (an object, not a list, so that the
  moments are found where the twin's other moments are);
  ``transaction.cost``: the running cost, from ``costDetails`` (``local``) or CostUpdated and
  TransactionEventResponse.totalCost (``central``), ``final`` at the end (a CostUpdated
  folded after the transaction ended is its final cost);
  ``transaction.readings``: ``[[ts, wh since the start, power W], ...]``, the readings of its
  TransactionEvents that change its cost (:func:`twin.cost.needed`; the others merge), so
  central cost prices the session as the station and the report do; ``readings_cut``: the
  first price boundary after the reading before the last (worked out once, not per event).
- ``tariffs.time_zone``: the station's clock's zone, from the ``ClockCtrlr.TimeZone`` of a
  SetVariables it accepted or a GetVariables answer (:func:`twin.tariffs.clock_zone`); the
  times of day of its tariffs are read in it (UTC while the log says none).
"""

from __future__ import annotations

from typing import Any

from twin.cost import first_cut, progress_priced, reading, twin_timeline
from twin.fold.aspects.energy import transaction_of
from twin.fold.engine import Change, Event, on
from twin.tariffs import clock_zone, instant, iso, quote, station_zone

DRIVERS_KEPT = 32
"""Id tokens whose driver tariff a twin keeps, waiting for their transaction."""
READINGS_KEPT = 1000
"""Readings a transaction keeps at most; past them the newest two stretches merge (a tariff
whose prices depend on the session's progress or power keeps every reading)."""


def evse_tariffs(twin: dict[str, Any], evse_id: str) -> list[dict[str, Any]]:
    """The default tariffs that apply on an EVSE: its own, else the station's (``0``)."""
    installed = (twin.get("tariffs") or {}).get("installed") or {}
    return list(installed.get(evse_id) or installed.get("0") or ())


def _running(evse: dict[str, Any]) -> dict[str, Any] | None:
    tx = evse.get("transaction")
    return tx if tx and tx.get("state") != "ended" else None


def refresh(change: Change, force: bool = False) -> None:
    """Each EVSE's tariff and price at the twin's ``as_of``: when forced, when a price change
    is due, or when an EVSE has none yet though tariffs apply."""
    twin = change.twin
    tariffs = twin.get("tariffs")
    active = bool(tariffs and (tariffs.get("installed") or tariffs.get("has_driver")))
    if not force and not active:
        return
    as_of = twin.get("as_of")
    if not as_of:
        return
    due = tariffs is not None and tariffs.get("next_change_at") is not None and tariffs["next_change_at"] <= as_of
    if not force and not due:
        for e in twin["evses"].values():
            if "tariff" not in e:
                break
        else:
            return  # every EVSE has its price, none due: the common case, asked at most records
    at, tz = instant(as_of), station_zone(twin)
    soonest: str | None = None
    drivers = False
    for evse_id in list(twin["evses"]):
        evse = twin["evses"][evse_id]
        tx = _running(evse)
        if tx is not None and tx.get("driver_tariff"):
            q, source = quote(tx["driver_tariff"], at, tz=tz), "driver"
            drivers = True
        else:
            q, source = quote(evse_tariffs(twin, evse_id), at, tz=tz), "default"
        shown = None if q is None else {**q, "source": source}
        if shown is None and evse.get("tariff") is None and not active and source == "default":
            continue  # a station without tariffs: nothing to say
        if "tariff" not in evse or evse["tariff"] != shown:
            change.at("evses", evse_id)["tariff"] = shown
        if shown and shown["next_change_at"] and (soonest is None or shown["next_change_at"] < soonest):
            soonest = shown["next_change_at"]
    if tariffs is not None or soonest is not None:
        node = change.at("tariffs")
        if node.get("next_change_at") != soonest:
            node["next_change_at"] = soonest
        if node.get("has_driver", False) != drivers:
            node["has_driver"] = drivers


@on("SetDefaultTariff", "result")
def default_tariff(change: Change, event: Event) -> None:
    if not (event.accepted and event.request is not None):
        return
    tariff = event.request.get("tariff") or {}
    evse_id = str(event.request.get("evseId", 0))
    change.at("tariffs", "default")[evse_id] = {
        "tariff_id": tariff.get("tariffId"), "currency": tariff.get("currency"),
        "energy": tariff.get("energy"), "valid_from": tariff.get("validFrom"), "set_at": event.ts,
    }  # fmt: skip
    installed = change.at("tariffs", "installed")
    kept = [t for t in installed.get(evse_id, ()) if t.get("tariffId") != tariff.get("tariffId")]
    installed[evse_id] = [*kept, tariff]
    refresh(change, force=True)


@on("ClearTariffs", "result")
def clear_tariffs(change: Change, event: Event) -> None:
    request = event.request or {}
    cleared = {r.get("tariffId") for r in event.payload.get("clearTariffsResult", ()) if r.get("status") == "Accepted"}
    if not cleared:
        return
    installed = change.at("tariffs", "installed")
    evse = request.get("evseId")
    for key in list(installed):
        if evse is None or str(evse) == key:
            installed[key] = [t for t in installed[key] if t.get("tariffId") not in cleared]
            if not installed[key]:
                del installed[key]
    defaults = change.at("tariffs", "default")
    for key in [k for k, v in defaults.items() if v.get("tariff_id") in cleared and (evse is None or str(evse) == k)]:
        del defaults[key]
    refresh(change, force=True)


@on("GetTariffs", "result")
def get_tariffs(change: Change, event: Event) -> None:
    """What the station says it holds (ids and EVSEs only: GetTariffs gives no prices)."""
    change.at("tariffs")["reported"] = {
        "status": event.payload.get("status"), "assignments": event.payload.get("tariffAssignments", []),
        "reported_at": event.ts,
    }  # fmt: skip


@on("Authorize", "result")
def driver_tariff(change: Change, event: Event) -> None:
    tariff = event.payload.get("tariff")
    token = ((event.request or {}).get("idToken") or {}).get("idToken")
    if not tariff or not token:
        return
    drivers = change.at("tariffs", "drivers")
    drivers.pop(token, None)
    drivers[token] = tariff
    while len(drivers) > DRIVERS_KEPT:
        del drivers[next(iter(drivers))]


@on("TransactionEvent")
def transaction_event(change: Change, event: Event) -> None:
    """Runs after the energy aspect: the transaction is in place, on the EVSE it found."""
    p = event.payload
    evse_id = event.evse_id
    if evse_id is None or (p.get("transactionInfo") or {}).get("transactionId") is None:
        return
    tx = change.twin["evses"][evse_id]["transaction"]
    token = (p.get("idToken") or {}).get("idToken")
    drivers = (change.twin.get("tariffs") or {}).get("drivers") or {}
    if "tariffs" not in tx and (evse_tariffs(change.twin, evse_id) or (token and token in drivers)):
        tx = change.at("evses", evse_id, "transaction")
        start = tx.get("started_at") or p.get("timestamp") or event.ts
        if token and token in drivers:
            tx["driver_tariff"] = drivers[token]
            change.at("tariffs", "drivers").pop(token, None)
            first = drivers[token]
        else:
            from twin.tariffs import in_force

            first = in_force(evse_tariffs(change.twin, evse_id), instant(start))
        if first is not None:
            tx["tariffs"] = {"1": {"tariff": first, "set_at": start}}
    elif "tariffs" in tx and token and token in drivers and not tx.get("driver_tariff"):  # authorized later
        tx = change.at("evses", evse_id, "transaction")
        tx["driver_tariff"] = drivers[token]
        tx["tariffs"] = _then(tx, drivers[token], p.get("timestamp") or event.ts)
        change.at("tariffs", "drivers").pop(token, None)
    if "tariffs" in tx and p.get("eventType") != "Started":
        _keep_reading(change, evse_id, tx, p)
    details = p.get("costDetails")
    if details:
        total = (details.get("totalCost") or {}).get("total") or {}
        change.at("evses", evse_id, "transaction")["cost"] = {
            "total_excl_tax": total.get("exclTax"), "total_incl_tax": total.get("inclTax"),
            "currency": (details.get("totalCost") or {}).get("currency"), "source": "local",
            "type_of_cost": (details.get("totalCost") or {}).get("typeOfCost"),
            "updated_at": p.get("timestamp") or event.ts, "final": p.get("eventType") == "Ended",
            "failed": bool(details.get("failureToCalculate")),
        }  # fmt: skip
    refresh(change, force=p.get("eventType") in ("Started", "Ended") or "driver_tariff" in tx)


def _keep_reading(change: Change, evse_id: str, tx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Append the event's reading to its transaction's (``tx``, as the twin has it); merge the
    one before it where it does not change the cost (:func:`twin.cost.needed`, its parts here
    so that the first price boundary after the reading before, ``readings_cut``, is worked out
    once, not per event)."""
    if tx.get("meter_start_import_wh") is None or not tx.get("started_at"):
        return
    found = reading(payload)
    if found is None:
        return
    if not change.owns(tx):  # the energy aspect's copy, as a rule
        tx = change.at("evses", evse_id, "transaction")
    readings = tx["readings"] = [*(tx.get("readings") or ()), [found[0], found[1] - tx["meter_start_import_wh"],
                                                               found[2]]]  # fmt: skip
    if len(readings) < 2:
        return
    a = [tx["started_at"], 0.0, None] if len(readings) < 3 else readings[-3]
    if len(readings) > READINGS_KEPT or not _needed(change, tx, a, readings[-2], readings[-1]):
        del readings[-2]


def _needed(change: Change, tx: dict[str, Any], a: list[Any], b: list[Any], c: list[Any]) -> bool:
    """:func:`twin.cost.needed` of readings as the twin keeps them (``[ts, wh, power]``)."""
    if (b[1] > a[1]) != (c[1] > b[1]):
        return True
    kept = tx.get("tariffs") or {}
    if len(kept) > 1 and any(instant(a[0]) < since < instant(c[0]) for since, _ in twin_timeline(tx) if since):
        return True
    tz = station_zone(change.twin)
    cut = tx.get("readings_cut") or {}
    if cut.get("after") != a[0] or cut.get("tariffs") != len(kept) or cut.get("zone") != tz:
        if _still_first(cut, a[0], len(kept), tz):
            cut = tx["readings_cut"] = {**cut, "after": a[0]}
            return bool(cut["progress"]) or cut["epoch"] < instant(c[0]).timestamp()
        tariffs = [v["tariff"] for _, v in sorted(kept.items(), key=lambda kv: int(kv[0]))]
        first = first_cut(tariffs, instant(a[0]), tz)
        cut = tx["readings_cut"] = {"after": a[0], "tariffs": len(kept), "zone": tz,
                                    "progress": progress_priced(tariffs), "at": None if first is None else iso(first),
                                    "epoch": None if first is None else first.timestamp()}  # fmt: skip
    if cut["progress"]:
        return True
    if cut["epoch"] is None:
        return False
    at, then = cut["at"], c[0]
    if len(then) == len(at) == 24 and then[-1] == "Z":  # both as iso() writes: they compare as text
        return at < then
    return bool(cut["epoch"] < instant(then).timestamp())


def _still_first(cut: dict[str, Any], after: str, tariffs: int, tz: str) -> bool:
    """Whether the boundary ``cut`` found after an earlier reading is the first after ``after``
    too: the same tariffs and zone, ``after`` between the two (no boundary lies between them,
    and the boundaries do not depend on where one starts looking). ``after`` moves on with
    every reading kept: at every event of a transaction priced by its progress or power."""
    if cut.get("tariffs") != tariffs or cut.get("zone") != tz or cut.get("epoch") is None:
        return False
    moment = instant(after)
    return instant(cut["after"]) <= moment and moment.timestamp() < cut["epoch"]


@on("SetVariables", "result")
@on("GetVariables", "result")
def clock(change: Change, event: Event) -> None:
    """The station's time zone (ClockCtrlr.TimeZone): the tariffs' times of day are its."""
    found = clock_zone(str(event.record.get("action")), event.request, event.payload)
    if found is None or (change.twin.get("tariffs") or {}).get("time_zone") == found:
        return
    change.at("tariffs")["time_zone"] = found
    refresh(change, force=True)


@on("TransactionEvent", "result")
def central_total(change: Change, event: Event) -> None:
    """TransactionEventResponse.totalCost: the CSMS's running cost, the final one at Ended."""
    if "totalCost" not in event.payload or event.request is None:
        return
    tx_id = (event.request.get("transactionInfo") or {}).get("transactionId")
    _central(change, tx_id, event.payload["totalCost"], event.ts, final=event.request.get("eventType") == "Ended")


@on("CostUpdated", "result")
def cost_updated(change: Change, event: Event) -> None:
    if event.request is None:
        return
    tx_id = event.request.get("transactionId")
    change.at("tariffs", "costs")[str(tx_id)] = event.request.get("totalCost")
    while len(change.twin["tariffs"]["costs"]) > DRIVERS_KEPT:
        del change.twin["tariffs"]["costs"][next(iter(change.twin["tariffs"]["costs"]))]
    evse_id = _evse_of_tx(change, tx_id)
    ended = evse_id is not None and (change.get("evses", evse_id, "transaction") or {}).get("state") == "ended"
    _central(change, tx_id, event.request.get("totalCost"), event.ts, final=ended)


def _central(change: Change, tx_id: Any, total: Any, ts: str, final: bool) -> None:
    evse_id = _evse_of_tx(change, tx_id)
    if evse_id is None or not isinstance(total, int | float):
        return
    tx = change.at("evses", evse_id, "transaction")
    if (tx.get("cost") or {}).get("final") and not final:
        return  # the final cost stands
    timeline = list((tx.get("tariffs") or {}).values())
    currency = timeline[-1]["tariff"].get("currency") if timeline else None
    tx["cost"] = {"total_excl_tax": None, "total_incl_tax": total, "currency": currency, "source": "central",
                  "type_of_cost": None, "updated_at": ts, "final": final, "failed": False}  # fmt: skip


@on("ChangeTransactionTariff", "result")
def transaction_tariff(change: Change, event: Event) -> None:
    if not (event.accepted and event.request is not None):
        return
    tariff = event.request.get("tariff") or {}
    tx_id = event.request.get("transactionId")
    change.at("tariffs", "transactions")[str(tx_id)] = tariff.get("tariffId")
    evse_id = _evse_of_tx(change, tx_id)
    if evse_id is None:
        return
    tx = change.at("evses", evse_id, "transaction")
    tx["driver_tariff"] = tariff
    tx["tariffs"] = _then(tx, tariff, event.ts)
    refresh(change, force=True)


def _then(tx: dict[str, Any], tariff: Any, at: str) -> dict[str, Any]:
    timeline = dict(tx.get("tariffs") or {})
    timeline[str(len(timeline) + 1)] = {"tariff": tariff, "set_at": at}
    return timeline


def _evse_of_tx(change: Change, tx_id: Any) -> str | None:
    return _transaction(change, tx_id)[0]


def _transaction(change: Change, tx_id: Any) -> tuple[str | None, dict[str, Any]]:
    """:func:`~twin.fold.aspects.energy.transaction_of`; none for an event without an id."""
    return (None, {}) if tx_id is None else transaction_of(change.twin, tx_id)


def _refresh(change: Change, event: Event) -> None:
    refresh(change)


for _action, _phase in (("Heartbeat", "call"), ("StatusNotification", "call"), ("MeterValues", "call"),
                        ("NotifyEvent", "call"), ("BootNotification", "call"), ("Connected", "lifecycle"),
                        ("Disconnected", "lifecycle")):  # fmt: skip
    on(_action, _phase)(_refresh)
