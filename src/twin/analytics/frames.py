"""The frame log as a table: DuckDB view ``frames`` and a Polars LazyFrame, duplicates
dropped. A Parquet archive is read where it lies; a ``.jsonl`` capture is loaded through
the archive's schema first."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import orjson

from twin import captures

if TYPE_CHECKING:
    import polars as pl
# polars and pyarrow are imported by the paths that use them: a DuckDB report starts 0.3 s sooner


def _arrow(path: Path) -> object:
    from twin import archive

    return archive.table(list(captures.read(path, dedupe=False)))


def connect(
    capture: str | Path,
    actions: tuple[str, ...] | None = None,
    where: str | None = None,
    once: bool = False,
    events: bool = False,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the view ``frames`` (one row per record, duplicates dropped,
    ``ts`` a timestamp, ``payload`` JSON); with ``actions``, only the records of those
    actions. A report names the actions it reads: the filter then runs before the dedupe
    (DuckDB cannot push it through the window that drops duplicates), so only those records
    are sorted and carried (at 10 M records: 8.8 s -> a fraction for uptime). ``where``: one
    more SQL condition on the stored columns, also before the dedupe (a duplicate is the same
    record, so it keeps both copies or neither). ``once``: ``frames`` is a table, read and
    deduplicated once, for SQL that refers to it many times (a view is read at every mention);
    where no record can be twice (``_duplicate_free``), ``frames`` is a view whatever ``once``
    says: nothing to drop, and each mention's filters reach the scan (afir 0.34 -> 0.25 s).
    ``events``: ``frames`` holds only the stations' CALLs, and the view ``transaction_events``
    has their TransactionEvents as typed fields (the archive's ``transaction_event`` column,
    or the same parsed from the payload); without it ``frames`` does not carry that column (a
    table of the frames would: afir 2.4 -> 4.3 s at 9.8 M records); where every file has the
    archive's ``meter_extremes`` (:func:`meter_extremes`), ``transaction_events`` has it too.
    ``frames`` always has ``status_notification`` (the archive's column, or the same from the
    payload)."""
    path = captures.local(capture)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # it writes to stdout, where --json goes
    # Each file's footer read once, not at every query of a report (uptime at 9.8 M records:
    # 0.22 -> 0.18 s). Archive files are never changed in place: a new file has a new name.
    con.execute("SET parquet_metadata_cache = true")
    con.execute("SET TimeZone = 'UTC'")  # timestamps are formatted as the log's UTC
    summaries = _summaries(con, path) if path.is_dir() else None
    pinned = _duplicate_free(summaries) if summaries else None
    if pinned is not None:  # these files, whatever comes after: what makes them free of duplicates
        source = f"read_parquet([{sql_list(pinned)}], hive_partitioning = true, union_by_name = true)"
    elif path.is_dir():
        source = f"read_parquet({_files(path)}, hive_partitioning = true, union_by_name = true)"
    else:
        con.register("jsonl_capture", _arrow(path))
        source = "jsonl_capture"
    conditions = [f"({where})"] if where else []
    if actions:
        conditions.insert(0, f"action IN ({sql_list(actions)})")
    if events:  # only stations' CALLs go through the dedupe (at 9.8 M records: half the keys, energy 3.6 -> 3.3 s)
        conditions.append("msg_type = 2 AND origin = 'cs'")
    filtered = "WHERE " + " AND ".join(conditions) if conditions else ""
    stored = _stored(con, path, summaries)
    if summaries:  # the log's first and last ts, for bounds
        spans = [said["ts"] for said in summaries.values() if said["ts"][0]]
        if spans:
            first, last = min(ts[0] for ts in spans), max(ts[1] for ts in spans)
            con.execute("SET VARIABLE twin_ts = ?", [[first.isoformat(), last.isoformat()]])  # text: see bounds
    typed = stored["transaction_event"] if events else "none"
    extremes = ", meter_extremes" if typed == "all" and stored["meter_extremes"] == "all" else ""
    con.execute(f"CREATE VIEW frames_all AS SELECT * FROM {source}")  # as stored: for bounds and station lists
    carried = ", transaction_event" + extremes if typed != "none" else ""
    status = {"all": "status_notification", "none": STATUS_FROM_PAYLOAD,
              "some": f"coalesce(status_notification, {STATUS_FROM_PAYLOAD})"}  # fmt: skip
    columns = ("station_id, origin, msg_type, msg_id, action, payload::JSON AS payload, ts, protocol, conn_id, seq, "
               f"valid, error, {status[stored['status_notification']]} AS status_notification" + carried)  # fmt: skip
    if pinned is not None:  # no record twice: nothing to drop, and filters reach the scan
        con.execute(f"CREATE VIEW frames AS SELECT {columns} FROM {source} {filtered}")
    else:
        # Duplicates are the same frame written twice (at least once): only the rows whose
        # (conn_id, seq) occurs more than once go through DISTINCT ON, found from those two
        # narrow columns; the rest pass straight through. A window over every row carried the
        # payloads through a sort: at 9.8 M records 4.9 s of a 5.4 M-row read, now 1.9 s; grouped
        # by a hash of the key (an integer), 0.7 -> 0.45 s: a collision only sends a few more rows
        # through DISTINCT ON, which keys on the real columns. With ``where`` (a test on the
        # payload) the few rows it keeps are read once, not three times.
        con.execute(f"""
        CREATE {"TEMP TABLE" if once else "VIEW"} frames AS
        WITH src AS {"MATERIALIZED" if where else "NOT MATERIALIZED"} (SELECT * FROM {source} {filtered}),
             twice AS MATERIALIZED (SELECT hash(conn_id, seq) AS key FROM src GROUP BY key HAVING count(*) > 1)
        SELECT {columns} FROM src ANTI JOIN twice ON hash(src.conn_id, src.seq) = twice.key
        UNION ALL
        SELECT DISTINCT ON (conn_id, seq) {columns} FROM src SEMI JOIN twice ON hash(src.conn_id, src.seq) = twice.key
    """)
    if not events:
        return con
    # Sessions and energy read TransactionEvents as typed fields: the archive's column, or
    # the same struct derived from the payload for files written before it (slower: a parse)
    parse = f", from_json(payload, '{PAYLOAD_TYPE}') AS j" if typed != "all" else ""
    if typed == "all":
        derived = "transaction_event"
    elif typed == "none":
        derived = FROM_PAYLOAD
    else:  # as the stored files type it (session 4's files: timestamps as text, which readers cast)
        kind = con.execute(f"DESCRIBE SELECT transaction_event FROM {source}").fetchone()[1]  # type: ignore[index]
        derived = f"coalesce(transaction_event, CAST({FROM_PAYLOAD} AS {kind}))"
    con.execute(f"""
        CREATE VIEW transaction_events AS
        SELECT station_id, e.* {extremes}
        FROM (SELECT station_id, {derived} AS e {extremes}
              FROM (SELECT station_id {carried} {parse} FROM frames
                    WHERE action = 'TransactionEvent' AND msg_type = 2 AND origin = 'cs' AND valid))
    """)
    con.execute("SET VARIABLE twin_events_direct = ?", [pinned is not None and typed == "all"])  # see events_direct
    con.execute("SET VARIABLE twin_meter_extremes = ?", [bool(extremes)])  # see meter_extremes
    return con


def events_direct(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether :func:`connect`'s ``transaction_events`` reads the archive's typed column where
    it lies (no dedupe, no JSON to parse): each mention of it then reads only the columns it
    needs, and a query that names it twice had better read it twice than buffer it."""
    said = con.execute("SELECT getvariable('twin_events_direct')").fetchone()
    return bool(said and said[0])


def meter_extremes(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether :func:`connect`'s ``transaction_events`` has the archive's ``meter_extremes``
    (every file has it; archives written before it do not, and a report reads the readings)."""
    said = con.execute("SELECT getvariable('twin_meter_extremes')").fetchone()
    return bool(said and said[0])


PAYLOAD_TYPE = """{"eventType": "VARCHAR", "timestamp": "VARCHAR", "offline": "VARCHAR", "reservationId": "VARCHAR",
    "evse": {"id": "VARCHAR"}, "transactionInfo": {"transactionId": "VARCHAR", "stoppedReason": "VARCHAR"},
    "meterValue": [{"timestamp": "VARCHAR", "sampledValue": [{"value": "DOUBLE", "measurand": "VARCHAR"}]}]}"""
FROM_PAYLOAD = """struct_pack(
    event_type := j.eventType, transaction_id := j.transactionInfo.transactionId,
    stopped_reason := j.transactionInfo.stoppedReason, evse_id := TRY_CAST(j.evse.id AS BIGINT),
    happened := TRY_CAST(j.timestamp AS TIMESTAMPTZ), offline := TRY_CAST(j.offline AS BOOLEAN),
    reservation_id := TRY_CAST(j.reservationId AS BIGINT),
    readings := flatten(list_transform(j.meterValue, lambda m: list_transform(m.sampledValue,
        lambda v: struct_pack(sampled := TRY_CAST(m.timestamp AS TIMESTAMPTZ), measurand := v.measurand,
                              value := v.value)))))"""
"""archive.transaction_event in SQL, from a TransactionEvent's ``from_json(payload, PAYLOAD_TYPE) AS j``."""
STATUS_FROM_PAYLOAD = """CASE WHEN action = 'StatusNotification' AND msg_type = 2 AND origin = 'cs' THEN struct_pack(
    evse_id := CASE WHEN json_type(payload, '$.evseId') IN ('BIGINT', 'UBIGINT')
                    THEN TRY_CAST(payload->>'$.evseId' AS BIGINT) END,
    connector_id := CASE WHEN json_type(payload, '$.connectorId') IN ('BIGINT', 'UBIGINT')
                         THEN TRY_CAST(payload->>'$.connectorId' AS BIGINT) END,
    status := CASE WHEN json_type(payload, '$.connectorStatus') = 'VARCHAR' THEN payload->>'$.connectorStatus' END,
    happened := CASE WHEN json_type(payload, '$.timestamp') = 'VARCHAR'
                     THEN TRY_CAST(payload->>'$.timestamp' AS TIMESTAMPTZ) END) END"""
"""archive.status_notification in SQL, from the stored columns (for files written before it): a
field of the wrong JSON type is null there too."""


def _polars_payload() -> Any:
    import polars as pl

    return pl.Struct({
        "eventType": pl.String, "timestamp": pl.String, "offline": pl.Boolean, "reservationId": pl.Int64,
        "evse": pl.Struct({"id": pl.Int64}),
        "transactionInfo": pl.Struct({"transactionId": pl.String, "stoppedReason": pl.String}),
        "meterValue": pl.List(pl.Struct({
            "timestamp": pl.String,
            "sampledValue": pl.List(pl.Struct({"value": pl.Float64, "measurand": pl.String})),
        })),
    })  # fmt: skip


def sql_list(values: Iterable[str]) -> str:
    """Text values as SQL literals, comma-separated: for ``IN (...)``."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _files(archive: Path) -> str:
    """An archive's Parquet files, as a SQL glob literal."""
    return sql_list([f"{archive.as_posix()}/**/*.parquet"])


def _summaries(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, dict[str, Any]] | None:
    """Each Parquet file of the archive and its writer's summary (``captures.SUMMARY``: whether
    its keys are unique, its first and last station and ``ts``, null when it has no rows, and its
    derived columns); None when there is no file yet, or a file has none this version can read
    (what the summaries decide, they decide for every file or not at all). One query, about
    10 ms for 14 files (in SQL, JSON and a table: 20 ms)."""
    try:
        found = con.execute(f"""
            SELECT g.file, k.value FROM glob({_files(path)}) g LEFT JOIN (
                SELECT file_name, value FROM parquet_kv_metadata({_files(path)})
                WHERE key = '{captures.SUMMARY}'::BLOB
            ) k ON k.file_name = g.file
        """).fetchall()  # fmt: skip
    except duckdb.Error:
        return None  # no file yet: the view fails later with DuckDB's own words, as before
    summaries = {}
    for file, value in found:
        said = _summary(value)
        if said is None:
            return None
        summaries[file] = said
    return summaries or None


def _summary(value: bytes | None) -> dict[str, Any] | None:
    """A footer's summary, its times as datetimes, or None when it has none or none this
    version can read."""
    if not value:
        return None
    try:
        said = orjson.loads(value)
        stations, ts, derived = said["stations"], said["ts"], said["derived"]
        if len(stations) != 2 or len(ts) != 2 or not isinstance(derived, list):
            return None
        if not all(s is None or isinstance(s, str) for s in stations):
            return None
        said["ts"] = [datetime.fromisoformat(t) if t else None for t in ts]
    except (TypeError, KeyError, ValueError):  # orjson.JSONDecodeError is a ValueError
        return None
    return said


def _duplicate_free(summaries: dict[str, dict[str, Any]]) -> list[str] | None:
    """The archive's files if no record can be in two rows of them, else None: each file's
    keys are unique, and the files of a date hold disjoint ranges of stations (a record
    written again lands in its own date, with its own station)."""
    dates: dict[str, list[tuple[str, str]]] = {}
    for file, said in summaries.items():
        if said.get("unique_keys") is not True:
            return None
        first, last = said["stations"]
        if first is not None:  # a file without rows holds no station
            dates.setdefault(file.rpartition("/")[0], []).append((first, last))
    for ranges in dates.values():
        ranges.sort()
        if any(before[1] >= after[0] for before, after in itertools.pairwise(ranges)):
            return None
    return list(summaries) or None


def _stored(
    con: duckdb.DuckDBPyConnection, path: Path, summaries: dict[str, dict[str, Any]] | None
) -> dict[str, str]:
    """Whether the archive's files have each derived column (``transaction_event``,
    ``status_notification``, ``meter_extremes``): "all", "none" or "some"."""
    derived = ("transaction_event", "status_notification", "meter_extremes")
    if not path.is_dir():
        return dict.fromkeys(derived, "all")  # a .jsonl capture goes through archive.table
    if summaries:  # from the summaries when every file has one (10 ms less than the schemas)
        files = len(summaries)
        having = [sum(d in said["derived"] for said in summaries.values()) for d in derived]
    else:
        try:
            files, *having = con.execute(f"""
                SELECT count(DISTINCT file_name),
                       {", ".join(f"count(DISTINCT file_name) FILTER (WHERE name = '{d}')" for d in derived)}
                FROM parquet_schema({_files(path)})
            """).fetchone() or (0, 0, 0, 0)  # fmt: skip
        except duckdb.Error:
            return dict.fromkeys(derived, "none")  # no file yet: the view fails later with DuckDB's own words
    return {d: "all" if n == files and files else "none" if not n else "some"
            for d, n in zip(derived, having, strict=True)}  # fmt: skip


def bounds(con: duckdb.DuckDBPyConnection, capture: str | Path) -> tuple[Any, Any]:
    """The first and last ``ts`` of the log, as stored (a duplicate does not move them): from
    the files' summaries when every file has one (:func:`connect` keeps them), else from the
    column (at 9.8 M records 0.11 s)."""
    said = con.execute("SELECT getvariable('twin_ts')").fetchone()
    if said and said[0]:  # as text: DuckDB's first time zone for Python costs 5 ms
        first, last = (datetime.fromisoformat(t) for t in said[0])
        return first, last
    first, last = con.execute("SELECT min(ts), max(ts) FROM frames_all").fetchone() or (None, None)
    return first, last


Params = list[Any] | dict[str, Any] | None
"""A query's parameters: positional (``?``) or named (``$name``)."""


def query(
    capture: str | Path,
    actions: tuple[str, ...],
    sql: str,
    params: Params = None,
    where: str | None = None,
    once: bool = False,
    events: bool = False,
) -> list[dict[str, Any]]:
    """The rows of ``sql`` over :func:`connect`'s ``frames`` (of ``actions``, and ``where``), as dicts."""
    return rows(connect(capture, actions, where, once, events), sql, params)


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: Params = None) -> list[dict[str, Any]]:
    """The rows of ``sql`` on a connection of :func:`connect`, as dicts."""
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return list(map(dict, map(partial(zip, names), cursor.fetchall())))  # no Python loop per row


def station_calls(capture: str | Path, action: str) -> pl.LazyFrame:
    """The valid CALLs of ``action`` that stations sent, as :func:`frames_polars` rows."""
    import polars as pl

    return frames_polars(capture, (action,)).filter(
        (pl.col("action") == action) & (pl.col("msg_type") == 2) & (pl.col("origin") == "cs") & pl.col("valid")
    )


def transaction_events_polars(capture: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The stations' valid TransactionEvent CALLs as ``(events, readings)``. ``events``: a row
    an event, ``station_id`` and the fields of ``archive.TRANSACTION_EVENT`` but ``readings``;
    ``readings``: a row a meter reading (an event without any: one of nulls), with
    ``station_id``, ``transaction_id``, ``evse_id`` (as its event names it), ``sampled``,
    ``measurand`` (null: the import register) and ``value``. From the archive's typed column
    when every file holds it as written today (``twin compact`` rewrites older archives so;
    at 10 M records sessions takes 3 s instead of 10), else parsed from ``payload``."""
    import polars as pl

    calls = station_calls(capture, "TransactionEvent")
    if _typed_today(Path(capture)):
        base = calls.select("station_id", "transaction_event").unnest("transaction_event").collect()
        readings = base.select("station_id", "transaction_id", "evse_id", "readings").explode("readings")
        return base.drop("readings"), readings.unnest("readings")
    p = pl.col("p")
    base = (
        calls.select("station_id", pl.col("payload").str.json_decode(_polars_payload()).alias("p"))
        .select(
            "station_id",
            p.struct.field("eventType").alias("event_type"),
            p.struct.field("transactionInfo").struct.field("transactionId").alias("transaction_id"),
            p.struct.field("transactionInfo").struct.field("stoppedReason").alias("stopped_reason"),
            p.struct.field("evse").struct.field("id").alias("evse_id"),
            p.struct.field("timestamp").str.to_datetime(time_zone="UTC", time_unit="us").alias("happened"),
            p.struct.field("offline").alias("offline"),
            p.struct.field("reservationId").alias("reservation_id"),
            p.struct.field("meterValue").alias("mv"),
        )  # fmt: skip
        .collect()
    )
    readings = (
        base.select("station_id", "transaction_id", "evse_id", "mv")
        .explode("mv")
        .select(
            "station_id", "transaction_id", "evse_id",
            pl.col("mv").struct.field("timestamp").str.to_datetime(time_zone="UTC", time_unit="us").alias("sampled"),
            pl.col("mv").struct.field("sampledValue").alias("sv"),
        )  # fmt: skip
        .explode("sv")
        .select(
            "station_id", "transaction_id", "evse_id", "sampled",
            pl.col("sv").struct.field("measurand"), pl.col("sv").struct.field("value"),
        )  # fmt: skip
    )
    return base.drop("mv"), readings


def rounded(value: pl.Expr, digits: int) -> pl.Expr:
    """``value`` rounded as DuckDB's ``round`` does, half away from zero (Polars' default is
    half to even: at 10 M records 1,251 sessions differed in the last digit)."""
    return value.round(digits, mode="half_away_from_zero")


def _typed_today(path: Path) -> bool:
    """Whether every file of the archive has ``transaction_event`` as this version writes it
    (a ``.jsonl`` capture goes through ``archive.table``: it has)."""
    if not path.is_dir():
        return True
    import pyarrow.parquet as pq

    from twin.archive import TRANSACTION_EVENT

    files = list(path.rglob("*.parquet"))
    return bool(files) and all(
        "transaction_event" in (schema := pq.read_schema(f)).names
        and schema.field("transaction_event").type == TRANSACTION_EVENT
        for f in files
    )


def frames_polars(capture: str | Path, actions: tuple[str, ...] | None = None) -> pl.LazyFrame:
    """The same table as a Polars LazyFrame (``payload`` as JSON text)."""
    import polars as pl

    path = captures.local(capture)
    if path.is_dir():
        # archives written before the transaction_event column may sit beside newer files
        lf = pl.scan_parquet(path / "**" / "*.parquet", hive_partitioning=True, missing_columns="insert",
                             extra_columns="ignore")  # fmt: skip
    else:
        lf = pl.from_arrow(_arrow(path)).lazy()  # type: ignore[union-attr]
    if actions:
        lf = lf.filter(pl.col("action").is_in(list(actions)))
    return lf.unique(subset=["conn_id", "seq"], keep="first", maintain_order=True)


def recent(capture: str | Path, station: str, limit: int = 50) -> list[dict[str, Any]]:
    """A station's latest ``limit`` records, newest first, as the worker's
    ``/v1/stations/{id}/frames`` gives them (``payload`` as JSON text)."""
    only = f"station_id = {sql_list([station])}"  # before the dedupe: its records, not all
    rows = query(capture, (), f"""
        SELECT strftime(ts, '%Y-%m-%dT%H:%M:%S.%gZ') AS ts, origin, msg_type, action, msg_id, valid,
               payload::VARCHAR AS payload
        FROM frames ORDER BY frames.ts DESC, seq DESC LIMIT {int(limit)}
    """, where=only)  # fmt: skip
    for row in rows:
        if len(row["payload"]) > 160:
            row["payload"] = row["payload"][:159] + "…"
    return rows
