"""OCPI 2.2.1 Tariffs from the OCPP 2.1 tariffs in force on the twins' EVSEs.

Each tariff in force (``evses.{id}.tariff.tariff_id``, its definition from the twin's
``tariffs.installed``) is published twice: as itself, with no ``type`` (OCPI: it applies to
everyone), and as ``<id>-ADHOC`` of type ``AD_HOC_PAYMENT``, the price a driver without a
contract pays (AFIR Art. 5). A connector's ``tariff_ids`` name both.

The mapping, OCPP 2.1 TariffType -> OCPI price components (prices excluding tax; OCPI's
``vat`` from the component's ``taxRates``):

| OCPP 2.1                      | OCPI 2.2.1                                 |
|-------------------------------|--------------------------------------------|
| ``energy.prices[].priceKwh``  | ``ENERGY`` per kWh, step 1 Wh               |
| ``chargingTime...priceMinute``| ``TIME`` per hour (x 60), step 60 s         |
| ``idleTime...priceMinute``    | ``PARKING_TIME`` per hour (x 60), step 60 s |
| ``fixedFee...priceFixed``     | ``FLAT``                                    |
| ``conditions``                | ``restrictions`` (Wh -> kWh, W -> kW)       |
| ``minCost`` / ``maxCost``     | ``min_price`` / ``max_price``               |

One price of a component is one element; OCPI, like OCPP, takes the first element whose
restrictions hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twin.publish.party import Party, latest

DAYS = {"Monday": "MONDAY", "Tuesday": "TUESDAY", "Wednesday": "WEDNESDAY", "Thursday": "THURSDAY",
        "Friday": "FRIDAY", "Saturday": "SATURDAY", "Sunday": "SUNDAY"}  # fmt: skip
COMPONENTS = (("energy", "priceKwh", "ENERGY", 1.0, 1), ("chargingTime", "priceMinute", "TIME", 60.0, 60),
              ("idleTime", "priceMinute", "PARKING_TIME", 60.0, 60), ("fixedFee", "priceFixed", "FLAT", 1.0, 1))
_RESTRICTIONS = {  # OCPP condition -> (OCPI restriction, factor)
    "startTimeOfDay": ("start_time", None), "endTimeOfDay": ("end_time", None),
    "validFromDate": ("start_date", None), "validToDate": ("end_date", None),
    "minEnergy": ("min_kwh", 1e-3), "maxEnergy": ("max_kwh", 1e-3),
    "minCurrent": ("min_current", 1.0), "maxCurrent": ("max_current", 1.0),
    "minPower": ("min_power", 1e-3), "maxPower": ("max_power", 1e-3),
    "minTime": ("min_duration", 1.0), "maxTime": ("max_duration", 1.0),
}  # fmt: skip


def in_force(twins: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[dict[str, Any], str]]:
    """Every tariff in force on an EVSE of the twins, by tariff id: its OCPP definition and
    when it was last set (the latest ``set_at`` of it, else the twin's ``as_of``)."""
    out: dict[str, tuple[dict[str, Any], str]] = {}
    for twin in twins.values():
        held = (twin.get("tariffs") or {}).get("installed") or {}
        briefs = (twin.get("tariffs") or {}).get("default") or {}
        for n, evse in (twin.get("evses") or {}).items():
            tid = (evse.get("tariff") or {}).get("tariff_id")
            if not tid:
                continue
            found = next((t for t in [*(held.get(n) or ()), *(held.get("0") or ())] if t.get("tariffId") == tid), None)
            if found is None:
                continue  # a driver's tariff: not public
            brief = briefs.get(n) or briefs.get("0") or {}
            at = (brief.get("set_at") if brief.get("tariff_id") == tid else None) or twin.get("as_of") or ""
            seen = out.get(tid)
            if seen is None or latest(seen[1], at) == at:
                out[tid] = (found, at)
    return out


def _vat(component: Mapping[str, Any]) -> float | None:
    rates = [float(r["tax"]) for r in component.get("taxRates") or () if isinstance(r.get("tax"), int | float)]
    return round(sum(rates), 4) if rates else None


def _restrictions(conditions: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (conditions or {}).items():
        if key == "dayOfWeek":
            out["day_of_week"] = [DAYS[d] for d in value if d in DAYS]
        elif key in _RESTRICTIONS:
            name, factor = _RESTRICTIONS[key]
            out[name] = value if factor is None else round(float(value) * factor, 6)
    return out


def tariff(party: Party, ocpp: Mapping[str, Any], updated: str, ad_hoc: bool = False) -> dict[str, Any]:
    """One OCPP 2.1 TariffType as an OCPI Tariff (``ad_hoc``: the ``AD_HOC_PAYMENT`` one)."""
    elements: list[dict[str, Any]] = []
    for name, field, kind, factor, step in COMPONENTS:
        component = ocpp.get(name) or {}
        vat = _vat(component)
        for price in component.get("prices") or ():
            if not isinstance(price.get(field), int | float):
                continue
            pc: dict[str, Any] = {"type": kind, "price": round(float(price[field]) * factor, 6), "step_size": step}
            if vat is not None:
                pc["vat"] = vat
            element: dict[str, Any] = {"price_components": [pc]}
            restrictions = _restrictions(price.get("conditions"))
            if restrictions:
                element["restrictions"] = restrictions
            elements.append(element)
    if not elements:  # OCPI needs one element: a tariff with no price is free
        elements.append({"price_components": [{"type": "FLAT", "price": 0.0, "step_size": 1}]})
    out: dict[str, Any] = {
        "country_code": party.country_code,
        "party_id": party.party_id,
        "id": f"{ocpp['tariffId']}-ADHOC" if ad_hoc else str(ocpp["tariffId"]),
        "currency": str(ocpp.get("currency") or "EUR"),
        "elements": elements,
        "last_updated": updated,
    }
    if ad_hoc:
        out["type"] = "AD_HOC_PAYMENT"
    texts = [{"language": d.get("language", "en"), "text": d["content"]} for d in ocpp.get("description") or ()
             if isinstance(d, dict) and d.get("content")]  # fmt: skip
    if texts:
        out["tariff_alt_text"] = texts
    for ocpp_key, ocpi_key in (("minCost", "min_price"), ("maxCost", "max_price")):
        bound = ocpp.get(ocpp_key) or {}
        if isinstance(bound.get("exclTax"), int | float):
            out[ocpi_key] = {"excl_vat": float(bound["exclTax"])}
            if isinstance(bound.get("inclTax"), int | float):
                out[ocpi_key]["incl_vat"] = float(bound["inclTax"])
    if ocpp.get("validFrom"):
        out["start_date_time"] = str(ocpp["validFrom"])
    return out


def tariffs(party: Party, twins: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every OCPI tariff, ordered by id."""
    out = []
    for _, (ocpp, updated) in sorted(in_force(twins).items()):
        out += [tariff(party, ocpp, updated), tariff(party, ocpp, updated, ad_hoc=True)]
    return out
