"""The fleet simulator behind ``twin simulate``: deterministic for a seed, a day at a time.

``simulate`` yields each day's envelopes in capture order, exactly as the gateway in csms
mode would have written them (``conn_id``, ``seq``, lifecycle records, answers); a capture
is those days written as JSON lines or as the Parquet archive.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twin.simulator.fleet import Pool, Station, build, inventory
from twin.simulator.station import DAY_MS, Rates, StationSim

__all__ = ["DEFAULT_START", "Pool", "Rates", "Station", "build", "inventory", "inventory_path", "simulate"]

DEFAULT_START = "2026-03-02"
"""A Monday. The start is fixed, not today, so that a seed always gives the same capture."""

SHOWCASE = ("fault", "outage", "reboot", "firmware", "monitor", "security", "expired", "cancelled", "rejected")


def inventory_path(capture: str | Path) -> Path:
    """Where a capture's station inventory lives: ``ARCHIVE/_stations.json`` (readers of
    the hive layout skip ``_`` files) or ``CAPTURE.stations.json`` beside a ``.jsonl``."""
    p = Path(capture)
    return p.with_name(p.name + ".stations.json") if p.suffix == ".jsonl" else p / "_stations.json"


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
) -> Iterator[list[dict[str, Any]]]:
    """Each simulated day's envelopes, in capture order (the last day may be partial)."""
    rates = rates or Rates()
    t0 = start_ms(start)
    _, fleet = build(stations, seed, prefix)
    sims = [StationSim(station, rates, seed, t0) for station in fleet]
    if sims:  # every kind of event at least once, whatever the rates: one station shows each
        for i, kind in enumerate(SHOWCASE):
            sims[i % len(sims)].showcase.add(kind)
        sims[0].showcase.add("reservation")
        bidirectional = next((s for s in sims if s.s.bidirectional), None)
        if bidirectional is not None:
            bidirectional.showcase.add("v2g")
    horizon = t0 + int(days * DAY_MS)
    day = 0
    while t0 + day * DAY_MS < horizon:
        end = min(t0 + (day + 1) * DAY_MS, horizon)
        chunks = []
        last = end >= horizon
        for sim in sims:
            sim.plan_day(day)
            chunks.append(sim.emit_until(end, final=last))
        yield list(heapq.merge(*chunks, key=_ts))
        day += 1


def _ts(record: dict[str, Any]) -> str:
    return record["ts"]  # type: ignore[no-any-return]
