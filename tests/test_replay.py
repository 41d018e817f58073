"""Replay: simulated captures re-driven against our gateway (csms and proxy mode), against an
independent CSMS written with the ``ocpp`` package, and against targets that misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import websockets
from ocpp.routing import on
from ocpp.v21 import call as c21
from ocpp.v21 import call_result as r21
from ocpp.v201 import call_result as r201

from replay import Options, Selection, run, scripts
from replay.plan import shift_times
from tests.conftest import has, read_until
from tests.scenarios import Script, reservations
from tests.test_gateway_proxy import Upstream21, Upstream201, upstream_csms
from twin import captures, fold
from twin.broker import free_port
from twin.settings import Settings
from twin.simulator import simulate
from twin.validate import check

pytestmark = pytest.mark.integration

STATION_SIDE = ("station_id", "msg_type", "action", "payload")


def simulated(stations: int = 3, days: float = 0.5, seed: int = 2) -> list[dict[str, Any]]:
    return [r for day in simulate(stations, days, seed, prefix="RP") for r in day]


def projection(twin: dict[str, Any]) -> dict[str, Any]:
    """What a station's own frames decide, so a replay must reproduce it: CSMS-initiated
    calls (reservations, profiles, monitors) are the target's business, not the replay's."""
    evses = {
        k: {
            "status": e.get("status"),
            "transaction": {
                f: (e.get("transaction") or {}).get(f)
                for f in ("id", "state", "import_wh", "export_wh", "seq_no", "reservation_id", "offline_events")
            },
            "energy": {f: (e.get("energy") or {}).get(f) for f in ("import_wh", "export_wh", "direction", "power_w")},
        }  # fmt: skip
        for k, e in twin["evses"].items()
    }
    identity = {k: v for k, v in twin["identity"].items() if k not in ("booted_at", "heartbeat_interval")}
    firmware = (twin.get("firmware") or {}).get("status")
    return {"protocol": twin["protocol"], "identity": identity, "evses": evses,
            "security_events": twin["security"]["events"], "firmware": firmware}  # fmt: skip


def station_frames(records: list[dict[str, Any]], prefix: str = "") -> list[tuple[Any, ...]]:
    """What the stations sent, station by station, each in its order."""
    frames = [
        (r["station_id"].removeprefix(prefix), r["msg_type"], r["action"], r["payload"])
        for r in records
        if r["origin"] == "cs" and r["msg_type"] in (2, 6)
    ]
    return sorted(frames, key=lambda f: f[0])  # stable: each station's order kept


def gw_url(gw: Any) -> str:
    return f"ws://127.0.0.1:{gw.port}/ocpp"


async def test_round_trip_through_our_gateway_gives_the_same_twins(gateway: Any, settings: Settings) -> None:
    source = simulated()
    gw = await gateway(mode="csms")
    plans = scripts(source, Selection(prefix="RT-"))
    results = await run(plans, Options(gw_url(gw), speed=None, call_timeout=10))
    summary = results.summary()
    calls = sum(1 for r in source if r["origin"] == "cs" and r["msg_type"] == 2)
    sends = sum(1 for r in source if r["origin"] == "cs" and r["msg_type"] == 6)
    assert summary["errors"] == 0, summary["error_examples"]
    assert summary["frames_sent"] == calls + sends and summary["responses"] == calls
    assert summary["reconnects"] == 0 and summary["stations"] == 3
    outages = sum(1 for r in source if r["action"] == "Disconnected")
    captured = await read_until(settings, has("Disconnected", count=outages + 3), timeout=60)
    mine = [r for r in captured if r["station_id"].startswith("RT-")]
    assert check(mine).ok, check(mine).as_json(5)
    assert station_frames(mine, "RT-") == station_frames(source), "the stations said the same, in the same order"
    rebuilt = {k.removeprefix("RT-"): projection(fold.public(t)) for k, t in fold.fold(mine).items()}
    assert rebuilt == {k: projection(fold.public(t)) for k, t in fold.fold(source).items()}
    assert any(e["energy"]["direction"] != "idle" or e["transaction"]["import_wh"] for t in rebuilt.values()
               for e in t["evses"].values()), "the comparison covers sessions"  # fmt: skip


async def test_answers_that_differ_from_the_recording_are_reported(gateway: Any) -> None:
    s = Script("MM-1").connect().boot()
    s.cs("Authorize", {"idToken": {"idToken": "X", "type": "ISO14443"}}, {"idTokenInfo": {"status": "Blocked"}})
    s.cs("Heartbeat", {}, {"currentTime": s.now})
    gw = await gateway(mode="csms")
    results = await run(scripts(s.records, Selection()), Options(gw_url(gw), speed=None, call_timeout=5))
    summary = results.summary()
    assert summary["responses"] == 3 and summary["mismatches"] == 1
    assert summary["mismatch_examples"] == [{"station_id": "MM-1", "action": "Authorize",
                                             "expected": {"idTokenInfo.status": "Blocked"},
                                             "got": {"idTokenInfo.status": "Accepted"}}]  # fmt: skip


class Complete21(Upstream21):
    """The independent CSMS, answering everything the simulator's stations send.

    (It has to: ocpp 2.1.0 leaves an OCPP 2.1 call it has no handler for unanswered, where
    for 2.0.1 it answers NotImplemented; and it drops SEND frames as invalid.)"""

    @on("TransactionEvent")
    def transaction_event(self, **kw: Any) -> r21.TransactionEvent:
        self.seen.append("TransactionEvent")
        return r21.TransactionEvent(id_token_info={"status": "Accepted"} if kw.get("id_token") else None)

    @on("MeterValues")
    def meter_values(self, **_: Any) -> r21.MeterValues:
        return r21.MeterValues()

    @on("SecurityEventNotification")
    def security_event(self, **_: Any) -> r21.SecurityEventNotification:
        return r21.SecurityEventNotification()

    @on("NotifyEvent")
    def notify_event(self, **_: Any) -> r21.NotifyEvent:
        return r21.NotifyEvent()

    @on("NotifyEVChargingNeeds")
    def needs(self, **_: Any) -> r21.NotifyEVChargingNeeds:
        return r21.NotifyEVChargingNeeds(status="Accepted")

    @on("Get15118EVCertificate")
    def ev_certificate(self, **_: Any) -> r21.Get15118EVCertificate:
        return r21.Get15118EVCertificate(status="Accepted", exi_response="gAA=")

    @on("GetCertificateStatus")
    def certificate_status(self, **_: Any) -> r21.GetCertificateStatus:
        return r21.GetCertificateStatus(status="Accepted", ocsp_result="MEQ=")

    @on("SignCertificate")
    def sign(self, **_: Any) -> r21.SignCertificate:
        return r21.SignCertificate(status="Accepted")

    @on("FirmwareStatusNotification")
    def firmware(self, **_: Any) -> r21.FirmwareStatusNotification:
        return r21.FirmwareStatusNotification()

    @on("ReservationStatusUpdate")
    def reservation(self, **_: Any) -> r21.ReservationStatusUpdate:
        return r21.ReservationStatusUpdate()

    @on("OpenPeriodicEventStream")
    def stream(self, **_: Any) -> r21.OpenPeriodicEventStream:
        return r21.OpenPeriodicEventStream(status="Accepted")


class Partial201(Upstream201):
    """A 2.0.1 CSMS with a few handlers more than the proxy tests': for the rest (MeterValues,
    certificates, firmware, ...) the library answers NotImplemented."""

    @on("TransactionEvent")
    def transaction_event(self, **kw: Any) -> r201.TransactionEvent:
        self.seen.append("TransactionEvent")
        return r201.TransactionEvent(id_token_info={"status": "Accepted"} if kw.get("id_token") else None)

    @on("SecurityEventNotification")
    def security_event(self, **_: Any) -> r201.SecurityEventNotification:
        return r201.SecurityEventNotification()


async def test_replay_against_an_independent_csms() -> None:
    """The ``ocpp`` package's central system: its answers are compared with the recorded
    ones (what it does not implement comes back NotImplemented: a mismatch each), and its
    own calls to a replayed station get the recorded answers."""
    source = simulated(4, 0.25, 4)
    assert {r["protocol"] for r in source} == {"ocpp2.1", "ocpp2.0.1"}
    calls = Counter((r["protocol"], r["action"]) for r in source if r["origin"] == "cs" and r["msg_type"] == 2)
    handled201 = {"BootNotification", "StatusNotification", "Heartbeat", "Authorize", "TransactionEvent",
                  "SecurityEventNotification"}  # fmt: skip
    async with upstream_csms({"ocpp2.1": Complete21, "ocpp2.0.1": Partial201}) as up:
        results = await run(scripts(source, Selection()), Options(up.url, speed=None, call_timeout=5))
    summary = results.summary()
    assert summary["errors"] == 0, summary["error_examples"]
    assert summary["responses"] == sum(calls.values())
    expected = sum(n for (protocol, action), n in calls.items() if protocol == "ocpp2.0.1" and action not in handled201)
    assert expected and summary["mismatches"] == expected, summary["mismatch_examples"]
    assert {m["got"]["error"] for m in summary["mismatch_examples"]} == {"NotImplemented"}

    # the independent CSMS calls the replayed station: the recorded answer comes back
    script = reservations()
    slow = Options("", speed=0.05, call_timeout=10)  # 5 ms apart when recorded: 100 ms apart now
    async with upstream_csms({"ocpp2.1": Complete21}) as up:
        slow.target = up.url
        task = asyncio.create_task(run(scripts(script.records, Selection()), slow))
        for _ in range(100):
            if "SC-RES" in up.points and up.points["SC-RES"].seen:
                break
            await asyncio.sleep(0.05)
        request = c21.ReserveNow(id=70, expiry_date_time="2026-03-01T09:00:00Z",
                                 id_token={"id_token": "T", "type": "Central"})  # fmt: skip
        answer = await up.points["SC-RES"].call(request)
        summary = (await task).summary()
    assert answer.status == "Accepted", "the first recorded ReserveNow answer"
    assert summary["answered_target_calls"] == 1 and summary["errors"] == 0, summary["error_examples"]


async def test_replay_through_the_proxy_captures_frame_for_frame(gateway: Any, settings: Settings) -> None:
    source = simulated(2, 0.25, 6)
    async with upstream_csms({"ocpp2.1": Complete21, "ocpp2.0.1": Partial201}) as up:
        gw = await gateway(mode="proxy", upstream=up.url)
        results = await run(scripts(source, Selection(prefix="PX-")), Options(gw_url(gw), speed=None, call_timeout=5))
        assert results.errors == 0, results.error_examples
        outages = sum(1 for r in source if r["action"] == "Disconnected")
        captured = await read_until(settings, has("Disconnected", count=outages + 2), timeout=60)
    mine = [r for r in captured if r["station_id"].startswith("PX-")]
    assert station_frames(mine, "PX-") == station_frames(source)
    answers = [r for r in mine if r["origin"] == "csms" and r["msg_type"] in (3, 4)]
    assert len(answers) == results.responses, "every answer the replay got went through the capture"


@contextlib.asynccontextmanager
async def misbehaving() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """Drops MV-DROP after its third frame (once); never answers MV-MUTE."""
    state = {"connections": 0}

    async def handler(ws: Any) -> None:
        station = ws.request.path.rsplit("/", 1)[-1]
        state["connections"] += 1
        first = state.setdefault(station, 0) == 0
        state[station] += 1
        n = 0
        async for text in ws:
            n += 1
            frame = json.loads(text)
            if station == "MV-DROP" and first and n == 3:
                await ws.close(1011, "going away")
                return
            if station != "MV-MUTE" and frame[0] == 2:
                await ws.send(json.dumps([3, frame[1], {}]))

    port = free_port()
    async with websockets.serve(handler, "127.0.0.1", port, subprotocols=["ocpp2.1"]):  # type: ignore[list-item]
        yield f"ws://127.0.0.1:{port}/ocpp", state


async def test_a_target_that_drops_or_ignores_stations_never_hangs_the_replay() -> None:
    records = []
    for station in ("MV-DROP", "MV-MUTE"):
        s = Script(station).connect().boot()
        for _ in range(4):
            s.cs("Heartbeat", {}, {"currentTime": s.now})
        records += s.records
    async with misbehaving() as (target, state):
        results = await asyncio.wait_for(
            run(scripts(records, Selection()), Options(target, speed=None, call_timeout=0.5)), timeout=30
        )
    summary = results.summary()
    assert summary["reconnects"] == 1 and state["MV-DROP"] == 2, "reconnected after the drop"
    assert summary["timeouts"] == 5, "every call to the mute target timed out, once each"
    assert summary["responses"] == 4, "MV-DROP: answers before the drop and after the reconnection"


def test_shift_moves_every_timestamp_and_prefix_renames() -> None:
    s = Script("SH-1").connect().boot().status(1, "Available")
    target = datetime(2030, 1, 1, tzinfo=UTC)
    (plan,) = scripts(s.records, Selection(prefix="X-", shift_to=target))
    assert plan.station_id == "X-SH-1"
    assert datetime.fromtimestamp(plan.steps[0].at, UTC) == target
    status = next(step for step in plan.steps if step.action == "StatusNotification")
    assert status.payload["timestamp"].startswith("2030-01-01T00:00:00")
    assert shift_times({"a": ["2026-03-01T08:00:00Z", "not a time"]}, timedelta(hours=1)) == {
        "a": ["2026-03-01T09:00:00.000Z", "not a time"]
    }


async def test_the_replay_command(gateway: Any, tmp_path: Any) -> None:
    capture = tmp_path / "capture.jsonl"
    captures.write_jsonl(capture, simulated(2, 0.1, 9))
    gw = await gateway(mode="csms")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "twin", "replay", str(capture), "--target", gw_url(gw), "--speed", "max", "--json",
        "--stations", "RP-00002", "--station-prefix", "CLI-",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    summary = orjson.loads(out)
    assert {"stations", "frames_sent", "responses", "mismatches", "errors"} <= summary.keys()
    assert summary["stations"] == 1 and summary["frames_sent"] > 10 and summary["mismatches"] == 0
    for key in ("rtt_p50_ms", "rtt_p99_ms"):
        assert summary[key] is not None and summary[key] > 0


async def test_simulate_live_drives_a_csms(gateway: Any, settings: Settings) -> None:
    gw = await gateway(mode="csms")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "twin", "simulate", "--stations", "3", "--days", "0.05", "--prefix", "LIVE",
        "--live", gw_url(gw), "--speed", "max", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    summary = orjson.loads(out)
    assert summary["stations"] == 3 and summary["errors"] == 0 and summary["frames_sent"] > 20
    captured = await read_until(settings, has("BootNotification", count=6), timeout=30)
    boots = [r for r in captured if r["action"] == "BootNotification" and r["msg_type"] == 2]
    assert {r["station_id"] for r in boots} == {"LIVE-00001", "LIVE-00002", "LIVE-00003"}
    statuses = [
        r["payload"]["timestamp"] for r in captured if r["action"] == "StatusNotification" and r["msg_type"] == 2
    ]
    now = datetime.now(UTC)
    assert statuses and all(abs(datetime.fromisoformat(t) - now) < timedelta(days=1) for t in statuses), (
        "a fleet of now"
    )


async def test_replay_from_the_topic_with_a_time_window(gateway: Any, settings: Settings) -> None:
    """No capture file: the stations' frames come from ocpp.frames itself, cut to a window."""
    source = simulated(2, 0.1, 13)
    gw = await gateway(mode="csms")
    first = await run(scripts(source, Selection(prefix="TP-")), Options(gw_url(gw), speed=None, call_timeout=10))
    assert first.errors == 0
    calls = first.frames_sent
    captured = await read_until(settings, lambda rs: sum(r["station_id"].startswith("TP-") and r["origin"] == "cs"
                                                         for r in rs) >= calls, timeout=30)  # fmt: skip
    mine = [r for r in captured if r["station_id"] == "TP-RP-00001"]
    sent = [r for r in mine if r["origin"] == "cs" and r["msg_type"] in (2, 6)]
    since, until = sent[5]["ts"], sent[-6]["ts"]
    expected = sum(since <= r["ts"] <= until for r in sent)
    env = {**os.environ, "TWIN_TOPIC_PREFIX": settings.topic_prefix}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "twin", "replay", "--bootstrap", settings.bootstrap or "", "--target", gw_url(gw),
        "--speed", "max", "--stations", "TP-RP-00001", "--from", since, "--to", until, "--station-prefix", "AGAIN-",
        "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    summary = orjson.loads(out)
    assert summary["stations"] == 1 and summary["frames_sent"] == expected, err.decode()[-2000:]
    assert 0 < expected < len(sent)
