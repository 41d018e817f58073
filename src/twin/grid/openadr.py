"""OpenADR 3 events as ``grid.signals`` records: pure, no clock (the moment the VEN received
the event is passed in), no I/O.

An event becomes one record per targeted site and per payload type this VEN folds
(``IMPORT_CAPACITY_LIMIT``, ``EXPORT_CAPACITY_LIMIT`` in kW; ``PRICE``, ``EXPORT_PRICE``
with the descriptor's currency and units; ``GHG`` kept). Sites are targeted by EAN: in 3.1
a target is a string (GAC: a list of EAN18 strings), in 3.0.1 a valuesMap whose type is
``POWER_SERVICE_LOCATION`` (or ``EAN``). An EAN that is no site's becomes a ``rejected``
record that says so (site_id ``None``): the log shows what the grid asked for and why
nothing happened.

Events of a grid-aware-charging program (GAC: program type ``DSO_CPO_INTERFACE-*``) must
also keep the GAC rules, as ElaadNL's ``openadr3-client-gac-compliance`` states them: no
priority, exactly one payload descriptor (``IMPORT_CAPACITY_LIMIT`` in ``KW``), EAN18
targets, at least one interval, interval ids strictly increasing, one payload of that type
with one value per interval, and intervals either continuous (the event's intervalPeriod
only) or separated (each interval's own). A non-compliant event is recorded ``rejected``
with every broken rule in ``reason``, and never obeyed.

OpenADR 3 has no modification number: an event's version is its ``modificationDateTime``
(milliseconds since the epoch), so :func:`twin.sites.latest` orders versions as 2.0b's
numbers would. The GAC safe-mode event (one per program; recognised by its name, e.g.
``safe-mode``) is recorded with payload type :data:`SAFE_MODE`: kept, never obeyed while
the VTN answers; :mod:`twin.grid.safe_mode` turns it into a limit when the VTN is gone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from twin import envelope
from twin.sites import EXPORT_LIMIT, EXPORT_PRICE, IMPORT_LIMIT, PRICE, Site

PROTOCOL = "openadr"
GHG = "GHG"
CAPACITY = (IMPORT_LIMIT, EXPORT_LIMIT)
FOLDED = (IMPORT_LIMIT, EXPORT_LIMIT, PRICE, EXPORT_PRICE, GHG)
SAFE_MODE = "SAFE_MODE_IMPORT_CAPACITY_LIMIT"
"""The payload type of a GAC safe-mode event's record: the limit for when the VTN is gone."""
GAC_PROGRAM = re.compile(r"^DSO_CPO_INTERFACE-")
SAFE_MODE_NAME = re.compile(r"safe[-_ ]?mode", re.IGNORECASE)
EAN18 = re.compile(r"^\d{18}$")
EAN_TARGET_TYPES = ("POWER_SERVICE_LOCATION", "EAN")
FOREVER_S = 100 * 365 * 86400.0
"""``P9999Y`` means "until further notice"; a century keeps datetime arithmetic in range."""
KW_PER = {"KW": 1.0, "W": 0.001, "MW": 1000.0}
_DURATION = re.compile(r"^(-?)P(?=\d|T\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)([DW]))?"
                       r"(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")  # fmt: skip


class EventError(ValueError):
    """An event this VEN cannot read; the message says which field and why."""


def duration_s(text: Any) -> float:
    """An ISO 8601 duration (the spec's pattern) in seconds; a year is 365 days, a month 30."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match:
        raise EventError(f"duration {text!r} is not ISO 8601 (e.g. PT15M)")
    sign, years, months, days, unit, hours, minutes, seconds = match.groups()
    if years and int(years) >= 9999:
        return FOREVER_S
    total = (int(years or 0) * 365 * 86400 + int(months or 0) * 30 * 86400
             + int(days or 0) * (7 if unit == "W" else 1) * 86400 + int(hours or 0) * 3600
             + int(minutes or 0) * 60 + float(seconds or 0))  # fmt: skip
    return min(-total if sign else total, FOREVER_S)


def start_of(text: Any, received: datetime) -> datetime:
    """An RFC 3339 start; ``0001-01-01`` means now (the moment received)."""
    if not isinstance(text, str):
        raise EventError(f"start {text!r} is not an RFC 3339 date-time")
    if text.startswith("0001-01-01"):
        return received
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EventError(f"start {text!r} is not an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        raise EventError(f"start {text!r} has no time zone")
    return moment


def version(event: Mapping[str, Any]) -> int:
    """The event's version: its modificationDateTime (else createdDateTime) in ms, else 0."""
    for name in ("modificationDateTime", "createdDateTime"):
        value = event.get(name)
        if isinstance(value, str):
            try:
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
            except ValueError:
                continue
    return 0


def _attribute(program: Mapping[str, Any] | None, name: str) -> Any:
    for entry in (program or {}).get("attributes") or ():
        if isinstance(entry, dict) and entry.get("type") == name and entry.get("values"):
            return entry["values"][0]
    return None


def is_gac(program: Mapping[str, Any] | None) -> bool:
    """A grid-aware-charging program: its PROGRAM_TYPE attribute is ``DSO_CPO_INTERFACE-*``."""
    kind = _attribute(program, "PROGRAM_TYPE")
    return isinstance(kind, str) and bool(GAC_PROGRAM.match(kind))


def is_safe_mode(event: Mapping[str, Any]) -> bool:
    name = event.get("eventName")
    return isinstance(name, str) and bool(SAFE_MODE_NAME.search(name))


def targets(event: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """The event's EANs, its other targets (VEN names, groups: not sites), and what is wrong
    with its targets. 3.1: strings; 3.0.1: valuesMaps."""
    eans: list[str] = []
    others: list[str] = []
    problems: list[str] = []
    raw = event.get("targets")
    if raw is None:
        return eans, others, problems
    if not isinstance(raw, list):
        return eans, others, [f"targets must be a list (got {type(raw).__name__})"]
    for entry in raw:
        if isinstance(entry, str):  # 3.1
            (eans if EAN18.match(entry) else others).append(entry)
        elif isinstance(entry, dict) and isinstance(entry.get("type"), str) and isinstance(entry.get("values"), list):
            if entry["type"] in EAN_TARGET_TYPES:
                for value in entry["values"]:
                    if isinstance(value, str) and EAN18.match(value):
                        eans.append(value)
                    else:
                        problems.append(f"{entry['type']} target {value!r} is not an EAN18")
            else:
                others.extend(f"{entry['type']}={v}" for v in entry["values"])
        else:
            problems.append(f"target {entry!r} is neither a string (3.1) nor a valuesMap (3.0.1)")
    return eans, others, problems


def shape_problems(event: Any) -> list[str]:
    """What makes an event unreadable as the spec defines it (either version)."""
    if not isinstance(event, dict):
        return [f"an event is a JSON object (got {type(event).__name__})"]
    problems = []
    for name in ("id", "programID"):
        if not isinstance(event.get(name), str) or not event.get(name):
            problems.append(f"{name} is missing or not a string")
    intervals = event.get("intervals")
    if not isinstance(intervals, list):
        problems.append("intervals is missing or not a list")
        return problems
    for i, interval in enumerate(intervals):
        if not isinstance(interval, dict):
            problems.append(f"interval {i} is not an object")
        elif isinstance(interval.get("id"), bool) or not isinstance(interval.get("id"), int):
            problems.append(f"interval {i} has no integer id")
        elif not isinstance(interval.get("payloads"), list) or not all(
            isinstance(p, dict) and isinstance(p.get("type"), str) and isinstance(p.get("values"), list)
            for p in interval["payloads"]
        ):
            problems.append(f"interval {interval['id']}: payloads must be a list of valuesMaps (type, values)")
    for name in ("payloadDescriptors",):
        value = event.get(name)
        if value is not None and (not isinstance(value, list) or not all(isinstance(d, dict) for d in value)):
            problems.append(f"{name} must be a list of objects")
    return problems


def gac_problems(event: Mapping[str, Any]) -> list[str]:
    """The GAC rules an event breaks (none: compliant). Assumes :func:`shape_problems` passed."""
    problems = []
    if event.get("priority") is not None:
        problems.append("GAC: an event has no priority")
    intervals = event.get("intervals") or []
    own = [i for i in intervals if i.get("intervalPeriod") is not None]
    if event.get("intervalPeriod") is None and len(own) != len(intervals):
        problems.append("GAC: intervals are continuous (the event's intervalPeriod) or separated (each "
                        "interval's own); here some have none")  # fmt: skip
    if event.get("intervalPeriod") is not None and own:
        problems.append("GAC: intervals are continuous or separated, not both (the event and an interval "
                        "both have an intervalPeriod)")  # fmt: skip
    eans, others, target_problems = targets(event)
    if target_problems or others or not eans:
        problems.append("GAC: targets must be a list of EAN18 values")
    descriptors = event.get("payloadDescriptors") or []
    if len(descriptors) != 1:
        problems.append(f"GAC: exactly one payload descriptor (got {len(descriptors)})")
    if descriptors:
        if descriptors[0].get("payloadType") != IMPORT_LIMIT:
            problems.append(f"GAC: the payload descriptor's type is {IMPORT_LIMIT} "
                            f"(got {descriptors[0].get('payloadType')!r})")  # fmt: skip
        if descriptors[0].get("units") != "KW":
            problems.append(f"GAC: the payload descriptor's units are 'KW' (got {descriptors[0].get('units')!r})")
    if not intervals:
        problems.append("GAC: an event has at least one interval")
    if not all(b["id"] > a["id"] for a, b in pairwise(intervals)):
        problems.append("GAC: interval ids are strictly increasing")
    for interval in intervals:
        payloads = interval.get("payloads") or []
        if len(payloads) != 1 or payloads[0].get("type") != IMPORT_LIMIT or len(payloads[0].get("values")) != 1:
            problems.append(f"GAC: interval {interval['id']} has exactly one {IMPORT_LIMIT} payload with one value")
            break
    return problems


def descriptor(event: Mapping[str, Any], payload_type: str) -> Mapping[str, Any]:
    for d in event.get("payloadDescriptors") or ():
        if d.get("payloadType") == payload_type:
            return d
    return {}


def intervals(event: Mapping[str, Any], payload_type: str, received: datetime) -> list[dict[str, Any]]:
    """The event's intervals of one payload type as ``{"start", "duration_s", "value"}``: an
    interval's own intervalPeriod overrides the event's; one without a start follows the one
    before it. Limits are converted to kW."""
    period = event.get("intervalPeriod") or {}
    default_start = start_of(period["start"], received) if period.get("start") is not None else None
    default_s = duration_s(period["duration"]) if period.get("duration") is not None else None
    scale = 1.0
    if payload_type in CAPACITY:
        units = descriptor(event, payload_type).get("units") or "KW"
        if units not in KW_PER:
            raise EventError(f"{payload_type} in {units!r}: a capacity limit is in KW (or W, MW)")
        scale = KW_PER[units]
    out: list[dict[str, Any]] = []
    after: datetime | None = None
    for interval in event.get("intervals") or ():
        own = interval.get("intervalPeriod") or {}
        start = start_of(own["start"], received) if own.get("start") is not None else (after or default_start)
        length = duration_s(own["duration"]) if own.get("duration") is not None else default_s
        if start is None or length is None:
            raise EventError(f"interval {interval.get('id')} has no start or duration (nor has the event)")
        if length <= 0:
            raise EventError(f"interval {interval.get('id')}: duration {length:g} s is not positive")
        after = start + timedelta(seconds=length)
        for payload in interval.get("payloads") or ():
            if payload.get("type") != payload_type:
                continue
            values = payload.get("values") or []
            value = values[0] if values else None
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise EventError(f"interval {interval.get('id')}: {payload_type} value {value!r} is not a number")
            out.append({"start": envelope.iso_ms(start.timestamp()), "duration_s": length,
                        "value": round(value * scale, 6)})  # fmt: skip
    return out


def record(site: Site | None, ean: str | None, event: Mapping[str, Any], payload_type: str | None,
           received_at: str, status: str, reason: str | None = None,
           rows: Sequence[Mapping[str, Any]] = (), unit: str | None = None,
           currency: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One grid.signals record (ARCHITECTURE.md's fields, in that order)."""
    return {
        "site_id": site.site_id if site else None, "ean": ean, "protocol": PROTOCOL,
        "program_id": event.get("programID"), "event_id": event.get("id"), "modification_number": version(event),
        "payload_type": payload_type, "unit": unit, "currency": currency, "intervals": [dict(r) for r in rows],
        "received_at": received_at, "status": status, "reason": reason,
    }  # fmt: skip


def signals(event: Any, program: Mapping[str, Any] | None, sites: Iterable[Site], received_at: str) -> list[dict]:
    """The records of one event version: per targeted site and payload type folded, accepted
    or rejected with the reason. An event with no EAN among its targets addresses every site
    (the VTN sent it to this VEN); a GAC event must name its EANs."""
    received = datetime.fromisoformat(received_at.replace("Z", "+00:00"))
    by_ean = {s.ean: s for s in sites}
    problems = shape_problems(event)
    if problems:
        shown = event if isinstance(event, dict) else {}
        return [record(None, None, shown, None, received_at, "rejected", "; ".join(problems))]
    eans, _, target_problems = targets(event)
    problems = list(target_problems)
    gac = is_gac(program)
    if gac:
        problems += [p for p in gac_problems(event) if p not in problems]
    addressed: list[tuple[Site | None, str | None]] = [(by_ean.get(e), e) for e in dict.fromkeys(eans)] or [
        (s, s.ean) for s in by_ean.values()]  # fmt: skip
    present = {p.get("type") for i in event["intervals"] for p in i["payloads"]}
    kinds = [t for t in FOLDED if t in present]
    if is_safe_mode(event) and gac:
        kinds = [IMPORT_LIMIT]
    if not kinds and not problems:
        seen = sorted(str(t) for t in present)
        problems.append(f"no payload this VEN folds ({', '.join(map(str, seen)) or 'none'}; it folds "
                        f"{', '.join(FOLDED)})")  # fmt: skip
    parsed: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        try:
            parsed[kind] = intervals(event, kind, received)
        except EventError as exc:
            problems.append(str(exc))
    out = []
    for site, ean in addressed:
        each: list[str | None] = [*kinds] or [None]
        for maybe in each:
            d = descriptor(event, maybe) if maybe else {}
            unit = "KW" if maybe in CAPACITY else d.get("units")
            shown_kind = SAFE_MODE if maybe == IMPORT_LIMIT and is_safe_mode(event) and gac else maybe
            rows = parsed.get(maybe, []) if maybe else []
            if problems:
                out.append(record(site, ean, event, shown_kind, received_at, "rejected", "; ".join(problems),
                                  rows, unit, d.get("currency")))  # fmt: skip
            elif site is None:
                out.append(record(None, ean, event, shown_kind, received_at, "rejected",
                                  f"EAN {ean} is no site's (this VEN serves {', '.join(sorted(by_ean)) or 'none'})",
                                  rows, unit, d.get("currency")))  # fmt: skip
            else:
                out.append(record(site, ean, event, shown_kind, received_at, "accepted", None, rows, unit,
                                  d.get("currency")))  # fmt: skip
    return out


def cancelled(last: Iterable[Mapping[str, Any]], received_at: str) -> list[dict[str, Any]]:
    """The VTN deleted an event: each of its records again, one version on, ``cancelled``."""
    return [{**r, "modification_number": int(r.get("modification_number") or 0) + 1, "received_at": received_at,
             "status": "cancelled", "reason": "the VTN deleted the event"} for r in last]  # fmt: skip


def failure(sites: Iterable[Site], received_at: str, reason: str) -> list[dict[str, Any]]:
    """A token failure, an outage or an unreadable answer: a rejected record per site, so
    the log says when the VEN could not hear the grid, and why."""
    return [{**record(s, s.ean, {}, None, received_at, "rejected", reason), "program_id": "vtn",
             "event_id": "vtn-unreachable"} for s in sites]  # fmt: skip
