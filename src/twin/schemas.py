"""Payload validation against the negotiated version's OCA JSON schema.

Validators are compiled on first use and cached per (version, action, kind): compiling all
181 schemas of 2.1 takes seconds, validating one payload microseconds. A violation comes
back as the OCPP-J error code to answer with and a short reason.

Two validators a schema, one verdict: jsonschema-rs (compiled Rust) says whether a payload is
valid, and fastjsonschema (generated Python) judges any payload it does not pass, so that a
violation is fastjsonschema's, its error and message as they always were. A bench's
TransactionEvent takes about 2.3 µs instead of 8. This holds because every payload
jsonschema-rs passes, fastjsonschema passes too (``tests/test_schemas.py`` compares them on
full, minimal and mutated payloads of every schema). For that, jsonschema-rs tests a format
with fastjsonschema's own pattern, not its own reader, which passed ``2026-0*-01T08:00:00Z``
as a date-time; with ASCII digits only, it is stricter than fastjsonschema's ``\\d`` (Arabic-
Indic digits), and fastjsonschema then has the last word.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from typing import Any, Literal

import fastjsonschema
import jsonschema_rs

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


_FORMAT_LOCALS = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"\.format\(\*\*locals\(\)\)')
_STR = r"'(?:[^'\\]|\\.)*'"
_STRING_ENUM = re.compile(
    rf"if not \((isinstance\((\w+), str\) and \2 == {_STR}(?: or isinstance\(\2, str\) and \2 == {_STR})*)\):"
)
"""fastjsonschema's test of an enum of strings: ``isinstance(data, str) and data == 'A' or
isinstance(data, str) and data == 'B' or ...``, one after the other."""


def _string_enum(match: re.Match[str]) -> str:
    var = match[2]
    values = re.findall(_STR, match[1])
    return f"if not (isinstance({var}, str) and {var} in {{{', '.join(values)}}}):"


_REQUIRED = re.compile(rf"^( +)(\w+)__missing_keys = set\(\[((?:{_STR}(?:, )?)+)\]\) - \2\.keys\(\)", re.M)
"""fastjsonschema's required properties: ``set([...]) - data.keys()`` on a dict, a set made
and a set difference through the keys view each time."""


_KEYS = re.compile(r"^( +)(\w+)_keys = set\(\2\.keys\(\)\)", re.M)
"""fastjsonschema's copy of a dict's keys, to find properties it does not allow."""


def _required(match: re.Match[str]) -> str:
    indent, var, names = match[1], match[2], match[3]
    present = " and ".join(f"{name} in {var}" for name in re.findall(_STR, names))
    return f"{indent}{var}__missing_keys = () if {present} else set([{names}]) - {var}.keys()"


def _compile(document: dict[str, Any]) -> Validator:
    """The schema's validator: jsonschema-rs's verdict where it passes the payload, else
    fastjsonschema's (:func:`_generated`), which raises its error. jsonschema-rs is given
    fastjsonschema's own pattern for each format (:func:`_formats_as_patterns`): its own
    date-time reader (0.60) passes some characters where digits belong (``2026-0*-01T…``)."""
    judge, patterns = _generated(document)
    if patterns is None:  # a fastjsonschema that generates otherwise: it alone
        return judge
    try:
        passes = jsonschema_rs.validator_for(_formats_as_patterns(document, patterns), validate_formats=True).is_valid
    except Exception:  # a schema jsonschema-rs cannot compile: fastjsonschema alone
        return judge

    def check(payload: Any) -> None:
        try:
            if passes(payload):
                return
        except Exception:  # a value jsonschema-rs cannot take: fastjsonschema judges it
            pass
        judge(payload)

    return check


def _formats_as_patterns(node: Any, patterns: dict[str, re.Pattern[str]]) -> Any:
    """The schema with each format that fastjsonschema tests by a pattern tested by that
    pattern instead (a ``pattern`` applies to strings only, as a format does), for Rust's
    regex engine: ``\\d`` as ``[0-9]`` (Python's and Rust's Unicode tables may differ by a
    version; ASCII digits only is never less strict) and ``\\Z`` as ``$`` (the end of the
    text in ECMA-262's syntax, which a schema's patterns are written in)."""
    if isinstance(node, list):
        return [_formats_as_patterns(item, patterns) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _formats_as_patterns(value, patterns) for key, value in node.items()}
    if isinstance(out.get("format"), str) and out["format"] in patterns:
        rust = patterns[out.pop("format")].pattern.replace(r"\d", "[0-9]").replace(r"\Z", "$")
        out["allOf"] = [*out.get("allOf", ()), {"pattern": rust}]
    return out


_FORMAT_PATTERN = "_re_pattern"
"""How fastjsonschema names a format's pattern among its patterns (``date-time_re_pattern``)."""


def _generated(document: dict[str, Any]) -> tuple[Validator, dict[str, re.Pattern[str]] | None]:
    """fastjsonschema's validator, and the patterns it tests formats with (by format: None
    where the code could not be rewritten), its code rewritten in three respects:

    - the name of every array item handed to a referenced definition (``data.meterValue[0]``,
      for error messages) is built with ``"...".format(**locals())``, a dict of the
      function's locals made for each item even when nothing fails; an f-string builds the
      same text without it (a TransactionEvent with four sampled values: about a quarter of
      its validation);
    - an enum of strings is tested as one lookup in a set of its values (a constant
      ``frozenset``), not value by value: a measurand late in the 56 of the enum took some
      forty tests;
    - the required properties are looked up one by one (``"id" in data and ...``), and the
      set of the missing ones is made only when one is missing (a set difference through
      the keys view each time was a quarter of a TransactionEvent's validation), and a
      dict's keys are copied with ``set(data)``, not through its keys view.

    The same payloads pass, and one that fails raises the same error.

    use_default=False: fastjsonschema otherwise writes the schema's defaults into the payload
    it checks (a unitOfMeasure gained "multiplier": 0), and the capture must hold what the
    station sent, byte for byte in meaning."""
    try:
        resolver, generator = fastjsonschema._factory(document, {}, use_default=False)
        code = _FORMAT_LOCALS.sub(r'f"\1"', generator.func_code)
        code = _STRING_ENUM.sub(_string_enum, code)
        code = _REQUIRED.sub(_required, code)
        code = _KEYS.sub(r"\1\2_keys = set(\2)", code)
        state = generator.global_state
        exec(code, state)  # what fastjsonschema.compile does with the code it generated
        check: Validator = state[resolver.get_scope_name()]
        patterns = {
            name.removesuffix(_FORMAT_PATTERN): pattern
            for name, pattern in state["REGEX_PATTERNS"].items()
            if name.endswith(_FORMAT_PATTERN)
        }
    except (AttributeError, TypeError, SyntaxError, KeyError):  # a fastjsonschema that generates otherwise
        return fastjsonschema.compile(document, use_default=False), None
    return check, patterns


def validate(protocol: str, action: str, kind: Kind, payload: Any) -> None:
    """Raises :class:`Violation` if ``payload`` is not valid; ``NotImplemented`` if the
    action does not exist in ``protocol``."""
    violation = problem(protocol, action, kind, payload)
    if violation is not None:
        raise violation


def problem(protocol: str, action: str | None, kind: Kind, payload: Any) -> Violation | None:
    """The violation, or None when the payload is valid (every frame the gateway sees asks)."""
    if action is None:
        return Violation("ProtocolError", "no CALL with this message id is outstanding")
    check = validator(protocol, action, kind)
    if check is None:
        return Violation("NotImplemented", f"{action} is not an action of {protocol}")
    try:
        check(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        code = _CODE_OF_RULE.get(exc.rule or "", "PropertyConstraintViolation")
        where = ".".join(str(p) for p in (exc.path or [])[1:]) or "payload"
        return Violation(code, f"{where}: {exc.message.removeprefix('data.').removeprefix('data ')}")
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
