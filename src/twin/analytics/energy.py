"""Energy flows: what each station imported and exported, by day, from its EVSEs' registers.

Each EVSE's ``Energy.Active.Import.Register`` and ``Energy.Active.Export.Register``
readings (from its TransactionEvents, in sample-time order; an event that does not name its
EVSE is on its transaction's) are differenced; a rise
belongs to the day of the reading that shows it (a register that goes down, a meter
replaced, counts nothing). ``discharge_hours``: the time between readings across which the
export register rose. ``peak_export_kw``: the highest ``Power.Active.Export``. The
station-level clock-aligned MeterValues (EVSE 0) are left out: they would count the same
energy twice.

Computed with DuckDB and with Polars; a test holds them equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from twin.analytics.frames import query, rounded, transaction_events_polars
from twin.analytics.sessions import EXPORT, IMPORT, P_EXPORT

if TYPE_CHECKING:
    import polars as pl

SQL = f"""
WITH events AS MATERIALIZED (
    -- typed fields (the archive's transaction_event column; see frames.transaction_events)
    SELECT station_id, transaction_id AS tx, evse_id, readings FROM transaction_events
),
-- only a transaction's first event must name its EVSE: the others are on the same one (a
-- grouped join, not a window: a window would carry every event's readings through a sort)
tx_evse AS (SELECT station_id, tx, max(evse_id) AS tx_evse FROM events GROUP BY ALL),
te AS (
    SELECT e.station_id, coalesce(e.evse_id, x.tx_evse) AS evse_id, e.readings
    FROM events e LEFT JOIN tx_evse x ON x.station_id = e.station_id AND x.tx IS NOT DISTINCT FROM e.tx
),
-- no DISTINCT: a reading repeated in a second event rises 0 over 0 hours (at 9.8 M records 0.4 s).
-- Time as epoch milliseconds and days as day numbers: TIMESTAMPTZ arithmetic and strftime go
-- through the ICU calendar (at 9.8 M records the window 1.2 -> 0.7 s, the day 0.85 -> 0.3 s)
readings AS (
    SELECT station_id, evse_id, ms, floor(ms / 86400000)::BIGINT AS day, measurand, value
    FROM (SELECT station_id, evse_id, epoch_ms(TRY_CAST(r.sampled AS TIMESTAMPTZ)) AS ms,
                 coalesce(r.measurand, '{IMPORT}') AS measurand, r.value AS value
          FROM (SELECT station_id, evse_id, unnest(readings) AS r FROM te))
    WHERE evse_id IS NOT NULL AND ms IS NOT NULL
),
-- one pass over the readings: Power.Active.Export rides along through the window for its peak
steps AS (
    SELECT station_id, ms, day, measurand, value, value - lag(value) OVER w AS rise,
           (ms - lag(ms) OVER w) / 3600000.0 AS hours
    FROM readings WHERE measurand IN ('{IMPORT}', '{EXPORT}', '{P_EXPORT}')
    WINDOW w AS (PARTITION BY station_id, evse_id, measurand ORDER BY ms)
),
by_day AS (
    SELECT station_id, day,
           sum(greatest(rise, 0)) FILTER (WHERE measurand = '{IMPORT}') AS import_wh,
           sum(greatest(rise, 0)) FILTER (WHERE measurand = '{EXPORT}') AS export_wh,
           sum(hours) FILTER (WHERE measurand = '{EXPORT}' AND rise > 0) AS discharge_hours,
           max(value) FILTER (WHERE measurand = '{P_EXPORT}') AS peak_export_w
    -- the window after the differences: a first reading rises from the one before it
    FROM steps WHERE (CAST($since AS TIMESTAMPTZ) IS NULL OR ms >= epoch_ms(CAST($since AS TIMESTAMPTZ)))
      AND (CAST($until AS TIMESTAMPTZ) IS NULL OR ms < epoch_ms(CAST($until AS TIMESTAMPTZ)))
    GROUP BY ALL HAVING bool_or(measurand <> '{P_EXPORT}')  -- a day of registers (a peak alone is no energy row)
)
SELECT b.station_id, strftime(make_timestamp(b.day * 86400000000), '%Y-%m-%d') AS day,
       round(coalesce(b.import_wh, 0) / 1000, 3) AS import_kwh,
       round(coalesce(b.export_wh, 0) / 1000, 3) AS export_kwh,
       round(coalesce(b.discharge_hours, 0), 3) AS discharge_hours,
       round(coalesce(b.peak_export_w, 0) / 1000, 3) + 0.0 AS peak_export_kw  -- + 0.0: no -0.0
FROM by_day b
ORDER BY b.station_id, b.day
"""


def energy_days_duckdb(capture: str | Path, since: str | None = None, until: str | None = None) -> list[dict[str, Any]]:
    return query(capture, ("TransactionEvent",), SQL, {"since": since, "until": until}, events=True)


def energy_days_polars(capture: str | Path, since: str | None = None, until: str | None = None) -> list[dict[str, Any]]:
    import polars as pl

    readings = (
        transaction_events_polars(capture)[1]
        # only a transaction's first event must name its EVSE: the others are on the same one
        .with_columns(pl.col("evse_id").fill_null(pl.col("evse_id").max().over(["station_id", "transaction_id"])))
        .select("station_id", "evse_id", "sampled", pl.col("measurand").fill_null(IMPORT), "value")
        .filter(pl.col("evse_id").is_not_null() & pl.col("sampled").is_not_null())
        .unique()
    )
    key = ["station_id", "evse_id", "measurand"]
    steps = (
        readings.filter(pl.col("measurand").is_in([IMPORT, EXPORT]))
        .sort([*key, "sampled"])
        .with_columns(
            (pl.col("value") - pl.col("value").shift(1).over(key)).alias("rise"),
            ((pl.col("sampled") - pl.col("sampled").shift(1).over(key)).dt.total_milliseconds() / 3_600_000).alias(
                "hours"
            ),
        )
    )

    def window(frame: pl.DataFrame) -> pl.DataFrame:
        if since:
            frame = frame.filter(pl.col("sampled") >= pl.lit(since).str.to_datetime(time_zone="UTC", time_unit="us"))
        if until:
            frame = frame.filter(pl.col("sampled") < pl.lit(until).str.to_datetime(time_zone="UTC", time_unit="us"))
        return frame.with_columns(pl.col("sampled").dt.strftime("%Y-%m-%d").alias("day"))

    rise = pl.col("rise").clip(lower_bound=0)
    by_day = (
        window(steps)
        .group_by("station_id", "day")
        .agg(
            rise.filter(pl.col("measurand") == IMPORT).sum().alias("import_wh"),
            rise.filter(pl.col("measurand") == EXPORT).sum().alias("export_wh"),
            pl.col("hours").filter((pl.col("measurand") == EXPORT) & (pl.col("rise") > 0)).sum().alias("hours"),
        )
    )
    peaks = (
        window(readings.filter(pl.col("measurand") == P_EXPORT))
        .group_by("station_id", "day")
        .agg(pl.col("value").max().alias("peak_export_w"))
    )
    out = (
        by_day.join(peaks, on=["station_id", "day"], how="left")
        .sort("station_id", "day")
        .select(
            "station_id",
            "day",
            rounded(pl.col("import_wh").fill_null(0) / 1000, 3).alias("import_kwh"),
            rounded(pl.col("export_wh").fill_null(0) / 1000, 3).alias("export_kwh"),
            rounded(pl.col("hours").fill_null(0), 3).alias("discharge_hours"),
            rounded(pl.col("peak_export_w").fill_null(0) / 1000, 3).alias("peak_export_kw"),
        )  # fmt: skip
    )
    return out.to_dicts()


def by_station(days: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The days summed per station (peak: the highest)."""
    out: dict[str, dict[str, Any]] = {}
    for d in days:
        s = out.setdefault(d["station_id"], {"station_id": d["station_id"], "import_kwh": 0.0, "export_kwh": 0.0,
                                             "discharge_hours": 0.0, "peak_export_kw": 0.0})  # fmt: skip
        for k in ("import_kwh", "export_kwh", "discharge_hours"):
            s[k] = round(s[k] + d[k], 3)
        s["peak_export_kw"] = max(s["peak_export_kw"], d["peak_export_kw"])
    return [out[k] for k in sorted(out)]
