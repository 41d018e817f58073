"""``twin pki``: a test PKI for security profiles 2 and 3 and ISO 15118, certificate checks,
station passwords, and a small OCSP responder."""

from __future__ import annotations

import getpass
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated

import typer

from twin import pki as pki_
from twin.cli.app import Json, app, err, fail, print_json
from twin.security import SecurityError, set_password

pki_app = typer.Typer(help="A test PKI (CSMS CA, server and station certificates, the ISO 15118 chain), "
                      "certificate checks, station passwords and an OCSP responder.", no_args_is_help=True)  # fmt: skip
app.add_typer(pki_app, name="pki")


@pki_app.command()
def init(
    directory: Annotated[str, typer.Argument(help="Where the PKI goes (created).")],
    stations: Annotated[str, typer.Option(help="Station ids, comma-separated: a client certificate each.")] = "",
    operator: Annotated[str, typer.Option(help="The O of every certificate; profile 3 checks it.")] = pki_.OPERATOR,
    hosts: Annotated[str, typer.Option(help="Names the CSMS certificate is valid for.")] = "localhost,127.0.0.1",
    json_out: Json = False,
) -> None:
    """Write DIR/ca.pem, csms.pem/key, stations/ID.pem/key, the ISO 15118 chain in v2g/
    (V2G Root CA -> CPO Sub-CA 1 -> CPO Sub-CA 2 -> SECC) and pki.json."""
    ids = [s.strip() for s in stations.split(",") if s.strip()]
    made = pki_.init(directory, ids, operator, tuple(h.strip() for h in hosts.split(",") if h.strip()))
    if json_out:
        print_json(made)
    else:
        err.print(f"test PKI in [bold]{directory}[/] for {operator!r}: CA, CSMS certificate ({hosts}), "
                  f"{len(ids)} station certificates, the ISO 15118 chain")  # fmt: skip


@pki_app.command()
def station(directory: str, station_id: Annotated[str, typer.Argument(metavar="STATION")]) -> None:
    """Add a station's client certificate to an existing PKI."""
    try:
        path = pki_.add_station(directory, station_id)
    except pki_.PkiError as exc:
        fail(str(exc))
    err.print(f"{path} and its key")


@pki_app.command()
def revoke(directory: str, station_id: Annotated[str, typer.Argument(metavar="STATION")]) -> None:
    """Revoke a station's certificate: the OCSP responder answers "revoked" from now on."""
    try:
        serial = pki_.revoke(directory, station_id)
    except pki_.PkiError as exc:
        fail(str(exc))
    err.print(f"revoked {station_id}'s certificate (serial {serial})")


@pki_app.command()
def check(
    certificate: Annotated[str, typer.Argument(help="A PEM file: the certificate, then any intermediates.")],
    ca: Annotated[list[str], typer.Option("--ca", help="A trusted CA certificate (PEM); repeatable.")],
    json_out: Json = False,
) -> None:
    """Validate a certificate chain and say what is wrong with it: expired or not yet valid,
    wrong issuer or signature, a path length exceeded, a key too small. Exit 1 if anything is."""
    try:
        chain = pki_.read_pems(certificate)
        anchors = [c for path in ca for c in pki_.read_pems(path)]
    except pki_.PkiError as exc:
        fail(str(exc))
    found = pki_.problems(chain, anchors)
    if json_out:
        print_json({"certificate": certificate, "chain": len(chain), "ok": not found, "problems": found})
    elif found:
        for problem in found:
            err.print(f"[red]✗[/] {problem}")
    else:
        err.print(f"[green]✓[/] {certificate}: the chain of {len(chain)} is valid")
    if found:
        raise typer.Exit(1)


@pki_app.command()
def passwd(
    file: Annotated[str, typer.Argument(help="The passwords file (created): station id -> scrypt hash.")],
    station_id: Annotated[str, typer.Argument(metavar="STATION")],
    password: Annotated[str | None, typer.Option(help="The password; asked for when left out.")] = None,
) -> None:
    """Set a station's Basic Auth password (profiles 1 and 2). Only a salted scrypt hash is kept."""
    secret = password or getpass.getpass(f"password for {station_id}: ")
    if len(secret) < 16:
        fail("OCPP asks for passwords of 16 to 40 characters")
    try:
        set_password(file, station_id, secret)
    except SecurityError as exc:
        fail(str(exc))
    err.print(f"{file}: password of {station_id} set (scrypt)")


@pki_app.command("ocsp-responder")
def ocsp_responder(
    directory: str,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8888,
) -> None:
    """Answer OCSP requests (POST, RFC 6960) about this PKI's station certificates: good,
    revoked (`twin pki revoke`) or unknown, signed by the CA. For tests; Ctrl-C stops it."""
    try:
        pki_.load(directory)
    except pki_.PkiError as exc:
        fail(str(exc))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = pki_.ocsp_answer(directory, body)
            self.send_response(200)
            self.send_header("Content-Type", "application/ocsp-response")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as exc:
        fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}")
    err.print(f"OCSP responder for {Path(directory)} on [bold]http://127.0.0.1:{server.server_port}[/]")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop.wait()
    server.shutdown()
