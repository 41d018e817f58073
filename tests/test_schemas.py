"""The validators' two engines give one verdict: whatever jsonschema-rs passes,
fastjsonschema passes too, so a payload's verdict and error are fastjsonschema's, on full,
minimal and mutated payloads of every schema of both versions."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import fastjsonschema
import jsonschema_rs
import pytest

from twin import schemas
from twin.messages import actions

DATE_TIMES = (
    "2026-03-01T23:59:60Z", "2026-03-01 08:00:00Z", "2026-03-01T08:00:00+0100", "2026-02-30T08:00:00Z",
    "2026-03-01t08:00:00z", "2026-03-01T08:00:00.123456789Z", "2026-03-01T24:00:00Z", "2026-03-01T08:00Z",
    "+026-03-01T08:00:00Z", "2026-0+-01T08:00:00Z", "2026-03-01T08:0*:00Z", "2026-03-01T08:00:00+1/:00",
    "2026-03-01T08:00:00+01:0/", "2026-03-01T08:00:00Z\n", "\u0662\u0660\u0662\u0666-03-01T08:00:00Z",
)  # fmt: skip
"""Date-times at the edges, where the two engines read RFC 3339 differently: jsonschema-rs 0.60's
own reader passed ``*+,-./`` in place of digits (found by a reviewer), and Arabic-Indic digits
are digits to Python's ``\\d``."""


def _example(node: dict[str, Any], root: dict[str, Any], full: bool, depth: int = 0) -> Any:
    """A payload of the schema: its required properties (or, ``full``, all of them)."""
    if "$ref" in node:
        return _example(root["definitions"][node["$ref"].rsplit("/", 1)[-1]], root, full, depth)
    if "enum" in node:
        return node["enum"][depth % len(node["enum"])]
    kind = node.get("type")
    if kind == "object":
        props = node.get("properties", {})
        names = list(props) if full and depth < 6 else node.get("required", [])
        return {k: _example(props[k], root, full, depth + 1) for k in names}
    if kind == "array":
        count = max(node.get("minItems", 0), 2 if full else 0)
        return [_example(node["items"], root, full, depth + 1) for _ in range(count)]
    if kind == "string":
        if node.get("format") == "date-time":
            return "2026-03-01T08:00:00.000Z"
        return "x" * max(1, node.get("minLength", 1))
    if kind in ("integer", "number"):
        return node.get("minimum", 0)
    return False if kind == "boolean" else None


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, (*path, key))


_REMOVED = object()


def _variants(payload: Any) -> Iterator[Any]:
    """The payload, and the payload with one value removed or replaced, at every place."""
    yield from (payload, {}, [], "x")
    for path in list(_paths(payload))[1:]:
        old = payload
        for key in path:
            old = old[key]
        news: list[Any] = [7, "Nope", None, [], {}, "x" * 3000]
        if isinstance(old, dict):
            news.append({**old, "zz": 1})
        if isinstance(old, int) and not isinstance(old, bool):
            news.append(float(old))
        if isinstance(old, str) and old.startswith("2026-"):
            news.extend(DATE_TIMES)
        for new in [*news, _REMOVED]:
            variant = copy.deepcopy(payload)
            parent = variant
            for key in path[:-1]:
                parent = parent[key]
            if new is _REMOVED:
                del parent[path[-1]]
            else:
                parent[path[-1]] = new
            yield variant


def _outcome(check: schemas.Validator, payload: Any) -> Any:
    try:
        check(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        return exc.message, exc.rule, exc.name
    return "valid"


@pytest.mark.parametrize("protocol", ["ocpp2.1", "ocpp2.0.1"])
def test_every_payload_gets_fastjsonschemas_verdict(protocol: str) -> None:
    checked = passed = 0
    for action in sorted(actions(protocol)):
        for kind in ("Request", "Response"):
            document = schemas.schema(protocol, action, kind)  # type: ignore[arg-type]
            if document is None:
                continue
            ours, generated = schemas._compile(document), schemas._generated(document)[0]
            for full in (False, True):
                for payload in _variants(_example(document, document, full)):
                    expected = _outcome(generated, payload)
                    assert _outcome(ours, payload) == expected, (protocol, action, kind, payload)
                    checked += 1
                    passed += expected == "valid"
    assert checked > 20_000 and 0.1 < passed / checked < 0.9  # both verdicts, many times


def test_a_date_time_with_a_sign_for_a_digit_is_not_one() -> None:
    """jsonschema-rs 0.60's own date-time reader passed these: the verdict is fastjsonschema's."""
    for text in ("+026-03-01T08:00:00Z", "2026-03-01T08:0*:00Z"):
        violation = schemas.problem("ocpp2.1", "Heartbeat", "Response", {"currentTime": text})
        assert violation is not None and violation.reason == "currentTime: currentTime must be date-time"


def test_a_date_time_that_only_fastjsonschema_passes_stays_valid() -> None:
    """jsonschema-rs is given ASCII digits only; fastjsonschema's ``\\d``, judging next, passes
    Arabic-Indic ones (and an offset without a colon, as both do)."""
    answer = {"currentTime": "\u0662\u0660\u0662\u0666-03-01T08:00:00+0100", "interval": 60, "status": "Accepted"}
    document = schemas.schema("ocpp2.1", "BootNotification", "Response")
    assert document is not None
    patterns = schemas._generated(document)[1]
    assert patterns is not None
    rust = jsonschema_rs.validator_for(schemas._formats_as_patterns(document, patterns), validate_formats=True)
    assert not rust.is_valid(answer)
    assert schemas.problem("ocpp2.1", "BootNotification", "Response", answer) is None
    bad = {**answer, "interval": "60"}
    violation = schemas.problem("ocpp2.1", "BootNotification", "Response", bad)
    assert violation is not None and violation.code == "TypeConstraintViolation"
