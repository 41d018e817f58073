"""The ``twin`` command line (typer). Every command that prints data takes ``--json``.

The ``twin`` process imports the module of the command it runs, not every command's: together
they import Kafka, pyarrow, the gateway and the fold, about 0.8 s before ``twin report`` could
start. Anything else that imports this package (the tests, ``CliRunner``) gets every command,
as does ``twin --help`` or a command not in COMMANDS.
"""

from __future__ import annotations

import sys
from importlib import import_module
from pathlib import Path

from twin.cli.app import app

COMMANDS = {
    "broker": "broker", "validate": "captures", "import": "captures", "compact": "captures", "control": "control",
    "controller": "control", "gateway": "gateway", "kafka": "kafka", "ocpi": "ocpi", "pki": "pki", "replay": "replay",
    "report": "report", "send": "send", "simulate": "simulate", "sites": "sites", "tariff": "tariff", "token": "token",
    "state": "twins", "fleet": "twins", "rebuild": "twins", "dashboard": "up", "up": "up", "ven": "ven",
    "worker": "worker",
}  # fmt: skip
"""Each command (or group of commands) and the module under ``twin.cli`` that registers it."""


def load(command: str | None = None) -> None:
    """Register ``command``'s module, or every command's (``command`` None or not known)."""
    modules = [COMMANDS[command]] if command in COMMANDS else sorted(set(COMMANDS.values()))
    for module in modules:
        import_module(f"twin.cli.{module}")


def _is_the_command() -> bool:
    """Whether this process is ``twin`` itself: its script, or ``python -m twin``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return (spec is not None and spec.name == "twin.__main__") or Path(getattr(main, "__file__", "")).stem == "twin"


if not _is_the_command():
    load()


def _commands() -> None:
    """Stands for the commands not loaded: with a callback the app stays a group of commands
    (a lone command would become the whole app, and take its own name for an argument)."""


def main() -> None:
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    load(command)
    if app.registered_callback is None:
        app.callback()(_commands)
    app()
