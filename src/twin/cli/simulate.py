"""``twin simulate``: a realistic fleet capture, written or driven live against a CSMS."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.progress import Progress

from twin.captures import inventory_path
from twin.cli.app import Json, app, err, fail, print_json
from twin.simulator import DEFAULT_START, Rates, inventory, write
from twin.simulator import simulate as run_simulation

Out = Annotated[
    str | None,
    typer.Option("--out", "-o", help="A .jsonl file of envelopes, or a directory: the Parquet archive layout."),
]


@app.command()
def simulate(
    stations: Annotated[int, typer.Option("--stations", "-n", min=1, help="How many stations.")] = 12,
    days: Annotated[float, typer.Option("--days", "-d", min=0.01, help="How many days of traffic.")] = 2,
    seed: Annotated[int, typer.Option(help="Same seed, same capture, byte for byte.")] = 1,
    out: Out = None,
    start: Annotated[str, typer.Option(help="First day (UTC), offline. Live runs start now.")] = DEFAULT_START,
    live: Annotated[
        str | None,
        typer.Option(
            "--live", help="Drive the fleet against this CSMS (ws://host:port/path) instead of writing a capture."
        ),
    ] = None,  # fmt: skip
    speed: Annotated[str, typer.Option(help="Live: simulated seconds per real second, or 'max'.")] = "1",
    inventory_to: Annotated[
        str | None,
        typer.Option("--inventory", help="Live: write the station inventory for this archive directory (or capture)."),
    ] = None,
    prefix: Annotated[str, typer.Option(help="Station ids are PREFIX-00001, ...")] = "CS",
    meter_interval: Annotated[
        int, typer.Option(help="Seconds between TransactionEvent Updated while charging.")
    ] = 60,  # fmt: skip
    faults: Annotated[float, typer.Option(help="Connector faults per station and day.")] = Rates.fault_per_day,
    outages: Annotated[float, typer.Option(help="Connection outages per station and day.")] = Rates.outage_per_day,
    workers: Annotated[int, typer.Option(help="Processes sharing the stations (offline).")] = os.cpu_count() or 1,
    json_out: Json = False,
) -> None:
    """Generate a fleet's OCPP traffic: AC and DC stations in pools along European corridors,
    sessions, V2G, reservations, faults and outages, monitoring, certificates, firmware and
    tariffs, every frame schema-valid and as the gateway would capture it.

    Deterministic for a seed. Offline (--out) it writes as fast as it can; live (--live URL)
    it connects every station to a CSMS and plays the traffic in real time (or --speed X), with
    a car arriving at each station within its first twenty simulated minutes.
    """
    rates = Rates(meter_interval_s=meter_interval, fault_per_day=faults, outage_per_day=outages)
    if live:
        if inventory_to:
            _inventory(inventory_to, stations, seed, prefix)
        _live(stations, days, seed, rates, prefix, live, speed, json_out)
        return
    if not out:
        fail("say where the capture goes: --out capture.jsonl or --out archive-dir/ (or --live URL)")
    path = Path(out)
    jsonl = path.suffix == ".jsonl"
    began = time.perf_counter()
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"simulating {stations} stations", total=days)
        n = write(path, stations, days, seed, start, rates, prefix, workers,
                  lambda done: progress.update(task, completed=done))  # fmt: skip
    seconds = time.perf_counter() - began
    stations_file = _inventory(path, stations, seed, prefix)
    size = path.stat().st_size if jsonl else sum(f.stat().st_size for f in path.rglob("*.parquet"))
    result = {"stations": stations, "days": days, "seed": seed, "records": n, "out": str(path),
              "format": "jsonl" if jsonl else "parquet", "bytes": size, "inventory": str(stations_file),
              "seconds": round(seconds, 2), "records_per_s": round(n / seconds) if seconds else None}  # fmt: skip
    if json_out:
        print_json(result)
    else:
        err.print(f"{n:,} records from {stations} stations over {days:g} days -> {path} "
                  f"({size / 1e6:.1f} MB, {result['records_per_s']:,} records/s)")  # fmt: skip


def _inventory(capture: str | Path, stations: int, seed: int, prefix: str) -> Path:
    """The fleet's station inventory beside a capture (analytics and maps need it; OCPP does
    not carry pools, coordinates or power)."""
    path = inventory_path(capture)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(inventory(stations, seed, prefix), option=orjson.OPT_INDENT_2))
    return path


def _live(stations: int, days: float, seed: int, rates: Rates, prefix: str, target: str, speed: str,
          json_out: bool) -> None:  # fmt: skip
    from datetime import UTC, datetime

    from replay import Options, Selection, run, scripts
    from twin.cli.replay import parse_speed, report

    factor = parse_speed(speed)
    now = datetime.now(UTC).replace(microsecond=0)
    days_ = run_simulation(stations, days, seed, now.isoformat(), rates, prefix, opening=True)
    records = [r for day in days_ for r in day]
    plans = scripts(records, Selection())
    err.print(f"driving {len(plans)} stations against {target} at speed {speed} (Ctrl-C stops)")
    total = sum(p.frames for p in plans)
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("frames sent", total=total)
        results = asyncio.run(run(plans, Options(target, factor), lambda n: progress.update(task, completed=n)))
    report(results, json_out)
