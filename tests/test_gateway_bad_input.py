"""Bad input: each kind answered as OCPP-J requires, recorded (``valid: false`` in
``ocpp.frames`` or raw in ``ocpp.deadletter``), and no other station notices."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import has, of_station, read_until, url
from tests.stations import BOOT, raw_station, station
from twin.settings import Settings

pytestmark = pytest.mark.integration


async def bystander_is_served(gw: Any) -> float:
    """A well-behaved station's round trip while the other misbehaves."""
    async with station(url(gw, "CS-OK")) as cp:
        start = time.perf_counter()
        await cp.call(cp.calls.Heartbeat())
        return time.perf_counter() - start


def deadletter_has(reason_part: str) -> Any:
    return lambda records: any(reason_part in r["reason"] for r in records)


@pytest.mark.parametrize(
    ("text", "code", "reason_part"),
    [
        ("this is not json", "RpcFrameworkError", "not JSON"),
        ('{"not": "an array"}', "RpcFrameworkError", "not an OCPP-J array"),
        ('[2, 42, "Heartbeat", {}]', "RpcFrameworkError", "message id"),
    ],
    ids=["not-json", "not-an-array", "id-not-a-string"],
)
async def test_unparsable_frames_get_rpcframeworkerror_and_are_dead_lettered(
    gateway: Any, settings: Settings, text: str, code: str, reason_part: str
) -> None:
    gw = await gateway()
    async with raw_station(url(gw, "CS-BAD")) as st:
        answer = await st.ask(text)
        assert answer[0] == 4 and answer[1] == "-1" and answer[2] == code
        assert await bystander_is_served(gw) < 2
        assert (await st.ask(BOOT))[0] == 3, "the misbehaving station is still served"
    dead = await read_until(settings, deadletter_has(reason_part), topic=settings.topics.deadletter)
    record = next(r for r in dead if reason_part in r["reason"])
    assert record["raw"] == text and record["station_id"] == "CS-BAD"
    assert set(record) == {"station_id", "ts", "reason", "raw"}


async def test_unknown_message_type_gets_messagetypenotsupported(gateway: Any, settings: Settings) -> None:
    gw = await gateway()
    async with raw_station(url(gw, "CS-T7")) as st:
        assert await st.ask('[7, "m7", "Heartbeat", {}]') == [
            4,
            "m7",
            "MessageTypeNotSupported",
            "message type 7 is not part of ocpp2.1",
            {"by": "twin-gateway"},
        ]
    async with raw_station(url(gw, "CS-T5"), "ocpp2.0.1") as st:
        answer = await st.ask('[6, "m6", "NotifyPeriodicEventStream", {}]')
        assert answer[:3] == [4, "m6", "MessageTypeNotSupported"]
    assert await bystander_is_served(gw) < 2
    await read_until(
        settings,
        lambda rs: len([r for r in rs if "MessageTypeNotSupported" in r["reason"]]) == 2,
        topic=settings.topics.deadletter,
    )


async def test_unknown_action_gets_notimplemented_and_is_recorded_invalid(gateway: Any, settings: Settings) -> None:
    gw = await gateway()
    async with raw_station(url(gw, "CS-UA")) as st:
        assert (await st.ask([2, "u1", "MakeCoffee", {"sugar": 2}]))[:3] == [4, "u1", "NotImplemented"]
        assert (
            await st.ask(
                [2, "u2", "BatterySwap", {}],
            )
        )[:3] == [4, "u2", "OccurrenceConstraintViolation"]
    async with raw_station(url(gw, "CS-UA2"), "ocpp2.0.1") as st:  # new in 2.1, unknown to 2.0.1
        assert (await st.ask([2, "u3", "BatterySwap", {}]))[:3] == [4, "u3", "NotImplemented"]
    records = await read_until(settings, has("MakeCoffee", "CS-UA", msg_type=4))
    call = next(r for r in records if r["action"] == "MakeCoffee" and r["msg_type"] == 2)
    assert call["valid"] is False and "not an action of ocpp2.1" in call["error"]
    assert call["payload"] == {"sugar": 2}


async def test_oversized_frames_get_formatviolation_and_are_dead_lettered(gateway: Any, settings: Settings) -> None:
    gw = await gateway(settings.replace(max_frame_bytes=1000))
    huge = '[2, "big-1", "DataTransfer", {"vendorId": "v", "data": "' + "x" * 3000 + '"}]'
    async with raw_station(url(gw, "CS-BIG")) as st:
        answer = await st.ask(huge)
        assert answer[:3] == [4, "big-1", "FormatViolation"] and "exceeds 1000" in answer[3]
        assert (await st.ask(BOOT))[0] == 3
    assert await bystander_is_served(gw) < 2
    dead = await read_until(settings, deadletter_has("exceeds the limit"), topic=settings.topics.deadletter)
    assert dead[0]["raw"] == huge[:1000] and "3" in dead[0]["reason"]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"reason": "PowerUp", "chargingStation": {"model": 7, "vendorName": "V"}}, "TypeConstraintViolation"),
        ({"reason": "PowerUp"}, "OccurrenceConstraintViolation"),
        ({"reason": "Boredom", "chargingStation": {"model": "M", "vendorName": "V"}}, "PropertyConstraintViolation"),
    ],
    ids=["wrong-type", "missing-field", "bad-enum"],
)
async def test_schema_violations_get_their_error_code_and_are_recorded_invalid(
    gateway: Any, settings: Settings, payload: dict[str, Any], code: str
) -> None:
    gw = await gateway()
    async with raw_station(url(gw, "CS-SV")) as st:
        answer = await st.ask([2, "sv-1", "BootNotification", payload])
        assert answer[:3] == [4, "sv-1", code]
    records = of_station(await read_until(settings, has("BootNotification", "CS-SV", msg_type=4)), "CS-SV")
    call = next(r for r in records if r["msg_type"] == 2)
    assert call["valid"] is False and call["error"] and call["payload"] == payload
    err = next(r for r in records if r["msg_type"] == 4)
    assert err["payload"]["errorCode"] == code and err["action"] == "BootNotification"


async def test_a_violation_deep_in_an_array_names_the_item(gateway: Any, settings: Settings) -> None:
    """The validators build an array item's name without ``format(**locals())``: the same name."""
    ts = "2026-03-01T08:00:00.000Z"
    values = [{"value": 1.0}, {"value": 2.0, "measurand": "Energy.Nope"}]
    payload = {"eventType": "Updated", "timestamp": ts, "triggerReason": "MeterValuePeriodic", "seqNo": 1,
               "transactionInfo": {"transactionId": "T-1"},
               "meterValue": [{"timestamp": ts, "sampledValue": values}]}  # fmt: skip
    gw = await gateway()
    async with raw_station(url(gw, "CS-DEEP")) as st:
        answer = await st.ask([2, "deep-1", "TransactionEvent", payload])
    assert answer[:3] == [4, "deep-1", "PropertyConstraintViolation"]
    where = "meterValue[0].sampledValue[1].measurand"
    assert answer[3].startswith(f"meterValue.0.sampledValue.1.measurand: {where} must be")


async def test_reused_message_ids_are_refused(gateway: Any, settings: Settings) -> None:
    gw = await gateway()
    async with raw_station(url(gw, "CS-DUP")) as st:
        assert (await st.ask([2, "same", "Heartbeat", {}]))[0] == 3
        assert (await st.ask([2, "same", "Heartbeat", {}]))[:3] == [4, "same", "RpcFrameworkError"]
    records = of_station(await read_until(settings, has("Heartbeat", "CS-DUP", msg_type=4)), "CS-DUP")
    calls = [r for r in records if r["msg_type"] == 2]
    assert [c["valid"] for c in calls] == [True, False] and "reused" in calls[1]["error"]


async def test_results_for_calls_never_made_are_recorded_not_answered(gateway: Any, settings: Settings) -> None:
    gw = await gateway()
    async with raw_station(url(gw, "CS-ORPHAN")) as st:
        await st.send([3, "never-asked", {"status": "Accepted"}])
        await st.send([4, "never-asked-2", "GenericError", "", {}])
        assert await st.nothing(within=0.5)
        assert (await st.ask(BOOT))[0] == 3
    records = of_station(await read_until(settings, has("Disconnected", "CS-ORPHAN")), "CS-ORPHAN")
    orphans = [r for r in records if r["msg_id"].startswith("never-asked")]
    assert len(orphans) == 2 and all(not r["valid"] and r["action"] is None for r in orphans)


async def test_station_sending_a_csms_action_gets_notsupported(gateway: Any, settings: Settings) -> None:
    gw = await gateway()
    async with raw_station(url(gw, "CS-WRONG")) as st:
        answer = await st.ask([2, "w1", "CancelReservation", {"reservationId": 1}])
        assert answer[:3] == [4, "w1", "NotSupported"]
