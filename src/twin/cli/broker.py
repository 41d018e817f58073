"""``twin broker``: the embedded Kafka-protocol broker in the foreground."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from twin.broker import BrokerError, EmbeddedBroker, ensure_topics
from twin.cli.app import app, err, fail
from twin.settings import Settings


@app.command()
def broker(
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1. (env TWIN_BROKER_PORT, default 9092)")] = None,
    partitions: Annotated[int | None, typer.Option(help="Partitions of each topic created. (default 4)")] = None,
) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, in memory) on loopback until Ctrl-C.

    Creates the topics twin uses (twin.state compacted). Topics live in memory: a
    restarted broker starts empty.
    """
    settings = Settings.load(broker_port=port, partitions=partitions)
    try:
        embedded = EmbeddedBroker(settings.broker_port, settings.host).start()
    except BrokerError as exc:
        fail(str(exc))
    try:
        created = ensure_topics(settings, embedded.bootstrap)
        err.print(
            f"broker on [bold]{embedded.bootstrap}[/] (pid {embedded.process.pid if embedded.process else '?'}); "
            f"topics: {', '.join(created) or 'existing'}"
        )
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set():
            if embedded.process is None or embedded.process.poll() is not None:
                fail("the broker process exited")
            stop.wait(0.5)
    finally:
        embedded.stop()
