"""Firmware (FirmwareStatusNotification), display messages (SetDisplayMessage) and DER
(SetDERControl, NotifyDERAlarm). Tariffs and cost are the ``tariffs`` aspect."""

from __future__ import annotations

from twin.fold.engine import Change, Event, on


@on("FirmwareStatusNotification")
def firmware(change: Change, event: Event) -> None:
    change.at("firmware").update(
        status=event.payload.get("status"), request_id=event.payload.get("requestId"), updated_at=event.ts
    )


@on("SetDisplayMessage", "result")
def display(change: Change, event: Event) -> None:
    if event.accepted and event.request is not None:
        message = event.request.get("message", {})
        change.at("tariffs", "display_messages")[str(message.get("id"))] = (message.get("message") or {}).get("content")


@on("SetDERControl", "result")
def der_control(change: Change, event: Event) -> None:
    if event.accepted and event.request is not None:
        r = event.request
        change.at("der", "controls")[str(r.get("controlId"))] = {
            "type": r.get("controlType"),
            "is_default": r.get("isDefault"),
            "set_at": event.ts,
        }


@on("NotifyDERAlarm")
def der_alarm(change: Change, event: Event) -> None:
    p = event.payload
    der = change.at("der")
    der["alarms"] = der.get("alarms", 0) + 1
    der["last_alarm"] = {
        "control_type": p.get("controlType"),
        "fault": p.get("gridEventFault"),
        "ended": p.get("alarmEnded", False),
        "timestamp": p.get("timestamp"),
    }
