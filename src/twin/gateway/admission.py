"""What the gateway lets in, and how fast: handshakes admitted at once (a slot each), the
accept queue, and each station's frames a second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection

HANDSHAKES = 25
"""Stations admitted at once between their HTTP request and their recorded ``Connected``; the
rest wait their turn (within the handshake timeout). After a network blip every station
reconnects at once: unbounded, thousands of handshakes fill the event loop's queue, capture
acks wait behind them past ``capture_timeout`` and the gateway takes a live broker for a dead
one and spools. Fewer at once make every turn of the loop shorter, and a connected station's
call waits a few turns (its capture round and its answer): benches/connections.py, 9,500
stations, boots' round trip p99 during the ramp and the mass reconnect, by admission, in one
sitting: 10: 72 and 91 ms (but the ramp took 8.3 s and the reconnect 13.5); 25: 53-71 and
97-104 ms; 50: 101 and 150; 100: 130 and 223 ms. Later runs with 25, on a slower machine:
95-127 and 114-178 ms (benches/RESULTS.md, session 17)."""
BACKLOG = 4096
"""Connections waiting to be accepted (the kernel caps it at ``net.core.somaxconn``). After a
network blip every station reconnects at once; past a full queue the kernel drops their SYNs
and each station's TCP tries again only 1, 3, 7 s later."""


class Slot:
    """A handshake's place among the ``HANDSHAKES`` admitted at once. It is given up while
    the handshake waits on a peer (the upstream CSMS's own handshake, an OCSP responder, a
    password check in a thread): that wait is not the gateway's work, and behind an upstream
    that takes 100 ms to answer, 25 slots held through it would admit 250 stations a second."""

    def __init__(self, admission: asyncio.Semaphore) -> None:
        self.admission, self.held = admission, False

    async def take(self) -> None:
        await self.admission.acquire()
        self.held = True

    def give(self) -> None:
        if self.held:
            self.held = False
            self.admission.release()

    @contextlib.asynccontextmanager
    async def away(self) -> AsyncIterator[None]:
        """Given up for the block, taken again after it (not after an exception: the
        handshake ends then, or goes on to its refusal without the slot)."""
        self.give()
        yield
        await self.take()


@dataclass
class Handshake:
    station_id: str
    protocol: str
    conn_id: str
    slot: Slot
    upstream: ClientConnection | None = None
    shown: dict[str, Any] | None = None  # the security profile and certificate the guard admitted
    expiry: asyncio.TimerHandle | None = None  # frees the admission slot if the handshake never completes


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up. ``take`` takes one and says how
    long to wait before using it: 0 while tokens are saved up, and then no coroutine a frame."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(max(1, burst))
        self.tokens, self.stamp = self.burst, time.monotonic()

    def take(self) -> float:
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        wait = 0.0
        if self.tokens < 1:
            wait = (1 - self.tokens) / self.rate
            self.stamp += wait
            self.tokens = 1.0
        self.tokens -= 1
        return wait
