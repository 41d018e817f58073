"""Sites: read from a file or the inventory with one clear error per bad entry; the limit in
force from the grid signals; what the site draws, from its twins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from twin import sites
from twin.simulator import inventory

GOOD = {"site_id": "S1", "ean": "871687000000000016", "import_limit_kw": 50, "export_limit_kw": 20,
        "stations": ["CS-1", "CS-2"]}  # fmt: skip


def test_an_ean_carries_its_check_digit() -> None:
    assert sites.ean_ok(sites.ean_of(1)) and sites.ean_ok("871687000000000016")
    assert not sites.ean_ok("871687000000000017")  # wrong check digit
    assert not sites.ean_ok("87168700000000001")  # 17 digits
    assert all(sites.ean_ok(sites.ean_of(n)) for n in range(1, 500))


@pytest.mark.parametrize(("change", "said"), [
    ({"ean": "871687000000000017"}, "entry 1 (S1): ean must be 18 digits with a valid check digit"),
    ({"import_limit_kw": "fifty"}, "entry 1 (S1): import_limit_kw must be a number of kW"),
    ({"export_limit_kw": -1}, "entry 1 (S1): export_limit_kw must be a number of kW, 0 or more"),
    ({"stations": "CS-1"}, "entry 1 (S1): stations must be a list of station ids"),
    ({"site_id": ""}, "entry 1: site_id must be a non-empty string"),
])  # fmt: skip
def test_a_bad_site_is_one_line_naming_the_entry_and_field(change: dict[str, Any], said: str) -> None:
    with pytest.raises(sites.SitesError) as caught:
        sites.parse(json.dumps([{**GOOD, **change}]).encode(), "sites.json")
    assert str(caught.value).startswith(f"sites.json {said}"), str(caught.value)


def test_a_station_behind_two_sites_or_a_site_twice_is_refused() -> None:
    other = {**GOOD, "site_id": "S2", "ean": sites.ean_of(2), "stations": ["CS-2"]}
    with pytest.raises(sites.SitesError, match="station CS-2 is behind two sites"):
        sites.parse(json.dumps([GOOD, other]).encode())
    with pytest.raises(sites.SitesError, match="site S1 is listed twice"):
        sites.parse(json.dumps([GOOD, {**GOOD, "stations": ["CS-9"]}]).encode())
    with pytest.raises(sites.SitesError, match="not JSON"):
        sites.parse(b"[{")


def test_the_simulated_inventory_names_a_site_per_pool() -> None:
    rows = inventory(30, 4)
    found = sites.from_inventory(rows)
    assert {r["pool_id"] for r in rows} and len(found) == len({r["pool_id"] for r in rows})
    for site in found:
        rated = sum(float(r["max_kw"]) * int(r["evses"]) for r in rows if r["site_id"] == site.site_id)  # type: ignore[arg-type]
        assert 0.6 * rated <= site.import_limit_kw < 0.6 * rated + 5 and sites.ean_ok(site.ean)
    rows[1] = {**rows[1], "import_limit_kw": 1.0}  # a pool whose stations disagree
    with pytest.raises(sites.SitesError, match="import_limit_kw"):
        sites.from_inventory(rows)


def test_a_bad_sites_file_stops_the_controller_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "sites.json"
    bad.write_text(json.dumps([GOOD, {**GOOD, "site_id": "S2", "ean": "123"}]))
    result = subprocess.run([sys.executable, "-m", "twin", "controller", "--sites", str(bad), "-b", "127.0.0.1:1"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {bad} entry 2 (S2): ean must be 18 digits with a valid "
                                                  "check digit (got '123')"]  # fmt: skip


def _signal(kind: str, start: str, minutes: float, value: float, *, event: str = "e1", version: int = 0,
            status: str = "accepted", received: str = "2026-03-02T07:00:00Z") -> dict[str, Any]:  # fmt: skip
    return {"site_id": "S1", "protocol": "openadr", "program_id": "p", "event_id": event,
            "modification_number": version, "payload_type": kind, "status": status, "received_at": received,
            "intervals": [{"start": start, "duration_s": minutes * 60, "value": value}]}  # fmt: skip


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def test_the_limit_in_force_is_the_signal_covering_the_moment_else_the_static_one() -> None:
    site = sites.parse(json.dumps([GOOD]).encode())[0]
    signals = [_signal(sites.IMPORT_LIMIT, "2026-03-02T08:00:00Z", 60, 30),
               _signal(sites.EXPORT_LIMIT, "2026-03-02T08:30:00Z", 60, 5, event="e2")]  # fmt: skip
    before = sites.limit_at(site, signals, at("2026-03-02T07:59:59Z"))
    assert (before.import_kw, before.export_kw, before.source) == (50, 20, "static")
    during = sites.limit_at(site, signals, at("2026-03-02T08:45:00Z"))
    assert (during.import_kw, during.export_kw, during.source) == (30, 5, "openadr")
    after = sites.limit_at(site, signals, at("2026-03-02T09:00:00Z"))  # the import interval ended
    assert (after.import_kw, after.export_kw) == (50, 5)
    # a newer version of an event replaces it; a cancelled one is not obeyed; a rejected one neither
    changed = [*signals, _signal(sites.IMPORT_LIMIT, "2026-03-02T08:00:00Z", 60, 40, version=1)]
    assert sites.limit_at(site, changed, at("2026-03-02T08:10:00Z")).import_kw == 40
    cancelled = [*changed, _signal(sites.IMPORT_LIMIT, "2026-03-02T08:00:00Z", 60, 40, version=2, status="cancelled")]
    assert sites.limit_at(site, cancelled, at("2026-03-02T08:10:00Z")).source == "static"
    rejected = [_signal(sites.IMPORT_LIMIT, "2026-03-02T08:00:00Z", 60, 1, status="rejected")]
    assert sites.limit_at(site, rejected, at("2026-03-02T08:10:00Z")).import_kw == 50
    imports, exports = sites.limits_ahead(site, signals, at("2026-03-02T07:50:00Z"), 600, 4)
    assert imports == [50, 30, 30, 30] and exports == [20, 20, 20, 20]


def test_what_a_site_draws_comes_from_its_online_twins_in_a_transaction() -> None:
    site = sites.parse(json.dumps([GOOD]).encode())[0]
    running = {"state": "updated"}
    twins = {
        "CS-1": {"connection": {"online": True}, "evses": {
            "1": {"transaction": running, "energy": {"power_w": 11000, "direction": "charging"}},
            "2": {"transaction": running, "energy": {"power_w": -5000, "direction": "discharging"},
                  "profile_status": {"status": "Accepted"}},
            "0": {"energy": {"power_w": 99_000}}}},  # the station's grid meter: not an EVSE
        "CS-2": {"connection": {"online": False},
                 "evses": {"1": {"transaction": running, "energy": {"power_w": 7000}}}},
        "CS-9": {"connection": {"online": True}, "evses": {"1": {"transaction": running, "energy": {"power_w": 7000}}}},
    }  # fmt: skip
    rows = sites.evses(site, twins)
    assert [(r["station_id"], r["evse_id"], r["power_kw"]) for r in rows] == [("CS-1", 1, 11.0), ("CS-1", 2, -5.0),
                                                                            ("CS-2", 1, 0.0)]  # fmt: skip
    assert sites.measured(rows) == (11.0, 5.0)
    view = sites.view(site, rows, sites.limit_at(site, [], at("2026-03-02T08:00:00Z")),
                      {"planned_at": "x", "evses": [{"station_id": "CS-1", "evse_id": 1, "plan_kw": 8.0,
                                                     "profile_status": "Accepted"}]})  # fmt: skip
    assert view | {"evses": None, "signal": None} == {
        "site_id": "S1", "name": None, "ean": "871687000000000016", "stations": ["CS-1", "CS-2"],
        "import_limit_kw": 50.0, "export_limit_kw": 20.0, "static_import_limit_kw": 50.0,
        "static_export_limit_kw": 20.0, "limit_source": "static", "signal": None, "next_intervals": [],
        "import_kw": 11.0, "export_kw": 5.0, "evses": None, "planned_at": "x"}  # fmt: skip
    assert view["evses"][0]["plan_kw"] == 8.0 and view["evses"][1]["plan_kw"] is None


def test_a_limit_for_a_site_without_a_plan_warns_and_is_recorded(broker: Any) -> None:
    """`twin control limit` for a site the controller never planned (a typo, or no controller
    yet): a warning that says so and where the start comes from; the signal is on grid.signals
    all the same (an operator may set a limit before the controller runs)."""
    from tests.conftest import TopicReader, fresh_prefix
    from twin.settings import Settings

    prefix = fresh_prefix("lim")
    env = {**os.environ, "TWIN_TOPIC_PREFIX": prefix}
    done = subprocess.run([sys.executable, "-m", "twin", "control", "limit", "SITE-NOPE", "--import-kw", "5",
                           "-b", broker.bootstrap, "--json"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no plan for site 'SITE-NOPE'" in " ".join(done.stderr.split()), done.stderr
    [signal] = json.loads(done.stdout)["signals"]
    settings = Settings(bootstrap=broker.bootstrap, topic_prefix=prefix)
    reader = TopicReader(broker.bootstrap, settings.topics.signals)
    try:
        records = reader.wait(lambda rs: len(rs) >= 1)
    finally:
        reader.close()
    assert records[0]["event_id"] == signal["event_id"] and records[0]["site_id"] == "SITE-NOPE"
