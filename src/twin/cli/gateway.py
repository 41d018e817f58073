"""``twin gateway``: stations connect here; every frame is captured."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer
from kafka.errors import KafkaError

from twin import kafka_acls, kafka_security
from twin.broker import BrokerError, EmbeddedBroker, ensure_topics, wait_for_broker
from twin.cli.app import Bootstrap, KafkaConfig, Verbose, app, err, fail, setup_logging
from twin.gateway.server import Gateway
from twin.kafka_security import KafkaSecurityError
from twin.pki import PkiError
from twin.runtime import tune_gc
from twin.security import SecurityError, UpstreamTls, guard_from
from twin.settings import Settings


def resolve_bootstrap(settings: Settings, process: str | None = None) -> tuple[str, EmbeddedBroker | None]:
    """The cluster to use: ``--bootstrap``, else a local broker already running on the
    default port, else a new embedded one. Topics are created where missing. On a secured
    cluster, ``process`` (a name in twin.kafka_acls) has the ACLs it needs, or one line says
    which it lacks."""
    embedded = None
    if settings.bootstrap:
        bootstrap = settings.bootstrap
        try:
            wait_for_broker(bootstrap, timeout=5)
        except BrokerError as exc:
            fail(f"{exc}. Is the cluster up? Leave out --bootstrap to use the embedded broker.")
    else:
        if kafka_protocol(settings) != "PLAINTEXT":
            fail("Kafka security is configured but no --bootstrap: the embedded broker speaks PLAINTEXT only")
        bootstrap = f"{settings.host}:{settings.broker_port}"
        try:
            wait_for_broker(bootstrap, timeout=0.5)
        except BrokerError:
            try:
                embedded = EmbeddedBroker(settings.broker_port, settings.host).start()
            except BrokerError as exc:
                fail(str(exc))
            err.print(f"started the embedded broker on [bold]{bootstrap}[/]")
    try:
        ensure_topics(settings, bootstrap)
        lacking = kafka_acls.check(process, settings, bootstrap) if process else None
    except (BrokerError, KafkaSecurityError, KafkaError) as exc:
        fail(f"Kafka at {bootstrap}: {exc}")
    if lacking:
        fail(lacking)
    if settings.bootstrap and kafka_protocol(settings) != "PLAINTEXT":
        err.print(f"Kafka at {bootstrap}: {kafka_security.current(settings).describe()}", soft_wrap=True)
    return bootstrap, embedded


def kafka_protocol(settings: Settings) -> str:
    """The security protocol the settings ask for, or one line saying why they cannot work."""
    try:
        return kafka_security.current(settings).protocol
    except KafkaSecurityError as exc:
        fail(str(exc))


@app.command()
def gateway(
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    port: Annotated[int | None, typer.Option(help="Websocket port. (env TWIN_GATEWAY_PORT, default 9000)")] = None,
    mode: Annotated[str, typer.Option(help="csms: answer stations; proxy: relay to --upstream.")] = "csms",
    upstream: Annotated[
        str | None, typer.Option(help="Proxy mode: the CSMS base URL; stations are relayed to URL/<station id>.")
    ] = None,
    spool: Annotated[str | None, typer.Option(help="Directory of the spool used while the broker is away.")] = None,
    max_frame_bytes: Annotated[
        int | None, typer.Option(help="Larger frames are refused with FormatViolation. (default 65536)")
    ] = None,
    call_timeout: Annotated[
        float | None, typer.Option(help="Seconds a CSMS-initiated CALL waits for its answer. (default 60)")
    ] = None,
    no_capture: Annotated[bool, typer.Option("--no-capture", help="Record nothing (benchmarks only).")] = False,
    security_profile: Annotated[
        int,
        typer.Option(
            help="OCPP security profile of every station: 0 none (development), 1 Basic Auth over ws, "
            "2 TLS + Basic Auth, 3 mutual TLS."
        ),
    ] = 0,  # fmt: skip
    pki: Annotated[
        str | None, typer.Option(help="Profiles 2-3: a `twin pki init` directory (csms.pem/key, ca.pem).")
    ] = None,
    passwords: Annotated[
        str | None, typer.Option(help="Profiles 1-2: station passwords as scrypt hashes (`twin pki passwd`).")
    ] = None,
    ocsp_url: Annotated[
        str | None, typer.Option(help="Profile 3: check client certificates with this OCSP responder.")
    ] = None,
    station_profiles: Annotated[
        str | None, typer.Option(help="Per-station overrides: a JSON file of station id -> profile.")
    ] = None,
    upstream_ca: Annotated[
        str | None, typer.Option(help="Proxy mode to wss://: the CA that signed the upstream CSMS's certificate.")
    ] = None,
    upstream_credentials: Annotated[
        str | None,
        typer.Option(help="Proxy mode to wss://: a directory of stations/<id>.pem and .key presented upstream."),
    ] = None,
    allow_downgrade: Annotated[
        str | None, typer.Option(help="Stations (comma-separated, or *) that may fall back from profile 3 to 2.")
    ] = None,
    processes: Annotated[
        int, typer.Option(min=1, help="Serve the port from N processes (SO_REUSEPORT), each a gateway of its own.")
    ] = 1,
    process: Annotated[int, typer.Option(hidden=True, help="This process's index among --processes.")] = 0,
    reuse_port: Annotated[bool, typer.Option("--reuse-port", hidden=True, help="Bind with SO_REUSEPORT.")] = False,
    verbose: Verbose = False,
) -> None:
    """Accept station connections on `ws://127.0.0.1:PORT/<any path>/<station id>`
    (`wss://` with --security-profile 2 or 3).

    Subprotocols ocpp2.1 (preferred) and ocpp2.0.1. Every frame in both directions is
    recorded on ocpp.frames before it is answered or forwarded; CSMS-initiated calls queued
    with `twin send` are delivered from ocpp.commands.

    Gateways scale out: --processes N on one host, or gateways on several hosts behind a TCP
    balancer. Each announces the stations it holds on gateway.connections, so a command
    reaches the one that holds its station, and a station that reconnects elsewhere is closed
    here (4000).
    """
    setup_logging(verbose)
    if mode not in ("csms", "proxy"):
        fail("--mode is csms or proxy")
    if mode == "proxy" and not upstream:
        fail("--mode proxy needs --upstream ws://host:port/path")
    settings = Settings.load(
        bootstrap=bootstrap, gateway_port=port, spool=spool, max_frame_bytes=max_frame_bytes,
        call_timeout=call_timeout, capture=False if no_capture else None,
    )  # fmt: skip
    try:
        guard = guard_from(security_profile, pki, passwords, ocsp_url, station_profiles, allow_downgrade)
    except (SecurityError, PkiError) as exc:
        fail(str(exc))
    certificates = None
    if pki and mode == "csms":  # ISO 15118 and certificate management answered from the local PKI
        from twin.gateway.certificates import LocalPki

        try:
            certificates = LocalPki(pki)
        except PkiError as exc:
            fail(str(exc))
    if processes > 1 and guard is not None and guard.tls:
        fail("--processes with --security-profile 2 or 3 is not supported yet: run one process per port")
    target, embedded = resolve_bootstrap(settings, "gateway")
    if processes > 1:
        try:
            code = serve_processes(processes, target, settings)
        finally:
            if embedded is not None:
                embedded.stop()
        raise typer.Exit(code)
    gw = Gateway(settings, target, mode=mode, upstream=upstream, guard=guard, certificates=certificates,
                 upstream_tls=UpstreamTls(upstream_ca, upstream_credentials), process=process,
                 reuse_port=reuse_port)  # fmt: skip
    try:
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(_serve(gw))
    except OSError as exc:
        fail(f"cannot listen on {settings.host}:{gw.port}: {exc.strerror or exc}")
    finally:
        if embedded is not None:
            embedded.stop()


def serve_processes(n: int, bootstrap: str, settings: Settings) -> int:
    """Run this command again as ``n`` gateway processes on one port (SO_REUSEPORT: the kernel
    spreads new connections over them), each dying with this one; wait until a signal or until
    one ends, then stop them all by their process ids. Returns the exit code."""
    import subprocess
    import sys
    import threading

    from twin import runtime
    from twin.stack import die_with_parent

    argv, args = [], iter(sys.argv[1:])
    for arg in args:  # this command's own arguments, less --processes
        if arg == "--processes":
            next(args, None)
        elif not arg.startswith("--processes="):
            argv.append(arg)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    argv = [sys.executable, "-m", "twin", *argv, "--bootstrap", bootstrap, "--port", str(settings.gateway_port)]
    children = [subprocess.Popen([*argv, "--process", str(i), "--reuse-port"], preexec_fn=die_with_parent())
                for i in range(n)]  # fmt: skip
    err.print(f"{n} gateway processes on port {settings.gateway_port}: pids {', '.join(str(c.pid) for c in children)}")
    code = 0
    while not stop.wait(0.5):
        ended = next((c for c in children if c.poll() is not None), None)
        if ended is not None:
            err.print(f"[bold red]error:[/] gateway process {ended.pid} ended (exit {ended.returncode}): stopping")
            code = 1
            break
    for child in children:
        child.send_signal(signal.SIGTERM)
    for child in children:
        runtime.stop(child, signal.SIGTERM, 10)
    return code


async def _serve(gw: Gateway) -> None:
    # SIGTERM stops as Ctrl-C does: stations are closed (and reconnect to another gateway),
    # their connections withdrawn from gateway.connections, the spool closed
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    await gw.start()
    tune_gc()
    try:
        await asyncio.Future()
    finally:
        await gw.stop()
