"""Certificates and security: ISO 15118 certificate requests (Get15118EVCertificate),
OCSP status (GetCertificateStatus), station certificate signing (SignCertificate,
CertificateSigned), and SecurityEventNotification."""

from __future__ import annotations

from twin.fold.engine import Change, Event, on


@on("Get15118EVCertificate")
def ev_certificate(change: Change, event: Event) -> None:
    change.at("certificates", "iso15118").update(
        last_action=event.payload.get("action"),
        schema_version=event.payload.get("iso15118SchemaVersion"),
        requested_at=event.ts,
        last_status=None,
    )


@on("Get15118EVCertificate", "result")
def ev_certificate_answered(change: Change, event: Event) -> None:
    change.at("certificates", "iso15118")["last_status"] = event.payload.get("status")


@on("GetCertificateStatus", "result")
def ocsp(change: Change, event: Event) -> None:
    change.at("certificates", "ocsp").update(last_status=event.payload.get("status"), checked_at=event.ts)


@on("SignCertificate")
def sign(change: Change, event: Event) -> None:
    change.at("certificates", "signing").update(
        certificate_type=event.payload.get("certificateType", "ChargingStationCertificate"),
        requested_at=event.ts, status=None,
    )  # fmt: skip


@on("SignCertificate", "result")
def sign_answered(change: Change, event: Event) -> None:
    change.at("certificates", "signing")["status"] = event.payload.get("status")


@on("CertificateSigned", "result")
def signed(change: Change, event: Event) -> None:
    change.at("certificates", "signing").update(installed=event.payload.get("status"), installed_at=event.ts)


@on("SecurityEventNotification")
def security_event(change: Change, event: Event) -> None:
    security = change.at("security")
    security["events"] = security.get("events", 0) + 1
    security["last_event"] = {
        "type": event.payload.get("type"), "timestamp": event.payload.get("timestamp"),
        "tech_info": event.payload.get("techInfo"),
    }  # fmt: skip
