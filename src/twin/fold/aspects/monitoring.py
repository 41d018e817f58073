"""Monitoring: the base (SetMonitoringBase), monitors (SetVariableMonitoring,
ClearVariableMonitoring, NotifyMonitoringReport) and what they raised (NotifyEvent)."""

from __future__ import annotations

from typing import Any

from twin.fold.engine import Change, Event, on


def _name(item: dict[str, Any]) -> str:
    component = item.get("component", {}).get("name", "?")
    variable = item.get("variable", {}).get("name", "?")
    return f"{component}.{variable}"


@on("SetMonitoringBase", "result")
def base(change: Change, event: Event) -> None:
    if event.accepted and event.request is not None:
        change.at("monitoring")["base"] = event.request.get("monitoringBase")


@on("SetVariableMonitoring", "result")
def monitors_set(change: Change, event: Event) -> None:
    requested = (event.request or {}).get("setMonitoringData", [])
    for i, result in enumerate(event.payload.get("setMonitoringResult", [])):
        if result.get("status") != "Accepted" or "id" not in result:
            continue
        asked = requested[i] if i < len(requested) else {}
        change.at("monitoring", "monitors")[str(result["id"])] = {
            "variable": _name(result), "type": result.get("type"), "severity": result.get("severity"),
            "value": asked.get("value"), "set_at": event.ts,
        }  # fmt: skip


@on("ClearVariableMonitoring", "result")
def monitors_cleared(change: Change, event: Event) -> None:
    for result in event.payload.get("clearMonitoringResult", []):
        if result.get("status") == "Accepted":
            change.remove("monitoring", "monitors", str(result.get("id")))


@on("NotifyMonitoringReport")
def report(change: Change, event: Event) -> None:
    for item in event.payload.get("monitor", []):
        for m in item.get("variableMonitoring", []):
            change.at("monitoring", "monitors")[str(m.get("id"))] = {
                "variable": _name(item), "type": m.get("type"), "severity": m.get("severity"),
                "value": m.get("value"), "set_at": event.ts,
            }  # fmt: skip


@on("NotifyEvent")
def events(change: Change, event: Event) -> None:
    monitoring = change.at("monitoring")
    for e in event.payload.get("eventData", []):
        monitoring["events"] = monitoring.get("events", 0) + 1
        monitoring["last_event"] = {
            "event_id": e.get("eventId"), "timestamp": e.get("timestamp"), "trigger": e.get("trigger"),
            "variable": _name(e), "actual_value": e.get("actualValue"), "severity": e.get("severity"),
            "type": e.get("eventNotificationType"), "cleared": e.get("cleared", False),
            "monitor_id": e.get("variableMonitoringId"),
        }  # fmt: skip
