"""OCPP security profiles at the gateway: who may connect, and how.

- Profile 1: Basic Auth over ws. Profile 2: TLS (the CSMS's server certificate) and Basic
  Auth. Profile 3: mutual TLS; the station's client certificate chains to the configured
  CA, its CN is the station id, its O the operator, and no other station uses it.
- Each station has exactly one profile: the deployment's, or its own from the overrides.
  A station configured for 3 that arrives without a client certificate is refused, unless
  3 to 2 is explicitly allowed for it (the only downgrade OCPP permits); then it must pass
  Basic Auth. Anything else that does not match is refused, with the reason.
- Passwords are kept only as salted scrypt hashes and compared in constant time; repeated
  failures from one station are throttled.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from twin.gateway.tls import Peer, Tls, TlsError

SCRYPT = {"n": 2**14, "r": 8, "p": 1}
THROTTLE_AFTER = 3
"""Failures in a row after which a station waits before it may try again."""
THROTTLE_MAX_S = 300.0


class SecurityError(ValueError):
    """A security configuration that cannot be used; the message says why."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    encode = base64.b64encode
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${encode(salt).decode()}${encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), dklen=len(expected),
                                n=int(n), r=int(r), p=int(p))  # fmt: skip
    except (ValueError, TypeError):
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


def basic_auth(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic ...`` header, or None."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def load_passwords(path: str | Path) -> dict[str, str]:
    """``{station: scrypt hash}`` from a passwords file: the JSON object ``twin pki passwd``
    writes, or one ``STATION:PASSWORD`` per line. A password given in clear (JSON or lines)
    is hashed as it is read and never kept in clear; ``twin pki passwd`` writes hashes only."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecurityError(f"{path}: {exc}") from None
    entries: dict[str, str] = {}
    try:
        value: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if value is None:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            station, sep, password = line.strip().partition(":")
            if not sep or not station or not password:
                raise SecurityError(f"{path}:{number}: not STATION:PASSWORD (or write the file with `twin pki passwd`)")
            entries[station] = password
    else:
        if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
            raise SecurityError(f"{path}: not a passwords file (a JSON object of station id -> password hash)")
        entries = {str(k): v for k, v in value.items()}
    return {station: v if v.startswith("scrypt$") else hash_password(v) for station, v in entries.items()}


def set_password(path: str | Path, station: str, password: str) -> None:
    file = Path(path)
    current = load_passwords(file) if file.exists() and file.stat().st_size else {}
    current[station] = hash_password(password)
    file.write_bytes(orjson.dumps(current, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    file.chmod(0o600)


@dataclass
class Throttle:
    """Failed attempts per station; after ``THROTTLE_AFTER`` in a row the station must wait
    (doubling, up to ``THROTTLE_MAX_S``) before its next attempt is even considered."""

    failures: dict[str, int] = field(default_factory=dict)
    until: dict[str, float] = field(default_factory=dict)

    def waiting(self, station: str, now: float | None = None) -> float:
        return max(0.0, self.until.get(station, 0.0) - (now if now is not None else time.monotonic()))

    def failed(self, station: str, now: float | None = None) -> int:
        count = self.failures.get(station, 0) + 1
        self.failures[station] = count
        if count >= THROTTLE_AFTER:
            wait = min(THROTTLE_MAX_S, 2.0 ** (count - THROTTLE_AFTER))
            self.until[station] = (now if now is not None else time.monotonic()) + wait
        return count

    def passed(self, station: str) -> None:
        self.failures.pop(station, None)
        self.until.pop(station, None)


@dataclass(frozen=True)
class Attempt:
    """What a connection brought to the websocket upgrade."""

    station_id: str
    tls: bool
    authorization: str | None = None
    certificate: dict[str, Any] | None = None  # {"cn", "o", "serial", "not_after", "der", "problem"}: certificate_of


@dataclass
class Policy:
    """The deployment's profile, per-station overrides, passwords, the operator, and which
    stations may fall back from 3 to 2."""

    profile: int = 0  # 0: no security (the development default: anyone connects)
    overrides: dict[str, int] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    operator: str | None = None
    downgrade: set[str] = field(default_factory=set)  # station ids allowed 3 -> 2; "*" for all
    certificates: dict[str, str] = field(default_factory=dict)  # certificate serial -> the station that used it
    throttle: Throttle = field(default_factory=Throttle)

    def profile_of(self, station: str) -> int:
        return self.overrides.get(station, self.profile)

    def decide(self, attempt: Attempt) -> tuple[int | None, str | None]:
        """(the profile the connection runs, None) or (None, why it is refused)."""
        station = attempt.station_id
        wanted = self.profile_of(station)
        if wanted == 0:
            return None, None
        wait = self.throttle.waiting(station)
        if wait > 0:
            return None, f"too many failed attempts: wait {wait:.0f} s"
        profile, why = self._check(attempt, wanted)
        if why is None:
            self.throttle.passed(station)
        else:
            self.throttle.failed(station)
        return profile, why

    def _check(self, attempt: Attempt, wanted: int) -> tuple[int | None, str | None]:
        station = attempt.station_id
        if wanted >= 2 and not attempt.tls:
            return None, f"profile {wanted} needs TLS (wss://)"
        if wanted == 3:
            if attempt.certificate is None:
                if station in self.downgrade or "*" in self.downgrade:
                    why = self._password(attempt)
                    return (2, None) if why is None else (None, f"profile 3 without a client certificate: {why}")
                return None, "profile 3 needs a client certificate (a downgrade to 2 is not allowed for this station)"
            return self._certificate(attempt)
        why = self._password(attempt)
        return (wanted, None) if why is None else (None, why)

    def _password(self, attempt: Attempt) -> str | None:
        credentials = basic_auth(attempt.authorization)
        if credentials is None:
            return "no Basic Auth credentials"
        user, password = credentials
        if user != attempt.station_id:
            return f"unknown user {user!r}: the Basic Auth user is the station id"
        stored = self.passwords.get(attempt.station_id)
        if stored is None or not verify_password(password, stored):
            return "wrong password"
        return None

    def _certificate(self, attempt: Attempt) -> tuple[int | None, str | None]:
        cert = attempt.certificate or {}
        if cert.get("problem"):
            return None, f"client certificate {cert['problem']}"
        if cert.get("cn") != attempt.station_id:
            return None, f"client certificate CN {cert.get('cn')!r} is not the station id"
        if self.operator is not None and cert.get("o") != self.operator:
            return None, f"client certificate O {cert.get('o')!r} is not the operator {self.operator!r}"
        serial = str(cert.get("serial"))
        owner = self.certificates.setdefault(serial, attempt.station_id)
        if owner != attempt.station_id:
            return None, f"client certificate already used by {owner}"
        if cert.get("revoked"):
            return None, "client certificate revoked (OCSP)"
        return 3, None


def certificate_of(peer: Peer | None) -> dict[str, Any] | None:
    """The client certificate a TLS connection presented: CN, O, serial, expiry, and
    ``problem``, why it does not chain to the CA (None when it does)."""
    if peer is None or peer.certificate is None:
        return None
    cert = peer.certificate
    from cryptography.hazmat.primitives.serialization import Encoding

    from twin import pki

    return {**pki.subject(cert), "serial": cert.serial_number, "not_after": cert.not_valid_after_utc.isoformat(),
            "der": cert.public_bytes(Encoding.DER), "problem": peer.problem}  # fmt: skip


@dataclass
class Ocsp:
    """Revocation checks against an OCSP responder, each answer cached for ``ttl`` seconds."""

    url: str
    issuer: Any  # the CA certificate (cryptography)
    ttl: float = 300.0
    cache: dict[int, tuple[float, str]] = field(default_factory=dict)

    async def status(self, der: bytes) -> str:
        """"good", "revoked", "unknown" or "unavailable" (no answer from the responder)."""
        import aiohttp
        from cryptography import x509

        from twin import pki

        cert = x509.load_der_x509_certificate(der)
        known = self.cache.get(cert.serial_number)
        if known is not None and known[0] > time.monotonic():
            return known[1]
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                body = pki.ocsp_request(cert, self.issuer)
                async with http.post(self.url, data=body, headers={"Content-Type": "application/ocsp-request"}) as r:
                    answer = pki.ocsp_status(await r.read(), self.issuer)
        except (aiohttp.ClientError, TimeoutError, pki.PkiError, OSError):
            return "unavailable"
        self.cache[cert.serial_number] = (time.monotonic() + self.ttl, answer)
        return answer


@dataclass
class Guard:
    """What the gateway checks at each upgrade: the policy, its TLS context (profiles 2 and
    3), and the OCSP responder for client certificates."""

    policy: Policy
    tls: Tls | None = None
    ocsp: Ocsp | None = None

    async def admit(
        self, station_id: str, authorization: str | None, peer: Peer | None
    ) -> tuple[dict[str, Any], str | None]:
        """(what the connection showed, for its Connected record; why it is refused or None)."""
        cert = certificate_of(peer)
        shown: dict[str, Any] = {}
        if cert is not None:
            if self.ocsp is not None and not cert["problem"]:
                cert["ocsp"] = await self.ocsp.status(cert["der"])
                cert["revoked"] = cert["ocsp"] == "revoked"
            shown["certificate"] = {k: v for k, v in cert.items() if k not in ("der", "revoked", "problem")}
            shown["certificate"]["serial"] = str(cert["serial"])
        attempt = Attempt(station_id, tls=self.tls is not None, authorization=authorization, certificate=cert)
        profile, why = self.policy.decide(attempt)
        shown["security_profile"] = profile
        return shown, why


def guard_from(profile: int, pki_dir: str | None = None, passwords: str | None = None, ocsp_url: str | None = None,
               overrides: str | None = None, downgrade: str | None = None) -> Guard | None:  # fmt: skip
    """The gateway's guard from its options; None when no security is asked for."""
    station_profiles: dict[str, int] = {}
    if overrides:
        try:
            station_profiles = {str(k): int(v) for k, v in orjson.loads(Path(overrides).read_bytes()).items()}
        except (OSError, orjson.JSONDecodeError, AttributeError, ValueError, TypeError) as exc:
            raise SecurityError(f"{overrides}: not a JSON object of station id -> profile ({exc})") from None
    profiles = {profile, *station_profiles.values()} - {0}
    if not profiles:
        return None
    if not profiles <= {1, 2, 3}:
        raise SecurityError(f"security profiles are 1, 2 and 3, not {sorted(profiles - {1, 2, 3})}")
    if 1 in profiles and profiles & {2, 3}:
        raise SecurityError("profile 1 (ws) and profiles 2-3 (wss) cannot share a port: run one gateway for each")
    tls = profiles & {2, 3}
    if tls and not pki_dir:
        raise SecurityError("profiles 2 and 3 need --pki DIR (the CSMS certificate and the stations' CA)")
    if (profiles & {1, 2} or downgrade) and not passwords:
        raise SecurityError("profiles 1 and 2 (and a downgrade from 3 to 2) need --passwords FILE")
    operator, context, ocsp = None, None, None
    if pki_dir and tls:
        from twin import pki

        try:
            context = Tls.from_pki(pki_dir)
        except TlsError as exc:
            raise SecurityError(str(exc)) from None
        operator = pki.config(pki_dir).get("operator")
        if ocsp_url:
            ocsp = Ocsp(ocsp_url, context.ca)  # the CA the TLS layer verifies against, read once
    policy = Policy(
        profile=profile, overrides=station_profiles, passwords=load_passwords(passwords) if passwords else {},
        operator=operator, downgrade={s.strip() for s in (downgrade or "").split(",") if s.strip()},
    )  # fmt: skip
    return Guard(policy, context, ocsp)


@dataclass
class UpstreamTls:
    """Proxy mode towards a ``wss://`` CSMS: trust its CA, and present each station's own
    client certificate (``DIR/stations/<id>.pem`` and ``.key``) when there is one, so that
    the CSMS sees the profile the station has. Basic Auth is forwarded as the station sent it."""

    ca: str | None = None
    credentials: str | None = None
    contexts: dict[str, ssl.SSLContext] = field(default_factory=dict)

    def context(self, station: str) -> ssl.SSLContext:
        known = self.contexts.get(station)
        if known is not None:
            return known
        context = ssl.create_default_context(cafile=self.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.credentials:
            cert = Path(self.credentials) / "stations" / f"{station}.pem"
            if cert.exists():
                context.load_cert_chain(cert, cert.with_suffix(".key"))
        self.contexts[station] = context
        return context
