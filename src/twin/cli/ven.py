"""``twin ven``: the OpenADR VEN, grid signals into the log."""

from __future__ import annotations

from typing import Annotated

import typer

from twin.cli.app import Bootstrap, KafkaConfig, Verbose, app, err, fail, setup_logging
from twin.cli.control import Archive, Sites, load_sites
from twin.cli.door import ApiToken
from twin.settings import Settings


@app.command()
def ven(
    vtn: Annotated[str, typer.Option("--vtn", help="The VTN's base URL (OpenADR 3: where /programs and /events "
                                     "are; 2.0b: its OpenADR endpoint).")],
    client_id: Annotated[str, typer.Option("--client-id", help="OAuth2 client id (2.0b: the VEN name).")],
    client_secret: Annotated[str, typer.Option("--client-secret", envvar="TWIN_OPENADR_CLIENT_SECRET",
                                               help="OAuth2 client secret; better from the environment (env "
                                               "TWIN_OPENADR_CLIENT_SECRET), where `ps` does not show it.")] = "",
    protocol: Annotated[str, typer.Option(help="3 (OpenADR 3.0.1 and 3.1) or 2.0b (through openleadr).")] = "3",
    poll_s: Annotated[float, typer.Option("--poll-s", min=0.1, help="Seconds between polls of the VTN.")] = 30.0,
    callback_port: Annotated[int | None, typer.Option(help="Also subscribe to the VTN's notifications, called "
                                                      "back on 127.0.0.1:PORT/notification.")] = None,
    api: Annotated[str | None, typer.Option(help="The worker's API, for the measured import and export reported "
                                            "back. (env TWIN_API)")] = None,
    api_token: ApiToken = None,
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    sites: Sites = None,
    archive: Archive = None,
    verbose: Verbose = False,
) -> None:
    """Listen to the grid operator over OpenADR and write what it says to grid.signals.

    OpenADR 3: an OAuth2 client-credentials token, then programs and events every --poll-s
    (and at once when the VTN calls back, with --callback-port). Each event version becomes
    a record per targeted site (by EAN) and payload (IMPORT_CAPACITY_LIMIT and
    EXPORT_CAPACITY_LIMIT in kW, PRICE, EXPORT_PRICE, GHG), accepted or rejected with the
    reason; events of a grid-aware-charging (GAC) program must keep its rules. The controller
    obeys the accepted ones. What each targeted site draws is reported back.

    When the VTN cannot be heard (refused, 401/403, 5xx, not JSON, timeouts) it says so in
    one line, retries with backoff, and records it; the last accepted schedule holds until it
    ends, then the program's safe-mode limit (GAC), else the site's static limit."""
    import asyncio
    import signal

    from twin.cli.gateway import resolve_bootstrap

    setup_logging(verbose)
    if protocol not in ("3", "2.0b"):
        fail(f"--protocol is 3 or 2.0b (got {protocol!r})", code=2)
    settings = Settings.load(bootstrap=bootstrap, sites=sites, archive=archive, api=api)
    found, _ = load_sites(settings)
    if not found:
        err.print("ven: no sites (give --sites FILE, or an archive whose inventory names them): every event "
                  "will be recorded as for no site")  # fmt: skip
    target, embedded = resolve_bootstrap(settings, "ven")
    err.print(f"ven: OpenADR {protocol} VTN {vtn}, {len(found)} sites, broker {target}")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if protocol == "3":
            from twin.grid.ven import run

            await run(vtn, client_id, client_secret, found, target, settings.topics, stop, poll_s,
                      settings.api_url, callback_port)  # fmt: skip
        else:
            from twin.grid.ven2b import run as run2b

            await run2b(vtn, client_id, found, target, settings.topics, stop)

    try:
        asyncio.run(main())
    finally:
        if embedded is not None:
            embedded.stop()
