"""Every dashboard page, run by Streamlit's AppTest on the committed sample dataset with no
worker running (archive-only mode), and with no archive at all."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from twin.broker import free_port

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "dashboards" / "pages"
SAMPLE = ROOT / "datasets" / "sample"


@pytest.fixture
def archive_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWIN_ARCHIVE", str(SAMPLE))
    monkeypatch.setenv("TWIN_API", f"http://127.0.0.1:{free_port()}")  # nothing listens there


def run(page: str) -> AppTest:
    at = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def settled(at: AppTest, ready: Callable[[AppTest], bool], within: float = 120) -> AppTest:
    """Run the page again until ``ready``: reports compute in the background, and a page
    shows what it has meanwhile (in a browser it refreshes itself)."""
    deadline = time.monotonic() + within
    while not ready(at):
        assert time.monotonic() < deadline, "the page never filled in"
        time.sleep(0.3)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def says_archive_only(at: AppTest) -> bool:
    return any("live API is not reachable" in w.value for w in at.warning)


def test_the_app_opens_on_the_fleet_page(archive_only: None) -> None:
    at = AppTest.from_file(str(ROOT / "dashboards" / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert at.title[0].value == "Fleet"


def test_fleet(archive_only: None) -> None:
    at = settled(run("fleet"), lambda at: "Energy in on 2026-03-03" in metrics(at) and len(at.dataframe) > 0)
    assert says_archive_only(at)
    shown = metrics(at)
    assert shown["Stations (archive)"] == "20"
    assert shown["Charging"] == "—"  # needs the live API: not made up from the archive
    assert shown["Energy in on 2026-03-03"].endswith("kWh")
    table = at.dataframe[0].value
    assert len(table) == 20 and {"station_id", "protocol", "pool_id", "max_kw"} <= set(table.columns)
    at.text_input(key="fleet_text").input("CS-0000").run()
    assert len(at.dataframe[0].value) == 9
    at.multiselect(key="fleet_protocol").set_value(["ocpp2.0.1"]).run()  # none chosen: all
    assert set(at.dataframe[0].value["protocol"]) == {"ocpp2.0.1"}


def test_station(archive_only: None) -> None:
    at = run("station")
    assert at.selectbox(key="station_pick").options[:2] == ["CS-00001", "CS-00002"]
    at.selectbox(key="station_pick").set_value("CS-00002").run()
    assert not at.exception
    shown = metrics(at)
    assert shown["Connection"] in ("online", "offline") and shown["Vendor / model"] == "ABB Terra AC W22"
    assert any(label.startswith("EVSE 1 · ") for label in shown)
    assert any("folded from the archive" in c.value for c in at.caption)
    headers = [h.value for h in at.subheader]
    for part in ("EVSEs", "Reservations", "Monitors", "Alerts", "Recent frames (archive)"):
        assert part in headers
    frames = at.dataframe[-1].value
    assert len(frames) == 50 and list(frames["ts"]) == sorted(frames["ts"], reverse=True)


def test_energy(archive_only: None) -> None:
    shown = metrics(run("energy"))
    assert shown["Imported"].endswith("kWh") and shown["Exported (V2G)"] != "0.0 kWh"


def test_reservations(archive_only: None) -> None:
    shown = metrics(run("reservations"))
    # the data card: 90 ReserveNow, 6 ReservationStatusUpdate (Expired), 8 CancelReservation records
    assert (shown["Made"], shown["Used"], shown["Expired"], shown["Cancelled"]) == ("45", "34", "3", "4")


def test_monitoring(archive_only: None) -> None:
    at = run("monitoring")
    assert metrics(at)["Events"] == "15"  # the data card: 30 NotifyEvent records, CALL and answer
    assert len(at.dataframe[0].value) == 15


def test_uptime_and_afir(archive_only: None) -> None:
    at = settled(run("uptime"), lambda at: len(at.expander) > 0)
    assert metrics(at)["Network uptime"] == "99.46 %"  # 99.457 (the report), to two places
    assert len(at.expander) == 5  # one per pool, each with its AFIR checks
    at.radio(key="uptime_rule").set_value("uk").run()
    assert not at.exception and metrics(at)["Target (uk)"] == "99.0 %"


def test_migration(archive_only: None) -> None:
    shown = metrics(run("migration"))
    assert (shown["Stations"], shown["OCPP 2.1"], shown["OCPP 2.0.1"]) == ("20", "15", "5")


@pytest.mark.parametrize("page", ["fleet", "station", "energy", "reservations", "monitoring", "uptime", "migration"])
def test_no_archive_and_no_api_says_so(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWIN_ARCHIVE", str(tmp_path / "none"))
    monkeypatch.setenv("TWIN_API", f"http://127.0.0.1:{free_port()}")
    at = run(page)
    said = [i.value for i in at.info] + [w.value for w in at.warning] + [c.value for c in at.caption]
    assert any("archive" in text for text in said), said


@pytest.mark.parametrize("page", ["energy", "uptime"])
def test_an_archive_on_an_object_store_is_named_without_its_secret(page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``twin up --archive s3://...``: the worker writes there; the pages say they read a copy."""
    monkeypatch.setenv("TWIN_ARCHIVE", "s3://key:hush@fleet/archive?endpoint_override=127.0.0.1:9")
    monkeypatch.setenv("TWIN_API", f"http://127.0.0.1:{free_port()}")
    at = run(page)
    said = [i.value for i in at.info] + [w.value for w in at.warning] + [c.value for c in at.caption]
    assert any("object store (`s3://key:***@fleet/archive" in text and "copy it here" in text for text in said), said
    assert not any("hush" in text for text in said), said


def test_a_report_a_page_asks_for_overtakes_the_background_queue() -> None:
    """The defaults are queued in the background; a page's ask for one of them (the last,
    sessions) is computed next, ahead of the others, and only once."""
    from dashboards.data import Reports, version

    computer, archive = Reports(), str(SAMPLE)
    stamp = version(archive)
    try:
        computer.prewarm(archive, stamp)
        sessions = computer.ask(("sessions", archive, None, None, "nevi"), stamp, wait=120)
        assert sessions is not None and sessions.value is not None and not sessions.error
        began = {key[0]: done.at for key, done in computer.done.items()}
        assert len(began) <= 2, f"sessions waited behind {sorted(began)}"  # at most the one already running
        for kind in Reports.DEFAULTS:
            computer.ask((kind, archive, None, None, "nevi"), stamp, wait=120, urgent=False)
        assert computer.done[("sessions", archive, None, None, "nevi")] is sessions, "computed once"
    finally:
        computer.close()


def test_a_report_that_failed_is_not_pending(archive_only: None) -> None:
    """A section that does not block on its report says why it failed, once; it does not
    go on saying it is computing."""

    def page() -> None:
        from dashboards import data

        if data.report("sessions", "not a time", None, block=False) is None:
            data.pending("sessions", "not a time")

    at = settled(AppTest.from_function(page, default_timeout=60).run(), lambda at: len(at.error) > 0)
    assert "The sessions report failed" in at.error[0].value and len(at.error) == 1
    assert not [c.value for c in at.caption if "Computing" in c.value]


def test_grid_without_a_worker_says_the_live_api_is_unreachable(archive_only: None) -> None:
    """Sites, limits in force and plans are live only: the page says the API is away, and
    shows the sites as the sample's inventory defines them, with their static limits."""
    at = run("grid")
    assert says_archive_only(at)
    sites = at.dataframe[0].value
    assert list(sites["site"]) == [f"SITE-{n:04d}" for n in range(1, 6)]
    assert sites["static_import_limit_kw"].iloc[0] == 45.0  # the sample's _stations.json, POOL-0001
    assert any("need the live API" in c.value for c in at.caption)


def test_station_shows_each_evses_price_now_and_next(archive_only: None) -> None:
    """The sample's CS-00001 (DC 50 kW) took a flat 0.59 EUR/kWh default tariff: the twin folded
    from the archive shows it per EVSE, with no change ahead, and its session's running cost."""
    at = run("station")
    assert "Prices" in [h.value for h in at.subheader]
    assert metrics(at)["EVSE 1 price now"] == "0.59 EUR/kWh"
    assert any(c.value == "No change ahead" for c in at.caption)
    table = next(d.value for d in at.dataframe if "tariff" in d.value.columns)
    assert table["tariff"].iloc[0] == "DC-50" and table["source"].iloc[0] == "default"
    assert table["cost_source"].iloc[0] == "central" and table["session_cost"].iloc[0].endswith(" EUR")


def test_energy_shows_revenue(archive_only: None) -> None:
    """`twin report tariffs` on the sample: 185 sessions, 1,547.32 EUR recomputed from the tariffs
    in force, 2,087.39 EUR reported (the sample's CSMS also bills sessions of stations that
    hold no tariff), no session billed otherwise than its tariff says."""
    at = settled(run("energy"), lambda at: "Revenue (excl. tax)" in metrics(at))
    shown = metrics(at)
    assert shown["Revenue (excl. tax)"] == "1,547.32 EUR" and shown["Reported cost"] == "2,087.39 EUR"
    assert (shown["Sessions"], shown["Billing differences"]) == ("185", "0")
    revenue = next(d.value for d in at.dataframe if "revenue_excl_tax" in d.value.columns)
    assert len(revenue) == 10 and set(revenue["site_id"]) == {f"SITE-{n:04d}" for n in range(1, 6)}


def test_station_shows_a_sessions_cost_timeline_on_demand(archive_only: None) -> None:
    """The log's costs of one of the station's sessions, read from the archive when asked: the
    sample's CSMS sent CS-00001's first session one CostUpdated of 28.84."""
    at = run("station")
    assert not [c for c in at.selectbox if c.key == "cost_session"], "read only when asked"
    at.toggle(key="cost_timeline").set_value(True).run()
    assert not at.exception
    sessions = at.selectbox(key="cost_session")
    assert "CS-00001-T1" in sessions.options and sessions.options[0] != "CS-00001-T1"  # the latest first
    sessions.set_value("CS-00001-T1").run()
    points = at.dataframe[-1].value
    assert list(points["cost"]) == [28.84] and list(points["source"]) == ["central"]


def test_grid_history_from_the_archive_shows_limits_signals_and_rejections(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No worker, an archive with grid signals (tests/test_report_grid.py's hand-worked
    capture): the chosen site's limit over time against its measured power, bands by the
    limit's source, the price, the totals of `twin report grid`, and the rejected signals
    with their reasons."""
    from tests.test_report_grid import hand_worked

    monkeypatch.setenv("TWIN_ARCHIVE", str(hand_worked(tmp_path / "archive")))
    monkeypatch.setenv("TWIN_API", f"http://127.0.0.1:{free_port()}")
    at = settled(run("grid"), lambda at: "Minutes over the limit" in metrics(at))
    assert says_archive_only(at)
    assert list(at.dataframe[0].value["site"]) == ["SITE-A", "SITE-B"]
    shown = metrics(at)
    assert shown["Minutes over the limit"] == "10.0" and shown["Imported"] == "8.0 kWh"
    assert shown["Cost at the price signals"] == "1.65 EUR"
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 1
    spec = charts[0].proto.spec
    assert '"operator"' in spec and '"static"' in spec  # the bands, by source
    rejected = at.dataframe[1].value
    assert set(rejected["event_id"]) == {"bad", "no-site"}
    assert rejected.set_index("event_id").loc["bad", "reason"].startswith("IMPORT_CAPACITY_LIMIT in 'W'")
    assert any("Profiles sent" in c.value or "profiles sent: 4" in c.value for c in at.caption)
