"""Re-drive stations against a CSMS: one websocket per station, the recorded CALLs and SENDs
in recorded order at recorded times (scaled by ``speed``), the target's calls answered as
the station answered them then, and each answer of the target compared with the recorded
one.

Never hangs: every wait has a deadline (connecting, each call's answer), a station the
target drops is reconnected before its next frame, and a station that cannot connect is
counted and given up after a few attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from replay.plan import CALL, CONNECT, DISCONNECT, SEND, Script
from twin.gateway.responder import minimal

STATUS_PATHS = (("status",), ("idTokenInfo", "status"))


@dataclass
class Options:
    target: str  # ws://host:port/path: the station id is appended
    speed: float | None = 1.0  # None: as fast as the target answers
    call_timeout: float = 30.0
    connect_timeout: float = 10.0
    connect_attempts: int = 3
    examples: int = 20  # mismatches and errors kept for the summary


@dataclass
class Results:
    stations: int = 0
    frames_sent: int = 0
    responses: int = 0
    mismatches: int = 0
    errors: int = 0
    timeouts: int = 0
    reconnects: int = 0
    answered_target_calls: int = 0
    rtt: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    mismatch_examples: list[dict[str, Any]] = field(default_factory=list)
    error_examples: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "stations": self.stations, "frames_sent": self.frames_sent, "responses": self.responses,
            "mismatches": self.mismatches, "errors": self.errors, "timeouts": self.timeouts,
            "reconnects": self.reconnects, "answered_target_calls": self.answered_target_calls,
            "rtt_p50_ms": _pct(self.rtt, 50), "rtt_p99_ms": _pct(self.rtt, 99),
            "send_timing_error_p50_ms": _pct(self.lateness, 50), "send_timing_error_p99_ms": _pct(self.lateness, 99),
            "seconds": round(self.seconds, 2), "mismatch_examples": self.mismatch_examples,
            "error_examples": self.error_examples,
        }  # fmt: skip


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0] * 1000, 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000, 2)


class StationRun:
    def __init__(self, script: Script, opts: Options, results: Results, clock: Callable[[float], float]) -> None:
        self.script, self.opts, self.results, self.clock = script, opts, results, clock
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.waiting: dict[str, asyncio.Future[list[Any]]] = {}
        self.answers = {action: list(recorded) for action, recorded in script.answers.items()}
        self.next_id = 0

    def error(self, kind: str, detail: str, **where: Any) -> None:
        self.results.errors += 1
        if len(self.results.error_examples) < self.opts.examples:
            self.results.error_examples.append({"station_id": self.script.station_id, "error": kind,
                                                "detail": detail[:300], **where})  # fmt: skip

    async def run(self) -> None:
        try:
            for step in self.script.steps:
                await self.wait_until(step.at, step.kind in (CALL, SEND))
                if step.kind == CONNECT:
                    await self.close()
                    await self.open()
                elif step.kind == DISCONNECT:
                    await self.close()
                elif self.ws is None and not await self.open(again=True):
                    continue  # counted; the next step tries again
                elif step.kind == SEND:
                    await self.send([6, step.msg_id, step.action, step.payload])
                elif step.kind == CALL:
                    await self.call(step.action, step.payload, step.expected)
        finally:
            await self.close()

    async def wait_until(self, at: float, measured: bool) -> None:
        due = self.clock(at)
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if measured and self.opts.speed is not None:
            self.results.lateness.append(max(0.0, time.monotonic() - due))

    async def open(self, again: bool = False) -> bool:
        url = self.opts.target.rstrip("/") + "/" + self.script.station_id
        for attempt in range(self.opts.connect_attempts):
            try:
                self.ws = await asyncio.wait_for(
                    connect(
                        url,
                        subprotocols=[Subprotocol(self.script.protocol)],
                        open_timeout=self.opts.connect_timeout,
                        max_size=2**20,
                        ping_interval=None,
                    ),
                    self.opts.connect_timeout + 1,
                )
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                if attempt == self.opts.connect_attempts - 1:
                    self.error("connect", f"{type(exc).__name__}: {exc}")
                    return False
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if again:
                self.results.reconnects += 1
            self.reader = asyncio.create_task(self.read(self.ws))  # type: ignore[arg-type]
            return True
        return False

    async def close(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(BaseException):
                await self.reader
            self.reader = None
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("connection closed"))
        self.waiting.clear()

    async def send(self, frame: list[Any]) -> bool:
        if self.ws is None:
            return False
        try:
            await self.ws.send(orjson.dumps(frame).decode())
        except ConnectionClosed as exc:
            self.ws = None
            self.error(
                "dropped", f"the target closed the connection ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
            )
            return False
        self.results.frames_sent += 1
        return True

    async def call(self, action: str, payload: dict[str, Any], expected: dict[str, Any] | None) -> None:
        self.next_id += 1
        msg_id = f"r{self.next_id}"
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.waiting[msg_id] = future
        started = time.monotonic()
        if not await self.send([2, msg_id, action, payload]):
            self.waiting.pop(msg_id, None)
            return
        try:
            answer = await asyncio.wait_for(future, self.opts.call_timeout)
        except TimeoutError:
            self.results.timeouts += 1
            self.error("timeout", f"no answer to {action} in {self.opts.call_timeout:g} s", action=action)
            return
        except ConnectionError:
            self.error("dropped", f"connection closed before the answer to {action}", action=action)
            return
        finally:
            self.waiting.pop(msg_id, None)
        self.results.rtt.append(time.monotonic() - started)
        self.results.responses += 1
        self.compare(action, answer, expected)

    def compare(self, action: str, answer: list[Any], expected: dict[str, Any] | None) -> None:
        if expected is None:
            return
        got = _essence(answer[0], answer[2] if answer[0] == 3 else answer[2:])
        recorded = expected["payload"]
        body = recorded if expected["msg_type"] == 3 else [recorded.get("errorCode"), recorded.get("errorDescription")]
        want = _essence(expected["msg_type"], body)
        if got != want:
            self.results.mismatches += 1
            if len(self.results.mismatch_examples) < self.opts.examples:
                self.results.mismatch_examples.append(
                    {"station_id": self.script.station_id, "action": action, "expected": want, "got": got}
                )

    async def read(self, ws: ClientConnection) -> None:
        try:
            async for text in ws:
                try:
                    frame = orjson.loads(text)
                    kind, msg_id = frame[0], frame[1]
                except Exception:
                    self.error("bad frame", f"the target sent {str(text)[:80]!r}")
                    continue
                if kind in (3, 4, 5) and msg_id in self.waiting:
                    future = self.waiting.pop(msg_id)
                    if not future.done():
                        future.set_result(frame)
                elif kind == 2 and len(frame) >= 4:
                    await self.answer(ws, msg_id, frame[2])
        except ConnectionClosed:
            pass
        finally:
            if self.ws is ws:
                self.ws = None  # dropped by the target: the next step reconnects
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))

    async def answer(self, ws: ClientConnection, msg_id: str, action: str) -> None:
        recorded = self.answers.get(action)
        if recorded:
            r = recorded.pop(0)
            reply = [r["msg_type"], msg_id, r["payload"]] if r["msg_type"] == 3 else [
                r["msg_type"], msg_id, r["payload"].get("errorCode", "InternalError"),
                r["payload"].get("errorDescription", ""), r["payload"].get("errorDetails", {})]  # fmt: skip
        else:
            reply = [3, msg_id, minimal(self.script.protocol, action)]
        with contextlib.suppress(ConnectionClosed):
            await ws.send(orjson.dumps(reply).decode())
            self.results.answered_target_calls += 1


def _essence(msg_type: int, body: Any) -> dict[str, Any]:
    """What replay compares: the kind of answer, its status fields, or its error code."""
    if msg_type != 3:
        return {"error": body[0] if isinstance(body, list) and body else None}
    out: dict[str, Any] = {}
    for path in STATUS_PATHS:
        value: Any = body
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            out[".".join(path)] = value
    return out


async def run(scripts: list[Script], opts: Options, progress: Callable[[int], None] | None = None) -> Results:
    """Replay every script at once; returns what happened."""
    results = Results(stations=len(scripts))
    if not scripts:
        return results
    first = min(s.steps[0].at for s in scripts if s.steps) if any(s.steps for s in scripts) else 0.0
    start = time.monotonic() + 0.2
    speed = opts.speed

    def clock(at: float) -> float:
        return start if speed is None else start + (at - first) / speed

    began = time.monotonic()
    runs = [StationRun(script, opts, results, clock) for script in scripts]
    tasks = [asyncio.create_task(r.run()) for r in runs]
    if progress is not None:
        watcher = asyncio.create_task(_watch(results, progress))
    try:
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                results.errors += 1
                results.error_examples.append({"error": "station task", "detail": repr(outcome)[:300]})
    finally:
        if progress is not None:
            watcher.cancel()
            progress(results.frames_sent)
    results.seconds = time.monotonic() - began
    return results


async def _watch(results: Results, progress: Callable[[int], None]) -> None:
    while True:
        progress(results.frames_sent)
        await asyncio.sleep(0.2)
