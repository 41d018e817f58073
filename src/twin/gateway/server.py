"""The gateway: the only process that speaks websockets to stations.

``csms`` mode answers stations itself; ``proxy`` mode sits in front of an existing CSMS and
relays every frame unchanged, recording each before forwarding it. Either way every frame
and every connection's life (``Connected``, ``Disconnected``, ``Refused``) is in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.http11 import Request, Response

from twin import envelope, runtime, schemas
from twin.capture import Recorder
from twin.gateway import admission
from twin.gateway.admission import Handshake, Slot, TokenBucket
from twin.gateway.certificates import CertificateProvider
from twin.gateway.commands import CommandInbox
from twin.gateway.connections import Connections
from twin.gateway.session import Session, close_quietly, new_conn_id
from twin.gateway.tls import Peer, Terminator
from twin.ocpp_j import SUBPROTOCOLS
from twin.security import Guard, UpstreamTls
from twin.settings import Settings

log = logging.getLogger("twin.gateway")
GIVE_BACK_AFTER = 1000
"""Connections closed before the gateway gives the memory they held back to the system, once
no connection has opened or closed for ``GIVE_BACK_CHECK`` seconds (after a network blip: the
wave of resets and the reconnections after it have passed). Measured with
benches/connections.py: 9,500 stations reconnecting at once left the gateway at 28 KiB a
connection, freed memory the C allocator kept; 17.7 before."""
GIVE_BACK_CHECK = 2.0


class StationConnection(ServerConnection):
    """A station's connection, let go of as soon as it is closed. websockets (17.4) gives each
    connection's protocol a ``select_subprotocol`` closing over the connection, so connection,
    protocol and that function hold each other: only a full collection freed a closed one, and
    in a gateway with thousands of connections those are rare (they walk every object: 0.6 to
    1.2 s at 9,500). Closed connections piled up meanwhile, 53 objects each. What stays for the
    collector is the protocol's (its parser's frames hold it, 22 objects): websockets' own,
    left to it."""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        vars(self.protocol).pop("select_subprotocol", None)  # chosen at the handshake; the cycle


class Gateway:
    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        *,
        mode: str = "csms",
        upstream: str | None = None,
        port: int | None = None,
        guard: Guard | None = None,
        certificates: CertificateProvider | None = None,
        upstream_tls: UpstreamTls | None = None,
        process: int = 0,
        reuse_port: bool = False,
        gateway_id: str | None = None,
    ) -> None:
        if mode not in ("csms", "proxy"):
            raise ValueError(f"mode must be csms or proxy, not {mode!r}")
        if mode == "proxy" and not upstream:
            raise ValueError("proxy mode needs --upstream URL")
        self.settings, self.bootstrap, self.mode = settings, bootstrap, mode
        self.upstream_url = upstream.rstrip("/") if upstream else None
        self.port = settings.gateway_port if port is None else port
        self.guard = guard
        self.certificates = certificates
        self.upstream_tls = upstream_tls or UpstreamTls()
        # processes serving one port (SO_REUSEPORT) each spool apart, and each is a gateway of its own
        self.process, self.reuse_port, self._gateway_id = process, reuse_port, gateway_id
        spool = f"gateway-{self.port}" + (f".{process}" if process else "")
        self.recorder = Recorder(settings, bootstrap, spool_name=spool)
        self.sessions: dict[str, Session] = {}
        self.connections = Connections(self)
        self.inbox = CommandInbox(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handshakes: dict[ServerConnection, Handshake] = {}
        self._admission = asyncio.Semaphore(admission.HANDSHAKES)
        self._server: Server | None = None
        self._warming: asyncio.Future[int] | None = None
        self._timers: list[asyncio.Task[None]] = []
        self.opened = self.closed = 0  # connections since the start
        self._terminator: Terminator | None = None

    # -- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, schemas.warm, schemas.HOT)
        self._warming = loop.run_in_executor(None, schemas.warm)  # the rest, meanwhile
        await self.recorder.start()
        tls = self.guard.tls if self.guard else None
        public = self.port
        self._server = await serve(
            self._handle,
            "127.0.0.1" if tls else self.settings.host,  # behind the TLS terminator: loopback only
            0 if tls else public,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            max_size=max(self.settings.max_frame_bytes * 4, 1 << 20),
            ping_interval=None,  # stations keep alive with Heartbeat; pings cost 2,000 timers
            compression=None,
            open_timeout=self.settings.handshake_timeout,
            reuse_port=self.reuse_port and not tls,
            backlog=admission.BACKLOG,
            create_connection=StationConnection,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if tls is not None:
            self._terminator = Terminator(tls, ("127.0.0.1", self.port), self.settings.handshake_timeout,
                                          self._tls_failed)  # fmt: skip
            self.port = await self._terminator.start(self.settings.host, public)
        await self.connections.start()
        await self.inbox.start()
        loop = asyncio.get_running_loop()
        self._timers = [loop.create_task(self._reap_silent()), loop.create_task(self._give_back_memory())]
        log.info(
            "gateway (%s mode) on %s://%s:%d/ocpp/<station id>, capture: %s",
            self.mode, self.scheme, self.settings.host, self.port, self.recorder.mode,
        )  # fmt: skip

    @property
    def gateway_id(self) -> str:
        """Who holds a connection, in ``gateway.connections``: host and port, and the process's
        index where several serve one port. The same after a restart, so a gateway started
        again withdraws what its killed predecessor announced."""
        if self._gateway_id is None:
            self._gateway_id = f"{socket.gethostname()}:{self.port}" + (f"/{self.process}" if self.process else "")
        return self._gateway_id

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in the background, kept until done."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def scheme(self) -> str:
        return "wss" if self.guard and self.guard.tls else "ws"

    async def _reap_silent(self) -> None:
        """Close connections silent for longer than the idle timeout: half-open sockets and
        dead peers (the gateway sends no pings: stations keep alive with Heartbeat)."""
        idle = self.settings.idle_timeout or 3 * self.settings.heartbeat_interval
        while True:
            await asyncio.sleep(min(idle / 4, 30.0))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if now - session.heard > idle:
                    await close_quietly(session.ws, 4001, f"silent for more than {idle:g} s")

    async def _give_back_memory(self) -> None:
        """Give the memory of closed connections back to the system once a wave of closings
        has passed, and the reconnections after it (nothing opened or closed for a check): in
        a thread, though the loop's own large allocations wait for it meanwhile (``malloc_trim``
        holds each arena's lock, tens of milliseconds on a large heap)."""
        given, seen = self.closed, (self.opened, self.closed)
        while True:
            await asyncio.sleep(GIVE_BACK_CHECK)
            now = (self.opened, self.closed)
            if now == seen and self.closed - given >= GIVE_BACK_AFTER:
                given = self.closed
                try:
                    await asyncio.to_thread(runtime.give_back_memory)
                except Exception:
                    log.exception("could not give memory back")
            seen = now

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        if self._warming is not None:
            await self._warming
        await self.inbox.stop()
        if self._terminator is not None:
            await self._terminator.stop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.connections.stop()  # after the connections closed: their withdrawals written
        await self.recorder.stop()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.stop()

    # -- the handshake --------------------------------------------------------------------
    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        slot = Slot(self._admission)
        await slot.take()  # given back once Connected is recorded (_admitted), or here
        try:
            refusal = await self._admit(connection, request, slot)
        except BaseException:
            slot.give()
            raise
        if refusal is not None:
            slot.give()
            return refusal
        hs = self._handshakes[connection]
        hs.expiry = asyncio.get_running_loop().call_later(
            self.settings.handshake_timeout + 1, self._expire, connection, hs
        )
        return None

    def _admitted(self, hs: Handshake) -> None:
        if hs.expiry is not None:
            hs.expiry.cancel()
            hs.expiry = None
        hs.slot.give()

    def _expire(self, connection: ServerConnection, hs: Handshake) -> None:
        """A handshake admitted and never completed (the station went away half-way)."""
        hs.expiry = None
        hs.slot.give()
        if self._handshakes.get(connection) is hs:
            del self._handshakes[connection]
            if hs.upstream is not None:
                self.spawn(close_quietly(hs.upstream, 1000, "station disconnected"))

    async def _admit(self, connection: ServerConnection, request: Request, slot: Slot) -> Response | None:
        path = urlsplit(request.path).path
        station_id = unquote(path.rstrip("/").rsplit("/", 1)[-1])
        offered = _offered(request.headers)
        protocol = next((p for p in SUBPROTOCOLS if p in offered), None)
        conn_id = new_conn_id()
        if not station_id:
            return await self._refuse(connection, "", conn_id, HTTPStatus.NOT_FOUND,
                                      "no station id: connect to ws://host:port/<path>/<station id>")  # fmt: skip
        if protocol is None:
            why = (
                f"no supported subprotocol offered (offered: {', '.join(offered) or 'none'}; "
                f"supported: {', '.join(SUBPROTOCOLS)})"
            )
            return await self._refuse(connection, station_id, conn_id, HTTPStatus.BAD_REQUEST, why)
        shown = None
        if self.guard is not None:
            authorization = request.headers.get("Authorization")
            async with slot.away():
                shown, refusal = await self.guard.admit(station_id, authorization, self._peer(connection))
            if refusal is not None:
                return await self._refuse(connection, station_id, conn_id, HTTPStatus.UNAUTHORIZED, refusal, protocol)
        upstream = None
        if self.upstream_url is not None:
            try:
                async with slot.away():
                    upstream = await self._connect_upstream(station_id, offered, request.headers)
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                why = f"upstream {self.upstream_url} refused: {_describe(exc)}"
                return await self._refuse(connection, station_id, conn_id, HTTPStatus.BAD_GATEWAY, why, protocol)
            protocol = upstream.subprotocol or protocol
        self._handshakes[connection] = Handshake(station_id, protocol, conn_id, slot, upstream, shown)
        return None

    def _select_subprotocol(self, connection: ServerConnection, offered: Any) -> Any:
        handshake = self._handshakes.get(connection)
        return handshake.protocol if handshake else None

    async def _refuse(
        self,
        connection: ServerConnection,
        station_id: str,
        conn_id: str,
        status: HTTPStatus,
        why: str,
        protocol: str = "",
    ) -> Response:
        await self._record_refusal(station_id, conn_id, int(status), why, self._remote(connection), protocol)
        return connection.respond(status, why + "\n")

    async def _record_refusal(self, station_id: str, conn_id: str, status: int, why: str, remote: str,
                              protocol: str = "") -> None:  # fmt: skip
        record = envelope.lifecycle(
            "Refused", {"reason": why, "status": status, "remote_address": remote},
            station_id=station_id, protocol=protocol, conn_id=conn_id, seq=1,
        )  # fmt: skip
        await self.recorder.record([record])
        log.info("refused %s from %s: %s", station_id or "?", remote, why)

    async def _tls_failed(self, remote: str, why: str) -> None:
        """A TLS handshake that failed: recorded, though no station id was ever sent (status 0: no HTTP)."""
        await self._record_refusal("", new_conn_id(), 0, why, remote)

    def _peer(self, connection: ServerConnection) -> Peer | None:
        """What the TLS terminator saw of this connection (None without TLS)."""
        if self._terminator is None:
            return None
        with contextlib.suppress(Exception):
            return self._terminator.peer(connection.remote_address[1])
        return None

    def _remote(self, connection: ServerConnection) -> str:
        """The station's address (behind TLS, the one the terminator saw, not the relay's)."""
        peer = self._peer(connection)
        return peer.remote if peer is not None else _remote(connection)

    async def _connect_upstream(self, station_id: str, offered: list[str], headers: Headers) -> ClientConnection:
        assert self.upstream_url is not None
        forward = [(k, v) for k, v in headers.raw_items() if k.lower() == "authorization"]
        return await asyncio.wait_for(
            connect(
                f"{self.upstream_url}/{station_id}",
                subprotocols=[p for p in SUBPROTOCOLS if p in offered],  # type: ignore[misc]
                additional_headers=forward,
                ssl=self.upstream_tls.context(station_id) if self.upstream_url.startswith("wss://") else None,
                max_size=max(self.settings.max_frame_bytes * 4, 1 << 20),
                ping_interval=None,
                compression=None,
                open_timeout=10,
            ),
            10,
        )

    # -- a connection ---------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        hs = self._handshakes.pop(ws, None)
        if hs is None:  # its handshake took longer than the handshake timeout allows
            await close_quietly(ws, 1011, "handshake expired")
            return
        session = Session(
            ws=ws, station_id=hs.station_id, protocol=hs.protocol, recorder=self.recorder,
            settings=self.settings, upstream=hs.upstream, conn_id=hs.conn_id, certificates=self.certificates,
            spawn=self.spawn,
        )  # fmt: skip
        self.opened += 1
        previous = self.sessions.get(hs.station_id)
        self.sessions[hs.station_id] = session
        self.connections.announce(session)
        if previous is not None:  # the newer connection wins; the older is closed, both recorded
            # meanwhile, not first: a half-open old connection (its station gone without a TCP
            # end) never answers the close, and the station waited out the close timeout, 10 s
            self.spawn(close_quietly(previous.ws, 4000, "replaced by a newer connection of this station"))
        pump = None
        code, reason = 1000, ""
        try:
            connected = {"subprotocol": hs.protocol, "security_profile": _profile(ws),
                         "remote_address": self._remote(ws), "mode": self.mode, **(hs.shown or {})}  # fmt: skip
            _forget_handshake(ws)
            await session.capture(("Connected", connected))
            self._admitted(hs)
            if hs.upstream is not None:
                pump = asyncio.get_running_loop().create_task(self._pump_upstream(session, hs.upstream))
            bucket = TokenBucket(self.settings.station_rate, self.settings.station_burst)
            while True:  # recv, not ``async for``: the asynchronous generator is one more layer a frame
                if session.behind:  # its answers not yet captured, or not yet read
                    await session.ready()
                message = await ws.recv()  # ends with ConnectionClosed, the OK kind too (caught below)
                session.heard = time.monotonic()
                wait = bucket.take()
                if wait:
                    await asyncio.sleep(wait)
                work = session.on_station(message)
                if work is not None:
                    await work
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("session %s failed", hs.station_id)
            code, reason = 1011, "internal error"
            await close_quietly(ws, code, reason)
        finally:
            self._admitted(hs)
            session.abandon_calls()
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump
            if hs.upstream is not None:
                await close_quietly(hs.upstream, 1000, "station disconnected")
            if self.sessions.get(hs.station_id) is session:
                del self.sessions[hs.station_id]
                self.connections.withdraw(session)
            if ws.close_code is not None:
                code, reason = ws.close_code, ws.close_reason or ""
            self.closed += 1
            session.capture_nowait(("Disconnected", {"code": code, "reason": reason}))

    async def _pump_upstream(self, session: Session, upstream: ClientConnection) -> None:
        try:
            async for message in upstream:
                await session.on_upstream(message)
            why = f"upstream closed ({upstream.close_code} {upstream.close_reason or ''})".strip()
        except ConnectionClosed as exc:
            why = f"upstream dropped ({_describe(exc)})"
        except Exception:
            log.exception("relaying from the upstream of %s failed", session.station_id)
            why = "internal error relaying the upstream"
        await close_quietly(session.ws, 1011, why)


def _offered(headers: Headers) -> list[str]:
    return [p.strip() for value in headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",") if p.strip()]


def _remote(connection: ServerConnection) -> str:
    with contextlib.suppress(Exception):
        host, port = connection.remote_address[:2]
        return f"{host}:{port}"
    return ""


def _forget_handshake(connection: ServerConnection) -> None:
    """Drop the handshake's headers, both ways, once ``Connected`` is built: websockets keeps
    them for the connection's life, about 4 KiB of a connection's 18 (tracemalloc, 2,000
    stations). The request's are emptied in place: its parser holds the request too, and
    websockets takes a connection without one for a connection still in its handshake."""
    if connection.request is not None:
        connection.request.headers.clear()
    connection.response = None


def _profile(connection: ServerConnection) -> int | None:
    """Security profile by what the connection carries: 1 = Basic Auth over ws."""
    request = connection.request
    if request is not None and "Authorization" in request.headers:
        return 1
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    return str(exc) or type(exc).__name__
