"""The typer app and what the commands share: options, output, errors."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.logging import RichHandler

from twin.settings import Settings

if TYPE_CHECKING:
    from rich.progress import Progress

Bootstrap = Annotated[
    str | None,
    typer.Option(
        "--bootstrap", "-b", help="host:port of a Kafka cluster; default: the embedded broker. (env TWIN_BOOTSTRAP)"
    ),
]


def _into_environment(variable: str) -> Callable[[Any], Any]:
    """A Kafka security flag becomes its ``TWIN_`` variable: every Kafka client this process
    makes, and every process it starts, read it there (see twin.kafka_security)."""

    def store(value: Any) -> Any:
        if value:
            os.environ[variable] = str(value)
        return value

    return store


KafkaConfig = Annotated[
    str | None,
    typer.Option(
        "--kafka-config", metavar="FILE", callback=_into_environment("TWIN_KAFKA_CONFIG"),
        rich_help_panel="Kafka security",
        help="Kafka client properties (security.protocol, sasl.mechanism, sasl.jaas.config, "
        "ssl.truststore.location, bootstrap.servers, ...). (env TWIN_KAFKA_CONFIG)",
    ),
]  # fmt: skip
KAFKA_FLAGS = {
    "--kafka-security-protocol": "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    "--kafka-sasl-mechanism": "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
    "--kafka-username": "The SASL username (its password: --kafka-credentials or env TWIN_KAFKA_PASSWORD).",
    "--kafka-credentials": "A file holding the SASL password, or username= and password= lines.",
    "--kafka-ca": "PEM CA certificates the broker's certificate must chain to.",
    "--kafka-cert": "A PEM client certificate (mutual TLS).",
    "--kafka-key": "Its PEM key.",
}
"""The security flags every command with --kafka-config also takes (each also a variable:
``--kafka-ca`` is ``TWIN_KAFKA_CA``). No password flag: a command line is public to ``ps``."""


def with_kafka_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with the flags of KAFKA_FLAGS besides its --kafka-config: each stored in its
    variable by its callback, none passed to the command."""
    signature = inspect.signature(command, eval_str=True)
    names = {flag: flag.removeprefix("--").replace("-", "_") for flag in KAFKA_FLAGS}
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            str | None, typer.Option(flag, help=f"{KAFKA_FLAGS[flag]} (env TWIN_{name.upper()})",
                                     callback=_into_environment(f"TWIN_{name.upper()}"),
                                     rich_help_panel="Kafka security")])
        for flag, name in names.items()
    ]  # fmt: skip

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        for name in names.values():
            kwargs.pop(name, None)
        return command(*args, **kwargs)

    run.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])  # type: ignore[attr-defined]
    return run


class TwinTyper(typer.Typer):
    """A command that takes --kafka-config takes the flags of KAFKA_FLAGS too."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:  # type: ignore[override]
        register = super().command(*args, **kwargs)

        def decorator(command: Callable[..., Any]) -> Callable[..., Any]:
            takes = "kafka_config" in inspect.signature(command).parameters
            register(with_kafka_flags(command) if takes else command)
            return command

        return decorator


app = TwinTyper(
    name="twin",
    help="An event-sourced digital twin and analytics pipeline for OCPP 2.1 / 2.0.1 fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
err = Console(stderr=True)


def progress_bar(**options: Any) -> Progress:
    """A progress bar on stderr, gone when the work is done; none where stderr is not a
    terminal (a pipe or a log gets neither a bar nor the blank line it would leave)."""
    from rich.progress import Progress

    return Progress(console=err, transient=True, disable=not err.is_terminal, **options)

Json = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]


def iso_time(value: str | None) -> str | None:
    """An option's ISO 8601 time, checked where it is given (a typer callback): a bad one is
    a usage error naming the option, not a traceback from whatever reads it later. A time
    without a zone is UTC, as the log's times are: given back with its zone."""
    if value is not None:
        from datetime import UTC

        from twin.envelope import parse_ts

        try:
            parsed = parse_ts(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. 2026-03-01T09:00:00Z)") from None
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC).isoformat()
    return value
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
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    binary = getattr(sys.stdout, "buffer", None)
    sys.stdout.flush()
    if binary is None:  # a stdout of text only (a test's StringIO)
        sys.stdout.write(text.decode())
        sys.stdout.flush()
        return
    binary.write(text)  # the bytes as orjson made them, not decoded and encoded again
    binary.flush()


def reachable(settings: Settings, *needs: tuple[str, str]) -> str:
    """The broker a command talks to (``--bootstrap``, else this machine's), once it answers
    and, on a secured cluster, once it is known to let us do what we ``need`` (operation,
    topic pairs); else one clear line and exit 1."""
    from kafka.errors import KafkaError

    from twin import kafka_acls
    from twin.broker import BrokerError, wait_for_broker

    target = settings.bootstrap or f"{settings.host}:{settings.broker_port}"
    try:
        wait_for_broker(target, timeout=5)
        acls = [kafka_acls.Acl("topic", topic, (operation,)) for operation, topic in needs]
        lacking = kafka_acls.check("operator", settings, target, acls) if acls else None
    except (BrokerError, KafkaError) as exc:
        fail(str(exc))
    if lacking:
        fail(lacking)
    return target


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # one line, whatever the width: scripts grep it
    raise typer.Exit(code)
