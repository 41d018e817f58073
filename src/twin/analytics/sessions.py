"""Sessions: one row per transaction, from the station's TransactionEvents.

- ``started_at`` / ``ended_at``: the ``timestamp`` of its Started / Ended event (when it
  happened at the station, also for events replayed ``offline``); ``ended_at`` is null for
  a session still open at the end of the capture.
- ``import_kwh`` / ``export_kwh``: what the EVSE's ``Energy.Active.Import.Register`` /
  ``Energy.Active.Export.Register`` rose during the session (last minus first reading, Wh
  registers; a sampled value without a measurand is an import register, as OCPP says).
- ``peak_kw`` / ``peak_export_kw``: the highest ``Power.Active.Import`` / ``Export``.
- ``offline``: any of its events was sent ``offline``.
- ``duration_min``: from start to end, in hundredths of a minute, rounded down.

Computed twice, with DuckDB (SQL over the archive where it lies) and with Polars; a test
holds them equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from twin.analytics.frames import (
    connect,
    events_direct,
    meter_extremes,
    rounded,
    rows,
    transaction_events_polars,
)
from twin.messages import EXPORT, IMPORT, P_EXPORT, P_IMPORT

if TYPE_CHECKING:
    import polars as pl

COLUMNS = ("transaction_id", "station_id", "evse_id", "started_at", "ended_at", "duration_min", "import_kwh",
           "export_kwh", "peak_kw", "peak_export_kw", "reservation_id", "stopped_reason", "offline")  # fmt: skip


TE = """
    -- typed fields (the archive's transaction_event column; see frames.transaction_events)
    SELECT station_id, event_type, transaction_id, evse_id, TRY_CAST(happened AS TIMESTAMPTZ) AS happened,
           coalesce(offline, false) AS offline, reservation_id, stopped_reason"""
TX = """
    SELECT station_id, transaction_id,
           arg_min(evse_id, happened) FILTER (WHERE evse_id IS NOT NULL) AS evse_id,
           coalesce(min(happened) FILTER (WHERE event_type = 'Started'), min(happened)) AS started_at,
           max(happened) FILTER (WHERE event_type = 'Ended') AS ended_at,
           max(reservation_id) AS reservation_id,
           max(stopped_reason) FILTER (WHERE event_type = 'Ended') AS stopped_reason,
           bool_or(offline) AS offline"""
ROWS = """
SELECT tx.transaction_id, tx.station_id, tx.evse_id,
       strftime(tx.started_at, '%Y-%m-%dT%H:%M:%S.%gZ') AS started_at,
       strftime(tx.ended_at, '%Y-%m-%dT%H:%M:%S.%gZ') AS ended_at,
       round((date_diff('millisecond', tx.started_at, tx.ended_at) // 600) / 100, 2)::DOUBLE AS duration_min,
       round(coalesce(import_wh, 0) / 1000, 3) AS import_kwh,
       round(coalesce(export_wh, 0) / 1000, 3) AS export_kwh,
       round(coalesce(peak_w, 0) / 1000, 3) AS peak_kw,
       round(coalesce(peak_export_w, 0) / 1000, 3) AS peak_export_kw,
       tx.reservation_id, tx.stopped_reason, tx.offline
FROM {source}
WHERE (CAST(? AS TIMESTAMPTZ) IS NULL OR tx.started_at >= CAST(? AS TIMESTAMPTZ))
  AND (CAST(? AS TIMESTAMPTZ) IS NULL OR tx.started_at < CAST(? AS TIMESTAMPTZ))
ORDER BY tx.started_at, tx.station_id, tx.transaction_id
"""

SQL = f"""
WITH te AS ({TE}, readings
    FROM transaction_events
),
values AS (
    SELECT station_id, transaction_id, coalesce(r.measurand, '{IMPORT}') AS measurand, r.value AS value
    FROM (SELECT station_id, transaction_id, unnest(readings) AS r FROM te)
),
energy AS (
    SELECT station_id, transaction_id,
           max(value) FILTER (WHERE measurand = '{IMPORT}')
             - min(value) FILTER (WHERE measurand = '{IMPORT}') AS import_wh,
           max(value) FILTER (WHERE measurand = '{EXPORT}')
             - min(value) FILTER (WHERE measurand = '{EXPORT}') AS export_wh,
           max(value) FILTER (WHERE measurand = '{P_IMPORT}') AS peak_w,
           max(value) FILTER (WHERE measurand = '{P_EXPORT}') AS peak_export_w
    FROM values GROUP BY ALL
),
tx AS ({TX}
    FROM te WHERE transaction_id IS NOT NULL GROUP BY ALL
)
{ROWS.format(source="tx LEFT JOIN energy USING (station_id, transaction_id)")}"""
"""From every reading: archives without ``meter_extremes``."""

SQL_EXTREMES = f"""
WITH tx AS ({TX},
           max(m.import_wh_max) - min(m.import_wh_min) AS import_wh,
           max(m.export_wh_max) - min(m.export_wh_min) AS export_wh,
           max(m.import_w_max) AS peak_w,
           max(m.export_w_max) AS peak_export_w
    FROM ({TE}, meter_extremes AS m FROM transaction_events)
    WHERE transaction_id IS NOT NULL GROUP BY ALL
)
{ROWS.format(source="tx")}"""
"""From each event's extremes (the archive's ``meter_extremes``), the same numbers: a
transaction's lowest and highest reading are the lowest and highest of its events'. One scan
and one aggregate, where reading every reading takes two of each, a join and an unnest."""


def sessions_duckdb(capture: str | Path, since: str | None = None, until: str | None = None) -> list[dict[str, Any]]:
    con = connect(capture, ("TransactionEvent",), events=True)
    if meter_extremes(con):
        return rows(con, SQL_EXTREMES, [since, since, until, until])
    # ``te`` is named twice (its readings, its events' own fields). Where the events are read
    # from the files as they lie, each mention reads only its own columns; materialized, ``te``
    # carried every event's list of readings through a buffer (at 11.3 M records: CPU 3.2 ->
    # 2.2 s). Where they are deduplicated or parsed from JSON, that work is done once.
    sql = SQL.replace("WITH te AS (", "WITH te AS NOT MATERIALIZED (", 1) if events_direct(con) else SQL
    return rows(con, sql, [since, since, until, until])


def sessions_polars(capture: str | Path, since: str | None = None, until: str | None = None) -> list[dict[str, Any]]:
    import polars as pl

    events, readings = transaction_events_polars(capture)
    te = events.filter(pl.col("transaction_id").is_not_null()).with_columns(
        pl.col("happened").alias("at"), pl.col("offline").fill_null(False)
    )
    values = readings.filter(pl.col("transaction_id").is_not_null()).select(
        "station_id", "transaction_id", pl.col("measurand").fill_null(IMPORT), "value"
    )

    def rise(measurand: str) -> pl.Expr:
        v = pl.col("value").filter(pl.col("measurand") == measurand)
        return v.max() - v.min()

    energy = values.group_by("station_id", "transaction_id").agg(
        rise(IMPORT).alias("import_wh"),
        rise(EXPORT).alias("export_wh"),
        pl.col("value").filter(pl.col("measurand") == P_IMPORT).max().alias("peak_w"),
        pl.col("value").filter(pl.col("measurand") == P_EXPORT).max().alias("peak_export_w"),
    )
    started = pl.col("at").filter(pl.col("event_type") == "Started").min()
    tx = (
        te.sort("at")
        .group_by("station_id", "transaction_id")
        .agg(
            pl.col("evse_id").drop_nulls().first().alias("evse_id"),
            pl.when(started.is_not_null()).then(started).otherwise(pl.col("at").min()).alias("started_at"),
            pl.col("at").filter(pl.col("event_type") == "Ended").max().alias("ended_at"),
            pl.col("reservation_id").max(),
            pl.col("stopped_reason").filter(pl.col("event_type") == "Ended").max(),
            pl.col("offline").any(),
        )
    )
    if since:
        tx = tx.filter(pl.col("started_at") >= pl.lit(since).str.to_datetime(time_zone="UTC", time_unit="us"))
    if until:
        tx = tx.filter(pl.col("started_at") < pl.lit(until).str.to_datetime(time_zone="UTC", time_unit="us"))
    fmt = "%Y-%m-%dT%H:%M:%S%.3fZ"
    out = (
        tx.join(energy, on=["station_id", "transaction_id"], how="left")
        .sort("started_at", "station_id", "transaction_id")
        .select(
            "transaction_id",
            "station_id",
            "evse_id",
            pl.col("started_at").dt.strftime(fmt),
            pl.col("ended_at").dt.strftime(fmt),
            rounded((pl.col("ended_at") - pl.col("started_at")).dt.total_milliseconds() // 600 / 100, 2).alias(
                "duration_min"
            ),
            rounded(pl.col("import_wh").fill_null(0) / 1000, 3).alias("import_kwh"),
            rounded(pl.col("export_wh").fill_null(0) / 1000, 3).alias("export_kwh"),
            rounded(pl.col("peak_w").fill_null(0) / 1000, 3).alias("peak_kw"),
            rounded(pl.col("peak_export_w").fill_null(0) / 1000, 3).alias("peak_export_kw"),
            "reservation_id",
            "stopped_reason",
            "offline",
        )  # fmt: skip
    )
    return out.to_dicts()
