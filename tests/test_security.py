"""Security profiles 1-3 at the gateway (real TLS, real websockets, the refusals on
ocpp.frames), the test PKI and its checks, passwords and throttling."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.exceptions import InvalidStatus

from tests.conftest import GatewayFactory, has, of_station, read_until
from tests.stations import BOOT
from twin import pki
from twin.broker import free_port
from twin.gateway.tls import Tls
from twin.security import (
    THROTTLE_AFTER,
    Attempt,
    Policy,
    Throttle,
    basic_auth,
    guard_from,
    hash_password,
    set_password,
    verify_password,
)
from twin.settings import Settings

PASSWORD = "correct horse battery staple"
STATIONS = ["SEC-1", "SEC-2", "SEC-3"]


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    pki.init(root, STATIONS, operator="Acme Charging")
    for station in STATIONS:
        set_password(root / "passwords.json", station, PASSWORD)
    return root


def auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def client_tls(root: Path, station: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(root / "ca.pem"))
    if station is not None:
        context.load_cert_chain(root / "stations" / f"{station}.pem", root / "stations" / f"{station}.key")
    return context


async def attempt(gw: Any, station: str, *, tls: ssl.SSLContext | None = None, headers: dict[str, str] | None = None,
                  path_station: str | None = None) -> int | None:  # fmt: skip
    """Connect, boot once; None when accepted, else the HTTP status of the refusal."""
    scheme = "wss" if tls else "ws"
    url = f"{scheme}://127.0.0.1:{gw.port}/ocpp/{path_station or station}"
    try:
        async with websockets.connect(url, subprotocols=["ocpp2.1"], ssl=tls, additional_headers=headers or {},  # type: ignore[list-item]
                                      server_hostname="localhost" if tls else None) as ws:  # fmt: skip
            await ws.send(orjson.dumps(BOOT).decode())
            await ws.recv()
            return None
    except InvalidStatus as exc:
        return exc.response.status_code


# -- passwords, Basic Auth, throttling, the policy ---------------------------------------------


def test_passwords_are_salted_scrypt_hashes() -> None:
    one, two = hash_password(PASSWORD), hash_password(PASSWORD)
    assert one != two and one.startswith("scrypt$") and PASSWORD not in one
    assert verify_password(PASSWORD, one) and not verify_password(PASSWORD + "x", one)
    assert not verify_password(PASSWORD, "garbage")


def test_basic_auth_parsing() -> None:
    assert basic_auth(auth("CS-1", "a:b")["Authorization"]) == ("CS-1", "a:b")
    assert basic_auth("Bearer x") is None and basic_auth("Basic !!!") is None and basic_auth(None) is None


def test_throttle_doubles_after_repeated_failures() -> None:
    throttle = Throttle()
    for _ in range(THROTTLE_AFTER - 1):
        throttle.failed("X", now=0.0)
    assert throttle.waiting("X", now=0.0) == 0
    throttle.failed("X", now=0.0)
    assert throttle.waiting("X", now=0.0) == 1.0
    throttle.failed("X", now=0.0)
    assert throttle.waiting("X", now=0.0) == 2.0
    throttle.passed("X")
    assert throttle.waiting("X", now=0.0) == 0


def test_the_policy_decides_each_case() -> None:
    policy = Policy(profile=3, overrides={"P2": 2}, passwords={"P2": hash_password(PASSWORD),
                    "DG": hash_password(PASSWORD)}, operator="Acme", downgrade={"DG"})  # fmt: skip
    cert = {"cn": "A", "o": "Acme", "serial": 1}
    assert policy.decide(Attempt("A", tls=True, certificate=cert)) == (3, None)
    assert policy.decide(Attempt("A", tls=False, certificate=cert))[1] == "profile 3 needs TLS (wss://)"
    assert "needs a client certificate" in str(policy.decide(Attempt("B", tls=True))[1])
    assert "CN 'A' is not the station id" in str(policy.decide(Attempt("C", tls=True, certificate=cert))[1])
    assert "is not the operator" in str(policy.decide(Attempt("D", tls=True, certificate={**cert, "cn": "D",
                                                                                        "o": "Evil"}))[1])  # fmt: skip
    assert "already used by A" in str(policy.decide(Attempt("E", tls=True, certificate={**cert, "cn": "E"}))[1])
    assert "revoked" in str(policy.decide(Attempt("F", tls=True, certificate={"cn": "F", "o": "Acme", "serial": 9,
                                                                               "revoked": True}))[1])  # fmt: skip
    assert policy.decide(Attempt("DG", tls=True, authorization=auth("DG", PASSWORD)["Authorization"])) == (2, None)
    assert policy.decide(Attempt("P2", tls=True, authorization=auth("P2", PASSWORD)["Authorization"])) == (2, None)
    assert policy.decide(Attempt("P2", tls=True, authorization=auth("P2", "nope")["Authorization"]))[1] == (
        "wrong password")


# -- the PKI ------------------------------------------------------------------------------


def test_the_test_pki_has_what_the_contract_names(authority: Path) -> None:
    for name in ("ca.pem", "csms.pem", "csms.key", "stations/SEC-1.pem", "stations/SEC-1.key"):
        assert (authority / name).is_file(), name
    server = pki.read_pems(authority / "csms.pem")[0]
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert pki.subject(pki.read_pems(authority / "stations" / "SEC-2.pem")[0]) == {"cn": "SEC-2", "o": "Acme Charging"}
    ca = pki.read_pems(authority / "ca.pem")
    assert pki.problems(pki.read_pems(authority / "stations" / "SEC-1.pem"), ca) == []


def test_the_iso15118_chain_has_the_domain_lifetimes(authority: Path) -> None:
    v2g = {n: pki.read_pems(authority / "v2g" / f"{n}.pem")[0] for n in ("root", "sub1", "sub2", "secc")}

    def years(cert: x509.Certificate) -> float:
        return (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365

    assert round(years(v2g["sub1"])) == 4 and round(years(v2g["sub2"])) == 1 and 60 <= years(v2g["secc"]) * 365 <= 92
    assert v2g["sub2"].extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert pki.problems([v2g["secc"], v2g["sub2"], v2g["sub1"]], [v2g["root"]]) == []


def test_chain_problems_are_named(authority: Path) -> None:
    ca = pki.read_pems(authority / "ca.pem")
    station = pki.read_pems(authority / "stations" / "SEC-1.pem")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3 * 365)
    assert any("SEC-1: expired on" in p for p in pki.problems(station, ca, at=later))
    root = pki.read_pems(authority / "v2g" / "root.pem")
    assert any("is not a trusted CA" in p for p in pki.problems(station, root))
    # CPO Sub-CA 2 (path length 0) signs another CA: the path length is exceeded
    sub2 = pki.Issued(pki.read_pems(authority / "v2g" / "sub2.pem")[0], pki.load_key(authority / "v2g" / "sub2.key"))
    sub3 = pki.issue(x509.Name.from_rfc4514_string("CN=Sub-CA 3"), sub2, pki.DAY * 30, ca_path_length=None)
    leaf = pki.issue(x509.Name.from_rfc4514_string("CN=leaf"), sub3, pki.DAY * 30)
    chain = [leaf.cert, sub3.cert, sub2.cert, pki.read_pems(authority / "v2g" / "sub1.pem")[0]]
    assert any("CPO Sub-CA 2: path length 0 exceeded" in p for p in pki.problems(chain, root))
    # a 1024-bit RSA key, self-signed
    small = rsa.generate_private_key(65537, 1024)
    name = x509.Name.from_rfc4514_string("CN=small")
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(small.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + pki.DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(small, hashes.SHA256()))  # fmt: skip
    assert any("key too small (RSA 1024 bits" in p for p in pki.problems([cert], [cert]))


def test_pki_commands(tmp_path: Path) -> None:
    twin = [sys.executable, "-m", "twin", "pki"]
    done = subprocess.run([*twin, "init", str(tmp_path / "p"), "--stations", "A,B", "--json"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and (tmp_path / "p" / "stations" / "B.pem").exists()
    ok = subprocess.run([*twin, "check", str(tmp_path / "p" / "stations" / "A.pem"), "--ca", str(tmp_path / "p" /
                         "ca.pem"), "--json"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ok.returncode == 0 and '"ok": true' in ok.stdout
    bad = subprocess.run([*twin, "check", str(tmp_path / "p" / "stations" / "A.pem"), "--ca", str(tmp_path / "p" /
                          "v2g" / "root.pem")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 1 and "is not a trusted CA" in bad.stderr and "Traceback" not in bad.stderr


# -- the gateway --------------------------------------------------------------------------


async def refusals(settings: Settings, station: str, n: int = 1) -> list[dict[str, Any]]:
    """Read in a thread, as every read of the log here: the gateway under test runs on this
    test's event loop, and a refusal it had to spool (a topic just made, its leader not yet
    known) reaches the log only while that loop runs."""
    records = await read_until(settings, has("Refused", station, n))
    return [r for r in of_station(records, station) if r["action"] == "Refused"]


@pytest.mark.integration
async def test_profile_3_mutual_tls(gateway: GatewayFactory, settings: Settings, authority: Path) -> None:
    gw = await gateway(guard=guard_from(3, str(authority)))
    assert await attempt(gw, "SEC-1", tls=client_tls(authority, "SEC-1")) is None
    assert await attempt(gw, "SEC-2", tls=client_tls(authority, None)) == 401  # no certificate, no downgrade
    assert await attempt(gw, "SEC-3", tls=client_tls(authority, "SEC-1")) == 401  # another station's certificate
    records = await read_until(settings, lambda rs: len([r for r in rs if r["action"] == "Refused"]) >= 2)
    connected = next(r for r in of_station(records, "SEC-1") if r["action"] == "Connected")
    assert connected["payload"]["security_profile"] == 3
    assert connected["payload"]["certificate"]["cn"] == "SEC-1"
    reasons = {r["station_id"]: r["payload"]["reason"] for r in records if r["action"] == "Refused"}
    assert "needs a client certificate" in reasons["SEC-2"]
    assert "CN 'SEC-1' is not the station id" in reasons["SEC-3"]


@pytest.mark.integration
async def test_a_certificate_from_another_ca_is_refused_against_its_station(
    gateway: GatewayFactory, settings: Settings, authority: Path, tmp_path: Path
) -> None:
    """The TLS layer accepts any client certificate; the upgrade, knowing the station id,
    refuses one that does not chain to the CA, and the refusal names the station. A handshake
    that fails outright (the station does not trust the CSMS) is recorded too, without a
    station id (none was sent)."""
    impostor = tmp_path / "impostor"
    pki.init(impostor, ["SEC-1"], operator="Acme Charging")  # same CN and O, another CA
    gw = await gateway(guard=guard_from(3, str(authority)))
    forged = ssl.create_default_context(cafile=str(authority / "ca.pem"))
    forged.load_cert_chain(impostor / "stations" / "SEC-1.pem", impostor / "stations" / "SEC-1.key")
    assert await attempt(gw, "SEC-1", tls=forged) == 401
    reason = (await refusals(settings, "SEC-1"))[0]["payload"]["reason"]
    assert reason == "client certificate does not chain to the CA: certificate signature failure"  # same CA name
    stranger = tmp_path / "stranger"
    pki.init(stranger, ["SEC-1"], operator="Someone Else")  # another CA by name too
    foreign = x509.load_pem_x509_certificate((stranger / "stations" / "SEC-1.pem").read_bytes())
    why = Tls.from_pki(authority).verify([foreign])
    assert why == "does not chain to the CA: unable to get local issuer certificate"
    ca = pki.load(authority)  # a 1024-bit RSA key the CA signed: it chains, and breaks the PKI's rules
    small = rsa.generate_private_key(65537, 1024)
    now = dt.datetime.now(dt.UTC)
    weak = (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string("CN=SEC-1"))
            .issuer_name(ca.cert.subject).public_key(small.public_key()).serial_number(7)
            .not_valid_before(now - pki.DAY).not_valid_after(now + pki.DAY).sign(ca.key, hashes.SHA256()))  # fmt: skip
    why = Tls.from_pki(authority).verify([weak]) or ""
    assert why.startswith("breaks the PKI's rules: SEC-1: key too small (RSA 1024 bits")
    assert await attempt(gw, "SEC-1", tls=client_tls(authority, "SEC-1")) is None  # the real one still gets in
    recorded = gw.recorder.recorded
    distrustful = client_tls(impostor, "SEC-1")  # trusts another CA: it gives up on the handshake
    with pytest.raises(ssl.SSLCertVerificationError):
        await attempt(gw, "SEC-1", tls=distrustful)
    deadline = time.monotonic() + 30
    while gw.recorder.recorded == recorded and time.monotonic() < deadline:  # the gateway sees it after the station
        await asyncio.sleep(0.05)
    [failed] = await refusals(settings, "", 1)
    assert failed["payload"]["reason"].startswith("TLS handshake failed: ")
    assert failed["payload"]["status"] == 0
    assert failed["payload"]["remote_address"].startswith("127.0.0.1:")


@pytest.mark.integration
async def test_profile_3_with_an_allowed_downgrade(gateway: GatewayFactory, authority: Path) -> None:
    gw = await gateway(guard=guard_from(3, str(authority), str(authority / "passwords.json"), downgrade="SEC-2"))
    assert await attempt(gw, "SEC-2", tls=client_tls(authority, None), headers=auth("SEC-2", PASSWORD)) is None
    assert await attempt(gw, "SEC-3", tls=client_tls(authority, None), headers=auth("SEC-3", PASSWORD)) == 401


@pytest.mark.integration
async def test_profile_2_passwords_and_throttling(gateway: GatewayFactory, settings: Settings, authority: Path) -> None:
    gw = await gateway(guard=guard_from(2, str(authority), str(authority / "passwords.json")))
    tls = client_tls(authority, None)
    assert await attempt(gw, "SEC-1", tls=tls, headers=auth("SEC-1", PASSWORD)) is None
    for _ in range(THROTTLE_AFTER):
        assert await attempt(gw, "SEC-2", tls=tls, headers=auth("SEC-2", "wrong")) == 401
    assert await attempt(gw, "SEC-2", tls=tls, headers=auth("SEC-2", PASSWORD)) == 401  # throttled: not even checked
    reasons = [r["payload"]["reason"] for r in await refusals(settings, "SEC-2", THROTTLE_AFTER + 1)]
    assert reasons[:THROTTLE_AFTER] == ["wrong password"] * THROTTLE_AFTER
    assert reasons[-1].startswith("too many failed attempts")


@pytest.mark.integration
async def test_a_revoked_certificate_is_refused(gateway: GatewayFactory, settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "pki"
    pki.init(root, ["REV-1", "REV-2"])
    pki.revoke(root, "REV-2")
    port = free_port()
    responder = subprocess.Popen([sys.executable, "-m", "twin", "pki", "ocsp-responder", str(root), "--port",
                                  str(port)], stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            except urllib.error.HTTPError:
                break  # it answers (GET is not OCSP)
            except OSError:
                time.sleep(0.2)
        gw = await gateway(guard=guard_from(3, str(root), ocsp_url=f"http://127.0.0.1:{port}/"))
        assert await attempt(gw, "REV-1", tls=client_tls(root, "REV-1")) is None
        assert await attempt(gw, "REV-2", tls=client_tls(root, "REV-2")) == 401
        assert (await refusals(settings, "REV-2"))[0]["payload"]["reason"] == "client certificate revoked (OCSP)"
    finally:
        responder.terminate()
        responder.wait(10)


@pytest.mark.integration
async def test_profile_1_basic_auth_over_ws(gateway: GatewayFactory, authority: Path) -> None:
    gw = await gateway(guard=guard_from(1, passwords=str(authority / "passwords.json")))
    assert await attempt(gw, "SEC-1", headers=auth("SEC-1", PASSWORD)) is None
    assert await attempt(gw, "SEC-3", headers=auth("SEC-1", PASSWORD)) == 401  # another station's credentials
    assert await attempt(gw, "SEC-3") == 401


# -- what the twin knows --------------------------------------------------------------------


def test_the_twin_knows_profile_certificate_and_failed_attempts() -> None:
    from twin import envelope, fold
    from twin.alerts import alerts

    cert = {"cn": "T-1", "o": "Acme", "serial": "42", "not_after": "2026-03-20T00:00:00+00:00", "ocsp": "good"}
    records = [
        envelope.lifecycle("Refused", {"reason": "wrong password", "status": 401}, station_id="T-1",
                           protocol="ocpp2.1", conn_id="c1", seq=1, ts="2026-03-01T07:59:00.000Z"),
        envelope.lifecycle("Refused", {"reason": "no supported subprotocol", "status": 400}, station_id="T-1",
                           protocol="", conn_id="c2", seq=1, ts="2026-03-01T07:59:30.000Z"),
        envelope.lifecycle("Connected", {"subprotocol": "ocpp2.1", "security_profile": 3, "certificate": cert},
                           station_id="T-1", protocol="ocpp2.1", conn_id="c3", seq=1, ts="2026-03-01T08:00:00.000Z"),
    ]  # fmt: skip
    twin = None
    raised = []
    for record in records:
        after = fold.apply(twin, record)
        raised += alerts(record, twin, after)
        twin = after
    assert twin is not None
    security = fold.public(twin)["security"]
    assert security["profile"] == 3 and security["certificate"]["cn"] == "T-1"
    assert security["certificate"]["not_after"].startswith("2026-03-20")
    assert security["failed_auth"] == 1  # the 400 was no authentication failure
    expiring = [a for a in raised if a["detail"].get("type") == "CertificateExpiresSoon"]
    assert len(expiring) == 1 and expiring[0]["detail"]["days_left"] == 18 and expiring[0]["severity"] == "medium"


@pytest.mark.integration
async def test_csms_mode_answers_certificate_management_from_the_pki(gateway: GatewayFactory, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from tests.conftest import url
    from tests.stations import raw_station
    from twin.gateway.certificates import LocalPki

    root = tmp_path / "pki"
    pki.init(root, ["PKI-1"])
    gw = await gateway(certificates=LocalPki(root))
    ca = pki.read_pems(root / "ca.pem")[0]
    mine = pki.read_pems(root / "stations" / "PKI-1.pem")[0]
    data = {"hashAlgorithm": "SHA256", "issuerNameHash": "00", "issuerKeyHash": "00",
            "serialNumber": format(mine.serial_number, "x"), "responderURL": "http://x"}  # fmt: skip
    request = {"ocspRequestData": data}
    async with raw_station(url(gw, "PKI-1")) as ws:
        answer = await ws.ask([2, "s1", "GetCertificateStatus", request])
        assert answer[2]["status"] == "Accepted"
        assert pki.ocsp_status(base64.b64decode(answer[2]["ocspResult"]), ca) == "good"
        pki.revoke(root, "PKI-1")
        answer = await ws.ask([2, "s2", "GetCertificateStatus", request])
        assert pki.ocsp_status(base64.b64decode(answer[2]["ocspResult"]), ca) == "revoked"
        ev = await ws.ask([2, "e1", "Get15118EVCertificate", {"iso15118SchemaVersion": "urn:iso:std:iso:15118:-20:AC",
                                                               "action": "Install", "exiRequest": "gAA="}])  # fmt: skip
        contract = x509.load_der_x509_certificate(base64.b64decode(ev[2]["exiResponse"]))
        assert ev[2]["status"] == "Accepted" and contract.issuer == pki.read_pems(root / "v2g" / "sub2.pem")[0].subject
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "PKI-1")])).sign(key, hashes.SHA256())
               .public_bytes(serialization.Encoding.PEM).decode())  # fmt: skip
        assert (await ws.ask([2, "c1", "SignCertificate", {"csr": csr}]))[2]["status"] == "Accepted"
        assert (await ws.ask([2, "c2", "SignCertificate", {"csr": "not a CSR"}]))[2]["status"] == "Rejected"


@pytest.mark.integration
async def test_proxy_mode_keeps_tls_on_both_sides(gateway: GatewayFactory, settings: Settings, authority: Path) -> None:
    """Station --mutual TLS--> proxy --mutual TLS, the station's own certificate--> CSMS (a
    second gateway in csms mode at profile 3): the CSMS admits the station as itself."""
    from twin.security import UpstreamTls

    csms = await gateway(guard=guard_from(3, str(authority)))
    proxy = await gateway(
        guard=guard_from(3, str(authority)), mode="proxy", upstream=f"wss://127.0.0.1:{csms.port}/ocpp",
        upstream_tls=UpstreamTls(str(authority / "ca.pem"), str(authority)),
    )  # fmt: skip
    assert await attempt(proxy, "SEC-2", tls=client_tls(authority, "SEC-2")) is None
    records = await read_until(settings, has("Connected", "SEC-2", 2))  # once at the proxy, once at the CSMS
    modes = sorted(r["payload"]["mode"] for r in of_station(records, "SEC-2") if r["action"] == "Connected")
    assert modes == ["csms", "proxy"]
    assert all(r["payload"]["certificate"]["cn"] == "SEC-2" for r in records if r["action"] == "Connected")
    # without the station's credentials the CSMS refuses the proxy's connection, and so the station
    bare = await gateway(guard=guard_from(3, str(authority)), mode="proxy", upstream=f"wss://127.0.0.1:{csms.port}/ocpp",
                         upstream_tls=UpstreamTls(str(authority / "ca.pem")))  # fmt: skip
    assert await attempt(bare, "SEC-3", tls=client_tls(authority, "SEC-3")) == 502


def test_passwords_files_in_either_shape(tmp_path: Path) -> None:
    from twin.security import load_passwords

    lines = tmp_path / "passwords.txt"
    lines.write_text(f"# station:password\nA:{PASSWORD}\nB:other password 123\n")
    loaded = load_passwords(lines)
    assert set(loaded) == {"A", "B"} and all(v.startswith("scrypt$") for v in loaded.values())
    assert verify_password(PASSWORD, loaded["A"])
    clear = tmp_path / "passwords.json"
    clear.write_text(orjson.dumps({"A": PASSWORD}).decode())
    assert verify_password(PASSWORD, load_passwords(clear)["A"])
    set_password(clear, "C", PASSWORD)  # rewrites the file with hashes only
    assert PASSWORD not in clear.read_text() and set(load_passwords(clear)) == {"A", "C"}
