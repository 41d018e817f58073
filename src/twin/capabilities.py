"""What twin does with OCPP 2.1 today: the capability matrix served at
``/v1/protocols/ocpp-21``. Kept honest by hand: a capability is ``supported`` only when it
works end to end and is tested."""

from __future__ import annotations

from typing import Any

from twin.messages import catalogue

CAPABILITIES: list[dict[str, Any]] = [
    {"capability": "remote start/stop", "supported": True,
     "how": "RequestStartTransaction / RequestStopTransaction queued with `twin send`, delivered by the gateway"},
    {"capability": "adaptive smart charging", "supported": True,
     "how": "twin controller plans every EVSE under its site's limit (V2G included) and sends TxProfiles; "
            "SetChargingProfile / ClearChargingProfile delivered; profiles in force folded per EVSE"},
    {"capability": "device management", "supported": True,
     "how": "SetVariables, GetVariables, Reset, ... delivered; monitoring base, monitors and events folded"},
    {"capability": "ISO 15118-20 Plug & Charge", "supported": True,
     "how": "csms mode with --pki: Get15118EVCertificate, GetCertificateStatus and SignCertificate answered by a "
            "certificate provider (the default: twin pki's local test PKI; a production V2G PKI is the "
            "operator's to plug in)"},
    {"capability": "TLS / security profile 3", "supported": True,
     "how": "security profiles 1-3 at the gateway in csms and proxy mode (mutual TLS, OCSP, Basic Auth)"},
    {"capability": "V2G (bidirectional)", "supported": True,
     "how": "energy direction charging / discharging / idle per EVSE; V2X charging needs; discharge profiles"},
    {"capability": "AFIR reporting", "supported": True,
     "how": "twin report afir (thresholds, Art. 5 ad hoc price, Art. 20 data), DATEX II v3.7 feeds from twin ocpi"},
    {"capability": "OpenADR bridge", "supported": True,
     "how": "twin ven: OpenADR 3.0.1/3.1 (and 2.0b via openleadr) events into grid.signals, obeyed by the controller"},
    {"capability": "roaming (OCPI 2.2.1)", "supported": True,
     "how": "twin ocpi: credentials, locations, tariffs, sessions, CDRs, commands (reservations included), push"},
    {"capability": "reservations", "supported": True,
     "how": "ReserveNow, CancelReservation, ReservationStatusUpdate and reservationId folded into a lifecycle"},
    {"capability": "dynamic tariffs and cost", "supported": True,
     "how": "twin tariff (SetDefaultTariff, ChangeTransactionTariff, ClearTariffs, GetTariffs); the price in force "
            "and the cost folded; central cost by CostUpdated, the final one after the transaction ends"},
    {"capability": "CALLRESULTERROR and SEND (OCPP-J 2.1)", "supported": True,
     "how": "framed, validated, answered and captured by the gateway"},
]  # fmt: skip


def matrix() -> dict[str, Any]:
    return {
        "protocol": "ocpp2.1",
        "versions": ["ocpp2.1", "ocpp2.0.1"],
        "security": {"profiles": [1, 2, 3], "transport": "ws, wss (the gateway's TLS terminator)"},
        "capabilities": CAPABILITIES,
    }


def messages() -> list[dict[str, Any]]:
    from twin.fold import folded_actions

    folded = folded_actions()
    return [{**row, "folded": row["action"] in folded} for row in catalogue()]
