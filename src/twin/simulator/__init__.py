"""The fleet simulator behind ``twin simulate``: deterministic for a seed, a day at a time.

``simulate`` yields each day's envelopes in capture order, exactly as the gateway in csms
mode would have written them (``conn_id``, ``seq``, lifecycle records, answers); a capture
is those days written as JSON lines or as the Parquet archive.
"""

from __future__ import annotations

import gc
import heapq
import multiprocessing
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from twin.simulator.fleet import Pool, Station, build, inventory
from twin.simulator.station import DAY_MS, Rates, StationSim

__all__ = ["DEFAULT_START", "Pool", "Rates", "Station", "build", "inventory", "simulate", "write"]

DEFAULT_START = "2026-03-02"
"""A Monday. The start is fixed, not today, so that a seed always gives the same capture."""

Run = tuple[int, float, int, str, Rates, str]
"""simulate's arguments: stations, days, seed, start, rates, prefix."""

SHOWCASE = ("fault", "outage", "reboot", "firmware", "monitor", "security", "expired", "cancelled", "rejected")


def start_ms(start: str) -> int:
    moment = datetime.fromisoformat(start.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def simulate(
    stations: int,
    days: float,
    seed: int = 1,
    start: str = DEFAULT_START,
    rates: Rates | None = None,
    prefix: str = "CS",
    part: tuple[int, int] = (0, 1),
    opening: bool = False,
) -> Iterator[list[dict[str, Any]]]:
    """Each simulated day's envelopes, in capture order (the last day may be partial).

    ``part=(k, n)``: only the k-th of n runs of consecutive stations, for :func:`write` to
    share a fleet among processes; the parts, merged by (``ts``, ``station_id``), are the
    whole. (Runs, not every n-th station: each process's files then hold a range of stations
    of their own, which tells readers no record is in two of them.)
    ``opening``: for live runs, cars arrive within the first minutes (see StationSim)."""
    rates = rates or Rates()
    t0 = start_ms(start)
    _, fleet = build(stations, seed, prefix)
    sims = [StationSim(station, rates, seed, t0, opening) for station in fleet]
    if sims:  # every kind of event at least once, whatever the rates: one station shows each
        for i, kind in enumerate(SHOWCASE):
            sims[i % len(sims)].showcase.add(kind)
        sims[0].showcase.add("reservation")
        bidirectional = next((s for s in sims if s.s.bidirectional), None)
        if bidirectional is not None:
            bidirectional.showcase.add("v2g")
    sims = sims[len(sims) * part[0] // part[1] : len(sims) * (part[0] + 1) // part[1]]
    horizon = t0 + int(days * DAY_MS)
    day = 0
    while t0 + day * DAY_MS < horizon:
        end = min(t0 + (day + 1) * DAY_MS, horizon)
        chunks = []
        last = end >= horizon
        for sim in sims:
            sim.plan_day(day)
            chunks.append(sim.wire.emit_until(end, final=last))
        yield list(heapq.merge(*chunks, key=_order))
        day += 1


def _order(record: dict[str, Any]) -> tuple[str, str]:
    return record["ts"], record["station_id"]


def write(
    out: str | Path,
    stations: int,
    days: float,
    seed: int = 1,
    start: str = DEFAULT_START,
    rates: Rates | None = None,
    prefix: str = "CS",
    workers: int = 1,
    progress: Callable[[float], None] | None = None,
) -> int:
    """Simulate into a capture: ``OUT.jsonl`` in capture order, or a Parquet archive
    directory. With ``workers`` > 1 the stations are shared among that many processes;
    the capture is the same (the archive in more files). Returns how many records."""
    path = Path(out)
    jsonl = path.suffix == ".jsonl"
    if jsonl:
        path.unlink(missing_ok=True)
    args: Run = (stations, days, seed, start, rates or Rates(), prefix)
    workers = max(1, min(workers, stations))
    if workers == 1:
        return _write_part(path, jsonl, args, (0, 1), progress)
    ctx = multiprocessing.get_context("fork")
    done = ctx.Value("d", 0.0)
    parts = [path.with_name(f".{path.name}.part{k}") if jsonl else path for k in range(workers)]
    procs = [ctx.Process(target=_part_worker, args=(parts[k], jsonl, args, (k, workers), done)) for k in range(workers)]
    for proc in procs:
        proc.start()
    while any(proc.is_alive() for proc in procs):
        if progress is not None:
            progress(done.value / workers)
        time.sleep(0.2)
    if any(proc.exitcode for proc in procs):
        raise RuntimeError(f"a simulator process failed (exit codes {[proc.exitcode for proc in procs]})")
    if not jsonl:
        import pyarrow.dataset as ds

        return int(ds.dataset(path, format="parquet", partitioning="hive").count_rows())
    n = 0
    files = [p.open("rb") for p in parts]
    try:
        with path.open("wb") as f:
            for line in heapq.merge(*files, key=_line_order):
                f.write(line)
                n += 1
    finally:
        for handle, part_path in zip(files, parts, strict=True):
            handle.close()
            part_path.unlink()
    return n


def _part_worker(path: Path, jsonl: bool, args: Run, part: tuple[int, int], done: Any) -> None:
    def advance(days_done: float) -> None:
        with done.get_lock():
            done.value += days_done

    _write_part(path, jsonl, args, part, advance, delta=True)


def _write_part(path: Path, jsonl: bool, args: Run, part: tuple[int, int],
                progress: Callable[[float], None] | None, delta: bool = False) -> int:  # fmt: skip
    from twin import archive

    n = 0
    handle = path.open("ab") if jsonl else None
    # The cyclic collector off while writing: the simulator makes millions of acyclic dicts,
    # and each full collection walked all of the day's records (measured: 69,000 records/s
    # with it, 147,000 without, 124,000 with the long-running processes' tune_gc)
    collecting = gc.isenabled()
    gc.disable()
    try:
        for i, day in enumerate(simulate(*args, part=part), start=1):
            if handle is not None:
                handle.write(b"".join([orjson.dumps(r) + b"\n" for r in day]))
            else:
                archive.write(path, day, unique=True)  # each record made once
            n += len(day)
            if progress is not None:
                progress(1 if delta else i)
    finally:
        if collecting:
            gc.enable()
        if handle is not None:
            handle.close()
    return n


def _line_order(line: bytes) -> tuple[bytes, bytes]:
    """(ts, station_id) of an envelope's JSON line, without parsing it: orjson writes the
    envelope's keys in order, station_id first and ts after the payload (so the last
    ``"ts":"`` of the line is the envelope's)."""
    at = line.rindex(b'"ts":"') + 6
    return line[at : at + 24], line[15 : line.index(b'"', 15)]
