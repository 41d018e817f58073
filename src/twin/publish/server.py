"""``twin ocpi``'s HTTP side: OCPI 2.2.1 (the CPO's versions, credentials, locations,
tariffs, sessions, cdrs and commands) and the DATEX II v3.7 AFIR feeds.

Server: aiohttp, already the worker's and the VEN's HTTP library; models: pydantic v2 models
of our own for what comes in (command bodies, credentials), plain dicts built by the pure
functions of this package for what goes out. Not ``extrawest-ocpi`` (pins pydantic 1, which
clashes with the rest of the stack) nor ``ocpi-types`` (AGPL); the tests parse every answer
with ``extrawest-ocpi``'s models, in a virtual environment of their own.

Tokens: token A (``--ocpi-token-a``) is for registering only; a registration (POST
credentials with the eMSP's token B) fetches the eMSP's versions and endpoints with token B
and answers with a new token C, after which token A no longer works for that party. Every
OCPI request needs ``Authorization: Token <base64(token)>`` (the plain token is accepted too,
as OCPI 2.1.1 sent it); without a valid one: HTTP 401, OCPI status 2000. Registrations are
kept in ``DATA_DIR/parties.json``; every command and its result in ``DATA_DIR/commands.jsonl``,
and which transaction a START_SESSION began (the station's TransactionEvent carries its
remoteStartId) or an eMSP's token was used for: a Session or CDR is that eMSP's alone, read
by it and pushed to it (``twin.publish.deliver``), never to another registered party.
The DATEX II feeds are public, as AFIR Art. 20 wants them free of charge.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import ClientSession, ClientTimeout, web
from pydantic import BaseModel, Field, ValidationError

from twin.publish import commands as cmds
from twin.publish import datex2
from twin.publish import locations as loc
from twin.publish import sessions as sess
from twin.publish import tariffs as tar
from twin.publish.deliver import Deliveries
from twin.publish.live import Fleet
from twin.publish.party import Party, iso, parse

log = logging.getLogger("twin.ocpi")
VERSION = "2.2.1"
MODULES = {"credentials": "SENDER", "locations": "SENDER", "tariffs": "SENDER", "sessions": "SENDER",
           "cdrs": "SENDER", "commands": "RECEIVER"}  # fmt: skip
LIMIT, MAX_LIMIT = 50, 500


class BusinessDetails(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    website: str | None = None


class Role(BaseModel):
    role: str
    business_details: BusinessDetails
    party_id: str = Field(min_length=3, max_length=3)
    country_code: str = Field(min_length=2, max_length=2)


class Credentials(BaseModel):
    token: str = Field(min_length=1, max_length=64)
    url: str = Field(min_length=1)
    roles: list[Role] = Field(min_length=1)


def now() -> str:
    return iso(datetime.now(UTC))


def ocpi(data: Any, status_code: int = 1000, message: str = "Success", http: int = 200,
         headers: Mapping[str, str] | None = None) -> web.Response:  # fmt: skip
    body: dict[str, Any] = {"status_code": status_code, "status_message": message, "timestamp": now()}
    if data is not None:
        body["data"] = data
    return web.Response(body=orjson.dumps(body), status=http, content_type="application/json",
                        headers=dict(headers or {}))  # fmt: skip


def token_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Token "):
        return None
    raw = header[6:].strip()
    try:
        decoded = base64.b64decode(raw, validate=True).decode()
        if decoded and decoded.isprintable():
            return decoded
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    return raw


class Ocpi:
    """The OCPI and DATEX II service over a :class:`Fleet`."""

    def __init__(self, fleet: Fleet, party: Party, base_url: str, token_a: str, data_dir: Path) -> None:
        self.fleet, self.party, self.base = fleet, party, base_url.rstrip("/")
        self.token_a = token_a
        self.data = data_dir
        self.data.mkdir(parents=True, exist_ok=True)
        self.parties: dict[str, dict[str, Any]] = {}  # token C -> the eMSP's registration
        self.reservations: dict[int, dict[str, Any]] = {}  # OCPP ReserveNow.id -> the roaming reservation
        self.started: dict[str, dict[str, Any]] = {}  # transaction id -> the eMSP's token that began it
        self.remote_starts: dict[int, dict[str, Any]] = {}  # START_SESSION's remoteStartId -> its token
        self.tokens: dict[str, dict[str, Any]] = {}  # uid -> the token an eMSP last sent with a command
        self.served: dict[str, dict[str, Any]] = {}  # feed -> when it was last served, to whom, what
        self.results: dict[str, dict[str, Any]] = {}  # party -> the last CommandResult POSTed to it
        self.journal = self.data / "commands.jsonl"
        self._load()
        self.deliveries = Deliveries(party, self.data / "cdrs-taken.jsonl")
        fleet.on_remote_start = self._started_remotely
        self.http: ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- state kept across restarts ------------------------------------------------------------
    def _load(self) -> None:
        path = self.data / "parties.json"
        if path.is_file():
            self.parties = orjson.loads(path.read_bytes())
        if self.journal.is_file():
            for line in self.journal.read_bytes().splitlines():
                with_contextless(self._replay, line)

    def _replay(self, line: bytes) -> None:
        entry = orjson.loads(line)
        if entry.get("command") == "RESERVE_NOW" and entry.get("ocpp_id") is not None and entry.get("sent"):
            self.reservations[int(entry["ocpp_id"])] = entry["reservation"]
        token = (entry.get("body") or {}).get("token")
        if entry.get("sent") and isinstance(token, dict) and token.get("uid"):
            self.tokens[str(token["uid"])] = token
            if entry.get("remote_start_id") is not None:
                self.remote_starts[int(entry["remote_start_id"])] = token
        if entry.get("started") is not None and isinstance(entry.get("token"), dict):
            self.started[str(entry["started"])] = entry["token"]

    def _save_parties(self) -> None:
        (self.data / "parties.json").write_bytes(orjson.dumps(self.parties, option=orjson.OPT_INDENT_2))

    def record(self, entry: dict[str, Any]) -> None:
        with self.journal.open("ab") as f:
            f.write(orjson.dumps({"at": now(), **entry}) + b"\n")

    # -- the app -------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        r = app.router
        r.add_get("/ocpi/versions", self.versions)
        r.add_get(f"/ocpi/{VERSION}", self.details)
        r.add_get(f"/ocpi/{VERSION}/", self.details)
        r.add_route("*", f"/ocpi/{VERSION}/credentials", self.credentials)
        r.add_get(f"/ocpi/{VERSION}/locations", self.locations)
        r.add_get(f"/ocpi/{VERSION}/locations/{{location_id}}", self.location)
        r.add_get(f"/ocpi/{VERSION}/locations/{{location_id}}/{{evse_uid}}", self.location)
        r.add_get(f"/ocpi/{VERSION}/locations/{{location_id}}/{{evse_uid}}/{{connector_id}}", self.location)
        r.add_get(f"/ocpi/{VERSION}/tariffs", self.tariffs)
        r.add_get(f"/ocpi/{VERSION}/sessions", self.sessions)
        r.add_get(f"/ocpi/{VERSION}/cdrs", self.cdrs)
        r.add_post(f"/ocpi/{VERSION}/commands/{{command}}", self.command)
        r.add_get("/datex2/v3/afir/table", self.datex_table)
        r.add_get("/datex2/v3/afir/status", self.datex_status)
        r.add_get("/status", self.status)
        r.add_route("*", "/ocpi/{tail:.*}", self.unknown)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        self.http = ClientSession(timeout=ClientTimeout(total=15))

    async def _stop(self, _: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.http is not None:
            await self.http.close()

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:  # fmt: skip
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if request.path.startswith("/ocpi"):
                return ocpi(None, 2000, exc.reason or "error", exc.status)
            raise
        for name in ("X-Request-ID", "X-Correlation-ID"):
            if name in request.headers and name not in response.headers:
                response.headers[name] = request.headers[name]
        return response

    def _auth(self, request: web.Request, registering: bool = False) -> dict[str, Any] | None:
        """The caller's registration (``{}`` for token A where ``registering``); else None."""
        token = token_of(request)
        if token is None:
            return None
        if token in self.parties:
            return self.parties[token]
        if registering and secrets.compare_digest(token, self.token_a):
            return {}
        return None

    def _denied(self, request: web.Request) -> web.Response:
        token = token_of(request)
        if token is not None and secrets.compare_digest(token, self.token_a):
            why = "token A is for registering only (versions, credentials): use the token C the registration returned"
        else:
            why = "no valid 'Authorization: Token ...' header"
        return ocpi(None, 2000, f"Unauthorized: {why}", 401)

    async def unknown(self, request: web.Request) -> web.Response:
        if self._auth(request, registering=True) is None:
            return self._denied(request)
        tail = request.match_info["tail"]
        what = f"unknown version {tail.split('/')[0]!r}" if not tail.startswith(VERSION) else f"unknown module " \
            f"{tail.split('/')[1] if '/' in tail else tail!r}"  # fmt: skip
        return ocpi(None, 2000, what, 404)

    async def versions(self, request: web.Request) -> web.Response:
        if self._auth(request, registering=True) is None:
            return self._denied(request)
        self._served("ocpi versions", request, VERSION)
        return ocpi([{"version": VERSION, "url": f"{self.base}/ocpi/{VERSION}"}])

    async def details(self, request: web.Request) -> web.Response:
        if self._auth(request, registering=True) is None:
            return self._denied(request)
        endpoints = [{"identifier": m, "role": role, "url": f"{self.base}/ocpi/{VERSION}/{m}"}
                     for m, role in MODULES.items()]  # fmt: skip
        return ocpi({"version": VERSION, "endpoints": endpoints})

    # -- credentials -----------------------------------------------------------------------------
    def _ours(self, token: str) -> dict[str, Any]:
        return {"token": token, "url": f"{self.base}/ocpi/versions",
                "roles": [{"role": "CPO", "business_details": {"name": self.party.name, "website": self.party.website},
                           "party_id": self.party.party_id, "country_code": self.party.country_code}]}  # fmt: skip

    async def credentials(self, request: web.Request) -> web.Response:
        caller = self._auth(request, registering=request.method in ("POST", "GET"))
        if caller is None:
            return self._denied(request)
        token = token_of(request) or ""
        if request.method == "GET":
            return ocpi(self._ours(token))
        if request.method == "DELETE":
            if not caller:
                return ocpi(None, 2000, "not registered", 405)
            del self.parties[token]
            self._save_parties()
            return ocpi(None)
        if request.method not in ("POST", "PUT"):
            return ocpi(None, 2000, f"{request.method} not allowed", 405)
        if request.method == "POST" and caller:
            return ocpi(None, 2000, "already registered: PUT to update, DELETE to unregister", 405)
        if request.method == "PUT" and not caller:
            return ocpi(None, 2000, "not registered: POST with token A first", 405)
        try:
            theirs = Credentials.model_validate(await request.json())
        except (ValidationError, ValueError) as exc:
            return ocpi(None, 2001, f"invalid credentials: {_why(exc)}", 400)
        try:
            endpoints = await self._discover(theirs)
        except Exception as exc:
            return ocpi(None, 3001, f"unable to use your API at {theirs.url}: {exc}", 400)
        role = theirs.roles[0]
        token_c = secrets.token_urlsafe(24)
        if caller:
            del self.parties[token]
        self.parties[token_c] = {"country_code": role.country_code.upper(), "party_id": role.party_id.upper(),
                                 "name": role.business_details.name, "role": role.role, "token_b": theirs.token,
                                 "url": theirs.url, "endpoints": endpoints, "registered_at": now()}  # fmt: skip
        self._save_parties()
        log.info("ocpi: %s*%s registered", role.country_code, role.party_id)
        return ocpi(self._ours(token_c))

    async def _discover(self, theirs: Credentials) -> dict[str, str]:
        """The eMSP's 2.2.1 endpoints, read with its token B."""
        assert self.http is not None
        headers = {"Authorization": "Token " + base64.b64encode(theirs.token.encode()).decode()}
        async with self.http.get(theirs.url, headers=headers) as r:
            versions = (await r.json())["data"]
        url = next(v["url"] for v in versions if v["version"] == VERSION)
        async with self.http.get(url, headers=headers) as r:
            detail = (await r.json())["data"]
        return {f"{e['identifier']}:{e['role']}": e["url"] for e in detail.get("endpoints", [])}

    # -- the modules -----------------------------------------------------------------------------
    def _served(self, feed: str, request: web.Request, what: str) -> None:
        caller = self._auth(request, registering=True)
        to = _who(caller) if caller else "a party registering (token A)" if caller is not None else \
            f"public ({request.remote})"  # fmt: skip
        self.served[feed] = {"at": now(), "to": to, "result": what}

    async def _page(self, request: web.Request, feed: str, objects: list[dict[str, Any]]) -> web.Response:
        if self._auth(request) is None:
            return self._denied(request)
        q = request.query
        try:
            offset = int(q.get("offset", 0))
            limit = min(int(q.get("limit", LIMIT)), MAX_LIMIT)
            since = parse(q["date_from"]) if q.get("date_from") else None
            until = parse(q["date_to"]) if q.get("date_to") else None
        except ValueError as exc:
            return ocpi(None, 2001, f"invalid parameter: {exc}", 400)
        if offset < 0 or limit < 1:
            return ocpi(None, 2001, "offset must be >= 0 and limit >= 1", 400)
        chosen = [o for o in objects if (since is None or parse(o["last_updated"]) >= since)
                  and (until is None or parse(o["last_updated"]) < until)]  # fmt: skip
        page = chosen[offset : offset + limit]
        headers = {"X-Total-Count": str(len(chosen)), "X-Limit": str(limit)}
        if offset + limit < len(chosen):
            params = {k: v for k, v in q.items() if k not in ("offset", "limit")}
            params.update(offset=str(offset + limit), limit=str(limit))
            headers["Link"] = f'<{self.base}{request.path}?{urlencode(params)}>; rel="next"'
        self._served(feed, request, f"{len(page)} of {len(chosen)} objects")
        return ocpi(page, headers=headers)

    def location_objects(self) -> list[dict[str, Any]]:
        return loc.locations(self.party, self.fleet.inventory(), self.fleet.twins, self.fleet.static_at)

    async def locations(self, request: web.Request) -> web.Response:
        return await self._page(request, "ocpi locations", self.location_objects())

    async def location(self, request: web.Request) -> web.Response:
        if self._auth(request) is None:
            return self._denied(request)
        m = request.match_info
        found: Any = next((x for x in self.location_objects() if x["id"] == m["location_id"]), None)
        if found is not None and "evse_uid" in m:
            found = next((e for e in found["evses"] if e["uid"] == m["evse_uid"]), None)
        if found is not None and "connector_id" in m:
            found = next((c for c in found["connectors"] if c["id"] == m["connector_id"]), None)
        if found is None:
            return ocpi(None, 2003, f"unknown location object {request.path.split('/locations/', 1)[1]!r}", 404)
        self._served("ocpi locations", request, request.path.split("/locations/", 1)[1])
        return ocpi(found)

    async def tariffs(self, request: web.Request) -> web.Response:
        return await self._page(request, "ocpi tariffs", tar.tariffs(self.party, self.fleet.twins))

    def _started_remotely(self, remote_start_id: int, transaction_id: str) -> None:
        """A station's TransactionEvent named a START_SESSION's remoteStartId: that eMSP's session."""
        token = self.remote_starts.get(remote_start_id)
        if token is not None and transaction_id not in self.started:
            self.started[transaction_id] = {**token, "auth_method": "COMMAND"}
            self.record({"started": transaction_id, "token": self.started[transaction_id]})

    async def session_objects(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every Session and CDR, each with the token of the eMSP it belongs to, if any."""
        rows = sess.rows(await self.fleet.archive_sessions(), self.fleet.twins)
        roaming = sess.roaming(rows, self.started, self.tokens)
        for tx, token in roaming.items():  # by the id token, known while the twin has it: kept for the archive's
            if tx not in self.started:
                self.started[tx] = token
                self.record({"started": tx, "token": token})
        inventory = self.fleet.inventory()
        return sess.sessions(self.party, rows, inventory, roaming), sess.cdrs(self.party, rows, inventory, roaming)

    async def sessions(self, request: web.Request) -> web.Response:
        caller = self._auth(request)
        if caller is None:
            return self._denied(request)
        objects = [s for s in (await self.session_objects())[0] if sess.owner(s) == _who(caller)]
        return await self._page(request, "ocpi sessions", objects)

    async def cdrs(self, request: web.Request) -> web.Response:
        caller = self._auth(request)
        if caller is None:
            return self._denied(request)
        objects = [c for c in (await self.session_objects())[1] if sess.owner(c) == _who(caller)]
        return await self._page(request, "ocpi cdrs", objects)

    async def deliver(self, stop: asyncio.Event) -> None:
        """Push each Session and CDR to the eMSP it belongs to, until ``stop``."""
        await self.deliveries.run(stop, lambda: list(self.parties.values()), self.session_objects)

    # -- commands --------------------------------------------------------------------------------
    async def command(self, request: web.Request) -> web.Response:
        caller = self._auth(request)
        if caller is None:
            return self._denied(request)
        name = request.match_info["command"]
        if name not in cmds.COMMANDS:
            return ocpi({"result": "NOT_SUPPORTED", "timeout": 0}, 2000, f"unknown command {name!r}", 404)
        try:
            body = cmds.parse(name, await request.json())
        except (cmds.BodyError, ValueError) as exc:
            self.record({"command": name, "party": _who(caller), "refused": f"status 2001: {exc}"})
            return ocpi(None, 2001, f"invalid {name}: {exc}", 400)
        party = (caller["country_code"], caller["party_id"])
        self._reservation_states()
        plan = cmds.plan(name, body, party, loc.index(self.fleet.inventory()), self.fleet.twins, self.reservations,
                         datetime.now(UTC))  # fmt: skip
        timeout = int(self.fleet.command_timeout_s)
        entry: dict[str, Any] = {"command": name, "party": _who(caller), "body": body.model_dump(mode="json")}
        if plan.station_id is None:
            entry.update(response=plan.response, result=plan.result, message=plan.message, sent=False)
            self.record(entry)
            if plan.result is not None:  # answered now, and said so at the response URL too
                self._spawn(self._post_result(caller, str(body.response_url), plan.result, plan.message))
            self._served("ocpi commands", request, f"{name}: {plan.response}" + (f", {plan.result}" if plan.result
                                                                                  else ""))  # fmt: skip
            return ocpi(
                {"result": plan.response, "timeout": timeout, "message": [{"language": "en", "text": plan.message}]}
            )
        assert plan.action is not None and plan.payload is not None
        tag: dict[str, Any] = {"ocpi": {"party": _who(caller), "command": name}}
        if isinstance(body, cmds.ReserveNow):
            number = int(plan.payload["id"])
            tag["ocpi"]["reservation_id"] = body.reservation_id
            reservation = {
                "party": _who(caller),
                "reservation_id": body.reservation_id,
                "ocpp_id": number,
                "station_id": plan.station_id,
                "evse_id": plan.payload.get("evseId"),
                "location_id": body.location_id,
                "expiry_date": plan.payload["expiryDateTime"],
                "body": body.model_dump(mode="json", exclude={"response_url"}),
                "status": "requested",
            }
            self.reservations[number] = reservation
            entry.update(ocpp_id=number, reservation=reservation)
        if isinstance(body, cmds.StartSession):
            entry["remote_start_id"] = plan.payload["remoteStartId"]
            self.remote_starts[int(plan.payload["remoteStartId"])] = body.token.model_dump(mode="json")
        if isinstance(body, cmds.StartSession | cmds.ReserveNow):
            self.tokens[body.token.uid] = body.token.model_dump(mode="json")
        entry.update(response="ACCEPTED", sent=True, station_id=plan.station_id, action=plan.action)

        async def done(outcome: str, answer: dict[str, Any] | None, reason: str | None) -> None:
            result, message = cmds.result(str(plan.action), outcome, answer, reason)
            self.record({"command": name, "party": _who(caller), "command_id": command_id, "outcome": outcome,
                         "result": result, "message": message})  # fmt: skip
            await self._post_result(caller, str(body.response_url), result, message)

        command_id = await self.fleet.send(plan.station_id, plan.action, plan.payload, f"ocpi:{_who(caller)}", done,
                                           tag)  # fmt: skip
        entry["command_id"] = command_id
        self.record(entry)
        self._served("ocpi commands", request, f"{name}: ACCEPTED, sent to {plan.station_id}")
        return ocpi({"result": "ACCEPTED", "timeout": timeout})

    def _reservation_states(self) -> None:
        """The roaming reservations' status from the twins (used, expired, cancelled, ...)."""
        for number, r in self.reservations.items():
            twin = self.fleet.twins.get(str(r["station_id"])) or {}
            known = (twin.get("reservations") or {}).get(str(number))
            if known:
                r["status"] = known.get("status")

    def _spawn(self, job: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_result(self, caller: Mapping[str, Any], url: str, result: str, message: str) -> None:
        """POST a CommandResult to the eMSP, retried a few times; the outcome is journaled."""
        assert self.http is not None
        body = {"result": result, "message": [{"language": "en", "text": message[:512]}]}
        headers = {"Authorization": "Token " + base64.b64encode(str(caller.get("token_b", "")).encode()).decode()}
        for attempt in range(5):
            try:
                async with self.http.post(url, json=body, headers=headers) as r:
                    if r.status < 500:
                        self.results[_who(caller)] = {"at": now(), "result": result, "message": message,
                                                      "delivered": f"HTTP {r.status}"}  # fmt: skip
                        return
            except Exception as exc:
                log.warning("CommandResult to %s failed (%r); attempt %d", url, exc, attempt + 1)
            await asyncio.sleep(2**attempt)
        self.results[_who(caller)] = {"at": now(), "result": result, "message": message, "delivered": "lost"}
        self.record({"command_result_lost": url, "result": result})

    # -- DATEX II --------------------------------------------------------------------------------
    async def datex_table(self, request: web.Request) -> web.Response:
        return self._datex(request, "datex2 table", datex2.table)

    async def datex_status(self, request: web.Request) -> web.Response:
        return self._datex(request, "datex2 status", datex2.status)

    def _datex(self, request: web.Request, feed: str, build: Callable[..., datex2.Node]) -> web.Response:
        at = now()
        node = build(self.party, self.fleet.inventory(), self.fleet.twins, self.fleet.static_at, at)
        wants_json = request.query.get("format") == "json" or (
            "application/json" in request.headers.get("Accept", "") and "xml" not in request.headers.get("Accept", "")
        )
        self._served(feed, request, "JSON" if wants_json else "XML")
        if wants_json:
            return web.Response(body=orjson.dumps(datex2.to_json(node, at)), content_type="application/json")
        return web.Response(text=datex2.to_xml(node), content_type="application/xml")

    async def status(self, _: web.Request) -> web.Response:
        """Where each feed is and when it was last served or pushed (the dashboard's)."""
        self._reservation_states()
        feeds = {name: f"{self.base}{path}" for name, path in (
            ("ocpi versions", "/ocpi/versions"), ("ocpi locations", f"/ocpi/{VERSION}/locations"),
            ("ocpi tariffs", f"/ocpi/{VERSION}/tariffs"), ("ocpi sessions", f"/ocpi/{VERSION}/sessions"),
            ("ocpi cdrs", f"/ocpi/{VERSION}/cdrs"), ("datex2 table", "/datex2/v3/afir/table"),
            ("datex2 status", "/datex2/v3/afir/status"))}  # fmt: skip
        feeds["ocpi commands"] = f"{self.base}/ocpi/{VERSION}/commands/{{command}}"
        pushes = self.deliveries.status()
        parties = [
            {
                "party": _who(p),
                "name": p.get("name"),
                "role": p.get("role"),
                "versions_url": p.get("url"),
                "registered_at": p.get("registered_at"),
                "push": pushes.get(_who(p)),
                "last_command_result": self.results.get(_who(p)),
                "receives": sorted(k.split(":")[0] for k in p.get("endpoints") or {} if k.endswith(":RECEIVER")),
            }
            for p in self.parties.values()
        ]
        body = {"base_url": self.base, "versions_url": f"{self.base}/ocpi/versions",
                "party": f"{self.party.country_code}*{self.party.party_id}",
                "twins": len(self.fleet.twins), "caught_up": self.fleet.caught_up.is_set(),
                "feeds": [{"feed": k, "url": v, **{f"last_{x}": (self.served.get(k) or {}).get(y) for x, y in
                                                     (("served", "at"), ("to", "to"), ("result", "result"))}}
                          for k, v in feeds.items()],
                "parties": parties,
                "reservations": [{k: v for k, v in r.items() if k != "body"} for r in self.reservations.values()],
                "push": self.push_status() if self.push_status else None}  # fmt: skip
        return web.json_response(body)

    push_status: Callable[[], dict[str, Any]] | None = None


def _who(party: Mapping[str, Any]) -> str:
    return f"{party.get('country_code')}*{party.get('party_id')}"


def _why(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return str(exc)


def with_contextless(fn: Callable[[bytes], None], line: bytes) -> None:
    """A journal line that cannot be read is skipped: the journal is a record, not the state."""
    try:
        fn(line)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("unreadable journal line skipped")
