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
     "how": "SetChargingProfile / ClearChargingProfile delivered; profiles in force folded per EVSE"},
    {"capability": "device management", "supported": True,
     "how": "SetVariables, GetVariables, Reset, ... delivered; monitoring base, monitors and events folded"},
    {"capability": "ISO 15118-20 Plug & Charge", "supported": False,
     "how": "Get15118EVCertificate requests folded and answered; certificate provisioning from a PKI: issue 7"},
    {"capability": "TLS / security profile 3", "supported": False,
     "how": "issue 7; profile 1 (Basic Auth) is relayed by the proxy"},
    {"capability": "V2G (bidirectional)", "supported": True,
     "how": "energy direction charging / discharging / idle per EVSE; V2X charging needs; discharge profiles"},
    {"capability": "AFIR reporting", "supported": False, "how": "issue 5"},
    {"capability": "OpenADR bridge", "supported": False, "how": "not planned yet"},
    {"capability": "reservations", "supported": True,
     "how": "ReserveNow, CancelReservation, ReservationStatusUpdate and reservationId folded into a lifecycle"},
    {"capability": "dynamic tariff display", "supported": True,
     "how": "SetDefaultTariff, ChangeTransactionTariff, CostUpdated, SetDisplayMessage delivered and folded"},
    {"capability": "CALLRESULTERROR and SEND (OCPP-J 2.1)", "supported": True,
     "how": "framed, validated, answered and captured by the gateway"},
]  # fmt: skip


def matrix() -> dict[str, Any]:
    return {
        "protocol": "ocpp2.1",
        "versions": ["ocpp2.1", "ocpp2.0.1"],
        "security": {"profiles": [1], "planned": [2, 3], "transport": "ws (wss: issue 7)"},
        "capabilities": CAPABILITIES,
    }


def messages() -> list[dict[str, Any]]:
    from twin.fold import folded_actions

    folded = folded_actions()
    return [{**row, "folded": row["action"] in folded} for row in catalogue()]
