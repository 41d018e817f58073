"""Grid signals in the archive and ``twin report grid``: a hand-worked capture whose totals are
worked out by hand, signals delivered twice read once, the frame reports unaffected by them,
time travel to the limit in force, and an end-to-end run with ``twin worker --archive``."""

from __future__ import annotations

import json
import shutil
import signal as signals_
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.scenarios import START, Script
from twin import archive, captures, ocpp_j
from twin.analytics import grid
from twin.analytics.reports import report
from twin.sites import EXPORT_LIMIT, IMPORT_LIMIT, PRICE, ean_of

pytestmark = pytest.mark.one_engine  # see tests/conftest.py

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "datasets" / "sample"
TWIN = [sys.executable, "-m", "twin"]


def at(minutes: float) -> str:
    """08:00 on the scripts' day, plus ``minutes``."""
    return (START + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def signal(site: str, event: str, kind: str, start: float, minutes: float, value: float, received: float,
           status: str = "accepted", protocol: str = "operator", number: int = 0,
           **more: Any) -> dict[str, Any]:  # fmt: skip
    return {"site_id": site, "ean": None, "protocol": protocol, "program_id": protocol, "event_id": event,
            "modification_number": number, "payload_type": kind, "unit": "KW", "currency": None,
            "intervals": [{"start": at(start), "duration_s": minutes * 60, "value": value}],
            "received_at": at(received), "status": status, "reason": None, **more}  # fmt: skip


SIGNALS = [
    # the day's price: 0.20 until 08:40, then 0.30 (received before it all)
    {**signal("SITE-A", "price-1", PRICE, 0, 40, 0.20, -10, protocol="openadr"), "unit": "KWH", "currency": "EUR",
     "intervals": [{"start": at(0), "duration_s": 2400, "value": 0.20},
                   {"start": at(40), "duration_s": 1200, "value": 0.30}]},  # fmt: skip
    signal("SITE-A", "op-10", IMPORT_LIMIT, 15, 30, 10.0, 0),  # 10 kW from 08:15 to 08:45
    signal("SITE-A", "op-late", IMPORT_LIMIT, 0, 15, 2.0, 10),  # 2 kW for 08:00-08:15, but heard only at 08:10
    signal("SITE-A", "bad", IMPORT_LIMIT, 0, 60, 1.0, 5, status="rejected", protocol="openadr",
           reason="IMPORT_CAPACITY_LIMIT in 'W'... not KW"),  # fmt: skip
    signal("SITE-A", "gone", IMPORT_LIMIT, 45, 15, 5.0, 1, protocol="openadr"),  # 5 kW from 08:45 ...
    signal("SITE-A", "gone", IMPORT_LIMIT, 45, 15, 5.0, 10, status="cancelled", protocol="openadr", number=1),
    signal("SITE-B", "op-b", EXPORT_LIMIT, 0, 60, 3.0, 0),
    {**signal("", "no-site", IMPORT_LIMIT, 0, 60, 1.0, 2, status="rejected", protocol="openadr",
              reason="EAN 871687000000000099 is no site's"), "site_id": None},  # fmt: skip
]


def hand_worked(root: Path) -> Path:
    """SITE-A (GA-1, two EVSEs) and SITE-B (GB-1, idle), 08:00-09:00:
    - EVSE 1 (T-1): 12 kW from 08:00, 8 kW from 08:20, ended at 08:50;
    - EVSE 2 (T-2, V2G): plugged in at 08:30, gives back 5 kW 08:35-08:40, ended at 08:40;
    - SetChargingProfile for 08:16 Accepted, 08:17 Rejected, 08:31 never answered, 08:32 a CALLERROR;
    - the signals above, each delivered twice."""
    s = Script("GA-1").connect().boot()

    def tx(kind: str, tx_id: str, seq: int, minute: float, evse: int, **kw: Any) -> None:
        s.at(minute)
        s.tx(kind, tx_id, seq, evse, ts=at(minute), **kw)

    def profile(minute: float, answer: dict[str, Any] | None, error: bool = False) -> None:
        s.at(minute - 0.5)
        schedule = {"id": 1, "startSchedule": at(minute), "chargingRateUnit": "W",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10000}]}  # fmt: skip
        request = {"evseId": 1, "chargingProfile": {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
                                                    "chargingProfileKind": "Absolute",
                                                    "chargingSchedule": [schedule]}}  # fmt: skip
        if answer is not None:
            s.csms("SetChargingProfile", request, answer)
            return
        msg_id = f"p{minute}"
        s._frame(ocpp_j.call(msg_id, "SetChargingProfile", request), "csms")
        if error:
            s._frame(ocpp_j.error(msg_id, "InternalError", "no"), "cs")

    tx("Started", "T-1", 0, 0, 1, imp=0, p_imp=12000)
    profile(16, {"status": "Accepted"})
    profile(17, {"status": "Rejected"})
    tx("Updated", "T-1", 1, 20, 1, imp=4000, p_imp=8000)
    tx("Started", "T-2", 0, 30, 2, imp=0, exp=0, p_imp=0, p_exp=0)
    profile(31, None)
    profile(32, None, error=True)
    tx("Updated", "T-2", 1, 35, 2, imp=0, exp=0, p_imp=0, p_exp=5000)
    tx("Ended", "T-2", 2, 40, 2, imp=0, exp=417, p_imp=0, p_exp=0, stoppedReason="EVDisconnected")
    tx("Ended", "T-1", 2, 50, 1, imp=8000, p_imp=0, stoppedReason="Local")
    b = Script("GB-1").connect().boot()
    archive.write(root, sorted(s.records + b.records, key=lambda r: r["ts"]))
    entries = [(0, i, r) for i, r in enumerate(SIGNALS)]
    grid.write_signals(root, entries)
    grid.write_signals(root, entries[2:])  # redelivered
    inventory = [{"station_id": "GA-1", "site_id": "SITE-A", "ean": ean_of(1), "import_limit_kw": 50.0,
                  "export_limit_kw": 20.0},
                 {"station_id": "GB-1", "site_id": "SITE-B", "ean": ean_of(2), "import_limit_kw": 30.0,
                  "export_limit_kw": 0.0}]  # fmt: skip
    (root / "_stations.json").write_bytes(orjson.dumps(inventory))
    return root


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hand_worked(tmp_path_factory.mktemp("grid") / "archive")


def test_signals_written_twice_are_read_once_in_the_order_received(capture: Path) -> None:
    read = grid.read_signals(capture)
    assert len(read) == len(SIGNALS)
    assert sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in read) == sorted(
        orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in SIGNALS)  # fmt: skip
    assert [r["received_at"] for r in read] == sorted(r["received_at"] for r in SIGNALS)
    files = list((capture / grid.SIGNALS).rglob("*"))
    assert not [f for f in files if f.name.endswith(".parquet")], "frame readers glob *.parquet"


def test_frame_readers_do_not_see_the_signals(tmp_path: Path) -> None:
    """The sample archive with signals beside its frames: every frame report, the capture
    reader, Polars and ``twin compact`` give what they gave without them."""
    plain = tmp_path / "plain"
    shutil.copytree(SAMPLE, plain)
    with_signals = tmp_path / "with"
    shutil.copytree(SAMPLE, with_signals)
    grid.write_signals(with_signals, [(0, i, r) for i, r in enumerate(SIGNALS)] * 2)
    for kind in ("sessions", "energy", "status", "uptime", "afir", "migration", "tariffs", "connectivity"):
        assert report(kind, with_signals) == report(kind, plain), kind
    assert report("energy", with_signals, engine="polars") == report("energy", plain, engine="polars")
    assert sum(1 for _ in captures.read(with_signals)) == sum(1 for _ in captures.read(plain))
    done = list(archive.compact(with_signals))
    assert [d["records"] for d in done] == [d["records"] for d in archive.compact(plain)]
    assert report("sessions", with_signals) == report("sessions", plain)
    assert len(grid.read_signals(with_signals)) == len(SIGNALS)  # compact leaves them be


def rows_of(document: dict[str, Any], site: str) -> list[dict[str, Any]]:
    return [r for r in document["intervals"] if r["site_id"] == site]


def test_the_grid_report_on_the_hand_worked_capture(capture: Path) -> None:
    document, rows = report("grid", capture, at(0), at(60))
    assert rows == document["intervals"]
    a = rows_of(document, "SITE-A")
    shown = [(r["start"][11:16], r["end"][11:16], r["import_limit_kw"], r["limit_source"], r["event_id"],
              r["import_mean_kw"], r["import_max_kw"], r["export_mean_kw"], r["export_max_kw"],
              r["minutes_over_limit"], r["import_kwh"], r["v2g_discharged_kwh"], r["price"], r["cost"])
             for r in a]  # fmt: skip
    assert shown == [
        # heard at 08:10: the late 2 kW limit holds from then, not before
        ("08:00", "08:10", 50.0, "static", None, 12.0, 12.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.2, 0.4),
        ("08:10", "08:15", 2.0, "operator", "op-late", 12.0, 12.0, 0.0, 0.0, 5.0, 1.0, 0.0, 0.2, 0.2),
        ("08:15", "08:30", 10.0, "operator", "op-10", 9.333, 12.0, 0.0, 0.0, 5.0, 2.333, 0.0, 0.2, 0.4667),
        # the price changes at 08:40: the interval is split there
        ("08:30", "08:40", 10.0, "operator", "op-10", 8.0, 8.0, 2.5, 5.0, 0.0, 1.333, 0.417, 0.2, 0.1833),
        ("08:40", "08:45", 10.0, "operator", "op-10", 8.0, 8.0, 0.0, 0.0, 0.0, 0.667, 0.0, 0.3, 0.2),
        # 'gone' was cancelled and 'bad' rejected: neither is in force
        ("08:45", "09:00", 50.0, "static", None, 2.667, 8.0, 0.0, 0.0, 0.0, 0.667, 0.0, 0.3, 0.2),
    ]
    # energy shifted: T-1 drew 8 kWh at up to 12 kW; without a limit, 12 kW from 08:00 until
    # 08:40. So 2/3 kWh moved out of 08:15-08:30 and out of 08:30-08:40, into the minutes after
    assert [(r["start"][11:16], r["uncontrolled_kwh"], r["shifted_kwh"]) for r in a] == [
        ("08:00", 2.0, 0.0), ("08:10", 1.0, 0.0), ("08:15", 3.0, 0.667), ("08:30", 2.0, 0.667),
        ("08:40", 0.0, -0.667), ("08:45", 0.0, -0.667)]  # fmt: skip
    assert "_shifted" not in a[0]
    profiles = [(r["profiles_sent"], r["profiles_accepted"], r["profiles_rejected"]) for r in a]
    assert profiles == [(0, 0, 0), (0, 0, 0), (2, 1, 1), (2, 0, 1), (0, 0, 0), (0, 0, 0)]
    assert {r["currency"] for r in a} == {"EUR"}
    b = rows_of(document, "SITE-B")
    assert [(r["start"][11:16], r["export_limit_kw"], r["limit_source"], r["import_kwh"], r["cost"]) for r in b] == [
        (f"08:{m:02d}", 3.0, "operator", 0.0, None) for m in (0, 15, 30, 45)]  # fmt: skip
    totals = {t["site_id"]: t for t in document["sites"]}
    assert totals["SITE-A"]["import_kwh"] == 8.0 and totals["SITE-A"]["v2g_discharged_kwh"] == 0.417
    assert totals["SITE-A"]["minutes_over_limit"] == 10.0 and totals["SITE-A"]["cost"] == 1.65
    assert totals["SITE-A"]["minutes_under_a_signal"] == 35.0
    assert (totals["SITE-A"]["shifted_kwh"], totals["SITE-A"]["shifted_under_signals_kwh"]) == (1.333, 1.333)
    assert (totals["SITE-B"]["shifted_kwh"], totals["SITE-B"]["shifted_under_signals_kwh"]) == (0.0, 0.0)
    assert (totals["SITE-A"]["profiles_sent"], totals["SITE-A"]["profiles_rejected"]) == (4, 2)
    rejected = [s for s in document["signals"] if s["status"] == "rejected"]
    assert {s["event_id"]: s["reason"] for s in rejected} == {"bad": SIGNALS[3]["reason"],
                                                              "no-site": SIGNALS[7]["reason"]}  # fmt: skip


def test_the_grid_report_without_a_window_takes_the_readings_span(capture: Path) -> None:
    document, _ = report("grid", capture)
    assert document["window"] == {"from": at(0)[:-1] + ".000Z", "to": at(60)[:-1] + ".000Z", "interval_min": 15}


def test_the_report_command_prints_the_grid_report_in_every_format(capture: Path, tmp_path: Path) -> None:
    args = [*TWIN, "report", "grid", "--archive", str(capture), "--from", at(0), "--to", at(60)]
    out = subprocess.run([*args, "--json"], capture_output=True, text=True, check=True)
    document = json.loads(out.stdout)
    assert document["report"] == "grid" and len(document["intervals"]) == 10
    csv_out = subprocess.run([*args, "--csv"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert csv_out[0].startswith("site_id,start,end,import_limit_kw") and len(csv_out) == 11
    subprocess.run([*args, "--parquet", str(tmp_path / "g.parquet")], capture_output=True, check=True)
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "g.parquet").num_rows == 10
    table = subprocess.run(args, capture_output=True, text=True, check=True)
    assert "grid: 10 rows" in table.stderr


def test_time_travel_shows_the_limit_in_force_at_any_moment(capture: Path) -> None:
    """``twin sites --capture A --at TS``: the limit the signals received by then put in force,
    and what the EVSEs drew then."""

    def sites_at(minute: float) -> dict[str, Any]:
        out = subprocess.run([*TWIN, "sites", "SITE-A", "--capture", str(capture), "--at", at(minute), "--json"],
                             capture_output=True, text=True, check=True)  # fmt: skip
        return json.loads(out.stdout)

    for minute, limit, source, import_kw in ((5, 50.0, "static", 12.0), (12, 2.0, "operator", 12.0),
                                             (25, 10.0, "operator", 8.0), (36, 10.0, "operator", 8.0),
                                             (50, 50.0, "static", 0.0)):  # fmt: skip
        view = sites_at(minute)
        assert (view["import_limit_kw"], view["limit_source"], view["import_kw"]) == (limit, source, import_kw), minute
    assert sites_at(36)["export_kw"] == 5.0
    moment, views = grid.views_at(capture, grid.sites_of(capture))
    assert moment is not None and [v["site_id"] for v in views] == ["SITE-A", "SITE-B"]


def test_the_limit_at_a_moment_is_what_the_signals_received_by_then_say() -> None:
    site = grid.site_model.Site("SITE-A", ean_of(1), 50.0, 20.0, ("GA-1",))
    moment = datetime.fromisoformat(at(12))
    assert grid.limit_at(site, SIGNALS, moment).import_kw == 2.0
    assert grid.limit_at(site, SIGNALS, moment - timedelta(minutes=3)).import_kw == 50.0  # op-late not heard yet


# -- end to end: twin worker --archive, the controller and a reactive fleet ------------------------


@pytest.mark.integration
def test_live_and_rebuilt_from_the_archive_give_the_same_limits_over_time(broker: Any, tmp_path: Path) -> None:
    """The controller's stack with ``twin worker --archive``: operator limits come and go on
    SITE-A; the limit the live API showed at each moment is the one the archive gives back
    (``twin.analytics.grid.limit_at``, ``twin sites --capture --at``, ``twin report grid``);
    and the report, minute by minute, shows no minute over the limit in force once the
    controller has planned for it (:func:`obeyed_from`). A simulated station's reading taken
    as a profile lands gives the power from then on (``twin.simulator.ev.retuned``): before,
    it gave the step before, which the report held for a minute over the limit."""
    from tests.conftest import TopicReader
    from tests.test_cli_processes import wait_port
    from tests.test_controller import SPEED, SiteStack, _accepted
    from twin import runtime
    from twin.sites import parse

    s = SiteStack(broker, tmp_path)
    store = tmp_path / "archive"
    b = broker.bootstrap
    samples: list[dict[str, Any]] = []
    try:
        gateway = s.spawn("gateway", ["gateway", "-b", b, "--port", str(s.gateway_port),
                                      "--spool", str(tmp_path / "spool")])  # fmt: skip
        wait_port(s.gateway_port, gateway, tmp_path / "gateway.log")
        s.spawn("worker", ["worker", "-b", b, "--web-port", str(s.web_port), "--data-dir", str(tmp_path / "worker"),
                           "--sites", str(s.sites), "--archive", str(store)])  # fmt: skip
        s.wait("the worker's API", lambda: s.get("/v1/sites"), timeout=120)
        s.spawn("controller", ["controller", "-b", b, "--sites", str(s.sites), "--step-s", "60",
                               "--time-scale", str(SPEED)])  # fmt: skip
        s.wait("the controller's plans", lambda: s.plan("SITE-A") or s.plan("SITE-B") or
               "caught up" in s.log("controller"))  # fmt: skip
        plans_topic = TopicReader(b, s.settings.topics.plans)
        s.spawn("simulator", ["simulate", "--live", f"ws://127.0.0.1:{s.gateway_port}/ocpp", "--stations", "5",
                              "--days", "1", "--speed", str(SPEED), "--sessions", str(s.sessions)])  # fmt: skip
        plan = s.wait("a plan for SITE-A", lambda: s.plan("SITE-A"))
        # the EVs plugged in and taking profiles before the limits come: the limits are judged,
        # not the controller's start-up
        s.wait("SITE-A's EVs to accept their profiles", lambda: _accepted(s.site("SITE-A"), {
            "CS-00001", "CS-00002", "CS-00004"}))  # fmt: skip

        def sample(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                wall = datetime.now(UTC)
                view = s.site("SITE-A")
                if view:  # the API's moment: the plan's, where the stations' clock runs ahead of ours
                    planned = datetime.fromisoformat(view["planned_at"]) if view["planned_at"] else wall
                    samples.append({**view, "moment": max(wall, planned), "wall": wall})
                time.sleep(0.3)

        sample(2)
        # A limit "from now" reaches the API a moment later; and "now" is the last plan's time in
        # the stations' clock, which the API answers with before the limit and after it alike:
        # the moments of both are left out of the comparison.
        sending: list[tuple[datetime, datetime]] = []
        starts: set[str] = set()
        # windows of 20 and 16 station-minutes (20 and 16 s here): the limit command's own start-up
        # (2-3 s on a loaded machine, minutes of station time) and the controller's clock (the
        # newest meter time in the twins it reads: behind the stations' by the pipeline's delay,
        # seconds here, so minutes of station time) must leave minutes of each window to judge
        for kw, minutes in ((20.0, 20), (12.0, 16)):
            start = s.plan("SITE-A")["planned_at"]  # type: ignore[index]
            starts.add(start)
            began = datetime.now(UTC)
            limit = subprocess.run(TWIN + ["control", "limit", "SITE-A", "--import-kw", str(kw), "--for", str(minutes),
                                           "--start", start, "-b", b, "--json"],
                                   capture_output=True, text=True, env=s.env, timeout=60)  # fmt: skip
            assert limit.returncode == 0, limit.stderr
            sending.append((began, datetime.now(UTC) + timedelta(seconds=1)))
            sample(minutes * 60 / SPEED + 2)
        assert plan and {v["limit_source"] for v in samples} == {"static", "operator"}, samples
        assert {v["import_limit_kw"] for v in samples} >= {30.0, 20.0, 12.0}
        s.wait("the signals in the archive", lambda: len(grid.read_signals(store)) >= 2, timeout=30)
        last = samples[-1]["wall"].isoformat().replace("+00:00", "Z")

        def archived() -> bool:  # the frames up to the last sample
            try:
                return max(r["ts"] for r in captures.read(store, stations=["CS-00001"])) >= last
            except (captures.CaptureError, ValueError):
                return False

        s.wait("the frames in the archive", archived, timeout=60)
    finally:
        for name in ("simulator", "controller", "worker", "gateway"):
            if name in s.procs:
                runtime.stop(s.procs[name], signals_.SIGINT, 15)
    known = parse(s.sites.read_bytes())
    site = next(x for x in known if x.site_id == "SITE-A")
    signals = grid.read_signals(store)
    samples = [v for v in samples if not any(a <= v["wall"] <= b for a, b in sending) and v["planned_at"] not in starts]
    for view in samples:  # the same limit, live and rebuilt, at every moment the API was asked
        rebuilt = grid.limit_at(site, signals, view["moment"])
        assert (rebuilt.import_kw, rebuilt.export_kw, rebuilt.source) == (
            view["import_limit_kw"], view["export_limit_kw"], view["limit_source"]), view["moment"]  # fmt: skip
    for view in samples[:: max(1, len(samples) // 3)]:
        out = subprocess.run([*TWIN, "sites", "SITE-A", "--capture", str(store), "--sites", str(s.sites),
                              "--at", view["moment"].isoformat(), "--json"],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert (json.loads(out.stdout)["import_limit_kw"], json.loads(out.stdout)["limit_source"]) == (
            view["import_limit_kw"], view["limit_source"])  # fmt: skip
    document = grid.grid_report(store, site_list=known)
    rows = [r for r in document["intervals"] if r["site_id"] == "SITE-A"]
    for view in samples:
        moment = view["moment"]
        row = next((r for r in rows if datetime.fromisoformat(r["start"]) <= moment < datetime.fromisoformat(r["end"])),
                   None)  # fmt: skip
        if row is not None:
            assert (row["import_limit_kw"], row["limit_source"]) == (view["import_limit_kw"], view["limit_source"])
    assert sum(r["profiles_sent"] for r in rows) > 0 and sum(r["import_kwh"] for r in rows) > 0
    print(json.dumps(rows, indent=1, default=str)[:8000])
    # minute by minute: no minute over the limit once the controller has planned for it
    try:
        plans = [p for p in _drain(plans_topic) if p.get("site_id") == "SITE-A"]
    finally:
        plans_topic.close()
    minutes = [r for r in grid.grid_report(store, site_list=known, interval_s=60)["intervals"]
               if r["site_id"] == "SITE-A"]  # fmt: skip
    frames = sorted(captures.read(store, stations=site.stations), key=lambda f: (f["ts"], f["seq"]))
    checked: dict[float, int] = {}
    over = []
    for run in _runs(minutes):
        first = run[0]
        began = datetime.fromisoformat(first["start"])
        planned = [p for p in plans if (p["limit"]["import_kw"], p["limit"]["source"]) == (
            first["import_limit_kw"], first["limit_source"]) and datetime.fromisoformat(p["planned_at"]) >= began]
        from_ = next((t for p in planned if (t := obeyed_from(frames, p["planned_at"])) is not None), None)
        if from_ is None:
            continue  # a run the controller never planned for (too short, or seen before it was heard)
        for row in run:
            if datetime.fromisoformat(row["start"]) >= from_:
                checked[first["import_limit_kw"]] = checked.get(first["import_limit_kw"], 0) + 1
                if row["minutes_over_limit"] > 0:
                    over.append(row)
    assert checked.get(20.0, 0) >= 3 and checked.get(12.0, 0) >= 3, (checked, minutes)
    print("minutes judged:", checked, "over:", [(r["start"], r["minutes_over_limit"]) for r in over])
    assert over == [], over


def _drain(reader: Any) -> list[dict[str, Any]]:
    """Everything on the reader's topic: polled until a poll brings nothing new."""
    count = -1
    while count != len(reader.records):
        count = len(reader.records)
        reader.poll()
    return list(reader.records)


def _runs(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive rows under the same limit (value, source and event)."""
    out: list[list[dict[str, Any]]] = []
    for row in rows:
        limit = (row["import_limit_kw"], row["limit_source"], row["event_id"])
        if out and (out[-1][0]["import_limit_kw"], out[-1][0]["limit_source"], out[-1][0]["event_id"]) == limit:
            out[-1].append(row)
        else:
            out.append([row])
    return out



def obeyed_from(frames: list[dict[str, Any]], planned_at: str, step_s: float = 60.0) -> datetime | None:
    """The stations' time from which the site's measured power follows the plan made at
    ``planned_at``: one planning step after it, and no sooner than each station's first
    TransactionEvent captured after it answered that plan's SetChargingProfile (the reading
    before holds until then: at 60 times the wall clock, a wall second of delivery is a
    station minute). None where the plan sent no profile or not every one was answered."""
    sent: set[tuple[str, str]] = set()
    answered: set[str] = set()
    first: dict[str, datetime] = {}
    for f in frames:
        station = f["station_id"]
        if f["action"] == "SetChargingProfile" and f["msg_type"] == 2 and f["origin"] == "csms":
            schedule = f["payload"]["chargingProfile"]["chargingSchedule"][0]
            if schedule.get("startSchedule") == planned_at:
                sent.add((station, f["msg_id"]))
        elif f["msg_type"] in (3, 4) and (station, f["msg_id"]) in sent:
            answered.add(station)
        elif f["action"] == "TransactionEvent" and f["msg_type"] == 2 and station in answered:
            first.setdefault(station, datetime.fromisoformat(f["payload"]["timestamp"].replace("Z", "+00:00")))
    if not sent or set(first) != {station for station, _ in sent}:
        return None
    return max([datetime.fromisoformat(planned_at.replace("Z", "+00:00")) + timedelta(seconds=step_s),
                *first.values()])
