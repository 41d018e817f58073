"""Connectivity: online or not, since when, last seen; from the gateway's lifecycle
records and from every frame the station sends."""

from __future__ import annotations

from twin.fold.engine import Change, Event, on


@on("Connected", "lifecycle")
def connected(change: Change, event: Event) -> None:
    connection = change.at("connection")
    connection.update(online=True, connected_since=event.ts, last_seen=event.ts, conn_id=event.record["conn_id"])
    security = change.at("security")
    security["profile"] = event.payload.get("security_profile")
    certificate = event.payload.get("certificate")
    if isinstance(certificate, dict):  # what the station showed for profile 3: subject, serial, expiry, OCSP
        security["certificate"] = {k: certificate.get(k) for k in ("cn", "o", "serial", "not_after", "ocsp")}


@on("Disconnected", "lifecycle")
def disconnected(change: Change, event: Event) -> None:
    connection = change.at("connection")
    if connection.get("conn_id") not in (None, event.record["conn_id"]):
        return  # an older connection closing after a newer one came: the newer stands
    connection.update(online=False, connected_since=None, last_seen=event.ts)
    connection["last_close"] = {"code": event.payload.get("code"), "reason": event.payload.get("reason")}
    change.at("_pending").clear()  # calls on a closed connection will never be answered


@on("Refused", "lifecycle")
def refused(change: Change, event: Event) -> None:
    connection = change.at("connection")
    connection["refusals"] = connection.get("refusals", 0) + 1
    connection["last_refusal"] = {"at": event.ts, "reason": event.payload.get("reason")}
    if event.payload.get("status") == 401:  # refused by the security profile: a failed authentication
        security = change.at("security")
        security["failed_auth"] = security.get("failed_auth", 0) + 1
        security["last_failed_auth"] = {"at": event.ts, "reason": event.payload.get("reason")}
