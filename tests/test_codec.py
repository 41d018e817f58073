"""OCPP-J framing, schema validation, default answers, the envelope and settings."""

from __future__ import annotations

import contextlib
import json
import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin import envelope, messages, ocpp_j, schemas
from twin.gateway import responder
from twin.ocpp_j import FrameError, MessageType
from twin.settings import Settings


@pytest.mark.parametrize(
    "frame",
    [
        ocpp_j.call("1", "Heartbeat", {}),
        ocpp_j.result("2", None, {"currentTime": "2026-03-01T08:00:00.000Z"}),
        ocpp_j.error("3", "NotImplemented", "nope"),
        ocpp_j.error("4", "TypeConstraintViolation", "bad result", to_result=True),
        ocpp_j.Frame(
            MessageType.SEND, "5", "NotifyPeriodicEventStream", {"id": 1, "pending": 0, "basetime": "x", "data": []}
        ),
    ],
)
def test_every_message_type_round_trips(frame: ocpp_j.Frame) -> None:
    again = ocpp_j.decode(ocpp_j.encode(frame))
    assert (again.msg_type, again.msg_id, again.payload) == (frame.msg_type, frame.msg_id, frame.payload)
    if frame.msg_type in (2, 6):
        assert again.action == frame.action


def test_wire_shapes_are_those_of_ocpp_j() -> None:
    assert orjson.loads(ocpp_j.encode(ocpp_j.call("a", "Heartbeat", {}))) == [2, "a", "Heartbeat", {}]
    assert orjson.loads(ocpp_j.encode(ocpp_j.error("a", "GenericError", "x", to_result=True))) == [
        5, "a", "GenericError", "x", {}
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "code", "msg_id"),
    [
        ("not json", "RpcFrameworkError", None),
        ('{"a": 1}', "RpcFrameworkError", None),
        ("[2]", "RpcFrameworkError", None),
        ('[2, 17, "Heartbeat", {}]', "RpcFrameworkError", None),
        ('[7, "x", "Heartbeat", {}]', "MessageTypeNotSupported", "x"),
        ('["2", "x", "Heartbeat", {}]', "RpcFrameworkError", "x"),
        ('[2, "x", "Heartbeat", []]', "FormatViolation", "x"),
        ('[2, "x", "Heartbeat"]', "RpcFrameworkError", "x"),
        ('[4, "x", "GenericError", "d"]', "RpcFrameworkError", "x"),
    ],
)
def test_malformed_frames_say_which_error_to_answer(text: str, code: str, msg_id: str | None) -> None:
    with pytest.raises(FrameError) as caught:
        ocpp_j.decode(text)
    assert caught.value.code == code
    assert caught.value.msg_id == msg_id
    assert caught.value.answer_id == (msg_id or "-1")


def test_callresulterror_and_send_do_not_exist_in_201() -> None:
    for kind in (5, 6):
        with pytest.raises(FrameError) as caught:
            ocpp_j.decode(f'[{kind}, "x", "A", "B", {{}}]' if kind == 5 else '[6, "x", "A", {}]', "ocpp2.0.1")
        assert caught.value.code == "MessageTypeNotSupported"


@given(st.one_of(st.text(), st.binary()))
@settings(max_examples=300)
def test_decode_only_ever_raises_frame_error_on_text(data: str | bytes) -> None:
    with contextlib.suppress(FrameError):
        ocpp_j.decode(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)


@given(st.lists(json_values, max_size=6))
@settings(max_examples=300)
def test_decode_only_ever_raises_frame_error_on_arrays(message: list[object]) -> None:
    with contextlib.suppress(FrameError):
        ocpp_j.decode(json.dumps(message))  # stdlib: also writes integers orjson cannot read


def test_the_catalogue_has_91_actions_of_which_27_new() -> None:
    rows = messages.catalogue()
    assert len(rows) == 91
    assert sum(r["since"] == "ocpp2.1" for r in rows) == 27
    assert len(messages.actions("ocpp2.0.1")) == 64
    assert messages.direction("BootNotification") == "CS->CSMS"
    assert messages.direction("SetChargingProfile") == "CSMS->CS"
    assert messages.direction("DataTransfer") == "both"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": 5}}, "TypeConstraintViolation"),
        ({"reason": "PowerUp"}, "OccurrenceConstraintViolation"),
        (
            {"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}, "x": 1},
            "OccurrenceConstraintViolation",
        ),
        ({"reason": "Bored", "chargingStation": {"model": "M", "vendorName": "V"}}, "PropertyConstraintViolation"),
        (
            {"reason": "PowerUp", "chargingStation": {"model": "M" * 21, "vendorName": "V"}},
            "PropertyConstraintViolation",
        ),
    ],
)
def test_schema_violations_map_to_ocpp_j_error_codes(payload: dict[str, object], code: str) -> None:
    violation = schemas.problem("ocpp2.1", "BootNotification", "Request", payload)
    assert violation is not None and violation.code == code


def test_valid_payloads_and_unknown_actions() -> None:
    ok = {"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}}
    assert schemas.problem("ocpp2.1", "BootNotification", "Request", ok) is None
    assert schemas.problem("ocpp2.0.1", "BootNotification", "Request", ok) is None
    unknown = schemas.problem("ocpp2.1", "MakeCoffee", "Request", {})
    assert unknown is not None and unknown.code == "NotImplemented"
    new_in_21 = schemas.problem("ocpp2.0.1", "BatterySwap", "Request", {})
    assert new_in_21 is not None and new_in_21.code == "NotImplemented"


@pytest.mark.parametrize("protocol", ["ocpp2.1", "ocpp2.0.1"])
def test_csms_mode_answers_every_station_initiated_action_validly(protocol: str) -> None:
    answered = 0
    for action in sorted(messages.actions(protocol)):
        if not messages.station_initiated(action) or action in messages.SEND_ONLY:
            continue
        payload = responder.respond(action, {}, responder.Context(protocol, 1800))
        assert schemas.problem(protocol, action, "Response", payload) is None, action
        answered += 1
    assert answered == (36 if protocol == "ocpp2.1" else 25)


def test_boot_notification_answer_carries_the_heartbeat_interval() -> None:
    answer = responder.respond("BootNotification", {}, responder.Context("ocpp2.1", 300))
    assert answer["status"] == "Accepted" and answer["interval"] == 300


def test_envelope_fields_and_timestamp_format() -> None:
    e = envelope.of_frame(
        ocpp_j.call("m1", "Heartbeat", {}), station_id="CS-1", origin="cs",
        protocol="ocpp2.1", conn_id="c1", seq=3, ts=envelope.iso_ms(1772352000.1234),
    )  # fmt: skip
    assert tuple(e) == envelope.FIELDS
    assert e["ts"] == "2026-03-01T08:00:00.123Z"
    assert envelope.loads(envelope.dumps(e)) == e
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", envelope.iso_ms())


def test_settings_come_from_flags_then_environment_then_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.load().bootstrap is None
    monkeypatch.setenv("TWIN_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("TWIN_CALL_TIMEOUT", "2.5")
    monkeypatch.setenv("TWIN_CAPTURE", "false")
    s = Settings.load()
    assert (s.bootstrap, s.call_timeout, s.capture) == ("kafka:9092", 2.5, False)
    assert Settings.load(bootstrap="other:1").bootstrap == "other:1"
    assert Settings.load(topic_prefix="x.").topics.frames == "x.ocpp.frames"
    with pytest.raises(TypeError):
        Settings.load(nonsense=1)


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_iso_ms_agrees_with_datetime(epoch: float) -> None:
    from datetime import UTC, datetime

    assert envelope.iso_ms(epoch) == datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
