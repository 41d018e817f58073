"""Sites: grid connections. A site is the stations behind one connection point (its EAN, 18
digits), an import limit and an export limit in kW.

Sites come from the fleet's static data: the inventory (``_stations.json``) gives each pool
a ``site_id``, ``ean``, ``import_limit_kw`` and ``export_limit_kw``, or a sites file
(``--sites FILE``: a JSON list of ``{"site_id", "ean", "import_limit_kw",
"export_limit_kw", "stations": [ids]}``) says it outright.

The limit in force at a moment is a pure function of the site and the grid signals in the
log (``grid.signals``): the accepted signal interval covering the moment, else the site's
static limit. What the site draws now is a pure function of its stations' twins. The
controller, the worker's API, the reports and the tests call these same functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from twin.envelope import iso_ms, parse_ts

IMPORT_LIMIT, EXPORT_LIMIT = "IMPORT_CAPACITY_LIMIT", "EXPORT_CAPACITY_LIMIT"
PRICE, EXPORT_PRICE = "PRICE", "EXPORT_PRICE"


class SitesError(ValueError):
    """Sites that cannot be read; the message names the entry and the field."""


@dataclass(frozen=True, slots=True)
class Site:
    site_id: str
    ean: str
    import_limit_kw: float
    export_limit_kw: float
    stations: tuple[str, ...]
    name: str | None = None


def ean_ok(ean: str) -> bool:
    """18 digits whose last is the GS1 check digit of the others."""
    if len(ean) != 18 or not ean.isdigit():
        return False
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(ean[:-1])))
    return (10 - total % 10) % 10 == int(ean[-1])


def ean_of(number: int, prefix: str = "871687") -> str:
    """An EAN with a valid check digit: ``prefix``, then ``number``, padded to 17 digits."""
    body = f"{prefix}{number:0{17 - len(prefix)}d}"[:17]
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


def _number(entry: Mapping[str, Any], name: str, where: str) -> float:
    value = entry.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise SitesError(f"{where}: {name} must be a number of kW, 0 or more (got {value!r})")
    return float(value)


def _site(entry: Any, where: str) -> Site:
    if not isinstance(entry, dict):
        raise SitesError(f"{where}: a site is a JSON object")
    site_id = entry.get("site_id")
    if not isinstance(site_id, str) or not site_id:
        raise SitesError(f"{where}: site_id must be a non-empty string")
    where = f"{where} ({site_id})"
    ean = entry.get("ean")
    if not isinstance(ean, str) or not ean_ok(ean):
        raise SitesError(f"{where}: ean must be 18 digits with a valid check digit (got {ean!r})")
    stations = entry.get("stations")
    if not isinstance(stations, list) or not all(isinstance(s, str) and s for s in stations):
        raise SitesError(f"{where}: stations must be a list of station ids")
    return Site(site_id, ean, _number(entry, "import_limit_kw", where), _number(entry, "export_limit_kw", where),
                tuple(stations), entry.get("name") if isinstance(entry.get("name"), str) else None)  # fmt: skip


def _unique(sites: list[Site], where: str) -> list[Site]:
    seen: dict[str, str] = {}
    for site in sites:
        if site.site_id in {s.site_id for s in sites if s is not site}:
            raise SitesError(f"{where}: site {site.site_id} is listed twice")
        for station in site.stations:
            if station in seen:
                raise SitesError(f"{where}: station {station} is behind two sites ({seen[station]}, {site.site_id})")
            seen[station] = site.site_id
    return sorted(sites, key=lambda s: s.site_id)


def parse(data: bytes, where: str = "sites") -> list[Site]:
    """A sites file's content."""
    try:
        entries = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SitesError(f"{where}: not JSON ({exc})") from None
    if not isinstance(entries, list):
        raise SitesError(f"{where}: a JSON list of sites")
    return _unique([_site(entry, f"{where} entry {i}") for i, entry in enumerate(entries, 1)], where)


def from_inventory(rows: Iterable[Mapping[str, Any]], where: str = "inventory") -> list[Site]:
    """Sites from the station inventory's rows (a site's fields on each of its stations)."""
    grouped: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(rows, 1):
        site_id = row.get("site_id")
        if not site_id:
            continue  # a station behind no managed connection
        entry = grouped.setdefault(str(site_id), {"site_id": str(site_id), "stations": [],
                                                  **{k: row.get(k) for k in ("ean", "import_limit_kw",
                                                                             "export_limit_kw")}})  # fmt: skip
        for key in ("ean", "import_limit_kw", "export_limit_kw"):
            if row.get(key) != entry[key]:
                raise SitesError(f"{where} row {i} ({row.get('station_id')}): {key} {row.get(key)!r} differs from "
                                 f"site {site_id}'s {entry[key]!r}")  # fmt: skip
        entry["stations"].append(str(row.get("station_id")))
        entry.setdefault("name", row.get("pool_name"))
    return _unique([_site(entry, f"{where} site {sid}") for sid, entry in grouped.items()], where)


def load(sites_file: str | Path | None = None, inventory: str | Path | None = None) -> list[Site]:
    """The sites file if given, else the inventory's sites (none where there is none)."""
    if sites_file:
        path = Path(sites_file)
        try:
            return parse(path.read_bytes(), str(path))
        except OSError as exc:
            raise SitesError(f"{path}: {exc.strerror or exc}") from None
    if inventory and Path(inventory).is_file():
        try:
            rows = orjson.loads(Path(inventory).read_bytes())
        except orjson.JSONDecodeError as exc:
            raise SitesError(f"{inventory}: not JSON ({exc})") from None
        return from_inventory(rows if isinstance(rows, list) else [], str(inventory))
    return []


# -- the limit in force ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limit:
    import_kw: float
    export_kw: float
    source: str
    """``static``, or the protocol of the signal in force (``openadr``, ``operator``)."""
    signal: Mapping[str, Any] | None = None
    at: datetime | None = field(default=None, compare=False, repr=False)
    """The moment it is the limit of."""
    signals: Sequence[Mapping[str, Any]] = field(default=(), compare=False, repr=False)
    """The site's signals it was judged from (each event's newest version): for :func:`ahead`."""


def _covering(signal: Mapping[str, Any], at: datetime) -> float | None:
    for interval in signal.get("intervals") or ():
        start = parse_ts(interval["start"])
        if start <= at < start + timedelta(seconds=float(interval["duration_s"])):
            return float(interval["value"])
    return None


def latest(signals: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    """The newest version of each event (by program, event id and modification number;
    later in the log wins a tie): what a VEN obeys. An event carrying several payloads (a
    price and a limit) is a record per payload type: the newest version's records, all of
    them; a newer version replaces every record of the older."""
    newest: dict[tuple[str, str], int] = {}
    out: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for signal in signals:
        event = (str(signal.get("program_id")), str(signal.get("event_id")))
        number = int(signal.get("modification_number") or 0)
        if event not in newest or number > newest[event]:
            newest[event] = number
            for key in [k for k in out if k[:2] == event]:
                del out[key]
        if number == newest[event]:
            out[(*event, str(signal.get("payload_type")))] = signal
    return out


def limit_at(site: Site, signals: Sequence[Mapping[str, Any]], at: datetime) -> Limit:
    """The site's import and export limits at ``at``: an accepted signal's interval covering
    it (the latest version of each event; among events, the one received last), else the
    static limits. A cancelled event's last version has status ``cancelled``: not obeyed."""
    imports: tuple[float, Mapping[str, Any]] | None = None
    exports: tuple[float, Mapping[str, Any]] | None = None
    ordered = sorted(latest(s for s in signals if s.get("site_id") == site.site_id).values(),
                     key=lambda s: str(s.get("received_at") or ""))  # fmt: skip
    for signal in ordered:
        if signal.get("status") != "accepted":
            continue
        value = _covering(signal, at)
        if value is None:
            continue
        if signal.get("payload_type") == IMPORT_LIMIT:
            imports = (value, signal)
        elif signal.get("payload_type") == EXPORT_LIMIT:
            exports = (value, signal)
    shown = imports or exports
    return Limit(
        import_kw=imports[0] if imports else site.import_limit_kw,
        export_kw=exports[0] if exports else site.export_limit_kw,
        source=str(shown[1].get("protocol") or "signal") if shown else "static",
        signal=shown[1] if shown else None,
        at=at,
        signals=ordered,
    )


def ahead(site: Site, limit: Limit, count: int = 4) -> list[dict[str, Any]]:
    """The next changes of the limit in force after ``limit.at`` (at most ``count``): where
    an accepted capacity interval starts or ends, the limit from then on and where it comes
    from. What ``GET /v1/sites/{id}`` shows as ``next_intervals``."""
    if limit.at is None:
        return []
    edges: set[datetime] = set()
    for signal in limit.signals:
        if signal.get("status") != "accepted" or signal.get("payload_type") not in (IMPORT_LIMIT, EXPORT_LIMIT):
            continue
        for interval in signal.get("intervals") or ():
            start = parse_ts(interval["start"])
            edges |= {start, start + timedelta(seconds=min(float(interval["duration_s"]), 100 * 365 * 86400.0))}
    out: list[dict[str, Any]] = []
    before = (limit.import_kw, limit.export_kw, limit.source)
    for edge in sorted(e for e in edges if e > limit.at):
        then = limit_at(site, limit.signals, edge)
        now = (then.import_kw, then.export_kw, then.source)
        if now != before:
            out.append({"start": iso_ms(edge.timestamp()), "import_limit_kw": then.import_kw,
                        "export_limit_kw": then.export_kw, "limit_source": then.source,
                        "event_id": (then.signal or {}).get("event_id")})  # fmt: skip
            before = now
            if len(out) >= count:
                break
    return out


def limits_ahead(site: Site, signals: Sequence[Mapping[str, Any]], now: datetime, step_s: float,
                 steps: int) -> tuple[list[float], list[float]]:  # fmt: skip
    """Import and export limits for each planning step from ``now`` (each step's start)."""
    ahead = [limit_at(site, signals, now + timedelta(seconds=k * step_s)) for k in range(steps)]
    return [a.import_kw for a in ahead], [a.export_kw for a in ahead]


def price_at(site: Site, signals: Sequence[Mapping[str, Any]], at: datetime) -> float | None:
    """The price per kWh at ``at``: an accepted ``PRICE`` interval covering it (the latest
    version of each event, the one received last among events), else ``EXPORT_PRICE``'s,
    else None. One price steers both ways: charge when it is low, give back when high."""
    found: dict[str, float] = {}
    ordered = sorted(latest(s for s in signals if s.get("site_id") == site.site_id).values(),
                     key=lambda s: str(s.get("received_at") or ""))  # fmt: skip
    for signal in ordered:
        if signal.get("status") == "accepted" and signal.get("payload_type") in (PRICE, EXPORT_PRICE):
            value = _covering(signal, at)
            if value is not None:
                found[str(signal["payload_type"])] = value
    return found.get(PRICE, found.get(EXPORT_PRICE))


def prices_ahead(site: Site, signals: Sequence[Mapping[str, Any]], now: datetime, step_s: float,
                 steps: int) -> list[float] | None:  # fmt: skip
    """The price for each planning step from ``now``, or None where no price signal covers
    any; a step no price covers takes the mean of those that are (no pull either way)."""
    ahead = [price_at(site, signals, now + timedelta(seconds=k * step_s)) for k in range(steps)]
    known = [p for p in ahead if p is not None]
    if not known:
        return None
    mean = sum(known) / len(known)
    return [mean if p is None else p for p in ahead]


# -- what the site draws now -------------------------------------------------------------------


def evses(site: Site, twins: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each EVSE behind the site, as its twin shows it now."""
    out = []
    for station_id in site.stations:
        twin = twins.get(station_id)
        if twin is None:
            continue
        online = bool((twin.get("connection") or {}).get("online"))
        for evse_id, evse in sorted((twin.get("evses") or {}).items(), key=lambda kv: int(kv[0]) if
                                    str(kv[0]).isdigit() else 0):  # fmt: skip
            if evse_id == "0":
                continue
            energy = evse.get("energy") or {}
            tx = evse.get("transaction") or {}
            charging = tx.get("state") in ("started", "updated")
            power_w = float(energy.get("power_w") or 0.0) if online and charging else 0.0
            status = evse.get("profile_status") or {}
            if not charging or status.get("transaction_id") not in (None, tx.get("id")):
                status = {}  # an answer about an earlier session
            out.append({
                "station_id": station_id, "evse_id": int(evse_id) if str(evse_id).isdigit() else evse_id,
                "power_kw": round(power_w / 1000, 3), "direction": energy.get("direction", "idle") if charging
                else "idle", "profile_status": status.get("status"),
            })  # fmt: skip
    return out


def measured(rows: Iterable[Mapping[str, Any]]) -> tuple[float, float]:
    """The site's import and export now (kW), from its EVSEs' rows."""
    powers = [float(r.get("power_kw") or 0.0) for r in rows]
    return round(sum(p for p in powers if p > 0), 3) + 0.0, round(-sum(p for p in powers if p < 0), 3) + 0.0


def view(site: Site, rows: list[dict[str, Any]], limit: Limit, plan: Mapping[str, Any] | None) -> dict[str, Any]:
    """The site as ``GET /v1/sites/{id}`` shows it: the limit in force and where it comes
    from, what its EVSEs draw now, and the controller's last plan for each."""
    planned = {(e["station_id"], str(e["evse_id"])): e for e in (plan or {}).get("evses", ())}
    imported, exported = measured(rows)
    evse_rows = []
    for row in rows:
        p = planned.get((row["station_id"], str(row["evse_id"])), {})
        evse_rows.append({**row, "plan_kw": p.get("plan_kw"),
                          "profile_status": p.get("profile_status") or row.get("profile_status")})  # fmt: skip
    return {
        "site_id": site.site_id,
        "name": site.name,
        "ean": site.ean,
        "stations": list(site.stations),
        "import_limit_kw": limit.import_kw,
        "export_limit_kw": limit.export_kw,
        "static_import_limit_kw": site.import_limit_kw,
        "static_export_limit_kw": site.export_limit_kw,
        "limit_source": limit.source,
        "signal": dict(limit.signal) if limit.signal else None,
        "next_intervals": ahead(site, limit),
        "import_kw": imported,
        "export_kw": exported,
        "evses": evse_rows,
        "planned_at": (plan or {}).get("planned_at"),
    }
