"""Authenticated, authorised HTTP: the token store and its verdicts (pure), then a real worker
process behind a token store (each role, bad tokens, a property test over paths and tokens:
nothing readable without a token; tokens added and revoked while it runs; an operator's
command on ocpp.commands and in ocpp.frames with who asked), HTTPS, the refusals, twin ocpi's
/status, the CLI's readers, and the dashboard in AppTest with and without a token."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer

from tests.conftest import fresh_prefix
from tests.scenarios import SCENARIOS
from twin import envelope, pki, tokens
from twin.broker import ensure_topics, free_port
from twin.cli.door import http_door
from twin.settings import Settings

TWIN = [sys.executable, "-m", "twin"]
ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboards" / "entry" / "app.py"
"""What twin dashboard runs (AppTest of dashboards/app.py itself would see Streamlit's first kind of
multipage app, where a page's URL runs the page alone: see the entry's docstring)."""


# -- pure --------------------------------------------------------------------------------------------


def made(*pairs: tuple[str, str]) -> tuple[list[tokens.Entry], dict[str, str]]:
    secrets_of = {name: tokens.new_token() for name, _ in pairs}
    return [tokens.entry(name, role, secrets_of[name]) for name, role in pairs], secrets_of


def test_the_store_keeps_hashes_and_judges_by_role() -> None:
    entries, secret = made(("v", "viewer"), ("o", "operator"), ("a", "admin"))
    assert all(secret[e.name] not in tokens.dumps(entries).decode() for e in entries)
    assert entries[0].salt != entries[1].salt and len(entries[0].digest) == 64
    header = {name: f"Bearer {token}" for name, token in secret.items()}
    read, command, manage = ("GET", "/v1/stations"), ("POST", "/v1/stations/CS-1/commands"), ("GET", "/v1/tokens")
    assert [tokens.verdict(entries, *read, header[n]).status for n in "voa"] == [200, 200, 200]
    assert [tokens.verdict(entries, *command, header[n]).status for n in "voa"] == [403, 200, 200]
    assert [tokens.verdict(entries, *manage, header[n]).status for n in "voa"] == [403, 403, 200]
    assert tokens.verdict(entries, *read, None).status == 401
    assert tokens.verdict(entries, *read, f"Token {secret['a']}").status == 401  # OCPI's scheme is not ours
    assert tokens.verdict(entries, *read, f"Bearer {secret['a']}x").status == 401
    assert tokens.verdict(entries, *read, f"bearer  {secret['v']} ").who == entries[0]
    assert tokens.verdict(entries, *command, header["v"]).error == "'v' is a viewer; this needs an operator"


@settings(max_examples=200)
@given(st.text(max_size=80))
def test_no_made_up_token_is_anyones(guess: str) -> None:
    entries, secret = made(("a", "admin"))
    assert tokens.find(entries, guess) is None or guess == secret["a"]
    assert tokens.verdict(entries, "GET", "/v1/stations", f"Bearer {guess}").status == 401


def test_names_and_roles_are_checked(tmp_path: Path) -> None:
    store = tokens.TokenStore(tmp_path / "t.json")
    with pytest.raises(tokens.TokenError, match="role"):
        store.add("x", "root")
    with pytest.raises(tokens.TokenError, match="name"):
        store.add("a b", "viewer")
    store.add("x", "viewer")
    with pytest.raises(tokens.TokenError, match="already"):
        store.add("x", "admin")
    assert oct((tmp_path / "t.json").stat().st_mode & 0o777) == "0o600"


def test_a_running_reader_sees_the_file_change(tmp_path: Path) -> None:
    """What a running door does: the store read again when another process changed the file."""
    path = tmp_path / "t.json"
    door, cli = tokens.Guard(tokens.TokenStore(path)), tokens.TokenStore(path)
    token, _ = cli.add("late", "viewer")
    assert door.check("GET", "/v1/stations", f"Bearer {token}").status == 200
    cli.revoke("late")
    assert door.check("GET", "/v1/stations", f"Bearer {token}").status == 401
    assert door.counts == {"unauthenticated": 1, "forbidden": 0, "allowed": 1}
    path.write_text("{not json")
    assert door.check("GET", "/v1/stations", f"Bearer {token}").status == 401  # a broken store lets nobody in


# -- a real worker behind a token store --------------------------------------------------------------


class Api:
    """A worker and a gateway on the session's broker, topics of their own, a token store."""

    def __init__(self, bootstrap: str, workdir: Path) -> None:
        self.workdir, self.bootstrap = workdir, bootstrap
        self.prefix = fresh_prefix("auth")
        self.settings = Settings(bootstrap=bootstrap, topic_prefix=self.prefix, partitions=2)
        self.env = {**os.environ, "TWIN_TOPIC_PREFIX": self.prefix, "TWIN_PARTITIONS": "2"}
        self.env.pop(tokens.STORE_ENV, None)
        self.env.pop(tokens.TOKEN_ENV, None)
        self.store_path = workdir / "api-tokens.json"
        self.store = tokens.TokenStore(self.store_path)
        self.token = {role: self.store.add(role, role)[0] for role in tokens.ROLES}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.station = ""

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(TWIN + args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text()[-3000:]

    def ask(self, path: str, token: str | None = None, method: str = "GET", body: Any = None,
            header: str | None = None) -> tuple[int, Any]:  # fmt: skip
        headers = {"Authorization": header} if header is not None else tokens.headers(token) if token else {}
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except (urllib.error.URLError, OSError) as exc:  # not up (yet)
            return 0, str(exc)

    def until(self, what: str, probe: Any, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                assert proc.poll() is None, f"a process stopped:\n{self.log('worker')}\n{self.log('gateway')}"
            value = probe()
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}\n{self.log('worker')}")


@pytest.fixture(scope="module")
def api(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    a = Api(broker.bootstrap, tmp_path_factory.mktemp("auth"))
    ensure_topics(a.settings, broker.bootstrap)
    script = SCENARIOS["v2g"][0]()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for record in script.records:
        producer.send(a.settings.topics.frames, key=record["station_id"].encode(), value=envelope.dumps(record))
    producer.flush()
    producer.close()
    a.station = script.station
    a.spawn("worker", ["worker", "-b", broker.bootstrap, "--web-port", str(a.port), "--data-dir",
                       str(a.workdir / "worker"), "--api-tokens", str(a.store_path)])  # fmt: skip
    a.spawn("gateway", ["gateway", "-b", broker.bootstrap, "--port", str(free_port())])
    try:
        a.until("the station's twin", lambda: a.ask(f"/v1/stations/{script.station}", a.token["viewer"])[0] == 200)
        yield a
    finally:
        for proc in a.procs:
            proc.terminate()
        for proc in a.procs:
            proc.wait(30)


def test_each_role_and_bad_tokens(api: Api) -> None:
    station = api.station
    for role in tokens.ROLES:
        status, body = api.ask(f"/v1/stations/{station}", api.token[role])
        assert status == 200 and body["station_id"] == station
        assert api.ask("/v1/whoami", api.token[role]) == (200, {"name": role, "role": role, "open": False})
        for path in ("/v1/stations", "/v1/fleet/summary", "/v1/sites", f"/v1/stations/{station}/frames"):
            assert api.ask(path, api.token[role])[0] == 200, path
    assert api.ask("/v1/tokens", api.token["viewer"])[0] == 403
    assert api.ask("/v1/tokens", api.token["operator"])[0] == 403
    listed = api.ask("/v1/tokens", api.token["admin"])[1]["tokens"]
    assert {t["name"] for t in listed} >= set(tokens.ROLES) and "digest" not in json.dumps(listed)
    for bad in (None, "Bearer", "Bearer nope", f"Token {api.token['admin']}", f"Basic {api.token['admin']}"):
        status, body = api.ask(f"/v1/stations/{station}", header=bad) if bad else api.ask(f"/v1/stations/{station}")
        assert status == 401 and set(body) == {"error"}, (bad, body)
    before = api.ask("/v1/metrics", api.token["viewer"])[1]["http"]
    api.ask("/v1/stations")
    api.ask("/v1/tokens", api.token["viewer"])
    after = api.ask("/v1/metrics", api.token["viewer"])[1]["http"]
    assert after["unauthenticated"] == before["unauthenticated"] + 1
    assert after["forbidden"] == before["forbidden"] + 1
    assert api.ask("/v1/nothing-here", api.token["viewer"]) == (404, {"error": "Not Found"})


PATHS = st.one_of(
    st.sampled_from(["/", "/v1/stations", "/v1/fleet/summary", "/v1/sites", "/v1/tokens", "/v1/whoami",
                     "/v1/metrics", "/v1/protocols/ocpp-21", "/v1/protocols/ocpp-21/messages", "/table/twins/",
                     "/router/", "/stats/", "/v1/stations/CS-V2G-1", "/v1/stations/CS-V2G-1/frames",
                     "/v1/stations/CS-V2G-1/commands", "/v1/tokens/admin"]),  # fmt: skip
    st.lists(st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=12), min_size=1,
             max_size=4).map(lambda parts: "/v1/" + "/".join(parts)),  # fmt: skip
)
HEADERS = st.one_of(
    st.none(),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=60).map(lambda t: f"Bearer {t}"),
    st.just("Bearer twin_revoked-long-ago"),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=PATHS, header=HEADERS, method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "HEAD"]))
def test_nothing_is_readable_without_a_token(api: Api, path: str, header: str | None, method: str) -> None:
    request = urllib.request.Request(api.url + urllib.request.quote(path), method=method,
                                     headers={"Authorization": header} if header is not None else {})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raise AssertionError(f"{method} {path} answered {response.status} to {header!r}")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401, (method, path, header, exc.code)
        body = exc.read()
        if method != "HEAD":
            assert set(json.loads(body)) == {"error"}


def test_a_token_added_while_it_runs_works_and_a_revoked_one_stops(api: Api) -> None:
    added = subprocess.run([*TWIN, "token", "add", "late", "--role", "viewer", "--api-tokens", str(api.store_path),
                            "--json"], capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    token = json.loads(added.stdout)["token"]
    started = time.monotonic()
    api.until("the new token let in", lambda: api.ask("/v1/stations", token)[0] == 200, timeout=5)
    assert time.monotonic() - started < 3
    subprocess.run([*TWIN, "token", "revoke", "late", "--api-tokens", str(api.store_path)], capture_output=True,
                   timeout=60, check=True)  # fmt: skip
    api.until("the revoked token refused", lambda: api.ask("/v1/stations", token)[0] == 401, timeout=5)
    # and through the API, by an admin
    status, body = api.ask("/v1/tokens", api.token["admin"], "POST", {"name": "viaapi", "role": "operator"})
    assert status == 201 and body["role"] == "operator" and body["token"].startswith("twin_")
    assert api.ask("/v1/whoami", body["token"])[1]["name"] == "viaapi"
    assert api.ask("/v1/tokens/viaapi", api.token["admin"], "DELETE") == (200, {"revoked": "viaapi"})
    assert api.ask("/v1/whoami", body["token"])[0] == 401
    assert api.ask("/v1/tokens", api.token["operator"], "POST", {"name": "sneaky", "role": "admin"})[0] == 403


def records(bootstrap: str, topic: str, wanted: Any, timeout: float = 30) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=1000)  # fmt: skip
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            seen += [json.loads(m.value) for m in consumer]
            if any(wanted(r) for r in seen):
                return [r for r in seen if wanted(r)]
    finally:
        consumer.close()
    raise AssertionError(f"nothing wanted on {topic}: {seen[-5:]}")


def test_an_operators_command_is_in_the_log_with_who_asked(api: Api) -> None:
    body = {"action": "Reset", "payload": {"type": "Immediate"}}
    assert api.ask("/v1/stations/CS-AUDIT/commands", api.token["viewer"], "POST", body)[0] == 403
    assert api.ask("/v1/stations/CS-AUDIT/commands", None, "POST", body)[0] == 401
    status, cmd = api.ask("/v1/stations/CS-AUDIT/commands", api.token["operator"], "POST", body)
    assert status == 202 and cmd["requested_by"] == "operator" and cmd["station_id"] == "CS-AUDIT"
    assert cmd["payload"]["customData"] == {"vendorId": "twin", "commandId": cmd["command_id"],
                                           "requestedBy": "operator"}  # fmt: skip
    queued = records(api.bootstrap, api.settings.topics.commands, lambda r: r["command_id"] == cmd["command_id"])
    assert queued == [cmd]
    # the gateway has no CS-AUDIT connected: its CommandUndelivered record in ocpp.frames says who asked
    undelivered = records(api.bootstrap, api.settings.topics.frames,
                          lambda r: r.get("action") == "CommandUndelivered"
                          and r["payload"].get("command_id") == cmd["command_id"])  # fmt: skip
    assert undelivered[0]["payload"]["requested_by"] == "operator"
    for bad, why in (({"action": "Reset", "payload": {"type": "Sometime"}}, "type"),
                     ({"action": "BootNotification", "payload": {}}, "sent by stations"),
                     ({"payload": {}}, "action"), ([1], "JSON object")):  # fmt: skip
        status, answer = api.ask("/v1/stations/CS-AUDIT/commands", api.token["operator"], "POST", bad)
        assert status == 400 and why in answer["error"], answer


def test_the_cli_sends_its_token(api: Api) -> None:
    env = {**api.env}
    done = subprocess.run([*TWIN, "fleet", "--api", api.url, "--json"], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip
    assert done.returncode == 1 and "401" in done.stderr and "--api-token" in done.stderr
    done = subprocess.run([*TWIN, "fleet", "--api", api.url, "--json", "--api-token", api.token["viewer"]],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert done.returncode == 0 and json.loads(done.stdout)["summary"]["stations"] >= 1
    done = subprocess.run([*TWIN, "sites", "--api", api.url, "--json"], capture_output=True, text=True,
                          env={**env, tokens.TOKEN_ENV: api.token["viewer"]}, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_dashboard_through_the_worker(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """AppTest of the app against the worker: nothing before a token, a viewer reads and sends
    nothing, an operator's command form queues a command under their name."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TWIN_API", api.url)
    monkeypatch.setenv("TWIN_ARCHIVE", str(ROOT / "datasets" / "sample"))
    monkeypatch.setenv(tokens.STORE_ENV, str(api.store_path))
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert [t.value for t in at.title] == ["twin"] and [i.label for i in at.text_input] == ["Token"]
    at.text_input[0].input("twin_wrong")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Unknown or revoked token."] and [t.value for t in at.title] == ["twin"]
    at.text_input[0].input(api.token["viewer"])
    at.button[0].click().run()
    assert not at.exception and at.title[0].value == "Fleet"
    assert not [e for e in at.sidebar.expander if e.label in ("Send a command", "Tokens")]

    op = AppTest.from_file(str(APP), default_timeout=120)
    op.session_state["twin_token"] = api.token["operator"]
    op.run()
    assert [e.label for e in op.sidebar.expander] == ["Send a command"]
    op.text_input(key="command_station").input("CS-DASH")
    op.text_input(key="command_action").input("Reset")
    op.text_area(key="command_payload").input('{"type": "OnIdle"}')
    next(b for b in op.button if b.label == "Queue it").click().run()
    assert not op.exception and [s.value for s in op.success][0].startswith("Queued as command")
    queued = records(api.bootstrap, api.settings.topics.commands, lambda r: r["station_id"] == "CS-DASH")
    assert queued[0]["requested_by"] == "operator" and queued[0]["payload"]["type"] == "OnIdle"

    admin = AppTest.from_file(str(APP), default_timeout=120)
    admin.session_state["twin_token"] = api.token["admin"]
    admin.run()
    assert [e.label for e in admin.sidebar.expander] == ["Send a command", "Tokens"]


def test_the_dashboard_without_a_store_is_open(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TWIN_API", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("TWIN_ARCHIVE", str(ROOT / "datasets" / "sample"))
    monkeypatch.delenv(tokens.STORE_ENV, raising=False)
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception and at.title[0].value == "Fleet"
    assert "Open: no token store" in at.sidebar.caption[0].value


# -- doors that refuse to open, HTTPS, twin ocpi ------------------------------------------------------


def test_beyond_loopback_without_tokens_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "TWIN_HOST": "0.0.0.0"}
    env.pop(tokens.STORE_ENV, None)
    for argv in (["worker", "--web-port", str(free_port()), "-b", "127.0.0.1:1"],
                 ["ocpi", "--port", str(free_port()), "-b", "127.0.0.1:1"],
                 ["dashboard", "--port", str(free_port()), "--api", "http://127.0.0.1:1"]):  # fmt: skip
        done = subprocess.run([*TWIN, *argv], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 1, (argv, done.stderr)
        assert "beyond loopback" in done.stderr and "--insecure" in done.stderr and "Traceback" not in done.stderr
    # on loopback with no store: open (the tests that start workers rely on it), and said so
    monkeypatch.delenv(tokens.STORE_ENV, raising=False)
    door = http_door("127.0.0.1", None, None, None, False, "--web-port")
    assert door.guard.open and "open: no token store" in door.said
    assert http_door("0.0.0.0", None, None, None, True, "--web-port").said.startswith("OPEN to anyone")


def test_https_with_the_pki(broker: Any, tmp_path: Path) -> None:
    pki.init(tmp_path / "pki", [])
    store = tokens.TokenStore(tmp_path / "t.json")
    token, _ = store.add("v", "viewer")
    port = free_port()
    env = {**os.environ, "TWIN_TOPIC_PREFIX": f"tls{os.getpid()}.", "TWIN_PARTITIONS": "1"}
    env.pop(tokens.STORE_ENV, None)
    log = tmp_path / "worker.log"
    argv = [*TWIN, "worker", "-b", broker.bootstrap, "--web-port", str(port), "--data-dir", str(tmp_path / "w"),
            "--api-tokens", str(store.path), "--tls-cert", str(tmp_path / "pki" / "csms.pem"),
            "--tls-key", str(tmp_path / "pki" / "csms.key")]  # fmt: skip
    with log.open("wb") as out:
        worker = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    trust = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca.pem"))
    try:
        deadline = time.monotonic() + 90
        while True:
            assert worker.poll() is None, log.read_text()[-3000:]
            request = urllib.request.Request(f"https://127.0.0.1:{port}/v1/whoami", headers=tokens.headers(token))
            try:
                with urllib.request.urlopen(request, timeout=5, context=trust) as response:
                    assert json.loads(response.read())["name"] == "v"
                    break
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/v1/stations", timeout=5, context=trust)
        assert refused.value.code == 401
        assert f"https://127.0.0.1:{port}" in log.read_text()
    finally:
        worker.terminate()
        worker.wait(30)


def test_ocpi_status_wants_a_token_and_ocpi_keeps_its_own(api: Api) -> None:
    port = free_port()
    ocpi = api.spawn("ocpi", ["ocpi", "-b", api.bootstrap, "--port", str(port), "--data-dir",
                              str(api.workdir / "ocpi"), "--api-tokens", str(api.store_path),
                              "--archive", str(ROOT / "datasets" / "sample")])  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def status(path: str, header: dict[str, str]) -> int:
        try:
            with urllib.request.urlopen(urllib.request.Request(base + path, headers=header), timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return 0

    try:
        api.until("twin ocpi", lambda: status("/status", {}) != 0, timeout=60)
        assert status("/status", {}) == 401
        assert status("/status", tokens.headers(api.token["viewer"])) == 200
        assert status("/ocpi/versions", tokens.headers(api.token["admin"])) == 401  # OCPI's: Token A/C, not ours
        assert status("/datex2/v3/afir/status?format=json", {}) == 200  # a public feed
    finally:
        ocpi.terminate()
        ocpi.wait(30)
        api.procs.remove(ocpi)
