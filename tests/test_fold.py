"""The fold, scenario by scenario, and its properties: pure, deterministic, idempotent under
redelivery, never raising."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.scenarios import Script
from twin import ocpp_j
from twin.fold import apply, fold, folded_actions, new_twin, public


def subset(actual: dict[str, Any], **expected: Any) -> bool:
    """``actual`` has at least these fields with these values."""
    return {k: actual.get(k) for k in expected} == expected


def twin_of(script: Script) -> dict[str, Any]:
    return public(fold(script.records)[script.station])


@pytest.mark.parametrize("protocol", ["ocpp2.1", "ocpp2.0.1"])
def test_identity_connectivity_and_status(protocol: str) -> None:
    s = Script("CS-1", protocol).connect(profile=1).boot().status(1, "Available").status(2, "Faulted")
    t = twin_of(s)
    assert t["protocol"] == protocol and t["frames_folded"] == len(s.records)
    assert subset(
        t["identity"],
        vendor="Acme", model="DC-150", serial_number="SN-1", firmware_version="1.2.3",
        boot_reason="PowerUp", boot_status="Accepted",
    )  # fmt: skip
    assert t["identity"]["booted_at"] == s.records[2]["ts"]  # the Accepted answer
    assert t["connection"]["online"] and t["connection"]["connected_since"] == s.records[0]["ts"]
    assert t["security"]["profile"] == 1
    assert t["evses"]["1"]["status"] == "Available" and t["evses"]["2"]["status"] == "Faulted"
    assert t["evses"]["2"]["connectors"]["1"] == {"status": "Faulted", "since": s.records[-2]["payload"]["timestamp"]}
    s.at(30).disconnect()
    t = twin_of(s)
    assert not t["connection"]["online"] and t["connection"]["last_seen"] == s.records[-1]["ts"]
    assert t["as_of"] == s.records[-1]["ts"]


def test_a_v2g_session_switches_from_charging_to_discharging() -> None:
    s = Script("CS-V2G").connect().boot()
    s.at(1).tx("Started", "T1", 0, imp=1000, exp=500, p_imp=0, chargingState="EVConnected")
    s.at(2).tx("Updated", "T1", 1, imp=1300, exp=500, p_imp=11000, chargingState="Charging")
    charging = twin_of(s)["evses"]["1"]
    assert charging["energy"]["direction"] == "charging" and charging["energy"]["power_w"] == 11000
    s.at(10).tx("Updated", "T1", 2, imp=1300, exp=900, p_exp=7000, operationMode="CentralSetpoint")
    t = twin_of(s)["evses"]["1"]
    assert t["energy"] | {} == {
        **t["energy"],
        "direction": "discharging",
        "import_wh": 1300,
        "export_wh": 900,
        "power_w": -7000,
    }
    assert t["energy"]["since"] == s.records[-2]["payload"]["timestamp"]
    assert t["transaction"]["import_wh"] == 300 and t["transaction"]["export_wh"] == 400
    assert t["transaction"]["operation_mode"] == "CentralSetpoint"
    s.at(20).tx("Ended", "T1", 3, imp=1300, exp=950, stoppedReason="EVDisconnected")
    t = twin_of(s)["evses"]["1"]
    assert t["energy"]["direction"] == "idle" and t["transaction"]["state"] == "ended"
    assert t["transaction"]["stopped_reason"] == "EVDisconnected" and t["transaction"]["export_wh"] == 450


def test_seq_no_gaps_and_offline_replays() -> None:
    s = Script("CS-OFF").connect()
    s.at(0).tx("Started", "T9", 0, imp=0)
    s.at(5).tx("Updated", "T9", 3, imp=500, p_imp=6000)  # 1 and 2 never came
    s.at(6).tx("Updated", "T9", 1, imp=200, offline=True, ts=Script("x").at(1).now)  # replayed late
    t = twin_of(s)["evses"]["1"]
    assert t["transaction"]["seq_gaps"] == 2 and t["transaction"]["seq_no"] == 3
    assert t["transaction"]["offline_events"] == 1
    assert t["energy"]["import_wh"] == 500, "a late reading does not move the present backwards"
    assert t["transaction"]["import_wh"] == 500


def test_transaction_events_without_evse_find_their_transaction() -> None:
    s = Script("CS-201", "ocpp2.0.1").connect()
    s.tx("Started", "T2", 0, evse=2, imp=100).tx("Updated", "T2", 1, evse=None, imp=400, p_imp=7000)
    t = twin_of(s)["evses"]["2"]
    assert t["transaction"]["import_wh"] == 300 and t["energy"]["direction"] == "charging"


def test_a_reservation_used_by_a_transaction_and_one_that_expires() -> None:
    s = Script("CS-R").connect().boot()
    reserve = {
        "id": 7,
        "expiryDateTime": "2026-03-01T09:00:00Z",
        "idToken": {"idToken": "TAG1", "type": "ISO14443"},
        "evseId": 1,
    }
    s.at(1).csms("ReserveNow", reserve, {"status": "Accepted"})
    s.at(1).csms("ReserveNow", {**reserve, "id": 8}, {"status": "Accepted"})
    s.at(2).csms("ReserveNow", {**reserve, "id": 9}, {"status": "Occupied"})
    s.at(3).csms("ReserveNow", {**reserve, "id": 10}, {"status": "Accepted"})
    r = twin_of(s)["reservations"]
    assert (
        r["7"]["status"] == "active"
        and r["7"]["id_token"] == "TAG1"
        and r["7"]["expires_at"] == reserve["expiryDateTime"]
    )
    assert r["9"]["status"] == "rejected"
    s.at(10).tx("Started", "T7", 0, imp=0, reservation=7)
    s.at(61).cs("ReservationStatusUpdate", {"reservationId": 8, "reservationUpdateStatus": "Expired"})
    s.at(62).csms("CancelReservation", {"reservationId": 10}, {"status": "Accepted"})
    t = twin_of(s)
    r = t["reservations"]
    assert r["7"]["status"] == "used" and r["7"]["transaction_id"] == "T7"
    assert r["8"]["status"] == "expired" and r["10"]["status"] == "cancelled"
    assert t["evses"]["1"]["transaction"]["reservation_id"] == 7


def test_a_csms_call_takes_effect_on_its_accepted_answer_only() -> None:
    profile = {"evseId": 1, "chargingProfile": {"id": 3, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
               "chargingProfileKind": "Absolute", "chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
               "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000, "dischargeLimit": -7000,
                                           "operationMode": "ExternalLimits"}]}]}}  # fmt: skip
    s = Script("CS-P").connect()
    s.csms("SetChargingProfile", profile, {"status": "Rejected", "statusInfo": {"reasonCode": "NoV2X"}})
    evse = twin_of(s)["evses"]["1"]
    assert "profiles" not in evse  # not in force
    assert evse["profile_status"] | {"answered_at": None} == {"status": "Rejected", "profile_id": 3,
                                                              "reason": "NoV2X", "answered_at": None,
                                                              "transaction_id": None}  # fmt: skip
    s.csms("SetChargingProfile", profile, {"status": "Accepted"})
    assert twin_of(s)["evses"]["1"]["profile_status"]["status"] == "Accepted"
    p = twin_of(s)["evses"]["1"]["profiles"]["3"]
    assert p | {} == {
        **p,
        "purpose": "TxProfile",
        "stack_level": 1,
        "operation_mode": "ExternalLimits",
        "discharge": True,
    }
    s.csms("ClearChargingProfile", {"chargingProfileId": 3}, {"status": "Accepted"})
    assert twin_of(s)["evses"]["1"]["profiles"] == {}


def test_monitoring_set_up_and_an_event_raised() -> None:
    s = Script("CS-M").connect()
    s.csms("SetMonitoringBase", {"monitoringBase": "FactoryDefault"}, {"status": "Accepted"})
    s.csms("SetVariableMonitoring",
           {"setMonitoringData": [{"value": 60, "type": "UpperThreshold", "severity": 2,
                                   "component": {"name": "EVSE"}, "variable": {"name": "Temperature"}}]},
           {"setMonitoringResult": [{"id": 4, "status": "Accepted", "type": "UpperThreshold", "severity": 2,
                                     "component": {"name": "EVSE"}, "variable": {"name": "Temperature"}}]})  # fmt: skip
    alert = {
        "eventId": 1, "timestamp": s.now, "trigger": "Alerting", "actualValue": "71",
        "eventNotificationType": "CustomMonitor", "component": {"name": "EVSE"},
        "variable": {"name": "Temperature"}, "severity": 2, "variableMonitoringId": 4,
    }  # fmt: skip
    s.cs("NotifyEvent", {"generatedAt": s.now, "seqNo": 0, "eventData": [alert]})
    m = twin_of(s)["monitoring"]
    assert m["base"] == "FactoryDefault"
    assert subset(m["monitors"]["4"], variable="EVSE.Temperature", value=60, severity=2)
    assert m["last_event"]["actual_value"] == "71" and m["last_event"]["severity"] == 2 and m["events"] == 1


def test_charging_needs_certificates_security_firmware_tariffs_der() -> None:
    s = Script("CS-X").connect()
    needs = {
        "requestedEnergyTransfer": "DC_BPT", "controlMode": "DynamicControl",
        "v2xChargingParameters": {"maxDischargePower": 10000, "targetSoC": 80},
    }  # fmt: skip
    s.cs("NotifyEVChargingNeeds", {"evseId": 1, "chargingNeeds": needs}, {"status": "Accepted"})
    certificate = {"iso15118SchemaVersion": "urn:iso:std:iso:15118:-20:AC", "action": "Install", "exiRequest": "AA=="}
    s.cs("Get15118EVCertificate", certificate, {"status": "Accepted", "exiResponse": "BB=="})
    s.cs("SecurityEventNotification", {"type": "InvalidCsmsCertificate", "timestamp": s.now})
    s.cs("FirmwareStatusNotification", {"status": "Installed", "requestId": 3})
    s.csms("SetDefaultTariff", {"evseId": 1, "tariff": {"tariffId": "T-A", "currency": "EUR"}}, {"status": "Accepted"})
    s.cs("NotifyDERAlarm", {"controlType": "FreqDroop", "timestamp": s.now})
    t = twin_of(s)
    needs = t["evses"]["1"]["charging_needs"]
    assert needs["bidirectional"] and needs["v2x"]["maxDischargePower"] == 10000 and needs["status"] == "Accepted"
    assert subset(
        t["certificates"]["iso15118"],
        last_action="Install", last_status="Accepted", schema_version="urn:iso:std:iso:15118:-20:AC",
    )  # fmt: skip
    assert t["security"]["events"] == 1 and t["security"]["last_event"]["type"] == "InvalidCsmsCertificate"
    assert t["firmware"]["status"] == "Installed"
    assert t["tariffs"]["default"]["1"]["currency"] == "EUR"
    assert t["der"]["alarms"] == 1


def test_invalid_frames_are_counted_and_otherwise_ignored() -> None:
    s = Script("CS-I").connect()
    s._frame(
        __import__("twin.ocpp_j", fromlist=["x"]).call("bad", "BootNotification", {"reason": "Nope"}),
        "cs",
        error="bad enum",
    )
    t = twin_of(s)
    assert t["invalid_frames"] == 1 and t["identity"] == {}


def test_the_fold_covers_the_seven_flows_of_the_product_page() -> None:
    assert {"BootNotification", "TransactionEvent", "NotifyEVChargingNeeds", "SetChargingProfile",
            "Get15118EVCertificate", "ReservationStatusUpdate", "SetMonitoringBase"} <= folded_actions()  # fmt: skip


# -- properties ---------------------------------------------------------------------------


def _scenario() -> list[dict[str, Any]]:
    s = Script("CS-H").connect().boot().status(1, "Available")
    s.tx("Started", "T1", 0, imp=0).tx("Updated", "T1", 1, imp=100, p_imp=5000).tx(
        "Updated", "T1", 2, exp=50, p_exp=3000
    )
    s.csms(
        "ReserveNow",
        {"id": 1, "expiryDateTime": "2026-03-01T09:00:00Z", "idToken": {"idToken": "A", "type": "Central"}},
        {"status": "Accepted"},
    )
    s.cs("ReservationStatusUpdate", {"reservationId": 1, "reservationUpdateStatus": "Expired"})
    s.disconnect().connect().boot(reason="Watchdog")
    return s.records


SCENARIO = _scenario()


@given(st.lists(st.integers(min_value=0, max_value=len(SCENARIO) - 1), max_size=40))
@settings(max_examples=200)
def test_redelivered_records_change_nothing(redeliver: list[int]) -> None:
    """At-least-once delivery: any record again, anywhere after it, is a no-op."""
    stream: list[dict[str, Any]] = []
    for i, record in enumerate(SCENARIO):
        stream.append(record)
        stream.extend(SCENARIO[j] for j in redeliver if j <= i)
    assert fold(stream) == fold(SCENARIO)


def _heartbeat(conn: int, seq: int) -> dict[str, Any]:
    return {"station_id": "CS-R", "origin": "cs", "msg_type": 2, "msg_id": f"{conn}:{seq}", "action": "Heartbeat",
            "payload": {}, "ts": "2026-03-01T08:00:00.000Z", "conn_id": f"c{conn}", "seq": seq}  # fmt: skip


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=15), st.integers(min_value=1, max_value=8)), max_size=80))
@settings(max_examples=200)
def test_redelivery_is_known_on_each_of_the_last_sixteen_connections(steps: list[tuple[int, int]]) -> None:
    """Connections taking turns (a reconnect while the old connection's last records still
    come, a redelivery of an old connection's records): a record folds if and only if its
    seq is above the highest folded on its connection, whichever connection came last."""
    highest: dict[int, int] = {}
    folded = 0
    twin = None
    for conn, seq in steps:
        folded += seq > highest.get(conn, 0)
        highest[conn] = max(seq, highest.get(conn, 0))
        twin = apply(twin, _heartbeat(conn, seq))
    assert (twin or {}).get("frames_folded", 0) == folded


def test_records_without_a_usable_connection_or_seq_are_counted_and_break_nothing() -> None:
    """Records no gateway writes, found by a reviewer: a null connection whose seq is no number
    keeps its mark; a connection id that is no dict key (a list) is counted as a fold error
    and marks nothing, so the next records fold."""
    twin = None
    for record in (_heartbeat(0, 1) | {"conn_id": None, "seq": ""}, _heartbeat(1, 1),
                   _heartbeat(0, 5) | {"conn_id": None}):  # fmt: skip
        twin = apply(twin, record)
    assert twin is not None and (twin["frames_folded"], twin["fold_errors"]) == (1, 2)
    twin = apply(apply(None, _heartbeat(0, 1) | {"conn_id": [1]}), _heartbeat(1, 1))
    assert (twin["frames_folded"], twin["fold_errors"]) == (1, 1)
    assert apply(twin, _heartbeat(2, 1))["frames_folded"] == 2


def test_the_earliest_connections_are_let_go_past_sixteen() -> None:
    twin = None
    for conn in range(20):
        twin = apply(twin, _heartbeat(conn, 5))
    assert twin is not None and twin["frames_folded"] == 20
    again = [apply(twin, _heartbeat(conn, 5))["frames_folded"] for conn in range(20)]
    assert again == [21] * 4 + [20] * 16  # c0..c3 forgotten: folded again; the last 16 known


def test_a_twin_folded_before_its_current_connection_was_kept_apart_folds_on_alike() -> None:
    """A twin stored by an older twin (every connection's highest seq in ``_seen``, no
    ``_conn``/``_seq``: the live worker's table after an upgrade) knows its redeliveries and
    folds the rest to the same twin."""
    half = len(SCENARIO) // 2
    twin = fold(SCENARIO[:half])["CS-H"]
    old = {k: v for k, v in twin.items() if k not in ("_conn", "_seq")}
    old["_seen"] = {**twin["_seen"], twin["_conn"]: twin["_seq"]}
    rest = SCENARIO[half - 5 :]  # five redelivered
    assert public(fold(rest, {"CS-H": old})["CS-H"]) == public(fold(SCENARIO)["CS-H"])


PAYLOAD_KEYS = [
    "evseId", "status", "chargingNeeds", "meterValue", "eventData", "transactionInfo", "reservationId", "evse", "id",
]  # fmt: skip
VALUES = st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)  # fmt: skip
records_strategy = st.fixed_dictionaries({
    "station_id": st.just("CS-F"),
    "origin": st.sampled_from(["cs", "csms", "gateway", "x"]),
    "msg_type": st.sampled_from([0, 2, 3, 4, 5, 6, 9]),
    "msg_id": st.sampled_from(["a", "b", "c"]),
    "action": st.sampled_from(sorted(folded_actions()) + ["Connected", "Disconnected", None, "Nope"]),
    "payload": st.dictionaries(st.sampled_from(PAYLOAD_KEYS), VALUES, max_size=4),
    "ts": st.sampled_from(["2026-03-01T08:00:00.000Z", "garbage", ""]),
    "protocol": st.sampled_from(["ocpp2.1", "ocpp2.0.1", ""]),
    "conn_id": st.sampled_from(["c1", "c2"]),
    "seq": st.integers(min_value=0, max_value=50),
    "valid": st.booleans(),
    "error": st.none(),
})  # fmt: skip


@given(st.lists(records_strategy, max_size=30))
@settings(max_examples=300)
def test_the_fold_never_raises_is_deterministic_and_pure(records: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(records)
    first = fold(records)
    assert fold(records) == first
    assert records == before, "records are not changed"
    twin = new_twin("CS-F")
    frozen = copy.deepcopy(twin)
    for record in records:
        nxt = apply(twin, record)
        assert twin == frozen, "apply does not change the twin it was given"
        twin, frozen = nxt, copy.deepcopy(nxt)
    json.dumps(public(twin))  # a twin is JSON


@given(
    st.lists(
        st.one_of(st.none(), st.integers(), st.text(), st.dictionaries(st.text(max_size=4), st.text(max_size=4))),
        max_size=5,
    )
)
def test_the_fold_survives_records_that_are_not_records(junk: list[Any]) -> None:
    twin = None
    for item in junk:
        twin = apply(twin, item if isinstance(item, dict) else {"station_id": "CS-J", "value": item})
    assert twin is None or twin["fold_errors"] >= 0


def test_a_profile_the_station_never_answered_or_refused_is_the_evses_profile_status() -> None:
    """The controller plans around an EVSE that does not obey: the twin says why."""
    profile = {"evseId": 2, "chargingProfile": {"id": 9, "stackLevel": 5, "chargingProfilePurpose": "TxProfile",
               "chargingProfileKind": "Relative", "chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
               "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7000}]}]}}  # fmt: skip
    s = Script("CS-T").connect()
    s._frame(ocpp_j.call("t1", "SetChargingProfile", profile), "csms")
    s.lifecycle("CallTimeout", {"msg_id": "t1", "action": "SetChargingProfile", "timeout_s": 60, "command_id": "c"})
    twin = twin_of(s)
    assert twin["evses"]["2"]["profile_status"]["status"] == "Timeout"
    assert fold(s.records)["CS-T"]["_pending"] == {}  # the call is over
    s._frame(ocpp_j.call("t2", "SetChargingProfile", profile), "csms")
    s._frame(ocpp_j.Frame(4, "t2", "SetChargingProfile", {"errorCode": "NotSupported", "errorDescription": "",
                                                          "errorDetails": {}}), "cs")  # fmt: skip
    assert twin_of(s)["evses"]["2"]["profile_status"] | {"answered_at": None} == {
        "status": "Error", "profile_id": 9, "reason": "NotSupported", "answered_at": None, "transaction_id": None}


def test_a_reservation_made_for_a_roaming_party_says_whose_it_is() -> None:
    """twin ocpi tags the ReserveNow it sends with the eMSP and its OCPI reservation id."""
    reserve = {"id": 42, "expiryDateTime": "2026-03-01T09:00:00Z", "evseId": 1,
               "idToken": {"idToken": "DE8ACC12E46L89", "type": "eMAID"},
               "customData": {"vendorId": "org.twin", "commandId": "c1", "ocpi": {
                   "party": "DE*EMS", "command": "RESERVE_NOW", "reservation_id": "R-7"}}}  # fmt: skip
    s = Script("CS-R").connect().csms("ReserveNow", reserve, {"status": "Accepted"})
    s.csms("ReserveNow", {**reserve, "id": 43, "customData": None}, {"status": "Accepted"})
    reservations = twin_of(s)["reservations"]
    assert reservations["42"]["roaming"] == {"party": "DE*EMS", "command": "RESERVE_NOW", "reservation_id": "R-7"}
    assert reservations["43"]["roaming"] is None  # the operator's own
