"""The pure parts of publishing, without a broker: the command decisions (an unknown, offline
or faulted EVSE, expired, replayed and ended reservations, the reservation number), the
results of answers and of silence, and the Art. 20 check per pool."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from twin.publish import commands as cmds
from twin.publish import locations as loc
from twin.publish.afir import art20
from twin.simulator.fleet import inventory

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PARTY = ("DE", "EMS")
TOKEN = {"country_code": "DE", "party_id": "EMS", "uid": "TOK-1", "type": "RFID", "contract_id": "DE-EMS-1",
         "issuer": "EMS", "valid": True, "whitelist": "ALLOWED", "last_updated": "2026-03-01T00:00:00Z"}  # fmt: skip


@pytest.fixture()
def fleet() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    rows = inventory(4, 1)
    twins = {r["station_id"]: {"connection": {"online": True},
                               "evses": {str(n): {"status": "Available"} for n in range(1, r["evses"] + 1)}}
             for r in rows}  # fmt: skip
    return rows, twins


def _reserve(rows: list[dict[str, Any]], **over: Any) -> cmds._Body:
    body = {"response_url": "http://emsp/r", "token": TOKEN, "expiry_date": (NOW + timedelta(hours=1)).isoformat(),
            "reservation_id": "R1", "location_id": rows[0]["pool_id"], "evse_uid": f"{rows[0]['station_id']}*1",
            **over}  # fmt: skip
    return cmds.parse("RESERVE_NOW", body)


def test_a_reservation_becomes_reserve_now_with_a_stable_integer_id(fleet: Any) -> None:
    rows, twins = fleet
    plan = cmds.plan("RESERVE_NOW", _reserve(rows), PARTY, loc.index(rows), twins, {}, NOW)
    assert (plan.station_id, plan.action) == (rows[0]["station_id"], "ReserveNow")
    assert plan.payload is not None and plan.payload["id"] == cmds.reservation_number("DE", "EMS", "R1")
    assert plan.payload["idToken"] == {"idToken": "TOK-1", "type": "ISO14443"} and plan.payload["evseId"] == 1
    assert cmds.reservation_number("DE", "EMS", "R1") != cmds.reservation_number("NL", "EMS", "R1")


@pytest.mark.parametrize("status,online", [("Faulted", True), ("Unavailable", True), ("Available", False)])
def test_an_inoperative_or_offline_evse_is_answered_at_once(fleet: Any, status: str, online: bool) -> None:
    rows, twins = fleet
    twins = copy.deepcopy(twins)
    twin = twins[rows[0]["station_id"]]
    twin["evses"]["1"]["status"], twin["connection"]["online"] = status, online
    plan = cmds.plan("RESERVE_NOW", _reserve(rows), PARTY, loc.index(rows), twins, {}, NOW)
    assert plan.station_id is None and plan.result == "EVSE_INOPERATIVE"


def test_unknown_evse_expired_replayed_and_ended_reservations_are_rejected(fleet: Any) -> None:
    rows, twins = fleet
    refs = loc.index(rows)
    nowhere = cmds.plan("RESERVE_NOW", _reserve(rows, evse_uid="CS-09999*1"), PARTY, refs, twins, {}, NOW)
    assert nowhere.response == "REJECTED" and nowhere.station_id is None
    past = cmds.plan("RESERVE_NOW", _reserve(rows, expiry_date="2026-03-02T11:00:00Z"), PARTY, refs, twins, {}, NOW)
    assert past.response == "REJECTED" and "past" in past.message
    body = _reserve(rows)
    made = {cmds.reservation_number("DE", "EMS", "R1"): {"status": "active", "station_id": rows[0]["station_id"],
                                                         "body": body.model_dump(mode="json",
                                                                                 exclude={"response_url"})}}
    assert "replayed" in cmds.plan("RESERVE_NOW", body, PARTY, refs, twins, made, NOW).message
    changed = cmds.plan("RESERVE_NOW", _reserve(rows, evse_uid=None), PARTY, refs, twins, made, NOW)
    assert changed.action == "ReserveNow"  # the same id with other details replaces it (OCPI)
    for ended in ("used", "expired", "cancelled"):
        gone = {k: {**v, "status": ended} for k, v in made.items()}
        assert ended in cmds.plan("RESERVE_NOW", body, PARTY, refs, twins, gone, NOW).message
    cancel = cmds.parse("CANCEL_RESERVATION", {"response_url": "http://emsp/c", "reservation_id": "R-NONE"})
    assert cmds.plan("CANCEL_RESERVATION", cancel, PARTY, refs, twins, made, NOW).result == "UNKNOWN_RESERVATION"


def test_a_malformed_body_names_each_field() -> None:
    with pytest.raises(cmds.BodyError) as caught:
        cmds.parse("START_SESSION", {"response_url": "http://emsp/s", "token": {"uid": "x"}})
    text = str(caught.value)
    assert "location_id" in text and "token.type" in text
    with pytest.raises(cmds.BodyError):
        cmds.parse("STOP_SESSION", ["not", "an", "object"])


def test_answers_and_silence_as_command_results() -> None:
    assert cmds.result("ReserveNow", "answered", {"status": "Occupied"}, None)[0] == "EVSE_OCCUPIED"
    assert cmds.result("UnlockConnector", "answered", {"status": "UnlockFailed"}, None)[0] == "FAILED"
    assert cmds.result("RequestStartTransaction", "timeout", None, "no answer in 60 s")[0] == "TIMEOUT"
    assert cmds.result("ReserveNow", "undelivered", None, "station not connected")[0] == "EVSE_INOPERATIVE"
    assert cmds.result("ReserveNow", "error", None, "NotImplemented: x")[0] == "FAILED"


def test_art20_passes_with_the_inventory_and_a_price_on_every_evse() -> None:
    rows = inventory(4, 1)
    pool = [r for r in rows if r["pool_id"] == rows[0]["pool_id"]]
    stations = [r["station_id"] for r in pool]
    priced = {(s, "0"): [{"tariffId": "T"}] for s in stations}
    assert art20(pool, stations, priced)["result"] == "pass"
    unpriced = art20(pool, stations, {k: v for k, v in priced.items() if k[0] != stations[0]})
    assert unpriced["result"] == "fail" and f"{stations[0]}: ad hoc price" in unpriced["why"]
    bare = [{k: v for k, v in r.items() if k not in ("address", "operator")} for r in pool]
    assert "address, operator" in art20(bare, stations, priced)["why"]
    assert art20([], stations, priced)["result"] == "unknown"


# -- whose a Session or CDR is, and who is sent it ---------------------------------------------------


def _rows() -> list[dict[str, Any]]:
    row = {"station_id": "CS-00001", "evse_id": 1, "ended_at": "2026-03-02T11:00:00.000Z", "energy_kwh": 10.0,
           "cost": 5.9, "currency": "EUR"}  # fmt: skip
    return [{**row, "transaction_id": "TX-CMD", "started_at": "2026-03-02T10:00:00.000Z", "id_token": "APP-9"},
            {**row, "transaction_id": "TX-RFID", "started_at": "2026-03-02T10:01:00.000Z", "id_token": "TOK-1"},
            {**row, "transaction_id": "TX-OTH", "started_at": "2026-03-02T10:02:00.000Z", "id_token": "OTH-1"},
            {**row, "transaction_id": "TX-OURS", "started_at": "2026-03-02T10:03:00.000Z", "id_token": "LOCAL-7",
             "updated_at": "2026-03-02T11:00:00.000Z"}]  # fmt: skip


def _objects(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from twin.publish import sessions as sess
    from twin.publish.party import Party

    rows = [{**r, "updated_at": r["ended_at"]} for r in rows]
    started = {"TX-CMD": {**TOKEN, "uid": "APP-9"}}
    tokens = {"TOK-1": TOKEN, "OTH-1": {**TOKEN, "country_code": "FR", "party_id": "OTH", "uid": "OTH-1"}}
    roaming = sess.roaming(rows, started, tokens)
    inventory_rows = inventory(2, 1)
    return sess.sessions(Party(), rows, inventory_rows, roaming), sess.cdrs(Party(), rows, inventory_rows, roaming)


def test_a_session_is_the_emsps_whose_token_started_or_authorised_it() -> None:
    from twin.publish.sessions import owner

    sessions, cdrs = _objects(_rows())
    by_id = {s["id"]: s for s in sessions}
    assert {i: owner(s) for i, s in by_id.items()} == {"TX-CMD": "DE*EMS", "TX-RFID": "DE*EMS", "TX-OTH": "FR*OTH",
                                                       "TX-OURS": "NL*TWN"}  # fmt: skip
    assert by_id["TX-CMD"]["auth_method"] == "COMMAND" and by_id["TX-RFID"]["auth_method"] == "WHITELIST"
    assert by_id["TX-OURS"]["auth_method"] == "AUTH_REQUEST"
    assert [owner(c) for c in cdrs] == [owner(by_id[c["id"]]) for c in cdrs]


def test_each_emsp_is_sent_its_own_sessions_and_cdrs_once(tmp_path: Any) -> None:
    from twin.publish.deliver import Deliveries
    from twin.publish.party import Party

    def party(cc: str, pid: str) -> dict[str, Any]:
        base = f"http://{pid.lower()}/ocpi/2.2.1"
        return {"country_code": cc, "party_id": pid, "token_b": f"b-{pid}", "url": f"http://{pid.lower()}/versions",
                "endpoints": {"sessions:RECEIVER": f"{base}/sessions", "cdrs:RECEIVER": f"{base}/cdrs"}}  # fmt: skip

    parties = [party("DE", "EMS"), party("FR", "OTH"), party("BE", "NON")]
    sessions, cdrs = _objects(_rows())
    out = Deliveries(Party(), tmp_path / "cdrs-taken.jsonl")
    out.plan(parties, sessions, cdrs)
    sent = {k: [(p.method, p.url, p.body["id"]) for p in o.queue] for k, o in out.outboxes.items()}
    assert sent["DE*EMS"] == [("PUT", "http://ems/ocpi/2.2.1/sessions/NL/TWN/TX-CMD", "TX-CMD"),
                              ("PUT", "http://ems/ocpi/2.2.1/sessions/NL/TWN/TX-RFID", "TX-RFID"),
                              ("POST", "http://ems/ocpi/2.2.1/cdrs", "TX-CMD"),
                              ("POST", "http://ems/ocpi/2.2.1/cdrs", "TX-RFID")]  # fmt: skip
    assert [i for _, _, i in sent["FR*OTH"]] == ["TX-OTH", "TX-OTH"] and sent["BE*NON"] == []
    out.plan(parties, sessions, cdrs)  # nothing new: nothing more
    assert len(out.outboxes["DE*EMS"].queue) == 4
    for push in out.outboxes["DE*EMS"].queue:  # DE*EMS takes them
        if push.then is not None:
            push.then()
    again = Deliveries(Party(), tmp_path / "cdrs-taken.jsonl")  # a restart: Sessions PUT again, no CDR twice
    again.plan(parties[:1], sessions, cdrs)
    assert [p.method for p in again.outboxes["DE*EMS"].queue] == ["PUT", "PUT"]
    assert set(again.outboxes) == {"DE*EMS"}
    moved = [{**s, "last_updated": "2026-03-02T12:00:00.000Z"} if s["id"] == "TX-CMD" else s for s in sessions]
    again.plan(parties[:1], moved, cdrs)  # a Session that changed is PUT again
    assert [p.url.rsplit("/", 1)[1] for p in again.outboxes["DE*EMS"].queue] == ["TX-CMD", "TX-RFID", "TX-CMD"]
