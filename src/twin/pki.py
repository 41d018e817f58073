"""A test PKI for OCPP security profiles 2 and 3 and ISO 15118, and the checks a CSMS makes
of the certificates it is shown.

``init`` writes, in one directory::

    ca.pem ca.key            the CSMS CA: signs the CSMS's server certificate and the stations'
    csms.pem csms.key        the CSMS's TLS server certificate (localhost and 127.0.0.1)
    stations/ID.pem ID.key   a station's client certificate: CN = its id, O = the operator
    v2g/root.pem ...         ISO 15118: V2G Root CA -> CPO Sub-CA 1 -> CPO Sub-CA 2 -> SECC leaf
    pki.json                 the operator's name and the revoked serial numbers

Keys are EC P-256 (OCPP asks RSA >= 2048 or EC >= 224 bits). Validity periods follow
DOMAIN.md: Sub-CA 1 about 4 years, Sub-CA 2 about 1 year with path length 0, the SECC leaf
about 3 months.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = dt.timedelta(days=1)
OPERATOR = "twin test operator"
MIN_RSA_BITS, MIN_EC_BITS = 2048, 224
V2G = {  # name, lifetime, path length (None: a leaf)
    "root": ("V2G Root CA", 10 * 365 * DAY, None),
    "sub1": ("CPO Sub-CA 1", 4 * 365 * DAY, 1),
    "sub2": ("CPO Sub-CA 2", 365 * DAY, 0),
    "secc": ("SECC", 90 * DAY, None),
}


class PkiError(ValueError):
    """A PKI directory or certificate that cannot be used; the message says why."""


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(common: str, organisation: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if organisation:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    return x509.Name(parts)


def issue(
    subject: x509.Name,
    issuer: Issued | None,
    lifetime: dt.timedelta,
    *,
    ca_path_length: int | None | bool = False,
    server_names: tuple[str, ...] = (),
    client: bool = False,
    now: dt.datetime | None = None,
) -> Issued:
    """A certificate for a new key; ``issuer`` None: self-signed. ``ca_path_length``: False
    for a leaf, None for a CA without a limit, a number for a CA with one."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)
    is_ca = ca_path_length is not False
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=ca_path_length if is_ca else None),  # type: ignore[arg-type]
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False), critical=True)  # fmt: skip
    else:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_names:
        alt: list[x509.GeneralName] = []
        for host in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def save(issued: Issued, cert_path: Path, key_path: Path | None = None) -> None:
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    if key_path is not None:
        key_path.write_bytes(issued.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
        key_path.chmod(0o600)


def load_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise PkiError(f"{path}: no private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path}: an EC key was expected")
    return key


def load(directory: str | Path) -> Issued:
    """The CSMS CA of a PKI directory."""
    root = Path(directory)
    try:
        cert = x509.load_pem_x509_certificate((root / "ca.pem").read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"{root}: not a PKI directory made by `twin pki init` ({exc})") from None
    return Issued(cert, load_key(root / "ca.key"))


def config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "pki.json"
    try:
        value: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise PkiError(f"{path}: {exc}") from None
    return value


def _write_config(directory: Path, value: dict[str, Any]) -> None:
    (directory / "pki.json").write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2))


def init(directory: str | Path, stations: list[str], operator: str = OPERATOR,
         hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> dict[str, Any]:  # fmt: skip
    """Write a test PKI (see the module's docstring); returns what was written."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    ca = issue(_name("twin CSMS CA", operator), None, 10 * 365 * DAY, ca_path_length=0)
    save(ca, root / "ca.pem", root / "ca.key")
    save(issue(_name("twin CSMS", operator), ca, 365 * DAY, server_names=hosts), root / "csms.pem", root / "csms.key")
    _write_config(root, {"operator": operator, "revoked": {}})
    for station in stations:
        add_station(root, station)
    chain: Issued | None = None
    for label, (common, lifetime, path_length) in V2G.items():
        is_ca = label != "secc"
        chain = issue(_name(common, operator), chain, lifetime,
                      ca_path_length=path_length if is_ca else False)  # fmt: skip
        save(chain, root / "v2g" / f"{label}.pem", root / "v2g" / f"{label}.key")
    return {"directory": str(root), "operator": operator, "stations": stations, "hosts": list(hosts)}


def add_station(directory: str | Path, station: str) -> Path:
    """A client certificate for a station: CN its id, O the operator, signed by the CSMS CA."""
    root = Path(directory)
    ca, operator = load(root), config(root)["operator"]
    path = root / "stations" / f"{station}.pem"
    save(issue(_name(station, operator), ca, 2 * 365 * DAY, client=True), path, path.with_suffix(".key"))
    return path


def revoke(directory: str | Path, station: str) -> int:
    """Mark a station's certificate revoked (the OCSP responder answers so); its serial."""
    root = Path(directory)
    path = root / "stations" / f"{station}.pem"
    try:
        serial = x509.load_pem_x509_certificate(path.read_bytes()).serial_number
    except OSError:
        raise PkiError(f"no certificate for {station} in {root}/stations") from None
    value = config(root)
    value["revoked"][str(serial)] = dt.datetime.now(dt.UTC).isoformat()
    _write_config(root, value)
    return serial


def key_bits(cert: x509.Certificate) -> tuple[str, int]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size
    return type(key).__name__, 0


def problems(chain: list[x509.Certificate], anchors: list[x509.Certificate],
             at: dt.datetime | None = None) -> list[str]:  # fmt: skip
    """What is wrong with a chain (leaf first, then its intermediates) ending at one of the
    ``anchors``: expired or not yet valid, wrong issuer or signature, an issuer that is no
    CA or whose path length is exceeded, a key too small. Empty: it is good."""
    moment = at or dt.datetime.now(dt.UTC)
    found: list[str] = []
    if not chain:
        return ["no certificate"]
    path = list(chain)
    top = path[-1]
    anchor = next((a for a in anchors if a.subject == top.issuer), None)
    if anchor is None and top not in anchors:
        found.append(f"{_cn(top)}: issuer {top.issuer.rfc4514_string()!r} is not a trusted CA")
    elif anchor is not None and anchor not in path:
        path.append(anchor)
    for depth, cert in enumerate(path):
        who = _cn(cert)
        if moment < cert.not_valid_before_utc:
            found.append(f"{who}: not valid before {cert.not_valid_before_utc.isoformat()}")
        if moment > cert.not_valid_after_utc:
            found.append(f"{who}: expired on {cert.not_valid_after_utc.isoformat()}")
        kind, bits = key_bits(cert)
        if bits < {"RSA": MIN_RSA_BITS, "EC": MIN_EC_BITS}.get(kind, 1 << 30):
            found.append(f"{who}: key too small ({kind} {bits} bits; RSA >= {MIN_RSA_BITS} or EC >= {MIN_EC_BITS})")
        if depth + 1 < len(path):
            issuer = path[depth + 1]
            if cert.issuer != issuer.subject:
                found.append(f"{who}: issued by {cert.issuer.rfc4514_string()!r}, not by {_cn(issuer)!r}")
                continue
            try:
                cert.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                found.append(f"{who}: signature does not verify with {_cn(issuer)}'s key")
            constraints = _constraints(issuer)
            if constraints is None or not constraints.ca:
                found.append(f"{_cn(issuer)}: issues certificates but is not a CA")
            elif constraints.path_length is not None:
                below = sum(1 for c in path[: depth + 1] if _is_ca(c))  # CA certificates under the issuer
                if below > constraints.path_length:
                    found.append(f"{_cn(issuer)}: path length {constraints.path_length} exceeded "
                                 f"({below} CA certificates below it)")  # fmt: skip
    return found


def _is_ca(cert: x509.Certificate) -> bool:
    constraints = _constraints(cert)
    return bool(constraints and constraints.ca)


def _constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def subject(cert: x509.Certificate) -> dict[str, str | None]:
    """CN and O, as the gateway checks them."""
    def first(oid: x509.ObjectIdentifier) -> str | None:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else None

    return {"cn": first(NameOID.COMMON_NAME), "o": first(NameOID.ORGANIZATION_NAME)}


def read_pems(path: str | Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"{path}: no PEM certificates ({exc})") from None


def ocsp_answer(directory: str | Path, request_der: bytes) -> bytes:
    """The OCSP response (DER) for a request about a station certificate of this PKI:
    good, revoked (``twin pki revoke``) or unknown; signed by the CSMS CA."""
    from cryptography.x509 import ocsp

    try:
        request = ocsp.load_der_ocsp_request(request_der)
    except ValueError:
        return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(
            serialization.Encoding.DER)  # fmt: skip
    return ocsp_for_serial(directory, request.serial_number)


def ocsp_for_serial(directory: str | Path, serial: int) -> bytes:
    """The signed OCSP response (DER) about the station certificate with this serial."""
    from cryptography.x509 import ocsp

    root = Path(directory)
    ca = load(root)
    revoked = config(root)["revoked"]
    known = {}
    for pem in (root / "stations").glob("*.pem"):
        cert = x509.load_pem_x509_certificate(pem.read_bytes())
        known[cert.serial_number] = cert
    found = known.get(serial)
    now = dt.datetime.now(dt.UTC)
    if found is None:
        status, when = ocsp.OCSPCertStatus.UNKNOWN, None
        stand_in = issue(_name("unknown"), ca, DAY).cert  # the builder wants a certificate: one with the serial
        cert = x509.CertificateBuilder(
            stand_in.issuer, stand_in.subject, stand_in.public_key(), serial,
            stand_in.not_valid_before_utc, stand_in.not_valid_after_utc, list(stand_in.extensions),
        ).sign(ca.key, hashes.SHA256())  # fmt: skip
    elif str(found.serial_number) in revoked:
        cert, status = found, ocsp.OCSPCertStatus.REVOKED
        when = dt.datetime.fromisoformat(revoked[str(found.serial_number)])
    else:
        cert, status, when = found, ocsp.OCSPCertStatus.GOOD, None
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert, issuer=ca.cert, algorithm=hashes.SHA256(), cert_status=status, this_update=now,
        next_update=now + DAY, revocation_time=when,
        revocation_reason=x509.ReasonFlags.key_compromise if when else None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, ca.cert)  # fmt: skip
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    from cryptography.x509 import ocsp

    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256())
    return builder.build().public_bytes(serialization.Encoding.DER)


def ocsp_status(response_der: bytes, issuer: x509.Certificate) -> str:
    """"good", "revoked" or "unknown" from a response signed by ``issuer``; raises PkiError
    for a response that is not one, or is not signed by it."""
    from cryptography.x509 import ocsp

    try:
        response = ocsp.load_der_ocsp_response(response_der)
    except ValueError as exc:
        raise PkiError(f"not an OCSP response ({exc})") from None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise PkiError(f"OCSP responder answered {response.response_status.name}")
    key = issuer.public_key()
    algorithm = response.signature_hash_algorithm
    assert isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None
    try:
        key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
    except InvalidSignature:
        raise PkiError("the OCSP response is not signed by the CA") from None
    return {ocsp.OCSPCertStatus.GOOD: "good", ocsp.OCSPCertStatus.REVOKED: "revoked"}.get(
        response.certificate_status, "unknown")  # fmt: skip
