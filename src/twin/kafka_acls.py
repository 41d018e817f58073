"""The Kafka ACLs each twin process needs, and the check a process makes of them at start.

One table (:func:`needs`) serves three readers: ``twin kafka acls`` prints it for an
operator's cluster (``kafka-acls.sh`` lines or JSON), the tests grant exactly it on a
secured Kafka and run the whole product under it, and a process started on a secured
cluster checks it (:func:`missing`) before it begins, so that a principal without an ACL it
needs is one line naming the ACL, not a retry loop or a traceback an hour later.

Operations are Kafka's own names. Read and Write on a topic imply Describe; a consumer that
commits its position needs Read on its group. Create is asked for where a process creates
topics: the worker's Faust app makes its changelog and leader topics (names prefixed by its
group id); the product's topics are made by whichever process may (``ensure_topics``), or by
the operator beforehand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twin.kafka_security import KafkaSecurity
    from twin.settings import Settings

PROCESSES = ("gateway", "worker", "controller", "ven", "ocpi", "operator")
"""``operator``: the CLI an operator runs: twin send, tariff, control limit and explain, rebuild
--verify."""


@dataclass(frozen=True)
class Acl:
    resource: str
    """``topic``, ``group`` or ``cluster``."""
    name: str
    operations: tuple[str, ...]
    pattern: str = "literal"
    """``literal`` or ``prefixed`` (every name that starts with ``name``)."""
    why: str = ""

    def said(self) -> str:
        if self.resource == "cluster":
            kind = "the cluster"
        elif self.pattern == "prefixed":
            kind = f"{self.resource}s prefixed {self.name}"
        else:
            kind = f"{self.resource} {self.name}"
        return f"{'/'.join(self.operations)} {kind}"


def needs(process: str, settings: Settings) -> list[Acl]:
    """The ACLs ``process`` (one of :data:`PROCESSES`) needs under ``settings``' topic prefix."""
    t, prefix = settings.topics, settings.topic_prefix
    table: dict[str, list[Acl]] = {
        "gateway": [
            Acl("topic", t.frames, ("Write",), why="every frame captured, and CommandUndelivered"),
            Acl("topic", t.deadletter, ("Write",), why="frames that cannot be parsed"),
            Acl("topic", t.commands, ("Read",), why="CSMS-initiated calls to deliver"),
            Acl("topic", t.connections, ("Read", "Write"), why="which gateway holds each station"),
            Acl("group", f"{prefix}twin-gateway", ("Read",), why="its position on ocpp.commands"),
            Acl("group", f"{prefix}twin-gateway.undelivered", ("Read",), why="who says a command is undelivered"),
        ],
        "worker": [
            Acl("topic", t.frames, ("Read",), why="folded into twins, and archived"),
            Acl("topic", t.state, ("Write",), why="each changed twin"),
            Acl("topic", t.alerts, ("Write",), why="alerts the fold raises"),
            Acl("topic", t.commands, ("Write",), why="commands sent through the API"),
            Acl("topic", t.plans, ("Read",), why="/v1/sites/{id}/plan"),
            Acl("topic", t.signals, ("Read",), why="/v1/sites, and archived"),
            Acl("topic", f"{prefix}twin-worker", ("Create", "Read", "Write", "Describe"), "prefixed",
                why="Faust's changelog and leader topics"),
            Acl("group", f"{prefix}twin-worker", ("Read",), why="the workers' group"),
        ],
        "controller": [
            Acl("topic", t.state, ("Read",), why="the twins it plans for"),
            Acl("topic", t.signals, ("Read",), why="the limits in force"),
            Acl("topic", t.commands, ("Write",), why="charging profiles, CostUpdated"),
            Acl("topic", t.plans, ("Write",), why="each plan with its reasons"),
        ],
        "ven": [
            Acl("topic", t.signals, ("Write",), why="every OpenADR event version"),
            Acl("topic", t.alerts, ("Write",), why="rejected signals"),
        ],
        "ocpi": [
            Acl("topic", t.state, ("Read",), why="locations and EVSE status"),
            Acl("topic", t.frames, ("Read",), why="sessions, CDRs, command results"),
            Acl("topic", t.commands, ("Write",), why="OCPI commands"),
        ],
        "operator": [
            Acl("topic", t.commands, ("Write",), why="twin send, twin tariff"),
            Acl("topic", t.frames, ("Read",), why="twin rebuild --verify, twin tariff's answers"),
            Acl("topic", t.signals, ("Write",), why="twin control limit"),
            Acl("topic", t.plans, ("Read",), why="twin control explain"),
        ],
    }
    if process not in table:
        raise ValueError(f"no such process {process!r}: one of {', '.join(PROCESSES)}")
    return table[process]


def kafka_acls_lines(acls: list[Acl], principal: str, bootstrap: str, command_config: str) -> list[str]:
    """``kafka-acls.sh`` command lines granting ``acls`` to ``principal``."""
    lines = []
    for acl in acls:
        target = {"topic": f"--topic '{acl.name}'", "group": f"--group '{acl.name}'", "cluster": "--cluster"}
        parts = [f"kafka-acls.sh --bootstrap-server {bootstrap} --command-config {command_config} --add",
                 f"--allow-principal '{principal}'", *(f"--operation {op}" for op in acl.operations),
                 target[acl.resource]]  # fmt: skip
        if acl.pattern == "prefixed":
            parts.append("--resource-pattern-type prefixed")
        lines.append(" ".join(parts))
    return lines


def as_json(acl: Acl, principal: str) -> dict[str, Any]:
    return {"principal": principal, **asdict(acl), "operations": list(acl.operations)}


_OPS = {"Read": "READ", "Write": "WRITE", "Create": "CREATE", "Describe": "DESCRIBE", "Alter": "ALTER",
        "DescribeConfigs": "DESCRIBE_CONFIGS", "IdempotentWrite": "IDEMPOTENT_WRITE"}  # fmt: skip


def create(admin: Any, acls: list[Acl], principal: str) -> None:
    """Grant ``acls`` to ``principal`` with kafka-python's admin client (the tests, ``--apply``)."""
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    made = []
    for acl in acls:
        pattern = ResourcePattern(ResourceType[acl.resource.upper()],
                                  acl.name if acl.resource != "cluster" else "kafka-cluster",
                                  ACLResourcePatternType[acl.pattern.upper()])  # fmt: skip
        made += [ACL(principal, "*", ACLOperation[_OPS[op]], ACLPermissionType.ALLOW, pattern) for op in acl.operations]
    result = admin.create_acls(made)
    if result.get("failed"):
        acl, error = result["failed"][0]
        raise RuntimeError(f"creating ACL {acl} failed: {error}")


def missing(acls: list[Acl], bootstrap: str, security: KafkaSecurity) -> list[str]:
    """What the principal of ``security`` lacks of ``acls`` on the cluster, each said ("may not
    Write topic ocpp.frames", "finds no topic ocpp.commands ...").

    Asks the broker what the principal may do (Metadata's and DescribeGroups' authorized
    operations, which need no rights of their own). A broker that does not say (no
    authorizer, or not Kafka) lacks nothing here."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **security.kafka_python())
    lacking: list[str] = []
    try:
        topics = [a for a in acls if a.resource == "topic"]
        # a prefixed grant is asked of one name under it: the worker's changelog
        names = [a.name + ("-twins-changelog" if a.pattern == "prefixed" else "") for a in topics]
        described = {d["name"]: d for d in admin.describe_topics(names)} if names else {}
        for acl, name in zip(topics, names, strict=True):
            found = described.get(name, {})
            allowed = set(found.get("authorized_operations") or ())
            if found.get("error_code") == 29:  # TOPIC_AUTHORIZATION_FAILED: not even Describe
                allowed = set()
            elif not allowed:
                continue
            lack = [op for op in acl.operations if _OPS[op] not in allowed]
            if lack:
                lacking.append("may not " + Acl(acl.resource, acl.name, tuple(lack), acl.pattern).said())
            elif found.get("error_code") == 3 and acl.pattern == "literal":
                lacking.append(f"finds no topic {acl.name} (create it, or grant Create on it)")
        for acl in (a for a in acls if a.resource == "group"):
            lack = _group_lacks(admin, acl)
            if lack:
                lacking.append("may not " + Acl(acl.resource, acl.name, tuple(lack)).said())
    finally:
        admin.close()
    return lacking


def _group_lacks(admin: Any, acl: Acl) -> list[str]:
    """What of ``acl`` (a group) the principal lacks: all of it where it may not even find the
    group's coordinator (which needs Describe), else what the group's authorized operations
    leave out (a group that does not exist yet says none: nothing is known lacking)."""
    import time

    from kafka.errors import CoordinatorNotAvailableError, GroupAuthorizationFailedError

    deadline = time.monotonic() + 10
    while True:
        try:
            found = admin.describe_groups([acl.name], include_authorized_operations=True).get(acl.name) or {}
            break
        except GroupAuthorizationFailedError:
            return list(acl.operations)
        except CoordinatorNotAvailableError:  # the offsets topic is made at the first group's use
            if time.monotonic() > deadline:
                return []
            time.sleep(0.5)
    allowed = set(found.get("authorized_operations") or ())
    return [op for op in acl.operations if allowed and _OPS[op] not in allowed]


def check(process: str, settings: Settings, bootstrap: str, acls: list[Acl] | None = None) -> str | None:
    """One line saying what ``process``'s principal may not do that it needs, or None (also
    where the cluster is not secured: PLAINTEXT clusters are not asked)."""
    from twin import kafka_security

    security = kafka_security.current(settings)
    if security.protocol == "PLAINTEXT":
        return None
    lacking = missing(acls if acls is not None else needs(process, settings), bootstrap, security)
    if not lacking:
        return None
    return (f"on the Kafka cluster at {bootstrap}, {security.principal} {'; '.join(lacking)}: the {process} needs "
            f"it (`twin kafka acls --process {process}` prints the grants)")  # fmt: skip
