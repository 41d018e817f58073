"""``twin worker``: the Faust stream worker (fold, twin.state, twin.alerts, HTTP API)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from twin.captures import shown
from twin.cli.app import Bootstrap, KafkaConfig, Verbose, app, err, fail
from twin.cli.door import ApiTokens, Insecure, TlsCert, TlsKey, http_door
from twin.cli.gateway import resolve_bootstrap
from twin.runtime import tune_gc
from twin.settings import Settings


@app.command()
def worker(
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    web_port: Annotated[
        int | None, typer.Option(help="Port of the HTTP API. (env TWIN_WEB_PORT, default 6066)")
    ] = None,
    archive: Annotated[
        str | None,
        typer.Option(
            help="Also write ocpp.frames to this Parquet archive: a directory or an object-store URL."
            " (env TWIN_ARCHIVE)"
        ),
    ] = None,
    data_dir: Annotated[str, typer.Option(help="Faust's working directory.")] = "twin-data/worker",
    store: Annotated[
        str | None,
        typer.Option(help="The twins table: memory (default) or rocksdb (on disk in --data-dir). (env TWIN_STORE)"),
    ] = None,
    sites: Annotated[str | None, typer.Option("--sites", help="A sites file for /v1/sites (default: the sites of "
                                              "the station inventory beside the archive). (env TWIN_SITES)")] = None,
    api_tokens: ApiTokens = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    insecure: Insecure = False,
    verbose: Verbose = False,
) -> None:
    """Fold ocpp.frames into one twin per station and serve them on http://127.0.0.1:PORT/v1/.

    Twins live in a changelog-backed table: a restarted worker recovers them from Kafka.
    Each changed twin goes to twin.state (compacted), alerts to twin.alerts.
    """
    import faust

    from streams.app import committed, create_app
    from twin.cli.control import load_sites

    settings = Settings.load(bootstrap=bootstrap, web_port=web_port, archive=archive, store=store, sites=sites)
    found, _ = load_sites(settings)
    if settings.store not in ("memory", "rocksdb"):
        fail(f"--store is memory or rocksdb, not {settings.store!r}")
    if settings.store == "rocksdb":
        try:
            import rocksdict  # noqa: F401
        except ImportError:
            fail("--store rocksdb needs rocksdict: pip install 'twin[rocksdb]'")
    door = http_door(settings.host, api_tokens, tls_cert, tls_key, insecure, "--web-port")
    target, embedded = resolve_bootstrap(settings, "worker")
    from twin.broker import port_is_free

    if not port_is_free(settings.host, settings.web_port):
        fail(f"port {settings.web_port} on {settings.host} is already in use (--web-port)")
    positions = committed(settings, target)  # where the group left off, read once
    archive_to = archive or os.environ.get("TWIN_ARCHIVE")  # only when asked: not the default location
    faust_app = create_app(settings, target, settings.web_port, data_dir, positions, archive_to, found,
                           door.guard, door.tls)  # fmt: skip
    scheme = "https" if door.tls else "http"
    err.print(f"worker: API on [bold]{scheme}://{settings.host}:{settings.web_port}/v1/stations[/] ({door.said}), "
              f"broker {target}")  # fmt: skip
    if archive_to:
        err.print(f"worker: archiving ocpp.frames to {shown(archive_to)}")
    tune_gc()
    try:
        sys.argv = ["twin-worker"]  # faust's Worker reads the command line
        runner = faust.Worker(faust_app, loglevel="DEBUG" if verbose else "WARNING", quiet=True)
        # Faust's start-up spinner sets the root logger to DEBUG so that every log call spins it,
        # and never sets it back: every send then built a debug record (10% of the worker's time)
        runner.spinner = None
        runner.execute_from_commandline()
    finally:
        if embedded is not None:
            embedded.stop()
