"""``twin report KIND``: analytics over a capture or the archive."""

from __future__ import annotations

import csv
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from twin.cli.app import app, err, fail, print_json
from twin.settings import Settings

KINDS = ("sessions", "energy", "uptime", "afir", "reservations", "monitoring", "migration")
READY = KINDS


@app.command()
def report(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(KINDS)}.")],
    archive: Annotated[
        str | None,
        typer.Option("--archive", "-a", help="A Parquet archive directory or a .jsonl capture. (env TWIN_ARCHIVE)"),
    ] = None,
    since: Annotated[str | None, typer.Option("--from", help="From this ISO time (inclusive).")] = None,
    until: Annotated[str | None, typer.Option("--to", help="Up to this ISO time (exclusive).")] = None,
    engine: Annotated[str, typer.Option(help="duckdb or polars (the same numbers either way).")] = "duckdb",
    rule: Annotated[
        str, typer.Option(help="uptime: nevi (> 97% per port, maintenance excluded) or uk (99% network average).")
    ] = "nevi",
    json_out: Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")] = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV on stdout.")] = False,
    parquet: Annotated[str | None, typer.Option("--parquet", help="Write the rows to this Parquet file.")] = None,
) -> None:
    """Fleet analytics over the archived log.

    sessions: one row per transaction (station, EVSE, start, end, duration, kWh imported and
    exported, peak power, reservation, stop reason, offline). energy: kWh imported and
    exported, V2G discharge hours and peak export power, by station and day (--json adds the
    per-station totals). reservations: each reservation's lifecycle (rejected, used,
    cancelled, expired, removed, active) with made, ended and minutes to plug-in, and a
    summary with the no-show rate. monitoring: every NotifyEvent's events with severity and
    component, counted by each. migration: each station's protocol, bidirectional and ISO
    15118-20 readiness (from its traffic and the archive's station inventory). uptime: per
    port, station, pool and network under --rule nevi or uk (twin/analytics/uptime.py says
    what counts as up, down and excluded). afir: per pool, Art. 3 power thresholds, per-kWh
    ad hoc price, smart charging, ISO 15118-20 and status freshness, each pass, fail or
    unknown with why."""
    from twin.analytics import (
        afir,
        energy_days_duckdb,
        energy_days_polars,
        migration,
        monitoring,
        sessions_duckdb,
        sessions_polars,
    )
    from twin.analytics import uptime as uptime_
    from twin.analytics.energy import by_station
    from twin.analytics.reservations import reservations_duckdb, summary
    from twin.captures import CaptureError

    if kind not in KINDS:
        fail(f"unknown report {kind!r}: one of {', '.join(KINDS)}", code=2)
    if kind not in READY:
        fail(f"the {kind} report is not built yet (issue 5); ready: {', '.join(READY)}", code=2)
    if engine not in ("duckdb", "polars"):
        fail("--engine is duckdb or polars", code=2)
    if rule not in ("nevi", "uk"):
        fail("--rule is nevi or uk", code=2)
    path = archive or Settings.load().archive
    compute = {
        ("sessions", "duckdb"): sessions_duckdb, ("sessions", "polars"): sessions_polars,
        ("energy", "duckdb"): energy_days_duckdb, ("energy", "polars"): energy_days_polars,
        ("reservations", "duckdb"): reservations_duckdb,
        ("monitoring", "duckdb"): monitoring.monitoring_duckdb,
        ("migration", "duckdb"): lambda path, since, until: migration.migration_duckdb(path),
        ("uptime", "duckdb"): lambda path, since, until: [uptime_.uptime(path, rule, since, until)],
        ("afir", "duckdb"): lambda path, since, until: afir.afir(path),
    }.get((kind, engine))  # fmt: skip
    if compute is None:
        fail(f"the {kind} report is computed with duckdb only", code=2)
    try:
        rows = compute(path, since, until)
    except CaptureError as exc:
        fail(str(exc))
    extra: dict[str, Any] = {kind: rows}
    if kind == "energy":
        extra = {"stations": by_station(rows), "days": rows}
    elif kind == "reservations":
        extra["summary"] = summary(rows)
    elif kind == "monitoring":
        extra = {"events": rows, "summary": monitoring.counts(rows)}
    elif kind == "migration":
        extra = {"stations": rows, "summary": migration.summary(rows)}
    elif kind == "uptime":
        extra = rows[0]
        rows = extra["ports"]
    elif kind == "afir":
        extra = {"pools": rows}
        rows = [{"pool_id": p["pool_id"], **c} for p in rows for c in p["checks"]]
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), parquet)
    if json_out:
        print_json({"report": kind, "from": since, "to": until, "archive": path, **extra})
    elif csv_out:
        _csv(rows)
    elif not parquet:
        _table(kind, rows)


def _csv(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def _table(kind: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"{kind}: {len(rows)} rows")
    if rows:
        for column in rows[0]:
            table.add_column(column)
        for r in rows[:500]:
            table.add_row(*("" if v is None else str(v) for v in r.values()))
    err.print(table)
    if len(rows) > 500:
        err.print(f"(first 500 of {len(rows)}; --csv or --json for all)")
