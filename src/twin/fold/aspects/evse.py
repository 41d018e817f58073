"""EVSE and connector status (StatusNotification). An EVSE's status is that of its most
telling connector: Faulted over Unavailable over Occupied over Reserved over Available."""

from __future__ import annotations

from twin.fold.engine import Change, Event, on

_RANK = {"Faulted": 4, "Unavailable": 3, "Occupied": 2, "Reserved": 1, "Available": 0}


@on("StatusNotification")
def status(change: Change, event: Event) -> None:
    p = event.payload
    evse_id, connector_id = str(p.get("evseId")), str(p.get("connectorId"))
    connector = change.at("evses", evse_id, "connectors", connector_id)
    state = p.get("connectorStatus")
    if connector.get("status") != state:
        connector["since"] = p.get("timestamp", event.ts)
    connector["status"] = state
    evse = change.at("evses", evse_id)
    statuses = [c.get("status") for c in evse["connectors"].values()]
    evse["status"] = max(statuses, key=lambda s: _RANK.get(s, -1))


@on("ChangeAvailability", "result")
def availability(change: Change, event: Event) -> None:
    request = event.request or {}
    if event.payload.get("status") in ("Accepted", "Scheduled"):
        evse = request.get("evse") or {}
        key = str(evse.get("id", 0))
        target = change.at("evses", key) if key != "0" else change.at("identity")
        target["operational"] = request.get("operationalStatus")
