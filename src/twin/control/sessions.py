"""Charging sessions as an operator exports them: a CSV of
``session_id,evse_id,arrival,departure,energy_kwh,max_kw`` (arrival and departure ISO-8601
UTC), optionally ``v2g,max_discharge_kw``. ``twin control simulate`` evaluates policies on
them; ``twin simulate --live --sessions`` drives simulated EVs with them."""

from __future__ import annotations

import csv
import io
import math
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
    max_discharge_kw: float | None = None
    """A V2G EV's discharge limit; None: as much as it charges."""
    line: int = 0
    """Where it is in its file (for errors about it)."""

    @property
    def discharge_kw(self) -> float:
        """What it may give back: 0 unless V2G."""
        if not self.v2g:
            return 0.0
        return self.max_kw if self.max_discharge_kw is None else self.max_discharge_kw


TRUE, FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f", ""}


def parse(text: str) -> list[Session]:
    """The sessions of a CSV's text, in file order; :class:`SessionsError` at the first bad
    line, naming it (``line N: ...``)."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise SessionsError(f"line 1: the header lacks {', '.join(missing)} (columns: {','.join(COLUMNS)}, "
                            f"optionally {','.join(OPTIONAL)})")  # fmt: skip
    out: list[Session] = []
    seen: set[str] = set()
    for record in reader:
        line = reader.line_num
        try:
            session = _session(line, record)
        except ValueError as exc:
            raise SessionsError(f"line {line}: {exc}") from None
        if session.session_id in seen:
            raise SessionsError(f"line {line}: session_id {session.session_id!r} appears twice")
        seen.add(session.session_id)
        out.append(session)
    if not out:
        raise SessionsError("no sessions: the file has a header and no rows")
    return out


def read(path: str | Path) -> list[Session]:
    """:func:`parse` of a file; its errors name the file too."""
    where = Path(path)
    try:
        return parse(where.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise SessionsError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SessionsError(f"{where}: not UTF-8 text") from None
    except SessionsError as exc:
        raise SessionsError(f"{where}: {exc}") from None


def _session(line: int, r: dict[str, str | None]) -> Session:
    def text(key: str) -> str:
        value = (r.get(key) or "").strip()
        if not value and key in COLUMNS:
            raise ValueError(f"{key} is empty")
        return value

    def number(key: str) -> float:
        raw = text(key)
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{key} is not a number: {raw!r}") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{key} must be a number >= 0, not {raw!r}")
        return value

    arrival, departure = _time(text("arrival"), "arrival"), _time(text("departure"), "departure")
    if departure <= arrival:
        raise ValueError(f"departure {text('departure')} is not after arrival {text('arrival')}")
    max_kw = number("max_kw")
    if max_kw <= 0:
        raise ValueError("max_kw must be above 0: this EV could never charge")
    flag = text("v2g").lower()
    if flag not in TRUE | FALSE:
        raise ValueError(f"v2g is true or false, not {flag!r}")
    return Session(text("session_id"), text("evse_id"), arrival, departure, number("energy_kwh"), max_kw,
                   flag in TRUE, number("max_discharge_kw") if text("max_discharge_kw") else None, line)  # fmt: skip


def _time(value: str, key: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{key} is not an ISO-8601 time: {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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
    midnight = _time(day, "day")
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
