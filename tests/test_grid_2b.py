"""OpenADR 2.0b: `twin ven --protocol 2.0b` against openleadr's own VTN (a real peer, in a
thread on 127.0.0.1): a LOAD_CONTROL capacity event for a site's EAN becomes an accepted
import limit on grid.signals, with 2.0b's modification number, and the VEN opts in; an EAN
no site has, or a signal the VEN does not fold, is rejected and opted out of; an
ELECTRICITY_PRICE event is a price; an event the VTN modifies is a new version, one it
cancels is cancelled, and the limit in force follows each (twin.sites.limit_at)."""

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
        self.opted: dict[str, str] = {}

        async def make() -> Any:
            server = OpenADRServer(vtn_id="test-vtn", http_host="127.0.0.1", http_port=self.port,
                                   requested_poll_freq=timedelta(seconds=1))  # fmt: skip
            server.add_handler("on_create_party_registration", lambda info: ("ven-1", "reg-1"))
            server.add_handler("on_register_report", lambda *a, **k: None)
            await server.run()
            return server

        self.server = asyncio.run_coroutine_threadsafe(make(), self.loop).result(20)

    def add(self, ean: str, values: list[float], event_id: str, signal: tuple[str, str] = (
            "LOAD_CONTROL", "x-loadControlCapacity")) -> None:  # fmt: skip
        """An event of 15-minute intervals from a minute from now; the VEN's opt-in or -out
        to its first version is kept in ``opted``."""
        start = datetime.now(UTC) + timedelta(minutes=1)
        intervals = [{"dtstart": start + timedelta(minutes=15 * i), "duration": timedelta(minutes=15),
                      "signal_payload": value} for i, value in enumerate(values)]  # fmt: skip
        self.loop.call_soon_threadsafe(lambda: self.server.add_event(
            ven_id="ven-1", signal_name=signal[0], signal_type=signal[1], intervals=intervals,
            targets=[{"resource_id": ean}], event_id=event_id, market_context="http://dso.example/congestion",
            callback=lambda ven_id, event_id, opt_type: self.opted.update({event_id: opt_type})))  # fmt: skip

    def modify(self, event_id: str, value: float) -> None:
        """The VTN changes the event's first interval: a new modification number."""
        from openleadr import utils

        def change() -> None:
            event = utils.find_by(self.server.events["ven-1"], "event_descriptor.event_id", event_id)
            utils.setmember(event.event_signals[0].intervals[0], "signal_payload", value)
            utils.increment_event_modification_number(event)
            self.server.events_updated["ven-1"] = True

        self.loop.call_soon_threadsafe(change)

    def cancel(self, event_id: str) -> None:
        self.loop.call_soon_threadsafe(lambda: self.server.cancel_event("ven-1", event_id))

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture()
def vtn() -> Iterator[OpenleadrVtn]:
    server = OpenleadrVtn()
    yield server
    server.close()


def test_2_0b_events_become_limits_and_prices_and_follow_the_vtn(broker: EmbeddedBroker, vtn: OpenleadrVtn,
                                                                 tmp_path: Path) -> None:  # fmt: skip
    from twin import sites as model

    prefix = fresh_prefix("g2b")
    sites = tmp_path / "sites.json"
    sites.write_text(json.dumps(SITES))
    site = model.parse(sites.read_bytes())[0]
    env = {**os.environ, "TWIN_TOPIC_PREFIX": prefix}
    vtn.add(EAN_A, [11.0, 9.0], "ev-a")
    vtn.add("871687000000000030", [5.0], "ev-x")  # an EAN no site has
    vtn.add(EAN_A, [0.30, 0.12], "pr-1", ("ELECTRICITY_PRICE", "price"))
    vtn.add(EAN_A, [1.0], "lv-1", ("SIMPLE", "level"))  # a signal this VEN does not fold
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

        def wait(what: Any) -> list[dict[str, Any]]:
            try:
                return reader.wait(what, timeout=60)  # type: ignore[union-attr]
            except AssertionError:
                raise AssertionError((tmp_path / "ven.log").read_text()[-3000:]) from None

        found = wait(lambda rs: {r["event_id"] for r in rs} >= {"ev-a", "ev-x", "pr-1", "lv-1"})
        by_event = {r["event_id"]: r for r in found}
        a = by_event["ev-a"]
        assert (a["site_id"], a["status"], a["payload_type"], a["modification_number"]) == (
            "SITE-A", "accepted", "IMPORT_CAPACITY_LIMIT", 0)
        assert [i["value"] for i in a["intervals"]] == [11.0, 9.0]
        x = by_event["ev-x"]
        assert x["status"] == "rejected" and "is no site's" in x["reason"]
        price = by_event["pr-1"]
        assert (price["status"], price["payload_type"], [i["value"] for i in price["intervals"]]) == (
            "accepted", "PRICE", [0.30, 0.12])
        level = by_event["lv-1"]
        assert level["status"] == "rejected" and "no payload this VEN folds" in level["reason"]
        during = model.parse_ts(a["intervals"][0]["start"]) + timedelta(minutes=5)
        assert model.limit_at(site, found, during).import_kw == 11.0
        assert model.price_at(site, found, during) == 0.30
        # the VEN's answers, as the VTN heard them: in where something was accepted, out elsewhere
        deadline = time.monotonic() + 60
        while len(vtn.opted) < 4 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert vtn.opted == {"ev-a": "optIn", "ev-x": "optOut", "pr-1": "optIn", "lv-1": "optOut"}

        vtn.modify("ev-a", 7.0)
        found = wait(lambda rs: any(r["event_id"] == "ev-a" and r["modification_number"] == 1 for r in rs))
        newer = [r for r in found if r["event_id"] == "ev-a" and r["modification_number"] == 1][-1]
        assert newer["status"] == "accepted" and [i["value"] for i in newer["intervals"]] == [7.0, 9.0]
        assert model.limit_at(site, found, during).import_kw == 7.0

        vtn.cancel("ev-a")
        found = wait(lambda rs: any(r["event_id"] == "ev-a" and r["status"] == "cancelled" for r in rs))
        gone = [r for r in found if r["event_id"] == "ev-a" and r["status"] == "cancelled"][-1]
        assert gone["modification_number"] == 2
        limit = model.limit_at(site, found, during)
        assert (limit.import_kw, limit.source) == (30.0, "static")
        assert model.price_at(site, found, during) == 0.30  # the price event stands
    finally:
        if reader is not None:
            reader.close()
        runtime.stop(ven, __import__("signal").SIGINT, 15)
