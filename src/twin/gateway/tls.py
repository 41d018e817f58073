"""TLS at the gateway's port (profiles 2 and 3): a terminator in front of its websocket server.

Python's ``ssl`` verifies a client certificate inside the handshake and has no callback: a
certificate that does not chain to the CA fails the handshake itself, before the station id
(in the URL) is known, and the refusal could not be recorded against the station that tried.
Here (pyOpenSSL) the handshake asks for a client certificate and accepts whatever comes; the
chain is verified against the CA right after, and the verdict travels with the connection to
the websocket upgrade, where the guard decides with the station id in hand.

Each TLS connection is decrypted here and relayed over loopback to the websocket server,
which finds what the TLS layer saw by the relay's local port (:meth:`Terminator.peer`).
Backpressure carries through: the relay reads from the station only as fast as the websocket
server takes the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from OpenSSL import SSL, crypto

from twin import pki

log = logging.getLogger(__name__)

CHUNK = 1 << 16


class TlsError(ValueError):
    """A TLS configuration that cannot be used; the message says why."""


@dataclass(frozen=True)
class Peer:
    """What the TLS layer saw of one station connection."""

    remote: str  # host:port of the station
    version: str  # "TLSv1.3"
    chain: tuple[x509.Certificate, ...]  # the client certificates as presented, leaf first; () without one
    problem: str | None  # why the chain does not verify against the CA; None if it does (or there is none)

    @property
    def certificate(self) -> x509.Certificate | None:
        return self.chain[0] if self.chain else None


@dataclass(frozen=True)
class Tls:
    """The gateway's TLS: its pyOpenSSL context and the CA that station certificates must chain to."""

    context: SSL.Context
    ca: x509.Certificate
    store: crypto.X509Store  # the CA, for verify(): built once, not per connection

    @classmethod
    def from_pki(cls, pki_dir: str | Path) -> Tls:
        """TLS 1.2 or later with the CSMS's certificate (``csms.pem``, ``csms.key``); a client
        certificate is asked for, not required (one port serves profiles 2 and 3), and any is
        accepted at the handshake: :meth:`verify` judges it afterwards."""
        root = Path(pki_dir)
        try:
            ca = x509.load_pem_x509_certificate((root / "ca.pem").read_bytes())
            context = SSL.Context(SSL.TLS_SERVER_METHOD)
            context.set_min_proto_version(SSL.TLS1_2_VERSION)
            context.set_options(SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION)
            context.use_certificate_chain_file(str(root / "csms.pem"))
            context.use_privatekey_file(str(root / "csms.key"))
            context.check_privatekey()
            context.load_client_ca(bytes(root / "ca.pem"))  # named in the CertificateRequest
        except (OSError, ValueError, SSL.Error) as exc:
            raise TlsError(f"{root}: no usable csms.pem, csms.key, ca.pem ({exc}): run `twin pki init`") from None
        context.set_verify(SSL.VERIFY_PEER, lambda *_: True)  # ask, accept anything: verify() decides
        store = crypto.X509Store()
        store.add_cert(crypto.X509.from_cryptography(ca))
        return cls(context, ca, store)

    def verify(self, chain: list[x509.Certificate]) -> str | None:
        """Why ``chain`` (leaf first) is refused; None if it is good. OpenSSL says whether it
        chains to the CA; then the PKI's own rules (``pki.problems``: a key too small, ...),
        which the TLS layer's security level applied before the verify callback overrode it."""
        leaf, *rest = (crypto.X509.from_cryptography(c) for c in chain)
        try:
            crypto.X509StoreContext(self.store, leaf, rest).verify_certificate()
        except crypto.X509StoreContextError as exc:
            return f"does not chain to the CA: {exc}"
        found = pki.problems(chain, [self.ca])
        return "breaks the PKI's rules: " + "; ".join(found) if found else None


class Terminator:
    """Accepts TLS on ``host:port`` and relays the plain bytes to ``backend`` (the websocket
    server on loopback). A handshake that fails or takes longer than ``handshake_timeout`` is
    reported to ``failed(remote, why)`` when the peer sent anything at all."""

    def __init__(
        self,
        tls: Tls,
        backend: tuple[str, int],
        handshake_timeout: float,
        failed: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self.tls, self.backend, self.handshake_timeout, self.failed = tls, backend, handshake_timeout, failed
        self.peers: dict[int, Peer] = {}
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._accept, host, port, limit=CHUNK)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._relays):
            task.cancel()
        for task in list(self._relays):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    def peer(self, relay_port: int) -> Peer | None:
        """What the TLS layer saw of the connection the websocket server sees coming from ``relay_port``."""
        return self.peers.get(relay_port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        address = writer.get_extra_info("peername") or ("?", 0)
        remote = f"{address[0]}:{address[1]}"
        conn = SSL.Connection(self.tls.context, None)
        conn.set_accept_state()
        try:
            try:
                async with asyncio.timeout(self.handshake_timeout):
                    await _handshake(conn, reader, writer)
            except (SSL.Error, OSError, EOFError, TimeoutError) as exc:
                if not isinstance(exc, EOFError):  # EOFError: closed before a word (a port check)
                    slow = isinstance(exc, TimeoutError)
                    why = f"TLS handshake slower than {self.handshake_timeout:g} s" if slow else \
                        f"TLS handshake failed: {_describe(exc)}"  # fmt: skip
                    log.info("%s from %s", why, remote)
                    await self.failed(remote, why)
                return
            peer = self._peer(conn, remote)
            try:
                backend_reader, backend_writer = await asyncio.open_connection(*self.backend, limit=CHUNK)
            except OSError as exc:
                log.error("TLS relay: the websocket server at %s:%d is gone (%s)", *self.backend, exc)
                return
            relay_port = backend_writer.get_extra_info("sockname")[1]
            self.peers[relay_port] = peer
            try:
                await _relay(conn, reader, writer, backend_reader, backend_writer)
            finally:
                self.peers.pop(relay_port, None)
                backend_writer.close()
        finally:
            writer.close()
            self._relays.discard(task)

    def _peer(self, conn: SSL.Connection, remote: str) -> Peer:
        leaf = conn.get_peer_certificate(as_cryptography=True)
        chain: list[x509.Certificate] = []
        if leaf is not None:
            # The server side's peer chain leaves out the leaf (OpenSSL's SSL_get_peer_cert_chain).
            chain = [leaf, *[c for c in conn.get_peer_cert_chain(as_cryptography=True) or [] if c != leaf]]
        return Peer(remote, conn.get_protocol_version_name(), tuple(chain), self.tls.verify(chain) if chain else None)


def _flush(conn: SSL.Connection, writer: asyncio.StreamWriter) -> None:
    """Send what the TLS engine has to say (records, alerts, tickets)."""
    while True:
        try:
            data = conn.bio_read(CHUNK)
        except SSL.WantReadError:
            return
        if not data:
            return
        writer.write(data)


async def _handshake(conn: SSL.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Run the server side of the handshake. EOFError: the peer closed without sending a byte."""
    heard = False
    while True:
        try:
            conn.do_handshake()
            break
        except SSL.WantReadError:
            pass
        except SSL.Error:
            _flush(conn, writer)  # the alert that says why, for the station's logs
            with contextlib.suppress(OSError):
                await writer.drain()
            raise
        _flush(conn, writer)
        await writer.drain()
        data = await reader.read(CHUNK)
        if not data:
            if heard:
                raise ConnectionResetError("the station closed the connection during the TLS handshake")
            raise EOFError
        heard = True
        conn.bio_write(data)
    _flush(conn, writer)
    await writer.drain()


async def _relay(
    conn: SSL.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    backend_reader: asyncio.StreamReader,
    backend_writer: asyncio.StreamWriter,
) -> None:
    """Decrypt station -> backend and encrypt backend -> station until either side closes."""

    async def inbound() -> None:
        while True:  # decrypt first: the last handshake read may have brought application data too
            while True:
                try:
                    plain = conn.recv(CHUNK)
                except SSL.WantReadError:
                    break
                except SSL.ZeroReturnError:  # close_notify
                    return
                backend_writer.write(plain)
            _flush(conn, writer)
            await backend_writer.drain()
            data = await reader.read(CHUNK)
            if not data:
                return
            conn.bio_write(data)

    async def outbound() -> None:
        while data := await backend_reader.read(CHUNK):
            conn.sendall(data)
            _flush(conn, writer)
            await writer.drain()
        with contextlib.suppress(SSL.Error):
            conn.shutdown()  # close_notify
        _flush(conn, writer)

    tasks = [asyncio.ensure_future(inbound()), asyncio.ensure_future(outbound())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.debug("TLS relay ended: %s", _describe(task.exception()))  # type: ignore[arg-type]
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(OSError):
            await writer.drain()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        reasons = [e[2] for e in exc.args[0] if len(e) > 2 and e[2]]
        if reasons:
            return "; ".join(reasons)
    return str(exc) or type(exc).__name__
