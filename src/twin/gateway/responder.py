"""CSMS mode's answers: a schema-valid response to every station-initiated action.

Handlers register by action (``@answers("BootNotification")``); every other action gets
the smallest response its schema accepts, preferring ``Accepted`` wherever a status is
asked for. The gateway has a clock, so responses may carry the current time; the fold
never does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twin.envelope import iso_ms
from twin.gateway.certificates import CertificateProvider
from twin.schemas import schema

Handler = Callable[[dict[str, Any], "Context"], dict[str, Any]]
_HANDLERS: dict[str, Handler] = {}


class Context:
    def __init__(self, protocol: str, heartbeat_interval: int, station_id: str = "",
                 certificates: CertificateProvider | None = None) -> None:  # fmt: skip
        self.protocol, self.heartbeat_interval = protocol, heartbeat_interval
        self.station_id, self.certificates = station_id, certificates


def answers(action: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS[action] = fn
        return fn

    return register


def respond(action: str, payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    handler = _HANDLERS.get(action)
    if handler is not None:
        return handler(payload, ctx)
    return minimal(ctx.protocol, action)


@answers("BootNotification")
def _boot(_: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return {"currentTime": iso_ms(), "interval": ctx.heartbeat_interval, "status": "Accepted"}


@answers("Heartbeat")
def _heartbeat(_: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return {"currentTime": iso_ms()}


@answers("Authorize")
def _authorize(_: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return {"idTokenInfo": {"status": "Accepted"}}


@answers("TransactionEvent")
def _transaction_event(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    if "idToken" in payload:
        return {"idTokenInfo": {"status": "Accepted"}}
    return {}


@answers("Get15118EVCertificate")
def _ev_certificate(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    if ctx.certificates is None:
        return minimal(ctx.protocol, "Get15118EVCertificate")
    return ctx.certificates.ev_certificate(ctx.station_id, payload)


@answers("GetCertificateStatus")
def _certificate_status(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    if ctx.certificates is None:
        return minimal(ctx.protocol, "GetCertificateStatus")
    return ctx.certificates.certificate_status(ctx.station_id, payload)


@answers("SignCertificate")
def _sign(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    if ctx.certificates is None:
        return minimal(ctx.protocol, "SignCertificate")
    return ctx.certificates.sign(ctx.station_id, payload)


# -- the smallest valid response, from the schema -------------------------------------------
_PREFERRED = ("Accepted", "Valid", "NoError", "Ok")


def minimal(protocol: str, action: str) -> dict[str, Any]:
    document = schema(protocol, action, "Response") or {}
    value: dict[str, Any] = _fill(document, document)
    return value


def _fill(node: dict[str, Any], root: dict[str, Any]) -> Any:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return _fill(root["definitions"][name], root)
    if "enum" in node:
        values = node["enum"]
        return next((v for v in _PREFERRED if v in values), values[0])
    kind = node.get("type")
    if kind == "object":
        props = node.get("properties", {})
        return {name: _fill(props[name], root) for name in node.get("required", [])}
    if kind == "array":
        return [_fill(node["items"], root) for _ in range(node.get("minItems", 0))]
    if kind == "string":
        if node.get("format") == "date-time":
            return iso_ms()
        return "x" * max(1, node.get("minLength", 1)) if node.get("minLength") else ""
    if kind in ("integer", "number"):
        return node.get("minimum", 0)
    if kind == "boolean":
        return False
    return None
