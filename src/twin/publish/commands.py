"""OCPI 2.2.1 commands as OCPP 2.1 calls, and the stations' answers as OCPI CommandResults.

Pure: :func:`parse` checks a command body (pydantic models; an error names the field, for
OCPI status 2001), :func:`plan` decides whether a command goes to a station, and which call,
or is answered at once (an unknown EVSE: ``REJECTED``; an EVSE offline, Unavailable or
Faulted: ``EVSE_INOPERATIVE``; an expiry in the past, a reservation replayed or ended:
``REJECTED``); :func:`result` reads the station's answer.

The OCPI reservation id (a string, the eMSP's) becomes OCPP's ``ReserveNow.id`` (an
integer) by :func:`reservation_number`: a hash of the party and the id, so the same
reservation always has the same number, also after a restart, and the number leads back
to the party through the ReserveNow call's ``customData`` in the log.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from twin.publish import status as st
from twin.publish.locations import EvseRef

COMMANDS = ("RESERVE_NOW", "CANCEL_RESERVATION", "START_SESSION", "STOP_SESSION", "UNLOCK_CONNECTOR")
TOKEN_TYPES = {"RFID": "ISO14443", "APP_USER": "Central", "AD_HOC_USER": "Central", "OTHER": "Central"}


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")
    response_url: str = Field(min_length=1)


class Token(BaseModel):
    model_config = ConfigDict(extra="allow")
    country_code: str = Field(min_length=2, max_length=2)
    party_id: str = Field(min_length=3, max_length=3)
    uid: str = Field(min_length=1, max_length=36)
    type: Literal["AD_HOC_USER", "APP_USER", "OTHER", "RFID"]
    contract_id: str = Field(min_length=1, max_length=36)
    issuer: str = Field(max_length=64)
    valid: bool
    whitelist: Literal["ALWAYS", "ALLOWED", "ALLOWED_OFFLINE", "NEVER"]
    last_updated: datetime


class ReserveNow(_Body):
    response_url: str = Field(min_length=1)
    token: Token
    expiry_date: datetime
    reservation_id: str = Field(min_length=1, max_length=36)
    location_id: str = Field(min_length=1, max_length=36)
    evse_uid: str | None = Field(default=None, max_length=36)
    authorization_reference: str | None = Field(default=None, max_length=36)


class CancelReservation(_Body):
    response_url: str = Field(min_length=1)
    reservation_id: str = Field(min_length=1, max_length=36)


class StartSession(_Body):
    response_url: str = Field(min_length=1)
    token: Token
    location_id: str = Field(min_length=1, max_length=36)
    evse_uid: str | None = Field(default=None, max_length=36)
    connector_id: str | None = Field(default=None, max_length=36)
    authorization_reference: str | None = Field(default=None, max_length=36)


class StopSession(_Body):
    response_url: str = Field(min_length=1)
    session_id: str = Field(min_length=1, max_length=36)


class UnlockConnector(_Body):
    response_url: str = Field(min_length=1)
    location_id: str = Field(min_length=1, max_length=36)
    evse_uid: str = Field(min_length=1, max_length=36)
    connector_id: str = Field(min_length=1, max_length=36)


MODELS: dict[str, type[_Body]] = {"RESERVE_NOW": ReserveNow, "CANCEL_RESERVATION": CancelReservation,
                                  "START_SESSION": StartSession, "STOP_SESSION": StopSession,
                                  "UNLOCK_CONNECTOR": UnlockConnector}  # fmt: skip


class BodyError(ValueError):
    """What is wrong with a command body, field by field."""


def parse(command: str, body: Any) -> _Body:
    if not isinstance(body, dict):
        raise BodyError("the body is not a JSON object")
    try:
        return MODELS[command].model_validate(body)
    except ValidationError as exc:
        raise BodyError("; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                                  for e in exc.errors())) from None  # fmt: skip


def reservation_number(country_code: str, party_id: str, reservation_id: str) -> int:
    """OCPP's ``ReserveNow.id`` for an eMSP's reservation: a positive 31-bit integer."""
    return zlib.crc32(f"{country_code}*{party_id}:{reservation_id}".encode()) & 0x7FFFFFFF or 1


@dataclass(frozen=True)
class Plan:
    """A command's fate: a call to a station, or an answer now (``result`` set)."""

    station_id: str | None = None
    action: str | None = None
    payload: dict[str, Any] | None = None
    result: str | None = None  # a CommandResultType, answered without asking a station
    message: str = ""
    response: str = "ACCEPTED"  # the CommandResponseType


def _id_token(token: Token) -> dict[str, Any]:
    return {"idToken": token.uid, "type": TOKEN_TYPES.get(token.type, "Central")}


def _evse(refs: Mapping[tuple[str, str], EvseRef], location_id: str, evse_uid: str | None) -> EvseRef | None:
    if evse_uid is None:
        return next((r for (loc_id, _), r in sorted(refs.items()) if loc_id == location_id), None)
    return refs.get((location_id, evse_uid))


def _usable(ref: EvseRef, twins: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why an EVSE cannot take a command now, or None."""
    key = st.twin_status(twins.get(ref.station_id), str(ref.evse))
    if key in ("offline", "unknown"):
        return f"{ref.uid} is offline"
    if key in ("Unavailable", "Faulted"):
        return f"{ref.uid} is {key}"
    return None


def plan(command: str, body: _Body, party: tuple[str, str], refs: Mapping[tuple[str, str], EvseRef],
         twins: Mapping[str, Mapping[str, Any]], reservations: Mapping[int, Mapping[str, Any]],
         now: datetime) -> Plan:  # fmt: skip
    """What to do with a parsed command from ``party`` (its country code and party id).
    ``reservations``: the roaming reservations made so far, by OCPP id."""
    if isinstance(body, ReserveNow | StartSession | UnlockConnector):
        if not any(loc_id == body.location_id for loc_id, _ in refs):
            return Plan(response="REJECTED", message=f"unknown location {body.location_id!r}")
        ref = _evse(refs, body.location_id, body.evse_uid)
        if ref is None:
            return Plan(response="REJECTED", message=f"unknown EVSE {body.evse_uid!r} at {body.location_id}")
        why = _usable(ref, twins)
        if why is not None:
            return Plan(result="EVSE_INOPERATIVE", message=why)
        if isinstance(body, ReserveNow):
            return _reserve(body, party, ref, reservations, now)
        if isinstance(body, StartSession):
            remote = zlib.crc32(f"{party[0]}*{party[1]}:{body.token.uid}:{now.isoformat()}".encode()) & 0x7FFFFFFF
            return Plan(ref.station_id, "RequestStartTransaction",
                        {"idToken": _id_token(body.token), "evseId": ref.evse, "remoteStartId": remote or 1})
        return Plan(ref.station_id, "UnlockConnector", {"evseId": ref.evse, "connectorId": int(body.connector_id)
                                                        if body.connector_id.isdigit() else 1})  # fmt: skip
    if isinstance(body, CancelReservation):
        number = reservation_number(party[0], party[1], body.reservation_id)
        made = reservations.get(number)
        if made is None:
            return Plan(result="UNKNOWN_RESERVATION", message=f"no reservation {body.reservation_id!r} of yours")
        return Plan(str(made["station_id"]), "CancelReservation", {"reservationId": number})
    assert isinstance(body, StopSession)
    for station_id, twin in twins.items():
        for evse in (twin.get("evses") or {}).values():
            tx = evse.get("transaction") or {}
            if tx.get("id") == body.session_id and tx.get("state") != "ended":
                return Plan(station_id, "RequestStopTransaction", {"transactionId": body.session_id})
    return Plan(response="UNKNOWN_SESSION", message=f"no running session {body.session_id!r}")


def _reserve(body: ReserveNow, party: tuple[str, str], ref: EvseRef, reservations: Mapping[int, Mapping[str, Any]],
             now: datetime) -> Plan:  # fmt: skip
    expiry = body.expiry_date if body.expiry_date.tzinfo else body.expiry_date.replace(tzinfo=now.tzinfo)
    if expiry <= now:
        return Plan(response="REJECTED", message=f"expiry_date {body.expiry_date.isoformat()} is in the past")
    number = reservation_number(party[0], party[1], body.reservation_id)
    made = reservations.get(number)
    if made is not None and made.get("status") in ("used", "expired", "cancelled"):
        return Plan(response="REJECTED", message=f"reservation {body.reservation_id!r} is {made['status']}: "
                                                 "a new reservation needs a new id")  # fmt: skip
    if made is not None and made.get("body") == body.model_dump(mode="json", exclude={"response_url"}):
        return Plan(response="REJECTED", message=f"reservation {body.reservation_id!r} replayed: already made")
    # a known id with other details replaces the reservation (OCPI), as ReserveNow of the same id does (OCPP)
    return Plan(ref.station_id, "ReserveNow", {"id": number, "expiryDateTime": expiry.isoformat().replace(
        "+00:00", "Z"), "idToken": _id_token(body.token), "evseId": ref.evse})  # fmt: skip


RESULTS: dict[str, dict[str, str]] = {  # OCPP action -> its answer's status -> CommandResultType
    "ReserveNow": {"Accepted": "ACCEPTED", "Faulted": "EVSE_INOPERATIVE", "Occupied": "EVSE_OCCUPIED",
                   "Rejected": "REJECTED", "Unavailable": "EVSE_INOPERATIVE"},
    "CancelReservation": {"Accepted": "ACCEPTED", "Rejected": "UNKNOWN_RESERVATION"},
    "RequestStartTransaction": {"Accepted": "ACCEPTED", "Rejected": "REJECTED"},
    "RequestStopTransaction": {"Accepted": "ACCEPTED", "Rejected": "REJECTED"},
    "UnlockConnector": {"Unlocked": "ACCEPTED", "UnlockFailed": "FAILED", "OngoingAuthorizedTransaction": "REJECTED",
                        "UnknownConnector": "REJECTED"},
}  # fmt: skip


def result(action: str, outcome: str, answer: Mapping[str, Any] | None, reason: str | None) -> tuple[str, str]:
    """``(CommandResultType, message)`` for a call's outcome: ``answered`` (with the answer),
    ``error`` (a CALLERROR), ``undelivered``, ``timeout``."""
    if outcome == "answered" and answer is not None:
        status = str(answer.get("status"))
        info = (answer.get("statusInfo") or {}).get("reasonCode")
        return RESULTS.get(action, {}).get(status, "FAILED"), f"{action}: {status}" + (f" ({info})" if info else "")
    if outcome == "timeout":
        return "TIMEOUT", f"{action}: the station did not answer ({reason})"
    if outcome == "undelivered":
        return "EVSE_INOPERATIVE", f"{action} not delivered: {reason}"
    return "FAILED", f"{action}: {reason}"
