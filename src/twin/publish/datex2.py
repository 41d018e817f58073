"""DATEX II v3.7 AFIR publications (CEN/TS 16157-10, the ``afirEnergyInfrastructure``
profile): the static ``EnergyInfrastructureTablePublication`` and the dynamic
``EnergyInfrastructureStatusPublication``, as XML (valid against the official schemas) and
as DATEX II JSON (the shape national access points publish: ``idG``/``versionG`` for
attributes, ``{"value": ...}`` for enumerations, ``{"values": [{"lang", "value"}]}`` for
multilingual text, a subtype as ``<prefix><Type>``).

Both encodings come from one tree of :class:`Node` s, so they always say the same. A site is
a pool, a station a station, a refill point an EVSE (id: its eMI3 EVSE id) with its
connector. Static data comes from the inventory; status from the twins through
:mod:`twin.publish.status`; the ad hoc price from the tariff in force on each EVSE
(``evses.{id}.tariff.price_now``), referenced from the status as an ``energyRateUpdate`` of
the table's ``energyRate`` (``<tariff id>-ADHOC``, as in OCPI).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from twin.publish import locations as loc
from twin.publish import status as st
from twin.publish.party import Party, latest

NS = {
    "d2": "http://datex2.eu/schema/3/d2Payload",
    "com": "http://datex2.eu/schema/3/common",
    "loc": "http://datex2.eu/schema/3/locationReferencing",
    "locx": "http://datex2.eu/schema/3/locationExtension",
    "afac": "http://datex2.eu/schema/3/afirFacilities",
    "aegi": "http://datex2.eu/schema/3/afirEnergyInfrastructure",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
VERSION = "3.7"
SOURCES = {"WIND": "wind", "SOLAR": "solar", "WATER": "water", "NUCLEAR": "nuclear", "COAL": "coal", "GAS": "gas",
           "GENERAL_GREEN": "generalGreen", "GENERAL_FOSSIL": "generalFossil"}  # OCPI's energy sources -> DATEX's
CONNECTORS = {"IEC_62196_T2": "iec62196T2", "IEC_62196_T2_COMBO": "iec62196T2COMBO", "CHADEMO": "chademo",
              "IEC_62196_T1": "iec62196T1", "IEC_62196_T1_COMBO": "iec62196T1COMBO", "DOMESTIC_F": "domesticF"}
FORMATS = {"CABLE": "cableMode3", "SOCKET": "socket"}


@dataclass
class Node:
    tag: str  # "prefix:local"
    value: Any = None
    children: list[Node] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)
    xsi_type: str | None = None
    many: bool = False  # JSON: one of an array
    enum: bool = False  # JSON: {"value": ...}
    collapse: bool = False  # JSON: the children's array itself (multilingual ``values``)
    lift: bool = False  # JSON: an extension, whose content stands beside its typed parent


def el(tag: str, *children: Node | None, **kw: Any) -> Node:
    return Node(tag, children=[c for c in children if c is not None], **kw)


def leaf(tag: str, value: Any, **kw: Any) -> Node:
    return Node(tag, value=value, **kw)


def enum(tag: str, value: str, many: bool = False) -> Node:
    return Node(tag, value=value, enum=True, many=many)


def text(tag: str, value: str, lang: str = "en", many: bool = False) -> Node:
    """A MultilingualString."""
    return el(tag, el("com:values", leaf("com:value", value, attrs={"lang": lang}, many=True), collapse=True),
              many=many)  # fmt: skip


# -- the two encodings -------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return str(value)


def _xml(node: Node, out: list[str], depth: int) -> None:
    pad = "  " * depth
    attrs = "".join(f" {k}={quoteattr(v)}" for k, v in node.attrs.items())
    if node.xsi_type:
        attrs += f' xsi:type="{node.xsi_type}"'
    if node.value is not None:
        out.append(f"{pad}<{node.tag}{attrs}>{escape(_scalar(node.value))}</{node.tag}>")
    elif not node.children:
        out.append(f"{pad}<{node.tag}{attrs}/>")
    else:
        out.append(f"{pad}<{node.tag}{attrs}>")
        for child in node.children:
            _xml(child, out, depth + 1)
        out.append(f"{pad}</{node.tag}>")


def to_xml(root: Node) -> str:
    """The publication as a ``d2:payload`` document."""
    names = " ".join(f'xmlns:{p}="{u}"' for p, u in NS.items())
    out: list[str] = []
    _xml(root, out, 0)
    first = out[0].replace("<d2:payload", f"<d2:payload {names}", 1)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + "\n".join([first, *out[1:]]) + "\n"


def _json_value(node: Node) -> Any:
    if node.enum:
        return {"value": node.value}
    if node.value is not None:
        if node.attrs:
            return {**{_attr(k): _attr_value(k, v) for k, v in node.attrs.items()}, "value": node.value}
        return node.value
    if node.collapse:
        return [_json_value(c) for c in node.children]
    body: dict[str, Any] = {_attr(k): _attr_value(k, v) for k, v in node.attrs.items() if k not in _NOT_IN_JSON}
    beside: dict[str, Any] = {}
    for child in node.children:
        if child.lift:
            for inner in child.children:
                beside[_typed_key(inner.tag, inner.xsi_type or _type_of(inner.tag))] = _json_value(inner)
            continue
        key = child.tag.split(":", 1)[1]
        value = _json_value(child)
        if child.many:
            body.setdefault(key, []).append(value)
        else:
            body[key] = value
    if node.xsi_type:
        return {**beside, _typed_key(node.tag, node.xsi_type): body}
    return {**body, **beside}


def _attr(name: str) -> str:
    return f"{name}G" if name in ("id", "version") else name


_NOT_IN_JSON = ("targetClass", "modelBaseVersion", "profileName")  # a reference's class; the wrapper's version


def _attr_value(name: str, value: str) -> Any:
    return int(value) if name == "order" else value


def _typed_key(tag: str, xsi_type: str) -> str:
    prefix, name = xsi_type.split(":", 1)
    return f"{prefix}{name}"


def _type_of(tag: str) -> str:
    prefix, name = tag.split(":", 1)
    return f"{'locx' if name == 'facilityLocation' else prefix}:{name[0].upper()}{name[1:]}"


def to_json(root: Node, generated_at: str) -> dict[str, Any]:
    """The publication in a DATEX II JSON message container, as a NAP's feed."""
    publication = _json_value(root)
    return {
        "payload": [{"modelBaseVersionG": "3", "versionG": VERSION, **publication}],
        "exchangeInformation": {
            "messageType": {"value": "payloadDelivery"},
            "exchangeContext": {"codedExchangeProtocol": {"value": "snapshotPull"},
                                "exchangeSpecificationVersion": "1", "supplierOrCisRequester": {}},
            "dynamicInformation": {"exchangeStatus": {"value": "online"}, "completedPaylod": True,
                                   "messageSequencingNumber": 0, "messageGenerationTimestamp": generated_at},
        },
    }  # fmt: skip


# -- the publications ------------------------------------------------------------------------


def _payload(kind: str, party: Party, at: str, *body: Node | None) -> Node:
    return el("d2:payload", leaf("com:publicationTime", at),
              el("com:publicationCreator", leaf("com:country", party.country_code.lower()),
                 leaf("com:nationalIdentifier", f"{party.country_code}*{party.party_id}")),
              *body, xsi_type=f"aegi:{kind}", attrs={"lang": "en", "modelBaseVersion": "3",
                                                     "profileName": "AFIR Energy Infrastructure"})  # fmt: skip


def _address(row: Mapping[str, Any]) -> Node:
    a = row.get("address") or {}
    return el("loc:_locationReferenceExtension",
              el("loc:facilityLocation",
                 el("locx:address", leaf("locx:postcode", str(a.get("postal_code") or "")),
                    text("locx:city", str(a.get("city") or "")),
                    leaf("locx:countryCode", str(a.get("country") or "").lower()),
                    el("locx:addressLine", enum("locx:type", "street"), text("locx:text", str(a.get("street") or "")),
                       attrs={"order": "1"}, many=True))), lift=True)  # fmt: skip


def _point(lat: float, lon: float, row: Mapping[str, Any] | None = None) -> Node:
    return el("afac:locationReference", _address(row) if row else None,
              el("loc:pointByCoordinates", el("loc:pointCoordinates", leaf("loc:latitude", round(lat, 6)),
                                              leaf("loc:longitude", round(lon, 6)))),
              xsi_type="loc:PointLocation")  # fmt: skip


def _operator(row: Mapping[str, Any], party: Party) -> Node:
    o = row.get("operator") or {"name": party.name, "website": party.website}
    return el("afac:operator", text("afac:name", str(o.get("name") or party.name)),
              leaf("afac:linkToGeneralInformation", o["website"]) if o.get("website") else None,
              xsi_type="afac:AnOrganisation")  # fmt: skip


def _hours(row: Mapping[str, Any]) -> Node | None:
    # OpenAllHours for 24/7; a pool with other hours says them in its OCPI Location (the AFIR
    # profile's OperatingHoursSpecification is not written here)
    always = row.get("opening_hours") in (None, "24/7")
    return el("afac:operatingHours", xsi_type="afac:OpenAllHours") if always else None


def rate_id(point_id: str) -> str:
    """A refill point's ad hoc rate (ids are unique in a payload: one rate per point)."""
    return f"{point_id}-ADHOC"


def _price(kind: str, value: float, index: int) -> Node:
    return el("aegi:energyPrice", leaf("aegi:priceGroupIndex", index), enum("aegi:priceType", kind),
              leaf("aegi:value", round(value, 2)), leaf("aegi:taxIncluded", False), many=True)  # fmt: skip


def _prices(price_now: Mapping[str, Any]) -> list[Node]:
    out: list[Node] = []
    kinds = (("energy_per_kwh", "pricePerKWh"), ("time_per_min", "pricePerMinute"), ("fixed_fee", "basePrice"))
    for key, kind in kinds:
        if isinstance(price_now.get(key), int | float):
            out.append(_price(kind, float(price_now[key]), len(out)))
    return out


def _energy_product(row: Mapping[str, Any], tariff: Mapping[str, Any] | None, updated: str,
                    point_id: str) -> Node | None:  # fmt: skip
    mix = row.get("energy_mix") or {}
    if not mix and not tariff:
        return None
    rate = None
    if tariff and tariff.get("tariff_id"):
        rate = el("aegi:energyRate", enum("aegi:ratePolicy", "adHoc"), leaf("aegi:lastUpdated", updated),
                  leaf("aegi:applicableCurrency", str(tariff.get("currency") or "EUR"), many=True),
                  text("aegi:rateName", f"ad hoc, tariff {tariff['tariff_id']}"),
                  el("aegi:payment", enum("afac:paymentMeans", "paymentCreditCard", many=True),
                     enum("afac:paymentMeans", "paymentDebitCard", many=True)) if float(row.get("max_kw") or 0) >= 50
                  else None,
                  *_prices(tariff.get("price_now") or {}),
                  attrs={"id": rate_id(point_id)}, many=True)  # fmt: skip
    return el("aegi:energyProduct",
              leaf("aegi:isGreenEnergy", bool(mix.get("is_green_energy"))) if mix else None, rate,
              *[el("aegi:electricEnergySourceRatio", enum("aegi:energySource", SOURCES.get(s["source"], "other")),
                   el("aegi:sourceRatioValue", leaf("com:percentage", float(s["percentage"]))), many=True)
                for s in mix.get("sources") or ()],
              xsi_type="aegi:ElectricEnergy", many=True)  # fmt: skip


def _refill_point(party: Party, row: Mapping[str, Any], twin: Mapping[str, Any] | None, n: int,
                  static_at: str) -> Node:  # fmt: skip
    key = str(n)
    c = loc.connector(row, twin, key, static_at)
    dc = c["power_type"] == "DC"
    tariff = (((twin or {}).get("evses") or {}).get(key) or {}).get("tariff")
    smart = ["remoteMonitoring", "powerOptimisationByUser"]
    if row.get("bidirectional"):
        smart.append("bidirectionalRecharging")
    if row.get("iso15118"):
        smart.append("plugAndCharge")
    return el("aegi:refillPoint",
              text("afac:name", f"{row['station_id']} EVSE {n}"),
              leaf("afac:lastUpdated", static_at),
              el("afac:externalIdentifier", leaf("afac:identifier", loc.evse_id(party, str(row["station_id"]), n)),
                 many=True),
              enum("aegi:deliveryUnit", "kWh"),
              _energy_product(row, tariff, static_at, loc.evse_id(party, str(row["station_id"]), n)),
              enum("aegi:currentType", "dc" if dc else "ac"),
              leaf("aegi:numberOfConnectors", 1),
              leaf("aegi:availableChargingPower", c["max_electric_power"], many=True),
              enum("aegi:chargingMode", "mode4DC" if dc else "mode3AC3p"),
              *[enum("aegi:smartRechargingServices", s, many=True) for s in smart],
              el("aegi:connector", enum("aegi:connectorType", CONNECTORS.get(c["standard"], "other")),
                 enum("aegi:connectorFormat", FORMATS.get(c["format"], "socket")),
                 leaf("aegi:maxPowerAtSocket", c["max_electric_power"]), leaf("aegi:voltage", c["max_voltage"]),
                 leaf("aegi:maximumCurrent", c["max_amperage"]), many=True),
              attrs={"id": loc.evse_id(party, str(row["station_id"]), n), "version": "1"},
              xsi_type="aegi:ElectricChargingPoint", many=True)  # fmt: skip


def _station(party: Party, row: Mapping[str, Any], twin: Mapping[str, Any] | None, static_at: str) -> Node:
    evses = int(row.get("evses") or 1)
    methods = ["rfid", "apps"] + (["creditCard", "debitCard", "nfc"] if float(row.get("max_kw") or 0) >= 50 else [])
    return el("aegi:energyInfrastructureStation",
              text("afac:name", str(row["station_id"])),
              leaf("afac:lastUpdated", static_at),
              _point(float(row["lat"]), float(row["lon"])),
              leaf("aegi:totalMaximumPower", int(float(row.get("max_kw") or 0) * 1000 * evses)),
              *[enum("aegi:authenticationAndIdentificationMethods", m, many=True) for m in methods],
              leaf("aegi:numberOfRefillPoints", evses),
              *[_refill_point(party, row, twin, n, static_at) for n in range(1, evses + 1)],
              attrs={"id": str(row["station_id"]), "version": "1"}, many=True)  # fmt: skip


def table(party: Party, rows: list[Mapping[str, Any]], twins: Mapping[str, Mapping[str, Any]], static_at: str,
          at: str) -> Node:  # fmt: skip
    """The static publication: every pool a site, its stations, their EVSEs."""
    sites = []
    for pool_id, members in loc.pools(rows).items():
        first = members[0]
        lat = sum(float(r["lat"]) for r in members) / len(members)
        lon = sum(float(r["lon"]) for r in members) / len(members)
        sites.append(el("aegi:energyInfrastructureSite",
                        text("afac:name", str(first.get("pool_name") or pool_id)),
                        leaf("afac:lastUpdated", static_at),
                        _hours(first),
                        _point(lat, lon, first),
                        _operator(first, party),
                        enum("aegi:typeOfSite", "openSpace"),
                        *[_station(party, r, twins.get(str(r["station_id"])), static_at) for r in members],
                        attrs={"id": pool_id, "version": "1"}, many=True))  # fmt: skip
    return _payload("EnergyInfrastructureTablePublication", party, at,
                    el("aegi:energyInfrastructureTable", leaf("aegi:tableName", f"{party.name} AFIR recharging table"),
                       *sites, attrs={"id": f"{party.emi3}-table", "version": "1"}, many=True))  # fmt: skip


def _ref(id_: str) -> Node:
    return el("afac:reference", attrs={"targetClass": "afac:FacilityObject", "id": id_, "version": "1"})


def _point_status(party: Party, row: Mapping[str, Any], twin: Mapping[str, Any] | None, n: int,
                  static_at: str) -> Node:  # fmt: skip
    key = str(n)
    point = loc.evse_id(party, str(row["station_id"]), n)
    status, operation = st.datex2(twin, key)
    evse = ((twin or {}).get("evses") or {}).get(key) or {}
    updated = loc.evse_object(party, row, twin, n, static_at)["last_updated"]
    tariff = evse.get("tariff") or {}
    power = (evse.get("energy") or {}).get("power_w")
    update = None
    if tariff.get("tariff_id"):
        update = el("aegi:energyRateUpdate", leaf("aegi:lastUpdated", latest(updated, (twin or {}).get("as_of"))),
                    el("aegi:energyRateReference", attrs={"targetClass": "aegi:EnergyRate", "id": rate_id(point)}),
                    *_prices(tariff.get("price_now") or {}), many=True)  # fmt: skip
    return el("aegi:refillPointStatus", _ref(loc.evse_id(party, str(row["station_id"]), n)),
              leaf("afac:lastUpdated", updated), enum("afac:operationStatus", operation),
              enum("aegi:status", status), update,
              leaf("aegi:currentChargingPower", round(float(power), 1))
              if status == "charging" and isinstance(power, int | float) else None,
              xsi_type="aegi:ElectricChargingPointStatus", many=True)  # fmt: skip


def status(party: Party, rows: list[Mapping[str, Any]], twins: Mapping[str, Mapping[str, Any]], static_at: str,
           at: str) -> Node:  # fmt: skip
    """The dynamic publication: per EVSE its status, operation status and ad hoc price now."""
    sites = []
    for pool_id, members in loc.pools(rows).items():
        stations = []
        for row in members:
            twin = twins.get(str(row["station_id"]))
            points = [_point_status(party, row, twin, n, static_at) for n in range(1, int(row.get("evses") or 1) + 1)]
            online = bool(twin and (twin.get("connection") or {}).get("online"))
            stations.append(el("aegi:energyInfrastructureStationStatus", _ref(str(row["station_id"])),
                               leaf("afac:lastUpdated", latest(static_at, *(p.children[1].value for p in points))),
                               enum("afac:operationStatus", "inOperation" if online else "unknown"),
                               leaf("aegi:isAvailable", any(p.children[3].value == "available" for p in points)),
                               *points, many=True))  # fmt: skip
        sites.append(el("aegi:energyInfrastructureSiteStatus", _ref(pool_id),
                        leaf("afac:lastUpdated", latest(static_at, *(s.children[1].value for s in stations))),
                        *stations, many=True))  # fmt: skip
    return _payload("EnergyInfrastructureStatusPublication", party, at,
                    el("aegi:tableReference", attrs={"targetClass": "aegi:EnergyInfrastructureTable",
                                                     "id": f"{party.emi3}-table", "version": "1"}, many=True),
                    *sites)  # fmt: skip
