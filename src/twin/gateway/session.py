"""One station's websocket connection: OCPP-J rules, correlation, capture before acknowledge.

The session sees every frame of its connection in both directions, numbers them (``seq``),
resolves the action of every answer from the CALL it answers, validates payloads against
the negotiated version's schema and records each frame before it is acknowledged (csms
mode) or forwarded (proxy mode). Frames that are not OCPP-J go to the dead-letter topic
with their raw text; everything else is in ``ocpp.frames``, invalid ones with ``valid:
false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.connection import Connection
from websockets.protocol import State

from twin import envelope, ocpp_j, schemas
from twin.capture import Recorder
from twin.envelope import Envelope
from twin.gateway import responder
from twin.gateway.certificates import CertificateProvider
from twin.messages import csms_initiated, station_initiated
from twin.ocpp_j import Frame, FrameError, MessageType
from twin.settings import Settings

log = logging.getLogger("twin.gateway")

REMEMBERED_IDS = 16
"""How many of a station's latest CALL ids a session remembers to refuse a reused one (a
station resending a CALL reuses its id at once). Each id costs about 120 bytes; 4,096 of them
were 500 KiB per connection once a station had sent that many calls (11 hours of meter values
every 10 s), where a whole connection is meant to cost 20 KiB."""
UNANSWERED = 16
"""Calls of one station read and not yet answered (their capture in flight) before its
session reads no further: a station is to wait for each answer (OCPP-J), and one that does
not must not pile up captures and answers without bound (a round of 2 s with no limit held
2,473 calls of one station; the token bucket alone, 401)."""
_ID_AT_START = re.compile(r'^\s*\[\s*(\d+)\s*,\s*"([^"\\]{1,36})"')


Item = tuple[Frame, str, str | None] | tuple[str, dict[str, Any]]
"""What a session captures: a frame ``(frame, origin, error)`` or a lifecycle record
``(action, payload)``."""


@dataclass
class Outbound:
    """A CALL sent to the station and not yet answered."""

    action: str
    answer: asyncio.Future[Frame] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    from_upstream: bool = False
    """Proxy mode: the upstream CSMS made this call, so its answer goes back upstream."""


class Session:
    def __init__(
        self,
        *,
        ws: Connection,
        station_id: str,
        protocol: str,
        recorder: Recorder,
        settings: Settings,
        upstream: Connection | None = None,
        conn_id: str | None = None,
        certificates: CertificateProvider | None = None,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self.ws, self.upstream = ws, upstream
        self.station_id, self.protocol = station_id, protocol
        self.recorder, self.settings = recorder, settings
        self.spawn = spawn  # the gateway's: a task kept until it ends
        self.conn_id = conn_id or new_conn_id()
        self.seq = 0
        self.heard = time.monotonic()  # when the station last sent anything
        self.ctx = responder.Context(protocol, settings.heartbeat_interval, station_id, certificates)
        self.from_station: dict[str, str] = {}  # CALL id -> action, awaiting the CSMS's answer
        self.to_station: dict[str, Outbound] = {}  # CALL id -> the CALL awaiting the station
        self._ids: deque[str] = deque(maxlen=REMEMBERED_IDS)
        self._id_set: set[str] = set()
        self._out_slot = asyncio.Lock()  # one outstanding CSMS-initiated CALL at a time
        self.unanswered = 0  # calls read whose answers wait for their capture
        self._caught_up: asyncio.Future[None] | None = None

    @property
    def proxy(self) -> bool:
        return self.upstream is not None

    # -- capture --------------------------------------------------------------------------
    def _number(self, items: tuple[Item, ...]) -> list[Envelope]:
        """Envelopes for frames ``(frame, origin, error)`` and lifecycle records ``(action,
        payload)``, numbered in the order given. Numbered and submitted in one step: the
        recorder keeps the order of submission, so ``seq`` order is the log's order."""
        batch: list[Envelope] = []
        seq, ts = self.seq, envelope.iso_ms()
        for item in items:
            seq += 1
            if len(item) == 3:
                frame, origin, error = item
                batch.append(
                    envelope.of_frame(
                        frame, station_id=self.station_id, origin=origin, protocol=self.protocol,
                        conn_id=self.conn_id, seq=seq, ts=ts, error=error,
                    )
                )  # fmt: skip
            else:
                action, payload = item
                batch.append(
                    envelope.lifecycle(
                        action, payload, station_id=self.station_id,
                        protocol=self.protocol, conn_id=self.conn_id, seq=seq, ts=ts,
                    )
                )  # fmt: skip
        self.seq = seq
        return batch

    async def capture(self, *items: Item) -> None:
        """Number and record frames and lifecycle records; returns once they are durable."""
        await self.recorder.record(self._number(items))

    def capture_nowait(self, *items: Item) -> None:
        """Number and record frames and lifecycle records without waiting for them to be
        durable (a failure is logged): for a session's last, ``Disconnected``. After a
        network blip, thousands of sessions waiting on their last round's ack were all woken
        in one turn of 180 ms."""
        self.recorder.record_then(self._number(items), _not_captured, self.station_id)

    def answer(self, text: str, *items: Item) -> None:
        """Number and record frames, and send ``text`` to the station once they are durable:
        without waiting, so the session reads the station's next frame meanwhile (up to
        ``UNANSWERED`` calls: see ``ready``)."""
        self.unanswered += 1
        self.recorder.record_then(self._number(items), self._send_captured, text)

    def _send_captured(self, text: str, error: BaseException | None) -> None:
        self.unanswered -= 1
        if self._caught_up is not None and not self._caught_up.done():
            self._caught_up.set_result(None)
        if error is None:
            try:
                send_now(self.ws, text)
                return
            except Exception as exc:
                error = exc
        log.error("could not capture or answer a call of %s (%r): closing its connection", self.station_id, error)
        self.spawn(close_quietly(self.ws, 1011, "internal error"))

    @property
    def behind(self) -> bool:
        """Too far behind to read on: ``UNANSWERED`` calls waiting for their capture, or
        answers the station has not read filling the socket's buffer."""
        return self.unanswered >= UNANSWERED or self.ws.paused

    async def ready(self) -> None:
        """Wait until the session may read the station's next frame: what a session that
        awaited each call's capture and its ``send`` did by itself."""
        while self.unanswered >= UNANSWERED:
            self._caught_up = asyncio.get_running_loop().create_future()
            try:
                await self._caught_up
            finally:
                self._caught_up = None
        if self.ws.paused:
            with contextlib.suppress(OSError):  # reset meanwhile: the next read says so
                await self.ws.drain()

    # -- from the station -----------------------------------------------------------------
    def on_station(self, text: str | bytes) -> Coroutine[Any, Any, None] | None:
        """A frame from the station: handled in this call when nothing need wait (a call the
        gateway answers, once captured, without the session waiting for that), else the
        coroutine that handles it, for the caller to await. Two coroutines fewer a call."""
        if _too_large(text, self.settings.max_frame_bytes):
            return self._oversized(text)
        try:
            frame = ocpp_j.decode(text, self.protocol)
        except FrameError as exc:
            return self._unparsable(exc, text, origin="cs")
        if frame.msg_type == ocpp_j.CALL:
            return self._station_call(frame, text)
        if frame.msg_type == ocpp_j.SEND:
            return self._send_frame(frame, text, origin="cs")
        return self._station_answer(frame, text)

    def _station_call(self, frame: Frame, text: str | bytes) -> Coroutine[Any, Any, None] | None:
        assert frame.action is not None
        problem = self._call_problem(frame, sender="cs")
        if self.proxy and (problem is None or problem.code != "RpcFrameworkError"):
            return self._relay_call(frame, text, problem)
        if problem is not None:
            answer = ocpp_j.error(frame.msg_id, problem.code, problem.reason, frame.action)
            self.answer(ocpp_j.encode(answer), (frame, "cs", problem.reason), (answer, "csms", None))
        else:
            payload = responder.respond(frame.action, frame.payload, self.ctx)
            answer = ocpp_j.result(frame.msg_id, frame.action, payload)
            self.answer(ocpp_j.encode(answer), (frame, "cs", None), (answer, "csms", None))
        return None

    async def _relay_call(self, frame: Frame, text: str | bytes, problem: schemas.Violation | None) -> None:
        """Proxy mode: the upstream CSMS judges the call; we record what we saw."""
        assert frame.action is not None
        self.from_station[frame.msg_id] = frame.action
        await self.capture((frame, "cs", _reason(problem)))
        await self._forward_upstream(text)

    def _call_problem(self, frame: Frame, sender: str) -> schemas.Violation | None:
        assert frame.action is not None
        if sender == "cs":
            if frame.msg_id in self._id_set:
                return schemas.Violation("RpcFrameworkError", f"message id {frame.msg_id!r} reused")
            self._remember(frame.msg_id)
        violation = schemas.problem(self.protocol, frame.action, "Request", frame.payload)
        if violation is not None:
            return violation
        allowed = station_initiated if sender == "cs" else csms_initiated
        if not allowed(frame.action):
            who = "the CSMS" if sender == "cs" else "a station"
            return schemas.Violation("NotSupported", f"{frame.action} is sent by {who}")
        return None

    def _remember(self, msg_id: str) -> None:
        if len(self._ids) == self._ids.maxlen:
            self._id_set.discard(self._ids[0])
        self._ids.append(msg_id)
        self._id_set.add(msg_id)

    async def _send_frame(self, frame: Frame, text: str | bytes, origin: str) -> None:
        """SEND (type 6): recorded and never answered."""
        problem = schemas.problem(self.protocol, frame.action, "Request", frame.payload)
        await self.capture((frame, origin, _reason(problem)))
        if self.proxy:
            await (self._forward_upstream(text) if origin == "cs" else self.ws.send(_text(text)))

    async def _station_answer(self, frame: Frame, text: str | bytes) -> None:
        """CALLRESULT, CALLERROR or CALLRESULTERROR from the station."""
        outbound = self.to_station.pop(frame.msg_id, None)
        if outbound is None:
            await self.capture((frame, "cs", "no CALL with this message id is outstanding"))
            return
        frame.action = outbound.action
        problem = None
        if frame.msg_type == ocpp_j.CALLRESULT:
            problem = schemas.problem(self.protocol, frame.action, "Response", frame.payload)
        if outbound.from_upstream:
            await self.capture((frame, "cs", _reason(problem)))
            await self._forward_upstream(text)
        elif problem is not None and self.protocol == "ocpp2.1":
            reply = ocpp_j.error(frame.msg_id, problem.code, problem.reason, frame.action, to_result=True)
            self.answer(ocpp_j.encode(reply), (frame, "cs", problem.reason), (reply, "csms", None))
        else:
            await self.capture((frame, "cs", _reason(problem)))
        if not outbound.answer.done():
            outbound.answer.set_result(frame)

    # -- bad input ------------------------------------------------------------------------
    async def _unparsable(self, exc: FrameError, text: str | bytes, origin: str) -> None:
        """Not OCPP-J: dead-lettered with its raw text; a CALL-like frame gets its CALLERROR."""
        raw = _text(text)
        ts = envelope.iso_ms()
        await self.recorder.deadletter(self.station_id, f"{exc.code}: {exc.description}", raw, ts)
        if origin == "cs":
            self._answer_bad(exc.msg_type, exc.answer_id, exc.code, exc.description)
        elif self.proxy:
            await self.ws.send(raw)

    async def _oversized(self, text: str | bytes) -> None:
        raw, limit = _text(text), self.settings.max_frame_bytes
        size = len(raw.encode())
        match = _ID_AT_START.match(raw[:64])
        kind, msg_id = (int(match[1]), match[2]) if match else (None, ocpp_j.UNREADABLE_ID)
        reason = f"FormatViolation: frame of {size} bytes exceeds the limit of {limit} (raw cut to the limit)"
        await self.recorder.deadletter(self.station_id, reason, raw[:limit], envelope.iso_ms())
        self._answer_bad(kind, msg_id, "FormatViolation", f"frame of {size} bytes exceeds {limit}")

    def _answer_bad(self, kind: int | None, msg_id: str, code: str, description: str) -> None:
        """Answer as OCPP-J requires: CALLERROR to a call (or to what cannot be read),
        CALLRESULTERROR to a result (2.1 only), nothing to an error or a SEND."""
        if kind in (None, MessageType.CALL) or kind not in MessageType.__members__.values():
            answer = ocpp_j.error(msg_id, code, description, details={"by": "twin-gateway"})
        elif kind == MessageType.CALLRESULT and self.protocol == "ocpp2.1":
            answer = ocpp_j.error(msg_id, code, description, to_result=True, details={"by": "twin-gateway"})
        else:
            return
        self.answer(ocpp_j.encode(answer), (answer, "csms", None))

    # -- CSMS-initiated calls -------------------------------------------------------------
    async def call(self, action: str, payload: dict[str, Any], command_id: str | None = None) -> Frame | None:
        """Send a CALL to the station, one at a time; the answer, or None on timeout."""
        async with self._out_slot:
            frame = ocpp_j.call(secrets.token_hex(8), action, payload)
            outbound = Outbound(action)
            self.to_station[frame.msg_id] = outbound
            await self.capture((frame, "csms", None))
            await self.ws.send(ocpp_j.encode(frame))
            try:
                return await asyncio.wait_for(outbound.answer, self.settings.call_timeout)
            except TimeoutError:
                self.to_station.pop(frame.msg_id, None)
                await self.capture(
                    ("CallTimeout", {"msg_id": frame.msg_id, "action": action,
                                     "timeout_s": self.settings.call_timeout, "command_id": command_id})
                )  # fmt: skip
                return None

    # -- proxy mode -----------------------------------------------------------------------
    async def on_upstream(self, text: str | bytes) -> None:
        """A frame from the upstream CSMS: recorded, then forwarded unchanged."""
        try:
            frame = ocpp_j.decode(text, self.protocol)
        except FrameError as exc:
            await self._unparsable(exc, text, origin="csms")
            return
        if frame.msg_type == MessageType.CALL:
            problem = self._call_problem(frame, sender="csms")
            self.to_station[frame.msg_id] = Outbound(frame.action or "", from_upstream=True)
            await self.capture((frame, "csms", _reason(problem)))
        elif frame.msg_type == MessageType.SEND:
            await self._send_frame(frame, text, origin="csms")
            return
        else:
            action = self.from_station.pop(frame.msg_id, None)
            frame.action = action
            problem = None
            if action is None:
                problem = schemas.Violation("ProtocolError", "no CALL with this message id is outstanding")
            elif frame.msg_type == MessageType.CALLRESULT:
                problem = schemas.problem(self.protocol, action, "Response", frame.payload)
            await self.capture((frame, "csms", _reason(problem)))
        await self.ws.send(_text(text))

    async def _forward_upstream(self, text: str | bytes) -> None:
        assert self.upstream is not None
        await self.upstream.send(_text(text))

    def abandon_calls(self) -> None:
        for outbound in self.to_station.values():
            if not outbound.answer.done():
                outbound.answer.cancel()
        self.to_station.clear()


def _reason(problem: schemas.Violation | None) -> str | None:
    return None if problem is None else problem.reason


def new_conn_id() -> str:
    return secrets.token_hex(8)


def _text(data: str | bytes) -> str:
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def _too_large(text: str | bytes, limit: int) -> bool:
    n = len(text)
    if n > limit:
        return True
    return isinstance(text, str) and n * 4 > limit and len(text.encode()) > limit


def _not_captured(station_id: str, error: BaseException | None) -> None:
    if error is not None:
        log.error("could not record the last records of %s: %r", station_id, error)


def send_now(ws: Connection, text: str) -> None:
    """Send a frame in this turn of the loop, without a coroutine: what websockets' ``send``
    does for a text frame, less its wait for a full write buffer (the session's loop waits
    for that before it reads the station's next frame). A connection no longer open is
    left alone: its session is ending, and its station gone."""
    if ws.protocol.state is State.OPEN:
        ws.protocol.send_text(text.encode())
        ws.send_data()


async def close_quietly(ws: Connection, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await ws.close(code, reason[:120])
