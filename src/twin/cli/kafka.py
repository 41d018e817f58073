"""``twin kafka``: what twin needs of an operator's Kafka cluster."""

from __future__ import annotations

from typing import Annotated

import typer

from twin import kafka_acls
from twin.cli.app import Json, KafkaConfig, TwinTyper, app, err, fail, print_json
from twin.settings import Settings

kafka_app = TwinTyper(help="What twin needs of a Kafka cluster: the ACLs of each process.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")


@kafka_app.command("acls")
def acls(
    process: Annotated[list[str] | None, typer.Option("--process", help="Only these processes (repeat): "
                                                      f"{', '.join(kafka_acls.PROCESSES)}.")] = None,
    principal: Annotated[list[str] | None, typer.Option("--principal", help="PROCESS=PRINCIPAL, e.g. "
                                                        "gateway=User:twin-gw (repeat); default User:PROCESS.")] = None,
    prefix: Annotated[str | None, typer.Option(help="The topic prefix (and the groups'). (env TWIN_TOPIC_PREFIX)")]
    = None,
    bootstrap: Annotated[str | None, typer.Option("--bootstrap-server", "-b", help="The cluster, written into the "
                                                  "lines (default: --kafka-config's bootstrap.servers).")] = None,
    command_config: Annotated[str, typer.Option(help="The admin's client properties, written into the lines.")]
    = "admin.properties",
    apply: Annotated[bool, typer.Option("--apply", help="Create the ACLs on the cluster at --bootstrap-server as "
                                        "the principal of --kafka-config (an admin's) instead of printing them.")]
    = False,
    kafka_config: KafkaConfig = None,
    json_out: Json = False,
) -> None:
    """Print the ACLs each twin process needs, as `kafka-acls.sh` command lines (or --json).

    Each process runs as a principal of its own: the gateway writes ocpp.frames and reads
    ocpp.commands, the worker reads ocpp.frames and writes twin.state, and so on. Give them
    to the cluster's admin, or --apply them with an admin's --kafka-config.
    """
    settings = Settings.load(topic_prefix=prefix)
    bootstrap = bootstrap or settings.bootstrap
    chosen = process or list(kafka_acls.PROCESSES)
    unknown = [p for p in chosen if p not in kafka_acls.PROCESSES]
    if unknown:
        fail(f"no such process {', '.join(unknown)}: one of {', '.join(kafka_acls.PROCESSES)}", code=2)
    named: dict[str, str] = {}
    for given in principal or []:
        who, sep, name = given.partition("=")
        if not sep or who not in kafka_acls.PROCESSES or ":" not in name:
            fail(f"--principal {given!r}: PROCESS=PRINCIPAL, e.g. gateway=User:twin-gw", code=2)
        named[who] = name
    grants = {p: (named.get(p, f"User:{p}"), kafka_acls.needs(p, settings)) for p in chosen}
    if apply:
        if not bootstrap:
            fail("--apply needs the cluster: --bootstrap-server, or bootstrap.servers in --kafka-config", code=2)
        _apply(grants, bootstrap, settings)
        return
    if json_out:
        print_json({"prefix": settings.topic_prefix, "acls": [
            kafka_acls.as_json(acl, who) | {"process": p} for p, (who, needed) in grants.items() for acl in needed]})
        return
    for p, (who, needed) in grants.items():
        print(f"# {p}, as {who}")
        for acl, line in zip(needed, kafka_acls.kafka_acls_lines(needed, who, bootstrap or "BROKER:9093",
                                                                 command_config), strict=True):  # fmt: skip
            print(f"{line}  # {acl.why}")


def _apply(grants: dict[str, tuple[str, list[kafka_acls.Acl]]], bootstrap: str, settings: Settings) -> None:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from twin.broker import BrokerError, wait_for_broker
    from twin.kafka_security import current

    try:
        wait_for_broker(bootstrap, timeout=10)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, **current(settings).kafka_python())
        try:
            for p, (who, needed) in grants.items():
                kafka_acls.create(admin, needed, who)
                err.print(f"granted {p} ({who}): {len(needed)} ACLs")
        finally:
            admin.close()
    except (BrokerError, KafkaError, RuntimeError) as exc:
        fail(f"--apply: {exc}")
