"""The simulator: deterministic, complete in a small run, schema-valid, and what ``twin
validate`` and ``twin import`` make of captures."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from itertools import groupby, pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin import archive, captures, fold, importer, simulator
from twin.simulator import simulate
from twin.validate import check


def run_records(stations: int = 12, days: float = 2, seed: int = 1) -> list[dict[str, Any]]:
    return [r for day in simulate(stations, days, seed) for r in day]


@pytest.fixture(scope="module")
def small() -> list[dict[str, Any]]:
    return run_records()


def test_the_same_seed_gives_the_same_capture_and_another_seed_another() -> None:
    a, b, c = run_records(6, 1, 7), run_records(6, 1, 7), run_records(6, 1, 8)
    assert a == b
    assert a != c


def test_every_frame_is_valid_numbered_and_answered(small: list[dict[str, Any]]) -> None:
    report = check(small)
    assert report.ok, report.as_json(limit=5)
    assert report.frames == len(small) and report.stations == 12
    stamps = [r["ts"] for r in small]
    assert stamps == sorted(stamps), "the capture is in capture order"


def test_a_small_run_holds_every_kind_of_event(small: list[dict[str, Any]]) -> None:
    actions = Counter(r["action"] for r in small)
    for action in ("BootNotification", "Heartbeat", "StatusNotification", "TransactionEvent", "MeterValues",
                   "Authorize", "NotifyEVChargingNeeds", "SetChargingProfile", "ReserveNow", "CancelReservation",
                   "ReservationStatusUpdate", "SetMonitoringBase", "SetVariableMonitoring", "NotifyEvent",
                   "Get15118EVCertificate", "GetCertificateStatus", "SignCertificate", "CertificateSigned",
                   "UpdateFirmware", "FirmwareStatusNotification", "SetDefaultTariff", "CostUpdated",
                   "SecurityEventNotification", "NotifyPeriodicEventStream", "Connected", "Disconnected"):  # fmt: skip
        assert actions[action], f"no {action} in the small run"
    assert any(r["msg_type"] == 6 for r in small), "a SEND"
    boots = {r["payload"]["reason"] for r in small if r["action"] == "BootNotification" and r["msg_type"] == 2}
    assert "FirmwareUpdate" in boots and len(boots) >= 2, boots
    assert any(r["action"] == "TransactionEvent" and r["payload"].get("offline") for r in small), "offline replay"
    statuses = {r["payload"].get("connectorStatus") for r in small if r["action"] == "StatusNotification"}
    assert {"Available", "Occupied", "Faulted"} <= statuses
    assert {r["protocol"] for r in small} == {"ocpp2.1", "ocpp2.0.1"}
    needs = [
        r["payload"]["chargingNeeds"] for r in small if r["action"] == "NotifyEVChargingNeeds" and r["msg_type"] == 2
    ]
    assert any("v2xChargingParameters" in n for n in needs), "V2X parameters"


def test_the_twins_of_a_small_run_show_v2g_reservations_and_monitoring(small: list[dict[str, Any]]) -> None:
    twins = fold.fold(small)
    statuses = Counter(r["status"] for t in twins.values() for r in t["reservations"].values())
    assert {"used", "expired", "cancelled", "rejected"} <= set(statuses), statuses
    assert any(
        p["discharge"] for t in twins.values() for e in t["evses"].values() for p in e.get("profiles", {}).values()
    )
    exported = [e["energy"]["export_wh"] for t in twins.values() for e in t["evses"].values()
                if (e.get("energy") or {}).get("export_wh")]  # fmt: skip
    assert exported, "export registers rose"
    directions = set()
    for r in small:  # the energy direction, frame by frame, on the V2G station
        if r["action"] == "TransactionEvent" and r["msg_type"] == 2:
            for value in r["payload"]["meterValue"][0]["sampledValue"]:
                if value["measurand"] == "Power.Active.Export" and value["value"] > 0:
                    directions.add("discharging")
                if value["measurand"] == "Power.Active.Import" and value["value"] > 0:
                    directions.add("charging")
    assert directions == {"charging", "discharging"}
    assert any(t["monitoring"]["last_event"] for t in twins.values())
    assert sum(t["fold_errors"] + t["invalid_frames"] for t in twins.values()) == 0


def test_jsonl_and_parquet_captures_hold_the_same_records(tmp_path: Path) -> None:
    out = {}
    for target in ("capture.jsonl", "archive"):
        done = subprocess.run(
            [sys.executable, "-m", "twin", "simulate", "--stations", "5", "--days", "1", "--seed", "3",
             "--out", str(tmp_path / target), "--json"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        out[target] = json.loads(done.stdout)
    assert out["capture.jsonl"]["records"] == out["archive"]["records"] > 1000
    assert sorted(p.name for p in (tmp_path / "archive").iterdir()) == ["_stations.json", "date=2026-03-02"]
    inventory = json.loads((tmp_path / "archive" / "_stations.json").read_text())
    assert [s["station_id"] for s in inventory] == [f"CS-0000{i}" for i in range(1, 6)]
    assert {"pool_id", "lat", "lon", "kind", "max_kw", "bidirectional", "protocol"} <= inventory[0].keys()
    assert (tmp_path / "capture.jsonl.stations.json").exists()
    key = lambda r: (r["conn_id"], r["seq"])  # noqa: E731
    jsonl = sorted(captures.read(tmp_path / "capture.jsonl"), key=key)
    parquet = sorted(captures.read(tmp_path / "archive"), key=key)
    assert jsonl == parquet


def test_validate_names_what_is_wrong(tmp_path: Path) -> None:
    records = run_records(2, 0.1, 5)
    broken = [dict(r) for r in records]
    call = next(i for i, r in enumerate(broken) if r["action"] == "StatusNotification" and r["msg_type"] == 2)
    broken[call]["payload"] = {**broken[call]["payload"], "connectorStatus": "Exploded"}
    del broken[call + 5]  # a seq gap on one connection (or an answer lost)
    unanswered = next(i for i, r in enumerate(broken) if r["action"] == "Heartbeat" and r["msg_type"] == 3)
    del broken[unanswered]
    path = tmp_path / "broken.jsonl"
    captures.write_jsonl(path, broken)
    done = subprocess.run([sys.executable, "-m", "twin", "validate", str(path), "--json"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["frames"] == len(broken) and not report["ok"]
    assert report["problems"]["schema: StatusNotification"] == 1
    assert report["problems"]["seq"] >= 2 and report["unanswered_calls"] >= 1
    fine = tmp_path / "fine.jsonl"
    captures.write_jsonl(fine, records)
    done = subprocess.run([sys.executable, "-m", "twin", "validate", str(fine), "--json"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and json.loads(done.stdout)["invalid"] == 0


def test_archive_files_appear_whole(tmp_path: Path) -> None:
    records = run_records(2, 0.2, 1)
    archive.write(tmp_path, records)
    archive.write(tmp_path, records)  # at least once: written twice, read once
    files = list(tmp_path.rglob("*"))
    assert not [f for f in files if f.name.endswith(".tmp")]
    assert len(list(captures.read(tmp_path))) == len(records)


def test_archive_files_are_clustered_by_action(small: list[dict[str, Any]], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import pyarrow.parquet as pq

    monkeypatch.setattr(archive, "ROW_GROUP_MIN", 200)  # the small capture's larger actions get their own
    monkeypatch.setattr(archive, "ROW_GROUP_MAX", 500)  # ... and the largest several, a range of stations each
    archive.write(tmp_path, small)
    declared = pq.SortingColumn.from_ordering(archive.SCHEMA, archive.CLUSTER)
    shared = split = 0
    for file in tmp_path.rglob("*.parquet"):
        meta = pq.ParquetFile(file).metadata
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        assert all(g.sorting_columns == declared for g in groups)
        action, station = (archive.SCHEMA.get_field_index(c) for c in ("action", "station_id"))
        spans = [(g.column(action).statistics, g.column(station).statistics) for g in groups]
        for (a, sa), (b, sb) in pairwise(spans):
            assert a.max < b.min or (a.min == a.max == b.min == b.max and sa.max <= sb.min), "out of order"
            split += a.max == b.min
        shared += sum(a.min != a.max for a, _ in spans)
        rows = pq.read_table(file, columns=["action", "station_id", "ts", "seq"]).to_pylist()
        large = {a for a, n in Counter(r["action"] for r in rows).items() if n >= 200}
        assert large and large <= {a.min for a, _ in spans if a.min == a.max}, "a large action shares a row group"
        for _, group in groupby(rows, key=lambda r: (r["action"], r["station_id"])):
            order = [(r["ts"], r["seq"]) for r in group]
            assert order == sorted(order), "a station's records of one action out of log order"
    assert shared, "the small actions share row groups"
    assert split, "the largest actions span row groups"
    key = ("station_id", "ts", "conn_id", "seq")
    assert list(captures.read(tmp_path)) == sorted(small, key=lambda r: tuple(r[k] for k in key))


EXAMPLES = Path(__file__).parent.parent / "datasets" / "import-examples"


def test_import_reads_json_and_text_logs(tmp_path: Path) -> None:
    records = list(importer.convert((EXAMPLES / "csms-log.jsonl").read_text().splitlines(), "ocpp2.1", "a.log"))
    assert [r["action"] for r in records] == ["Connected", "BootNotification", "BootNotification", "ReserveNow",
                                               "ReserveNow", "StatusNotification"]  # fmt: skip
    assert [r["origin"] for r in records] == ["gateway", "cs", "csms", "csms", "cs", "cs"]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[-1]["valid"] is False and "connectorStatus" in records[-1]["error"]
    assert records[-1]["ts"] == "2026-03-01T08:02:00.000Z"
    twin = fold.fold(records)["EXT-1"]
    assert twin["identity"]["vendor"] == "V" and twin["reservations"]["4"]["status"] == "active"
    command = ["import", str(EXAMPLES / "csms-log.txt"), "--out", str(tmp_path / "out.jsonl"), "--json"]
    done = subprocess.run([sys.executable, "-m", "twin", *command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"records": 4, "stations": 1, "invalid": 0, "out": str(tmp_path / "out.jsonl")}
    imported = list(captures.read(tmp_path / "out.jsonl"))
    assert [(r["origin"], r["msg_type"]) for r in imported] == [("gateway", 0), ("cs", 2), ("csms", 3), ("cs", 4)]
    (tmp_path / "bad.log").write_text("hello world\n")
    done = subprocess.run([sys.executable, "-m", "twin", "import", str(tmp_path / "bad.log"), "--out",
                           str(tmp_path / "x.jsonl")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and "line 1" in done.stderr


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), stations=st.integers(1, 14), days=st.floats(0.2, 2.6))
def test_any_run_is_a_valid_capture(seed: int, stations: int, days: float) -> None:
    """Across day boundaries too: answers landing after midnight, reservations made the
    evening before, offline frames replayed on reconnection."""
    records = run_records(stations, days, seed)
    report = check(records)
    assert report.ok, report.as_json(limit=5)


def test_processes_share_the_fleet_and_the_capture_is_the_same(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    one = simulator.write(tmp_path / "one.jsonl", 7, 0.5, seed=9, workers=1)
    two = simulator.write(tmp_path / "two.jsonl", 7, 0.5, seed=9, workers=2)
    assert one == two and (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "two.jsonl").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "two.jsonl"], "the parts are gone"
    assert simulator.write(tmp_path / "archive", 7, 0.5, seed=9, workers=2) == one
    said = [json.loads(pq.read_metadata(f).metadata[captures.SUMMARY.encode()])
            for f in (tmp_path / "archive").rglob("*.parquet")]  # fmt: skip
    assert sorted(s["stations"] for s in said) == [["CS-00001", "CS-00003"], ["CS-00004", "CS-00007"]], "runs"
    assert all(s["unique_keys"] for s in said)
    key = lambda r: (r["conn_id"], r["seq"])  # noqa: E731
    assert sorted(captures.read(tmp_path / "archive"), key=key) == sorted(
        captures.read(tmp_path / "one.jsonl"), key=key
    )


def test_a_fault_takes_a_bay_only_when_no_car_is_in_it() -> None:
    """Faults are planned after the day's cars: with them, the first day brings the same
    sessions as without any (a fault used to claim its bay from the morning, and every car
    before it went elsewhere), and no bay is Faulted while a transaction runs on it."""
    from twin.simulator.station import Rates

    def started(records: list[dict[str, Any]], before: str) -> list[tuple[str, str]]:
        return [(r["station_id"], r["payload"]["transactionInfo"]["transactionId"]) for r in records
                if r["action"] == "TransactionEvent" and r["msg_type"] == 2 and r["ts"] < before
                and r["payload"]["eventType"] == "Started"]  # fmt: skip

    calm = [r for day in simulate(8, 2, 3, rates=Rates(fault_per_day=0.0)) for r in day]
    faulty = [r for day in simulate(8, 2, 3, rates=Rates(fault_per_day=3.0)) for r in day]
    first_day = calm[0]["ts"][:10] + "T23:59:59.999Z"
    assert started(faulty, first_day) == started(calm, first_day) != []
    faults = charging = 0
    for station, own in groupby(sorted(faulty, key=lambda r: r["station_id"]), key=lambda r: r["station_id"]):
        on: dict[str, int] = {}  # a running transaction -> its EVSE (only Started names it)
        for r in sorted(own, key=lambda r: r["ts"]):
            p = r["payload"] if r["msg_type"] == 2 and r["origin"] == "cs" else {}
            if r["action"] == "TransactionEvent" and p:
                tx = p["transactionInfo"]["transactionId"]
                if p["eventType"] == "Started":
                    on[tx] = p["evse"]["id"]
                    charging += 1
                elif p["eventType"] == "Ended":
                    on.pop(tx, None)
            elif r["action"] == "StatusNotification" and p.get("connectorStatus") == "Faulted":
                faults += 1
                assert p["evseId"] not in on.values(), (station, r["ts"], on)
    assert faults >= 8 and charging
