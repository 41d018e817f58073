"""``twin validate``, ``twin import`` and ``twin compact``: captures checked, captures from
elsewhere, and archives rewritten in the current layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from twin import archive, captures, importer
from twin.cli.app import Json, app, err, fail, print_json, progress_bar
from twin.validate import check


@app.command()
def validate(
    capture: Annotated[str, typer.Argument(help="A .jsonl capture or a Parquet archive directory.")],
    json_out: Json = False,
) -> None:
    """Check every record of a capture: envelope fields, the payload against its schema, seq
    numbering and time per connection, every CALL answered once. Exit status 1 when anything
    is wrong (records the gateway itself marked invalid are counted, not faults)."""
    try:
        report = check(captures.read(capture, dedupe=False))
    except captures.CaptureError as exc:
        fail(str(exc))
    if json_out:
        print_json(report.as_json())
    else:
        table = Table(title=f"{capture}: {report.frames:,} records, {report.stations} stations, "
                            f"{report.connections} connections")  # fmt: skip
        table.add_column("problem")
        table.add_column("records", justify="right")
        for kind, n in report.problems.most_common():
            table.add_row(kind, f"{n:,}")
        if report.unanswered:
            table.add_row("CALL never answered", f"{report.unanswered:,}")
        if report.ok:
            err.print(f"[green]ok[/]: {report.frames:,} records, {report.stations} stations, every frame valid "
                      f"({report.marked_invalid} captured as invalid by the gateway)")  # fmt: skip
        else:
            err.print(table)
            for example in report.examples[:10]:
                err.print(f"  {example}")
    if not report.ok:
        raise typer.Exit(1)


@app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="A log of raw OCPP-J frames, one per line (see --help).")],
    out: Annotated[
        str, typer.Option("--out", "-o", help="A .jsonl capture, or a directory for the Parquet archive.")
    ],  # fmt: skip
    protocol: Annotated[
        str, typer.Option(help="Subprotocol when the log does not say: ocpp2.1 or ocpp2.0.1.")
    ] = "ocpp2.1",  # fmt: skip
    json_out: Json = False,
) -> None:
    """Turn a CSMS log of raw OCPP-J frames into a capture of envelopes.

    Lines are JSON objects ({"timestamp", "chargePointId", "direction", "message"}, and the
    other spellings in twin/importer.py) or text ('<time> <station> [<direction>] [2,"1",...]').
    Without a direction, who sent a frame follows from its action."""
    if protocol not in ("ocpp2.1", "ocpp2.0.1"):
        fail("--protocol is ocpp2.1 or ocpp2.0.1")
    if not source.exists():
        fail(f"no log at {source}")
    try:
        with source.open(encoding="utf-8", errors="replace") as lines:
            records = list(importer.convert(lines, protocol, source.name))
    except importer.ImportError_ as exc:
        fail(f"{source}: {exc}")
    if out.endswith(".jsonl"):
        captures.write_jsonl(out, records)
    else:
        archive.write(out, records)
    invalid = sum(not r["valid"] for r in records)
    result = {"records": len(records), "stations": len({r["station_id"] for r in records}), "invalid": invalid,
              "out": out}  # fmt: skip
    if json_out:
        print_json(result)
    else:
        err.print(f"{len(records):,} records from {result['stations']} stations -> {out} ({invalid} invalid)")


@app.command()
def compact(
    root: Annotated[
        str, typer.Argument(metavar="ARCHIVE", help="A Parquet archive: a directory or an object-store URL (s3://...).")
    ],  # fmt: skip
    json_out: Json = False,
) -> None:
    """Rewrite a Parquet archive in the current layout, a date at a time: each date's files
    merged into one, each record once, the typed columns added to files written before them,
    rows clustered by action. Reports then read far fewer files and bytes.

    Safe while the worker writes: a date's new file is in place before its old files go, and
    files that appear meanwhile are left for the next run. A date already compact is skipped.
    Exit status 1 when a date could not be read (it is left as it was)."""
    store, base = archive.location(root)
    if store is None and not Path(base).is_dir():
        fail(f"no archive directory at {captures.shown(root)}")
    results = []
    with progress_bar() as progress:
        task = progress.add_task("compacting", total=None)
        for result in archive.compact(root, lambda done, total: progress.update(task, completed=done, total=total)):
            results.append(result)
            progress.update(task, description=f"compacted {result['date']}")
    totals = {key: sum(r[key] or 0 for r in results) for key in SUMMED}
    if json_out:
        print_json({"archive": captures.shown(root), **totals, "dates": results})
    else:
        table = Table(title=f"{captures.shown(root)}: {len(results)} dates", caption=(
            f"{totals['files_before']:,} files -> {totals['files_after']:,}, {totals['records']:,} records, "
            f"{totals['duplicates']:,} duplicates dropped, {totals['bytes_before'] / 1e6:,.1f} -> "
            f"{totals['bytes_after'] / 1e6:,.1f} MB"))  # fmt: skip
        for column in ("date", "result", "files", "records", "duplicates", "MB"):
            table.add_column(column, justify="left" if column in ("date", "result") else "right")
        for r in results:
            result = r["result"] + (f": {r['why']}" if r["why"] else "")
            table.add_row(r["date"], result, f"{r['files_before']} -> {r['files_after']}", f"{r['records'] or 0:,}",
                          f"{r['duplicates']:,}", f"{r['bytes_before'] / 1e6:.1f} -> {r['bytes_after'] / 1e6:.1f}")
        err.print(table)
    if any(r["result"] == "unreadable" for r in results):
        raise typer.Exit(1)


SUMMED = ("files_before", "files_after", "records", "duplicates", "bytes_before", "bytes_after")
