"""``twin broker``: a broker on loopback in the foreground, Tansu (embedded) or Apache Kafka."""

from __future__ import annotations

import enum
import signal
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from twin.broker import BrokerError, EmbeddedBroker, KafkaBroker, ensure_topics, kafka_version
from twin.cli.app import app, err
from twin.settings import Settings


class Engine(enum.StrEnum):
    tansu = "tansu"
    kafka = "kafka"


def fail(message: str) -> NoReturn:
    """One line however long (a path in it included), where a script or a log reads it."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(1)


class _Stopped(Exception):
    """A signal came while the broker was still starting."""


@app.command()
def broker(
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1. (env TWIN_BROKER_PORT, default 9092)")] = None,
    partitions: Annotated[int | None, typer.Option(help="Partitions of each topic created. (default 4)")] = None,
    engine: Annotated[
        Engine,
        typer.Option(
            help="tansu: embedded, in memory, nothing to install. kafka: Apache Kafka "
            "(KRaft, one node, durable), on Java 17+ with the jars `make kafka` fetches."
        ),
    ] = Engine.tansu,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where Kafka keeps its topics and its log (--engine kafka). (default twin-data/kafka)"),
    ] = None,
) -> None:
    """Run a Kafka-protocol broker on loopback until Ctrl-C (or SIGTERM), and create the topics
    twin uses (twin.state compacted).

    --engine tansu (the default) keeps topics in memory: a restarted broker starts empty.
    --engine kafka runs Apache Kafka on this machine's Java, its data in --data-dir: stop it,
    start it again on the same directory, and every topic and record is still there. Its JVM
    logs to DATA_DIR/broker.log.
    """
    settings = Settings.load(broker_port=port, partitions=partitions)
    if engine is Engine.tansu and data_dir is not None:
        fail("--data-dir is for --engine kafka: Tansu keeps its topics in memory")
    running: EmbeddedBroker | KafkaBroker
    if engine is Engine.kafka:
        running = KafkaBroker(settings.broker_port, data_dir or Path("twin-data/kafka"), settings.host,
                              partitions=settings.partitions)  # fmt: skip
    else:
        running = EmbeddedBroker(settings.broker_port, settings.host)

    stop, starting = threading.Event(), True

    def on_signal(*_: Any) -> None:
        stop.set()
        if starting:  # Kafka takes seconds to start: unwind, and stop what has started
            raise _Stopped

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        running.start()
    except BrokerError as exc:
        fail(str(exc))
    except _Stopped:
        return
    try:
        created = ensure_topics(settings, running.bootstrap)
        starting = False
        pid = running.process.pid if running.process else "?"
        if isinstance(running, KafkaBroker):
            what = (f"Apache Kafka {kafka_version()} (KRaft) on [bold]{running.bootstrap}[/] "
                    f"(pid {pid}, data in {running.data_dir})")  # fmt: skip
        else:
            what = f"broker on [bold]{running.bootstrap}[/] (pid {pid})"
        err.print(f"{what}; topics: {', '.join(created) or 'existing'}", soft_wrap=True)
        while not stop.is_set():
            if running.process is None or running.process.poll() is not None:
                fail("the broker process exited" + (f": see {running.log}" if isinstance(running, KafkaBroker) else ""))
            stop.wait(0.5)
    except _Stopped:
        pass
    finally:
        starting = False
        running.stop()
