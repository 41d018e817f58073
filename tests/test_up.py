"""``twin up``: the whole pipeline in one command, and its clear refusals."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.stations import BOOT, raw_station
from tests.up import TWIN, alive, twin_up
from twin.broker import free_port

pytestmark = pytest.mark.integration


def get(url: str, within: float = 60) -> Any:
    """The API's answer; a 503 (the worker rebalancing, as it does after start) is asked again."""
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


async def test_up_serves_every_part_and_stops_them_all(tmp_path: Path) -> None:
    with twin_up(tmp_path) as up:
        pids = up.urls["pids"]
        assert set(pids) == {"broker", "gateway", "worker", "controller", "dashboard"}
        assert all(alive(pid) for pid in pids.values())
        with urllib.request.urlopen(up.urls["dashboard"] + "/_stcore/health", timeout=5) as response:
            assert response.read() == b"ok"
        # a station connects at the printed URL; its twin appears behind the printed API
        url = up.urls["stations"].replace("<station id>", "UP-1")
        async with raw_station(url) as ws:
            assert (await ws.ask(BOOT))[0] == 3
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                stations = get(up.urls["api"])["stations"]
                if any(s["station_id"] == "UP-1" for s in stations):
                    break
                await asyncio.sleep(0.5)
            else:
                raise AssertionError(f"the twin never appeared: {up.stderr.read_text()[-2000:]}")
        frames = get(f"{up.api}/stations/UP-1/frames?limit=5")["frames"]
        assert [f["action"] for f in frames][-2:] == ["BootNotification", "Connected"]  # newest first
        assert get(f"{up.api}/sites") == {"sites": []}  # no inventory names a site: the controller idles
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
