"""What the EV asks for (NotifyEVChargingNeeds, with V2X parameters) and what the CSMS set
(SetChargingProfile / ClearChargingProfile, in force once the station answered Accepted)."""

from __future__ import annotations

from typing import Any

from twin.fold.engine import Change, Event, on


@on("NotifyEVChargingNeeds")
def needs(change: Change, event: Event) -> None:
    p = event.payload
    n = p.get("chargingNeeds", {})
    requested = n.get("requestedEnergyTransfer")
    evse_id = str(p.get("evseId"))
    tx = change.get("evses", evse_id, "transaction") or {}
    change.at("evses", evse_id)["charging_needs"] = {
        "requested_energy_transfer": requested,
        "available_energy_transfer": n.get("availableEnergyTransfer"),
        "bidirectional": "BPT" in (requested or ""),
        "control_mode": n.get("controlMode"),
        "mobility_needs_mode": n.get("mobilityNeedsMode"),
        "departure_time": n.get("departureTime"),
        "v2x": n.get("v2xChargingParameters"),
        "ac": n.get("acChargingParameters"),
        "dc": n.get("dcChargingParameters"),
        "received_at": event.ts,
        "transaction_id": tx.get("id") if tx.get("state") in ("started", "updated") else None,
        "status": None,
    }


@on("NotifyEVChargingNeeds", "result")
def needs_answered(change: Change, event: Event) -> None:
    evse_id = str((event.request or {}).get("evseId"))
    if change.get("evses", evse_id, "charging_needs") is not None:
        change.at("evses", evse_id, "charging_needs")["status"] = event.payload.get("status")


def _summary(profile: dict[str, Any], ts: str) -> dict[str, Any]:
    periods = [p for s in profile.get("chargingSchedule", []) for p in s.get("chargingSchedulePeriod", [])]
    modes = sorted({p["operationMode"] for p in periods if "operationMode" in p})
    return {
        "purpose": profile.get("chargingProfilePurpose"),
        "stack_level": profile.get("stackLevel"),
        "kind": profile.get("chargingProfileKind"),
        "operation_mode": modes[0] if len(modes) == 1 else (modes or None),
        "discharge": any(p.get("dischargeLimit", 0) < 0 or p.get("setpoint", 0) < 0 for p in periods),
        "transaction_id": profile.get("transactionId"),
        "valid_to": profile.get("validTo"),
        "periods": len(periods),
        "set_at": ts,
    }


def _profile_status(change: Change, request: dict[str, Any], status: str, reason: Any, ts: str) -> None:
    """The station's last answer to a SetChargingProfile for this EVSE: whoever plans its
    power needs to know whether it is obeyed."""
    evse_id = str(request.get("evseId", 0))
    profile = request.get("chargingProfile") or {}
    running = change.get("evses", evse_id, "transaction") or {}
    current = running.get("id") if running.get("state") in ("started", "updated") else None
    change.at("evses", evse_id)["profile_status"] = {
        "status": status, "profile_id": profile.get("id"), "reason": reason, "answered_at": ts,
        "transaction_id": profile.get("transactionId") or current,  # whose session it was about
    }  # fmt: skip


@on("SetChargingProfile", "result")
def profile_set(change: Change, event: Event) -> None:
    if event.request is None:
        return
    info = event.payload.get("statusInfo") or {}
    _profile_status(change, event.request, str(event.payload.get("status")), info.get("reasonCode"), event.ts)
    if not event.accepted:
        return
    profile = event.request.get("chargingProfile", {})
    evse_id = str(event.request.get("evseId", 0))
    change.at("evses", evse_id, "profiles")[str(profile.get("id"))] = _summary(profile, event.ts)


@on("SetChargingProfile", "error")
def profile_failed(change: Change, event: Event) -> None:
    if event.request is not None:
        _profile_status(change, event.request, "Error", event.payload.get("errorCode"), event.ts)


@on("CallTimeout", "lifecycle")
def profile_unanswered(change: Change, event: Event) -> None:
    """The gateway gave up waiting for the station's answer to a call it sent."""
    pending = change.twin["_pending"].get(event.payload.get("msg_id"))
    if pending is None:
        return
    change.remove("_pending", event.payload["msg_id"])
    if pending["action"] == "SetChargingProfile":
        _profile_status(change, pending["payload"], "Timeout", f"no answer in {event.payload.get('timeout_s')} s",
                        event.ts)  # fmt: skip


@on("ClearChargingProfile", "result")
def profile_cleared(change: Change, event: Event) -> None:
    if not event.accepted or event.request is None:
        return
    wanted_id = event.request.get("chargingProfileId")
    criteria = event.request.get("chargingProfileCriteria") or {}
    for evse_id, evse in list(change.twin["evses"].items()):
        if "evseId" in criteria and str(criteria["evseId"]) != evse_id:
            continue
        for profile_id, profile in list((evse.get("profiles") or {}).items()):
            if wanted_id is not None and str(wanted_id) != profile_id:
                continue
            if "chargingProfilePurpose" in criteria and criteria["chargingProfilePurpose"] != profile["purpose"]:
                continue
            if "stackLevel" in criteria and criteria["stackLevel"] != profile["stack_level"]:
                continue
            change.remove("evses", evse_id, "profiles", profile_id)
