"""The typer app and what the commands share: options, output, errors."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.logging import RichHandler

from twin.settings import Settings

app = typer.Typer(
    name="twin",
    help="An event-sourced digital twin and analytics pipeline for OCPP 2.1 / 2.0.1 fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
err = Console(stderr=True)

Bootstrap = Annotated[
    str | None,
    typer.Option(
        "--bootstrap", "-b", help="host:port of a Kafka cluster; default: the embedded broker. (env TWIN_BOOTSTRAP)"
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail to stderr.")]


def setup_logging(verbose: bool = False) -> None:
    """Rich on a terminal; plain, unwrapped, timestamped lines into files and pipes."""
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(console=err, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for noisy in ("aiokafka", "kafka", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def reachable(settings: Settings) -> str:
    """The broker a command talks to (``--bootstrap``, else this machine's), once it answers;
    else one clear line and exit 1."""
    from twin.broker import BrokerError, wait_for_broker

    target = settings.bootstrap or f"{settings.host}:{settings.broker_port}"
    try:
        wait_for_broker(target, timeout=5)
    except BrokerError as exc:
        fail(str(exc))
    return target


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # one line, whatever the width: scripts grep it
    raise typer.Exit(code)
