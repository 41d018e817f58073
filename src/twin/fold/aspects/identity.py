"""Identity: who the station says it is (BootNotification) and whether it was let in."""

from __future__ import annotations

from twin.fold.engine import Change, Event, on


@on("BootNotification")
def boot(change: Change, event: Event) -> None:
    station = event.payload.get("chargingStation", {})
    identity = change.at("identity")
    identity.update(
        vendor=station.get("vendorName"),
        model=station.get("model"),
        serial_number=station.get("serialNumber"),
        firmware_version=station.get("firmwareVersion"),
        boot_reason=event.payload.get("reason"),
    )


@on("BootNotification", "result")
def boot_answered(change: Change, event: Event) -> None:
    identity = change.at("identity")
    identity["boot_status"] = event.payload.get("status")
    identity["heartbeat_interval"] = event.payload.get("interval")
    if event.accepted:
        identity["booted_at"] = event.ts
