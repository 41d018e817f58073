"""The wire: a station's planned exchanges become the envelopes a gateway in csms mode would
have captured. Frames leave in time order on numbered connections (``conn_id``, ``seq``);
OCPP-J allows one outstanding CALL per direction, so an exchange due while the previous one
in its direction is unanswered waits for that answer; TransactionEvents due while the
station is offline are queued and sent on reconnection with ``offline: true`` (OCPP 2.0.1
E04); everything else due then is lost.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from twin import envelope
from twin.simulator.fleet import Station


@dataclass(slots=True)
class Exchange:
    """A CALL and its answer, a SEND, or a lifecycle record (``origin`` "gateway")."""

    t: int  # ms since the epoch
    origin: str  # who sends the call: "cs", "csms" or "gateway"
    action: str
    payload: dict[str, Any]
    answer: dict[str, Any] | None = None  # None: a SEND or a lifecycle record
    order: int = 0  # tie-break: creation order


class Wire:
    """One station's side of the log. ``rng`` is the station's own: connection ids are drawn
    from it between days, so a seed gives the same capture."""

    def __init__(self, station: Station, rng: random.Random) -> None:
        self.s, self.rng = station, rng
        self.pending: list[Exchange] = []
        self.order = 0  # creation order, shared by planned exchanges and written frames
        self.conn_count = 0
        self.conn_id = ""
        self.seqs: dict[str, int] = {}
        self.msg = 0
        self.free = {"cs": 0, "csms": 0}  # when each direction may send again
        self.queued: list[Exchange] = []  # TransactionEvents held while offline
        self.spill: list[tuple[int, int, dict[str, Any]]] = []  # frames already due past the last end
        self.emitted = 0  # everything before this moment is written

    def add(self, t: int, origin: str, action: str, payload: dict[str, Any], answer: dict[str, Any] | None) -> None:
        """Plan an exchange. One planned before the last day already written (a reservation
        made the evening before a session after midnight) happens as that day begins."""
        self.order += 1
        self.pending.append(Exchange(max(int(t), self.emitted), origin, action, payload, answer, self.order))

    def emit_until(self, end: int, final: bool = False) -> list[dict[str, Any]]:
        """The envelopes of every exchange due before ``end``, in log order; the rest wait.
        A frame of such an exchange that lands past ``end`` (an answer, a queued frame) waits
        too, unless ``final``, so that ``seq`` follows capture time from one day to the next."""
        due = [x for x in self.pending if x.t < end]
        self.pending = [x for x in self.pending if x.t >= end]
        self.emitted = end
        due.sort(key=lambda x: (x.t, x.order))
        out, self.spill = self.spill, []
        for x in due:
            if x.origin == "gateway":
                if x.action == "Connected" and not self.conn_id:
                    self.open_connection(x.t, out)
                elif x.action == "Disconnected" and self.conn_id:
                    self.record(out, max(x.t, *self.free.values()), "gateway", 0, None, x.action, x.payload)
                    self.conn_id = ""
                continue
            if not self.conn_id:  # offline
                if x.action == "TransactionEvent" and x.origin == "cs":
                    x.payload["offline"] = True
                    self.queued.append(x)
                continue
            self.exchange(out, x)
        out.sort(key=lambda r: (r[0], r[1]))
        if not final:
            self.spill = [r for r in out if r[0] >= end]
            out = [r for r in out if r[0] < end]
        records = []
        for _, _, r in out:  # numbered in the order a gateway would have written them
            seq = self.seqs[r["conn_id"]] = self.seqs.get(r["conn_id"], 0) + 1
            r["seq"] = seq
            if r["msg_id"] is None:
                r["msg_id"] = f"{r['conn_id']}:{seq}"
            records.append(r)
        return records

    def open_connection(self, t: int, out: list[tuple[int, int, dict[str, Any]]]) -> None:
        self.conn_count += 1
        # drawn from the station's rng (a seed gives the same capture), and unique to the station
        # and the moment: fleets simulated apart (another --prefix, --start) never share one
        drawn = f"{self.s.station_id}|{t}|{self.rng.getrandbits(64)}"
        self.conn_id = hashlib.blake2b(drawn.encode(), digest_size=8).hexdigest()
        self.free = {"cs": t, "csms": t}
        payload = {"subprotocol": self.s.protocol, "security_profile": 2,
                   "remote_address": f"10.{self.s.index // 250 % 250}.{self.s.index % 250}.2:{40000 + self.conn_count}",
                   "mode": "csms"}  # fmt: skip
        self.record(out, t, "gateway", 0, None, "Connected", payload)
        queued, self.queued = self.queued, []
        for i, x in enumerate(queued):  # replayed after reconnection, in order
            x.t = t + 3_000 + i * 100
            self.exchange(out, x)

    def exchange(self, out: list[tuple[int, int, dict[str, Any]]], x: Exchange) -> None:
        t = max(x.t, self.free[x.origin])
        self.msg += 1
        msg_id = f"{self.s.index:x}-{self.msg}"
        if x.answer is None:  # a SEND
            self.record(out, t, x.origin, 6, msg_id, x.action, x.payload)
            return
        self.record(out, t, x.origin, 2, msg_id, x.action, x.payload)
        latency = 15 + (self.msg * 7919) % 60
        answerer = "csms" if x.origin == "cs" else "cs"
        self.record(out, t + latency, answerer, 3, msg_id, x.action, x.answer)
        self.free[x.origin] = t + latency + 1

    def record(self, out: list[tuple[int, int, dict[str, Any]]], t: int, origin: str, msg_type: int,
               msg_id: str | None, action: str, payload: dict[str, Any]) -> None:  # fmt: skip
        self.order += 1
        out.append((t, self.order, {
            "station_id": self.s.station_id, "origin": origin, "msg_type": msg_type, "msg_id": msg_id,
            "action": action, "payload": payload, "ts": envelope.iso_of_ms(t), "protocol": self.s.protocol,
            "conn_id": self.conn_id, "seq": 0, "valid": True, "error": None,
        }))  # fmt: skip
