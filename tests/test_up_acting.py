"""``twin up`` acting on the fleet from outside, as a user starts it: one ``twin up --simulate
5 --ocpi-token-a T --openadr-vtn URL ...`` (a real process tree on free ports) for the module.
An eMSP registers at the OCPI base URL with the token A twin up printed, reads the simulated
fleet's locations page by page (parsed by extrawest-ocpi's independent models) and reserves an
EVSE of a simulated station, whose answer comes back as a CommandResult; the test VTN
(validated against the OpenADR 3.1.1 OpenAPI file) has a limit for the first site's EAN, and
twin up's VEN brings it to the worker's site API. The eMSP and the VTN are test_ocpi's and
test_grid_vtn's; the stack is stopped by its pid, and whatever it left is killed by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.test_grid_vtn import CLIENT_ID, CLIENT_SECRET, EAN_A, GAC_PROGRAM, Vtn, limit_event
from tests.test_ocpi import (
    TOKEN_A,
    Emsp,
    Stack,
    _command,
    _read_all,
    _register_at,
    _result,
    _token,
    ocpi_models,  # noqa: F401  - the fixture, for this module too
)
from tests.test_up import _kill_left, _pids_below, _running, _start_up, get
from twin.broker import free_port

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]
STATIONS = 5
ENV_TOKEN_A = "token-a-from-the-environment"  # --ocpi-token-a wins over it, as for `twin ocpi`
LIMIT_KW = 42.0  # under SITE-0001's static 285 kW
SITE = "SITE-0001"


class UpOcpi(Stack):
    """test_ocpi's Stack as the eMSP's side of the calls, on twin up's `twin ocpi`: its base
    from twin up's output, its logs in twin up's logs directory."""

    def __init__(self, base: str, logs: Path, emsp: Emsp) -> None:
        self.ocpi_base, self.workdir, self.emsp = base, logs, emsp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.token_c: str | None = None
        self.stations = []

    @property
    def base(self) -> str:
        return self.ocpi_base


@dataclass
class Acting:
    process: subprocess.Popen[bytes]
    urls: dict[str, Any]
    below: set[int]
    tmp: Path
    ocpi_port: int
    vtn: Vtn
    event: dict[str, Any]
    ocpi: UpOcpi

    @property
    def api(self) -> str:
        return str(self.urls["api"]).removesuffix("/stations")

    @property
    def said(self) -> str:
        return (self.tmp / "up.stderr").read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def up(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Acting]:
    """The VTN with a GAC program and a limit for SITE-0001's EAN in force now (wall-clock
    time: what the site API asks about), then twin up with its VEN on it."""
    tmp = tmp_path_factory.mktemp("up-acting")
    vtn = Vtn("3.1.1").start()
    emsp = Emsp()
    proc: subprocess.Popen[bytes] | None = None
    below: set[int] = set()
    try:
        program = vtn.program(GAC_PROGRAM)
        began = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = vtn.event(limit_event(program["id"], LIMIT_KW, began, "PT2H", targets=[EAN_A]))
        ocpi_port = free_port()
        env = {**os.environ, "TWIN_OCPI_TOKEN_A": ENV_TOKEN_A}
        for name in ("TWIN_API_TOKENS", "TWIN_API_TOKEN", "TWIN_BOOTSTRAP", "TWIN_SITES", "TWIN_ARCHIVE"):
            env.pop(name, None)  # the stack's own, not the shell's
        proc, urls, below = _start_up(tmp, engine, [
            "--no-dashboard", "--simulate", str(STATIONS), "--speed", "60", "--ocpi-port", str(ocpi_port),
            "--ocpi-token-a", TOKEN_A,
            "--openadr-vtn", vtn.url, "--openadr-client-id", CLIENT_ID, "--openadr-client-secret", CLIENT_SECRET,
        ], env)  # fmt: skip
        ocpi = UpOcpi(f"http://127.0.0.1:{ocpi_port}", tmp / "twin-data" / "logs", emsp)
        yield Acting(proc, urls, below, tmp, ocpi_port, vtn, event, ocpi)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp / "up.stderr").read_text()[-3000:]
        left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in below if _running(pid)}
        assert not left, f"left running after twin up stopped: {left}"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        _kill_left(below | (_pids_below(proc.pid) if proc is not None else set()))
        emsp.stop()
        vtn.close()


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_up_prints_the_ocpi_base_url_and_the_token_a_given(up: Acting) -> None:
    """The OCPI versions URL on --ocpi-port and the token A of --ocpi-token-a (not the
    environment's): that token opens the versions, the environment's does not, and neither is
    on `twin ocpi`'s command line, where `ps` would show it."""
    assert up.urls["ocpi"] == f"http://127.0.0.1:{up.ocpi_port}/ocpi/versions"
    assert up.urls["ocpi_token_a"] == TOKEN_A
    status, _, body = up.ocpi.call("GET", up.urls["ocpi"], TOKEN_A)
    assert status == 200 and body["status_code"] == 1000, body
    assert [v["version"] for v in body["data"]] == ["2.2.1"]
    assert up.ocpi.call("GET", up.urls["ocpi"], ENV_TOKEN_A)[0] == 401
    ocpi = _cmdline(up.urls["pids"]["ocpi"])
    assert "ocpi" in ocpi and TOKEN_A not in " ".join(ocpi)


def test_an_emsp_registers_reads_the_simulated_fleet_and_reserves_an_evse(
    up: Acting, ocpi_models: Any  # noqa: F811  - test_ocpi's fixture, imported above
) -> None:
    """The credentials handshake with the printed token A at the printed URL; every location
    of the simulated fleet, a page of one at a time, with every EVSE of the inventory twin up
    wrote; RESERVE_NOW on a simulated station's EVSE, answered at once and then, the station's
    own answer, as a CommandResult at the eMSP's response_url."""
    from twin.captures import inventory_path

    assert up.ocpi.call("POST", f"{up.ocpi.base}/ocpi/2.2.1/credentials", ENV_TOKEN_A, {})[0] == 401
    up.ocpi.token_c = _register_at(up.ocpi, up.ocpi.emsp, up.ocpi.base)
    assert up.ocpi.token_c != TOKEN_A
    inventory = orjson.loads(inventory_path(up.tmp / "archive").read_bytes())
    assert len(inventory) == STATIONS
    uids = {f"{r['station_id']}*{n}" for r in inventory for n in range(1, r["evses"] + 1)}

    def online() -> list[dict[str, Any]] | None:  # every EVSE listed; CS-00001's online (not UNKNOWN)
        found = _read_all(up.ocpi, "locations", limit=1)
        evses = {e["uid"]: e for x in found for e in x["evses"]}
        return found if set(evses) == uids and evses["CS-00001*1"]["status"] != "UNKNOWN" else None

    found = up.ocpi.wait("the simulated fleet's EVSEs at twin ocpi, CS-00001 online", online, timeout=150)
    ocpi_models("Location", found)
    assert sorted(x["id"] for x in found) == sorted({r["pool_id"] for r in inventory})

    expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    pool = next(r["pool_id"] for r in inventory if r["station_id"] == "CS-00001")
    reserve = {"token": _token(), "expiry_date": expiry, "reservation_id": "UP-R-1", "location_id": pool,
               "evse_uid": "CS-00001*1"}  # fmt: skip
    answer = _command(up.ocpi, "RESERVE_NOW", reserve, "up-r1")
    assert answer["data"]["result"] == "ACCEPTED", answer
    ocpi_models("CommandResponse", [answer["data"]])
    result = _result(up.ocpi, "RESERVE_NOW", "up-r1")
    ocpi_models("CommandResult", [result])
    assert result["result"] == "ACCEPTED", result


def test_the_vtns_limit_for_a_sites_ean_reaches_the_twin_through_twin_ups_ven(up: Acting) -> None:
    """twin up started `twin ven` (its child, the secret not on its command line); the VTN's
    limit for SITE-0001's EAN (the inventory's, which twin up wrote) is the site's limit in
    force at the worker's API, from OpenADR."""
    from twin.captures import inventory_path

    inventory = orjson.loads(inventory_path(up.tmp / "archive").read_bytes())
    assert {r["ean"] for r in inventory if r["site_id"] == SITE} == {EAN_A}
    ven = up.urls["pids"]["ven"]
    assert ven in up.below and _running(ven)
    argv = _cmdline(ven)
    assert argv[argv.index("--vtn") + 1] == up.vtn.url and argv[argv.index("--client-id") + 1] == CLIENT_ID
    assert CLIENT_SECRET not in argv

    def limited() -> dict[str, Any] | None:
        try:
            site: dict[str, Any] = get(f"{up.api}/sites/{SITE}", up.urls["api_token"])
        except urllib.error.HTTPError:
            return None
        return site if site["limit_source"] == "openadr" else None

    deadline = time.monotonic() + 120
    while (site := limited()) is None:
        assert time.monotonic() < deadline, f"{SITE} never under the VTN's limit; the VEN's log:\n" + (
            up.tmp / "twin-data" / "logs" / "ven.log").read_text()[-3000:]  # fmt: skip
        time.sleep(1)
    assert site["ean"] == EAN_A and site["import_limit_kw"] == LIMIT_KW
    assert site["signal"]["event_id"] == up.event["id"] and site["signal"]["status"] == "accepted"
    assert up.vtn.violations == [], up.vtn.violations
    assert {"POST /auth/token", "GET /events"} <= set(up.vtn.requests)
