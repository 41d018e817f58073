"""``twin up``: the whole pipeline in one command, and its clear refusals."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from tests.stations import BOOT, raw_station
from tests.up import TWIN, alive, twin_up
from twin.broker import free_port

pytestmark = pytest.mark.integration


def get(url: str, token: str, within: float = 60) -> Any:
    """The API's answer to ``token`` (twin up's admin token); a 503 (the worker rebalancing, as
    it does after start) is asked again."""
    deadline = time.monotonic() + within
    while True:
        try:
            ask = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(ask, timeout=5) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


async def test_up_serves_every_part_and_stops_them_all(tmp_path: Path) -> None:
    with twin_up(tmp_path) as up:
        pids = up.urls["pids"]
        assert set(pids) == {"broker", "gateway", "worker", "controller", "ocpi", "dashboard"}
        assert all(alive(pid) for pid in pids.values())
        with urllib.request.urlopen(up.urls["dashboard"] + "/_stcore/health", timeout=5) as response:
            assert response.read() == b"ok"
        # a station connects at the printed URL; its twin appears behind the printed API
        url = up.urls["stations"].replace("<station id>", "UP-1")
        async with raw_station(url) as ws:
            assert (await ws.ask(BOOT))[0] == 3
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                stations = get(up.urls["api"], up.token)["stations"]
                if any(s["station_id"] == "UP-1" for s in stations):
                    break
                await asyncio.sleep(0.5)
            else:
                raise AssertionError(f"the twin never appeared: {up.stderr.read_text()[-2000:]}")
        frames = get(f"{up.api}/stations/UP-1/frames?limit=5", up.token)["frames"]
        assert [f["action"] for f in frames][-2:] == ["BootNotification", "Connected"]  # newest first
        assert get(f"{up.api}/sites", up.token) == {"sites": []}  # no inventory names a site: the controller idles
    assert (tmp_path / "twin-data" / "logs" / "worker.log").exists()


def test_a_taken_port_is_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*TWIN, "up", "--port", str(port), "--data-dir", str(tmp_path)], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "logs").exists()  # nothing was started


def test_an_unreachable_broker_is_a_clear_message(tmp_path: Path) -> None:
    ports = [f"--{name}={free_port()}" for name in ("web-port", "port", "dashboard-port")]
    argv = [*TWIN, "up", "--bootstrap", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path), *ports]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Is the cluster up?" in done.stderr and "Traceback" not in done.stderr


# -- twin up dies cleanly however it dies ------------------------------------------------------


def _pids_below(root: int) -> set[int]:
    """Every process descended from ``root`` now (children, theirs: Kafka's JVM under
    ``twin broker``), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill_left(pids: set[int]) -> None:
    """What a failed test would leave running: killed by pid, never by name."""
    import contextlib
    import os
    import signal

    for pid in pids:
        if _running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


Started = tuple[subprocess.Popen[bytes], dict[str, Any], set[int]]


def _start_up(tmp: Path, engine: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> Started:
    """``twin up --json ARGS`` on free ports (``--broker kafka`` on Kafka): the process, its
    URLs, and every process below it once it has printed them."""
    ports = [free_port() for _ in range(4)]
    argv = [*TWIN, "up", "--json", "--data-dir", str(tmp / "twin-data"), "--archive", str(tmp / "archive"),
            "--broker-port", str(ports[0]), "--port", str(ports[1]), "--web-port", str(ports[2]),
            "--dashboard-port", str(ports[3]), *(["--broker", "kafka"] if engine == "kafka" else []),
            *args]  # fmt: skip
    with open(tmp / "up.stderr", "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, cwd=tmp, env=env)
    assert proc.stdout is not None
    text = b""
    deadline = time.monotonic() + 240
    while True:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"twin up ended (exit {proc.wait()}): {(tmp / 'up.stderr').read_text()[-3000:]}")
        text += line
        try:
            urls: dict[str, Any] = orjson.loads(text)
            break
        except orjson.JSONDecodeError:
            assert time.monotonic() < deadline, "twin up printed no URLs in time"
    below = _pids_below(proc.pid)
    assert set(urls["pids"].values()) < below, "the broker's own process runs below `twin broker`"
    return proc, urls, below


def test_up_killed_with_sigkill_leaves_nothing_running(engine: str, tmp_path: Path) -> None:
    """SIGKILL runs none of twin up's code: its processes go because each was started with a
    parent-death signal, and `twin broker` started its broker (Kafka's JVM) the same way."""
    import signal

    proc, urls, below = _start_up(tmp_path, engine)
    try:
        proc.kill()
        assert proc.wait(10) == -signal.SIGKILL
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in below) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in below if _running(pid)}
        assert not left, f"left running after twin up was killed: {left}"
    finally:
        _kill_left(below)


def test_up_stops_on_sigterm_well_inside_a_containers_grace(engine: str, tmp_path: Path) -> None:
    """A container runtime sends SIGTERM, then SIGKILL 10 s later: every process stops in
    well under that (all at once, the broker last), and twin up exits 0."""
    import signal

    proc, urls, below = _start_up(tmp_path, engine)
    try:
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "up.stderr").read_text()[-3000:]
        took = time.monotonic() - began
        said = (tmp_path / "up.stderr").read_text()
        assert took < 7, f"SIGTERM took {took:.1f} s: {said[-1000:]}"
        assert not [pid for pid in below if _running(pid)], "every process, the broker's own included"
        assert "stopped: broker (pid" in said and "worker (pid" in said
    finally:
        _kill_left(below)


def test_up_sets_the_sample_tariffs_on_the_simulated_fleet(tmp_path: Path) -> None:
    """`twin up --simulate 5`: once online each OCPP 2.1 station takes the sample tariff of its
    kind (time-of-day energy prices), CS-00005, which supports no price conditions, the flat one
    after its ConditionNotSupported; CS-00004 speaks 2.0.1 and is sent nothing. Each twin shows
    the price in force now."""
    with twin_up(tmp_path, "--simulate", "5", "--no-dashboard") as up:
        from twin.captures import inventory_path

        listed = orjson.loads(inventory_path(tmp_path / "archive").read_bytes())
        kinds = {s["station_id"]: s["kind"] for s in listed if s["protocol"] == "ocpp2.1"}
        zones = {s["station_id"]: s["address"]["time_zone"] for s in listed}
        assert sorted(kinds) == ["CS-00001", "CS-00002", "CS-00003", "CS-00005"]
        deadline = time.monotonic() + 180
        tariffs: dict[str, Any] = {}
        while time.monotonic() < deadline and len(tariffs) < len(kinds):
            for station in kinds:
                try:
                    evse = (get(f"{up.api}/stations/{station}", up.token).get("evses") or {}).get("1") or {}
                except urllib.error.HTTPError:  # not seen yet
                    continue
                if ((evse.get("tariff") or {}).get("price_now") or {}).get("energy_per_kwh") is not None:
                    tariffs[station] = evse["tariff"]
            time.sleep(1)
        assert len(tariffs) == len(kinds), f"tariffs on {sorted(tariffs)}: {up.stderr.read_text()[-2000:]}"
        prices = {"AC": (0.45, 0.32), "DC": (0.69, 0.55), "AC-FLAT": (0.39,), "DC-FLAT": (0.62,)}
        for station, tariff in tariffs.items():
            kind = kinds[station] + ("-FLAT" if station == "CS-00005" else "")
            assert tariff["tariff_id"] == f"SAMPLE-{kind}" and tariff["currency"] == "EUR", station
            now = tariff["price_now"]
            assert now["energy_per_kwh"] in prices[kind]
            assert now["energy_per_kwh_incl_tax"] == pytest.approx(now["energy_per_kwh"] * 1.19)
            assert (tariff["next_change_at"] is None) == kind.endswith("FLAT")  # else 07:00 or 22:00, station time
            twin = get(f"{up.api}/stations/{station}", up.token)
            assert twin["tariffs"]["time_zone"] == zones[station], "the clock's zone from the inventory's address"
            if tariff["next_change_at"]:  # 07:00 or 22:00 in the station's zone
                local = datetime.fromisoformat(tariff["next_change_at"]).astimezone(ZoneInfo(zones[station]))
                assert (local.hour, local.minute) in ((7, 0), (22, 0)), (station, tariff["next_change_at"])
        assert "tariff" not in ((get(f"{up.api}/stations/CS-00004", up.token).get("evses") or {}).get("1") or {})
        assert "sample tariffs set on 4 stations" in up.stderr.read_text()
        controller = Path(f"/proc/{up.urls['pids']['controller']}/cmdline").read_bytes().split(b"\0")
        assert b"--central-cost" in controller, "central cost for the stations that compute none"


async def test_up_with_two_workers_answers_for_every_station_from_either(tmp_path: Path) -> None:
    """`twin up --workers 2`: the workers share the partitions, and either API lists every
    station and answers for each; the printed API is the first worker's."""
    import contextlib

    with twin_up(tmp_path, "--workers", "2", "--no-dashboard", "--no-control") as up:
        apis = [a.removesuffix("/stations") for a in up.urls["apis"]]
        assert len(apis) == 2 and up.urls["api"] == up.urls["apis"][0]
        assert {"worker", "worker-2"} <= set(up.urls["pids"])
        names = [f"UPW-{i}" for i in range(8)]
        async with contextlib.AsyncExitStack() as stack:
            for name in names:
                ws = await stack.enter_async_context(raw_station(up.urls["stations"].replace("<station id>", name)))
                assert (await ws.ask(BOOT))[0] == 3
            deadline = time.monotonic() + 120
            listed: list[list[str]] = []
            while time.monotonic() < deadline:
                listed = [[s["station_id"] for s in get(f"{api}/stations", up.token)["stations"]] for api in apis]
                local = [get(f"{api}/stations?scope=local", up.token)["stations"] for api in apis]
                if all(sorted(rows) == names for rows in listed) and all(local):
                    break
                await asyncio.sleep(1)
            assert all(sorted(rows) == names for rows in listed), f"{listed}: {up.stderr.read_text()[-2000:]}"
            assert all(local), "each worker folds some of the stations"
            for name in names:
                twins = [get(f"{api}/stations/{name}", up.token) for api in apis]
                assert twins[0] == twins[1] and twins[0]["station_id"] == name
