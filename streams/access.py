"""Who may use the worker's API: one check in front of every page (a middleware on the web
app, so Faust's own pages and any page added later are behind it too), and the pages that
need a name: ``POST /v1/stations/{id}/commands`` (an operator's command, queued on
ocpp.commands with the caller's name), ``/v1/tokens`` (an admin's), ``/v1/whoami`` and
``/v1/metrics`` (the door's counts).

The verdict is :func:`twin.tokens.verdict`'s: 401 with no or an unknown token, 403 with a
token whose role is not enough, as ``{"error": ...}``; both counted. A worker started with no
token store is open (on loopback only: ``twin worker`` refuses anything else without
``--insecure``)."""

from __future__ import annotations

from typing import Any

import faust
import orjson

from twin.gateway.commands import command, command_problem
from twin.settings import Settings
from twin.tokens import ROLES, WHO, Guard, TokenError, allows, middleware

VENDOR = "twin"


def forwarded(request: Any) -> dict[str, str]:
    """The caller's credentials, for the peer worker a request is gathered from."""
    header = request.headers.get("Authorization")
    return {"Authorization": header} if header else {}


def tagged(payload: dict[str, Any], command_id: str, who: str) -> dict[str, Any]:
    """The payload with who asked in its ``customData`` (which every OCPP 2.x payload allows),
    so the CALL in ocpp.frames names them too; a payload with customData of its own is kept."""
    if "customData" in payload:
        return payload
    return {**payload, "customData": {"vendorId": VENDOR, "commandId": command_id, "requestedBy": who}}


def problem_of(body: Any) -> str | None:
    """Why a command request's body is not ``{"action": str, "payload": {...}}``, or None."""
    if not isinstance(body, dict):
        return 'the body is a JSON object: {"action": ..., "payload": {...}}'
    if not isinstance(body.get("action"), str) or not body["action"]:
        return "action is the OCPP action's name, e.g. Reset"
    if not isinstance(body.get("payload", {}), dict):
        return "payload is a JSON object"
    unknown = set(body) - {"action", "payload"}
    if unknown:
        return f"unknown fields: {', '.join(sorted(unknown))}"
    return None


def register(app: faust.App, guard: Guard, settings: Settings) -> None:
    commands = app.topic(settings.topics.commands, key_serializer="raw", value_serializer="raw")

    app.web.web_app.middlewares.append(middleware(guard))  # type: ignore[attr-defined]  # aiohttp's app

    def who(request: Any) -> str:
        entry = request.get(WHO)
        return entry.name if entry is not None else "api"

    @app.page("/v1/whoami")
    async def whoami(web: Any, request: Any) -> Any:
        entry = request.get(WHO)
        if entry is None:
            return web.json({"name": None, "role": None, "open": True})
        return web.json({"name": entry.name, "role": entry.role, "open": False})

    @app.page("/v1/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        """The door's counts since start: requests refused 401 (unauthenticated) and 403
        (forbidden), and let in."""
        return web.json({"http": dict(guard.stats())})

    @app.page("/v1/stations/{station_id}/commands")
    class StationCommands(faust.web.View):
        async def post(self, request: Any, station_id: str) -> Any:
            """Queue a CSMS-initiated call: ``{"action", "payload"}``, checked against the OCPP
            2.1 schema first; 202 and the command as queued."""
            try:
                body = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                body = None
            problem = problem_of(body)
            if problem is None:
                problem = command_problem(body["action"], body.get("payload", {}))
            if problem is not None:
                return self.json({"error": f"not sent: {problem}"}, status=400)
            payload = body.get("payload", {})
            cmd = command(station_id, body["action"], payload, who(request))
            marked = tagged(payload, cmd["command_id"], cmd["requested_by"])
            if command_problem(cmd["action"], marked) is None:  # the tag never makes a payload invalid
                cmd["payload"] = marked
            sent = await commands.send(key=station_id.encode(), value=orjson.dumps(cmd))
            await sent  # on the log before the caller hears 202
            return self.json(cmd, status=202)

    def admin_only(request: Any) -> str | None:
        """Why this caller may not manage tokens (the door checked already; said twice on
        purpose), or None."""
        if guard.store is None:
            return "this worker has no token store (--api-tokens): its API is open"
        entry = request.get(WHO)
        return None if entry is not None and allows(entry.role, "admin") else "managing tokens is an admin's"

    @app.page("/v1/tokens")
    class Tokens(faust.web.View):
        async def get(self, request: Any) -> Any:
            refused = admin_only(request)
            if refused:
                return self.json({"error": refused}, status=403)
            assert guard.store is not None
            return self.json({"tokens": [e.shown() for e in guard.store.entries()]})

        async def post(self, request: Any) -> Any:
            """``{"name", "role"}``: a new token, in the answer and nowhere else."""
            refused = admin_only(request)
            if refused:
                return self.json({"error": refused}, status=403)
            assert guard.store is not None
            try:
                body = orjson.loads(await request.read())
                name, role = str(body["name"]), str(body.get("role", "viewer"))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return self.json({"error": f'the body is {{"name": ..., "role": {"|".join(ROLES)}}}'}, status=400)
            try:
                token, made = guard.store.add(name, role)
            except TokenError as exc:
                return self.json({"error": str(exc)}, status=409 if "already" in str(exc) else 400)
            return self.json({**made.shown(), "token": token}, status=201)

    @app.page("/v1/tokens/{name}")
    class Token(faust.web.View):
        async def delete(self, request: Any, name: str) -> Any:
            refused = admin_only(request)
            if refused:
                return self.json({"error": refused}, status=403)
            assert guard.store is not None
            if not guard.store.revoke(name):
                return self.json({"error": f"no token named {name!r}"}, status=404)
            return self.json({"revoked": name})
