"""``twin simulate``: a realistic fleet capture, written or driven live against a CSMS."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Annotated

import orjson
import typer

from twin.captures import inventory_path
from twin.cli.app import Json, app, err, fail, print_json, progress_bar
from twin.simulator import DEFAULT_START, Rates, inventory, write

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
    speed: Annotated[str, typer.Option(help="Live: simulated seconds per real second, or 'max' (3600).")] = "1",
    inventory_to: Annotated[
        str | None,
        typer.Option("--inventory", help="Live: write the station inventory for this archive directory (or capture)."),
    ] = None,
    prefix: Annotated[str, typer.Option(help="Station ids are PREFIX-00001, ...")] = "CS",
    meter_interval: Annotated[
        int, typer.Option(help="Seconds between TransactionEvent Updated while charging.")
    ] = 60,  # fmt: skip
    faults: Annotated[float | None, typer.Option(
        min=0, help=f"Connector faults per station-day (offline: default {Rates.fault_per_day}; live: none "
                    "unless asked).")] = None,  # fmt: skip
    outages: Annotated[float | None, typer.Option(
        min=0, help=f"Connection outages per station-day (offline: default {Rates.outage_per_day}; live: none "
                    "unless asked).")] = None,  # fmt: skip
    workers: Annotated[int, typer.Option(help="Processes sharing the stations (offline).")] = os.cpu_count() or 1,
    sessions: Annotated[
        str | None,
        typer.Option("--sessions", help="Live: EV arrivals from this CSV (session_id,evse_id,arrival,departure,"
                                        "energy_kwh,max_kw[,v2g,max_discharge_kw]) instead of drawn from the seed."),
    ] = None,  # fmt: skip
    reject_profiles: Annotated[
        str | None,
        typer.Option("--reject-profiles", help="Live: these stations (ID,ID,...) reject every SetChargingProfile."),
    ] = None,
    central_cost: Annotated[str | None, typer.Option(
        "--central-cost-stations", help="Live: these 2.1 stations (ID,ID,...) compute no cost (no costDetails): "
        "the CSMS sends it (`twin controller --central-cost`).")] = None,  # fmt: skip
    json_out: Json = False,
) -> None:
    """Generate a fleet's OCPP traffic: AC and DC stations in pools along European corridors.

    Offline (--out) it writes a capture as fast as it can, deterministic for a seed: sessions,
    V2G, reservations, faults and outages, monitoring, certificates, firmware and tariffs,
    every frame schema-valid and as the gateway would capture it.

    Live (--live URL) the stations obey. Each connects to URL/STATION_ID with its own
    subprotocol, boots, reports its EVSEs and beats, on a simulated clock starting now (at
    --speed; 'max' is 3600). EVs arrive, drawn from the seed (a car at every station's EVSE 1
    within twenty simulated minutes), or from --sessions FILE.csv (columns
    session_id,evse_id,arrival,departure,energy_kwh,max_kw and optionally v2g,max_discharge_kw;
    times shifted so the first car comes a minute after now; an evse_id STATION:N is that EVSE,
    any other takes the fleet's next EVSE). Each session: Authorize, TransactionEvent Started,
    NotifyEVChargingNeeds (ISO 15118 EVs, and every EV from a file on OCPP 2.1; V2X parameters
    from EVs that discharge), Updated every --meter-interval with the registers, power and SoC
    of what the EV drew, Ended at departure.

    An accepted SetChargingProfile caps what the EV draws (the TxProfile of its transaction,
    else a TxDefaultProfile, the highest stack level; A count at 230 V x 3 phases on AC, 400 V
    on DC); CentralSetpoint follows the setpoint, a negative one discharging down to a fifth
    of the battery. Rejected: V2X on OCPP 2.0.1 or unidirectional stations, an unknown EVSE,
    a TxProfile for a transaction not running, anything for --reject-profiles stations. Other
    calls get the smallest valid answer. Dropped connections are retried with backoff. With
    --faults and --outages (none by default live, so a sessions file plays as written) a bay
    goes Faulted while empty (30 minutes to 4 hours, a NotifyEvent of the connector's problem;
    an EV arriving meanwhile leaves) and a station loses its network (5 to 90 minutes; what it
    sends meanwhile waits for it). Ctrl-C stops; --json then prints a summary (sessions, frames sent, answers received,
    profiles accepted and rejected).
    """
    rates = Rates(meter_interval_s=meter_interval,
                  fault_per_day=Rates.fault_per_day if faults is None else faults,
                  outage_per_day=Rates.outage_per_day if outages is None else outages)  # fmt: skip
    incidents = (faults or 0.0, outages or 0.0)  # live: only what was asked
    if live:
        if inventory_to:
            _inventory(inventory_to, stations, seed, prefix)
        rejecting = frozenset(x.strip() for x in (reject_profiles or "").split(",") if x.strip())
        central = frozenset(x.strip() for x in (central_cost or "").split(",") if x.strip())
        _live(stations, days, seed, rates, prefix, live, speed, json_out, sessions, rejecting, central, incidents)
        return
    if sessions or reject_profiles or central_cost:
        fail("--sessions, --reject-profiles and --central-cost-stations drive a live fleet: add --live URL")
    if not out:
        fail("say where the capture goes: --out capture.jsonl or --out archive-dir/ (or --live URL)")
    path = Path(out)
    jsonl = path.suffix == ".jsonl"
    began = time.perf_counter()
    with progress_bar() as progress:
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
          json_out: bool, sessions_csv: str | None, rejecting: frozenset[str],
          central: frozenset[str] = frozenset(), incidents: tuple[float, float] = (0.0, 0.0)) -> None:  # fmt: skip
    import signal
    from datetime import UTC, datetime

    from twin.cli.replay import parse_speed
    from twin.simulator import build, live
    from twin.simulator import sessions as visits_of

    if not target.startswith(("ws://", "wss://")):
        fail(f"--live takes a websocket URL (ws://host:port/path), not {target!r}")
    factor = parse_speed(speed) or live.SPEED_MAX
    _, fleet = build(stations, seed, prefix)
    start = datetime.now(UTC).replace(microsecond=0)
    if sessions_csv:
        from twin.control.sessions import SessionsError, read

        try:
            visits = visits_of.from_rows(read(sessions_csv), fleet, start)
        except SessionsError as exc:
            fail(str(exc))
        days = min(days, (max(v.departure for v in visits) + 120 - start.timestamp()) / 86_400)
    else:
        visits = [v for s in fleet for v in visits_of.generate(s, seed, start, days, rates)]
    unknown = sorted(rejecting - {s.station_id for s in fleet})
    if unknown:
        err.print(f"[yellow]warning:[/] --reject-profiles names stations not in the fleet: {', '.join(unknown)}")
    opts = live.Options(target, factor, days, rates.meter_interval_s, rejecting, central, start=start,
                        faults_per_day=incidents[0], outages_per_day=incidents[1])  # fmt: skip

    async def drive() -> live.Summary:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await live.run(fleet, visits_of.by_station(visits), opts, stop)

    err.print(f"driving {len(fleet)} stations ({len(visits)} EV visits planned) against {target} at "
              f"{factor:g}x, for {days * 24:.3g} simulated hours (Ctrl-C stops)")  # fmt: skip
    summary = asyncio.run(drive())
    if json_out:
        print_json(summary.as_json())
    else:
        s = summary
        err.print(f"{s.stations} stations, {s.sessions} sessions, {s.frames_sent:,} calls sent, "
                  f"{s.answers_received:,} answers, profiles {s.profiles_accepted} accepted / "
                  f"{s.profiles_rejected} rejected, {s.errors} errors, {s.reconnects} reconnects"
                  + (f", {s.final_costs} final costs from the CSMS" if s.final_costs else "")
                  + (f", {s.faults} faults and {s.outages} outages" if s.faults or s.outages else ""))  # fmt: skip
