"""The frame envelope of ARCHITECTURE.md: one JSON object per OCPP-J frame or lifecycle record.

Envelopes are plain dicts with the contract's field names, so what the gateway writes, what
Kafka carries, what Parquet stores and what the fold reads are the same thing. ``dumps`` and
``loads`` are the one codec for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypedDict

import orjson

from twin.ocpp_j import Frame

FIELDS = (
    "station_id", "origin", "msg_type", "msg_id", "action", "payload",
    "ts", "protocol", "conn_id", "seq", "valid", "error",
)  # fmt: skip

LIFECYCLE = 0
"""``msg_type`` of the gateway's own records (``origin: "gateway"``)."""


class Envelope(TypedDict):
    station_id: str
    origin: str
    msg_type: int
    msg_id: str
    action: str | None
    payload: dict[str, Any]
    ts: str
    protocol: str
    conn_id: str
    seq: int
    valid: bool
    error: str | None


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text
_last: list[Any] = [None, ""]  # the last millisecond formatted, and its text


def iso_ms(epoch: float | None = None) -> str:
    """ISO-8601 UTC with milliseconds: ``2026-03-01T08:00:00.123Z``. Every frame gets one,
    so the seconds part is formatted once a second, and a millisecond's text once (a busy
    gateway stamps a dozen frames a millisecond)."""
    ms = round((time.time() if epoch is None else epoch) * 1_000_000) // 1000  # as datetime rounds
    if ms == _last[0]:
        text: str = _last[1]
        return text
    whole, fraction = divmod(ms, 1000)
    if whole != _second[0]:
        _second[0], _second[1] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    text = _last[1] = f"{_second[1]}.{fraction:03d}Z"
    _last[0] = ms
    return text


_minutes: dict[int, str] = {}
_second_parts: list[str] = []  # built at the first use: 40 ms, which every process importing envelope paid


def iso_of_ms(ms: int) -> str:
    """:func:`iso_ms` of an integer count of milliseconds since the epoch, built from a
    cached minute and a table of the 60,000 ``SS.mmmZ`` endings: what the simulator
    stamps hundreds of thousands of records a second with."""
    minute, rest = divmod(ms, 60_000)
    prefix = _minutes.get(minute)
    if prefix is None:
        if not _second_parts:
            _second_parts.extend(f"{n // 1000:02d}.{n % 1000:03d}Z" for n in range(60_000))
        if len(_minutes) > 100_000:
            _minutes.clear()
        prefix = _minutes[minute] = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))
    return prefix + _second_parts[rest]


def parse_ts(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def of_frame(
    frame: Frame,
    *,
    station_id: str,
    origin: str,
    protocol: str,
    conn_id: str,
    seq: int,
    ts: str | None = None,
    error: str | None = None,
) -> Envelope:
    return {
        "station_id": station_id,
        "origin": origin,
        "msg_type": int(frame.msg_type),
        "msg_id": frame.msg_id,
        "action": frame.action,
        "payload": frame.payload,
        "ts": ts or iso_ms(),
        "protocol": protocol,
        "conn_id": conn_id,
        "seq": seq,
        "valid": error is None,
        "error": error,
    }


def lifecycle(
    action: str,
    payload: dict[str, Any],
    *,
    station_id: str,
    protocol: str,
    conn_id: str,
    seq: int,
    ts: str | None = None,
) -> Envelope:
    """A gateway record: ``Connected``, ``Disconnected``, ``Refused``, ``CallTimeout``,
    ``CommandUndelivered``."""
    return {
        "station_id": station_id,
        "origin": "gateway",
        "msg_type": LIFECYCLE,
        "msg_id": f"{conn_id}:{seq}",
        "action": action,
        "payload": payload,
        "ts": ts or iso_ms(),
        "protocol": protocol,
        "conn_id": conn_id,
        "seq": seq,
        "valid": True,
        "error": None,
    }


dumps: Callable[[Envelope | dict[str, Any]], bytes] = orjson.dumps
"""An envelope's bytes (orjson's own function: a call of ours around it cost as much again)."""


def loads(data: bytes | str) -> Envelope:
    value: Envelope = orjson.loads(data)
    return value
