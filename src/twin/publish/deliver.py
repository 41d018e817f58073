"""Sessions and CDRs to the eMSP each belongs to (:func:`twin.publish.sessions.owner`: the
party of its token), at the sessions and cdrs receivers that eMSP named when it registered:
a Session PUT at ``{sessions}/{our country code}/{our party id}/{id}`` whenever its
``last_updated`` moves, a CDR POSTed to ``{cdrs}`` once. Never to another eMSP: a party is
sent only what its own tokens did.

Each eMSP has one :class:`~twin.publish.push.Outbox` (in order, retried until taken), drained
on its own so that one failing eMSP delays no other. The CDRs an eMSP took are kept in
``DATA_DIR/cdrs-taken.jsonl``: after a restart none is sent twice and none skipped. Sessions
are PUT again after a restart (the same object PUT twice changes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession, ClientTimeout

from twin.publish.party import Party
from twin.publish.push import Outbox, Push
from twin.publish.sessions import owner

log = logging.getLogger("twin.ocpi.push")
SESSIONS, CDRS = "sessions:RECEIVER", "cdrs:RECEIVER"
Objects = tuple[list[dict[str, Any]], list[dict[str, Any]]]


def who(registration: Mapping[str, Any]) -> str:
    return f"{registration.get('country_code')}*{registration.get('party_id')}"


@dataclass
class Deliveries:
    party: Party
    taken: Path
    outboxes: dict[str, Outbox] = field(default_factory=dict)  # by the eMSP's CC*PID
    _sessions: dict[str, dict[str, str]] = field(default_factory=dict)  # eMSP -> session id -> last_updated queued
    _cdrs: dict[str, set[str]] = field(default_factory=dict)  # eMSP -> CDR ids queued or taken
    _drains: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.taken.is_file():
            for line in self.taken.read_bytes().splitlines():
                with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                    entry = orjson.loads(line)
                    self._cdrs.setdefault(str(entry["party"]), set()).add(str(entry["cdr"]))

    def status(self) -> dict[str, dict[str, Any]]:
        return {key: outbox.status() for key, outbox in self.outboxes.items()}

    def plan(self, parties: Iterable[Mapping[str, Any]], sessions: list[dict[str, Any]],
             cdrs: list[dict[str, Any]]) -> None:  # fmt: skip
        """Queue for each registered eMSP what of its own it has not been sent yet."""
        here = f"/{self.party.country_code}/{self.party.party_id}/"
        registered = set()
        for reg in parties:
            key = who(reg)
            registered.add(key)
            endpoints = reg.get("endpoints") or {}
            if SESSIONS not in endpoints and CDRS not in endpoints:
                continue
            outbox = self.outboxes.setdefault(key, Outbox(str(reg.get("url")), str(reg.get("token_b"))))
            outbox.url, outbox.token = str(reg.get("url")), str(reg.get("token_b"))  # PUT credentials: the new one
            if SESSIONS in endpoints:
                known = self._sessions.setdefault(key, {})
                for s in sessions:
                    if owner(s) == key and known.get(s["id"]) != s["last_updated"]:
                        known[s["id"]] = s["last_updated"]
                        outbox.queue.append(Push("PUT", endpoints[SESSIONS].rstrip("/") + here + s["id"], s))
            if CDRS in endpoints:
                done = self._cdrs.setdefault(key, set())
                for c in cdrs:
                    if owner(c) == key and c["id"] not in done:
                        done.add(c["id"])
                        outbox.queue.append(Push("POST", endpoints[CDRS], c, then=self._took(key, c["id"])))
        for key in set(self.outboxes) - registered:  # unregistered (DELETE credentials): nothing more to it
            del self.outboxes[key]
            task = self._drains.pop(key, None)
            if task is not None:
                task.cancel()

    def _took(self, key: str, cdr_id: str) -> Callable[[], None]:
        def took() -> None:
            with self.taken.open("ab") as f:
                f.write(orjson.dumps({"party": key, "cdr": cdr_id}) + b"\n")

        return took

    async def run(self, stop: asyncio.Event, parties: Callable[[], Iterable[Mapping[str, Any]]],
                  objects: Callable[[], Awaitable[Objects]], every_s: float = 2.0) -> None:  # fmt: skip
        async with ClientSession(timeout=ClientTimeout(total=15)) as http:
            try:
                while not stop.is_set():
                    try:
                        sessions, cdrs = await objects()
                        self.plan(list(parties()), sessions, cdrs)
                    except Exception:
                        log.exception("sessions and CDRs to push: not computed this time")
                    for key, outbox in self.outboxes.items():
                        if key not in self._drains or self._drains[key].done():
                            self._drains[key] = asyncio.create_task(self._drain(http, outbox, stop))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), every_s)
            finally:
                for task in self._drains.values():
                    task.cancel()
                await asyncio.gather(*self._drains.values(), return_exceptions=True)

    @staticmethod
    async def _drain(http: ClientSession, outbox: Outbox, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not outbox.queue or await outbox.drain(http, stop):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
