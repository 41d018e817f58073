"""What the commands that serve HTTP (``twin worker``, ``twin ocpi``, ``twin dashboard``) and
those that read the API share: the token store, TLS, ``--insecure``, and the caller's token."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Annotated

import typer

from twin.cli.app import fail
from twin.tokens import STORE_ENV, TOKEN_ENV, Guard, TokenError, TokenStore, is_loopback, store_path

ApiTokens = Annotated[str | None, typer.Option("--api-tokens", help="The token store (`twin token add`): "
                                               "every request needs a bearer token from it. Without one the door is "
                                               f"open, on loopback only. (env {STORE_ENV})")]  # fmt: skip
TlsCert = Annotated[str | None, typer.Option("--tls-cert", help="Serve HTTPS with this certificate (PEM; "
                                             "`twin pki init` makes one: DIR/csms.pem).")]  # fmt: skip
TlsKey = Annotated[str | None, typer.Option("--tls-key", help="The certificate's private key (PEM).")]
Insecure = Annotated[bool, typer.Option("--insecure", help="Serve beyond loopback with no token store: anyone "
                                        "who can reach the port reads everything.")]  # fmt: skip


def _remember(token: str | None) -> str | None:
    if token:
        os.environ[TOKEN_ENV] = token  # what twin.tokens.headers() sends
    return token


ApiToken = Annotated[str | None, typer.Option("--api-token", callback=_remember, show_default=False,
                                              help=f"The bearer token the API wants. (env {TOKEN_ENV})")]  # fmt: skip


@dataclass(frozen=True)
class Door:
    guard: Guard
    tls: ssl.SSLContext | None
    said: str
    """For the banner: who may come in."""


def server_tls(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert and not key:
        return None
    if not (cert and key):
        fail("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        fail(f"cannot serve HTTPS with {cert} and {key}: {exc}")
    return context


def http_door(host: str, api_tokens: str | None, cert: str | None, key: str | None, insecure: bool,
              port_flag: str) -> Door:  # fmt: skip
    """The door of a server about to bind ``host``: its guard (the token store of
    ``--api-tokens`` or ``TWIN_API_TOKENS``, or none) and TLS. No store and beyond loopback
    is refused, one clear line, unless ``--insecure``."""
    path = store_path(api_tokens)
    tls = server_tls(cert, key)
    if path is None:
        if not is_loopback(host) and not insecure:
            fail(f"{host} is beyond loopback and no token store is given: anyone who reaches {port_flag} would read "
                 "everything. Give --api-tokens FILE (`twin token add NAME --role admin --api-tokens FILE` makes "
                 "one), or --insecure to serve anyone anyway")  # fmt: skip
        said = "OPEN to anyone who reaches it (--insecure)" if not is_loopback(host) else \
            "open: no token store (--api-tokens), loopback only"  # fmt: skip
        return Door(Guard(None), tls, said)
    store = TokenStore(path)
    try:
        count = len(store.entries())
    except TokenError as exc:
        fail(str(exc))
    said = f"bearer tokens from {path}: {count}" + ("" if count else " yet (`twin token add`)")
    return Door(Guard(store), tls, said)
