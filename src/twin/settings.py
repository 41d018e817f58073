"""The one settings object: flags, then ``TWIN_*`` environment variables, then defaults.

The defaults work on one machine with nothing installed beyond the package: no
``bootstrap`` means "start the embedded broker".
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any

from twin.topics import Topics


@dataclass(frozen=True)
class Settings:
    bootstrap: str | None = None
    """host:port of an external Kafka cluster; None means the embedded broker."""
    broker_port: int = 9092
    topic_prefix: str = ""
    partitions: int = 4
    host: str = "127.0.0.1"
    gateway_port: int = 9000
    web_port: int = 6066
    dashboard_port: int = 8501
    api: str = ""
    """URL of a worker's API, for the dashboard and the CLI; empty: this machine's worker."""
    ocpi: str = ""
    """URL of ``twin ocpi`` (its ``/status``: where each feed is), for the dashboard; empty:
    this machine's, on port 8180."""
    archive: str = "twin-data/archive"
    store: str = "memory"
    """Where the worker keeps its table of twins: "memory" (rebuilt from the changelog at
    start) or "rocksdb" (on disk in the worker's data directory, via rocksdict)."""
    sites: str = ""
    """A sites file (JSON list of sites); empty: the sites of the archive's station inventory."""
    spool: str = "twin-data/spool"
    max_frame_bytes: int = 65536
    """Frames larger than this are answered with a FormatViolation and dead-lettered."""
    call_timeout: float = 60.0
    """Seconds a CSMS-initiated CALL waits for its answer (libocpp's default)."""
    capture_timeout: float = 5.0
    """Seconds a frame waits for the broker's ack before it goes to the spool instead."""
    heartbeat_interval: int = 1800
    station_rate: float = 200.0
    """Frames per second one station may send (bursts of ``station_burst``); past that the
    gateway reads its socket more slowly (TCP backpressure): a flood slows its sender, loses
    nothing, and leaves other stations alone. 0: no limit."""
    station_burst: int = 400
    handshake_timeout: float = 10.0
    """Seconds a connection may take from TCP connect to the end of its websocket upgrade
    (slow clients are closed after it)."""
    idle_timeout: float = 0.0
    """Seconds of silence after which a connection is closed (half-open, or a dead peer);
    0: three heartbeat intervals."""
    capture: bool = True
    """Off only for benchmarks: measures what capturing costs."""
    kafka_config: str = ""
    """A Kafka client properties file (security.protocol, sasl.*, ssl.*: see twin.kafka_security)."""
    kafka_security_protocol: str = ""
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; empty: the properties file's, else what the
    rest implies (a username: SASL_SSL; a CA or certificate alone: SSL; nothing: PLAINTEXT)."""
    kafka_sasl_mechanism: str = ""
    """PLAIN (the default under SASL), SCRAM-SHA-256 or SCRAM-SHA-512."""
    kafka_username: str = ""
    kafka_password: str = field(default="", repr=False)
    """Only from TWIN_KAFKA_PASSWORD, a credentials file or the properties file: never a flag."""
    kafka_credentials: str = ""
    """A file holding the SASL password (its first line), or username= and password= lines."""
    kafka_ca: str = ""
    """PEM CA certificates the broker's certificate must chain to (default: the system's)."""
    kafka_cert: str = ""
    """A PEM client certificate, for clusters that authenticate clients by TLS."""
    kafka_key: str = ""
    topics: Topics = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "topics", Topics(self.topic_prefix))

    @property
    def api_url(self) -> str:
        return (self.api or f"http://{self.host}:{self.web_port}").rstrip("/")

    @property
    def ocpi_url(self) -> str:
        return (self.ocpi or f"http://{self.host}:8180").rstrip("/")

    @classmethod
    def load(cls, **flags: Any) -> Settings:
        """Flags that are not None win, then ``TWIN_<NAME>``, then the default."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if not f.init:
                continue
            flag = flags.pop(f.name, None)
            env = os.environ.get(f"TWIN_{f.name.upper()}")
            if flag is not None:
                values[f.name] = flag
            elif env is not None and env != "":
                values[f.name] = _coerce(env, f.default)
        if flags:
            raise TypeError(f"unknown settings: {', '.join(sorted(flags))}")
        if "bootstrap" not in values and values.get("kafka_config"):  # the properties file's servers
            from twin.kafka_security import KafkaSecurityError, from_properties

            with contextlib.suppress(KafkaSecurityError):  # an unreadable file: said when security is read
                values["bootstrap"] = from_properties(values["kafka_config"]).get("bootstrap") or None
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _coerce(text: str, default: Any) -> Any:
    if isinstance(default, bool):
        return text.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    return text
