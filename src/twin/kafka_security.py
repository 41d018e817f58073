"""How every Kafka client twin makes reaches a secured cluster: TLS, SASL and who we are.

One :class:`KafkaSecurity`, built from the settings (``--kafka-config FILE``, a properties
file in the form Kafka's own clients read, then the ``--kafka-*`` flags and ``TWIN_KAFKA_*``
variables over it), turned into the keyword arguments of each client library twin uses:
:meth:`~KafkaSecurity.aiokafka`, :meth:`~KafkaSecurity.kafka_python` and
:meth:`~KafkaSecurity.faust`. A client construction passes ``**kafka_security.aiokafka()``
(or the others) and knows nothing else about security.

The flags of a command are stored in the process's environment as their ``TWIN_KAFKA_*``
variables (see ``twin.cli.app``), so that every client the process makes, however deep in
the code, and every process it starts (``twin up``'s children, the dashboard) read the same
settings. A secret is never on a command line that ``ps`` shows: the password comes from a
file, the properties file or ``TWIN_KAFKA_PASSWORD``.

The properties keys read (the rest of a client.properties, e.g. ``acks``, are ignored):
``bootstrap.servers``, ``security.protocol``, ``sasl.mechanism``, ``sasl.jaas.config``
(its ``username="..."`` and ``password="..."``), ``sasl.username``/``sasl.password``,
``ssl.truststore.location`` (``ssl.truststore.type=PEM``) or ``ssl.ca.location``,
``ssl.keystore.location`` (``ssl.keystore.type=PEM``: key and certificate in one file) or
``ssl.certificate.location`` and ``ssl.key.location``, ``ssl.key.password``, and
``ssl.endpoint.identification.algorithm`` (empty or ``none``: the broker's host name is not
checked against its certificate).
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twin.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSecurityError(ValueError):
    """Kafka client security that cannot be used; the message says why (never a secret)."""


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    mechanism: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""
    """PEM certificates the broker's must chain to; empty: the system's trusted CAs."""
    cert_file: str = ""
    """A PEM client certificate (mutual TLS); ``key_file`` its key (or in the same file)."""
    key_file: str = ""
    key_password: str = field(default="", repr=False)
    check_hostname: bool = True
    bootstrap: str = ""
    """``bootstrap.servers`` of the properties file, if it had one."""

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def principal(self) -> str:
        """Who the cluster will take us for, as far as we can tell (for messages)."""
        if self.sasl:
            return f"User:{self.username}"
        if self.cert_file:
            return f"the principal of certificate {self.cert_file}"
        return "User:ANONYMOUS"

    def describe(self) -> str:
        """What we connect with, for banners and errors: never the password."""
        said = [self.protocol]
        if self.sasl:
            said.append(f"{self.mechanism} as {self.username}")
        if self.tls:
            said.append(f"CA {self.ca_file}" if self.ca_file else "the system's CAs")
            if self.cert_file:
                said.append(f"client certificate {self.cert_file}")
        return ", ".join(said)

    def secrets(self) -> list[str]:
        """The values no output may contain."""
        return [s for s in (self.password, self.key_password) if s]

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file or None, self.key_password or None)
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(f for f in (self.ca_file, self.cert_file, self.key_file) if f) or "the system's CAs"
            raise KafkaSecurityError(f"cannot read the Kafka TLS files ({files}): {_reason(exc)}") from None
        context.check_hostname = self.check_hostname
        return context

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producers, consumers and clients."""
        if self.protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options["ssl_context"] = self.ssl_context()
        if self.sasl:
            options.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=self.password)  # fmt: skip
        return options

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's producers, consumers and admin clients (the
        same names as aiokafka's)."""
        return self.aiokafka()

    def faust(self) -> dict[str, Any]:
        """Keyword arguments for ``faust.App``: its ``broker_credentials``."""
        import faust

        if self.protocol == "PLAINTEXT":
            return {}
        context = self.ssl_context()
        if not self.sasl:
            assert context is not None
            return {"broker_credentials": faust.SSLCredentials(context)}
        credentials = faust.SASLCredentials(username=self.username, password=self.password,
                                            ssl_context=context, mechanism=self.mechanism)  # fmt: skip
        return {"broker_credentials": credentials}


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc)


def read_properties(path: str | Path) -> dict[str, str]:
    """A Java properties file (``key=value`` or ``key: value``, ``#``/``!`` comments, a
    trailing backslash continuing a line)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise KafkaSecurityError(f"cannot read the Kafka client properties {path}: {_reason(exc)}") from None
    values: dict[str, str] = {}
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending = line[:-1]
            continue
        if not line or line[0] in "#!":
            continue
        found = re.match(r"([^=:\s]+)\s*[=:\s]\s*(.*)", line)
        if found:
            values[found.group(1)] = found.group(2).strip()
    return values


def _jaas(config: str, key: str) -> str:
    found = re.search(rf'\b{key}\s*=\s*"((?:[^"\\]|\\.)*)"', config)
    return found.group(1).replace('\\"', '"').replace("\\\\", "\\") if found else ""


def from_properties(path: str | Path) -> dict[str, Any]:
    """The settings a client.properties gives, under :class:`KafkaSecurity`'s field names."""
    props = read_properties(path)
    got: dict[str, Any] = {}

    def pem(kind: str) -> str:
        location = props.get(f"ssl.{kind}.location", "")
        stated = props.get(f"ssl.{kind}.type", "PEM").upper()
        if location and stated != "PEM":
            raise KafkaSecurityError(f"{path}: ssl.{kind}.type {stated} is not read; give a PEM file "
                                     f"(ssl.{kind}.type=PEM)")  # fmt: skip
        return location

    got["bootstrap"] = props.get("bootstrap.servers", "")
    got["protocol"] = props.get("security.protocol", "")
    got["mechanism"] = props.get("sasl.mechanism", "")
    jaas = props.get("sasl.jaas.config", "")
    got["username"] = props.get("sasl.username", "") or _jaas(jaas, "username")
    got["password"] = props.get("sasl.password", "") or _jaas(jaas, "password")
    got["ca_file"] = pem("truststore") or props.get("ssl.ca.location", "")
    keystore = pem("keystore")
    got["cert_file"] = keystore or props.get("ssl.certificate.location", "")
    got["key_file"] = keystore or props.get("ssl.key.location", "")
    got["key_password"] = props.get("ssl.key.password", "")
    if "ssl.endpoint.identification.algorithm" in props:
        got["check_hostname"] = props["ssl.endpoint.identification.algorithm"].lower() not in ("", "none")
    return {k: v for k, v in got.items() if v != ""}


def _credentials_file(path: str) -> dict[str, str]:
    """A file holding the password alone (its first line), or ``username=`` and ``password=``
    lines."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise KafkaSecurityError(f"cannot read the Kafka credentials file {path}: {_reason(exc)}") from None
    if re.search(r"^\s*(username|password)\s*[=:]", text, re.M):
        props = read_properties(path)
        return {k: props[k] for k in ("username", "password") if props.get(k)}
    first = text.splitlines()[0] if text else ""
    return {"password": first} if first else {}


def from_settings(settings: Settings) -> KafkaSecurity:
    """The security of ``settings``: the properties file, the flags and variables over it.
    Raises :class:`KafkaSecurityError` for what cannot work, before anything connects."""
    values: dict[str, Any] = {}
    if settings.kafka_config:
        values.update(from_properties(settings.kafka_config))
    if settings.kafka_credentials:
        values.update(_credentials_file(settings.kafka_credentials))
    given = {
        "protocol": settings.kafka_security_protocol, "mechanism": settings.kafka_sasl_mechanism,
        "username": settings.kafka_username, "password": settings.kafka_password,
        "ca_file": settings.kafka_ca, "cert_file": settings.kafka_cert, "key_file": settings.kafka_key,
    }  # fmt: skip
    values.update({k: v for k, v in given.items() if v})
    protocol = str(values.get("protocol") or "").upper()
    if not protocol:  # what the rest implies, as a managed cluster's users would expect
        sasl, tls = bool(values.get("username")), bool(values.get("ca_file") or values.get("cert_file"))
        protocol = {(True, True): "SASL_SSL", (True, False): "SASL_SSL", (False, True): "SSL"}.get(
            (sasl, tls), "PLAINTEXT")  # fmt: skip
    values["protocol"] = protocol
    if protocol not in PROTOCOLS:
        raise KafkaSecurityError(f"Kafka security protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if protocol.startswith("SASL_"):
        values["mechanism"] = str(values.get("mechanism") or "PLAIN").upper()
        if values["mechanism"] not in MECHANISMS:
            raise KafkaSecurityError(f"SASL mechanism {values['mechanism']!r} is not one of {', '.join(MECHANISMS)}")
        if not values.get("username") or not values.get("password"):
            raise KafkaSecurityError(f"{protocol} needs a username and a password (sasl.jaas.config, "
                                     "--kafka-username and --kafka-credentials, or TWIN_KAFKA_PASSWORD)")  # fmt: skip
    if values.get("key_file") and not values.get("cert_file"):
        raise KafkaSecurityError("a Kafka client key without its certificate (--kafka-cert)")
    security = KafkaSecurity(**values)
    security.ssl_context()  # the files are readable, or one line now rather than a traceback later
    return security


def current(settings: Settings | None = None) -> KafkaSecurity:
    """The security of ``settings``, else of this process (its ``TWIN_KAFKA_*`` variables)."""
    from twin.settings import Settings

    return from_settings(settings if settings is not None else Settings.load())


def aiokafka(settings: Settings | None = None) -> dict[str, Any]:
    return current(settings).aiokafka()


def kafka_python(settings: Settings | None = None) -> dict[str, Any]:
    return current(settings).kafka_python()


def faust_options(settings: Settings | None = None) -> dict[str, Any]:
    return current(settings).faust()


class LoginRefused(KafkaSecurityError):
    """The broker answered, and said no: a retry will not change it."""


async def probe(bootstrap: str, security: KafkaSecurity, timeout: float = 5.0) -> None:
    """Connect to the first of ``bootstrap`` as ``security`` says and ask for metadata.

    Raises :class:`LoginRefused` where the broker's certificate is not trusted, the login is
    refused, or the mechanism is not offered, and :class:`KafkaSecurityError` for what may
    pass (nothing listens yet, the connection closed): each one line naming what failed.
    The client libraries log such causes and retry until their timeout, then say only that
    they could not bootstrap."""
    import asyncio

    from aiokafka import errors
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    where = f"{host}:{port}"
    conn = None
    try:
        conn = await asyncio.wait_for(
            create_conn(host or "127.0.0.1", int(port), request_timeout_ms=int(timeout * 1000), **security.aiokafka()),
            timeout,
        )
        await asyncio.wait_for(conn.send(MetadataRequest([])), timeout)
    except ssl.SSLCertVerificationError as exc:
        trust = f"the CA in {security.ca_file} does" if security.ca_file else "the system's CAs do"
        raise LoginRefused(f"the Kafka broker at {where} has a TLS certificate that {trust} not vouch for "
                           f"({exc.verify_message})") from None  # fmt: skip
    except ssl.SSLError as exc:
        raise LoginRefused(f"the TLS handshake with the Kafka broker at {where} failed ({_reason(exc)}); "
                           f"does its listener speak {security.protocol}?") from None  # fmt: skip
    except (errors.SaslAuthenticationFailed, errors.IllegalSaslStateError) as exc:
        said = str(exc).split(":", 1)[-1].strip() if ":" in str(exc) else str(exc)
        raise LoginRefused(f"the Kafka broker at {where} refused the login of {security.username!r} "
                           f"({security.mechanism}): {said}") from None  # fmt: skip
    except errors.UnsupportedSaslMechanismError:
        raise LoginRefused(f"the Kafka broker at {where} does not offer SASL mechanism {security.mechanism}") from None
    except errors.KafkaConnectionError as exc:
        raise KafkaSecurityError(f"the Kafka broker at {where} closed the connection ({exc}); it may expect "
                                 f"another security protocol than {security.protocol}") from None  # fmt: skip
    except TimeoutError:
        raise KafkaSecurityError(f"no answer from the Kafka broker at {where} within {timeout:g} s") from None
    except OSError as exc:
        raise KafkaSecurityError(f"cannot connect to the Kafka broker at {where}: {_reason(exc)}") from None
    finally:
        if conn is not None:
            conn.close()


def check(bootstrap: str, security: KafkaSecurity, timeout: float = 5.0) -> None:
    """:func:`probe`, from synchronous code (in a thread of its own where a loop runs)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    def run() -> None:
        asyncio.run(probe(bootstrap, security, timeout))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    with ThreadPoolExecutor(1) as pool:
        pool.submit(run).result()
