"""Kafka client security against Apache Kafka with a SASL_SSL listener, SCRAM users and ACLs.

One secured Kafka for the module (``KafkaBroker(security=...)``: a server certificate from
``twin pki``, SCRAM-SHA-512 users made at format time, StandardAuthorizer). Each process runs
as a principal of its own, granted exactly what ``twin kafka acls`` says it needs (the table
under test). Then: every failure class is one line and exit 1, for send, gateway and worker;
and no secret appears in anything the processes print or log.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import (
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePatternFilter,
    ResourceType,
)

from tests.conftest import kafka_missing
from tests.stations import BOOT, raw_station
from tests.test_cli_processes import process, wait_port
from twin import kafka_acls, pki
from twin.broker import KafkaBroker, ListenerSecurity, ensure_topics, free_port
from twin.kafka_security import KafkaSecurity, KafkaSecurityError, from_properties, from_settings
from twin.settings import Settings

TWIN = [sys.executable, "-m", "twin"]
PREFIX = "sec."
PRINCIPALS = ("gateway", "worker", "controller", "operator")


@dataclass
class Secured:
    broker: KafkaBroker
    root: Path
    passwords: dict[str, str]

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def properties(self, user: str, password: str | None = None, ca: Path | None = None) -> Path:
        """A client.properties as Kafka's own clients read it, for ``user``."""
        path = self.root / f"{user}-{secrets.token_hex(3)}.properties"
        jaas = ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                f'username="{user}" password="{password or self.passwords[user]}";')  # fmt: skip
        path.write_text(
            f"# {user}'s client\nbootstrap.servers={self.bootstrap}\nsecurity.protocol=SASL_SSL\n"
            f"sasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config={jaas}\nssl.truststore.type=PEM\n"
            f"ssl.truststore.location={ca or self.root / 'pki' / 'ca.pem'}\nacks=all\n"
        )
        return path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    if (missing := kafka_missing()) is not None:
        pytest.skip(f"Apache Kafka cannot run here: {missing}")
    root = tmp_path_factory.mktemp("secured")
    pki.init(root / "pki", [])
    pki.init(root / "other", [])  # a CA the broker's certificate does not chain to
    passwords = {name: f"pw-{name}-{secrets.token_urlsafe(12)}" for name in ("admin", *PRINCIPALS, "stranger")}
    ca = root / "pki"
    listener = ListenerSecurity(ca / "csms.pem", ca / "csms.key", ca / "ca.pem", passwords)
    broker = KafkaBroker(free_port(), root / "kafka", security=listener)
    try:
        broker.start()
        secured = Secured(broker, root, passwords)
        admin_settings = Settings(topic_prefix=PREFIX, kafka_config=str(secured.properties("admin")))
        assert ensure_topics(admin_settings, broker.bootstrap), "the admin may create the topics"
        # exactly what `twin kafka acls` prints, nothing more, granted by it as the admin
        argv = [*TWIN, "kafka", "acls", "--apply", "--prefix", PREFIX, "--kafka-config", admin_settings.kafka_config]
        for name in PRINCIPALS:
            argv += ["--process", name]
        applied = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert applied.returncode == 0, applied.stderr
        assert "granted gateway (User:gateway)" in applied.stderr
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, **listener.client().kafka_python())
        everything = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                               ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))  # fmt: skip
        acls, _ = admin.describe_acls(everything)
        admin.close()
        wanted = sum(len(op) for p in PRINCIPALS for op in (a.operations for a in kafka_acls.needs(p, admin_settings)))
        assert len(acls) == wanted, acls
        yield secured
    finally:
        broker.stop()


def _records(secured: Secured, topic: str, until: Any, timeout: float = 60) -> list[dict[str, Any]]:
    """Every record of ``topic``, read as the admin, once ``until(records)`` holds."""
    consumer = KafkaConsumer(bootstrap_servers=secured.bootstrap, consumer_timeout_ms=200,
                             **secured.broker.client_security().kafka_python())  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}])
        consumer.seek_to_beginning()
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(orjson.loads(m.value) for m in batch)
            if until(records):
                return records
        raise AssertionError(f"{topic}: {records[-5:]}")
    finally:
        consumer.close()


def _twin(port: int, station: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/stations/{station}", timeout=3) as response:
            value: dict[str, Any] = json.loads(response.read())
            return value
    except Exception:
        return None


def _scan(texts: dict[str, str], secrets_: list[str]) -> None:
    for where, text in texts.items():
        for secret in secrets_:
            assert secret not in text, f"a secret in {where}"


async def test_the_product_runs_with_its_own_principals_and_prints_no_secret(
    secured: Secured, tmp_path: Path
) -> None:
    env = {"TWIN_TOPIC_PREFIX": PREFIX}
    gw_port, web_port = free_port(), free_port()
    logs = {name: tmp_path / f"{name}.log" for name in ("gateway", "worker", "controller")}
    sites = tmp_path / "sites.json"
    sites.write_text(json.dumps([{"site_id": "SITE-SEC", "ean": "871687000000000016", "import_limit_kw": 50,
                                  "export_limit_kw": 0, "stations": ["CS-SEC"]}]))  # fmt: skip
    # the gateway by its properties file; the worker by flags and a credentials file; the controller
    # by TWIN_KAFKA_* variables alone: the three ways in
    credentials = tmp_path / "worker.credentials"
    credentials.write_text(f"username=worker\npassword={secured.passwords['worker']}\n")
    gateway_args = ["gateway", "--port", str(gw_port), "--spool", str(tmp_path / "spool"),
                    "--kafka-config", str(secured.properties("gateway"))]  # fmt: skip
    worker_args = ["worker", "-b", secured.bootstrap, "--web-port", str(web_port), "--data-dir", str(tmp_path / "w"),
                   "--archive", str(tmp_path / "archive"), "--sites", str(sites), "--kafka-sasl-mechanism",
                   "SCRAM-SHA-512", "--kafka-credentials", str(credentials), "--kafka-ca",
                   str(secured.root / "pki" / "ca.pem")]  # fmt: skip
    controller_env = {**env, "TWIN_BOOTSTRAP": secured.bootstrap, "TWIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                      "TWIN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "TWIN_KAFKA_USERNAME": "controller",
                      "TWIN_KAFKA_PASSWORD": secured.passwords["controller"],
                      "TWIN_KAFKA_CA": str(secured.root / "pki" / "ca.pem")}  # fmt: skip
    with (
        process(gateway_args, logs["gateway"], env=env) as gateway,
        process(worker_args, logs["worker"], env=env) as worker,
        process(["controller", "--sites", str(sites)], logs["controller"], env=controller_env) as controller,
    ):
        wait_port(gw_port, gateway, logs["gateway"], timeout=60)
        async with raw_station(f"ws://127.0.0.1:{gw_port}/ocpp/CS-SEC") as station:
            assert (await station.ask(BOOT, timeout=15))[2]["status"] == "Accepted"
            deadline = time.monotonic() + 90
            while (twin := _twin(web_port, "CS-SEC")) is None and time.monotonic() < deadline:
                assert worker.poll() is None, logs["worker"].read_text()[-3000:]
                time.sleep(0.3)
            assert twin is not None and twin["identity"]["vendor"], logs["worker"].read_text()[-3000:]
            # an operator's command, as its own principal, delivered by the gateway's
            sent = subprocess.run([*TWIN, "send", "CS-SEC", "Reset", '{"type": "Immediate"}', "--json",
                                   "--kafka-config", str(secured.properties("operator"))],
                                  capture_output=True, text=True, timeout=60, env={**os.environ, **env})  # fmt: skip
            assert sent.returncode == 0, sent.stderr
            call = await station.recv(timeout=30)
            assert call[0] == 2 and call[2] == "Reset", call
            await station.send([3, call[1], {"status": "Accepted"}])
        state = _records(secured, f"{PREFIX}twin.state", lambda rs: any(r["station_id"] == "CS-SEC" for r in rs))
        assert state, "the worker wrote twin.state as its own principal"
        for name, proc in (("gateway", gateway), ("worker", worker), ("controller", controller)):
            assert proc.poll() is None, f"{name} stopped: {logs[name].read_text()[-3000:]}"
    texts = {name: log.read_text() for name, log in logs.items()}
    texts["send"] = sent.stdout + sent.stderr
    assert "Traceback" not in texts["controller"] + texts["gateway"], texts
    _scan(texts, list(secured.passwords.values()))


def _one_line(argv: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> str:
    began = time.monotonic()
    done = subprocess.run([*TWIN, *argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TWIN_TOPIC_PREFIX": PREFIX, **(env or {})})  # fmt: skip
    took = time.monotonic() - began
    assert done.returncode == 1, (argv, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert took < 30, f"{argv[0]} took {took:.0f} s to fail"
    return lines[0]


@pytest.mark.parametrize("command", ["send", "gateway", "worker"])
def test_each_failure_is_one_line_naming_what_failed(secured: Secured, command: str, tmp_path: Path) -> None:
    user = {"send": "operator", "gateway": "gateway", "worker": "worker"}[command]
    args = {
        "send": ["send", "CS-1", "Reset", '{"type": "Immediate"}'],
        "gateway": ["gateway", "--port", str(free_port()), "--spool", str(tmp_path / "spool")],
        "worker": ["worker", "--web-port", str(free_port()), "--data-dir", str(tmp_path / "w")],
    }[command]
    wrong = f"wrong-{secrets.token_urlsafe(8)}"
    line = _one_line([*args, "--kafka-config", str(secured.properties(user, password=wrong))])
    assert f"refused the login of '{user}' (SCRAM-SHA-512)" in line, line
    assert wrong not in line and secured.passwords[user] not in line

    line = _one_line([*args, "--kafka-config", str(secured.properties(user, ca=secured.root / "other" / "ca.pem"))])
    assert "has a TLS certificate that the CA in" in line and "does not vouch for" in line, line

    stranger = secured.properties("stranger")  # logs in, and is granted nothing
    line = _one_line([*args, "--kafka-config", str(stranger)])
    needed = {"send": f"may not Write topic {PREFIX}ocpp.commands",
              "gateway": f"may not Write topic {PREFIX}ocpp.frames",
              "worker": f"may not Read topic {PREFIX}ocpp.frames"}[command]  # fmt: skip
    assert "User:stranger" in line and needed in line, line
    assert secured.passwords["stranger"] not in line


def test_a_user_without_one_acl_is_told_which(secured: Secured, tmp_path: Path) -> None:
    """The controller's principal may do what the controller does, not what the gateway does."""
    line = _one_line(["gateway", "--port", str(free_port()), "--spool", str(tmp_path / "spool"),
                      "--kafka-config", str(secured.properties("controller"))])  # fmt: skip
    assert f"User:controller may not Write topic {PREFIX}ocpp.frames" in line, line
    assert f"Read topic {PREFIX}ocpp.commands" in line and f"Read group {PREFIX}twin-gateway" in line, line
    assert "twin kafka acls --process gateway" in line


def test_security_without_a_cluster_or_with_bad_settings_is_one_line(tmp_path: Path) -> None:
    env = {"TWIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TWIN_KAFKA_USERNAME": "u", "TWIN_KAFKA_PASSWORD": "p-secret"}
    line = _one_line(["gateway", "--port", str(free_port())], env=env)
    assert "the embedded broker speaks PLAINTEXT only" in line and "p-secret" not in line
    line = _one_line(["send", "CS-1", "Reset", '{"type": "Immediate"}', "-b", "127.0.0.1:1",
                      "--kafka-security-protocol", "SASL_SSL", "--kafka-username", "u"])  # fmt: skip
    assert "SASL_SSL needs a username and a password" in line, line
    line = _one_line(["send", "CS-1", "Reset", '{"type": "Immediate"}', "-b", "127.0.0.1:1",
                      "--kafka-security-protocol", "TLS"])  # fmt: skip
    assert "'TLS' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL" in line, line
    line = _one_line(["send", "CS-1", "Reset", '{"type": "Immediate"}', "--kafka-config", str(tmp_path / "none")])
    assert f"cannot read the Kafka client properties {tmp_path / 'none'}" in line, line


def test_client_properties_as_kafkas_clients_and_librdkafka_write_them(tmp_path: Path) -> None:
    java = tmp_path / "java.properties"
    java.write_text(
        "bootstrap.servers=kafka-1:9093,kafka-2:9093\nsecurity.protocol = SASL_SSL\nsasl.mechanism: PLAIN\n"
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \\\n"
        '    username="KEY" password="se\\"cret";\n'
        "ssl.truststore.type=PEM\nssl.truststore.location=/etc/ca.pem\nssl.endpoint.identification.algorithm=\n"
        "# a comment\n! another\nsession.timeout.ms=45000\n"
    )
    assert from_properties(java) == {
        "bootstrap": "kafka-1:9093,kafka-2:9093", "protocol": "SASL_SSL", "mechanism": "PLAIN", "username": "KEY",
        "password": 'se"cret', "ca_file": "/etc/ca.pem", "check_hostname": False,
    }  # fmt: skip
    assert Settings.load(kafka_config=str(java)).bootstrap == "kafka-1:9093,kafka-2:9093"
    assert Settings.load(kafka_config=str(java), bootstrap="b:1").bootstrap == "b:1", "the flag wins"
    librdkafka = tmp_path / "rd.properties"
    librdkafka.write_text("security.protocol=SSL\nssl.ca.location=/ca.pem\nssl.certificate.location=/c.pem\n"
                          "ssl.key.location=/k.pem\nssl.key.password=kp\n")  # fmt: skip
    assert from_properties(librdkafka) == {"protocol": "SSL", "ca_file": "/ca.pem", "cert_file": "/c.pem",
                                           "key_file": "/k.pem", "key_password": "kp"}  # fmt: skip
    jks = tmp_path / "jks.properties"
    jks.write_text("ssl.truststore.type=JKS\nssl.truststore.location=/t.jks\n")
    with pytest.raises(KafkaSecurityError, match="ssl.truststore.type JKS is not read"):
        from_properties(jks)
    # the flags and variables over the file; what is implied when no protocol is given
    pw = tmp_path / "pw"
    pw.write_text("only-the-password\n")
    security = from_settings(Settings(kafka_username="u", kafka_credentials=str(pw), kafka_ca=""))
    assert (security.protocol, security.mechanism, security.password) == ("SASL_SSL", "PLAIN", "only-the-password")
    assert "only-the-password" not in repr(security) + security.describe()
    assert "only-the-password" not in repr(Settings(kafka_password="only-the-password"))
    assert from_settings(Settings()).aiokafka() == {} and from_settings(Settings()).faust() == {}


def test_twin_kafka_acls_for_an_operators_cluster() -> None:
    argv = ["kafka", "acls", "--prefix", "prod.", "--principal", "gateway=User:gw-1", "-b", "kafka-1:9093"]
    out = subprocess.run([*TWIN, *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "# gateway, as User:gw-1" in lines
    start = "kafka-acls.sh --bootstrap-server kafka-1:9093 --command-config admin.properties --add"
    assert (f"{start} --allow-principal 'User:gw-1' --operation Write --topic 'prod.ocpp.frames'  "
            "# every frame captured, and CommandUndelivered") in lines  # fmt: skip
    assert any("'User:gw-1' --operation Read --group 'prod.twin-gateway' " in line for line in lines)
    assert any("'User:worker' --operation Create --operation Read --operation Write --operation Describe --topic "
               "'prod.twin-worker' --resource-pattern-type prefixed" in line for line in lines)  # fmt: skip
    assert any("'User:controller' --operation Write --topic 'prod.ocpp.commands'" in line for line in lines)
    got = json.loads(subprocess.run([*TWIN, "kafka", "acls", "--process", "controller", "--json"],
                                    capture_output=True, text=True, timeout=60).stdout)  # fmt: skip
    assert {(a["resource"], a["name"], tuple(a["operations"])) for a in got["acls"]} == {
        ("topic", "twin.state", ("Read",)), ("topic", "grid.signals", ("Read",)),
        ("topic", "ocpp.commands", ("Write",)), ("topic", "control.plans", ("Write",)),
    }  # fmt: skip
    assert {a["principal"] for a in got["acls"]} == {"User:controller"}
    bad = subprocess.run([*TWIN, "kafka", "acls", "--process", "nope"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no such process nope" in bad.stderr


def test_kafka_security_describes_itself_without_secrets() -> None:
    assert KafkaSecurity("SASL_SSL", "PLAIN", "gw", "p4ss", ca_file="/ca.pem").describe() == (
        "SASL_SSL, PLAIN as gw, CA /ca.pem")
    security = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-256", "gw", "p4ss")
    assert security.describe() == "SASL_PLAINTEXT, SCRAM-SHA-256 as gw"
    assert "p4ss" not in repr(security) and security.secrets() == ["p4ss"]
    credentials = security.faust()["broker_credentials"]
    assert "p4ss" not in repr(credentials)


async def test_twin_up_hands_its_kafka_config_to_every_process_and_prints_no_secret(
    secured: Secured, tmp_path: Path
) -> None:
    from tests.test_up import get
    from tests.up import twin_up

    config = secured.properties("admin")
    with twin_up(tmp_path, "--bootstrap", secured.bootstrap, "--kafka-config", str(config), "--no-dashboard") as up:
        assert set(up.urls["pids"]) == {"gateway", "worker", "controller", "ocpi"}, "no broker of its own"
        async with raw_station(up.urls["stations"].replace("<station id>", "UP-SEC")) as station:
            assert (await station.ask(BOOT, timeout=15))[0] == 3
            deadline = time.monotonic() + 90
            while not any(s["station_id"] == "UP-SEC" for s in get(up.urls["api"], up.token)["stations"]):
                assert time.monotonic() < deadline, up.stderr.read_text()[-3000:]
                time.sleep(0.5)
        shown = orjson.dumps(up.urls).decode()
    texts = {p.name: p.read_text(errors="replace") for p in (tmp_path / "twin-data" / "logs").glob("*.log")}
    assert {"gateway.log", "worker.log", "controller.log", "ocpi.log"} <= set(texts)
    texts |= {"stderr": up.stderr.read_text(), "--json": shown}
    _scan(texts, list(secured.passwords.values()))
