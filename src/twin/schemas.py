"""Payload validation against the negotiated version's OCA JSON schema.

Validators are compiled with fastjsonschema on first use and cached per (version, action,
kind): compiling all 181 schemas of 2.1 takes seconds, validating one payload microseconds.
A violation comes back as the OCPP-J error code to answer with and a short reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from typing import Any, Literal

import fastjsonschema

from twin.messages import SEND_ONLY, actions, schema_dir, station_initiated

Kind = Literal["Request", "Response"]
Validator = Callable[[Any], Any]

# fastjsonschema's failing rule -> OCPP-J error code
_CODE_OF_RULE = {
    "type": "TypeConstraintViolation",
    "required": "OccurrenceConstraintViolation",
    "additionalProperties": "OccurrenceConstraintViolation",
    "minItems": "OccurrenceConstraintViolation",
    "maxItems": "OccurrenceConstraintViolation",
    "minProperties": "OccurrenceConstraintViolation",
}


class Violation(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


@cache
def schema(protocol: str, action: str, kind: Kind) -> dict[str, Any] | None:
    if action not in actions(protocol):
        return None
    name = action if action in SEND_ONLY else f"{action}{kind}"
    path = schema_dir(protocol) / f"{name}.json"
    if not path.is_file():
        return None
    with path.open() as f:
        document: dict[str, Any] = json.load(f)
    return document


@cache
def validator(protocol: str, action: str, kind: Kind) -> Validator | None:
    document = schema(protocol, action, kind)
    return None if document is None else _compile(document)


_FORMAT_LOCALS = re.compile(r'"((?:[^"\\]|\\.)*)"\.format\(\*\*locals\(\)\)')


def _compile(document: dict[str, Any]) -> Validator:
    """fastjsonschema's validator, its code rewritten in one respect: the name of every array
    item handed to a referenced definition (``data.meterValue[0]``, for error messages) is
    built with ``"...".format(**locals())``, a dict of the function's locals made for each
    item even when nothing fails; an f-string builds the same text without it (a
    TransactionEvent with four sampled values: about a quarter of its validation).

    use_default=False: fastjsonschema otherwise writes the schema's defaults into the payload
    it checks (a unitOfMeasure gained "multiplier": 0), and the capture must hold what the
    station sent, byte for byte in meaning."""
    try:
        resolver, generator = fastjsonschema._factory(document, {}, use_default=False)
        code = _FORMAT_LOCALS.sub(r'f"\1"', generator.func_code)
        state = generator.global_state
        exec(code, state)  # what fastjsonschema.compile does with the code it generated
        check: Validator = state[resolver.get_scope_name()]
    except (AttributeError, TypeError, SyntaxError):  # a fastjsonschema that generates otherwise
        check = fastjsonschema.compile(document, use_default=False)
    return check


def validate(protocol: str, action: str, kind: Kind, payload: Any) -> None:
    """Raises :class:`Violation` if ``payload`` is not valid; ``NotImplemented`` if the
    action does not exist in ``protocol``."""
    check = validator(protocol, action, kind)
    if check is None:
        raise Violation("NotImplemented", f"{action} is not an action of {protocol}")
    try:
        check(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        code = _CODE_OF_RULE.get(exc.rule or "", "PropertyConstraintViolation")
        where = ".".join(str(p) for p in (exc.path or [])[1:]) or "payload"
        raise Violation(code, f"{where}: {exc.message.removeprefix('data.').removeprefix('data ')}") from None


def problem(protocol: str, action: str | None, kind: Kind, payload: Any) -> Violation | None:
    """The violation, or None when the payload is valid."""
    if action is None:
        return Violation("ProtocolError", "no CALL with this message id is outstanding")
    try:
        validate(protocol, action, kind, payload)
    except Violation as v:
        return v
    return None


HOT = ("BootNotification", "Heartbeat", "StatusNotification", "TransactionEvent", "MeterValues", "Authorize")
"""What stations send most: compiled before the gateway serves (the first use of a cold
validator stalls its connection for tens of milliseconds)."""


def warm(only: tuple[str, ...] | None = None) -> int:
    """Compile the validators a station's frames need: its calls' requests and its answers
    to the CSMS's calls, in both versions (``only``: just these actions). Returns how many."""
    n = 0
    for protocol in ("ocpp2.1", "ocpp2.0.1"):
        for action in sorted(actions(protocol)):
            if only is None or action in only:
                n += validator(protocol, action, "Request" if station_initiated(action) else "Response") is not None
    return n
