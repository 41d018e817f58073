"""The twin's EVSE status as OCPI and DATEX II say it: one table each.

The key is the twin's ``evses.{id}.status`` (OCPP's ConnectorStatus), or ``offline`` when
the station's connection is down (what the station last said is then no longer known), or
``unknown`` when the twin has no status yet.

| twin        | OCPI 2.2.1 EVSE ``status`` | DATEX II ``status`` | DATEX II ``operationStatus`` |
|-------------|----------------------------|---------------------|------------------------------|
| Available   | AVAILABLE                  | available           | inOperation                  |
| Occupied    | CHARGING                   | charging            | inOperation                  |
| Reserved    | RESERVED                   | reserved            | inOperation                  |
| Unavailable | INOPERATIVE                | inoperative         | notInOperation               |
| Faulted     | OUTOFORDER                 | faulted             | technicalDefect              |
| offline     | UNKNOWN                    | unknown             | unknown                      |
| unknown     | UNKNOWN                    | unknown             | unknown                      |

OCPP's Occupied is a vehicle at the EVSE, charging or not: OCPI's CHARGING ("in use") and
DATEX's ``charging`` say the same; neither ``BLOCKED`` nor ``occupied`` is used, as the twin
cannot tell a parked car from a charging one before the transaction says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OCPI: dict[str, str] = {
    "Available": "AVAILABLE",
    "Occupied": "CHARGING",
    "Reserved": "RESERVED",
    "Unavailable": "INOPERATIVE",
    "Faulted": "OUTOFORDER",
    "offline": "UNKNOWN",
    "unknown": "UNKNOWN",
}
DATEX2: dict[str, tuple[str, str]] = {  # (status, operationStatus)
    "Available": ("available", "inOperation"),
    "Occupied": ("charging", "inOperation"),
    "Reserved": ("reserved", "inOperation"),
    "Unavailable": ("inoperative", "notInOperation"),
    "Faulted": ("faulted", "technicalDefect"),
    "offline": ("unknown", "unknown"),
    "unknown": ("unknown", "unknown"),
}


def twin_status(twin: Mapping[str, Any] | None, evse: str) -> str:
    """The key of the tables for one EVSE of a twin (None: the twin is not known)."""
    if not twin:
        return "unknown"
    if not (twin.get("connection") or {}).get("online", False):
        return "offline"
    status = ((twin.get("evses") or {}).get(evse) or {}).get("status")
    return status if status in OCPI else "unknown"


def ocpi(twin: Mapping[str, Any] | None, evse: str) -> str:
    return OCPI[twin_status(twin, evse)]


def datex2(twin: Mapping[str, Any] | None, evse: str) -> tuple[str, str]:
    return DATEX2[twin_status(twin, evse)]
