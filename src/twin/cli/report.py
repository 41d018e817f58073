"""``twin report KIND``: analytics over a capture or the archive."""

from __future__ import annotations

import csv
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from twin.analytics.reports import KINDS
from twin.cli.app import app, err, fail, iso_time, print_json
from twin.settings import Settings


@app.command()
def report(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(KINDS)}.")],
    archive: Annotated[
        str | None,
        typer.Option("--archive", "-a", help="A Parquet archive directory or a .jsonl capture. (env TWIN_ARCHIVE)"),
    ] = None,
    since: Annotated[str | None, typer.Option("--from", callback=iso_time,
                                              help="From this ISO time (inclusive).")] = None,  # fmt: skip
    until: Annotated[str | None, typer.Option("--to", callback=iso_time,
                                              help="Up to this ISO time (exclusive).")] = None,  # fmt: skip
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
    unknown with why. status: each connector's status intervals. connectivity: each connection, from
    Connected to Disconnected (or its last record). grid: per site and 15 minutes (split where the
    limit or price changes), the limit in force and its source, import and export (mean, max, kWh,
    V2G given back), minutes over the limit, energy shifted, SetChargingProfile sent / accepted /
    rejected, and the cost at the price signals (--json adds per-site totals and the archived
    signals, rejected ones with their reasons). Energy shifted: each session charging from its
    first reading at the highest import it measured, until it has what it drew, is
    uncontrolled_kwh; shifted_kwh = uncontrolled_kwh - import_kwh (positive: moved out of the
    interval, into later ones); a site's total is the sum of the positive parts, and
    shifted_under_signals_kwh of those under a limit or price signal. A lower bound (an EV held
    below its maximum all session shows none); import only."""
    import duckdb

    from twin.analytics.reports import ReportError
    from twin.analytics.reports import report as compute
    from twin.captures import CaptureError

    path = archive or Settings.load().archive
    try:
        extra, rows = compute(kind, path, since, until, engine, rule)
    except ReportError as exc:
        fail(str(exc), code=2)
    except CaptureError as exc:
        fail(str(exc))
    except duckdb.Error as exc:  # files in the archive DuckDB cannot read as one (a stray file, a broken one)
        fail(f"reading {path}: {str(exc).splitlines()[0]}")
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
        if kind == "uptime":  # the verdicts beyond the ports: per pool, and the network's
            _table("uptime by pool", extra.get("pools") or [])
            net = extra.get("network") or {}
            verdict = "no verdict" if net.get("pass") is None else "pass" if net["pass"] else "fail"
            err.print(f"network: {net.get('uptime_pct')}% over {net.get('ports_counted')} ports under --rule {rule} "
                      f"(target {extra.get('target_pct')}%): {verdict}")  # fmt: skip


def _csv(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def _table(kind: str, rows: list[dict[str, Any]]) -> None:
    if not rows:  # a table without columns prints nothing at all
        err.print(f"{kind}: 0 rows")
        return
    table = Table(title=f"{kind}: {len(rows)} rows")
    if rows:
        for column in rows[0]:
            table.add_column(column)
        for r in rows[:500]:
            table.add_row(*("" if v is None else str(v) for v in r.values()))
    err.print(table)
    if len(rows) > 500:
        err.print(f"(first 500 of {len(rows)}; --csv or --json for all)")
