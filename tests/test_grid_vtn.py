"""An OpenADR 3 VTN for the tests, written from the Alliance's OpenAPI files in
``../shared/openadr3/`` (3.0.1 and 3.1.1): every request the VEN makes and every answer the
VTN gives is validated against the spec by ``openapi-core``, so the VEN cannot pass by
talking to itself. It runs on 127.0.0.1 on a free port, in a thread with its own loop, and
can misbehave on demand (down, 5xx, 401, 403, not JSON, wrong schema, slow).

The tests here drive the VEN's client and its memory against it: the token, events of both
versions, reports back, and each bad-input class."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web

from twin.broker import free_port

SPECS = Path(__file__).resolve().parents[2] / "shared" / "openadr3"
if not SPECS.is_dir():  # CI lays shared/ beside the clone
    SPECS = Path(__file__).resolve().parents[1].parent / "shared" / "openadr3"
CLIENT_ID, CLIENT_SECRET = "ven-twin", "s3cret"


def spec(version: str) -> Any:
    """The OpenAPI document of ``version`` (3.0.1 or 3.1.1), its one published typo mended
    in memory (3.1.1's ``BlVenRequest.targets`` ends in a stray ``-``), served from here."""
    from openapi_core import OpenAPI

    text = (SPECS / version / "openadr3.yaml").read_text()
    text = text.replace("default: null          -", "default: null")
    document = yaml.safe_load(text)
    document["servers"] = [{"url": "http://127.0.0.1"}]  # openapi-core's aiohttp request has no port
    return OpenAPI.from_dict(document)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Vtn:
    """A VTN of one OpenADR 3 version, in a thread. ``mode`` misbehaves: ``ok``, ``500``,
    ``401``, ``403``, ``not-json``, ``wrong-schema``, ``slow``; ``stop()`` takes it away."""

    def __init__(self, version: str = "3.1.1", port: int | None = None) -> None:
        self.version = version
        self.openapi = spec(version)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.programs: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.reports: list[dict[str, Any]] = []
        self.subscriptions: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.unknown: list[str] = []  # requests for paths this version does not have
        self.requests: list[str] = []
        self.tokens: set[str] = set()
        self.mode = "ok"
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None

    # -- the world, as the business logic (BL) sets it ---------------------------------------

    def _meta(self, kind: str, body: dict[str, Any], object_id: str | None = None) -> dict[str, Any]:
        stamp = now_iso()
        time.sleep(0.002)  # each version its own modificationDateTime
        old = (self.events if kind == "EVENT" else self.programs).get(object_id or "")
        return {"id": object_id or f"{kind.lower()}-{next(self._ids)}", "createdDateTime": (old or {}).get(
            "createdDateTime", stamp), "modificationDateTime": stamp, "objectType": kind, **body}  # fmt: skip

    def program(self, body: dict[str, Any]) -> dict[str, Any]:
        program = self._meta("PROGRAM", body)
        self.programs[program["id"]] = program
        return program

    def event(self, body: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """Create (or with ``event_id``, replace) an event; subscribers are told."""
        event = self._meta("EVENT", body, event_id)
        self.events[event["id"]] = event
        self._notify("UPDATE" if event_id else "CREATE", event)
        return event

    def delete(self, event_id: str) -> None:
        event = self.events.pop(event_id)
        self._notify("DELETE", event)

    def _notify(self, operation: str, event: dict[str, Any]) -> None:
        async def call(url: str, bearer: str | None) -> None:
            import aiohttp

            note = {"objectType": "EVENT", "operation": operation, "object": event}
            auth = {"Authorization": f"Bearer {bearer}"} if bearer else {}  # as OpenADR 3 says: its bearerToken
            try:
                async with aiohttp.ClientSession() as s, s.post(url, json=note, headers=auth,
                                                                timeout=aiohttp.ClientTimeout(2)):  # fmt: skip
                    pass
            except Exception:
                pass

        for sub in self.subscriptions:
            for op in sub["objectOperations"]:
                if self._runner is not None:
                    asyncio.run_coroutine_threadsafe(call(op["callbackUrl"], op.get("bearerToken")), self._loop)

    # -- the server --------------------------------------------------------------------------

    def start(self) -> Vtn:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._runner = None

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._validated])
        app.router.add_get("/auth/server", self._auth_server)
        app.router.add_post("/auth/token", self._token)
        app.router.add_get("/programs", self._list_programs)
        app.router.add_get("/events", self._list_events)
        app.router.add_post("/reports", self._report)
        app.router.add_post("/subscriptions", self._subscribe)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    @web.middleware
    async def _validated(self, request: web.Request, handler: Any) -> web.StreamResponse:
        from openapi_core.contrib.aiohttp import AIOHTTPOpenAPIWebRequest, AIOHTTPOpenAPIWebResponse
        from openapi_core.templating.paths.exceptions import PathNotFound

        body = await request.read()
        self.requests.append(f"{request.method} {request.path}")
        wrapped = AIOHTTPOpenAPIWebRequest(request, body=body or None)
        try:
            self.openapi.validate_request(wrapped)
        except PathNotFound:  # not in this version (3.0.1 has no /auth/server): as a VTN of it would
            self.unknown.append(f"{request.method} {request.path}")
            return web.json_response({"title": "Not Found", "status": 404}, status=404)
        except Exception as exc:
            self.violations.append(f"request {request.method} {request.path_qs}: {exc!r} "
                                   f"{getattr(exc, '__cause__', '')}")  # fmt: skip
        misbehaving = await self._misbehave(request)
        if misbehaving is not None:
            return misbehaving
        response = await handler(request)
        if isinstance(response, web.Response):
            try:
                self.openapi.validate_response(wrapped, AIOHTTPOpenAPIWebResponse(response))
            except Exception as exc:
                self.violations.append(f"response to {request.method} {request.path}: {exc!r} "
                                       f"{getattr(exc, '__cause__', '')}")  # fmt: skip
        return response

    async def _misbehave(self, request: web.Request) -> web.Response | None:
        token_call = request.path.startswith("/auth/")
        if self.mode == "500":
            return web.json_response({"title": "Internal Server Error", "status": 500}, status=500)
        if self.mode == "not-json" and not token_call:
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if self.mode == "wrong-schema" and request.path == "/events":
            return web.json_response({"events": "not a list"})
        if self.mode == "401" and token_call and request.path == "/auth/token":
            return web.json_response({"error": "invalid_client"}, status=401)
        if self.mode == "403" and not token_call:
            return web.json_response({"title": "Forbidden", "status": 403}, status=403)
        if self.mode == "slow":
            await asyncio.sleep(5)
        if not token_call and request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            return web.json_response({"title": "Unauthorized", "status": 401}, status=401)
        return None

    async def _auth_server(self, request: web.Request) -> web.Response:
        return web.json_response({"tokenURL": f"{self.url}/auth/token"})

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return web.json_response({"error": "invalid_client"}, status=400)
        token = f"token-{next(self._ids)}"
        self.tokens.add(token)
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    def _page(self, request: web.Request, items: list[Any]) -> web.Response:
        skip, limit = int(request.query.get("skip", 0)), int(request.query.get("limit", 50))
        return web.Response(body=orjson.dumps(items[skip: skip + limit]), content_type="application/json")

    async def _list_programs(self, request: web.Request) -> web.Response:
        return self._page(request, list(self.programs.values()))

    async def _list_events(self, request: web.Request) -> web.Response:
        return self._page(request, list(self.events.values()))

    async def _report(self, request: web.Request) -> web.Response:
        body = await request.json()
        report = {"id": f"report-{next(self._ids)}", "createdDateTime": now_iso(), "modificationDateTime": now_iso(),
                  "objectType": "REPORT", "clientID": CLIENT_ID, **body}  # fmt: skip
        self.reports.append(report)
        return web.json_response(report, status=201)

    async def _subscribe(self, request: web.Request) -> web.Response:
        body = await request.json()
        sub = {"id": f"sub-{next(self._ids)}", "createdDateTime": now_iso(), "modificationDateTime": now_iso(),
               "objectType": "SUBSCRIPTION", "clientID": CLIENT_ID, **body}  # fmt: skip
        self.subscriptions.append(sub)
        return web.json_response(sub, status=201)


# -- events as the VTN serves them ----------------------------------------------------------

EAN_A, EAN_B = "871687000000000016", "871687000000000023"
GAC_PROGRAM = {"programName": "gac-congestion", "attributes": [
    {"type": "PROGRAM_TYPE", "values": ["DSO_CPO_INTERFACE-2.1.1"]}, {"type": "RETAILER_NAME", "values": ["DSO"]},
    {"type": "BINDING_EVENTS", "values": [True]}]}  # fmt: skip


def limit_event(program_id: str, kw: float, start: str, duration: str = "PT2H", targets: Any = None,
                version: str = "3.1.1", name: str = "congestion") -> dict[str, Any]:  # fmt: skip
    """A GAC import-limit event (3.1: EAN strings; 3.0.1: a POWER_SERVICE_LOCATION valuesMap)."""
    eans = targets if targets is not None else [EAN_A]
    return {
        "programID": program_id, "eventName": name,
        "targets": eans if version == "3.1.1" else [{"type": "POWER_SERVICE_LOCATION", "values": eans}],
        "payloadDescriptors": [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "IMPORT_CAPACITY_LIMIT",
                                "units": "KW"}],
        "intervalPeriod": {"start": start, "duration": duration},
        "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [kw]}]}],
    }  # fmt: skip


def price_event(program_id: str, prices: list[float], start: str, step: str = "PT15M",
                kind: str = "EXPORT_PRICE") -> dict[str, Any]:  # fmt: skip
    return {
        "programID": program_id, "eventName": "prices",
        "payloadDescriptors": [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": kind, "units": "KWH",
                                "currency": "EUR"}],
        "intervalPeriod": {"start": start, "duration": step},
        "intervals": [{"id": i, "payloads": [{"type": kind, "values": [p]}]} for i, p in enumerate(prices)],
    }  # fmt: skip


# -- the VEN's client and memory against it ---------------------------------------------------


@pytest.fixture(params=["3.1.1", "3.0.1"])
def vtn(request: pytest.FixtureRequest) -> Iterator[Vtn]:
    server = Vtn(request.param).start()
    yield server
    server.close()


def _sites() -> list[Any]:
    from twin.sites import Site

    return [Site("SITE-A", EAN_A, 30.0, 20.0, ("CS-1",)), Site("SITE-B", EAN_B, 45.0, 0.0, ("CS-2",))]


async def _poll(vtn: Vtn, ven: Any, secret: str = CLIENT_SECRET, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    from twin.grid.client import VtnClient, VtnError

    client = VtnClient(vtn.url, CLIENT_ID, secret, timeout_s=timeout_s)
    now = datetime.now(UTC)
    try:
        programs, events = await client.programs(), await client.events()
        return ven.heard(programs, events, now)  # type: ignore[no-any-return]
    except VtnError as exc:
        return ven.failed(exc, now)  # type: ignore[no-any-return]
    finally:
        await client.close()


async def test_the_ven_reads_events_of_both_versions_validated_by_the_spec(vtn: Vtn) -> None:
    from twin.grid.client import VtnClient
    from twin.grid.ven import Ven, report

    program = vtn.program(GAC_PROGRAM)
    first = vtn.event(limit_event(program["id"], 12, "2026-03-02T08:00:00Z", version=vtn.version))
    vtn.event(limit_event(program["id"], 5, "2026-03-02T08:00:00Z", targets=["871687000000000030"],
                          version=vtn.version))  # an EAN no site has
    ven = Ven(_sites())
    records = await _poll(vtn, ven)
    assert [(r["site_id"], r["status"]) for r in records] == [("SITE-A", "accepted"), (None, "rejected")]
    assert records[0]["intervals"] == [{"start": "2026-03-02T08:00:00.000Z", "duration_s": 7200.0, "value": 12}]
    assert "is no site's" in records[1]["reason"]
    assert await _poll(vtn, ven) == []  # nothing new: nothing written
    vtn.event({**limit_event(program["id"], 9, "2026-03-02T08:00:00Z", version=vtn.version)}, first["id"])
    [newer] = await _poll(vtn, ven)
    assert newer["intervals"][0]["value"] == 9 and newer["modification_number"] > records[0]["modification_number"]
    vtn.delete(first["id"])
    [gone] = await _poll(vtn, ven)
    assert gone["status"] == "cancelled" and gone["event_id"] == first["id"]
    client = VtnClient(vtn.url, CLIENT_ID, CLIENT_SECRET)
    try:
        await client.report(report("twin", first["id"], program["id"], [{"site_id": "SITE-A", "import_kw": 11.5,
                                                                          "export_kw": 0.0}], datetime.now(UTC)))
    finally:
        await client.close()
    assert vtn.reports and vtn.reports[0]["resources"][0]["intervals"][0]["payloads"][0]["values"] == [11.5]
    assert vtn.violations == [], vtn.violations


@pytest.mark.parametrize(("mode", "kind"), [("500", "server"), ("401", "unauthorized"), ("403", "forbidden"),
                                            ("not-json", "not-json"), ("wrong-schema", "schema"),
                                            ("slow", "timeout"), ("down", "unreachable")])  # fmt: skip
async def test_each_bad_answer_is_one_rejection_per_site_and_safe_mode(mode: str, kind: str) -> None:
    from twin import sites
    from twin.grid.ven import Ven

    vtn = Vtn("3.1.1").start()
    try:
        program = vtn.program(GAC_PROGRAM)
        vtn.event(limit_event(program["id"], 12, "2026-03-02T08:00:00Z", duration="PT1H"))
        vtn.event(limit_event(program["id"], 7, "0001-01-01T00:00:00Z", duration="P9999Y", name="safe-mode"))
        ven = Ven(_sites())
        assert len(await _poll(vtn, ven)) == 2
        if mode == "down":
            vtn.stop()
        else:
            vtn.mode = mode
        failed = await _poll(vtn, ven, timeout_s=1.0)
        rejected = [r for r in failed if r["status"] == "rejected"]
        assert {r["site_id"] for r in rejected} == {"SITE-A", "SITE-B"}
        assert all(r["reason"].startswith(f"VTN {kind}:") for r in rejected), [r["reason"] for r in rejected]
        [safe] = [r for r in failed if r["protocol"] == "safe-mode"]
        assert safe["site_id"] == "SITE-A" and safe["intervals"][0]["start"] == "2026-03-02T09:00:00.000Z"
        assert await _poll(vtn, ven, timeout_s=1.0) == []  # the same outage: recorded once
        site_a = _sites()[0]
        limit = sites.limit_at(site_a, ven.log, datetime(2026, 3, 2, 9, 30, tzinfo=UTC))
        assert (limit.source, limit.import_kw) == ("safe-mode", 7)
        if mode == "down":
            vtn.start()
        vtn.mode = "ok"
        back = await _poll(vtn, ven)
        assert [r["status"] for r in back] == ["cancelled"] and back[0]["protocol"] == "safe-mode"
        assert sites.limit_at(site_a, ven.log, datetime(2026, 3, 2, 9, 30, tzinfo=UTC)).source == "static"
    finally:
        vtn.close()


async def test_a_wrong_secret_is_a_token_failure() -> None:
    from twin.grid.ven import Ven

    vtn = Vtn("3.0.1").start()
    try:
        failed = await _poll(vtn, Ven(_sites()), secret="wrong")
        assert failed and all(r["reason"].startswith("VTN unauthorized: token refused") for r in failed), failed
    finally:
        vtn.close()


async def test_a_restarted_ven_remembers_what_it_wrote() -> None:
    """A VEN started again reads back grid.signals (here: every record its predecessor wrote):
    an unchanged event is not written again, one deleted meanwhile is cancelled; started
    during an outage it stays in safe mode (no second safe-mode record) and ends it when the
    VTN answers again; started before its predecessor entered safe mode, it enters it from
    the program's safe-mode limit it read back."""
    from twin import sites
    from twin.grid.ven import Ven

    vtn = Vtn("3.1.1").start()
    try:
        program = vtn.program(GAC_PROGRAM)
        gone = vtn.event(limit_event(program["id"], 12, "2026-03-02T08:00:00Z", duration="PT1H"))
        vtn.event(limit_event(program["id"], 7, "0001-01-01T00:00:00Z", duration="P9999Y", name="safe-mode"))
        first = Ven(_sites())
        topic = await _poll(vtn, first)  # grid.signals, as the first VEN left it
        assert len(topic) == 2

        fresh = Ven(_sites())  # restarted while the VTN answers
        other = {**topic[0], "program_id": "a-2.0b-program", "event_id": "another-vens"}  # not this VTN's
        fresh.restore([*topic, {**topic[0], "site_id": "SITE-X"}, {**topic[0], "protocol": "operator"}, other])
        assert await _poll(vtn, fresh) == []  # nothing new, and another VEN's event left be
        vtn.delete(gone["id"])
        [cancelled] = await _poll(vtn, fresh)
        assert (cancelled["event_id"], cancelled["status"]) == (gone["id"], "cancelled")
        topic.append(cancelled)

        before_safe = Ven(_sites())  # restarted during an outage its predecessor had not seen
        before_safe.restore(topic)
        vtn.stop()
        entered = await _poll(vtn, before_safe, timeout_s=1.0)
        [safe] = [r for r in entered if r["protocol"] == "safe-mode"]
        assert (safe["site_id"], safe["intervals"][0]["value"]) == ("SITE-A", 7)
        topic += entered

        again = Ven(_sites())  # restarted while in safe mode, the VTN still away
        again.restore(topic)
        assert again.safe == {"SITE-A": safe} and again.outage is not None
        assert await _poll(vtn, again, timeout_s=1.0) == []  # the same outage: nothing twice
        moment = datetime.now(UTC) + timedelta(hours=1)  # the schedule was deleted: safe mode from the outage on
        assert sites.limit_at(_sites()[0], topic, moment).source == "safe-mode"
        vtn.start()
        back = await _poll(vtn, again)
        assert [(r["protocol"], r["status"]) for r in back] == [("safe-mode", "cancelled")]
        topic += back
        assert sites.limit_at(_sites()[0], topic, moment).source == "static"
        forgetful = Ven(_sites())  # what a VEN without the read-back would have done: never end it
        vtn.stop()
        await _poll(vtn, forgetful, timeout_s=1.0)
        vtn.start()
        assert [r for r in await _poll(vtn, forgetful) if r["protocol"] == "safe-mode"] == []
    finally:
        vtn.close()
