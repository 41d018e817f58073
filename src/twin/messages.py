"""The catalogue of OCPP 2.1 and 2.0.1 actions: which exist in which version, who sends them.

The action lists come from the OCA's JSON schemas shipped in the ``ocpp`` package; only the
direction is written down here, because the schemas do not say it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

VERSION_DIRS = {"ocpp2.1": "v21", "ocpp2.0.1": "v201"}

CS_TO_CSMS = frozenset(
    {
        # OCPP 2.0.1
        "Authorize", "BootNotification", "ClearedChargingLimit", "FirmwareStatusNotification",
        "Get15118EVCertificate", "GetCertificateStatus", "Heartbeat", "LogStatusNotification",
        "MeterValues", "NotifyChargingLimit", "NotifyCustomerInformation",
        "NotifyDisplayMessages", "NotifyEVChargingNeeds", "NotifyEVChargingSchedule",
        "NotifyEvent", "NotifyMonitoringReport", "NotifyReport",
        "PublishFirmwareStatusNotification", "ReportChargingProfiles",
        "ReservationStatusUpdate", "SecurityEventNotification", "SignCertificate",
        "StatusNotification", "TransactionEvent",
        # new in OCPP 2.1
        "BatterySwap", "ClosePeriodicEventStream", "GetCertificateChainStatus",
        "NotifyDERAlarm", "NotifyDERStartStop", "NotifyPeriodicEventStream",
        "NotifyPriorityCharging", "NotifySettlement", "OpenPeriodicEventStream",
        "PullDynamicScheduleUpdate", "ReportDERControl", "VatNumberValidation",
    }
)  # fmt: skip
BOTH_WAYS = frozenset({"DataTransfer"})
SEND_ONLY = frozenset({"NotifyPeriodicEventStream"})
"""Actions carried by SEND (type 6): never answered, so they have no response schema."""

IMPORT, EXPORT = "Energy.Active.Import.Register", "Energy.Active.Export.Register"
"""The measurands of a meter value's energy registers; a sampled value without a measurand is
of ``IMPORT`` (the schema's default)."""
P_IMPORT, P_EXPORT, SOC = "Power.Active.Import", "Power.Active.Export", "SoC"
"""The measurands of a meter value's power and state of charge."""


def schema_dir(protocol: str) -> Path:
    return Path(str(resources.files("ocpp").joinpath(VERSION_DIRS[protocol], "schemas")))


@cache
def actions(protocol: str) -> frozenset[str]:
    """Every action of a protocol version, from its schema files."""
    names = set()
    for path in schema_dir(protocol).glob("*.json"):
        stem = path.stem
        for suffix in ("Request", "Response"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
        names.add(stem)
    return frozenset(names)


def direction(action: str) -> str:
    """``"CS->CSMS"``, ``"CSMS->CS"`` or ``"both"``."""
    if action in BOTH_WAYS:
        return "both"
    return "CS->CSMS" if action in CS_TO_CSMS else "CSMS->CS"


def station_initiated(action: str) -> bool:
    return action in CS_TO_CSMS or action in BOTH_WAYS


def csms_initiated(action: str) -> bool:
    return action not in CS_TO_CSMS or action in BOTH_WAYS


def catalogue() -> list[dict[str, object]]:
    """All OCPP 2.1 actions with their direction and the versions that have them."""
    v201 = actions("ocpp2.0.1")
    return [
        {
            "action": name,
            "direction": direction(name),
            "since": "ocpp2.0.1" if name in v201 else "ocpp2.1",
            "send": name in SEND_ONLY,
        }
        for name in sorted(actions("ocpp2.1"))
    ]
