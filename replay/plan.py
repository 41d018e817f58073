"""From a capture to what each station will do in a replay.

A station's script is its recorded records turned into steps: connect (with the recorded
subprotocol), send a CALL (with the recorded answer to compare with), send a SEND,
disconnect. The recorded answers the station gave to its CSMS's calls go into queues by
action: a replayed station answers the target's calls with them, in order.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from twin.envelope import parse_ts

CONNECT, DISCONNECT, CALL, SEND = "connect", "disconnect", "call", "send"


@dataclass
class Step:
    at: float  # seconds since the epoch, as recorded (after any shift)
    kind: str
    action: str = ""
    msg_id: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] | None = None  # the recorded answer record of a CALL


@dataclass
class Script:
    station_id: str
    protocol: str
    steps: list[Step] = field(default_factory=list)
    answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # action -> recorded CS answers

    @property
    def frames(self) -> int:
        return sum(step.kind in (CALL, SEND) for step in self.steps)


@dataclass
class Selection:
    stations: list[str] | None = None  # globs
    since: str | None = None
    until: str | None = None
    prefix: str = ""
    shift_to: datetime | None = None  # move the first record to this moment


def scripts(records: Iterable[dict[str, Any]], sel: Selection) -> list[Script]:
    since = parse_ts(sel.since) if sel.since else None
    until = parse_ts(sel.until) if sel.until else None
    by_station: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        station = r["station_id"]
        if sel.stations and not any(fnmatch.fnmatchcase(station, g) for g in sel.stations):
            continue
        ts = parse_ts(r["ts"])
        if (since and ts < since) or (until and ts > until):
            continue
        by_station.setdefault(station, []).append(r)
    if not by_station:
        return []
    first = min(parse_ts(rs[0]["ts"]) for rs in by_station.values())
    shift = (sel.shift_to - first) if sel.shift_to else timedelta(0)
    return [_script(station, rs, sel.prefix, shift) for station, rs in sorted(by_station.items())]


def _script(station: str, records: list[dict[str, Any]], prefix: str, shift: timedelta) -> Script:
    script = Script(prefix + station, records[0].get("protocol") or "ocpp2.1")
    answers: dict[tuple[str, str], dict[str, Any]] = {}  # (conn_id, msg_id) -> the CSMS's answer record
    csms_calls: dict[tuple[str, str], str] = {}
    for r in records:
        key = (r["conn_id"], r["msg_id"])
        if r["msg_type"] in (3, 4, 5) and r["origin"] == "csms":
            answers[key] = r
        elif r["msg_type"] == 2 and r["origin"] == "csms":
            csms_calls[key] = r["action"]
        elif r["msg_type"] in (3, 4, 5) and r["origin"] == "cs" and key in csms_calls:
            script.answers.setdefault(csms_calls[key], []).append(r)
    connected = False
    for r in records:
        at = (parse_ts(r["ts"]) + shift).timestamp()
        origin, msg_type, action = r["origin"], r["msg_type"], r.get("action") or ""
        if msg_type == 0 and action == "Connected":
            script.steps.append(Step(at, CONNECT))
            script.protocol = r.get("protocol") or script.protocol
            connected = True
        elif msg_type == 0 and action == "Disconnected" and connected:
            script.steps.append(Step(at, DISCONNECT))
            connected = False
        elif origin == "cs" and msg_type in (2, 6) and r.get("valid", True):
            payload = shift_times(r["payload"], shift) if shift else r["payload"]
            expected = answers.get((r["conn_id"], r["msg_id"])) if msg_type == 2 else None
            script.steps.append(Step(at, CALL if msg_type == 2 else SEND, action, r["msg_id"], payload, expected))
    return script


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def shift_times(value: Any, shift: timedelta) -> Any:
    """``value`` with every ISO-8601 date-time string moved by ``shift``."""
    if isinstance(value, dict):
        return {k: shift_times(v, shift) for k, v in value.items()}
    if isinstance(value, list):
        return [shift_times(v, shift) for v in value]
    if isinstance(value, str) and _ISO.match(value):
        moved = (parse_ts(value) + shift).astimezone(UTC)
        return moved.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moved.microsecond // 1000:03d}Z"
    return value
