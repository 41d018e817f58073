"""Certificate management in csms mode: Get15118EVCertificate, GetCertificateStatus and
SignCertificate are answered by a provider. The default answers from the local test PKI
(``twin pki init``); another provider (a real PKI, a hub's contract certificate pool) plugs
in with the same three methods.

The local provider's ``exiResponse`` is the base64 DER of a contract certificate it issues
under CPO Sub-CA 2, not an EXI-encoded ISO 15118 message: enough for tests of the message
flow, not for a vehicle.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Protocol

from twin import pki


class CertificateProvider(Protocol):
    def ev_certificate(self, station: str, payload: dict[str, Any]) -> dict[str, Any]: ...
    def certificate_status(self, station: str, payload: dict[str, Any]) -> dict[str, Any]: ...
    def sign(self, station: str, payload: dict[str, Any]) -> dict[str, Any]: ...


class LocalPki:
    """Answers from a ``twin pki init`` directory."""

    def __init__(self, directory: str | Path) -> None:
        self.root = Path(directory)
        pki.load(self.root)  # fails now, with a clear message, if it is not one

    def ev_certificate(self, station: str, payload: dict[str, Any]) -> dict[str, Any]:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        try:
            sub2 = pki.Issued(pki.read_pems(self.root / "v2g" / "sub2.pem")[0],
                              pki.load_key(self.root / "v2g" / "sub2.key"))  # fmt: skip
        except pki.PkiError:
            return {"status": "Failed", "exiResponse": "", "statusInfo": {"reasonCode": "NoV2GPki"}}
        contract = pki.issue(x509.Name.from_rfc4514_string(f"CN=contract for {station}"), sub2, 365 * pki.DAY,
                             client=True)  # fmt: skip
        der = contract.cert.public_bytes(serialization.Encoding.DER)
        return {"status": "Accepted", "exiResponse": base64.b64encode(der).decode()}

    def certificate_status(self, station: str, payload: dict[str, Any]) -> dict[str, Any]:
        data = payload.get("ocspRequestData") or {}
        try:
            serial = int(str(data.get("serialNumber", "")), 16)
        except ValueError:
            return {"status": "Failed", "statusInfo": {"reasonCode": "InvalidSerialNumber"}}
        answer = pki.ocsp_for_serial(self.root, serial)
        return {"status": "Accepted", "ocspResult": base64.b64encode(answer).decode()}

    def sign(self, station: str, payload: dict[str, Any]) -> dict[str, Any]:
        from cryptography import x509

        try:
            csr = x509.load_pem_x509_csr(str(payload.get("csr", "")).encode())
        except ValueError:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "InvalidCSR"}}
        if not csr.is_signature_valid:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "InvalidSignature"}}
        return {"status": "Accepted"}
