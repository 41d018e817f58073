"""``twin import``: OCPP-J logs from elsewhere, turned into the gateway's envelopes.

Accepted shapes, one frame per line (blank lines and ``#`` comments skipped):

1. JSON objects with a time, a station and the frame, under any of these names:
   time ``ts``/``timestamp``/``time``/``@timestamp``; station ``station_id``/``stationId``/
   ``charge_point_id``/``chargePointId``/``cp_id``/``identity``/``chargeBoxId``; frame
   ``message``/``frame``/``msg``/``data``/``raw`` (the OCPP-J array, or that array as a JSON
   string); optionally ``direction``/``dir`` and ``protocol``.
2. Text: ``<ISO time> <station> [<direction>] <OCPP-J array>``, e.g.
   ``2026-03-01T08:00:00.123Z CS-1 -> [2,"19","Heartbeat",{}]``.

Directions, as a CSMS logs them: ``cs``, ``in``, ``rx``, ``recv``, ``received``,
``incoming``, ``cs->csms``, ``from_cs`` and the arrows ``->`` / ``>>`` (read: station ->)
mean the station sent it; ``csms``, ``out``, ``tx``, ``send``, ``sent``, ``outgoing``,
``csms->cs``, ``to_cs``, ``<-`` / ``<<`` that the CSMS did. Without one,
a CALL's sender follows from its action (every OCPP action but DataTransfer goes one way;
DataTransfer is taken as the station's) and an answer comes from the other side of its CALL.

Each station becomes one connection opened by a ``Connected`` record (payload
``{"subprotocol", "imported": true}``) at its first frame; every payload is validated
against its schema as the gateway would (``valid``, ``error``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from twin import envelope, messages
from twin.schemas import Kind, problem

TIME_KEYS = ("ts", "timestamp", "time", "@timestamp")
STATION_KEYS = ("station_id", "stationId", "charge_point_id", "chargePointId", "cp_id", "identity", "chargeBoxId")
FRAME_KEYS = ("message", "frame", "msg", "data", "raw")
FROM_CS = {"cs", "in", "rx", "recv", "received", "incoming", "->", ">>", "cs->csms", "from_cs"}
FROM_CSMS = {"csms", "out", "tx", "send", "sent", "outgoing", "<-", "<<", "csms->cs", "to_cs"}
TEXT = re.compile(r"^(?P<ts>\S+)\s+(?P<station>\S+)\s+(?:(?P<dir>\S+)\s+)?(?P<frame>\[.*\])\s*$")


class ImportError_(ValueError):
    """A line that is none of the accepted shapes; the message says where and why."""


def parse_line(line: str, number: int) -> tuple[str, str, str | None, list[Any], str | None]:
    """(time, station, direction, frame, protocol) of one line."""
    text = line.strip()
    if text.startswith("{"):
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ImportError_(f"line {number}: not JSON ({exc})") from None
        ts = next((obj[k] for k in TIME_KEYS if k in obj), None)
        station = next((obj[k] for k in STATION_KEYS if k in obj), None)
        frame = next((obj[k] for k in FRAME_KEYS if k in obj), None)
        direction, protocol = obj.get("direction", obj.get("dir")), obj.get("protocol")
    else:
        m = TEXT.match(text)
        if not m:
            raise ImportError_(f"line {number}: expected '<time> <station> [<direction>] <OCPP-J array>'")
        ts, station, direction, frame, protocol = m["ts"], m["station"], m["dir"], m["frame"], None
    if isinstance(frame, str):
        try:
            frame = orjson.loads(frame)
        except orjson.JSONDecodeError:
            raise ImportError_(f"line {number}: the frame is not JSON") from None
    if ts is None or not station or not isinstance(frame, list) or len(frame) < 3:
        raise ImportError_(f"line {number}: needs a time, a station id and an OCPP-J array")
    return _iso(ts, number), str(station), direction, frame, protocol


def _iso(ts: Any, number: int) -> str:
    try:
        if isinstance(ts, int | float):
            moment = datetime.fromtimestamp(ts / 1000 if ts > 1e11 else ts, UTC)
        else:
            moment = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ImportError_(f"line {number}: {ts!r} is not a time") from None
    return envelope.iso_ms(moment.timestamp())


def convert(lines: Iterable[str], protocol: str = "ocpp2.1", source: str = "import") -> Iterator[dict[str, Any]]:
    """Envelopes, in the order of the log."""
    conns: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        ts, station, direction, frame, proto = parse_line(line, number)
        conn = conns.get(station)
        if conn is None:
            digest = hashlib.sha1(f"{source}:{station}".encode()).hexdigest()[:16]
            conn = conns[station] = {"id": digest, "seq": 0, "calls": {}, "protocol": proto or protocol}
            conn["seq"] += 1
            opened = {"subprotocol": conn["protocol"], "imported": True}
            yield envelope.lifecycle(  # type: ignore[misc]
                "Connected", opened, station_id=station, protocol=conn["protocol"], conn_id=digest, seq=1, ts=ts
            )
        yield _envelope(conn, station, ts, direction, frame)


def _envelope(conn: dict[str, Any], station: str, ts: str, direction: str | None, frame: list[Any]) -> dict[str, Any]:
    conn["seq"] += 1
    msg_type, msg_id = frame[0], str(frame[1])
    protocol = conn["protocol"]
    said = (direction or "").strip().lower()
    origin = "cs" if said in FROM_CS else "csms" if said in FROM_CSMS else None
    action: str | None = None
    payload: Any = {}
    error: str | None = None
    if msg_type in (2, 6):
        action, payload = str(frame[2]), frame[3] if len(frame) > 3 else {}
        if origin is None:
            origin = "csms" if msg_type == 2 and messages.csms_initiated(action) else "cs"
        if msg_type == 2:
            conn["calls"][msg_id] = (origin, action)
        kind: Kind = "Request"
    elif msg_type in (3, 4, 5):
        call = conn["calls"].pop(msg_id, None)
        action = call[1] if call else None
        if origin is None:
            origin = ("cs" if call[0] == "csms" else "csms") if call else "cs"
        if msg_type == 3:
            payload = frame[2]
        else:
            payload = {"errorCode": frame[2], "errorDescription": frame[3] if len(frame) > 3 else "",
                       "errorDetails": frame[4] if len(frame) > 4 else {}}  # fmt: skip
        kind = "Response"
    else:
        origin = origin or "cs"
        error = f"unknown message type {msg_type!r}"
    if error is None and msg_type in (2, 3, 6):
        violation = problem(protocol, action, kind, payload)
        error = f"{violation.code}: {violation.reason}" if violation else None
    return {"station_id": station, "origin": origin, "msg_type": msg_type if isinstance(msg_type, int) else -1,
            "msg_id": msg_id, "action": action, "payload": payload if isinstance(payload, dict) else {"value": payload},
            "ts": ts, "protocol": protocol, "conn_id": conn["id"], "seq": conn["seq"], "valid": error is None,
            "error": error}  # fmt: skip
