"""Tariffs as data (OCPP 2.1's ``TariffType``) and the price in force (a session's cost under
them is :mod:`twin.cost`).

A tariff is exactly the JSON a CSMS sends in SetDefaultTariff, ChangeTransactionTariff or an
AuthorizeResponse. Everything here is pure: the moment is an argument, never a clock, so the
fold, the reports, the simulated stations, central cost and the publication feeds agree.

How a tariff is read (OCPP 2.1 part 2, I01-I12, where it leaves a choice, the choice made):

- Each component (``energy``, ``chargingTime``, ``idleTime``, ``fixedFee``,
  ``reservationTime``, ``reservationFixed``) lists prices with optional conditions; the
  first price whose conditions all hold applies (as OCPI reads its elements). No price
  matching: that component costs nothing then.
- Times of day, days of the week and dates are the station's local time (``tz``, an IANA
  zone such as ``Europe/Berlin``). A station's zone is what the log says its clock was set
  to: the ``ClockCtrlr.TimeZone`` a SetVariables it accepted or a GetVariables answer gave
  (:func:`clock_zone`); UTC where the log says none (:data:`DEFAULT_ZONE`). The twin, central
  cost, the simulated stations and the reports all read it so. An ``endTimeOfDay`` before
  the start wraps past midnight, ``00:00`` ends the day.
- A condition on something unknown (power or current outside a session, an EVSE kind, a
  payment brand not given) does not hold.
- ``validFrom`` in the future: the tariff is not in force yet. Of several tariffs on one
  EVSE, the one in force has the latest ``validFrom`` not after the moment.
- A session keeps the tariff it started with until a ChangeTransactionTariff replaces it
  from that moment on; the cost so far stays.
- Prices are excluding tax; the ``..._incl_tax`` figures come from the component's
  ``taxRates`` (``stack`` 0 on the net price, each higher stack on top of the one below)
  and are None where it gives none. ``minCost``/``maxCost`` bound the total.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

Tariff = Mapping[str, Any]
COMPONENTS = ("energy", "chargingTime", "idleTime", "fixedFee", "reservationTime", "reservationFixed")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
HORIZON_DAYS = 8
"""How far ahead :func:`next_change` looks: past a week every calendar condition repeats."""
DEFAULT_ZONE = "UTC"
"""The time zone of a station whose clock's zone the log does not say."""
CLOCK_ZONE = ("ClockCtrlr", "TimeZone")
"""The device model's variable for a station's time zone (OCPP 2.x, ``Europe/Oslo``)."""
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_DATE = re.compile(r"^[12][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")


class TariffError(ValueError):
    """A tariff that is not valid OCPP 2.1; the message names the field."""


# -- tariffs as data ------------------------------------------------------------------------------


@cache
def _validator() -> Any:
    import fastjsonschema

    from twin.schemas import schema

    request = schema("ocpp2.1", "SetDefaultTariff", "Request")
    assert request is not None
    document = {"$schema": request["$schema"], "definitions": request["definitions"],
                "$ref": "#/definitions/TariffType"}  # fmt: skip
    return fastjsonschema.compile(document, use_default=False)


def check(tariff: Any) -> dict[str, Any]:
    """``tariff`` if it is a valid ``TariffType`` of OCPP 2.1; else :class:`TariffError` naming
    the field (``energy.prices[0].conditions.startTimeOfDay: ...``)."""
    import fastjsonschema

    try:
        _validator()(tariff)
    except fastjsonschema.JsonSchemaValueException as exc:
        said = exc.message.split(" ", 1)[1] if exc.message.startswith("data") else exc.message
        raise TariffError(f"{_path(exc.path or [])}: {said}") from None
    for name in COMPONENTS:
        for i, price in enumerate((tariff.get(name) or {}).get("prices", ())):
            conditions = price.get("conditions") or {}
            where = f"{name}.prices[{i}].conditions"
            for key in ("startTimeOfDay", "endTimeOfDay"):
                if key in conditions and not _HHMM.match(conditions[key]):
                    raise TariffError(f"{where}.{key}: {conditions[key]!r} is not a time of day HH:MM (00:00-23:59)")
            for key in ("validFromDate", "validToDate"):
                if key in conditions and not _DATE.match(conditions[key]):
                    raise TariffError(f"{where}.{key}: {conditions[key]!r} is not a date YYYY-MM-DD")
    for key in ("minCost", "maxCost"):
        if key in tariff and not {"exclTax", "inclTax"} & set(tariff[key]):
            raise TariffError(f"{key}: needs exclTax or inclTax")
    return dict(tariff)


def _path(parts: Sequence[Any]) -> str:
    out = ""
    for p in parts[1:]:
        out += f"[{p}]" if isinstance(p, int) or str(p).isdigit() else f".{p}"
    return out.lstrip(".") or "tariff"


def load(path: str | Path) -> dict[str, Any]:
    """A tariff file: one ``TariffType`` as JSON, checked; :class:`TariffError` otherwise."""
    try:
        value = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise TariffError(f"{path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise TariffError(f"{path}: not JSON ({exc})") from None
    try:
        return check(value)
    except TariffError as exc:
        raise TariffError(f"{path}: {exc}") from None


_INSTANTS: dict[str, datetime] = {}


def instant(value: str | datetime) -> datetime:
    """An ISO time as a datetime. Parsed once: the fold reads a transaction's start and its
    kept readings' times again at every event of it."""
    if isinstance(value, datetime):
        return value
    found = _INSTANTS.get(value)
    if found is None:
        if len(_INSTANTS) >= 8192:
            _INSTANTS.clear()
        found = _INSTANTS[value] = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return found


def iso(value: datetime) -> str:
    utc = value.astimezone(_zone("UTC"))
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def valid_from(tariff: Tariff) -> datetime | None:
    return instant(tariff["validFrom"]) if tariff.get("validFrom") else None


def in_force(tariffs: Iterable[Tariff], at: datetime) -> Tariff | None:
    """Of the tariffs on one EVSE, the one in force at ``at``: the latest ``validFrom`` not
    after it (an absent ``validFrom`` ranks below any; of equals, the later listed)."""
    best: tuple[bool, datetime, int] | None = None
    chosen: Tariff | None = None
    for i, tariff in enumerate(tariffs):
        start = valid_from(tariff)
        if start is not None and start > at:
            continue
        rank = (start is not None, start or at, i)
        if best is None or rank > best:
            best, chosen = rank, tariff
    return chosen


# -- the price at a moment ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    """A session's state at a moment, for the conditions that depend on it. The defaults are
    a session about to start with nothing known about its power."""

    energy_wh: float = 0.0
    duration_s: float = 0.0
    charging_s: float = 0.0
    idle_s: float = 0.0
    power_w: float | None = None
    current_a: float | None = None
    evse_kind: str | None = None  # "AC" or "DC"
    payment_brand: str | None = None
    payment_recognition: str | None = None


START = Usage()


@dataclass(frozen=True, slots=True)
class Price:
    """The prices in force: per kWh, per minute charging, per minute idle, the fixed fee of a
    session starting now; excluding tax, and including it where the tariff gives tax rates.
    None: no price of that kind applies."""

    energy_per_kwh: float | None = None
    time_per_min: float | None = None
    idle_per_min: float | None = None
    fixed_fee: float | None = None
    energy_per_kwh_incl_tax: float | None = None
    time_per_min_incl_tax: float | None = None
    idle_per_min_incl_tax: float | None = None
    fixed_fee_incl_tax: float | None = None

    def as_json(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name in ("energy_per_kwh", "time_per_min", "fixed_fee", "idle_per_min"):
            out[name] = getattr(self, name)
            if getattr(self, f"{name}_incl_tax") is not None:
                out[f"{name}_incl_tax"] = getattr(self, f"{name}_incl_tax")
        return out


def tax_factor(rates: Iterable[Mapping[str, Any]] | None) -> float | None:
    """What a net price is multiplied by to include tax; None when no rates are given."""
    rates = list(rates or ())
    if not rates:
        return None
    stacks: dict[int, float] = {}
    for r in rates:
        stacks[int(r.get("stack", 0))] = stacks.get(int(r.get("stack", 0)), 0.0) + float(r["tax"])
    factor = 1.0
    for level in sorted(stacks):
        factor *= 1 + stacks[level] / 100
    return factor


def known_zone(name: Any) -> str | None:
    """``name`` if it is a time zone this machine knows (IANA, ``Europe/Amsterdam``), else None."""
    if not isinstance(name, str) or not name or name != name.strip():
        return None
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def station_zone(twin: Mapping[str, Any]) -> str:
    """A twin's time zone: its clock's as the log says (``tariffs.time_zone``), else UTC."""
    return str((twin.get("tariffs") or {}).get("time_zone") or DEFAULT_ZONE)


def clock_zone(action: str, request: Mapping[str, Any] | None, answer: Mapping[str, Any]) -> str | None:
    """The station's time zone that a SetVariables the station accepted (the value asked) or
    a GetVariables it answered (the value given) says: ``ClockCtrlr.TimeZone``, the actual
    value; None when the exchange says nothing of it (or names no zone this machine knows)."""

    def clock(item: Mapping[str, Any]) -> bool:
        return ((item.get("component") or {}).get("name"), (item.get("variable") or {}).get("name")) == CLOCK_ZONE \
            and item.get("attributeType", "Actual") == "Actual"  # fmt: skip

    found: Any = None
    if action == "SetVariables" and request is not None:
        asked = [d.get("attributeValue") for d in request.get("setVariableData") or () if clock(d)]
        took = [r for r in answer.get("setVariableResult") or () if clock(r)]
        if asked and took and all(r.get("attributeStatus") in ("Accepted", "RebootRequired") for r in took):
            found = asked[-1]
    elif action == "GetVariables":
        given = [r.get("attributeValue") for r in answer.get("getVariableResult") or ()
                 if clock(r) and r.get("attributeStatus") == "Accepted"]  # fmt: skip
        found = given[-1] if given else None
    return known_zone(found)


def _local(at: datetime, tz: str) -> datetime:
    return at.astimezone(_zone(tz))


@cache
def _zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz)


def _minutes(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[3:5])


def _calendar_ok(c: Mapping[str, Any], local: datetime) -> bool:
    if "dayOfWeek" in c and DAYS[local.weekday()] not in c["dayOfWeek"]:
        return False
    today = local.date().isoformat()
    if "validFromDate" in c and today < c["validFromDate"]:
        return False
    if "validToDate" in c and today >= c["validToDate"]:
        return False
    if "startTimeOfDay" in c or "endTimeOfDay" in c:
        now = local.hour * 60 + local.minute + local.second / 60
        start = _minutes(c.get("startTimeOfDay", "00:00"))
        end = _minutes(c.get("endTimeOfDay", "00:00")) or 24 * 60
        if start < end and not start <= now < end:
            return False
        if start >= end and end <= now < start:  # wraps past midnight
            return False
    return True


def _within(value: float | None, low: float | None, high: float | None) -> bool:
    """``low`` inclusive, ``high`` exclusive, both read as distances from zero (a negative pair
    is a discharge range); an unknown value meets no bound."""
    if low is None and high is None:
        return True
    if value is None:
        return False
    sign = -1.0 if (low is not None and low < 0) or (high is not None and high < 0) else 1.0
    v = value * sign
    eps = 1e-3  # a threshold met at a cut rounded to the microsecond
    return (low is None or v >= low * sign - eps) and (high is None or v < high * sign - eps)


def _conditions_ok(c: Mapping[str, Any], local: datetime, u: Usage) -> bool:
    if not c:
        return True
    if not _calendar_ok(c, local):
        return False
    if "evseKind" in c and c["evseKind"] != u.evse_kind:
        return False
    return (
        _within(u.energy_wh, c.get("minEnergy"), c.get("maxEnergy"))
        and _within(u.duration_s, c.get("minTime"), c.get("maxTime"))
        and _within(u.charging_s, c.get("minChargingTime"), c.get("maxChargingTime"))
        and _within(u.idle_s, c.get("minIdleTime"), c.get("maxIdleTime"))
        and _within(u.power_w, c.get("minPower"), c.get("maxPower"))
        and _within(u.current_a, c.get("minCurrent"), c.get("maxCurrent"))
    )


def _fixed_ok(c: Mapping[str, Any], local: datetime, u: Usage) -> bool:
    if not c:
        return True
    if not _calendar_ok(c, local) or ("evseKind" in c and c["evseKind"] != u.evse_kind):
        return False
    if "paymentBrand" in c and c["paymentBrand"] != u.payment_brand:
        return False
    return not ("paymentRecognition" in c and c["paymentRecognition"] != u.payment_recognition)


def component_price(tariff: Tariff, name: str, at: datetime, usage: Usage = START,
                    tz: str = "UTC") -> tuple[float | None, float | None]:  # fmt: skip
    """The price of one component at ``at``: ``(excl_tax, incl_tax)``; None where none applies."""
    part = tariff.get(name)
    if not part:
        return None, None
    local = _local(at, tz)
    fixed = name in ("fixedFee", "reservationFixed")
    key = "priceFixed" if fixed else "priceKwh" if name == "energy" else "priceMinute"
    for p in part.get("prices", ()):
        ok = _fixed_ok if fixed else _conditions_ok
        if ok(p.get("conditions") or {}, local, usage):
            net = float(p[key])
            factor = tax_factor(part.get("taxRates"))
            return net, None if factor is None else _round(net * factor)
    return None, None


def _round(x: float) -> float:
    return round(x, 6)


def price_at(tariffs: Tariff | Sequence[Tariff], at: datetime, usage: Usage = START,
             tz: str = "UTC") -> Price | None:  # fmt: skip
    """The price in force at ``at``: of one tariff, or of the tariffs on an EVSE (the one in
    force, :func:`in_force`). None when no tariff is in force yet."""
    tariff = _pick(tariffs, at)
    if tariff is None:
        return None
    energy = component_price(tariff, "energy", at, usage, tz)
    charging = component_price(tariff, "chargingTime", at, usage, tz)
    idle = component_price(tariff, "idleTime", at, usage, tz)
    fixed = component_price(tariff, "fixedFee", at, usage, tz)
    return Price(energy[0], charging[0], idle[0], fixed[0], energy[1], charging[1], idle[1], fixed[1])


def _pick(tariffs: Tariff | Sequence[Tariff], at: datetime) -> Tariff | None:
    if isinstance(tariffs, Mapping):
        start = valid_from(tariffs)
        return None if start is not None and start > at else tariffs
    return in_force(tariffs, at)


def _as_list(tariffs: Tariff | Sequence[Tariff]) -> list[Tariff]:
    return [tariffs] if isinstance(tariffs, Mapping) else list(tariffs)


def boundaries(tariffs: Tariff | Sequence[Tariff], after: datetime, until: datetime,
               tz: str = "UTC") -> list[datetime]:  # fmt: skip
    """Every instant in ``(after, until]`` where a calendar condition or a ``validFrom`` may
    change the price, ascending: local midnights, times of day, dates, validFrom. Kept by
    POSIX time: a set of zoned datetimes asks the zone for an offset at every hash and
    comparison, and the fold asks at every reading."""
    zone = _zone(tz)
    times: set[int] = {0}
    dates: set[str] = set()
    out: dict[float, datetime] = {}
    for tariff in _as_list(tariffs):
        start = valid_from(tariff)
        if start is not None:
            out.setdefault(start.timestamp(), start)
        for name in COMPONENTS:
            for p in (tariff.get(name) or {}).get("prices", ()):
                c = p.get("conditions") or {}
                times.update(_minutes(c[k]) for k in ("startTimeOfDay", "endTimeOfDay") if k in c)
                dates.update(c[k] for k in ("validFromDate", "validToDate") if k in c)
    day = _local(after, tz).date()
    last = _local(until, tz).date()
    minutes = tuple(sorted(times))
    while day <= last:
        for key, t in _times_of_day(day, minutes, tz):
            out.setdefault(key, t)
        day += timedelta(days=1)
    for d in dates:
        t = datetime.combine(date.fromisoformat(d), time(0), zone)
        out.setdefault(t.timestamp(), t)
    low, high = after.timestamp(), until.timestamp()
    return [t for key, t in sorted(out.items()) if low < key <= high]


@lru_cache(maxsize=4096)
def _times_of_day(day: date, minutes: tuple[int, ...], tz: str) -> tuple[tuple[float, datetime], ...]:
    """The instants of a local day at these minutes past midnight, with their POSIX times:
    made once a day, not at every reading the fold asks about."""
    zone = _zone(tz)
    made = (datetime.combine(day, time(m // 60, m % 60), zone) for m in minutes)
    return tuple((t.timestamp(), t) for t in made)


_CALENDAR = ("dayOfWeek", "startTimeOfDay", "endTimeOfDay", "validFromDate", "validToDate")


def _calendared(tariffs: Tariff | Sequence[Tariff]) -> bool:
    """Whether a price's conditions name days, dates or times of day."""
    return any(k in (p.get("conditions") or {}) for t in _as_list(tariffs) for name in COMPONENTS
               for p in (t.get(name) or {}).get("prices", ()) for k in _CALENDAR)  # fmt: skip


def next_change(tariffs: Tariff | Sequence[Tariff], at: datetime, usage: Usage = START, tz: str = "UTC",
                horizon_days: int = HORIZON_DAYS) -> tuple[datetime, Price | None] | None:  # fmt: skip
    """When the price in force next changes after ``at`` (calendar conditions and validFrom;
    a session's own progress is not foreseen), and to what; None within the horizon."""
    now = price_at(tariffs, at, usage, tz)
    cuts = boundaries(tariffs, at, at + timedelta(days=horizon_days), tz)
    if not _calendared(tariffs):  # only a validFrom can change the price: no midnight to look at
        starts = [valid_from(t) for t in _as_list(tariffs)]
        cuts = [t for t in cuts if t in starts]
    for t in cuts:
        then = price_at(tariffs, t, usage, tz)
        if then != now:
            return t, then
    return None


_QUOTES: dict[tuple[Any, ...], tuple[tuple[Tariff, ...], float, float, Any, dict[str, Any]]] = {}


def quote(tariffs: Tariff | Sequence[Tariff], at: datetime, usage: Usage = START,
          tz: str = "UTC") -> dict[str, Any] | None:  # fmt: skip
    """The twin's view of an EVSE's tariffs at ``at``: the tariff in force (or, none being in
    force yet, the next one), its price now and the next change.

    The same until the next change or ``validFrom``: a quote of these very tariffs (the same
    objects) is reused at any moment from the one it was made at to the first of them, within
    a day and the same offset of the zone (a time of day in a skipped hour is no boundary).
    The fold asks again at every start and end of a transaction, and at every event of one
    with a driver tariff."""
    listed = _as_list(tariffs)
    if not listed:
        return None
    key = (*map(id, listed), tz, usage)
    ts = at.timestamp()
    offset = _local(at, tz).utcoffset()
    kept = _QUOTES.get(key)
    if kept is not None:
        held, low, high, zone_offset, made = kept
        if low <= ts < high and zone_offset == offset and all(a is b for a, b in zip(held, listed, strict=True)):
            return dict(made)
    made, change = _quote(listed, at, usage, tz)
    starts = [s.timestamp() for s in map(valid_from, listed) if s is not None and s > at]
    if change is not None:
        starts.append(change.timestamp())
    elif _calendared(listed):
        starts.append(ts)  # no change within the horizon: the horizon moves with ``at``
    if len(_QUOTES) >= 4096:
        _QUOTES.clear()
    _QUOTES[key] = (tuple(listed), ts, min([ts + 86400.0, *starts]), offset, made)
    return dict(made)


def _quote(listed: list[Tariff], at: datetime, usage: Usage, tz: str) -> tuple[dict[str, Any], datetime | None]:
    tariff = _pick(listed, at)
    shown = tariff
    if shown is None:  # every tariff still to come: show the first of them
        shown = min(listed, key=lambda t: valid_from(t) or at)
    price = price_at(listed, at, usage, tz)
    change = next_change(listed, at, usage, tz)
    upcoming = _pick(listed, change[0]) if change else None
    return {
        "tariff_id": shown.get("tariffId"),
        "currency": shown.get("currency"),
        "valid_from": shown.get("validFrom"),
        "in_force": tariff is not None,
        "price_now": price.as_json() if price else None,
        "next_change_at": iso(change[0]) if change else None,
        "price_next": change[1].as_json() if change and change[1] else None,
        "next_tariff_id": upcoming.get("tariffId") if upcoming is not None and upcoming is not tariff else None,
    }, change[0] if change else None
