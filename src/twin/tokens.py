"""Bearer tokens for twin's HTTP doors (the worker API, twin ocpi's /status, the dashboard).

A token store is a JSON file (``--api-tokens FILE``, env ``TWIN_API_TOKENS``; ``twin up`` and
``twin token`` default to ``DATA_DIR/api-tokens.json``) of names, roles and salted SHA-256
hashes: never the tokens themselves. A token is 32 random bytes, so a fast hash is enough (a
slow one, as for passwords, guards low-entropy secrets against guessing; there is nothing to
guess here) and it costs a request microseconds. ``twin token add`` prints a token once.

Roles are ordered: a ``viewer`` reads twins, reports and sites; an ``operator`` also sends
commands; an ``admin`` also manages tokens. What a request needs is a pure function of its
method and path (:func:`needed`), and so is the verdict on its ``Authorization`` header
(:func:`verdict`); :class:`Guard` adds the file (read again when it changes) and the counts.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROLES = ("viewer", "operator", "admin")
STORE_ENV = "TWIN_API_TOKENS"
"""The token store's path, for every process that guards a door."""
TOKEN_ENV = "TWIN_API_TOKEN"
"""The token a client (the CLI, the VEN, ``twin up``'s helpers) sends to the API."""
FILE_NAME = "api-tokens.json"
PREFIX = "twin_"
"""Tokens start with it: a secret scanner (or a person) recognises one in a log or a paste."""
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class TokenError(ValueError):
    """A token store that cannot be read or written, a bad name or role: the message says which."""


@dataclass(frozen=True)
class Entry:
    """One token in the store: who it is, what it may do, and the hash of its secret."""

    name: str
    role: str
    salt: str
    digest: str
    created_at: str

    def shown(self) -> dict[str, str]:
        """What ``twin token list`` and ``GET /v1/tokens`` show: never the hash."""
        return {"name": self.name, "role": self.role, "created_at": self.created_at}


@dataclass(frozen=True)
class Verdict:
    """A request's fate: ``status`` 200 (let in), 401 (no or unknown token) or 403 (a token
    whose role is not enough); ``who`` is the token's entry when one matched."""

    status: int
    who: Entry | None = None
    error: str | None = None


# -- pure ----------------------------------------------------------------------------------------


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str, salt: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + token.encode()).hexdigest()


def entry(name: str, role: str, token: str, now: datetime | None = None) -> Entry:
    """The store's record of a new token (``token`` itself is not in it)."""
    if not NAME.match(name):
        raise TokenError(f"a token's name is 1-64 letters, digits, '.', '_', '@' or '-', not {name!r}")
    if role not in ROLES:
        raise TokenError(f"a role is one of {', '.join(ROLES)}, not {role!r}")
    salt = secrets.token_hex(16)
    at = (now or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")
    return Entry(name, role, salt, digest(token, salt), at)


def find(entries: Sequence[Entry], token: str) -> Entry | None:
    """The entry of ``token``, or None. Every entry is compared, each in constant time."""
    found = None
    for e in entries:
        if hmac.compare_digest(digest(token, e.salt), e.digest):
            found = e
    return found


def allows(role: str, needed: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def needed(method: str, path: str) -> str:
    """The role a request needs: managing tokens is an admin's; anything that changes
    something (a command) an operator's; reading, a viewer's. Every path needs one."""
    if path == "/v1/tokens" or path.startswith("/v1/tokens/"):
        return "admin"
    if method.upper() in ("GET", "HEAD", "OPTIONS"):
        return "viewer"
    return "operator"


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def verdict(entries: Sequence[Entry], method: str, path: str, header: str | None) -> Verdict:
    token = bearer(header)
    if token is None:
        return Verdict(401, error="this API needs a token: send 'Authorization: Bearer TOKEN'")
    who = find(entries, token)
    if who is None:
        return Verdict(401, error="unknown or revoked token")
    role = needed(method, path)
    if not allows(who.role, role):
        return Verdict(403, who, f"{who.name!r} is {with_article(who.role)}; this needs {with_article(role)}")
    return Verdict(200, who)


def with_article(role: str) -> str:
    return f"an {role}" if role[0] in "aeiou" else f"a {role}"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a door on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def headers(token: str | None = None) -> dict[str, str]:
    """What a client sends: ``token``, else ``TWIN_API_TOKEN``, else nothing."""
    token = token or os.environ.get(TOKEN_ENV)
    return {"Authorization": f"Bearer {token}"} if token else {}


def parse(data: bytes) -> list[Entry]:
    if not data.strip():
        return []
    try:
        body = orjson.loads(data)
        return [Entry(**{k: str(e[k]) for k in ("name", "role", "salt", "digest", "created_at")})
                for e in body["tokens"]]  # fmt: skip
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise TokenError(f"not a token store ({exc!r})") from None


def dumps(entries: Sequence[Entry]) -> bytes:
    return orjson.dumps({"version": 1, "tokens": [asdict(e) for e in entries]}, option=orjson.OPT_INDENT_2)


# -- the file ------------------------------------------------------------------------------------


def store_path(flag: str | None = None, data_dir: str | None = None) -> Path | None:
    """``--api-tokens``, else ``TWIN_API_TOKENS``, else ``DATA_DIR/api-tokens.json`` when a
    data directory is given; None: no store (an open door)."""
    chosen = flag or os.environ.get(STORE_ENV) or (str(Path(data_dir) / FILE_NAME) if data_dir else None)
    return Path(chosen) if chosen else None


class TokenStore:
    """The store's file: read (again whenever it changed: its size, mtime or inode), and
    changed under an exclusive lock, written whole to a temporary file and renamed over it,
    readable by its owner alone."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int, int] | None = None
        self._entries: list[Entry] = []

    def entries(self) -> list[Entry]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self._entries = None, []
            return []
        except OSError as exc:
            raise TokenError(f"cannot read the token store {self.path}: {exc}") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._seen:
            try:
                self._entries = parse(self.path.read_bytes())
            except OSError as exc:
                raise TokenError(f"cannot read the token store {self.path}: {exc}") from None
            except TokenError as exc:
                raise TokenError(f"{self.path}: {exc}") from None
            self._seen = stamp
        return list(self._entries)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[Entry]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            self._seen = None
            entries = self.entries()
            before = list(entries)
            yield entries
            if entries != before:
                spare = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(dumps(entries))
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(spare, self.path)

    def add(self, name: str, role: str) -> tuple[str, Entry]:
        """A new token for ``name`` (a name already in the store is refused); the token is
        returned here and nowhere else."""
        token = new_token()
        made = entry(name, role, token)
        with self._locked() as entries:
            if any(e.name == name for e in entries):
                raise TokenError(f"{name!r} has a token already: revoke it first (`twin token revoke {name}`)")
            entries.append(made)
        return token, made

    def revoke(self, name: str) -> bool:
        with self._locked() as entries:
            kept = [e for e in entries if e.name != name]
            gone = len(kept) < len(entries)
            entries[:] = kept
        return gone


class Guard:
    """A door's check: a request's verdict against the store as it is now, counted. With no
    store the door is open (everything 200, named nobody)."""

    def __init__(self, store: TokenStore | None) -> None:
        self.store = store
        self.counts = {"unauthenticated": 0, "forbidden": 0, "allowed": 0}

    @property
    def open(self) -> bool:
        return self.store is None

    def check(self, method: str, path: str, header: str | None) -> Verdict:
        if self.store is None:
            return Verdict(200)
        try:
            entries = self.store.entries()
        except TokenError as exc:  # a half-written or broken file lets nobody in, and says why
            self.counts["unauthenticated"] += 1
            return Verdict(401, error=str(exc))
        answer = verdict(entries, method, path, header)
        self.counts[{200: "allowed", 401: "unauthenticated", 403: "forbidden"}[answer.status]] += 1
        return answer

    def stats(self) -> Mapping[str, Any]:
        """What ``/v1/metrics`` shows of the door."""
        return {"open": self.open, "store": str(self.store.path) if self.store else None, **self.counts}


WHO = "twin.who"
"""The aiohttp request's key for the caller's token entry (None at an open door)."""


def middleware(guard: Guard, exempt: tuple[str, ...] = ()) -> Any:
    """The door as an aiohttp middleware: every path but those starting with one of
    ``exempt`` (doors of their own: OCPI's tokens, public feeds) is checked; 401 and 403 as
    JSON; the caller's entry in ``request[WHO]``; any other error of the app's as JSON too."""
    from aiohttp import web

    @web.middleware
    async def door(request: web.Request, handler: Any) -> web.StreamResponse:
        checked = not (exempt and request.path.startswith(exempt))
        if checked:
            answer = guard.check(request.method, request.path, request.headers.get("Authorization"))
            if answer.status != 200:
                extra = {"WWW-Authenticate": 'Bearer realm="twin"'} if answer.status == 401 else None
                return web.json_response({"error": answer.error}, status=answer.status, headers=extra)
            request[WHO] = answer.who
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPException as exc:  # no such page, or method: said as JSON like every error
            if exc.status < 400 or not checked:
                raise
            return web.json_response({"error": exc.reason}, status=exc.status)

    return door
