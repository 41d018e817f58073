"""Grid signals in the archive, and ``twin report grid``.

The archive agent (``streams/signals_archive.py``) writes every ``grid.signals`` record
beside the frames, where no frame reader looks:

    ARCHIVE/_grid/signals/date=YYYY-MM-DD/part-<id>.pq

Parquet, but not ``*.parquet``: the frame readers glob ``**/*.parquet`` (DuckDB and Polars
descend into ``_`` and ``.`` directories alike), ``twin compact`` takes ``*.parquet`` under any
``date=`` directory, and pyarrow's datasets skip ``_`` directories. Each row is one record as
the topic carried it (``record``, JSON text, so a field added to signals later is kept), its
site, when it was received, and where it was in the log. Delivery is at least once: readers
keep each record once (by its content: the same record written twice is one).

A moment's limit is :func:`twin.sites.limit_at` of the signals *received by then*: what the
worker's ``/v1/sites`` said at that moment (:func:`known_at`).

The report, per site and 15-minute interval (split where the limit or the price in force
changes within it): the limit in force and where it came from; the import and export its
EVSEs measured (``Power.Active.Import`` / ``Export`` of their TransactionEvents, each reading
held until the EVSE's next, a transaction's Ended event setting it to 0; summed over the
site's EVSEs as ``/v1/sites`` sums them), their mean and max; the minutes the site was over
its limit (net import above the import limit, or net export above the export limit, by more
than ``TOLERANCE_KW``); the energy imported and exported (V2G: what the EVSEs gave back); the
SetChargingProfile calls sent to its stations and how they were answered; the cost of the
net energy at the price in force (:func:`twin.sites.price_at`, per kWh in the signal's
currency); and the energy shifted.

Energy shifted compares the import measured with what the same sessions would have drawn
without a limit, which nothing measures, so it is defined from what the log does measure:
each session (a transaction on an EVSE) charging from its first reading at the highest import
power it measured, until it has drawn what it drew in fact (``uncontrolled_kwh`` of a row).
``shifted_kwh = uncontrolled_kwh - import_kwh``: positive where energy was moved out of the
interval (into later ones), negative where it was moved in; over a session it sums to zero.
A site's ``shifted_kwh`` is the sum of the positive parts (how much was moved later), and
``shifted_under_signals_kwh`` of those under a grid signal (a limit not the static one, or a
price). A lower bound: an EV held below its own maximum for the whole session shows nothing
shifted; and energy given back (V2G) is not counted, only import.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any

import orjson

from twin import sites as site_model
from twin.captures import inventory_path, local
from twin.messages import P_EXPORT, P_IMPORT

SIGNALS = "_grid/signals"
SUFFIX = ".pq"
INTERVAL_S = 900
"""The report's interval: 15 minutes, the imbalance settlement period GAC's intervals follow."""
TOLERANCE_KW = 0.01
"""A site is over its limit when it passes it by more than this: the planner's precision."""


# -- the archived signals ----------------------------------------------------------------------


def key(record: Mapping[str, Any]) -> str:
    """A record's identity: its content. The same record delivered twice is one."""
    return hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("key", pa.string()), ("site_id", pa.string()), ("received_at", pa.timestamp("ms", tz="UTC")),
        ("status", pa.string()), ("payload_type", pa.string()), ("protocol", pa.string()),
        ("partition", pa.int32()), ("offset", pa.int64()), ("record", pa.string()),
    ])  # fmt: skip


def _received(record: Mapping[str, Any]) -> datetime | None:
    try:
        return site_model.parse_ts(str(record["received_at"]))
    except (KeyError, ValueError):
        return None


def write_signals(root: str | Path, records: Iterable[tuple[int | None, int | None, Mapping[str, Any]]]) -> int:
    """Append ``(partition, offset, record)`` to the archive's signals, a file per date of
    receipt, each written whole or not at all (aside, then renamed; on an object store an
    upload appears whole). Returns how many."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from twin.archive import location

    rows: list[dict[str, Any]] = [
        {"key": key(r), "site_id": r.get("site_id"), "received_at": _received(r), "status": r.get("status"),
         "payload_type": r.get("payload_type"), "protocol": r.get("protocol"), "partition": p, "offset": o,
         "record": orjson.dumps(r).decode()} for p, o, r in records
    ]  # fmt: skip
    rows.sort(key=lambda row: (row["received_at"] is None, row["received_at"] or datetime.min.replace(tzinfo=UTC)))
    store, base = location(root)
    for date, group in groupby(rows, key=lambda row: row["received_at"].date().isoformat() if row["received_at"]
                               else "unknown"):  # fmt: skip
        data = pa.Table.from_pylist(list(group), schema=_schema())
        name, folder = f"part-{uuid.uuid4().hex}{SUFFIX}", f"{base.rstrip('/')}/{SIGNALS}/date={date}"
        if store is not None:
            store.create_dir(folder, recursive=True)
            pq.write_table(data, f"{folder}/{name}", filesystem=store, compression="zstd")
            continue
        Path(folder).mkdir(parents=True, exist_ok=True)
        aside = Path(folder) / f".{name}.tmp"
        pq.write_table(data, str(aside), compression="zstd")
        os.replace(aside, Path(folder) / name)
    return len(rows)


def read_signals(capture: str | Path) -> list[dict[str, Any]]:
    """Every archived grid signal once, in the order the worker's API keeps them: by receipt,
    then by place in the log. None beside a ``.jsonl`` capture or an archive without them."""
    import pyarrow.parquet as pq

    folder = local(capture) / SIGNALS
    if not folder.is_dir():
        return []
    seen: dict[str, tuple[Any, ...]] = {}
    for file in sorted(folder.glob(f"date=*/*{SUFFIX}")):
        if file.name.startswith("."):
            continue
        for row in pq.read_table(file).to_pylist():
            order = (row["received_at"] or datetime.max.replace(tzinfo=UTC), row["partition"] if row["partition"]
                     is not None else -1, row["offset"] if row["offset"] is not None else -1)  # fmt: skip
            if row["key"] not in seen or order < seen[row["key"]][:3]:
                seen[row["key"]] = (*order, row["record"])
    return [orjson.loads(text) for *_, text in sorted(seen.values(), key=lambda v: v[:3])]


def known_at(signals: Sequence[Mapping[str, Any]], at: datetime) -> list[Mapping[str, Any]]:
    """The signals received by ``at``: what a worker asked at that moment knew."""
    return [s for s in signals if (received := _received(s)) is None or received <= at]


def limit_at(site: site_model.Site, signals: Sequence[Mapping[str, Any]], at: datetime) -> site_model.Limit:
    """The limit in force at ``at`` as the live API said then (:func:`twin.sites.limit_at` of
    the signals received by then)."""
    return site_model.limit_at(site, known_at(signals, at), at)


def sites_of(capture: str | Path, sites_file: str | None = None) -> list[site_model.Site]:
    """The sites a report or time travel shows: a sites file if given, else the capture's
    inventory (``_stations.json``)."""
    return site_model.load(sites_file or None, inventory_path(capture))


def views_at(capture: str | Path, known: Sequence[site_model.Site], at: datetime | None = None
             ) -> tuple[datetime | None, list[dict[str, Any]]]:  # fmt: skip
    """Each site as ``GET /v1/sites`` showed it at ``at`` (default: the capture's last record):
    its stations' twins folded up to then, and the limit in force from the signals received by
    then. The controller's plans are not archived: ``plan_kw`` and ``planned_at`` are null.
    Returns the moment and the views."""
    from twin import captures, fold
    from twin.envelope import iso_ms

    last: list[str] = []

    def seen(records: Iterable[Any]) -> Iterable[Any]:
        for record in records:
            if not last or record["ts"] > last[0]:
                last[:] = [record["ts"]]
            yield record

    stations = [st for s in known for st in s.stations]
    twins = fold.fold(seen(captures.read(capture, until=iso_ms(at.timestamp()) if at else None, stations=stations)))
    signals = read_signals(capture)
    moment = at or (site_model.parse_ts(last[0]) if last else None)
    if moment is None:  # no frame of these stations: the newest signal's receipt
        moment = max((r for s in signals if (r := _received(s)) is not None), default=None)
    views = []
    for site in known:
        limit = (
            limit_at(site, signals, moment)
            if moment
            else site_model.Limit(site.import_limit_kw, site.export_limit_kw, "static")
        )
        views.append(site_model.view(site, site_model.evses(site, twins), limit, None))
    return moment, views


# -- twin report grid --------------------------------------------------------------------------

LEVELS = f"""
WITH events AS MATERIALIZED (
    SELECT t.station_id, s.site_id, t.transaction_id AS tx, t.evse_id, t.event_type, t.happened, t.readings
    FROM transaction_events t JOIN site_of s USING (station_id)
),
-- only a transaction's first event must name its EVSE (as in the energy report)
tx_evse AS (SELECT station_id, tx, max(evse_id) AS tx_evse FROM events GROUP BY ALL),
te AS (
    SELECT e.site_id, e.station_id, coalesce(e.evse_id, x.tx_evse) AS evse_id, e.tx, e.event_type, e.happened,
           e.readings
    FROM events e LEFT JOIN tx_evse x ON x.station_id = e.station_id AND x.tx IS NOT DISTINCT FROM e.tx
),
raw AS (
    SELECT site_id, station_id, evse_id, tx, epoch_ms(TRY_CAST(r.sampled AS TIMESTAMPTZ)) AS ms, r.measurand AS m,
           r.value AS v, false AS ended
    FROM (SELECT site_id, station_id, evse_id, tx, unnest(readings) AS r FROM te)
    WHERE r.measurand IN ('{P_IMPORT}', '{P_EXPORT}')
    UNION ALL  -- a transaction's end: its EVSE draws nothing from then on
    SELECT site_id, station_id, evse_id, tx, epoch_ms(TRY_CAST(happened AS TIMESTAMPTZ)), NULL, NULL, true
    FROM te WHERE event_type = 'Ended'
),
samples AS (
    SELECT site_id, station_id, evse_id, ms, coalesce(max(tx) FILTER (WHERE NOT ended), max(tx)) AS tx,
           CASE WHEN bool_or(ended) THEN 0 ELSE coalesce(max(v) FILTER (WHERE m = '{P_IMPORT}'), 0) END AS imp,
           CASE WHEN bool_or(ended) THEN 0 ELSE coalesce(max(v) FILTER (WHERE m = '{P_EXPORT}'), 0) END AS exp
    FROM raw WHERE evse_id IS NOT NULL AND ms IS NOT NULL GROUP BY ALL
),
-- each reading holds until the EVSE's next (the last until the window's end)
segments AS (
    SELECT site_id, station_id, evse_id, tx, ms AS s,
           coalesce(lead(ms) OVER (PARTITION BY site_id, station_id, evse_id ORDER BY ms), greatest(ms, $end_ms)) AS e,
           imp, exp
    FROM samples
),
-- the site's power: every EVSE's steps summed, as changes in time order
changes AS (
    SELECT site_id, ms, sum(di) AS di, sum(de) AS de FROM (
        SELECT site_id, s AS ms, imp AS di, exp AS de FROM segments WHERE imp <> 0 OR exp <> 0
        UNION ALL
        SELECT site_id, e, -imp, -exp FROM segments WHERE imp <> 0 OR exp <> 0
    ) GROUP BY ALL
),
levels AS (
    SELECT site_id, ms AS s, lead(ms) OVER w AS e,
           round(sum(di) OVER (w ROWS UNBOUNDED PRECEDING), 1) AS imp_w,
           round(sum(de) OVER (w ROWS UNBOUNDED PRECEDING), 1) AS exp_w
    FROM changes WINDOW w AS (PARTITION BY site_id ORDER BY ms)
),
measured AS (
    SELECT piece, sum(imp_w * ov) AS imp_wms, sum(exp_w * ov) AS exp_wms, max(imp_w) AS imp_max_w,
           max(exp_w) AS exp_max_w, sum(ov) AS covered_ms,
           sum(ov) FILTER (WHERE (imp_w - exp_w) / 1000 > import_limit_kw + {TOLERANCE_KW}
                              OR (exp_w - imp_w) / 1000 > export_limit_kw + {TOLERANCE_KW}) AS over_ms
    FROM (SELECT p.piece, p.import_limit_kw, p.export_limit_kw, l.imp_w, l.exp_w,
                 least(l.e, p.end_ms) - greatest(l.s, p.start_ms) AS ov
          FROM pieces p JOIN levels l ON l.site_id = p.site_id AND l.s < p.end_ms AND l.e > p.start_ms)
    GROUP BY piece
),
-- each session without a limit: from its first reading, at the highest import it measured,
-- until it has what it drew in fact
sessions AS (
    SELECT site_id, s0 AS s, s0 + wms / peak AS e, peak FROM (
        SELECT site_id, min(s) AS s0, max(imp) AS peak, sum(imp * (e - s)) AS wms
        FROM segments WHERE tx IS NOT NULL GROUP BY site_id, station_id, evse_id, tx
    ) WHERE peak > 0 AND wms > 0
),
uncontrolled AS (
    SELECT p.piece, sum(u.peak * (least(u.e, p.end_ms) - greatest(u.s, p.start_ms))) AS base_wms
    FROM pieces p JOIN sessions u ON u.site_id = p.site_id AND u.s < p.end_ms AND u.e > p.start_ms
    GROUP BY p.piece
)
SELECT p.piece, m.imp_wms, m.exp_wms, m.imp_max_w, m.exp_max_w, m.covered_ms, m.over_ms, u.base_wms
FROM pieces p LEFT JOIN measured m USING (piece) LEFT JOIN uncontrolled u USING (piece)
"""
"""Per piece (a site's interval, or part of one): the measured power's integrals, maxima and
the time over the limit, from the EVSEs' power readings; and the import its sessions would
have drawn there without a limit (``base_wms``: energy shifted, in the module's docstring)."""

SPAN = f"""
SELECT min(epoch_ms(TRY_CAST(r.sampled AS TIMESTAMPTZ))), max(epoch_ms(TRY_CAST(r.sampled AS TIMESTAMPTZ)))
FROM (SELECT unnest(readings) AS r FROM transaction_events JOIN site_of USING (station_id))
WHERE r.measurand IN ('{P_IMPORT}', '{P_EXPORT}')
"""

PROFILES = """
WITH calls AS (
    SELECT station_id, msg_id,
           coalesce(TRY_CAST(payload->>'$.chargingProfile.chargingSchedule[0].startSchedule' AS TIMESTAMPTZ), ts) AS at
    FROM frames WHERE action = 'SetChargingProfile' AND msg_type = 2 AND origin = 'csms'
),
answers AS (
    SELECT station_id, msg_id, CASE WHEN msg_type = 3 THEN payload->>'$.status' ELSE 'CALLERROR' END AS status
    FROM frames WHERE msg_type IN (3, 4) AND origin = 'cs'
)
SELECT c.station_id, epoch_ms(c.at) AS ms, any_value(a.status) AS status
FROM calls c LEFT JOIN answers a USING (station_id, msg_id)
GROUP BY c.station_id, c.msg_id, c.at
"""
"""Each SetChargingProfile sent to a station, at the moment its schedule starts (the
controller's plan time, in the stations' clock; else when it was sent), and its answer."""


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _iso(ms: int) -> str:
    from twin.envelope import iso_ms

    return iso_ms(ms / 1000)


def _edges(signals: Sequence[Mapping[str, Any]], start_ms: int, end_ms: int) -> set[int]:
    """Where a limit or a price may change: every interval's start and end, every receipt."""
    out = set()
    for s in signals:
        received = _received(s)
        if received is not None:
            out.add(_ms(received))
        for interval in s.get("intervals") or ():
            try:
                begins = site_model.parse_ts(str(interval["start"]))
                ends = begins + timedelta(seconds=min(float(interval["duration_s"]), 10 * 365 * 86400.0))
            except (KeyError, ValueError, TypeError, OverflowError):
                continue
            out |= {_ms(begins), _ms(ends)}
    return {t for t in out if start_ms < t < end_ms}


def pieces(site: site_model.Site, signals: Sequence[Mapping[str, Any]], start_ms: int, end_ms: int,
           interval_s: int = INTERVAL_S) -> list[dict[str, Any]]:  # fmt: skip
    """The site's intervals over [start, end), each split where the limit or the price in force
    changes within it, with what is in force."""
    mine = [s for s in signals if s.get("site_id") == site.site_id]
    step = interval_s * 1000
    slots = set(range(start_ms - start_ms % step + step, end_ms, step))
    points = sorted({start_ms, end_ms, *slots, *_edges(mine, start_ms, end_ms)})
    out: list[dict[str, Any]] = []
    for begins, ends in zip(points, points[1:], strict=False):
        at = _at(begins)
        known = known_at(mine, at)
        limit = site_model.limit_at(site, known, at)
        price = site_model.price_at(site, known, at)
        signal = limit.signal or {}
        priced = [s for s in known if s.get("status") == "accepted"
                  and s.get("payload_type") in (site_model.PRICE, site_model.EXPORT_PRICE)]  # fmt: skip
        row = {"site_id": site.site_id, "slot_ms": begins - begins % step, "start_ms": begins, "end_ms": ends,
               "import_limit_kw": limit.import_kw, "export_limit_kw": limit.export_kw, "limit_source": limit.source,
               "program_id": signal.get("program_id"), "event_id": signal.get("event_id"), "price": price,
               "currency": priced[-1].get("currency") if price is not None and priced else None}  # fmt: skip
        last = out[-1] if out else None
        if last and last["slot_ms"] == row["slot_ms"] and all(last[k] == row[k] for k in row if k not in
                                                              ("start_ms", "end_ms")):  # fmt: skip
            last["end_ms"] = ends  # nothing changed here after all
        else:
            out.append(row)
    return out


def _window(con: Any, since: str | None, until: str | None) -> tuple[int, int] | None:
    """The report's window in epoch ms: --from/--to, else the measured readings' span (the
    stations' clock, which a simulated fleet runs ahead of the log's), whole intervals."""
    first, last = con.execute(SPAN).fetchall()[0]
    step = INTERVAL_S * 1000
    start = _ms(site_model.parse_ts(since)) if since else first
    end = _ms(site_model.parse_ts(until)) if until else (last + 1 if last is not None else None)
    if start is None or end is None or end <= start:
        return None
    return (start - start % step if not since else start), (-(-end // step) * step if not until else end)


def grid_report(capture: str | Path, since: str | None = None, until: str | None = None,
                site_list: Sequence[site_model.Site] | None = None,
                interval_s: int = INTERVAL_S) -> dict[str, Any]:  # fmt: skip
    """The report's document: ``intervals`` (a row per site and interval of ``interval_s``:
    a minute's, to say which minutes were over the limit), ``sites`` (their totals),
    ``signals`` (every archived signal of the window: accepted, rejected with its reason,
    cancelled) and the window itself."""
    import pyarrow as pa

    from twin.analytics.frames import connect, query
    from twin.settings import Settings

    known = list(site_list) if site_list is not None else sites_of(capture, Settings.load().sites)
    signals = read_signals(capture)
    site_of = pa.table({"station_id": [st for s in known for st in s.stations],
                        "site_id": [s.site_id for s in known for _ in s.stations]})  # fmt: skip
    con = connect(capture, ("TransactionEvent",), events=True)
    con.register("site_of", site_of)
    window = _window(con, since, until)
    if window is None or not known:
        return {"window": None, "intervals": [], "sites": [], "signals": []}
    start_ms, end_ms = window
    rows = [p for site in known for p in pieces(site, signals, start_ms, end_ms, interval_s)]
    for i, row in enumerate(rows):
        row["piece"] = i
    con.register("pieces", pa.Table.from_pylist(rows))
    measured = {r[0]: r for r in con.execute(LEVELS, {"end_ms": end_ms}).fetchall()}
    station_site = {st: s.site_id for s in known for st in s.stations}
    answered = query(capture, (), PROFILES, where="action = 'SetChargingProfile' OR msg_type = 4")
    by_site: dict[str, list[tuple[int, str | None]]] = {}
    for p in answered:
        if p["station_id"] in station_site and p["ms"] is not None:
            by_site.setdefault(station_site[p["station_id"]], []).append((p["ms"], p["status"]))
    out = [_row(row, measured.get(row["piece"]), by_site.get(row["site_id"], ())) for row in rows]
    window_signals = [s for s in signals if (r := _received(s)) is None or r < _at(end_ms)]
    sums = totals(out)
    for row in out:
        del row["_shifted"]  # unrounded, for the totals only
    return {"window": {"from": _iso(start_ms), "to": _iso(end_ms), "interval_min": interval_s // 60},
            "intervals": out, "sites": sums, "signals": window_signals}  # fmt: skip


def _row(piece: Mapping[str, Any], measured: Sequence[Any] | None, profiles: Iterable[tuple[int, str | None]]
         ) -> dict[str, Any]:  # fmt: skip
    _, imp_wms, exp_wms, imp_max, exp_max, covered, over, base_wms = measured or (None, 0, 0, 0, 0, 0, 0, 0)
    length = piece["end_ms"] - piece["start_ms"]
    idle_over = piece["import_limit_kw"] + TOLERANCE_KW < 0.0  # asked to export, and nothing given back
    over_ms = (over or 0) + ((length - (covered or 0)) if idle_over else 0)
    import_kwh, export_kwh, uncontrolled_kwh = (imp_wms or 0) / 3.6e9, (exp_wms or 0) / 3.6e9, (base_wms or 0) / 3.6e9
    sent = [status for ms, status in profiles if piece["start_ms"] <= ms < piece["end_ms"]]
    price = piece["price"]
    return {
        "site_id": piece["site_id"], "start": _iso(piece["start_ms"]), "end": _iso(piece["end_ms"]),
        "import_limit_kw": piece["import_limit_kw"], "export_limit_kw": piece["export_limit_kw"],
        "limit_source": piece["limit_source"], "program_id": piece["program_id"], "event_id": piece["event_id"],
        "import_mean_kw": round(import_kwh / (length / 3.6e6), 3), "import_max_kw": round((imp_max or 0) / 1000, 3),
        "export_mean_kw": round(export_kwh / (length / 3.6e6), 3), "export_max_kw": round((exp_max or 0) / 1000, 3),
        "minutes_over_limit": round(over_ms / 60000, 2), "import_kwh": round(import_kwh, 3),
        "v2g_discharged_kwh": round(export_kwh, 3), "uncontrolled_kwh": round(uncontrolled_kwh, 3),
        "shifted_kwh": round(uncontrolled_kwh - import_kwh, 3) + 0.0, "_shifted": uncontrolled_kwh - import_kwh,
        "profiles_sent": len(sent),
        "profiles_accepted": sum(s == "Accepted" for s in sent),
        "profiles_rejected": sum(s is not None and s != "Accepted" for s in sent),
        "price": price, "currency": piece["currency"],
        "cost": None if price is None else round((import_kwh - export_kwh) * price, 4),
    }  # fmt: skip


def totals(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per site: the window's energy, minutes over the limit, energy shifted (the positive
    ``shifted_kwh`` of its rows: moved out of them into later ones; and of those under a grid
    signal), profiles and cost. Rows carry their unrounded shift as ``_shifted``."""
    out = []
    for site_id, group in groupby(sorted(rows, key=lambda r: r["site_id"]), key=lambda r: r["site_id"]):
        mine = list(group)
        costs = [r["cost"] for r in mine if r["cost"] is not None]
        out.append({
            "site_id": site_id, "import_kwh": round(sum(r["import_kwh"] for r in mine), 3),
            "v2g_discharged_kwh": round(sum(r["v2g_discharged_kwh"] for r in mine), 3),
            "import_max_kw": max((r["import_max_kw"] for r in mine), default=0.0),
            "minutes_over_limit": round(sum(r["minutes_over_limit"] for r in mine), 2),
            "minutes_under_a_signal": round(sum(_minutes(r) for r in mine if r["limit_source"] != "static"), 2),
            "shifted_kwh": round(sum(max(0.0, r["_shifted"]) for r in mine), 3),
            "shifted_under_signals_kwh": round(sum(max(0.0, r["_shifted"]) for r in mine if _signalled(r)), 3),
            **{k: sum(r[k] for r in mine) for k in ("profiles_sent", "profiles_accepted", "profiles_rejected")},
            "cost": round(sum(costs), 4) if costs else None,
            "currency": next((r["currency"] for r in mine if r["currency"]), None),
        })  # fmt: skip
    return out


def _signalled(row: Mapping[str, Any]) -> bool:
    """Under a grid signal: a limit not the static one, or a price."""
    return row["limit_source"] != "static" or row["price"] is not None


def _minutes(row: Mapping[str, Any]) -> float:
    return (site_model.parse_ts(row["end"]) - site_model.parse_ts(row["start"])).total_seconds() / 60
