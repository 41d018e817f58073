"""The ``twin`` command line (typer). Every command that prints data takes ``--json``."""

from __future__ import annotations

from twin.cli import (  # noqa: F401  - register the commands
    broker,
    captures,
    control,
    gateway,
    kafka,
    ocpi,
    pki,
    replay,
    report,
    send,
    simulate,
    sites,
    tariff,
    token,
    twins,
    up,
    ven,
    worker,
)
from twin.cli.app import app


def main() -> None:
    app()
