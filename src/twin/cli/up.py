"""``twin up`` and ``twin dashboard``: the whole pipeline in one command, and the Streamlit app."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from twin import captures
from twin.broker import BrokerError, port_is_free, wait_for_broker
from twin.cli.app import Bootstrap, Json, KafkaConfig, app, err, fail, print_json
from twin.cli.broker import Engine
from twin.cli.door import ApiTokens, Insecure, http_door
from twin.cli.gateway import kafka_protocol
from twin.settings import Settings
from twin.stack import Stack, StackError, http_probe, tcp_probe
from twin.tokens import STORE_ENV, TOKEN_ENV, TokenStore


def streamlit_argv(port: int, host: str) -> list[str]:
    from dashboards import APP  # the Streamlit entry point, shipped in the ``dashboards`` package

    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port), "--server.address", host, "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--global.developmentMode", "false",
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip


@app.command()
def dashboard(
    port: Annotated[int | None, typer.Option(help="Port of the app. (env TWIN_DASHBOARD_PORT, default 8501)")] = None,
    api: Annotated[
        str | None, typer.Option(help="The worker's API. (env TWIN_API, default http://127.0.0.1:6066)")
    ] = None,
    archive: Annotated[
        str | None,
        typer.Option(help="Archive directory or .jsonl capture. (env TWIN_ARCHIVE; default twin-data/archive, "
                     "else the committed sample dataset)"),
    ] = None,  # fmt: skip
    api_tokens: ApiTokens = None,
    insecure: Insecure = False,
) -> None:
    """Start the Streamlit app on http://127.0.0.1:PORT: the live twins from the worker's API
    and analytics over the archive. Without a worker it shows the archive alone and says so.
    With a token store it asks for a token before it shows anything."""
    from dashboards import archive_path

    settings = Settings.load(dashboard_port=port, api=api)
    door = http_door(settings.host, api_tokens, None, None, insecure, "--port")
    if door.guard.store is not None:
        os.environ[STORE_ENV] = str(door.guard.store.path)
    if not port_is_free(settings.host, settings.dashboard_port):
        fail(f"port {settings.dashboard_port} on {settings.host} is already in use (--port)")
    shown = archive_path(archive or os.environ.get("TWIN_ARCHIVE"), settings.archive)
    os.environ.update(TWIN_API=settings.api_url, TWIN_ARCHIVE=shown)
    err.print(f"dashboard on [bold]http://{settings.host}:{settings.dashboard_port}[/] "
              f"(API {settings.api_url}, archive {captures.shown(shown)}; {door.said})")  # fmt: skip
    argv = streamlit_argv(settings.dashboard_port, settings.host)
    os.execv(argv[0], argv)  # the same process id: whoever started us can stop us


@app.command()
def up(
    simulate: Annotated[
        int, typer.Option("--simulate", "-n", min=0, help="Also drive a live simulated fleet of N stations.")
    ] = 0,
    speed: Annotated[str, typer.Option(help="The simulated fleet's speed: simulated seconds per second.")] = "60",
    faults: Annotated[float, typer.Option(min=0, help="The simulated fleet's connector faults per station-day "
                                                      "(`twin simulate --faults`).")] = 0.0,  # fmt: skip
    outages: Annotated[float, typer.Option(min=0, help="The simulated fleet's connection outages per "
                                                       "station-day (`twin simulate --outages`).")] = 0.0,  # fmt: skip
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    broker_port: Annotated[int | None, typer.Option(help="The embedded broker's port. (default 9092)")] = None,
    broker_engine: Annotated[
        Engine, typer.Option("--broker", help="The broker to start: tansu (embedded, in memory) or kafka "
                             "(Apache Kafka, durable in DATA_DIR/kafka; `make kafka` installs it).")
    ] = Engine.tansu,  # fmt: skip
    port: Annotated[int | None, typer.Option(help="The gateway's websocket port. (default 9000)")] = None,
    web_port: Annotated[int | None, typer.Option(help="The worker's API port. (default 6066)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Stream workers sharing the partitions; the first on "
                                         "--web-port, the others on free ports, each answering for every "
                                         "station.")] = 1,  # fmt: skip
    dashboard_port: Annotated[int | None, typer.Option(help="The dashboard's port. (default 8501)")] = None,
    archive: Annotated[str | None, typer.Option(help="Where the worker archives the log.")] = None,
    data_dir: Annotated[str, typer.Option(help="Logs, the worker's state and the spool go here.")] = "twin-data",
    no_dashboard: Annotated[bool, typer.Option("--no-dashboard", help="Leave the dashboard out.")] = False,
    no_control: Annotated[bool, typer.Option("--no-control", help="Leave the smart-charging controller out.")] = False,
    no_tariffs: Annotated[bool, typer.Option("--no-tariffs", help="Leave out the sample tariffs set on the "
                                             "simulated fleet's 2.1 stations once online (and their clocks' time "
                                             "zones, from the inventory's addresses).")] = False,  # fmt: skip
    central_cost: Annotated[bool, typer.Option("--central-cost/--no-central-cost", help="The controller is also "
                                               "the CSMS's cost (`twin controller --central-cost`): CostUpdated with "
                                               "the running and the final cost of each transaction whose station "
                                               "reports no cost of its own; stations that compute theirs are sent "
                                               "nothing.")] = True,  # fmt: skip
    central_cost_stations: Annotated[str | None, typer.Option("--central-cost-stations", help="Simulated 2.1 "
                                                              "stations (comma-separated ids) that compute no cost, "
                                                              "leaving it to the CSMS.")] = None,  # fmt: skip
    sites: Annotated[str | None, typer.Option("--sites", help="A sites file (JSON list of site_id, ean, "
                                              "import_limit_kw, export_limit_kw, stations); default: the sites of "
                                              "the station inventory beside the archive. (env TWIN_SITES)")] = None,
    openadr_vtn: Annotated[str | None, typer.Option("--openadr-vtn", help="Also run the OpenADR VEN (`twin ven`) "
                                                    "against this VTN.")] = None,
    openadr_client_id: Annotated[str, typer.Option("--openadr-client-id", help="The VEN's OAuth2 client id.")] = "twin",
    openadr_client_secret: Annotated[str, typer.Option("--openadr-client-secret", envvar="TWIN_OPENADR_CLIENT_SECRET",
                                                       help="Its secret (better from the environment: a command "
                                                            "line is what `ps` shows).")] = "",  # fmt: skip
    ocpi_port: Annotated[int | None, typer.Option("--ocpi-port", help="`twin ocpi`'s port: OCPI 2.2.1 for eMSPs, "
                                                  "DATEX II AFIR feeds (default 8180, else a free one).")] = None,
    ocpi_token_a: Annotated[str | None, typer.Option("--ocpi-token-a", help="The credentials token A eMSPs register "
                                                     "with at `twin ocpi`; printed. (env TWIN_OCPI_TOKEN_A; default: "
                                                     "generated)")] = None,  # fmt: skip
    json_out: Json = False,
) -> None:
    """The main job in one command: the embedded broker (unless --bootstrap), the gateway, the
    stream worker with its API and the archive, the smart-charging controller (unless
    --no-control; with central cost unless --no-central-cost) and the dashboard; --simulate N
    adds a live fleet driving the gateway, its stations behind sites whose limits the
    controller keeps, with sample tariffs and each 2.1 station's time zone (its address's, in
    the inventory; the tariffs' times of day are local). Prints every URL it serves; Ctrl-C
    stops everything.

    Each process logs to DATA_DIR/logs/NAME.log."""
    settings = Settings.load(
        bootstrap=bootstrap, broker_port=broker_port, gateway_port=port, web_port=web_port,
        dashboard_port=dashboard_port, archive=archive, sites=sites,
    )  # fmt: skip
    host = settings.host
    if ocpi_port is None:  # two stacks on one machine (tests) must not fight over the default
        from twin.broker import free_port

        ocpi_port = 8180 if port_is_free(host, 8180) else free_port(host)
    wanted = {"gateway (--port)": settings.gateway_port, "API (--web-port)": settings.web_port,
              "OCPI (--ocpi-port)": ocpi_port}
    if not no_dashboard:
        wanted["dashboard (--dashboard-port)"] = settings.dashboard_port
    if not settings.bootstrap:
        wanted["broker (--broker-port)"] = settings.broker_port
    for what, number in wanted.items():
        if not port_is_free(host, number):
            fail(f"port {number} on {host} is taken: choose another for the {what}, or stop what holds it")
    if len(set(wanted.values())) < len(wanted):
        fail(f"the ports must differ: {wanted}")
    if not settings.bootstrap and kafka_protocol(settings) != "PLAINTEXT":
        fail("Kafka security is configured but no --bootstrap: the embedded broker speaks PLAINTEXT only")
    if settings.bootstrap:
        try:
            wait_for_broker(settings.bootstrap, timeout=5)
        except BrokerError as exc:
            fail(f"{exc}. Is the cluster up? Leave out --bootstrap to start the embedded broker.")

    data = Path(data_dir)
    twin = [sys.executable, "-m", "twin"]
    store, admin_token, helper_token = _tokens(data)
    os.environ[TOKEN_ENV] = helper_token  # this process's own readers of the API (the sample tariffs)
    # every door reads the store; the children that read the API (the VEN) send the helper's token
    stack = Stack(data / "logs", env={"TWIN_SPOOL": str(data / "spool"), STORE_ENV: str(store.path),
                                      TOKEN_ENV: helper_token})  # fmt: skip
    stop = stack.interrupted  # a signal while a process starts stops waiting for it
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    target = settings.bootstrap or f"{host}:{settings.broker_port}"
    gateway_url = f"ws://{host}:{settings.gateway_port}/ocpp"
    from twin.broker import free_port

    web_ports = [settings.web_port, *(free_port(host) for _ in range(workers - 1))]
    apis = [f"http://{host}:{p}/v1/stations" for p in web_ports]
    urls = {
        "stations": f"{gateway_url}/<station id>",
        "api": f"http://{host}:{settings.web_port}/v1/stations",
        "dashboard": None if no_dashboard else f"http://{host}:{settings.dashboard_port}",
        "broker": target,
        "archive": captures.shown(settings.archive),
        "logs": str(data / "logs"),
        "ocpi": f"http://{host}:{ocpi_port}/ocpi/versions",
        "ocpi_token_a": ocpi_token_a or os.environ.get("TWIN_OCPI_TOKEN_A") or secrets.token_urlsafe(24),
        "datex2": f"http://{host}:{ocpi_port}/datex2/v3/afir/table",
        "api_token": admin_token,
        "api_tokens": str(store.path),
    }
    try:
        with err.status("starting twin") as status:
            if not settings.bootstrap:
                status.update(f"starting the broker ({broker_engine.value})")
                kafka = broker_engine is Engine.kafka  # a JVM: seconds to start, longer on a busy machine
                engine = ["--engine", "kafka", "--data-dir", str(data / "kafka")] if kafka else []
                stack.start("broker", [*twin, "broker", "--port", str(settings.broker_port), *engine],
                            tcp_probe(host, settings.broker_port), timeout=120 if kafka else 60,
                            last=True)  # fmt: skip
            status.update("starting the gateway")
            stack.start("gateway", [*twin, "gateway", "--bootstrap", target, "--port", str(settings.gateway_port)],
                        tcp_probe(host, settings.gateway_port))  # fmt: skip
            if simulate and "://" not in settings.archive:  # the fleet's sites, before the worker reads them
                from twin.cli.simulate import _inventory

                _inventory(settings.archive, simulate, 1, "CS")
            sites_flag = ["--sites", settings.sites] if settings.sites else []
            for n, web in enumerate(web_ports):  # the consumer group shares the partitions among them
                name = "worker" if n == 0 else f"worker-{n + 1}"
                status.update(f"starting the stream {name}")
                stack.start(name, [*twin, "worker", "--bootstrap", target, "--web-port", str(web), "--archive",
                                   settings.archive, "--data-dir", str(data / name), *sites_flag],
                            _authorised_probe(f"http://{host}:{web}/v1/fleet/summary", helper_token),
                            timeout=120)  # fmt: skip
            if not no_control:
                status.update("starting the controller")
                scale = ["--time-scale", speed] if simulate and speed != "max" else []
                cost = ["--central-cost"] if central_cost else []
                stack.start("controller", [*twin, "controller", "--bootstrap", target, "--archive", settings.archive,
                                           *sites_flag, *scale, *cost])  # fmt: skip
            if openadr_vtn:  # the secret in its environment, not on a command line `ps` shows
                stack.env["TWIN_OPENADR_CLIENT_SECRET"] = openadr_client_secret
                stack.start("ven", [*twin, "ven", "--vtn", openadr_vtn, "--client-id", openadr_client_id,
                                    "--bootstrap", target, "--archive", settings.archive,
                                    "--api", f"http://{host}:{settings.web_port}", *sites_flag])
                stack.env.pop("TWIN_OPENADR_CLIENT_SECRET")
            status.update("starting twin ocpi")  # token A in its environment, not on a command line `ps` shows
            stack.env["TWIN_OCPI_TOKEN_A"] = str(urls["ocpi_token_a"])
            stack.start("ocpi", [*twin, "ocpi", "--bootstrap", target, "--port", str(ocpi_port), "--archive",
                                 settings.archive, "--data-dir", str(data / "ocpi")],
                        http_probe(f"http://{host}:{ocpi_port}/status"))  # fmt: skip
            stack.env.pop("TWIN_OCPI_TOKEN_A")
            if not no_dashboard:
                status.update("starting the dashboard")
                stack.env.update(TWIN_API=f"http://{host}:{settings.web_port}", TWIN_ARCHIVE=settings.archive,
                                 TWIN_OCPI=f"http://{host}:{ocpi_port}")  # the Feeds page: twin ocpi's /status
                stack.start("dashboard", streamlit_argv(settings.dashboard_port, host),
                            http_probe(f"http://{host}:{settings.dashboard_port}/_stcore/health"))  # fmt: skip
            if simulate:
                stack.start("simulator", [*twin, "simulate", "--stations", str(simulate), "--days", "7",
                                          "--live", gateway_url, "--speed", speed, "--inventory", settings.archive,
                                          *(["--central-cost-stations", central_cost_stations]
                                            if central_cost_stations else []),
                                          *(["--faults", str(faults)] if faults else []),
                                          *(["--outages", str(outages)] if outages else [])],
                            may_finish=True)  # fmt: skip
                if not no_tariffs:
                    threading.Thread(target=install_sample_tariffs, daemon=True, name="tariffs",
                                     args=(f"http://{host}:{settings.web_port}", target, settings.archive,
                                           stop)).start()  # fmt: skip
        pids = {s.name: s.pid for s in stack.services}
        if json_out:
            print_json({**urls, "apis": apis, "simulated_stations": simulate, "pids": pids})
        else:
            _announce({**urls, "other workers' APIs": ", ".join(apis[1:]) or None}, simulate, speed)
        while not stop.is_set():
            broken = stack.failed()
            if broken is not None:
                raise StackError(f"the {broken.name} stopped (exit {broken.ended()}); its log:\n{broken.tail()}")
            stop.wait(0.5)
        err.print("stopping twin ...")
    except StackError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        stack.stop()
        store.revoke(HELPER)
        raise typer.Exit(1) from None
    stack.stop()
    store.revoke(HELPER)
    err.print("stopped: " + ", ".join(f"{s.name} (pid {s.pid}, {s.stopped_in or 0:.1f} s)" for s in stack.services))


def _announce(urls: dict[str, str | None], simulate: int, speed: str) -> None:
    lines = [
        ("stations connect to", urls["stations"]),
        ("twin API", urls["api"]),
        ("other workers' APIs", urls["other workers' APIs"]),
        ("dashboard", urls["dashboard"]),
        ("broker", urls["broker"]),
        ("archive", urls["archive"]),
        ("logs", urls["logs"]),
        ("OCPI 2.2.1", urls["ocpi"]),
        ("OCPI token A", urls["ocpi_token_a"]),
        ("DATEX II AFIR", urls["datex2"]),
        ("API admin token", f"{urls['api_token']} (shown this once)" if urls["api_token"] else
         f"in {urls['api_tokens']} already (`twin token add NAME --role admin` for another)"),
    ]
    print("twin is up:")
    for label, value in lines:
        if value:
            print(f"  {label:<20} {value}")
    if simulate:
        print(f"  a simulated fleet of {simulate} stations is driving the gateway at {speed}x")
    print("Ctrl-C stops everything.", flush=True)


HELPER = "twin-up"
"""The token of ``twin up``'s own readers of the API (the VEN, the sample tariffs): a
viewer's, made afresh at each start and revoked at the end."""


def _tokens(data: Path) -> tuple[TokenStore, str | None, str]:
    """The stack's token store (DATA_DIR/api-tokens.json, or TWIN_API_TOKENS), an admin token
    if it had none (like a fresh database's first password: printed once), and a new token for
    ``twin up``'s helpers."""
    from twin.tokens import TokenError, store_path

    path = store_path(None, str(data))
    assert path is not None
    store = TokenStore(path)
    try:
        admin = None
        if not any(e.role == "admin" for e in store.entries()):
            admin, _ = store.add("admin", "admin")
        store.revoke(HELPER)  # a helper's token from a stack that ended without revoking it
        helper, _ = store.add(HELPER, "viewer")
    except TokenError as exc:
        fail(str(exc))
    return store, admin, helper


def _authorised_probe(url: str, token: str) -> Callable[[], bool]:
    """Whether the API answers a request with ``token`` (a 401 is a door, not the API up)."""
    import urllib.error
    import urllib.request

    def probe() -> bool:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}),
                                        timeout=1) as response:  # fmt: skip
                return bool(response.status < 400)
        except urllib.error.HTTPError as exc:
            return exc.code < 400
        except (urllib.error.URLError, OSError):
            return False

    return probe


SAMPLE_TARIFFS = Path(__file__).parent.parent / "data" / "tariffs"
"""The sample tariffs (OCPP 2.1 TariffType): ``ac.json`` and ``dc.json`` price energy by time of
day; ``*-flat.json`` are for stations that support no price conditions."""


def install_sample_tariffs(api: str, bootstrap: str, inventory: str, stop: threading.Event,
                           within_s: float = 600.0) -> None:  # fmt: skip
    """Set the sample tariff (AC or DC by the inventory's ``kind``) on every OCPP 2.1 station
    as it comes online in the twin, through `twin tariff set`'s code; a station that answers
    ConditionNotSupported gets the flat one. First its clock's time zone, the inventory's
    ``address.time_zone`` (`twin tariff zone`'s SetVariables), so that the tariffs' times of
    day are the station's local time. Until each has taken one, ``stop`` or ``within_s``."""
    from twin.analytics.migration import inventory_of
    from twin.cli.tariff import send_and_wait, zone_call
    from twin.cli.twins import api_get
    from twin.tariffs import known_zone, load

    tariffs = {name: load(SAMPLE_TARIFFS / f"{name}.json") for name in ("ac", "dc", "ac-flat", "dc-flat")}
    listed = inventory_of(inventory)
    kinds = {s: str(row.get("kind", "AC")).lower() for s, row in listed.items()}
    wanted = {s for s, row in listed.items() if row.get("protocol") != "ocpp2.0.1"}
    zones = {s: known_zone((row.get("address") or {}).get("time_zone")) for s, row in listed.items()}
    settings, told = Settings.load(bootstrap=bootstrap), 0
    done: set[str] = set()  # answered (Accepted or not): never asked again
    accepted: set[str] = set()
    deadline = time.monotonic() + within_s
    while not stop.is_set() and time.monotonic() < deadline and not (wanted and wanted <= done):
        listing = api_get(api, "/v1/stations", absent=True) or {}
        online = [r["station_id"] for r in listing.get("stations", ()) if r.get("online") and
                  r.get("protocol") == "ocpp2.1" and r["station_id"] not in done]  # fmt: skip
        clocks = [(s, "SetVariables", zone_call(str(zones[s]))) for s in online if zones.get(s)]
        try:
            if clocks:
                send_and_wait(settings, clocks, "twin up", 30.0)
        except (Exception, typer.Exit):  # asked again next round, with the tariff
            pass
        for flat in (False, True):
            calls = [(s, "SetDefaultTariff", {"evseId": 0, "tariff": tariffs[kinds.get(s, "ac") + "-flat" * flat]})
                     for s in online]  # fmt: skip
            try:
                results = send_and_wait(settings, calls, "twin up", 30.0) if calls else []
            except (Exception, typer.Exit):  # the broker away for a moment: asked again next round
                results = []
            online = [o["station_id"] for o in results if o["status"] == "ConditionNotSupported" and not flat]
            done |= {o["station_id"] for o in results if o["outcome"] in ("answered", "error")} - set(online)
            accepted |= {o["station_id"] for o in results if o["status"] == "Accepted"}
        if len(accepted) > told:
            err.print(f"sample tariffs set on {len(accepted)} stations")
            told = len(accepted)
        stop.wait(5.0)
