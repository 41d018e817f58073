"""OpenADR 3 events as grid signals, pure: 3.1 and 3.0.1 shapes, every GAC rule, each bad
input, safe mode, prices, and the limit in force that follows from the records."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from twin import sites
from twin.grid import openadr, safe_mode

EAN_A, EAN_B = "871687000000000016", "871687000000000023"
SITE_A = sites.Site("SITE-A", EAN_A, 30.0, 20.0, ("CS-1",))
SITE_B = sites.Site("SITE-B", EAN_B, 45.0, 0.0, ("CS-2",))
SITES = [SITE_A, SITE_B]
RECEIVED = "2026-03-02T08:00:00.000Z"
T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
GAC_PROGRAM = {"id": "p1", "programName": "gac", "attributes": [
    {"type": "PROGRAM_TYPE", "values": ["DSO_CPO_INTERFACE-2.1.1"]}, {"type": "RETAILER_NAME", "values": ["DSO"]},
    {"type": "BINDING_EVENTS", "values": [True]}]}  # fmt: skip
PRICE_PROGRAM = {"id": "p2", "programName": "tou"}


def gac_event(**changes: Any) -> dict[str, Any]:
    """A GAC 3.1 event: an import limit of 10 kW then 12 kW, 15 minutes each (continuous)."""
    event = {
        "id": "e1", "programID": "p1", "objectType": "EVENT", "eventName": "congestion",
        "createdDateTime": "2026-03-02T07:00:00Z", "modificationDateTime": "2026-03-02T07:30:00Z",
        "targets": [EAN_A],
        "payloadDescriptors": [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "IMPORT_CAPACITY_LIMIT",
                                "units": "KW"}],
        "intervalPeriod": {"start": "2026-03-02T08:00:00Z", "duration": "PT15M"},
        "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [10]}]},
                      {"id": 1, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [12.5]}]}],
    }  # fmt: skip
    event.update(changes)
    return event


def test_a_gac_event_is_one_accepted_record_per_site_with_its_intervals() -> None:
    [record] = openadr.signals(gac_event(), GAC_PROGRAM, SITES, RECEIVED)
    assert record["status"] == "accepted" and record["reason"] is None
    assert (record["site_id"], record["ean"], record["protocol"]) == ("SITE-A", EAN_A, "openadr")
    assert (record["program_id"], record["event_id"], record["payload_type"], record["unit"]) == (
        "p1", "e1", "IMPORT_CAPACITY_LIMIT", "KW")
    assert record["intervals"] == [{"start": "2026-03-02T08:00:00.000Z", "duration_s": 900.0, "value": 10},
                                   {"start": "2026-03-02T08:15:00.000Z", "duration_s": 900.0, "value": 12.5}]
    assert record["modification_number"] == int(datetime(2026, 3, 2, 7, 30, tzinfo=UTC).timestamp() * 1000)
    assert set(record) >= {"site_id", "ean", "protocol", "program_id", "event_id", "modification_number",
                           "payload_type", "unit", "currency", "intervals", "received_at", "status", "reason"}
    limit = sites.limit_at(SITE_A, [record], T0 + timedelta(minutes=20))
    assert (limit.import_kw, limit.source) == (12.5, "openadr")
    assert sites.limit_at(SITE_A, [record], T0 + timedelta(minutes=31)).source == "static"


def test_a_3_0_1_event_targets_by_power_service_location() -> None:
    event = gac_event(targets=[{"type": "POWER_SERVICE_LOCATION", "values": [EAN_A, EAN_B]},
                               {"type": "VEN_NAME", "values": ["NL-TWN"]}])  # fmt: skip
    records = openadr.signals(event, PRICE_PROGRAM, SITES, RECEIVED)
    assert [(r["site_id"], r["status"]) for r in records] == [("SITE-A", "accepted"), ("SITE-B", "accepted")]
    assert openadr.targets(event)[:2] == ([EAN_A, EAN_B], ["VEN_NAME=NL-TWN"])


def test_separated_intervals_each_with_its_own_period() -> None:
    event = gac_event(intervalPeriod=None, intervals=[
        {"id": 1, "intervalPeriod": {"start": "2026-03-02T08:00:00Z", "duration": "PT1H"},
         "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [5]}]},
        {"id": 3, "intervalPeriod": {"start": "2026-03-02T10:00:00Z", "duration": "PT30M"},
         "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [7]}]}])  # fmt: skip
    [record] = openadr.signals(event, GAC_PROGRAM, SITES, RECEIVED)
    assert record["status"] == "accepted"
    assert [(i["start"][11:16], i["duration_s"], i["value"]) for i in record["intervals"]] == [
        ("08:00", 3600.0, 5), ("10:00", 1800.0, 7)]
    assert sites.limit_at(SITE_A, [record], T0 + timedelta(minutes=90)).source == "static"  # the gap


def _broken(name: str) -> dict[str, Any]:
    e = gac_event()
    if name == "priority":
        e["priority"] = 1
    elif name == "mixed periods":
        e["intervals"][0]["intervalPeriod"] = {"start": "2026-03-02T08:00:00Z", "duration": "PT15M"}
    elif name == "no period":
        e["intervalPeriod"] = None
    elif name == "targets not EAN18":
        e["targets"] = ["group-1"]
    elif name == "no targets":
        e["targets"] = None
    elif name == "two descriptors":
        e["payloadDescriptors"] = e["payloadDescriptors"] * 2
    elif name == "not KW":
        e["payloadDescriptors"][0]["units"] = "kW"
    elif name == "price descriptor":
        e["payloadDescriptors"][0]["payloadType"] = "PRICE"
    elif name == "ids not increasing":
        e["intervals"][1]["id"] = 0
    elif name == "two payloads":
        e["intervals"][0]["payloads"].append({"type": "PRICE", "values": [0.3]})
    elif name == "no intervals":
        e["intervals"] = []
    return e


@pytest.mark.parametrize(("name", "said"), [
    ("priority", "GAC: an event has no priority"),
    ("mixed periods", "continuous or separated, not both"),
    ("no period", "continuous (the event's intervalPeriod) or separated"),
    ("targets not EAN18", "GAC: targets must be a list of EAN18 values"),
    ("no targets", "GAC: targets must be a list of EAN18 values"),
    ("two descriptors", "GAC: exactly one payload descriptor (got 2)"),
    ("not KW", "units are 'KW' (got 'kW')"),
    ("price descriptor", "the payload descriptor's type is IMPORT_CAPACITY_LIMIT"),
    ("ids not increasing", "GAC: interval ids are strictly increasing"),
    ("two payloads", "exactly one IMPORT_CAPACITY_LIMIT payload with one value"),
    ("no intervals", "GAC: an event has at least one interval"),
])  # fmt: skip
def test_each_gac_rule_broken_is_a_rejection_never_obeyed(name: str, said: str) -> None:
    records = openadr.signals(_broken(name), GAC_PROGRAM, SITES, RECEIVED)
    assert records and all(r["status"] == "rejected" for r in records), records
    assert all(said in r["reason"] for r in records), [r["reason"] for r in records]
    assert sites.limit_at(SITE_A, records, T0 + timedelta(minutes=5)).source == "static"


def test_the_same_event_outside_a_gac_program_may_carry_prices_and_export_limits() -> None:
    event = gac_event(priority=1, payloadDescriptors=[
        {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "PRICE", "units": "KWH", "currency": "EUR"},
        {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "EXPORT_CAPACITY_LIMIT", "units": "W"}],
        intervals=[{"id": 0, "payloads": [{"type": "PRICE", "values": [0.31]},
                                          {"type": "EXPORT_CAPACITY_LIMIT", "values": [5000]}]}])  # fmt: skip
    records = {r["payload_type"]: r for r in openadr.signals(event, PRICE_PROGRAM, SITES, RECEIVED)}
    assert set(records) == {"PRICE", "EXPORT_CAPACITY_LIMIT"}
    assert (records["PRICE"]["currency"], records["PRICE"]["unit"]) == ("EUR", "KWH")
    assert records["EXPORT_CAPACITY_LIMIT"]["intervals"][0]["value"] == 5.0  # W -> kW
    at = T0 + timedelta(minutes=1)
    assert sites.price_at(SITE_A, list(records.values()), at) == 0.31
    assert sites.limit_at(SITE_A, list(records.values()), at).export_kw == 5.0


def test_an_ean_that_is_no_sites_is_recorded_rejected() -> None:
    records = openadr.signals(gac_event(targets=[EAN_A, "871687000000000030"]), GAC_PROGRAM, SITES, RECEIVED)
    assert [(r["site_id"], r["status"]) for r in records] == [("SITE-A", "accepted"), (None, "rejected")]
    assert "EAN 871687000000000030 is no site's" in records[1]["reason"]


@pytest.mark.parametrize(("event", "said"), [
    ("not an object", "an event is a JSON object"),
    ({"programID": "p1", "intervals": []}, "id is missing"),
    ({"id": "e", "programID": "p1"}, "intervals is missing"),
    ({"id": "e", "programID": "p1", "intervals": [{"id": "one", "payloads": []}]}, "interval 0 has no integer id"),
    ({"id": "e", "programID": "p1", "intervals": [{"id": 0, "payloads": [{"type": "PRICE"}]}]},
     "payloads must be a list of valuesMaps"),
    ({"id": "e", "programID": "p1", "targets": "x", "intervals": []}, "targets must be a list"),
])  # fmt: skip
def test_an_unreadable_event_is_one_rejected_record(event: Any, said: str) -> None:
    records = openadr.signals(event, PRICE_PROGRAM, SITES, RECEIVED)
    assert all(r["status"] == "rejected" for r in records) and said in records[0]["reason"], records


@pytest.mark.parametrize(("change", "said"), [
    ({"intervalPeriod": {"start": "yesterday", "duration": "PT15M"}}, "start 'yesterday' is not an RFC 3339"),
    ({"intervalPeriod": {"start": "2026-03-02T08:00:00Z", "duration": "15 minutes"}}, "is not ISO 8601"),
    ({"intervalPeriod": {"start": "2026-03-02T08:00:00", "duration": "PT15M"}}, "has no time zone"),
    ({"intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": ["ten"]}]}]},
     "value 'ten' is not a number"),
])  # fmt: skip
def test_bad_values_are_rejected_with_the_field(change: dict[str, Any], said: str) -> None:
    records = openadr.signals(gac_event(**change), PRICE_PROGRAM, SITES, RECEIVED)
    assert all(r["status"] == "rejected" for r in records) and said in records[0]["reason"], records


def test_now_and_forever() -> None:
    event = gac_event(intervalPeriod={"start": "0001-01-01T00:00:00Z", "duration": "P9999Y"},
                      intervals=[{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [8]}]}])
    [record] = openadr.signals(event, GAC_PROGRAM, SITES, RECEIVED)
    assert record["intervals"][0]["start"] == RECEIVED and record["intervals"][0]["duration_s"] == openadr.FOREVER_S
    assert sites.limit_at(SITE_A, [record], T0 + timedelta(days=3000)).import_kw == 8
    assert openadr.duration_s("P1DT2H") == 93600 and openadr.duration_s("PT0.5S") == 0.5


def test_a_deleted_event_is_cancelled_and_no_longer_obeyed() -> None:
    records = openadr.signals(gac_event(), GAC_PROGRAM, SITES, RECEIVED)
    gone = openadr.cancelled(records, "2026-03-02T08:05:00.000Z")
    assert gone[0]["status"] == "cancelled" and gone[0]["modification_number"] == records[0]["modification_number"] + 1
    assert sites.limit_at(SITE_A, records + gone, T0 + timedelta(minutes=10)).source == "static"


def test_a_newer_version_replaces_the_older() -> None:
    first = openadr.signals(gac_event(), GAC_PROGRAM, SITES, RECEIVED)
    newer = gac_event(modificationDateTime="2026-03-02T07:45:00Z")
    newer["intervals"][0]["payloads"][0]["values"] = [4]
    second = openadr.signals(newer, GAC_PROGRAM, SITES, "2026-03-02T08:01:00.000Z")
    assert sites.limit_at(SITE_A, first + second, T0 + timedelta(minutes=5)).import_kw == 4
    assert sites.limit_at(SITE_A, second + first, T0 + timedelta(minutes=5)).import_kw == 4  # by version


def _safe_event(kw: float) -> dict[str, Any]:
    return gac_event(id="safe", eventName="safe-mode", intervalPeriod={"start": "0001-01-01", "duration": "P9999Y"},
                     intervals=[{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [kw]}]}])


def test_a_safe_mode_event_is_kept_and_not_obeyed_while_the_vtn_answers() -> None:
    [record] = openadr.signals(_safe_event(6), GAC_PROGRAM, SITES, RECEIVED)
    assert record["payload_type"] == openadr.SAFE_MODE and record["status"] == "accepted"
    assert sites.limit_at(SITE_A, [record], T0 + timedelta(minutes=1)).source == "static"
    assert safe_mode.safe_limit_kw(SITE_A, [record]) == 6


def test_safe_mode_the_schedule_holds_then_the_safe_limit_then_back() -> None:
    log = openadr.signals(_safe_event(6), GAC_PROGRAM, SITES, RECEIVED) + openadr.signals(
        gac_event(), GAC_PROGRAM, SITES, RECEIVED)
    outage = T0 + timedelta(minutes=5)
    log += openadr.failure(SITES, envelope_ts(outage), "VTN unreachable: connection refused")
    entered = safe_mode.enter(SITE_A, log, outage, "VTN unreachable")
    assert entered is not None and entered["intervals"][0]["start"] == "2026-03-02T08:30:00.000Z"
    assert safe_mode.enter(SITE_B, log, outage, "VTN unreachable") is None  # no safe-mode limit: static
    log.append(entered)
    assert sites.limit_at(SITE_A, log, T0 + timedelta(minutes=20)).source == "openadr"  # the schedule holds
    after = sites.limit_at(SITE_A, log, T0 + timedelta(minutes=40))
    assert (after.source, after.import_kw) == ("safe-mode", 6)
    assert sites.limit_at(SITE_B, log, T0 + timedelta(minutes=40)).source == "static"
    log.append(safe_mode.leave(entered, T0 + timedelta(minutes=50)))
    assert sites.limit_at(SITE_A, log, T0 + timedelta(minutes=55)).source == "static"


def test_the_site_shows_the_next_changes_of_its_limit() -> None:
    """``next_intervals`` of ``GET /v1/sites/{id}``: where the limit in force changes next."""
    log = openadr.signals(gac_event(), GAC_PROGRAM, SITES, RECEIVED)
    outage = T0 + timedelta(minutes=5)
    entered = safe_mode.enter(SITE_A, log + openadr.signals(_safe_event(6), GAC_PROGRAM, SITES, RECEIVED), outage,
                              "VTN unreachable")  # fmt: skip
    assert entered is not None
    log.append(entered)
    limit = sites.limit_at(SITE_A, log, outage)
    assert [(n["start"], n["import_limit_kw"], n["limit_source"]) for n in sites.ahead(SITE_A, limit)] == [
        ("2026-03-02T08:15:00.000Z", 12.5, "openadr"), ("2026-03-02T08:30:00.000Z", 6.0, "safe-mode"),
        (envelope_ts(T0 + timedelta(minutes=30, days=365)), 30.0, "static")]  # fmt: skip
    assert sites.view(SITE_A, [], limit, None)["next_intervals"] == sites.ahead(SITE_A, limit)
    assert sites.ahead(SITE_A, sites.limit_at(SITE_A, [], T0)) == []


def envelope_ts(moment: datetime) -> str:
    from twin import envelope

    return envelope.iso_ms(moment.timestamp())


def test_prices_ahead_fill_the_gaps_with_the_mean() -> None:
    event = {"id": "pr", "programID": "p2", "payloadDescriptors": [{"payloadType": "PRICE", "currency": "EUR"}],
             "intervalPeriod": {"start": "2026-03-02T08:00:00Z", "duration": "PT1H"},
             "intervals": [{"id": 0, "payloads": [{"type": "PRICE", "values": [0.1]}]},
                           {"id": 1, "payloads": [{"type": "PRICE", "values": [0.5]}]}]}  # fmt: skip
    records = openadr.signals(copy.deepcopy(event), PRICE_PROGRAM, SITES, RECEIVED)
    assert len(records) == 2  # no targets: every site of this VEN
    assert sites.prices_ahead(SITE_A, records, T0, 3600, 3) == [0.1, 0.5, 0.3]
    assert sites.prices_ahead(SITE_A, [], T0, 3600, 3) is None
