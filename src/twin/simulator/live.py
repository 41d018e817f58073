"""Stations that obey: the reactive live simulator behind ``twin simulate --live``.

Each station is a websocket client of the CSMS (``URL/<station id>``, its own subprotocol):
it boots, reports its EVSEs, beats, and plays the visits planned for it
(``twin.simulator.sessions``) on a simulated clock, ``start + elapsed * speed``. What an EV
draws comes from ``twin.simulator.ev`` under the charging profiles the station accepted, so
meter values, SoC and registers show what the CSMS asked for. The station answers every
CSMS call: SetChargingProfile Accepted, or Rejected for what it cannot do; anything else
the smallest valid answer.

One CALL outstanding at a time, as OCPP-J allows; a dropped connection is retried with
backoff, and TransactionEvents due meanwhile go on reconnection with ``offline: true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from twin.gateway.responder import minimal
from twin.simulator import ev as physics
from twin.simulator import payloads
from twin.simulator.ev import EV, FREE, EVState, Profile
from twin.simulator.fleet import Station
from twin.simulator.payloads import Evse, iso
from twin.simulator.sessions import Visit
from twin.tariffs_station import StationTariffs

log = logging.getLogger("twin.simulator")
SPEED_MAX = 3_600.0
"""``--speed max`` on a clock: an hour a second."""
V2X_MODES = ("ChargingOnly", "Idle")  # the operation modes every station can follow
"""Any other operationMode, a negative setpoint or a dischargeLimit needs a V2X station."""


@dataclass(frozen=True)
class Sent:
    """A frame a simulated station sent: a CALL (``Request``) or its answer to the CSMS."""

    station_id: str
    protocol: str
    kind: str  # "Request" or "Response"
    action: str
    payload: dict[str, Any]


@dataclass
class Options:
    target: str  # ws://host:port/path: the station id is appended
    speed: float = 1.0  # simulated seconds per real second
    days: float = 2.0  # the run ends this long (simulated) after the start
    meter_interval_s: float = 60.0  # simulated seconds between TransactionEvent Updated
    reject_profiles: frozenset[str] = frozenset()  # stations that turn every profile down
    central_cost: frozenset[str] = frozenset()  # 2.1 stations that compute no cost: the CSMS sends it
    call_timeout: float = 30.0  # real seconds for the CSMS to answer a call
    start: datetime | None = None  # the simulated clock's start; None: now
    on_sent: Callable[[Sent], None] | None = None
    faults_per_day: float = 0.0  # connector faults per station-day (while the bay is empty)
    outages_per_day: float = 0.0  # connection outages per station-day


@dataclass
class Summary:
    stations: int = 0
    sessions: int = 0
    sessions_missed: int = 0  # gone before their station could take them (offline, the bay taken)
    frames_sent: int = 0  # CALLs the stations sent
    answers_received: int = 0
    calls_answered: int = 0  # the CSMS's CALLs the stations answered
    profiles_accepted: int = 0
    profiles_rejected: int = 0
    reconnects: int = 0
    errors: int = 0  # CALLERRORs received and calls the CSMS left unanswered
    final_costs: int = 0  # final costs the CSMS told stations without local cost
    faults: int = 0  # connector faults played
    outages: int = 0  # connection outages played
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 2)}


class Clock:
    def __init__(self, start: float, speed: float) -> None:
        self.start, self.speed, self.began = start, speed, time.monotonic()

    def now(self) -> float:
        return self.start + (time.monotonic() - self.began) * self.speed

    async def until(self, t: float) -> None:
        delay = (t - self.now()) / self.speed
        if delay > 0:
            await asyncio.sleep(delay)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0) / self.speed)


@cache
def _minimal(protocol: str, action: str) -> dict[str, Any]:
    return minimal(protocol, action)


def review(station: Station, request: Mapping[str, Any], running: Mapping[int, str | None],
           discharging: Mapping[int, bool], refuse: bool = False) -> tuple[str, str | None, str | None]:  # fmt: skip
    """Whether ``station`` takes a SetChargingProfile: ``(status, reasonCode, why)``.
    ``running``: each EVSE's transaction id; ``discharging``: whether its EV can give energy
    back. A station turns down what it cannot do: V2X on OCPP 2.0.1 or a unidirectional
    station (or for an EV that cannot discharge), an EVSE it does not have, a TxProfile for
    a transaction it is not running."""
    if refuse:
        return "Rejected", "NotSupported", "this station takes no charging profiles"
    evse = int(request.get("evseId", 0))
    if not 0 <= evse <= station.evses:
        return "Rejected", "UnknownEvse", f"the station has EVSEs 1 to {station.evses}"
    profile = request["chargingProfile"]
    periods = [p for schedule in profile["chargingSchedule"] for p in schedule["chargingSchedulePeriod"]]
    v2x = any(p.get("operationMode", "ChargingOnly") not in V2X_MODES or (p.get("setpoint") or 0) < 0
              or "dischargeLimit" in p for p in periods)  # fmt: skip
    if v2x and (station.protocol != "ocpp2.1" or not station.bidirectional):
        return "Rejected", "UnsupportedParam", "V2X needs a bidirectional OCPP 2.1 station"
    if profile["chargingProfilePurpose"] == "TxProfile":
        tx = profile.get("transactionId")
        if evse == 0 or tx is None or running.get(evse) != tx:
            return "Rejected", "TxNotFound", f"no transaction {tx} on EVSE {evse}"
        if v2x and not discharging.get(evse):
            return "Rejected", "UnsupportedParam", "the EV on this EVSE does not discharge"
    return "Accepted", None, None


@dataclass
class StationAgent:
    s: Station
    visits: list[Visit]
    opts: Options
    clock: Clock
    summary: Summary
    evses: dict[int, Evse] = field(init=False)
    profiles: dict[int, Profile] = field(default_factory=dict)  # accepted, by id

    def __post_init__(self) -> None:
        rng = random.Random(f"registers:{self.s.index}")
        self.evses = {n: Evse(n, float(rng.randint(100_000, 9_000_000))) for n in range(1, self.s.evses + 1)}
        self.v21 = self.s.protocol == "ocpp2.1"
        self.ws: ClientConnection | None = None
        self.online, self.booted, self.mail = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.outbox: deque[tuple[str, dict[str, Any]]] = deque()
        self.waiting: dict[str, asyncio.Future[list[Any]]] = {}
        self.lock = asyncio.Lock()
        self.msg = 0
        self.heartbeat_s = 1800.0
        self.run_id = secrets.token_hex(3)  # transaction ids differ from one run to the next
        self.down_until = 0.0  # the simulated time an outage ends
        self.event_id = 0
        self.tx_count = 0
        self.tariffs = StationTariffs(self.s.evses, simple=self.s.index % 5 == 4,  # every fifth: no conditions
                                      local_cost=self.s.station_id not in self.opts.central_cost)  # fmt: skip

    async def run(self) -> None:
        by_evse: dict[int, list[Visit]] = {}
        for visit in self.visits:
            by_evse.setdefault(visit.evse, []).append(visit)
        jobs = [self._connection(), self._sender(), self._heartbeat(), self._incidents(),
                *(self._evse(self.evses[n], by_evse.get(n, [])) for n in self.evses)]  # fmt: skip
        tasks = [asyncio.create_task(job) for job in jobs]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    # -- the connection -----------------------------------------------------------------------
    async def _connection(self) -> None:
        url = self.opts.target.rstrip("/") + "/" + self.s.station_id
        backoff, connected = 0.5, False
        while True:
            await self.clock.until(self.down_until)  # an outage: no network until it ends
            try:
                ws = await asyncio.wait_for(connect(url, subprotocols=[Subprotocol(self.s.protocol)],
                                                    open_timeout=10, max_size=2**20), 11)  # fmt: skip
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                log.warning("%s cannot connect to %s (%s); again in %.1f s", self.s.station_id, url, exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, 30.0)
                continue
            self.summary.reconnects += connected
            connected, backoff, self.ws = True, 0.5, ws
            reader = asyncio.create_task(self._read(ws))
            try:
                await self._hello()
                self.online.set()
                await reader
            except ConnectionError:
                pass
            finally:
                self.online.clear()
                self.ws = None
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 5)
            log.warning("%s lost its connection; reconnecting", self.s.station_id)
            await asyncio.sleep(backoff)

    async def _hello(self) -> None:
        """Boot (once per run: a dropped connection is no reboot), then every EVSE's status."""
        s = self.s
        while not self.booted.is_set():
            station = {"model": s.model, "vendorName": s.vendor, "serialNumber": s.serial,
                       "firmwareVersion": s.firmware}  # fmt: skip
            boot = {"reason": "PowerUp", "chargingStation": station}
            answer = await self._call("BootNotification", boot)
            if answer is not None and isinstance(answer.get("interval"), int) and answer["interval"] > 0:
                self.heartbeat_s = float(answer["interval"])
            if answer is not None and answer.get("status") == "Accepted":
                self.booted.set()
            else:
                await asyncio.sleep(max(0.5, min(self.heartbeat_s / self.clock.speed, 10.0)))
        for evse in self.evses.values():
            await self._call("StatusNotification", payloads.status(evse, self.clock.now()))

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for text in ws:
                try:
                    frame = orjson.loads(text)
                    kind, msg_id = frame[0], frame[1]
                except Exception:
                    log.warning("%s got an unreadable frame: %r", self.s.station_id, str(text)[:80])
                    continue
                if kind in (3, 4, 5) and msg_id in self.waiting:
                    future = self.waiting[msg_id]
                    if not future.done():
                        future.set_result(frame)
                elif kind == 2 and len(frame) >= 4:
                    action, payload = str(frame[2]), frame[3] if isinstance(frame[3], dict) else {}
                    answer = self.answer(action, payload)
                    await ws.send(orjson.dumps([3, msg_id, answer]).decode())
                    self.summary.calls_answered += 1
                    self._sent("Response", action, answer)
        except ConnectionClosed:
            pass
        finally:
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))

    async def _call(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Send a CALL and wait for its answer: the payload of a CALLRESULT, None otherwise.
        ConnectionError when there is no connection or it drops meanwhile."""
        async with self.lock:
            ws = self.ws
            if ws is None:
                raise ConnectionError("offline")
            self.msg += 1
            msg_id = f"{self.run_id}-{self.msg}"
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self.waiting[msg_id] = future
            try:
                try:
                    await ws.send(orjson.dumps([2, msg_id, action, payload]).decode())
                except ConnectionClosed:
                    raise ConnectionError("connection closed") from None
                self.summary.frames_sent += 1
                self._sent("Request", action, payload)
                try:
                    answer = await asyncio.wait_for(future, self.opts.call_timeout)
                except TimeoutError:
                    self.summary.errors += 1
                    log.warning("%s: no answer to %s in %g s", self.s.station_id, action, self.opts.call_timeout)
                    return None
            finally:
                self.waiting.pop(msg_id, None)
            self.summary.answers_received += 1
            if answer[0] != 3 or not isinstance(answer[2], dict):
                self.summary.errors += 1
                log.warning("%s: %s answered with %s", self.s.station_id, action, answer[2:4])
                return None
            return answer[2]

    def _sent(self, kind: str, action: str, payload: dict[str, Any]) -> None:
        if self.opts.on_sent is not None:
            self.opts.on_sent(Sent(self.s.station_id, self.s.protocol, kind, action, payload))

    def post(self, action: str, payload: dict[str, Any]) -> None:
        """Queue a CALL. Offline, statuses and heartbeats are dropped (the statuses are sent
        again on reconnection) and TransactionEvents marked ``offline``."""
        if not self.online.is_set():
            if action in ("StatusNotification", "Heartbeat"):
                return
            if action == "TransactionEvent":
                payload["offline"] = True
        if action == "TransactionEvent" and self.v21:  # local cost from the tariff the station holds
            tx = payload["transactionInfo"]["transactionId"]
            evse = next((n for n, e in self.evses.items() if e.tx_id == tx), 0)
            self.tariffs.cost(evse, payload)
        self.outbox.append((action, payload))
        self.mail.set()

    async def _sender(self) -> None:
        while True:
            while not self.outbox:
                self.mail.clear()
                await self.mail.wait()
            await self.online.wait()
            action, payload = self.outbox[0]
            try:
                answer = await self._call(action, payload)
                if action == "TransactionEvent" and self.v21 and answer and "totalCost" in answer:
                    self._told_cost(str(payload["transactionInfo"]["transactionId"]), answer["totalCost"],
                                    ended=payload.get("eventType") == "Ended")  # fmt: skip
            except ConnectionError:
                if action == "TransactionEvent":
                    payload["offline"] = True
                    continue  # sent again once reconnected
            self.outbox.popleft()

    async def _heartbeat(self) -> None:
        await self.booted.wait()
        while True:
            await self.clock.sleep(self.heartbeat_s)
            if self.online.is_set():
                self.post("Heartbeat", {})

    # -- the CSMS's calls ---------------------------------------------------------------------
    def answer(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "SetChargingProfile":
            return self._set_profile(payload)
        if action == "ClearChargingProfile":
            return self._clear_profiles(payload)
        if self.v21 and action in ("SetDefaultTariff", "ChangeTransactionTariff", "ClearTariffs", "GetTariffs"):
            return self._tariff_call(action, payload)
        if self.v21 and action == "CostUpdated":
            self._told_cost(str(payload.get("transactionId")), payload.get("totalCost"))
        if self.v21 and action == "SetVariables":  # the clock's zone, for the tariffs' times of day
            return self.tariffs.set_variables(payload) or _minimal(self.s.protocol, action)
        return _minimal(self.s.protocol, action)

    def _told_cost(self, tx: str, total: Any, ended: bool = False) -> None:
        if self.tariffs.told_cost(tx, total, ended):
            self.summary.final_costs += 1
            log.info("%s: final cost of transaction %s from the CSMS: %s", self.s.station_id, tx, total)

    def _tariff_call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        t = self.tariffs
        if action == "SetDefaultTariff":
            return t.set_default(payload)
        if action == "ChangeTransactionTariff":
            return t.change(payload, datetime.fromtimestamp(self._catch_up(), UTC))
        return t.clear(payload) if action == "ClearTariffs" else t.get(payload)

    def _set_profile(self, request: dict[str, Any]) -> dict[str, Any]:
        now = self._catch_up()
        running = {n: e.tx_id for n, e in self.evses.items()}
        discharging = {n: e.ev is not None and e.ev.max_discharge_w > 0 for n, e in self.evses.items()}
        status, reason, why = review(self.s, request, running, discharging,
                                     self.s.station_id in self.opts.reject_profiles)  # fmt: skip
        if status != "Accepted":
            self.summary.profiles_rejected += 1
            info = {"reasonCode": reason or "Unspecified", "additionalInfo": why or ""}
            return {"status": status, "statusInfo": info}
        new = physics.profile_of(request, now, ac=self.s.kind == "AC")
        # a profile replaces the one of its id, and the one of its purpose and stack level on its EVSE
        slot = (new.purpose, new.stack_level, new.evse_id)
        self.profiles = {i: p for i, p in self.profiles.items()
                         if i != new.id and (p.purpose, p.stack_level, p.evse_id) != slot}  # fmt: skip
        self.profiles[new.id] = new
        self.summary.profiles_accepted += 1
        self._retune(now)
        return {"status": "Accepted"}

    def _clear_profiles(self, request: dict[str, Any]) -> dict[str, Any]:
        now = self._catch_up()
        pid, criteria = request.get("chargingProfileId"), request.get("chargingProfileCriteria") or {}

        def matches(p: Profile) -> bool:
            return ((pid is None or p.id == pid) and criteria.get("evseId", p.evse_id) == p.evse_id
                    and criteria.get("chargingProfilePurpose", p.purpose) == p.purpose
                    and criteria.get("stackLevel", p.stack_level) == p.stack_level)  # fmt: skip

        kept = {i: p for i, p in self.profiles.items() if not matches(p)}
        cleared = len(kept) < len(self.profiles)
        self.profiles = kept
        self._retune(now)
        return {"status": "Accepted" if cleared else "Unknown"}

    def _catch_up(self) -> float:
        """Every EV's state worked out to now under the profiles in force so far."""
        now = self.clock.now()
        for evse in self.evses.values():
            self._advance(evse, now)
        return now

    def _retune(self, now: float) -> None:
        """Every EV's power from ``now`` on, under the profiles as they now are (caught up to ``now``)."""
        for e in self.evses.values():
            if e.ev is not None and e.state is not None:
                e.state, e.setting = physics.retuned(e.ev, e.state, self.profiles.values(), now, e.n, e.tx_id,
                                                     e.tx_start, self.opts.meter_interval_s)  # fmt: skip

    def _advance(self, e: Evse, t: float) -> None:
        if e.ev is None or e.state is None or t <= e.last_t:
            return
        profiles = self.profiles.values()
        e.state, e.setting = physics.advance(e.ev, e.state, profiles, e.last_t, t, e.n, e.tx_id, e.tx_start)
        e.last_t = t

    # -- the EVs ------------------------------------------------------------------------------
    async def _evse(self, e: Evse, visits: Iterable[Visit]) -> None:
        await self.booted.wait()
        for visit in visits:
            if visit.departure <= self.clock.now():
                self.summary.sessions_missed += 1
                continue
            await self.clock.until(visit.arrival)
            if e.status == "Faulted":  # the driver finds the bay out of order and goes elsewhere
                self.summary.sessions_missed += 1
                continue
            await self._session(e, visit)

    # -- incidents ------------------------------------------------------------------------------
    async def _incidents(self) -> None:
        """Connector faults and connection outages, each a Poisson process per station-day from
        the station's own seed (``Options.faults_per_day``, ``outages_per_day``; none by default,
        so a sessions file plays as written). A fault comes while its bay is empty and lasts 30
        minutes to 4 hours: Faulted, a NotifyEvent of the connector's problem, Available again;
        an EV arriving meanwhile leaves. An outage drops the connection (no close handshake:
        1006 at the CSMS) for 5 to 90 minutes; what the station sends meanwhile waits for it,
        as the batch simulator's stations do."""
        faults, outages = self.opts.faults_per_day, self.opts.outages_per_day
        if faults + outages <= 0:
            return
        rng = random.Random(zlib.crc32(f"{self.s.station_id}:incidents".encode()))
        await self.booted.wait()
        while True:
            await self.clock.sleep(rng.expovariate((faults + outages) / 86_400))
            if rng.random() < faults / (faults + outages):
                await self._fault(self.evses[rng.randint(1, len(self.evses))], rng.uniform(30, 240) * 60)
            else:
                await self._outage(rng.uniform(5, 90) * 60)

    async def _fault(self, e: Evse, lasts_s: float) -> None:
        if e.ev is not None or e.status == "Faulted":
            return  # a bay with a car in it: this fault is not played
        t = self.clock.now()
        e.status = "Faulted"
        self.summary.faults += 1
        self.post("StatusNotification", payloads.status(e, t))
        self.event_id += 1
        problem: dict[str, Any] = {"eventId": self.event_id, "timestamp": iso(t), "trigger": "Delta",
                                   "actualValue": "true", "eventNotificationType": "HardWiredMonitor",
                                   "component": {"name": "Connector", "evse": {"id": e.n, "connectorId": 1}},
                                   "variable": {"name": "Problem"}}  # fmt: skip
        if self.v21:
            problem["severity"] = 1
        self.post("NotifyEvent", {"generatedAt": iso(t), "seqNo": 0, "eventData": [problem]})
        await self.clock.sleep(lasts_s)
        e.status = "Available"
        self.post("StatusNotification", payloads.status(e, self.clock.now()))

    async def _outage(self, lasts_s: float) -> None:
        ws = self.ws
        if ws is None:
            return
        self.down_until = self.clock.now() + lasts_s
        self.summary.outages += 1
        log.info("%s loses its network for %.0f simulated minutes", self.s.station_id, lasts_s / 60)
        ws.transport.abort()
        await self.clock.until(self.down_until)

    async def _session(self, e: Evse, visit: Visit) -> None:
        s, clock = self.s, self.clock
        t = clock.now()
        e.status = "Occupied"
        self.post("StatusNotification", payloads.status(e, t))
        seed = zlib.crc32(f"{s.station_id}:{visit.session_id}".encode())
        token = ({"idToken": f"EMAID{seed:010X}", "type": "eMAID"} if visit.iso15118
                 else {"idToken": f"04{seed:012X}", "type": "ISO14443"})  # fmt: skip
        self.post("Authorize", {"idToken": token})
        bidirectional = s.bidirectional and self.v21
        e.visit, e.ev = visit, EV(visit.battery_wh, min(visit.max_charge_w, s.max_kw * 1000),
                                  min(visit.max_discharge_w, s.max_kw * 1000) if bidirectional else 0.0,
                                  visit.floor_wh)  # fmt: skip
        e.state = EVState(visit.stored_wh, visit.stored_wh + visit.energy_wh)
        self.tx_count += 1
        e.tx_id = f"{s.station_id}-{self.run_id}-T{self.tx_count}"
        e.tx_start, e.last_t, e.seq_no, e.reported = t, t, 0, "EVConnected"
        self.summary.sessions += 1
        started = {"eventType": "Started", "timestamp": iso(t), "triggerReason": "Authorized", "seqNo": 0,
                   "transactionInfo": {"transactionId": e.tx_id, "chargingState": "EVConnected"}, "idToken": token,
                   "evse": {"id": e.n, "connectorId": 1}, "meterValue": [payloads.meter(self.s, e, t)]}  # fmt: skip
        self.post("TransactionEvent", started)
        if visit.iso15118 or (visit.from_file and self.v21):
            self.post("NotifyEVChargingNeeds", {"evseId": e.n, "chargingNeeds": payloads.needs(self.s, e, visit)})
        tick = t
        while tick < visit.departure:
            tick = min(tick + self.opts.meter_interval_s, visit.departure)
            await clock.until(tick)
            self._advance(e, tick)
            if tick < visit.departure and not self._waiting(e.queued):
                e.queued = payloads.updated(self.s, e, max(tick, e.last_t))
                self.post("TransactionEvent", e.queued)
        e.seq_no += 1
        t = max(visit.departure, e.last_t)
        ended = {"eventType": "Ended", "timestamp": iso(t), "triggerReason": "EVDeparted", "seqNo": e.seq_no,
                 "transactionInfo": {"transactionId": e.tx_id, "chargingState": "Idle",
                                     "stoppedReason": "EVDisconnected"},
                 "evse": {"id": e.n, "connectorId": 1},
                 "meterValue": [payloads.meter(self.s, e, t, ended=True)]}  # fmt: skip
        self.post("TransactionEvent", ended)
        assert e.state is not None
        e.import_wh += e.state.imported_wh
        e.export_wh += e.state.exported_wh
        self.profiles = {i: p for i, p in self.profiles.items() if p.transaction_id != e.tx_id}  # ends with it
        e.visit = e.ev = e.state = e.tx_id = e.tx_start = None
        e.setting, e.status = FREE, "Available"
        self.post("StatusNotification", payloads.status(e, t + 1))

    def _waiting(self, payload: dict[str, Any] | None) -> bool:
        """Whether a CALL is still in the outbox. A reading due while the last is unsent is
        skipped (the next covers its time): when the CSMS answers slower than the stations
        read their meters, the readings it gets stay current instead of queueing up."""
        return payload is not None and any(p is payload for _, p in self.outbox)

async def run(fleet: Iterable[Station], visits: Mapping[str, list[Visit]], opts: Options,
              stop: asyncio.Event | None = None) -> Summary:  # fmt: skip
    """Drive the fleet until ``opts.days`` have passed on the simulated clock or ``stop`` is
    set; every websocket is closed on return. An agent that fails stops the run and its
    exception is raised."""
    began = time.monotonic()
    start = (opts.start or datetime.now(UTC)).timestamp()
    clock = Clock(start, opts.speed)
    stations = list(fleet)
    summary = Summary(stations=len(stations))
    agents = [StationAgent(s, visits.get(s.station_id, []), opts, clock, summary) for s in stations]
    tasks = [asyncio.create_task(a.run()) for a in agents]
    ending = [asyncio.create_task(clock.until(start + opts.days * 86_400)),
              asyncio.create_task((stop or asyncio.Event()).wait())]  # fmt: skip
    try:
        await asyncio.wait([*tasks, *ending], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [*tasks, *ending]:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, *ending, return_exceptions=True)
        summary.seconds = time.monotonic() - began
    failed = [o for o in outcomes if isinstance(o, Exception)]
    if failed:
        raise failed[0]
    return summary
