"""``twin send``: queue a CSMS-initiated call on ocpp.commands."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from twin import kafka_security
from twin.cli.app import Bootstrap, Json, KafkaConfig, app, err, fail, print_json, reachable
from twin.gateway.commands import command, command_problem
from twin.settings import Settings


@app.command()
def send(
    station: Annotated[str, typer.Argument(help="Station id.")],
    action: Annotated[str, typer.Argument(help="A CSMS-initiated OCPP 2.1 action, e.g. ReserveNow.")],
    payload: Annotated[str, typer.Argument(help="The payload as JSON.")] = "{}",
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    by: Annotated[str, typer.Option(help="Who asks (recorded with the command).")] = "cli",
    json_out: Json = False,
) -> None:
    """Queue a CSMS-initiated call for a station; the gateway delivers it.

    The payload is checked against the OCPP 2.1 schema first. Whether the station got it,
    and its answer, appear in ocpp.frames (a CommandUndelivered record if it was not
    connected).
    """
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        fail(f"PAYLOAD is not JSON: {exc}")
    problem = command_problem(action, body)
    if problem is not None:
        fail(f"not sent: {problem}")
    settings = Settings.load(bootstrap=bootstrap)
    target = reachable(settings, ("Write", settings.topics.commands))
    from kafka import KafkaProducer

    cmd = command(station, action, body, by)
    producer = KafkaProducer(bootstrap_servers=target, acks="all", **kafka_security.kafka_python(settings))
    producer.send(settings.topics.commands, key=station.encode(), value=orjson.dumps(cmd)).get(10)
    producer.close()
    if json_out:
        print_json(cmd)
    else:
        err.print(f"queued {action} for {station} as command {cmd['command_id']}")
