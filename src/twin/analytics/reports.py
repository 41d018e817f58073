"""The reports as documents: what ``twin report KIND --json`` prints and the dashboards
show, computed in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

KINDS = ("sessions", "energy", "uptime", "afir", "reservations", "monitoring", "migration", "status", "connectivity",
         "tariffs", "grid")
ENGINES = ("duckdb", "polars")
RULES = ("nevi", "uk")
BOTH = ("sessions", "energy", "status", "connectivity")
"""The reports computed by Polars as well as DuckDB (the same numbers either way)."""


class ReportError(ValueError):
    """A report asked for in a way it cannot be made; the message says why."""


def report(
    kind: str,
    capture: str | Path,
    since: str | None = None,
    until: str | None = None,
    engine: str = "duckdb",
    rule: str = "nevi",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The report's document (its rows and summaries) and its rows as one flat table. Only the
    module of ``kind`` is imported: the status intervals import Polars, 0.3 s that a DuckDB
    report does not need."""
    if kind not in KINDS:
        raise ReportError(f"unknown report {kind!r}: one of {', '.join(KINDS)}")
    if engine not in ENGINES:
        raise ReportError("the engine is duckdb or polars")
    if engine == "polars" and kind not in BOTH:
        raise ReportError(f"the {kind} report is computed with duckdb only")
    if rule not in RULES:
        raise ReportError("the uptime rule is nevi or uk")
    polars = engine == "polars"
    if kind == "sessions":
        from twin.analytics import sessions

        rows = (sessions.sessions_polars if polars else sessions.sessions_duckdb)(capture, since, until)
        return {"sessions": rows}, rows
    if kind == "energy":
        from twin.analytics import energy

        rows = (energy.energy_days_polars if polars else energy.energy_days_duckdb)(capture, since, until)
        return {"stations": energy.by_station(rows), "days": rows}, rows
    if kind == "reservations":
        from twin.analytics import reservations

        rows = reservations.reservations_duckdb(capture, since, until)
        return {"reservations": rows, "summary": reservations.summary(rows)}, rows
    if kind == "monitoring":
        from twin.analytics import monitoring

        rows = monitoring.monitoring_duckdb(capture, since, until)
        return {"events": rows, "summary": monitoring.counts(rows)}, rows
    if kind == "migration":
        from twin.analytics import migration

        rows = migration.migration_duckdb(capture)
        return {"stations": rows, "summary": migration.summary(rows)}, rows
    if kind in ("status", "connectivity"):
        from twin.analytics import intervals

        compute = {
            ("status", False): intervals.status_intervals_duckdb, ("status", True): intervals.status_intervals_polars,
            ("connectivity", False): intervals.connectivity_intervals_duckdb,
            ("connectivity", True): intervals.connectivity_intervals_polars,
        }[(kind, polars)]  # fmt: skip
        rows = [r for r in compute(capture) if _within(r, since, until)]
        return {"intervals": rows}, rows
    if kind == "tariffs":
        from twin.analytics.tariffs import tariffs_report

        document = tariffs_report(capture, since, until)
        return document, document["sessions"]
    if kind == "grid":
        from twin.analytics.grid import grid_report

        document = grid_report(capture, since, until)
        return document, document["intervals"]
    if kind == "uptime":
        from twin.analytics import uptime

        document = uptime.uptime(capture, rule, since, until)
        return document, document["ports"]
    from twin.analytics import afir

    pools = afir.afir(capture)
    return {"pools": pools}, [{"pool_id": p["pool_id"], **c} for p in pools for c in p["checks"]]


def _within(row: dict[str, Any], since: str | None, until: str | None) -> bool:
    """An interval that overlaps [since, until)."""
    start = row.get("started_at") or row.get("connected_at") or ""
    end = row.get("ended_at") or row.get("disconnected_at") or row.get("last_seen")
    return (until is None or start < until) and (since is None or end is None or end >= since)
