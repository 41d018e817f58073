"""Analytics on hand-made captures whose answers are worked out by hand, the DuckDB and
Polars paths held to the same numbers, and the report command's formats."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.scenarios import PROFILE as SCENARIOS_PROFILE
from tests.scenarios import SCENARIOS, Script, reservations
from twin import archive, captures
from twin.analytics import (
    afir,
    energy_days_duckdb,
    energy_days_polars,
    frames,
    intervals,
    migration,
    monitoring,
    sessions_duckdb,
    sessions_polars,
    uptime,
)
from twin.analytics.frames import bounds, connect
from twin.analytics.reservations import reservations_duckdb, summary
from twin.fold import fold


def hand_made() -> list[dict[str, Any]]:
    """Three sessions with known answers:
    - T-AC on EVSE 1: 08:00 -> 10:30, register 1,000 -> 11,500 Wh (10.5 kWh), 11 kW peak,
      reservation 42, stopped Local;
    - T-V2G on EVSE 2: 09:00 -> 11:00, imports 2,000 Wh then exports 3,000 Wh, 7 kW export
      peak, one event replayed offline;
    - T-OPEN: started 12:00, still charging at the end of the capture (4 kWh so far)."""
    s = Script("AN-1").connect().boot()

    def tx(kind: str, tx_id: str, seq: int, at: str, evse: int | None, **kw: Any) -> None:
        s.tx(kind, tx_id, seq, evse, ts=f"2026-03-02T{at}:00.000Z", **kw)

    tx("Started", "T-AC", 0, "08:00", 1, imp=1000, p_imp=0, reservation=42)
    tx("Updated", "T-AC", 1, "09:00", 1, imp=6000, p_imp=11000)
    tx("Started", "T-V2G", 0, "09:00", 2, imp=50000, exp=7000, p_imp=0)
    tx("Updated", "T-V2G", 1, "09:30", 2, imp=52000, exp=7000, p_imp=4000)
    tx("Updated", "T-V2G", 2, "10:30", 2, imp=52000, exp=10000, p_exp=7000, offline=True)
    tx("Ended", "T-AC", 2, "10:30", 1, imp=11500, p_imp=0, stoppedReason="Local")
    tx("Ended", "T-V2G", 3, "11:00", 2, imp=52000, exp=10000, stoppedReason="EVDisconnected")
    tx("Started", "T-OPEN", 0, "12:00", 1, imp=11500)
    tx("Updated", "T-OPEN", 1, "12:30", None, imp=15500, p_imp=8000)  # only the first event names the EVSE
    return s.records


EXPECTED = [
    {"transaction_id": "T-AC", "station_id": "AN-1", "evse_id": 1, "started_at": "2026-03-02T08:00:00.000Z",
     "ended_at": "2026-03-02T10:30:00.000Z", "duration_min": 150.0, "import_kwh": 10.5, "export_kwh": 0.0,
     "peak_kw": 11.0, "peak_export_kw": 0.0, "reservation_id": 42, "stopped_reason": "Local", "offline": False},
    {"transaction_id": "T-V2G", "station_id": "AN-1", "evse_id": 2, "started_at": "2026-03-02T09:00:00.000Z",
     "ended_at": "2026-03-02T11:00:00.000Z", "duration_min": 120.0, "import_kwh": 2.0, "export_kwh": 3.0,
     "peak_kw": 4.0, "peak_export_kw": 7.0, "reservation_id": None, "stopped_reason": "EVDisconnected",
     "offline": True},
    {"transaction_id": "T-OPEN", "station_id": "AN-1", "evse_id": 1, "started_at": "2026-03-02T12:00:00.000Z",
     "ended_at": None, "duration_min": None, "import_kwh": 4.0, "export_kwh": 0.0, "peak_kw": 8.0,
     "peak_export_kw": 0.0, "reservation_id": None, "stopped_reason": None, "offline": False},
]  # fmt: skip


def write_as(root: Path, records: list[dict[str, Any]], aged: Callable[[pa.Table], pa.Table]) -> None:
    """Records as an earlier version wrote them: a file a date, without a summary, each file's
    table changed by ``aged`` first (every age lacks ``status_notification`` and ``meter_extremes``)."""
    import pyarrow.parquet as pq

    for date, group in groupby(records, key=lambda r: r["ts"][:10]):
        (root / f"date={date}").mkdir(parents=True, exist_ok=True)
        table = archive.table(list(group)).drop_columns(["status_notification", "meter_extremes"])
        pq.write_table(aged(table), root / f"date={date}" / f"part-{uuid.uuid4().hex}.parquet")


def write_untyped(root: Path, records: list[dict[str, Any]]) -> None:
    """As an archive written before the ``transaction_event`` column."""
    write_as(root, records, lambda table: table.drop_columns(["transaction_event"]))


def write_session_6(root: Path, records: list[dict[str, Any]]) -> None:
    """As sessions 5 and 6 wrote them: ``transaction_event`` typed, no ``status_notification``."""
    write_as(root, records, lambda table: table)


SESSION_4 = pa.struct([
    ("event_type", pa.string()), ("transaction_id", pa.string()), ("stopped_reason", pa.string()),
    ("evse_id", pa.int64()), ("happened", pa.string()), ("offline", pa.bool_()), ("reservation_id", pa.int64()),
    ("readings", pa.list_(pa.struct([("sampled", pa.string()), ("measurand", pa.string()), ("value", pa.float64())]))),
])  # fmt: skip
"""``transaction_event`` as session 4 wrote it: its timestamps as text."""


def write_text_times(root: Path, records: list[dict[str, Any]]) -> None:
    """As an archive of session 4."""

    def aged(table: pa.Table) -> pa.Table:
        at = table.schema.get_field_index("transaction_event")
        return table.set_column(at, pa.field("transaction_event", SESSION_4), table.column(at).cast(SESSION_4))

    write_as(root, records, aged)


@pytest.fixture(params=["jsonl", "parquet", "parquet-untyped", "parquet-mixed", "parquet-every-age"])
def capture(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The hand-made capture as JSONL and as Parquet: typed (the archive's derived columns),
    untyped (written before them), a mix of both, and files of all four ages at once (today's,
    session 6's without ``status_notification``, with text timestamps as in session 4, untyped)."""
    records = hand_made()
    if request.param == "jsonl":
        path = tmp_path / "hand.jsonl"
        captures.write_jsonl(path, records + records[5:9])  # redelivered records: dropped
        return path
    if request.param == "parquet-every-age":
        write_every_age(tmp_path / "archive", records)
        return tmp_path / "archive"
    first = write_untyped if request.param == "parquet-untyped" else archive.write
    again = archive.write if request.param == "parquet" else write_untyped
    first(tmp_path / "archive", records)
    again(tmp_path / "archive", records[3:12])  # at least once
    return tmp_path / "archive"


def write_every_age(root: Path, records: list[dict[str, Any]]) -> None:
    """The records in files of four ages, three batches written again in part."""
    write_text_times(root, records)
    write_untyped(root, records[3:12])
    write_session_6(root, records[6:13])
    archive.write(root, records[8:14], unique=True)


def test_the_typed_transaction_event_column_tolerates_any_payload() -> None:
    record = {"action": "TransactionEvent", "msg_type": 2, "origin": "cs", "payload": {
        "eventType": "Updated", "timestamp": 7, "offline": "yes", "evse": {"id": True}, "reservationId": "R-1",
        "transactionInfo": {"transactionId": "T-1"},
        "meterValue": [{"timestamp": "2026-03-02T10:00:00Z",
                        "sampledValue": [{"value": "12"}, {"value": 3.5}, 7]}, "x",
                       {"timestamp": "half past ten", "sampledValue": [{"value": 4}]},
                       {"timestamp": "2026-03-02T12:30:00+02:00", "sampledValue": [{"value": 5}]},
                       {"timestamp": "2026-03-02T10:45:00", "sampledValue": [{"value": 6}]}],
    }}  # fmt: skip
    ten = datetime(2026, 3, 2, 10, tzinfo=UTC)
    assert archive.transaction_event(record) == {
        "event_type": "Updated", "transaction_id": "T-1", "stopped_reason": None, "evse_id": None, "happened": None,
        "offline": None, "reservation_id": None,
        "readings": [{"sampled": ten, "measurand": None, "value": None},
                     {"sampled": ten, "measurand": None, "value": 3.5},
                     {"sampled": None, "measurand": None, "value": 4},  # not a time: null, as TRY_CAST makes it
                     {"sampled": ten + timedelta(minutes=30), "measurand": None, "value": 5},
                     {"sampled": ten + timedelta(minutes=45), "measurand": None, "value": 6}],  # no offset: UTC
    }  # fmt: skip
    assert archive.transaction_event({**record, "payload": [1, 2]}) is None
    assert archive.transaction_event({**record, "origin": "csms"}) is None
    assert archive.table([{**hand_made()[0], **record, "payload": record["payload"]}]).num_rows == 1


def test_compact_rewrites_files_of_every_age_in_the_layout(tmp_path: Path) -> None:
    """Files of four ages, three of them batches written again: ``twin compact`` leaves one
    file a date in today's layout, each record once, and the reports as they were. A date
    with a file that is not Parquet is left as it was, and the exit status says so."""
    import pyarrow.parquet as pq

    root = tmp_path / "archive"
    records = hand_made()
    write_every_age(root, records)
    reports = lambda: (list(captures.read(root)), sessions_duckdb(root), energy_days_duckdb(root),  # noqa: E731
                       intervals.status_intervals_duckdb(root), uptime.uptime(root), afir.afir(root))  # fmt: skip
    before = reports()
    broken = root / "date=2026-02-01" / "part-0.parquet"
    broken.parent.mkdir()
    broken.write_bytes(b"not Parquet")
    done = subprocess.run([sys.executable, "-m", "twin", "compact", str(root), "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr
    body = json.loads(done.stdout)
    dates = {d["date"]: d for d in body["dates"]}
    assert dates.pop("2026-02-01")["result"] == "unreadable" and broken.read_bytes() == b"not Parquet"
    assert {d["result"] for d in dates.values()} == {"compacted"} and body["duplicates"] == 9 + 7 + 6
    assert body["records"] == len(records) and body["files_before"] == 4 * len(dates) + 1
    broken.unlink()
    for date in dates:
        (file,) = (root / f"date={date}").glob("*.parquet")
        assert pq.read_schema(file).equals(archive.SCHEMA)
        said = json.loads(pq.read_metadata(file).metadata[captures.SUMMARY.encode()])
        assert said["unique_keys"] is True
        assert said["derived"] == ["transaction_event", "status_notification", "meter_extremes"]
    kept = pq.ParquetDataset(root).read(columns=["conn_id", "seq"]).to_pylist()
    assert sorted(kept, key=str) == sorted(({"conn_id": r["conn_id"], "seq": r["seq"]} for r in records), key=str)
    assert duplicate_free(root), "read as it is, without the dedupe"
    assert reports() == before
    files = sorted(root.rglob("*.parquet"))
    assert {r["result"] for r in archive.compact(root)} == {"already compact"}
    assert sorted(root.rglob("*.parquet")) == files


def duplicate_free(root: Path) -> list[str] | None:
    """The files ``frames.connect`` reads as they are (no dedupe), or None."""
    summaries = frames._summaries(duckdb.connect(), root)
    return frames._duplicate_free(summaries) if summaries else None


def test_reports_read_files_as_they_are_only_where_no_record_can_be_twice(tmp_path: Path) -> None:
    """The simulator's processes write a date's files with unique keys and stations of their
    own: reports read them without the dedupe. The same records written again, each file still
    truthful about itself, overlap in stations: the dedupe comes back, and every report is the
    same as from JSON lines."""
    from twin import simulator

    root = tmp_path / "archive"
    assert simulator.write(root, 6, 1.5, seed=4, workers=2) == simulator.write(tmp_path / "sim.jsonl", 6, 1.5, seed=4)
    files = duplicate_free(root)
    assert files is not None and sorted(files) == sorted(str(f) for f in root.rglob("*.parquet")) and len(files) == 4

    def reports(path: Path) -> tuple[Any, ...]:
        return (sessions_duckdb(path), energy_days_duckdb(path), uptime.uptime(path), afir.afir(path),
                intervals.status_intervals_duckdb(path), migration.migration_duckdb(path))  # fmt: skip

    expected = reports(tmp_path / "sim.jsonl")
    assert expected[0] and expected[2]["ports"] and reports(root) == expected
    archive.write(root, [r for r in captures.read(root) if r["station_id"] == "CS-00002"], unique=True)
    assert duplicate_free(root) is None
    assert reports(root) == expected


@pytest.mark.parametrize("said", [b"not JSON", b"[]", b'{"unique_keys": true}', b'{"unique_keys": true, "stations":'
                                  b' [1, 2], "ts": [null, null], "derived": []}', b'{"unique_keys": true, "stations": '
                                  b'["A", "B"], "ts": ["noon", null], "derived": []}'])  # fmt: skip
def test_a_summary_this_version_cannot_read_is_no_summary(tmp_path: Path, said: bytes) -> None:
    """A file whose ``twin.summary`` is not JSON, or not of the shape written, is read as a file
    without one: the dedupe, the schema and the column give what its summary would have, and
    every report is the same as from JSON lines."""
    import pyarrow.parquet as pq

    records = outage_day("UP-1").records
    captures.write_jsonl(tmp_path / "up.jsonl", records)
    root = tmp_path / "archive"
    archive.write(root, records, unique=True)
    assert duplicate_free(root)
    (file,) = root.rglob("*.parquet")
    table = pq.read_table(file)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, captures.SUMMARY.encode(): said}), file)
    assert duplicate_free(root) is None
    assert bounds(connect(root), root) == bounds(connect(tmp_path / "up.jsonl"), tmp_path / "up.jsonl")
    for report in (uptime.uptime, afir.afir, intervals.status_intervals_duckdb, sessions_duckdb):
        assert report(root) == report(tmp_path / "up.jsonl"), report


def test_compact_knows_a_file_in_the_layout_by_its_declared_order_and_summary(tmp_path: Path) -> None:
    """A file of today's schema that is not clustered and has no summary (as session 5 wrote
    them) is compacted; the file that replaces it is not compacted again."""
    import pyarrow.parquet as pq

    plain = tmp_path / "date=2026-03-01" / "part-0.parquet"
    plain.parent.mkdir()
    pq.write_table(archive.table(hand_made()), plain)
    assert [r["result"] for r in archive.compact(tmp_path)] == ["compacted"]
    assert [r["result"] for r in archive.compact(tmp_path)] == ["already compact"]


def test_compact_keeps_a_record_whose_payload_is_not_json(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    records = hand_made()
    at = next(i for i, r in enumerate(records) if r["action"] == "TransactionEvent")
    table = archive.table(records).drop_columns(["transaction_event"])  # untyped: compact derives the column
    payloads = table.column("payload").to_pylist()
    payloads[at] = "{not JSON"
    table = table.set_column(table.schema.get_field_index("payload"), "payload", pa.array(payloads, pa.string()))
    (tmp_path / "date=2026-03-01").mkdir()
    pq.write_table(table, tmp_path / "date=2026-03-01" / "part-0.parquet")
    (done,) = archive.compact(tmp_path)
    assert (done["result"], done["records"]) == ("compacted", len(records))
    kept = pq.ParquetDataset(tmp_path).read().to_pylist()
    (broken,) = [r for r in kept if r["payload"] == "{not JSON"]
    assert broken["transaction_event"] is None and broken["msg_id"] == records[at]["msg_id"]


@pytest.mark.parametrize("engine", [sessions_duckdb, sessions_polars])
def test_sessions_worked_out_by_hand(capture: Path, engine: Any) -> None:
    assert engine(capture) == EXPECTED


def test_sessions_from_and_to(capture: Path) -> None:
    rows = sessions_duckdb(capture, "2026-03-02T08:30:00Z", "2026-03-02T12:00:00Z")
    assert [r["transaction_id"] for r in rows] == ["T-V2G"], "by start, the end exclusive"
    assert sessions_polars(capture, "2026-03-02T08:30:00Z", "2026-03-02T12:00:00Z") == rows


def agree(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Equal, floats to the rounding (the engines round a half differently)."""

    def same(x: Any, y: Any) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return math.isclose(x, y, abs_tol=0.0015)
        return bool(x == y)

    return len(a) == len(b) and all(
        r.keys() == s.keys() and all(same(r[k], s[k]) for k in r) for r, s in zip(a, b, strict=True)
    )


def test_duckdb_and_polars_agree_on_the_sample() -> None:
    sample = Path(__file__).parent.parent / "datasets" / "sample"
    duck, polar = sessions_duckdb(sample), sessions_polars(sample)
    assert len(duck) > 100 and agree(duck, polar)
    assert any(r["export_kwh"] > 0 for r in duck) and any(r["reservation_id"] for r in duck)


def test_the_report_command(capture: Path, tmp_path: Path) -> None:
    def twin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "twin", "report", *args], capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    done = twin("sessions", "--archive", str(capture), "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["sessions"] == EXPECTED
    done = twin("sessions", "--archive", str(capture), "--csv", "--engine", "polars")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["transaction_id"] for r in rows] == ["T-AC", "T-V2G", "T-OPEN"] and rows[1]["export_kwh"] == "3.0"
    done = twin("sessions", "--archive", str(capture), "--parquet", str(tmp_path / "s.parquet"))
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "s.parquet").num_rows == 3
    done = twin("weather", "--archive", str(capture))
    assert done.returncode == 2 and "unknown report" in done.stderr
    done = twin("sessions", "--archive", str(tmp_path / "nowhere"))
    assert done.returncode == 1 and "no capture" in done.stderr


def test_sessions_from_events_read_where_they_lie(tmp_path: Path) -> None:
    """An archive in which no record can be twice, typed as today: sessions reads its events
    straight from the files, each part of the query only its own columns; the same sessions.
    Records written twice are deduplicated first, and read once."""
    once, twice = tmp_path / "once", tmp_path / "twice"
    archive.write(once, hand_made(), unique=True)
    archive.write(twice, hand_made())
    archive.write(twice, hand_made()[3:12])
    assert frames.events_direct(connect(once, ("TransactionEvent",), events=True))
    assert not frames.events_direct(connect(twice, ("TransactionEvent",), events=True))
    assert sessions_duckdb(once) == sessions_duckdb(twice) == EXPECTED
    window = ("2026-03-02T08:30:00Z", "2026-03-02T12:00:00Z")
    assert sessions_duckdb(once, *window) == sessions_duckdb(twice, *window) == EXPECTED[1:2]


def test_meter_extremes_hold_each_events_lowest_and_highest_readings() -> None:
    """``meter_extremes``: per TransactionEvent the lowest and highest energy register (a
    reading without a measurand is the import register) and the highest power, over all its
    meter values; a value that is not a number counts for nothing; null for other records."""
    s = Script("EX-1").connect().boot()
    s.cs("TransactionEvent", {"eventType": "Updated", "timestamp": s.now, "seqNo": 1,
                              "triggerReason": "MeterValuePeriodic", "transactionInfo": {"transactionId": "T-1"},
                              "evse": {"id": 1, "connectorId": 1}, "meterValue": [
        {"timestamp": "2026-03-02T10:00:00Z", "sampledValue": [
            {"value": 1200}, {"value": 1000.5, "measurand": "Energy.Active.Import.Register"},
            {"value": 900, "measurand": "Energy.Active.Export.Register"},
            {"value": 7000, "measurand": "Power.Active.Import"}, {"value": 230, "measurand": "Voltage"}]},
        {"timestamp": "2026-03-02T10:05:00Z", "sampledValue": [
            {"value": 1500}, {"value": "1e9", "measurand": "Energy.Active.Export.Register"},
            {"value": 11000, "measurand": "Power.Active.Import"}, {"value": -3, "measurand": "Power.Active.Export"}]},
    ]})  # fmt: skip
    s.tx("Updated", "T-1", 2, 1)  # no meter values
    s.tx("Ended", "T-1", 3, 1, exp=950, p_exp=0)
    table = archive.table(s.records)
    call = ("TransactionEvent", "cs", 2)
    events = [((r["action"], r["origin"], r["msg_type"]), m) for r, m in
              zip(s.records, table.column("meter_extremes").to_pylist(), strict=True)]  # fmt: skip
    assert [m for kind, m in events if kind == call] == [
        {"import_wh_min": 1000.5, "import_wh_max": 1500.0, "export_wh_min": 900.0, "export_wh_max": 900.0,
         "import_w_max": 11000.0, "export_w_max": -3.0},
        dict.fromkeys(archive.EXTREMES),
        {"import_wh_min": None, "import_wh_max": None, "export_wh_min": 950.0, "export_wh_max": 950.0,
         "import_w_max": None, "export_w_max": 0.0},
    ]  # fmt: skip
    assert all(m is None for kind, m in events if kind != call)
    assert archive.meter_extremes(table.column("transaction_event")).equals(table.column("meter_extremes").chunk(0))
    assert archive.meter_extremes(pa.chunked_array([], archive.TRANSACTION_EVENT)).to_pylist() == []


def without_meter_extremes(root: Path) -> None:
    """Each file of an archive as written before ``meter_extremes``: the column and its mention
    in the summary gone, the rest as it was."""
    for file in root.rglob("*.parquet"):
        table = pq.read_table(file)
        said = json.loads(table.schema.metadata[captures.SUMMARY.encode()])
        said["derived"].remove("meter_extremes")
        table = table.drop_columns(["meter_extremes"])
        archive._write_clustered(table.replace_schema_metadata({captures.SUMMARY: json.dumps(said)}), str(file))


def test_sessions_the_same_from_an_archive_with_meter_extremes_and_one_without(tmp_path: Path) -> None:
    """The same records, files with ``meter_extremes`` (sessions reads each event's extremes)
    and files without (sessions reads every reading, as before): the same sessions, and the
    same ``twin report sessions --json``, byte for byte; with the dedupe too, and for a mix of
    both (read from the readings)."""
    from twin import simulator

    new, old, mixed = tmp_path / "new", tmp_path / "old", tmp_path / "mixed"
    simulator.write(new, 6, 1.5, seed=4, workers=2)
    shutil.copytree(new, old)
    without_meter_extremes(old)
    shutil.copytree(new, mixed)
    without_meter_extremes(next(mixed.glob("date=*")))
    for path, has in ((new, True), (old, False), (mixed, False)):
        assert duplicate_free(path), path
        assert frames.meter_extremes(connect(path, ("TransactionEvent",), events=True)) is has, path
    expected = sessions_duckdb(old)
    assert len(expected) > 20 and any(r["export_kwh"] for r in expected) and any(r["peak_export_kw"] for r in expected)
    assert sessions_duckdb(new) == sessions_duckdb(mixed) == expected
    window = (expected[5]["started_at"], expected[-5]["started_at"])
    assert sessions_duckdb(new, *window) == sessions_duckdb(old, *window) == expected[5:-5]

    def printed(path: Path) -> bytes:
        done = subprocess.run([sys.executable, "-m", "twin", "report", "sessions", "--archive", str(path), "--json"],
                              capture_output=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.replace(str(path).encode(), b"ARCHIVE")

    assert printed(new) == printed(old)
    again = [r for r in captures.read(new) if r["station_id"] == "CS-00002"]
    for path in (new, old):
        archive.write(path, again)  # written twice: the dedupe, then the same columns
    assert duplicate_free(new) is None and frames.meter_extremes(connect(new, ("TransactionEvent",), events=True))
    assert sessions_duckdb(new) == sessions_duckdb(old) == expected


def test_every_writer_writes_meter_extremes_and_compact_keeps_them(tmp_path: Path) -> None:
    """The simulator, ``archive.write`` (the archive agent's and ``twin import``'s) and ``twin
    compact`` write ``meter_extremes`` as ``transaction_event`` gives it; compact gives it to
    files written before it, keeps it through the dedupe, and the sessions stay the same."""
    from twin import simulator

    def extremes_of(path: Path) -> None:
        events = 0
        for file in path.rglob("*.parquet"):
            table = pq.read_table(file)
            assert table.schema.equals(archive.SCHEMA), file
            assert "meter_extremes" in json.loads(table.schema.metadata[captures.SUMMARY.encode()])["derived"]
            expected = archive.meter_extremes(table.column("transaction_event"))
            assert table.column("meter_extremes").combine_chunks().equals(expected), file
            events += len(expected) - expected.null_count
        assert events > 100, path

    simulated, written, old = tmp_path / "simulated", tmp_path / "written", tmp_path / "old"
    simulator.write(simulated, 4, 1.2, seed=2, workers=1)
    extremes_of(simulated)
    records = list(captures.read(simulated))
    archive.write(written, records[: len(records) // 2])
    archive.write(written, records[len(records) // 3 :])  # batches delivered again, in part
    extremes_of(written)
    shutil.copytree(simulated, old)
    without_meter_extremes(old)
    write_every_age(tmp_path / "every-age", records[:5000])
    expected = {path: sessions_duckdb(path) for path in (written, old, tmp_path / "every-age")}
    assert expected[written] == expected[old] == sessions_duckdb(simulated)
    for path, sessions in expected.items():
        assert {r["result"] for r in archive.compact(path)} == {"compacted"}, path
        extremes_of(path)
        assert duplicate_free(path) and frames.meter_extremes(connect(path, ("TransactionEvent",), events=True))
        assert sessions_duckdb(path) == sessions, path
        assert {r["result"] for r in archive.compact(path)} == {"already compact"}, path


def test_twin_report_starts_without_the_other_commands() -> None:
    """``twin report`` imports its own command, not the gateway, Kafka, the fold or Polars
    (twin.cli.COMMANDS): they took 0.8 s of every report's start."""
    sample = Path(__file__).parent.parent / "datasets" / "sample"
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "twin", "report", "sessions", "--archive",
                           str(sample), "--json"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
    assert "twin.analytics.sessions" in imported  # (importlib.import_module's imports are not listed)
    assert not imported & {"kafka", "polars", "twin.fold", "twin.gateway.server", "twin.cli.gateway"}
    assert len(json.loads(done.stdout)["sessions"]) > 100


def test_every_command_is_where_the_command_line_looks_for_it() -> None:
    """``twin COMMAND`` imports the module twin.cli.COMMANDS names: each command is there."""
    from typer.main import get_command_name

    from twin.cli import COMMANDS, app

    found = {c.name or get_command_name(c.callback.__name__): c.callback.__module__  # type: ignore[union-attr]
             for c in app.registered_commands}  # fmt: skip
    found |= {g.name: g.typer_instance.registered_commands[0].callback.__module__  # type: ignore[union-attr]
              for g in app.registered_groups}  # fmt: skip
    assert found == {name: f"twin.cli.{module}" for name, module in COMMANDS.items()}


ENERGY_DAY = {"station_id": "AN-1", "day": "2026-03-02", "import_kwh": 16.5, "export_kwh": 3.0, "discharge_hours": 1.0,
              "peak_export_kw": 7.0}  # fmt: skip


@pytest.mark.parametrize("engine", [energy_days_duckdb, energy_days_polars])
def test_energy_worked_out_by_hand(capture: Path, engine: Any) -> None:
    """EVSE 1: 1,000 -> 15,500 Wh over two sessions; EVSE 2: 50,000 -> 52,000 Wh in and
    7,000 -> 10,000 Wh out, the export rising between 09:30 and 10:30 at up to 7 kW."""
    assert engine(capture) == [ENERGY_DAY]
    later = engine(capture, "2026-03-02T10:00:00Z")
    assert later == [{**ENERGY_DAY, "import_kwh": 9.5}], "rises shown by readings from 10:00 on: 5.5 + 4 kWh"


def test_energy_engines_agree_on_the_sample_and_match_the_sessions() -> None:
    sample = Path(__file__).parent.parent / "datasets" / "sample"
    duck, polar = energy_days_duckdb(sample), energy_days_polars(sample)
    assert len(duck) >= 20 and agree(duck, polar)
    sessions = sessions_duckdb(sample)
    assert math.isclose(sum(d["import_kwh"] for d in duck), sum(s["import_kwh"] for s in sessions), abs_tol=0.1)
    assert math.isclose(sum(d["export_kwh"] for d in duck), sum(s["export_kwh"] for s in sessions), abs_tol=0.1)
    assert sum(d["discharge_hours"] for d in duck) > 0


def test_the_energy_report(capture: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "twin", "report", "energy", "--archive", str(capture), "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["days"] == [ENERGY_DAY]
    assert body["stations"] == [{k: v for k, v in ENERGY_DAY.items() if k != "day"}]


def test_reservations_worked_out_by_hand(tmp_path: Path) -> None:
    """The scenario: 7 used by a transaction, 8 expired, 9 refused (Occupied), 10 cancelled."""
    path = tmp_path / "res.jsonl"
    captures.write_jsonl(path, reservations().records)
    rows = reservations_duckdb(path)
    assert [(r["reservation_id"], r["status"]) for r in rows] == [(7, "used"), (8, "expired"), (9, "rejected"),
                                                                   (10, "cancelled")]  # fmt: skip
    assert rows[0]["minutes_to_plug_in"] == 0.0 and rows[2]["ended_at"] == rows[2]["made_at"]
    expected = {"made": 4, "used": 1, "expired": 1, "cancelled": 1, "rejected": 1, "removed": 0, "active": 0,
                "no_show_rate": round(1 / 3, 4), "median_minutes_to_plug_in": 0.0}  # fmt: skip
    assert summary(rows) == expected
    done = subprocess.run([sys.executable, "-m", "twin", "report", "reservations", "--archive", str(path), "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    body = json.loads(done.stdout)
    assert body["reservations"] == rows and body["summary"]["made"] == 4


def test_reservations_agree_with_the_twins_on_the_sample() -> None:
    sample = Path(__file__).parent.parent / "datasets" / "sample"
    twins = fold(captures.read(sample))
    rows = reservations_duckdb(sample)
    assert {r["status"] for r in rows} >= {"used", "expired", "cancelled", "rejected"}
    for r in rows:
        assert twins[r["station_id"]]["reservations"][str(r["reservation_id"])]["status"] == r["status"], r


def test_monitoring_events_by_severity_and_component(tmp_path: Path) -> None:
    path = tmp_path / "mon.jsonl"
    old = Script("MON-201", "ocpp2.0.1").connect().boot()
    event = {"eventId": 1, "timestamp": old.now, "trigger": "Delta", "actualValue": "true",
             "eventNotificationType": "HardWiredMonitor", "component": {"name": "Connector", "evse": {"id": 2}},
             "variable": {"name": "Problem"}}  # fmt: skip
    old.cs("NotifyEvent", {"generatedAt": old.now, "seqNo": 0, "eventData": [event]})
    captures.write_jsonl(path, SCENARIOS["monitoring"][0]().records + old.records)
    rows = monitoring.monitoring_duckdb(path)
    fields = ("station_id", "component", "variable", "severity", "severity_name", "monitor_id", "evse_id")
    assert sorted(tuple(r[f] for f in fields) for r in rows) == [
        ("MON-201", "Connector", "Problem", None, "unknown", None, 2),
        ("SC-MON", "EVSE", "Temperature", 2, "System Failure", 4, None),
    ]
    assert monitoring.counts(rows) == {"events": 2, "by_severity": {"2 System Failure": 1, "unknown": 1},
                                       "by_component": {"EVSE": 1, "Connector": 1}}  # fmt: skip


def test_migration_from_traffic_and_inventory(tmp_path: Path) -> None:
    path = tmp_path / "fleet.jsonl"
    records = [r for name in ("identity-2.1", "identity-2.0.1", "v2g") for r in SCENARIOS[name][0]().records]
    captures.write_jsonl(path, records)
    rows = {r["station_id"]: r for r in migration.migration_duckdb(path)}
    assert {k: (r["protocol"], r["bidirectional"], r["iso15118_20"]) for k, r in rows.items()} == {
        "SC-ID-21": ("ocpp2.1", False, False), "SC-ID-01": ("ocpp2.0.1", False, False),
        "SC-V2G": ("ocpp2.1", True, True)}  # fmt: skip
    (tmp_path / "fleet.jsonl.stations.json").write_text(json.dumps([{"station_id": "SC-ID-21", "bidirectional": True,
                                                                      "iso15118": True}]))  # fmt: skip
    summary_ = migration.summary(migration.migration_duckdb(path))
    assert summary_ == {"stations": 3, "ocpp2.1": 2, "ocpp2.0.1": 1, "bidirectional": 2, "iso15118_20": 2,
                        "ready_for_v2g": 2}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "twin", "report", "migration", "--archive", str(path), "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert json.loads(done.stdout)["summary"] == summary_


def outage_day(station: str) -> Script:
    """From 08:00: offline 10:00-11:30, port 1 Faulted 13:00-14:00, port 2 Unavailable
    14:40-15:10."""
    s = Script(station).connect().status(1, "Available").status(2, "Available")
    s.at(120).disconnect(1006)
    s.at(210).connect()
    s.at(300).status(1, "Faulted")
    s.at(360).status(1, "Available")
    s.at(400).status(2, "Unavailable")
    s.at(430).status(2, "Available")
    return s


def test_uptime_worked_out_by_hand(tmp_path: Path) -> None:
    """A day from 08:00: the station offline 10:00-11:30 (exactly 90 minutes, both ports down),
    port 1 Faulted 13:00-14:00, port 2 Unavailable (maintenance) 14:40-15:10."""
    s = outage_day("UP-1")
    path = tmp_path / "up.jsonl"
    captures.write_jsonl(path, s.records)
    window = {"since": "2026-03-01T08:00:00Z", "until": "2026-03-02T08:00:00Z"}
    nevi = uptime.uptime(path, "nevi", **window)
    ports = {p["evse_id"]: p for p in nevi["ports"]}
    assert (ports[1]["down_minutes"], ports[1]["excluded_minutes"]) == (150.0, 0.0)
    assert (ports[2]["down_minutes"], ports[2]["excluded_minutes"]) == (120.0, 30.0)
    assert ports[1]["measured_minutes"] == 1440.0
    assert ports[1]["uptime_pct"] == round(100 * (1440 - 150) / 1440, 3)  # 89.583
    assert ports[2]["uptime_pct"] == round(100 * (1440 - 90) / 1440, 3)  # 93.75: maintenance excluded
    assert nevi["network"] == {"uptime_pct": round((89.583 + 93.75) / 2, 3), "ports_counted": 2, "pass": False}
    uk = uptime.uptime(path, "uk", **window)
    assert [p["uptime_pct"] for p in uk["ports"]] == [89.583, round(100 * (1440 - 120) / 1440, 3)]
    done = subprocess.run([sys.executable, "-m", "twin", "report", "uptime", "--archive", str(path), "--rule", "nevi",
                           "--from", window["since"], "--to", window["until"], "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    body = json.loads(done.stdout)
    assert body["rule"] == "nevi" and body["ports"] == nevi["ports"] and body["network"] == nevi["network"]
    table = subprocess.run([sys.executable, "-m", "twin", "report", "uptime", "--archive", str(path), "--rule", "nevi",
                            "--from", window["since"], "--to", window["until"]],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    said = " ".join(table.stderr.split())  # the console wraps, wherever
    assert "uptime by pool" in said and "network: 91.666% over 2 ports under --rule nevi" in said and "fail" in said


def test_an_older_connection_closing_after_a_newer_one_came_is_no_outage(tmp_path: Path) -> None:
    """At 10:00 the station connects again while the gateway still holds its older connection,
    which the gateway closes a minute later: no outage, as the twin folds it. At 12:00 the
    latest connection drops for 30 minutes: an outage."""
    s = Script("RC-1").connect().status(1, "Available")
    older = s.conn, s.seq
    s.at(120).connect()
    newer = s.conn, s.seq
    s.conn, s.seq = older
    s.at(121).disconnect(4000)
    s.conn, s.seq = newer
    s.at(240).disconnect(1006)
    s.at(270).connect()
    path = tmp_path / "reconnect.jsonl"
    captures.write_jsonl(path, s.records)
    assert fold(s.records[:5])["RC-1"]["connection"]["online"] is True, "the twin: still online"
    (port,) = uptime.uptime(path, "nevi", "2026-03-01T08:00:00Z", "2026-03-02T08:00:00Z")["ports"]
    assert (port["down_minutes"], port["measured_minutes"]) == (30.0, 1440.0)
    assert port["uptime_pct"] == round(100 * (1440 - 30) / 1440, 3)


def test_a_window_opening_in_an_outage_counts_the_outage_from_its_start(tmp_path: Path) -> None:
    """The station offline 10:00-11:30 and a StatusNotification in the log at 10:10 (a late
    frame): from 10:30, the port is down for 60 minutes, however its statuses before the window
    fall (a status span wholly before the window overlaps nothing)."""
    s = Script("LATE-1").connect().status(1, "Available")
    s.at(120).disconnect(1006)
    s.at(130).status(1, "Available")
    s.at(210).connect()
    path = tmp_path / "late.jsonl"
    captures.write_jsonl(path, s.records)
    (port,) = uptime.uptime(path, "nevi", "2026-03-01T10:30:00Z", "2026-03-02T08:00:00Z")["ports"]
    assert (port["down_minutes"], port["measured_minutes"]) == (60.0, 1290.0)


def test_uptime_afir_and_status_from_files_of_every_age(tmp_path: Path) -> None:
    """Without --from/--to uptime's window is the log's first to last record: the files'
    summaries give them, and a file without one is read for them. Files of every age (those
    without ``status_notification`` derive it from the payload in SQL, a field of the wrong
    JSON type null as in Python) give the same uptime, status intervals and afir as JSON lines,
    before and after ``twin compact``."""
    import pyarrow.parquet as pq

    s = outage_day("UP-1").at(500)
    for odd in ({"evseId": "1", "connectorStatus": "Faulted"}, {"evseId": 1.0, "connectorStatus": "Faulted"},
                {"evseId": True, "connectorStatus": "Faulted", "connectorId": "1"},
                {"evseId": 2**63, "connectorStatus": "Faulted"}, {"evseId": 1, "connectorStatus": 5},
                {"evseId": "3", "connectorStatus": "Available", "timestamp": "half past ten"},
                {"evseId": "3", "connectorStatus": "Available", "timestamp": 7}):  # fmt: skip
        s.cs("StatusNotification", {"timestamp": s.now, "connectorId": 1, **odd})
    records = s.records
    captures.write_jsonl(tmp_path / "up.jsonl", records)
    archive.write(tmp_path / "archive", records)
    write_session_6(tmp_path / "session-6", records)
    plain = tmp_path / "plain" / f"date={records[0]['ts'][:10]}"
    plain.mkdir(parents=True)
    pq.write_table(archive.table(records), plain / "part-0.parquet", write_statistics=False)
    write_every_age(tmp_path / "every-age", records)
    first, last = (datetime.fromisoformat(f(r["ts"] for r in records)) for f in (min, max))

    def derived(path: Path) -> list[Any]:
        return [row[0] for row in connect(path).execute("""
            SELECT status_notification FROM frames WHERE action = 'StatusNotification' AND msg_type = 2
            ORDER BY ts, conn_id, seq
        """).fetchall()]  # fmt: skip

    statuses = derived(tmp_path / "up.jsonl")
    at = [datetime.fromisoformat(r["payload"]["timestamp"]) for r in records[-14:-4:2]]
    assert statuses[-7:] == [
        {"evse_id": None, "connector_id": 1, "status": "Faulted", "happened": at[0]},
        {"evse_id": None, "connector_id": 1, "status": "Faulted", "happened": at[1]},
        {"evse_id": None, "connector_id": None, "status": "Faulted", "happened": at[2]},
        {"evse_id": None, "connector_id": 1, "status": "Faulted", "happened": at[3]},
        {"evse_id": 1, "connector_id": 1, "status": None, "happened": at[4]},
        {"evse_id": None, "connector_id": 1, "status": "Available", "happened": None},
        {"evse_id": None, "connector_id": 1, "status": "Available", "happened": None},
    ]
    whole = uptime.uptime(tmp_path / "up.jsonl", "nevi")
    assert (whole["from"], whole["to"]) == tuple(t.isoformat().replace("+00:00", "Z") for t in (first, last))
    assert [p["evse_id"] for p in whole["ports"]] == [1, 2], "the odd statuses name no port"
    expected = (whole, intervals.status_intervals_duckdb(tmp_path / "up.jsonl"), afir.afir(tmp_path / "up.jsonl"))
    for path in (tmp_path / "archive", tmp_path / "session-6", tmp_path / "plain", tmp_path / "every-age"):
        assert derived(path) == statuses, path
        assert bounds(connect(path), path) == (first, last), path
        assert (uptime.uptime(path, "nevi"), intervals.status_intervals_duckdb(path), afir.afir(path)) == expected
        archive.compact(path) and list(archive.compact(path))
        assert derived(path) == statuses and uptime.uptime(path, "nevi") == whole, path


def test_afir_checks_per_pool(tmp_path: Path) -> None:
    """Pool X: two 300 kW DC points (600 kW, two of 150 kW or more): the 2027 core threshold
    passes; both have a per-kWh tariff; only one accepted a charging profile, so smart
    charging is unknown. A station outside the inventory is unknown throughout."""
    tariff = {"evseId": 1, "tariff": {"tariffId": "T", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.59}]}}}
    records = []
    for station in ("AF-1", "AF-2", "AF-3"):
        s = Script(station).connect().boot().status(1, "Available")
        s.csms("SetDefaultTariff", tariff, {"status": "Accepted"})
        if station == "AF-1":
            s.csms("SetChargingProfile", SCENARIOS_PROFILE, {"status": "Accepted"})
        records += s.records
    path = tmp_path / "afir.jsonl"
    captures.write_jsonl(path, records)
    point = {"pool_id": "POOL-X", "max_kw": 300.0, "evses": 1, "bidirectional": False, "iso15118": True}
    (tmp_path / "afir.jsonl.stations.json").write_text(json.dumps([{"station_id": "AF-1", **point},
                                                                   {"station_id": "AF-2", **point}]))  # fmt: skip
    pools = {p["pool_id"]: p for p in afir.afir(path)}
    x = pools["POOL-X"]
    assert (x["stations"], x["total_kw"], x["points_150kw"]) == (["AF-1", "AF-2"], 600.0, 2)
    results = {c["rule"]: c["result"] for c in x["checks"]}
    assert results == {
        "Art. 3 TEN-T core, end 2025": "pass", "Art. 3 TEN-T core, end 2027": "pass",
        "Art. 3 TEN-T comprehensive, 2030": "pass", "Art. 3 TEN-T comprehensive, 2035": "pass",
        "Art. 5(4) ad hoc price per kWh at 50 kW and more": "pass", "Art. 5(8) smart charging": "unknown",
        "ISO 15118-20 (from 2027)": "pass", "Art. 20 dynamic data (status) freshness": "pass",
        "Art. 20 data published (static fields, ad hoc price)": "fail",
    }  # fmt: skip
    assert "AF-2" in next(c["why"] for c in x["checks"] if c["rule"] == "Art. 5(8) smart charging")
    published = next(c["why"] for c in x["checks"] if c["rule"].startswith("Art. 20 data published"))
    assert "address" in published and "operator" in published  # this inventory has neither
    alone = pools["(no pool) AF-3"]
    assert alone["total_kw"] is None and alone["checks"][0]["result"] == "unknown"
    done = subprocess.run([sys.executable, "-m", "twin", "report", "afir", "--archive", str(path), "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    body = json.loads(done.stdout)
    assert [p["pool_id"] for p in body["pools"]] == ["(no pool) AF-3", "POOL-X"]
    assert {"pool_id", "total_kw", "points_150kw", "checks"} <= body["pools"][1].keys()


def test_status_and_connectivity_intervals_worked_out_by_hand(tmp_path: Path) -> None:
    """The uptime day above: connected 08:00-10:00 (closed 1006) and from 11:30 on (last
    record 15:10); port 1 Available 300 min, Faulted 60, Available since 14:00; port 2
    Available 400 min, Unavailable 30, Available since 15:10. Both engines, both formats."""
    from twin.analytics import intervals

    s = outage_day("IV-1")
    jsonl = tmp_path / "iv.jsonl"
    captures.write_jsonl(jsonl, s.records)
    archive.write(tmp_path / "archive", s.records + s.records[2:5])  # a redelivery: dropped
    for path in (jsonl, tmp_path / "archive"):
        status = intervals.status_intervals_duckdb(path)
        assert status == intervals.status_intervals_polars(path)
        spans = [(r["evse_id"], r["status"], r["minutes"] and round(r["minutes"])) for r in status]
        assert spans == [(1, "Available", 300), (1, "Faulted", 60), (1, "Available", None),
                         (2, "Available", 400), (2, "Unavailable", 30), (2, "Available", None)]  # fmt: skip
        assert status[1]["started_at"].startswith("2026-03-01T13:00:00") and status[1]["ended_at"].startswith(
            "2026-03-01T14:00:00"
        )
        links = intervals.connectivity_intervals_duckdb(path)
        assert links == intervals.connectivity_intervals_polars(path)
        assert [(round(r["minutes"]), r["close_code"], r["disconnected_at"] is None) for r in links] == [
            (120, 1006, False), (220, None, True)]  # fmt: skip
        assert links[1]["last_seen"].startswith("2026-03-01T15:10:00")


def test_afir_art_5_judges_the_price_in_force(tmp_path: Path) -> None:
    """Worked by hand; the log ends on Sunday 1 March 2026 at 08:00 UTC, and each price in force
    then and at each change in the week after is judged. POOL-KWH: a 150 kW point at 0.59/kWh
    with a 0.10/min occupancy fee: passes. POOL-MIN: a 150 kW point priced per minute only:
    fails. POOL-MIX: a 150 kW point per kWh from 07:00 to 22:00 and per minute at night (fails
    at 22:00 that day), a 150 kW point whose per-kWh tariff was cleared (fails: none in force),
    and a 22 kW AC point priced per minute with a session fee (below 50 kW: its components).
    POOL-ZONE: the day/night tariff on a station whose clock the log set to Europe/Berlin: its
    times of day are local, so it fails at 21:00 UTC."""
    kwh = {"tariffId": "KWH", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.59}]},
           "idleTime": {"prices": [{"priceMinute": 0.10}]}}  # fmt: skip
    per_min = {"tariffId": "MIN", "currency": "EUR", "chargingTime": {"prices": [{"priceMinute": 0.30}]}}
    day = {"startTimeOfDay": "07:00", "endTimeOfDay": "22:00"}
    night = {"startTimeOfDay": "22:00", "endTimeOfDay": "07:00"}
    day_night = {"tariffId": "DN", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.59, "conditions": day}]},
                 "chargingTime": {"prices": [{"priceMinute": 0.20, "conditions": night}]}}  # fmt: skip
    ac = {"tariffId": "AC", "currency": "EUR", "chargingTime": {"prices": [{"priceMinute": 0.05}]},
          "fixedFee": {"prices": [{"priceFixed": 1.00}]}}  # fmt: skip
    records: list[dict[str, Any]] = []
    point = {"max_kw": 150.0, "evses": 1, "kind": "DC", "bidirectional": False, "iso15118": True}
    inventory = []
    clock = {"component": {"name": "ClockCtrlr"}, "variable": {"name": "TimeZone"}}
    for station, pool, tariff in (("P-KWH", "POOL-KWH", kwh), ("P-MIN", "POOL-MIN", per_min),
                                  ("M-DN", "POOL-MIX", day_night), ("M-GONE", "POOL-MIX", kwh),
                                  ("M-AC", "POOL-MIX", ac), ("Z-DN", "POOL-ZONE", day_night)):  # fmt: skip
        s = Script(station).connect().boot().status(1, "Available")
        if station == "Z-DN":  # its clock in Berlin (UTC+1 in March): its night begins at 21:00 UTC
            s.csms("SetVariables", {"setVariableData": [{**clock, "attributeValue": "Europe/Berlin"}]},
                   {"setVariableResult": [{**clock, "attributeStatus": "Accepted"}]})  # fmt: skip
        s.csms("SetDefaultTariff", {"evseId": 0, "tariff": tariff}, {"status": "Accepted"})
        if station == "M-GONE":
            s.csms("ClearTariffs", {"tariffIds": ["KWH"]},
                   {"clearTariffsResult": [{"tariffId": "KWH", "status": "Accepted"}]})  # fmt: skip
        records += s.records
        kw = {"max_kw": 22.0, "evses": 2, "kind": "AC"} if station == "M-AC" else {}
        inventory.append({"station_id": station, "pool_id": pool, **point, **kw})
    path = tmp_path / "art5.jsonl"
    captures.write_jsonl(path, records)
    (tmp_path / "art5.jsonl.stations.json").write_text(json.dumps(inventory))
    pools = {p["pool_id"]: {c["rule"]: c for c in p["checks"]} for p in afir.afir(path)}
    per_kwh = "Art. 5(4) ad hoc price per kWh at 50 kW and more"
    parts = "Art. 5 ad hoc price and its components below 50 kW"
    assert pools["POOL-KWH"][per_kwh]["result"] == "pass" and parts not in pools["POOL-KWH"]
    end = max(r["ts"] for r in records)
    assert pools["POOL-MIN"][per_kwh] == {"rule": per_kwh, "result": "fail", "why": f"P-MIN: no per-kWh price at {end}"}
    mix = pools["POOL-MIX"]
    assert mix[per_kwh]["result"] == "fail"
    assert mix[per_kwh]["why"] == ("M-DN: no per-kWh price at 2026-03-01T22:00:00.000Z; "
                                   "M-GONE: no default tariff in force")  # fmt: skip
    why = "in force on every station below 50 kW (1): per minute charging, per session"
    assert mix[parts] == {"rule": parts, "result": "pass", "why": why}
    assert pools["POOL-ZONE"][per_kwh]["why"] == "Z-DN: no per-kWh price at 2026-03-01T21:00:00.000Z"


def test_bad_times_and_unreadable_archives_are_one_line_and_an_empty_report_says_so(tmp_path: Path) -> None:
    """A time option that is not ISO 8601 is a usage error naming it (exit 2), checked before
    anything reads the archive; files DuckDB cannot read as one archive are one line (exit 1);
    a report with no rows says "0 rows" (a table without columns printed nothing)."""
    sample = Path(__file__).parent.parent / "datasets" / "sample"

    def twin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "twin", *args], capture_output=True, text=True, timeout=120)

    for args, option in ((("report", "sessions", "--archive", str(sample), "--from", "garbage"), "--from"),
                         (("report", "grid", "--archive", str(sample), "--to", "2026-13-01"), "--to"),
                         (("state", "CS-00001", "--capture", str(sample), "--at", "garbage"), "--at"),
                         (("sites", "SITE-A", "--capture", str(sample), "--at", "garbage"), "--at"),
                         (("control", "limit", "SITE-A", "--import-kw", "5", "--start", "garbage"), "--start"),
                         (("replay", str(sample), "--target", "ws://127.0.0.1:1/ocpp", "--from", "x"),
                          "--from")):  # fmt: skip
        done = twin(*args)
        assert done.returncode == 2 and option in done.stderr and "Traceback" not in done.stderr, done.stderr
    shutil.copytree(sample, tmp_path / "archive")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "stray.parquet")
    done = twin("report", "afir", "--archive", str(tmp_path))
    assert done.returncode == 1 and done.stderr.startswith(f"error: reading {tmp_path}"), done.stderr
    assert "Traceback" not in done.stderr
    done = twin("report", "reservations", "--archive", str(sample), "--from", "2030-01-01")
    assert done.returncode == 0 and "reservations: 0 rows" in done.stderr
