"""OCPI 2.2.1 Locations from the station inventory and the twins.

A Location is a charging pool (the inventory's ``pool_id``: one site, one address); an EVSE
is an EVSE of a station, ``uid`` ``<station id>*<evse>`` and ``evse_id`` in eMI3 form
(``NL*TWN*ECS00001*1``); each EVSE has the one connector the inventory describes. What OCPP
does not carry (address, opening hours, parking, energy mix, operator, connector standard)
comes from the inventory, never from here. ``last_updated``: an EVSE's is its latest status
change (its connectors' ``since``, or the last time the station was seen when it is offline),
never older than the inventory's; a Location's is the latest of its EVSEs'.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twin.publish import status
from twin.publish.party import Party, latest

ALPHA3 = {"AT": "AUT", "BE": "BEL", "BG": "BGR", "CH": "CHE", "CY": "CYP", "CZ": "CZE", "DE": "DEU", "DK": "DNK",
          "EE": "EST", "ES": "ESP", "FI": "FIN", "FR": "FRA", "GB": "GBR", "GR": "GRC", "HR": "HRV", "HU": "HUN",
          "IE": "IRL", "IS": "ISL", "IT": "ITA", "LI": "LIE", "LT": "LTU", "LU": "LUX", "LV": "LVA", "MT": "MLT",
          "NL": "NLD", "NO": "NOR", "PL": "POL", "PT": "PRT", "RO": "ROU", "SE": "SWE", "SI": "SVN", "SK": "SVK"}
DAYS = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")
_HOURS = re.compile(r"^(Mo|Tu|We|Th|Fr|Sa|Su)-(Mo|Tu|We|Th|Fr|Sa|Su) ([0-2][0-9]:[0-5][0-9])-([0-2][0-9]:[0-5][0-9])$")


@dataclass(frozen=True)
class EvseRef:
    """Where an OCPI EVSE is: its location, station, EVSE number, and the inventory row."""

    location_id: str
    uid: str
    station_id: str
    evse: int
    row: Mapping[str, Any]


def uid(station_id: str, evse: int | str) -> str:
    return f"{station_id}*{evse}"


def evse_id(party: Party, station_id: str, evse: int | str) -> str:
    """eMI3: ``<country>*<operator>*E<outlet id>``, the outlet id letters, digits and ``*``."""
    return f"{party.emi3}*E{re.sub(r'[^A-Za-z0-9]', '', station_id).upper()}*{evse}"


def index(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], EvseRef]:
    """Every EVSE of the inventory by ``(location id, uid)``."""
    out = {}
    for row in rows:
        for n in range(1, int(row.get("evses") or 1) + 1):
            ref = EvseRef(str(row["pool_id"]), uid(str(row["station_id"]), n), str(row["station_id"]), n, row)
            out[(ref.location_id, ref.uid)] = ref
    return out


def pools(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (str(r["pool_id"]), str(r["station_id"]))):
        out.setdefault(str(row["pool_id"]), []).append(row)
    return out


def opening_times(hours: str | None) -> dict[str, Any]:
    """``24/7`` or ``Mo-Su 06:00-22:00`` (the inventory's spelling) as OCPI Hours."""
    m = _HOURS.match(hours or "")
    if not m:
        return {"twentyfourseven": True}
    first, last = DAYS.index(m.group(1)), DAYS.index(m.group(2))
    return {"twentyfourseven": False,
            "regular_hours": [{"weekday": d + 1, "period_begin": m.group(3), "period_end": m.group(4)}
                              for d in range(first, last + 1)]}  # fmt: skip


def _evse_updated(twin: Mapping[str, Any] | None, evse: str, static_at: str) -> str:
    if not twin:
        return static_at
    if status.twin_status(twin, evse) == "offline":
        return latest(static_at, (twin.get("connection") or {}).get("last_seen")) or static_at
    connectors = (((twin.get("evses") or {}).get(evse) or {}).get("connectors") or {}).values()
    return latest(static_at, *(c.get("since") for c in connectors)) or static_at


def tariff_ids(twin: Mapping[str, Any] | None, evse: str) -> list[str]:
    """The OCPI tariffs of an EVSE: the tariff in force on it, and its ad hoc twin (``tariffs``)."""
    tariff = (((twin or {}).get("evses") or {}).get(evse) or {}).get("tariff") or {}
    tid = tariff.get("tariff_id")
    return [str(tid), f"{tid}-ADHOC"] if tid else []


def connector(row: Mapping[str, Any], twin: Mapping[str, Any] | None, evse: str, updated: str) -> dict[str, Any]:
    c = row.get("connector") or {}
    kw = float(row.get("max_kw") or 0)
    dc = row.get("kind") == "DC"
    return {
        "id": "1",
        "standard": c.get("standard") or ("IEC_62196_T2_COMBO" if dc else "IEC_62196_T2"),
        "format": c.get("format") or ("CABLE" if dc else "SOCKET"),
        "power_type": c.get("power_type") or ("DC" if dc else "AC_3_PHASE"),
        "max_voltage": int(c.get("max_voltage") or (920 if dc else 400)),
        "max_amperage": int(c.get("max_amperage") or (kw * 1000 / 400)),
        "max_electric_power": int(kw * 1000),
        "tariff_ids": tariff_ids(twin, evse),
        "last_updated": updated,
    }


def capabilities(row: Mapping[str, Any]) -> list[str]:
    caps = ["RESERVABLE", "REMOTE_START_STOP_CAPABLE", "UNLOCK_CAPABLE", "RFID_READER", "CHARGING_PROFILE_CAPABLE"]
    if float(row.get("max_kw") or 0) >= 50:  # AFIR Art. 5(3): a card reader or contactless at 50 kW and more
        caps += ["CONTACTLESS_CARD_SUPPORT", "CREDIT_CARD_PAYABLE", "DEBIT_CARD_PAYABLE"]
    return caps


def evse_object(party: Party, row: Mapping[str, Any], twin: Mapping[str, Any] | None, n: int,
                static_at: str) -> dict[str, Any]:  # fmt: skip
    key = str(n)
    updated = _evse_updated(twin, key, static_at)
    parking = row.get("parking") or {}
    return {
        "uid": uid(str(row["station_id"]), n),
        "evse_id": evse_id(party, str(row["station_id"]), n),
        "status": status.ocpi(twin, key),
        "capabilities": capabilities(row),
        "connectors": [connector(row, twin, key, updated)],
        "physical_reference": f"{row['station_id']} {n}",
        "coordinates": coordinates(float(row["lat"]), float(row["lon"])),
        "parking_restrictions": list(parking.get("restrictions") or []),
        "last_updated": updated,
    }


def coordinates(lat: float, lon: float) -> dict[str, str]:
    return {"latitude": f"{lat:.6f}", "longitude": f"{lon:.6f}"}


def location(party: Party, pool_id: str, rows: list[Mapping[str, Any]], twins: Mapping[str, Mapping[str, Any]],
             static_at: str) -> dict[str, Any]:  # fmt: skip
    first = rows[0]
    address = first.get("address") or {}
    evses = [evse_object(party, row, twins.get(str(row["station_id"])), n, static_at)
             for row in rows for n in range(1, int(row.get("evses") or 1) + 1)]  # fmt: skip
    lat = sum(float(r["lat"]) for r in rows) / len(rows)
    lon = sum(float(r["lon"]) for r in rows) / len(rows)
    operator = first.get("operator") or {"name": party.name, "website": party.website}
    mix = first.get("energy_mix") or {}
    out: dict[str, Any] = {
        "country_code": party.country_code,
        "party_id": party.party_id,
        "id": pool_id,
        "publish": True,
        "name": str(first.get("pool_name") or pool_id),
        "address": str(address.get("street") or "unknown"),
        "city": str(address.get("city") or "unknown"),
        "country": ALPHA3.get(str(address.get("country") or ""), "NLD"),
        "coordinates": coordinates(lat, lon),
        "parking_type": (first.get("parking") or {}).get("type") or "ALONG_MOTORWAY",
        "evses": evses,
        "operator": {"name": operator.get("name") or party.name, "website": operator.get("website")},
        "time_zone": str(address.get("time_zone") or "Europe/Amsterdam"),
        "opening_times": opening_times(first.get("opening_hours")),
        "charging_when_closed": False,
        "last_updated": latest(static_at, *(e["last_updated"] for e in evses)) or static_at,
    }
    if address.get("postal_code"):
        out["postal_code"] = str(address["postal_code"])
    if mix:
        out["energy_mix"] = {"is_green_energy": bool(mix.get("is_green_energy")),
                             "energy_sources": [{"source": s["source"], "percentage": float(s["percentage"])}
                                                for s in mix.get("sources") or []],
                             "supplier_name": mix.get("supplier"),
                             "energy_product_name": mix.get("product") or ("green" if mix.get("is_green_energy")
                                                                           else "mixed")}  # fmt: skip
        out["energy_mix"] = {k: v for k, v in out["energy_mix"].items() if v is not None}
    if not out["operator"].get("website"):
        del out["operator"]["website"]
    return out


def locations(party: Party, rows: Iterable[Mapping[str, Any]], twins: Mapping[str, Mapping[str, Any]],
              static_at: str) -> list[dict[str, Any]]:  # fmt: skip
    """Every Location, ordered by id (so that pages are stable)."""
    return [location(party, pool_id, members, twins, static_at) for pool_id, members in pools(rows).items()]
