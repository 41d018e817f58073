"""AFIR Art. 20: would a pool's published data pass? Every static field the regulation asks
for is in what ``twin ocpi`` publishes (from the inventory), and the dynamic data has what it
needs (an ad hoc price in force on every EVSE; the status's freshness is its own check in
``twin.analytics.afir``).

Static data (Art. 20(1), as the DATEX II AFIR profile carries it): the location
(coordinates), the address, the operator, opening hours, and per point its connector type,
its maximum power and its current type (AC or DC), and the ad hoc payment methods. Dynamic
data (Art. 20(2)): operational status and availability (every twin has a status), and the
ad hoc price (a default tariff held on every EVSE).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

RULE = "Art. 20 data published (static fields, ad hoc price)"
STATIC = {  # what the regulation asks for -> where the inventory has it
    "coordinates": lambda r: r.get("lat") is not None and r.get("lon") is not None,
    "address": lambda r: bool((r.get("address") or {}).get("street") and (r.get("address") or {}).get("city")),
    "operator": lambda r: bool((r.get("operator") or {}).get("name")),
    "opening hours": lambda r: bool(r.get("opening_hours")),
    "connector type": lambda r: bool((r.get("connector") or {}).get("standard")),
    "maximum power": lambda r: bool(r.get("max_kw")),
    "current type": lambda r: r.get("kind") in ("AC", "DC"),
}


def art20(rows: Iterable[Mapping[str, Any]], stations: Iterable[str],
          priced: Mapping[tuple[str, str], Any]) -> dict[str, str]:  # fmt: skip
    """The check for one pool: its inventory ``rows``, its ``stations`` (those the log saw),
    and ``priced``: per ``(station, evse)`` (``"0"``: every EVSE) the default tariffs held."""
    listed = {str(r["station_id"]): r for r in rows}
    missing: list[str] = []
    for station in stations:
        row = listed.get(station)
        if row is None:
            missing.append(f"{station}: not in the inventory")
            continue
        gaps = [name for name, present in STATIC.items() if not present(row)]
        unpriced = [str(n) for n in range(1, int(row.get("evses") or 1) + 1)
                    if not (priced.get((station, str(n))) or priced.get((station, "0")))]  # fmt: skip
        if unpriced:
            gaps.append(f"ad hoc price on EVSE {', '.join(unpriced)}")
        if gaps:
            missing.append(f"{station}: {', '.join(gaps)}")
    if not listed:
        return {"rule": RULE, "result": "unknown", "why": "no station inventory: static data unknown"}
    if missing:
        return {"rule": RULE, "result": "fail", "why": "missing " + "; ".join(missing)}
    return {"rule": RULE, "result": "pass", "why": "every static field and an ad hoc price on every EVSE"}
