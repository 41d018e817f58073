"""The fold: ``apply(twin, record) -> twin``, pure and deterministic.

No clock, no I/O, no randomness: the live worker, ``twin rebuild``, time travel and the
tests call this one function, so their twins agree field for field. The twin passed in is
never changed: edits are copy-on-write along the paths they touch (:class:`Change`), so an
apply costs the few small dicts it rewrites, not a deep copy.

Aspects register handlers per action and phase; the engine dispatches:

- ``call``: a CALL or SEND, with its payload (station-initiated calls take effect here);
- ``result``: a CALLRESULT, with the CALL's payload at hand (a CSMS-initiated call takes
  effect on its Accepted answer, not on the request);
- ``error``: a CALLERROR or CALLRESULTERROR to a call;
- ``lifecycle``: the gateway's records (``Connected``, ``Disconnected``, ...).

Records are idempotent under redelivery: a ``(conn_id, seq)`` at or below the highest seen
on its connection changes nothing (the twin keeps its current connection's highest ``seq``
as ``_conn``/``_seq`` and the other connections' in ``_seen``, so a record on the connection
of the record before, as nearly all are, copies no dict of marks). Invalid records are
counted and otherwise ignored. A handler that fails leaves the twin as it was, but for an
error count: the fold never raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Twin = dict[str, Any]
Record = Mapping[str, Any]
Handler = Callable[["Change", "Event"], None]

_HANDLERS: dict[tuple[str, str], list[Handler]] = {}
_ANSWER_READERS: set[str] = set()  # actions whose answers a handler reads: keep the request
PROGRESS_EVERY = 10_000
REMEMBERED_CONNECTIONS = 16
"""How many connections' highest ``seq`` a twin keeps, to recognise redelivered records."""


def on(action: str, phase: str = "call") -> Callable[[Handler], Handler]:
    """Register an aspect's handler for an action in a phase."""

    def register(fn: Handler) -> Handler:
        _HANDLERS.setdefault((action, phase), []).append(fn)
        if phase in ("result", "error"):
            _ANSWER_READERS.add(action)
        _ROUTES.clear()
        return fn

    return register


def folded_actions() -> set[str]:
    return {action for action, _ in _HANDLERS}


class Event:
    """What a handler sees: the record, and for answers the CALL they answer. The payload and
    the time are read from the record once: every handler of every record reads them.
    ``evse_id``: the EVSE the record is about, once a handler has worked it out (the energy
    aspect, for a TransactionEvent that may not name it), for the handlers after it."""

    __slots__ = ("record", "request", "payload", "ts", "evse_id")

    def __init__(self, record: Record, request: dict[str, Any] | None = None) -> None:
        self.record = record
        self.request = request
        self.payload: dict[str, Any] = record.get("payload")  # type: ignore[assignment]
        self.ts: str = record.get("ts")  # type: ignore[assignment]
        self.evse_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.payload.get("status") == "Accepted"


class Change:
    """Copy-on-write edits of one twin: every dict on a path written through is a copy."""

    __slots__ = ("twin", "_fresh")

    def __init__(self, twin: Twin, copied: bool = False) -> None:
        """``copied``: ``twin`` is already a copy of its own (the engine's), not copied again."""
        self.twin: Twin = twin if copied else dict(twin)
        self._fresh = {id(self.twin)}

    def at(self, *path: str) -> dict[str, Any]:
        """The dict at ``path``, ready to be written (created where missing)."""
        node = self.twin
        for key in path:
            node = self.at_in(node, key)
        return node

    def at_in(self, node: dict[str, Any], key: str) -> dict[str, Any]:
        """``at(*path, key)`` for ``node``, the dict ``at(*path)`` gave (or the twin): the child
        ready to be written, without walking the path again."""
        child = node.get(key)
        if child is None:
            child = node[key] = {}
            self._fresh.add(id(child))
        elif id(child) not in self._fresh:
            child = node[key] = child.copy()
            self._fresh.add(id(child))
        return child

    def owns(self, node: dict[str, Any]) -> bool:
        """Whether ``node`` is a dict this change made or copied: written through as it is."""
        return id(node) in self._fresh

    def own(self, value: dict[str, Any]) -> dict[str, Any]:
        """``value``, a dict this change made, marked as its own: written through, not copied."""
        self._fresh.add(id(value))
        return value

    def get(self, *path: str) -> Any:
        node: Any = self.twin
        for key in path:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return node

    def remove(self, *path: str) -> None:
        parent = self.at(*path[:-1])
        parent.pop(path[-1], None)


def new_twin(station_id: str) -> Twin:
    return {
        "station_id": station_id,
        "protocol": None,
        "as_of": None,
        "frames_folded": 0,
        "identity": {},
        "connection": {"online": False, "last_seen": None, "connected_since": None},
        "evses": {},
        "reservations": {},
        "monitoring": {"base": None, "monitors": {}, "last_event": None},
        "certificates": {},
        "security": {"profile": None, "events": 0, "last_event": None},
        "invalid_frames": 0,
        "fold_errors": 0,
        "_seen": {},
        "_pending": {},
    }


# record kinds -> phase
_PHASE = {0: "lifecycle", 2: "call", 3: "result", 4: "error", 5: "error", 6: "call"}
_ROUTES: dict[tuple[str, Any], tuple[str | None, tuple[Handler, ...], bool]] = {}
"""``(action, msg_type)`` -> its phase, its handlers, and whether a handler reads the answers
to this action: worked out at a kind's first record, not at every record."""


def _route(action: str, msg_type: Any) -> tuple[str | None, tuple[Handler, ...], bool]:
    phase = _PHASE.get(msg_type)
    handlers = tuple(_HANDLERS.get((action, phase), ())) if phase else ()
    found = _ROUTES[(action, msg_type)] = (phase, handlers, action in _ANSWER_READERS)
    return found


def apply(twin: Twin | None, record: Record) -> Twin:
    """The twin after ``record``. Pure: ``twin`` is not changed; never raises."""
    try:
        return _apply(twin, record)
    except Exception:  # a record an aspect could not read: counted, the twin stays as it was
        return _failed(twin, record)


def _failed(twin: Twin | None, record: Record) -> Twin:
    base = twin if twin is not None else new_twin(str(record.get("station_id", "")))
    out = dict(base)
    out["fold_errors"] = base.get("fold_errors", 0) + 1
    with contextlib.suppress(Exception):
        _mark(base, out, record["conn_id"], record["seq"])
    return out


_NO_CONNECTION = object()
"""A twin's current connection before its first record, and in a twin folded before
``_conn`` existed (its ``_seen`` holds every connection): none, and no record's."""


def _mark(twin: Twin, t: Twin, conn_id: Any, seq: Any) -> None:
    """``t``, the copy of ``twin`` being made, with ``seq`` the highest seen on ``conn_id``, now
    its current connection: the current one before joins the others in ``_seen`` (at most
    :data:`REMEMBERED_CONNECTIONS` in all, the one left longest ago let go). Raises
    ``TypeError`` for a ``conn_id`` that is no dict key (a list): not marked."""
    hash(conn_id)
    current = twin.get("_conn", _NO_CONNECTION)
    if conn_id != current:
        marks = t["_seen"] = twin["_seen"].copy()
        if current is not _NO_CONNECTION:
            marks[current] = twin["_seq"]
        marks.pop(conn_id, None)
        while len(marks) >= REMEMBERED_CONNECTIONS:
            del marks[next(iter(marks))]
        t["_conn"] = conn_id
    t["_seq"] = seq


def _apply(twin: Twin | None, record: Record) -> Twin:
    if twin is None:
        twin = new_twin(record["station_id"])
    conn_id, seq = record["conn_id"], record["seq"]
    if conn_id == twin.get("_conn", _NO_CONNECTION):  # the connection of the record before, as nearly all are
        if seq <= twin["_seq"]:
            return twin  # redelivered: already folded
        t = twin.copy()
        t["_seq"] = seq
    elif seq <= twin["_seen"].get(conn_id, 0):
        return twin  # redelivered
    else:
        t = twin.copy()
        _mark(twin, t, conn_id, seq)
    t["frames_folded"] = twin["frames_folded"] + 1
    t["as_of"] = record["ts"]
    protocol = record.get("protocol")
    if protocol:
        t["protocol"] = protocol
    action, msg_type, origin = record.get("action") or "", record["msg_type"], record["origin"]
    phase, handlers, answer_read = _ROUTES.get((action, msg_type)) or _route(action, msg_type)
    answers = (msg_type == 3 or phase == "error") and record["msg_id"] in twin["_pending"]
    valid = record.get("valid", True)
    if not handlers and not answers and origin != "cs" and not answer_read:
        if not valid:
            t["invalid_frames"] = twin["invalid_frames"] + 1
        return t  # the common case of an answer nobody reads: counters only
    if not valid:
        t["invalid_frames"] = twin["invalid_frames"] + 1
        if answers:  # the call is answered all the same: no longer kept
            pending = t["_pending"] = twin["_pending"].copy()
            del pending[record["msg_id"]]
        return t
    if phase is None:
        return t
    if origin == "cs":
        connection = t["connection"] = twin["connection"].copy()
        connection["last_seen"] = record["ts"]
    request = None
    if msg_type == 2 and answer_read:  # an aspect reads this call's answer: keep the request until it comes
        pending = t["_pending"] = twin["_pending"].copy()
        pending[record["msg_id"]] = {"action": action, "payload": record["payload"]}
    elif answers:
        pending = t["_pending"] = twin["_pending"].copy()
        request = pending.pop(record["msg_id"])["payload"]
    if handlers:
        change, event = Change(t, True), Event(record, request)  # positional: a keyword costs 0.1 µs a call
        for handler in handlers:
            handler(change, event)
    return t


def fold(
    records: Iterable[Record], twins: dict[str, Twin] | None = None, progress: Callable[[int], None] | None = None
) -> dict[str, Twin]:
    """Fold records into twins by station (a new dict; ``twins`` is not changed): :func:`apply`
    of each. ``progress``, if given, is called with the records read so far, every
    :data:`PROGRESS_EVERY` and at the end."""
    out = dict(twins or {})
    n = 0
    for n, record in enumerate(records, start=1):
        if progress is not None and not n % PROGRESS_EVERY:
            progress(n)
        station = record.get("station_id")
        if not station:
            continue
        twin = out.get(station)
        try:  # apply(), without a call of its own per record
            out[station] = _apply(twin, record)
        except Exception:
            out[station] = _failed(twin, record)
    if progress is not None:
        progress(n)
    return out


def public(twin: Twin) -> Twin:
    """The twin as shown to users and other tools: without the fold's bookkeeping."""
    return {k: v for k, v in twin.items() if not k.startswith("_")}
