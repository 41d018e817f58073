"""Charging sessions as an operator exports them: a CSV of
``session_id,evse_id,arrival,departure,energy_kwh,max_kw`` (arrival and departure ISO-8601
UTC), optionally ``v2g,max_discharge_kw``. ``twin control simulate`` evaluates policies on
them; ``twin simulate --live --sessions`` drives simulated EVs with them."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

COLUMNS = ("session_id", "evse_id", "arrival", "departure", "energy_kwh", "max_kw")
OPTIONAL = ("v2g", "max_discharge_kw")


class SessionsError(ValueError):
    """A sessions file that cannot be read; the message names the line and the field."""


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    evse_id: str
    arrival: datetime
    departure: datetime
    energy_kwh: float
    max_kw: float
    v2g: bool = False
    max_discharge_kw: float = 0.0


def _time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("", "0", "false", "no", "n"):
        return False
    if value in ("1", "true", "yes", "y"):
        return True
    raise ValueError(f"{text!r} is not true or false")


def read(path: str | Path) -> list[Session]:
    """Every session of the file, in the file's order; the first bad row raises
    :class:`SessionsError` with its line number."""
    where = Path(path)
    try:
        handle = where.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise SessionsError(f"{where}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise SessionsError(f"{where} line 1: missing column(s) {', '.join(missing)} "
                                f"(the columns: {','.join(COLUMNS)}, optionally {','.join(OPTIONAL)})")  # fmt: skip
        out = []
        seen: set[str] = set()
        for row in reader:
            line = reader.line_num
            out.append(_session(row, f"{where} line {line}"))
            if out[-1].session_id in seen:
                raise SessionsError(f"{where} line {line}: session_id {out[-1].session_id!r} appears twice")
            seen.add(out[-1].session_id)
    return out


def _session(row: dict[str, str | None], where: str) -> Session:
    def field(name: str) -> str:
        value = row.get(name)
        if value is None or not value.strip():
            raise SessionsError(f"{where}: {name} is empty")
        return value.strip()

    values: dict[str, object] = {"session_id": field("session_id"), "evse_id": field("evse_id")}
    for name, parse in (("arrival", _time), ("departure", _time), ("energy_kwh", float), ("max_kw", float)):
        try:
            values[name] = parse(field(name))  # type: ignore[operator]
        except ValueError as exc:
            raise SessionsError(f"{where}: {name} {row.get(name)!r} is not {_what(name)} ({exc})") from None
    try:
        values["v2g"] = _flag(row.get("v2g") or "")
        values["max_discharge_kw"] = float((row.get("max_discharge_kw") or "0").strip() or 0)
    except ValueError as exc:
        raise SessionsError(f"{where}: {exc}") from None
    session = Session(**values)  # type: ignore[arg-type]
    if session.departure <= session.arrival:
        raise SessionsError(f"{where}: departure {session.departure.isoformat()} is not after arrival")
    for name in ("energy_kwh", "max_kw", "max_discharge_kw"):
        if getattr(session, name) < 0:
            raise SessionsError(f"{where}: {name} is negative")
    if session.max_kw == 0:
        raise SessionsError(f"{where}: max_kw is 0: this EV could never charge")
    return session


def _what(name: str) -> str:
    return "an ISO-8601 time" if name in ("arrival", "departure") else "a number"


def synthetic(evses: int = 50, sessions: int = 100, seed: int = 1, day: str = "2026-03-02",
              v2g_share: float = 1 / 6) -> list[Session]:  # fmt: skip
    """A seeded working day at a site that is both an office car park and a destination:
    commuters arrive 7-10 h and stay 6-10 h with 8-35 kWh to take; visitors come 9-20 h for
    1-4 h and want 4-25 kWh. Each session takes an EVSE free when it arrives (a driver who
    finds none goes elsewhere, and another session is drawn), at 7.4, 11 or 22 kW; about one
    in six EVs is bidirectional."""
    import random
    from datetime import timedelta

    rng = random.Random(f"sessions:{seed}")
    midnight = _time(day)
    free = dict.fromkeys(range(1, evses + 1), midnight)
    out: list[Session] = []
    tries = 0
    while len(out) < sessions and tries < sessions * 20:
        tries += 1
        commuter = rng.random() < 0.4
        hours = rng.uniform(7, 10) if commuter else rng.uniform(9, 20)
        stay = rng.uniform(6, 10) if commuter else rng.uniform(1, 4)
        arrival = midnight + timedelta(hours=hours)
        evse = next((e for e, at in free.items() if at <= arrival), None)
        if evse is None:
            continue
        departure = arrival + timedelta(hours=stay)
        free[evse] = departure + timedelta(minutes=5)
        max_kw = rng.choice((7.4, 11.0, 11.0, 22.0))
        v2g = rng.random() < v2g_share
        energy = rng.uniform(8, 35) if commuter else rng.uniform(4, 25)
        out.append(Session(f"S{len(out) + 1:04d}", f"EVSE-{evse:03d}", arrival.replace(microsecond=0),
                           departure.replace(microsecond=0), round(energy, 2), max_kw, v2g,
                           max_kw if v2g else 0.0))  # fmt: skip
    return sorted(out, key=lambda s: s.arrival)
