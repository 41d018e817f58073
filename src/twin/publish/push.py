"""Push: Locations to an eMSP's or a NAP's OCPI locations receiver (``--push URL --push-token
T``), and each Session and CDR to the eMSP it belongs to (its sessions and cdrs receivers,
found at registration).

Locations: on start every Location is PUT whole; then, checked every second, an EVSE whose
status alone changed is PATCHed (``{"status", "last_updated"}``) and a Location whose static
data changed (the inventory, a connector's tariffs, an EVSE added) is PUT again. Sessions:
PUT whenever their ``last_updated`` moves; CDRs: POSTed once each.

Each receiver has one :class:`Outbox`, an ordered queue: a push waits in it until the
receiver takes it (2xx); a failure (5xx, 4xx, refused, a timeout) is counted, logged and
retried with backoff (1 s doubling to 60 s), so a receiver that fails for an hour gets every
change, in order, once it answers again; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import ClientSession, ClientTimeout

from twin.publish.party import Party, iso

log = logging.getLogger("twin.ocpi.push")
MAX_BACKOFF_S = 60.0


@dataclass
class Push:
    method: str  # PUT, PATCH or POST
    url: str  # e.g. the locations receiver's URL + /{country_code}/{party_id}/{location_id}[/{evse_uid}]
    body: dict[str, Any]
    then: Callable[[], None] | None = None  # once the receiver took it


@dataclass
class Outbox:
    """One receiver's queue of pushes, sent in order, each retried until taken."""

    url: str  # where it goes (a locations receiver; an eMSP's versions URL)
    token: str
    queue: deque[Push] = field(default_factory=deque)
    sent: int = 0
    failures: int = 0
    last_pushed_at: str | None = None
    last_error: str | None = None
    backoff: float = 1.0

    def status(self) -> dict[str, Any]:
        return {"url": self.url, "sent": self.sent, "failures": self.failures, "pending": len(self.queue),
                "last_pushed_at": self.last_pushed_at, "last_error": self.last_error}  # fmt: skip

    async def drain(self, http: ClientSession, stop: asyncio.Event) -> bool:
        """Send what waits until the queue is empty (True) or a push fails (False, after
        waiting the backoff)."""
        headers = {"Authorization": "Token " + base64.b64encode(self.token.encode()).decode(),
                   "Content-Type": "application/json"}  # fmt: skip
        while self.queue and not stop.is_set():
            push = self.queue[0]
            try:
                async with http.request(push.method, push.url, headers=headers, data=orjson.dumps(push.body)) as r:
                    ok, why = 200 <= r.status < 300, f"HTTP {r.status}"
            except Exception as exc:
                ok, why = False, repr(exc)
            if ok:
                self.queue.popleft()
                self.sent += 1
                self.last_pushed_at = iso(datetime.now(UTC))
                self.backoff = 1.0
                if push.then is not None:
                    push.then()
                continue
            self.failures += 1
            self.last_error = f"{push.method} {push.url}: {why}"
            log.warning("push %s %s failed (%s); %d waiting; again in %.0f s", push.method, push.url, why,
                        len(self.queue), self.backoff)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.backoff)
            self.backoff = min(self.backoff * 2, MAX_BACKOFF_S)
            return False
        return True


@dataclass
class Pusher:
    url: str
    token: str
    party: Party
    locations: Callable[[], list[dict[str, Any]]]
    outbox: Outbox = field(init=False)
    _known: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.outbox = Outbox(self.url, self.token)

    def status(self) -> dict[str, Any]:
        return self.outbox.status()

    def changes(self) -> list[Push]:
        """What changed since the last look: PATCHes for statuses, PUTs for the rest."""
        out: list[Push] = []
        for location in self.locations():
            base = f"{self.url.rstrip('/')}/{self.party.country_code}/{self.party.party_id}/{location['id']}"
            before = self._known.get(location["id"])
            self._known[location["id"]] = location
            if before is None or _static(before) != _static(location):
                out.append(Push("PUT", base, location))
                continue
            old = {e["uid"]: e for e in before["evses"]}
            for evse in location["evses"]:
                if old[evse["uid"]]["status"] != evse["status"]:
                    out.append(
                        Push(
                            "PATCH",
                            f"{base}/{evse['uid']}",
                            {"status": evse["status"], "last_updated": evse["last_updated"]},
                        )
                    )
        return out

    async def run(self, stop: asyncio.Event) -> None:
        async with ClientSession(timeout=ClientTimeout(total=15)) as http:
            while not stop.is_set():
                self.outbox.queue.extend(self.changes())
                # statuses keep changing while a receiver fails: they queue up behind, in order
                while not await self.outbox.drain(http, stop):
                    self.outbox.queue.extend(self.changes())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)


def _static(location: dict[str, Any]) -> Any:
    """A Location without what changes with status (statuses and their times)."""
    drop = ("status", "last_updated")
    evses = [{k: v for k, v in e.items() if k not in drop} | {"connectors": [{k: v for k, v in c.items()
             if k != "last_updated"} for c in e["connectors"]]} for e in location["evses"]]  # fmt: skip
    return {**{k: v for k, v in location.items() if k not in ("evses", "last_updated")}, "evses": evses}
