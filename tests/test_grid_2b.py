"""OpenADR 2.0b: `twin ven --protocol 2.0b` against openleadr's own VTN (a real peer, in a
thread on 127.0.0.1): a LOAD_CONTROL capacity event for a site's EAN becomes an accepted
import limit on grid.signals, with 2.0b's modification number; an EAN no site has, rejected."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TopicReader, fresh_prefix
from tests.test_grid_vtn import EAN_A
from twin import runtime
from twin.broker import EmbeddedBroker, free_port

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]
SITES = [{"site_id": "SITE-A", "ean": EAN_A, "import_limit_kw": 30, "export_limit_kw": 0, "stations": ["CS-1"]}]


class OpenleadrVtn:
    def __init__(self) -> None:
        from openleadr import OpenADRServer

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.responses: list[str] = []

        async def make() -> Any:
            server = OpenADRServer(vtn_id="test-vtn", http_host="127.0.0.1", http_port=self.port,
                                   requested_poll_freq=timedelta(seconds=1))  # fmt: skip
            server.add_handler("on_create_party_registration", lambda info: ("ven-1", "reg-1"))
            server.add_handler("on_register_report", lambda *a, **k: None)
            await server.run()
            return server

        self.server = asyncio.run_coroutine_threadsafe(make(), self.loop).result(20)

    def add(self, ean: str, kw: float, event_id: str) -> None:
        start = datetime.now(UTC) + timedelta(minutes=1)
        self.loop.call_soon_threadsafe(lambda: self.server.add_event(
            ven_id="ven-1", signal_name="LOAD_CONTROL", signal_type="x-loadControlCapacity",
            intervals=[{"dtstart": start, "duration": timedelta(minutes=30), "signal_payload": kw}],
            targets=[{"resource_id": ean}], event_id=event_id, market_context="http://dso.example/congestion",
            callback=lambda ven_id, event_id, opt_type: self.responses.append(opt_type)))  # fmt: skip

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture()
def vtn() -> Iterator[OpenleadrVtn]:
    server = OpenleadrVtn()
    yield server
    server.close()


def test_a_2_0b_capacity_event_becomes_an_import_limit(broker: EmbeddedBroker, vtn: OpenleadrVtn,
                                                       tmp_path: Path) -> None:  # fmt: skip
    prefix = fresh_prefix("g2b")
    sites = tmp_path / "sites.json"
    sites.write_text(json.dumps(SITES))
    env = {**os.environ, "TWIN_TOPIC_PREFIX": prefix}
    vtn.add(EAN_A, 11.0, "ev-a")
    vtn.add("871687000000000030", 5.0, "ev-x")
    with open(tmp_path / "ven.log", "wb") as log:
        ven = subprocess.Popen([sys.executable, "-m", "twin", "ven", "--protocol", "2.0b", "--vtn", vtn.url,
                                "--client-id", "ven-1", "-b", broker.bootstrap, "--sites", str(sites)],
                               stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    reader = None
    try:
        import time

        deadline = time.monotonic() + 60
        while reader is None and time.monotonic() < deadline:  # once the VEN has made the topic
            if "ven: OpenADR 2.0b VTN" in (tmp_path / "ven.log").read_text():
                reader = TopicReader(broker.bootstrap, f"{prefix}grid.signals")
            time.sleep(0.5)
        assert reader is not None
        try:
            found = reader.wait(lambda rs: {r["event_id"] for r in rs} >= {"ev-a", "ev-x"}, timeout=60)
        except AssertionError:
            raise AssertionError((tmp_path / "ven.log").read_text()[-3000:]) from None
        a = next(r for r in found if r["event_id"] == "ev-a")
        assert (a["site_id"], a["status"], a["payload_type"], a["intervals"][0]["value"]) == (
            "SITE-A", "accepted", "IMPORT_CAPACITY_LIMIT", 11.0)
        x = next(r for r in found if r["event_id"] == "ev-x")
        assert x["status"] == "rejected" and "is no site's" in x["reason"]
    finally:
        if reader is not None:
            reader.close()
        runtime.stop(ven, __import__("signal").SIGINT, 15)
