"""``twin ocpi``: the fleet published, OCPI 2.2.1 (CPO) for eMSPs and roaming platforms and
DATEX II v3.7 AFIR feeds for national access points. Thin: the HTTP side is
``twin.publish.server``, the Kafka side ``twin.publish.live``, the push ``twin.publish.push``;
what they serve comes from the pure functions of ``twin.publish``."""

from __future__ import annotations

import os
import secrets
from typing import Annotated

import typer

from twin.cli.app import Bootstrap, KafkaConfig, Verbose, app, err, fail, setup_logging
from twin.cli.door import ApiTokens, Insecure, http_door
from twin.settings import Settings
from twin.tokens import middleware

TOKEN_A_ENV = "TWIN_OCPI_TOKEN_A"


@app.command("ocpi")
def ocpi_command(
    port: Annotated[int, typer.Option("--port", help="The HTTP port (127.0.0.1).")] = 8180,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="The URL eMSPs reach this service at (default http://127.0.0.1:PORT)."),
    ] = None,
    party_id: Annotated[str, typer.Option("--party-id", help="Our OCPI party id (3 characters).")] = "TWN",
    country_code: Annotated[
        str, typer.Option("--country-code", help="Our OCPI country code (ISO 3166 alpha-2).")
    ] = "NL",
    token_a: Annotated[
        str | None,
        typer.Option(
            "--ocpi-token-a",
            help=f"The credentials token A eMSPs register with. (env {TOKEN_A_ENV}; default: generated and printed)",
        ),
    ] = None,
    archive: Annotated[
        str | None,
        typer.Option(
            help="The archive (sessions, CDRs) and its station inventory "
            "(_stations.json: locations). (env TWIN_ARCHIVE)"
        ),
    ] = None,
    data_dir: Annotated[
        str, typer.Option("--data-dir", help="Registrations and the command journal.")
    ] = "twin-data/ocpi",
    push: Annotated[
        str | None,
        typer.Option(
            "--push", help="An OCPI locations receiver: every Location PUT on start, each EVSE status change PATCHed."
        ),
    ] = None,
    push_token: Annotated[str, typer.Option("--push-token", help="The receiver's token.")] = "",
    command_timeout: Annotated[
        float,
        typer.Option(
            "--command-timeout", help="Seconds a station has to answer an OCPI command before its result is TIMEOUT."
        ),
    ] = 60.0,
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    api_tokens: ApiTokens = None,
    insecure: Insecure = False,
    verbose: Verbose = False,
) -> None:
    """Serve the fleet to eMSPs (OCPI 2.2.1: versions, credentials, locations, tariffs,
    sessions, cdrs, commands) and to national access points (DATEX II v3.7 AFIR:
    /datex2/v3/afir/table and /datex2/v3/afir/status, XML or ?format=json).

    Locations are the inventory's pools with the live twins' statuses; commands
    (RESERVE_NOW, CANCEL_RESERVATION, START_SESSION, STOP_SESSION, UNLOCK_CONNECTOR) go to the
    stations through ocpp.commands and their answers back to the eMSP as CommandResults.
    Each Session and CDR is the eMSP's whose token it was: only that eMSP reads it, and it is
    pushed to that eMSP's sessions and cdrs receivers.

    /status (not OCPI's, not a feed) is behind the API's bearer tokens (--api-tokens)."""
    import asyncio
    import signal
    from pathlib import Path

    from aiohttp import web

    from twin.broker import port_is_free
    from twin.cli.gateway import resolve_bootstrap
    from twin.publish.live import Fleet
    from twin.publish.party import Party
    from twin.publish.push import Pusher
    from twin.publish.server import Ocpi

    setup_logging(verbose)
    if len(party_id) != 3 or len(country_code) != 2:
        fail("--party-id is 3 characters and --country-code 2", code=2)
    settings = Settings.load(bootstrap=bootstrap, archive=archive)
    if not port_is_free(settings.host, port):
        fail(f"port {port} on {settings.host} is already in use (--port)")
    door = http_door(settings.host, api_tokens, None, None, insecure, "--port")
    token = token_a or os.environ.get(TOKEN_A_ENV) or secrets.token_urlsafe(24)
    base = (base_url or f"http://{settings.host}:{port}").rstrip("/")
    target, embedded = resolve_bootstrap(settings, "ocpi")
    party = Party(country_code.upper(), party_id.upper())
    err.print(f"ocpi: {base}/ocpi/versions (token A {token}), DATEX II {base}/datex2/v3/afir/table; "
              f"broker {target}, archive {settings.archive}; /status {door.said}")  # fmt: skip

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        fleet = Fleet(settings, target, command_timeout)
        service = Ocpi(fleet, party, base, token, Path(data_dir))
        jobs = [asyncio.create_task(fleet.run(stop)), asyncio.create_task(service.deliver(stop))]
        if push:
            pusher = Pusher(push, push_token, party, service.location_objects)
            service.push_status = pusher.status

            async def pushing() -> None:
                await fleet.caught_up.wait()  # the first PUTs carry the twins' statuses, not UNKNOWN
                await pusher.run(stop)

            jobs.append(asyncio.create_task(pushing()))
        served = service.app()
        served.middlewares.append(middleware(door.guard, exempt=("/ocpi", "/datex2")))  # OCPI: its own tokens
        runner = web.AppRunner(served, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.host, port).start()
        try:
            await asyncio.wait([asyncio.create_task(stop.wait()), *jobs], return_when=asyncio.FIRST_COMPLETED)
            for job in jobs:
                if job.done() and job.exception() is not None:
                    raise job.exception()  # type: ignore[misc]
        finally:
            stop.set()
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        if embedded is not None:
            embedded.stop()
