"""Two derived tables of states over time, from the log alone:

- **connector status intervals**: each connector's status from one StatusNotification to
  the next (``ended_at`` null: the status it is in at the end of the log);
- **connectivity intervals**: each websocket connection, from the gateway's ``Connected``
  record to its ``Disconnected`` record; a connection with no ``Disconnected`` (still open,
  or the gateway stopped) runs to its last record (``last_seen``: a heartbeat or any frame).

Both as DuckDB SQL and as Polars frames; the tests hold them to the same rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from twin.analytics.frames import frames_polars, query, rounded

ISO = "%Y-%m-%dT%H:%M:%S.%gZ"

STATUS_SQL = f"""
WITH s AS (
    SELECT station_id, ts, status_notification.evse_id AS evse_id,
           status_notification.connector_id AS connector_id, status_notification.status AS status
    FROM frames WHERE action = 'StatusNotification' AND msg_type = 2 AND origin = 'cs' AND valid
)
SELECT station_id, evse_id, connector_id, status, strftime(ts, '{ISO}') AS started_at,
       strftime(lead(ts) OVER w, '{ISO}') AS ended_at,
       round(date_diff('millisecond', ts, lead(ts) OVER w) / 60000.0, 3) AS minutes
FROM s
WINDOW w AS (PARTITION BY station_id, evse_id, connector_id ORDER BY ts)
ORDER BY station_id, evse_id, connector_id, started_at
"""

CONNECTIVITY_SQL = f"""
WITH c AS (
    SELECT station_id, conn_id,
           min(ts) FILTER (WHERE action = 'Connected' AND msg_type = 0) AS connected,
           min(ts) FILTER (WHERE action = 'Disconnected' AND msg_type = 0) AS disconnected,
           max(ts) AS last_seen,
           any_value(TRY_CAST(payload->>'$.code' AS BIGINT)) FILTER (WHERE action = 'Disconnected') AS close_code
    FROM frames GROUP BY station_id, conn_id
)
SELECT station_id, conn_id, strftime(connected, '{ISO}') AS connected_at,
       strftime(disconnected, '{ISO}') AS disconnected_at, strftime(last_seen, '{ISO}') AS last_seen,
       round(date_diff('millisecond', connected, coalesce(disconnected, last_seen)) / 60000.0, 3) AS minutes,
       close_code
FROM c WHERE connected IS NOT NULL
ORDER BY station_id, connected_at
"""


def status_intervals_duckdb(capture: str | Path) -> list[dict[str, Any]]:
    return query(capture, ("StatusNotification",), STATUS_SQL)


def connectivity_intervals_duckdb(capture: str | Path) -> list[dict[str, Any]]:
    return query(capture, (), CONNECTIVITY_SQL)


def _iso(column: str) -> pl.Expr:
    return pl.col(column).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S.%3fZ")


def _minutes(start: str, end: pl.Expr) -> pl.Expr:
    return rounded((end - pl.col(start)).dt.total_milliseconds() / 60000.0, 3)


def status_intervals_polars(capture: str | Path) -> list[dict[str, Any]]:
    payload = pl.col("payload")
    frame = (
        frames_polars(capture, ("StatusNotification",))
        .filter((pl.col("msg_type") == 2) & (pl.col("origin") == "cs") & pl.col("valid"))
        .select(
            "station_id",
            "ts",
            payload.str.json_path_match("$.evseId").cast(pl.Int64, strict=False).alias("evse_id"),
            payload.str.json_path_match("$.connectorId").cast(pl.Int64, strict=False).alias("connector_id"),
            payload.str.json_path_match("$.connectorStatus").alias("status"),
        )  # fmt: skip
        .sort("station_id", "evse_id", "connector_id", "ts")
        .with_columns(pl.col("ts").shift(-1).over("station_id", "evse_id", "connector_id").alias("next"))
        .select(
            "station_id",
            "evse_id",
            "connector_id",
            "status",
            _iso("ts").alias("started_at"),
            _iso("next").alias("ended_at"),
            _minutes("ts", pl.col("next")).alias("minutes"),
        )  # fmt: skip
        .collect()
    )
    return frame.to_dicts()


def connectivity_intervals_polars(capture: str | Path) -> list[dict[str, Any]]:
    lifecycle = pl.col("msg_type") == 0
    frame = (
        frames_polars(capture)
        .group_by("station_id", "conn_id")
        .agg(
            pl.col("ts").filter(lifecycle & (pl.col("action") == "Connected")).min().alias("connected"),
            pl.col("ts").filter(lifecycle & (pl.col("action") == "Disconnected")).min().alias("disconnected"),
            pl.col("ts").max().alias("last_seen"),
            pl.col("payload")
            .filter(pl.col("action") == "Disconnected")
            .first()
            .str.json_path_match("$.code")
            .cast(pl.Int64, strict=False)
            .alias("close_code"),
        )  # fmt: skip
        .filter(pl.col("connected").is_not_null())
        .select(
            "station_id",
            "conn_id",
            _iso("connected").alias("connected_at"),
            _iso("disconnected").alias("disconnected_at"),
            _iso("last_seen").alias("last_seen"),
            _minutes("connected", pl.coalesce("disconnected", "last_seen")).alias("minutes"),
            "close_code",
        )  # fmt: skip
        .sort("station_id", "connected_at")
        .collect()
    )
    return frame.to_dicts()
