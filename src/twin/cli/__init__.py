"""The ``twin`` command line (typer). Every command that prints data takes ``--json``."""

from __future__ import annotations

from twin.cli import broker, captures, gateway, replay, report, send, simulate, twins, worker  # noqa: F401  - register the commands
from twin.cli.app import app


def main() -> None:
    app()
