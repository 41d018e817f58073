"""DATEX II v3.7 AFIR publications from a simulated fleet's twins: valid against the official
XSDs (``xmlschema``), saying what the twins say (the status table, the ad hoc price in force),
and the same content as NAP-style JSON."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from twin.publish import datex2, status
from twin.publish.party import Party

xmlschema = pytest.importorskip("xmlschema")
XSD = Path(__file__).resolve().parents[2] / "shared" / "datex2" / "xsd" / "DATEXII_3_D2Payload.xsd"
NS = {"aegi": datex2.NS["aegi"], "afac": datex2.NS["afac"], "com": datex2.NS["com"]}
STATIC_AT, AT = "2026-03-01T00:00:00.000Z", "2026-03-03T00:00:00.000Z"


@pytest.fixture(scope="module")
def schema() -> Any:
    if not XSD.is_file():
        pytest.skip(f"the DATEX II schemas are not at {XSD}")
    return xmlschema.XMLSchema(str(XSD))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    where = tmp_path_factory.mktemp("datex2") / "fleet.jsonl"
    twin = [sys.executable, "-m", "twin"]
    subprocess.run([*twin, "simulate", "--stations", "8", "--days", "1", "--seed", "3", "--out", str(where)],
                   check=True, capture_output=True)  # fmt: skip
    rebuilt = subprocess.run([*twin, "rebuild", str(where), "--json"], check=True, capture_output=True)
    rows = json.loads(where.with_name(where.name + ".stations.json").read_text())
    return rows, json.loads(rebuilt.stdout)["twins"]


def _valid(schema: Any, xml: str) -> None:
    errors = [str(e).split("\n\n")[0] for e in schema.iter_errors(xml)]
    assert not errors, errors[:3]


def test_both_publications_are_valid_against_the_xsds(schema: Any, fleet: Any) -> None:
    rows, twins = fleet
    for build in (datex2.table, datex2.status):
        _valid(schema, datex2.to_xml(build(Party(), rows, twins, STATIC_AT, AT)))


def test_the_table_lists_every_evse_with_its_connector_and_the_inventorys_static_data(schema: Any,
                                                                                    fleet: Any) -> None:  # fmt: skip
    rows, twins = fleet
    doc = schema.to_dict(datex2.to_xml(datex2.table(Party(), rows, twins, STATIC_AT, AT)))
    xml = datex2.to_xml(datex2.table(Party(), rows, twins, STATIC_AT, AT))
    from xml.etree import ElementTree as ET

    root = ET.fromstring(xml)
    points = root.findall(".//aegi:refillPoint", NS)
    assert len(points) == sum(r["evses"] for r in rows)
    assert {p.get("id") for p in points} == {f"NL*TWN*E{r['station_id'].replace('-', '')}*{n}"
                                            for r in rows for n in range(1, r["evses"] + 1)}  # fmt: skip
    dc = next(r for r in rows if r["kind"] == "DC")
    point = next(p for p in points if p.get("id") == f"NL*TWN*E{dc['station_id'].replace('-', '')}*1")
    assert point.findtext("aegi:connector/aegi:connectorType", namespaces=NS) == "iec62196T2COMBO"
    assert float(point.findtext("aegi:connector/aegi:maxPowerAtSocket", namespaces=NS)) == dc["max_kw"] * 1000
    sites = root.findall(".//aegi:energyInfrastructureSite", NS)
    assert {s.get("id") for s in sites} == {r["pool_id"] for r in rows}
    city = sites[0].find(".//{http://datex2.eu/schema/3/locationExtension}city//com:value", NS)
    assert city is not None and city.text == rows[0]["address"]["city"]
    assert doc is not None


def _status_of(xml: str) -> dict[str, tuple[str, str, float | None]]:
    from xml.etree import ElementTree as ET

    out = {}
    for point in ET.fromstring(xml).iter(f"{{{NS['aegi']}}}refillPointStatus"):
        ref = point.find("afac:reference", NS)
        assert ref is not None
        price = point.findtext("aegi:energyRateUpdate/aegi:energyPrice/aegi:value", namespaces=NS)
        out[str(ref.get("id"))] = (point.findtext("aegi:status", namespaces=NS) or "",
                                   point.findtext("afac:operationStatus", namespaces=NS) or "",
                                   float(price) if price else None)  # fmt: skip
    return out


def test_status_says_what_the_twins_say_a_faulted_evse_and_the_price_in_force(schema: Any, fleet: Any) -> None:
    rows, twins = fleet
    twins = copy.deepcopy(twins)
    faulted, offline = rows[0]["station_id"], rows[1]["station_id"]
    twins[faulted]["evses"]["1"]["status"] = "Faulted"
    twins[offline]["connection"]["online"] = False
    xml = datex2.to_xml(datex2.status(Party(), rows, twins, STATIC_AT, AT))
    _valid(schema, xml)
    seen = _status_of(xml)
    assert seen[f"NL*TWN*E{faulted.replace('-', '')}*1"][:2] == ("faulted", "technicalDefect")
    assert seen[f"NL*TWN*E{offline.replace('-', '')}*1"][:2] == ("unknown", "unknown")
    for row in rows:
        for n in range(1, row["evses"] + 1):
            twin = twins[row["station_id"]]
            got = seen[f"NL*TWN*E{row['station_id'].replace('-', '')}*{n}"]
            assert got[:2] == status.datex2(twin, str(n))
            price = ((twin["evses"][str(n)].get("tariff") or {}).get("price_now") or {}).get("energy_per_kwh")
            assert got[2] == (round(price, 2) if price is not None else None)
    assert any(p[2] is not None for p in seen.values()), "the simulated fleet has tariffs in force"


def test_json_has_the_shape_of_a_naps_feed(fleet: Any) -> None:
    rows, twins = fleet
    doc = datex2.to_json(datex2.table(Party(), rows, twins, STATIC_AT, AT), AT)
    publication = doc["payload"][0]["aegiEnergyInfrastructureTablePublication"]
    site = publication["energyInfrastructureTable"][0]["energyInfrastructureSite"][0]
    assert {"idG", "versionG", "name", "locationReference", "operator", "energyInfrastructureStation"} <= set(site)
    assert set(site["locationReference"]) == {"locxFacilityLocation", "locPointLocation"}
    assert site["name"]["values"][0]["lang"] == "en"
    point = site["energyInfrastructureStation"][0]["refillPoint"][0]["aegiElectricChargingPoint"]
    assert point["connector"][0]["connectorType"]["value"] in ("iec62196T2", "iec62196T2COMBO")
    assert doc["exchangeInformation"]["messageType"] == {"value": "payloadDelivery"}
    live = datex2.to_json(datex2.status(Party(), rows, twins, STATIC_AT, AT), AT)
    sites = live["payload"][0]["aegiEnergyInfrastructureStatusPublication"]["energyInfrastructureSiteStatus"]
    point_status = sites[0]["energyInfrastructureStationStatus"][0]["refillPointStatus"][0]
    assert set(point_status) == {"aegiElectricChargingPointStatus"}
    assert point_status["aegiElectricChargingPointStatus"]["status"]["value"] in {s for s, _ in status.DATEX2.values()}
