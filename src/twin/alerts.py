"""Alerts for ``twin.alerts``: faults, monitoring events, security events, stations going
offline. Pure, like the fold: a function of a record and the twin before and after it.

OCPP severities run from 0 (Danger) to 9 (Debug); they map onto high (0-2), medium (3-5)
and low (6-9).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

Alert = dict[str, Any]
CERTIFICATE_WARNING_DAYS = 30
"""A station's client certificate this close to its expiry raises an alert when it connects."""


def _days_left(not_after: Any, ts: Any) -> int | None:
    try:
        end = datetime.fromisoformat(str(not_after).replace("Z", "+00:00"))
        now = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (end - now).days


def _severity(ocpp_severity: int | None) -> str:
    if ocpp_severity is None:
        return "medium"
    return "high" if ocpp_severity <= 2 else "medium" if ocpp_severity <= 5 else "low"


def _profile_refused(record: dict[str, Any], p: dict[str, Any]) -> bool:
    """A charging profile the station refused, failed or never answered: whoever planned
    its power must plan around it."""
    kind = record.get("msg_type")
    if record.get("action") == "CallTimeout":
        return bool(p.get("action") == "SetChargingProfile")
    return kind in (4, 5) or (kind == 3 and p.get("status") != "Accepted")


def alerts(record: dict[str, Any], before: dict[str, Any] | None, after: dict[str, Any]) -> list[Alert]:
    if after is before or not record.get("valid", True):
        return []
    station, ts, action = record.get("station_id"), record.get("ts"), record.get("action")
    p = record.get("payload") or {}
    out: list[Alert] = []

    def alert(kind: str, severity: str, **detail: Any) -> None:
        out.append({"station_id": station, "ts": ts, "kind": kind, "severity": severity, "detail": detail})

    if action == "StatusNotification" and record.get("msg_type") == 2 and p.get("connectorStatus") == "Faulted":
        alert("fault", "high", evse_id=p.get("evseId"), connector_id=p.get("connectorId"))
    elif action == "NotifyEvent" and record.get("msg_type") == 2:
        for e in p.get("eventData", []):
            if e.get("trigger") in ("Alerting", "Delta") or e.get("variableMonitoringId") is not None:
                alert("monitoring", _severity(e.get("severity")), component=(e.get("component") or {}).get("name"),
                      variable=(e.get("variable") or {}).get("name"), actual_value=e.get("actualValue"),
                      cleared=e.get("cleared", False))  # fmt: skip
    elif action == "SecurityEventNotification" and record.get("msg_type") == 2:
        alert("security", "high", type=p.get("type"), tech_info=p.get("techInfo"))
    elif action == "Refused":
        alert("security", "medium", type="ConnectionRefused", reason=p.get("reason"))
    elif action == "Connected" and isinstance(p.get("certificate"), dict):
        cert = p["certificate"]
        days = _days_left(cert.get("not_after"), ts)
        if days is not None and days <= CERTIFICATE_WARNING_DAYS:
            alert("security", "high" if days <= 7 else "medium", type="CertificateExpiresSoon",
                  cn=cert.get("cn"), not_after=cert.get("not_after"), days_left=days)  # fmt: skip
    elif action == "NotifyDERAlarm" and record.get("msg_type") == 2:
        alert("der", "high", control_type=p.get("controlType"), fault=p.get("gridEventFault"))
    elif action in ("SetChargingProfile", "CallTimeout") and _profile_refused(record, p):
        answered = {k: (e.get("profile_status") or {}).get("answered_at") for k, e in after.get("evses", {}).items()}
        evse = next((k for k, at in answered.items() if at == ts), None)
        status = (after.get("evses", {}).get(evse) or {}).get("profile_status") or {}
        alert("smart_charging", "medium", type="ProfileNotApplied", evse_id=evse, status=status.get("status"),
              reason=status.get("reason"))  # fmt: skip
    elif action == "Disconnected":
        was_online = bool(before and before.get("connection", {}).get("online"))
        if was_online and not after["connection"]["online"]:
            alert("offline", "medium", code=p.get("code"), reason=p.get("reason"))
    return out
