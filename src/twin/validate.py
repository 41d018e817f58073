"""``twin validate``: is a capture what a gateway would have written?

Checks, per record: the envelope's fields and types, the payload against its action's
schema for the connection's protocol (also for records marked ``valid: true``); per
connection: ``seq`` from 1 without gaps or repeats, capture time never going back, a
``Connected`` record first, every CALL answered once and every answer answering a CALL of
the other side. Records the gateway marked ``valid: false`` are counted, not reported: a
capture of bad input is still a good capture.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twin.schemas import Kind, problem

TYPES = {"station_id": str, "origin": str, "msg_type": int, "msg_id": str, "ts": str, "protocol": str,
         "conn_id": str, "seq": int, "valid": bool}  # fmt: skip
ORIGINS = {"cs", "csms", "gateway"}
KIND: dict[int, Kind] = {2: "Request", 3: "Response", 6: "Request"}


@dataclass
class Connection:
    seq: int = 0
    ts: str = ""
    outstanding: dict[str, tuple[str, str]] = field(default_factory=dict)  # msg_id -> (origin, action)


@dataclass
class Report:
    frames: int = 0
    stations: int = 0
    connections: int = 0
    invalid: int = 0  # records with a problem found here
    marked_invalid: int = 0  # records the gateway captured as valid: false
    unanswered: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.invalid == 0 and self.unanswered == 0

    def as_json(self, limit: int = 50) -> dict[str, Any]:
        return {
            "frames": self.frames, "invalid": self.invalid, "ok": self.ok, "stations": self.stations,
            "connections": self.connections, "unanswered_calls": self.unanswered,
            "marked_invalid_by_gateway": self.marked_invalid, "problems": dict(self.problems.most_common()),
            "actions": dict(sorted(self.actions.items())), "examples": self.examples[:limit],
        }  # fmt: skip


def check(records: Iterable[Mapping[str, Any]], examples: int = 50) -> Report:
    report = Report()
    conns: dict[str, Connection] = {}
    stations: set[str] = set()

    def bad(record: Mapping[str, Any], kind: str, detail: str) -> None:
        report.invalid += 1
        report.problems[kind] += 1
        if len(report.examples) < examples:
            where = {k: record.get(k) for k in ("station_id", "conn_id", "seq", "action", "msg_type")}
            report.examples.append({**where, "problem": kind, "detail": detail})

    for record in records:
        report.frames += 1
        if not isinstance(record, dict):
            bad({}, "not an envelope", repr(record)[:80])
            continue
        wrong = [k for k, t in TYPES.items() if not isinstance(record.get(k), t)]
        if wrong or record.get("origin") not in ORIGINS:
            bad(record, "envelope field", f"missing or mistyped: {', '.join(wrong) or 'origin'}")
            continue
        stations.add(record["station_id"])
        report.actions[record.get("action") or "?"] += 1
        conn = conns.get(record["conn_id"])
        if conn is None:
            conn = conns[record["conn_id"]] = Connection()
            if record["action"] not in ("Connected", "Refused"):
                bad(record, "connection without Connected", "the first record of a connection is not Connected")
        if record["seq"] != conn.seq + 1:
            bad(record, "seq", f"seq {record['seq']} after {conn.seq}")
        conn.seq = record["seq"]
        if record["ts"] < conn.ts:
            bad(record, "time goes back", f"{record['ts']} after {conn.ts}")
        conn.ts = max(conn.ts, record["ts"])
        if not record["valid"]:
            report.marked_invalid += 1
            continue
        msg_type, action = record["msg_type"], record.get("action")
        if msg_type == 0:
            continue
        if msg_type == 2:
            if record["msg_id"] in conn.outstanding:
                bad(record, "message id reused", record["msg_id"])
            conn.outstanding[record["msg_id"]] = (record["origin"], action or "")
        elif msg_type in (3, 4, 5):
            call = conn.outstanding.pop(record["msg_id"], None)
            if call is None or call[0] == record["origin"]:
                bad(record, "answer without a call", record["msg_id"])
                continue
            if action != call[1]:
                bad(record, "answer action", f"{action} answers a {call[1]}")
        elif msg_type != 6:
            bad(record, "message type", str(msg_type))
            continue
        if msg_type in KIND:
            violation = problem(record["protocol"], action, KIND[msg_type], record.get("payload"))
            if violation is not None:
                bad(record, f"schema: {action}", f"{violation.code}: {violation.reason}")
    report.unanswered = sum(len(c.outstanding) for c in conns.values())
    report.stations, report.connections = len(stations), len(conns)
    return report
