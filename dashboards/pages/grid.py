"""Grid & smart charging: every site's limit in force and where it comes from, what it draws
now against it, and the controller's plan per EVSE (refreshing on its own while live); and
its history from the archive (`twin report grid`): the limit over time against the measured
import and export, the signals' intervals coloured by source, prices, and the signals the VEN
rejected with their reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import streamlit as st

from dashboards import data
from twin import sites
from twin.envelope import parse_ts

NO_SITES = (
    "No sites: the worker knows no grid connection, so there is nothing to keep under a limit. A site comes "
    "from the station inventory (`_stations.json` in the archive: `site_id`, `ean`, `import_limit_kw` and "
    "`export_limit_kw` on each pool's stations; `twin simulate` writes them), or from a sites file given with "
    "`--sites FILE` to `twin up`, `twin worker` and `twin controller` (a JSON list of `{site_id, ean, "
    "import_limit_kw, export_limit_kw, stations}`)."
)
NOT_ACCEPTED = "profiles not accepted"
EVSE_COLUMNS = {
    "power_kw": st.column_config.NumberColumn("now (kW)", help="what the EVSE draws now; negative: gives back"),
    "plan_kw": st.column_config.NumberColumn("planned (kW)", help="the plan's power for this step"),
    "needs_kwh": st.column_config.NumberColumn("needs (kWh)", help="still to deliver by departure"),
    "min_kwh": st.column_config.NumberColumn("minimum (kWh)", help="what a V2G EV must have by departure"),
    "profile_status": st.column_config.TextColumn("profile", help="the EVSE's answer to its last charging profile"),
    "why": st.column_config.TextColumn(width="large"),
}


def kw(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f} kW"


def when(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M UTC")


def fullness(site: dict[str, Any]) -> float | None:
    """Import ÷ the import limit in force (none when the site is asked to export)."""
    limit = site["import_limit_kw"]
    return site["import_kw"] / limit if limit > 0 else None


def overview(listed: list[dict[str, Any]]) -> None:
    rows = []
    for site in listed:
        evses = site["evses"]
        full = fullness(site)
        rows.append({
            "site": site["site_id"], "name": site.get("name"), "limit_kw": site["import_limit_kw"],
            "source": site["limit_source"], "import_kw": site["import_kw"], "export_kw": site["export_kw"],
            "full": None if full is None else round(full, 3),
            "EVs charging": sum(e["direction"] != "idle" for e in evses),
            NOT_ACCEPTED: sum(e["plan_kw"] is not None and e["profile_status"] not in (None, "Accepted")
                              for e in evses),
        })  # fmt: skip
    st.dataframe(pl.DataFrame(rows, infer_schema_length=None), hide_index=True, width="stretch", column_config={
        "limit_kw": st.column_config.NumberColumn("import limit in force (kW)", format="%.1f"),
        "import_kw": st.column_config.NumberColumn("import now (kW)", format="%.1f"),
        "export_kw": st.column_config.NumberColumn("export now (kW)", format="%.1f"),
        "full": st.column_config.ProgressColumn("how full", format="percent", min_value=0, max_value=1,
                                                help="import now ÷ the import limit in force"),
        "EVs charging": st.column_config.NumberColumn(help="charging, or giving back (V2G)"),
        NOT_ACCEPTED: st.column_config.NumberColumn(help="EVSEs in the plan whose last charging profile was "
                                                    "rejected, failed or never answered: planned around at their "
                                                    "maximum"),
    })  # fmt: skip


def covering_end(signal: dict[str, Any], at: datetime) -> datetime | None:
    """When the signal's interval in force at ``at`` ends (else its last interval's end)."""
    ends = []
    for interval in signal.get("intervals") or ():
        start = parse_ts(interval["start"])
        end = start + timedelta(seconds=float(interval["duration_s"]))
        if start <= at < end:
            return end
        ends.append(end)
    return max(ends, default=None)


def in_force(site: dict[str, Any], at: datetime) -> str:
    """The limit in force, in a sentence: static, or whose and until when; and what comes next."""
    return _now_in_force(site, at) + "".join(
        f" From {when(parse_ts(n['start']))}: " + (f"import at most {kw(n['import_limit_kw'])}" if
                                                  n["import_limit_kw"] >= 0 else
                                                  f"export at least {kw(-n['import_limit_kw'])}")
        + f" ({n['limit_source']})." for n in (site.get("next_intervals") or ())[:2])  # fmt: skip


def _now_in_force(site: dict[str, Any], at: datetime) -> str:
    imp, exp = site["import_limit_kw"], site["export_limit_kw"]
    static = f"import {kw(site['static_import_limit_kw'])}, export {kw(site['static_export_limit_kw'])}"
    if site["limit_source"] == "static":
        return f"The site's static limits are in force: {static}."
    signal = site.get("signal") or {}
    if site["limit_source"] == "operator":
        who = "An operator's limit (`twin control limit`)"
    else:
        who = (f"A grid signal ({site['limit_source']}, program {signal.get('program_id')}, event "
               f"{signal.get('event_id')})")  # fmt: skip
    which = "export" if signal.get("payload_type") == sites.EXPORT_LIMIT else "import"
    end = covering_end(signal, at)
    until = f" until {when(end)}" if end else ""
    asked = f"import at most {kw(imp)}" if imp >= 0 else f"export at least {kw(-imp)}"
    return (f"{who} sets the site's {which} limit{until}: {asked}, export at most {kw(exp)}. "
            f"The static limits are {static}.")  # fmt: skip


def meters(site: dict[str, Any]) -> None:
    cells = st.columns(4)
    cells[0].metric("Import limit in force", kw(site["import_limit_kw"]), help=f"from: {site['limit_source']}")
    cells[1].metric("Import now", kw(site["import_kw"]), help="what the site's EVSEs measure now")
    full = fullness(site)
    cells[2].metric("How full", "—" if full is None else f"{full:.0%}", help="import now ÷ the import limit")
    cells[3].metric("Export now", kw(site["export_kw"]), help=f"the export limit is {kw(site['export_limit_kw'])}")
    if full is not None:
        st.progress(min(1.0, max(0.0, full)), text=f"import {kw(site['import_kw'])} of {kw(site['import_limit_kw'])}"
                    + (" — over the limit" if full > 1 else ""))  # fmt: skip


def age(plan: dict[str, Any], now: datetime) -> str:
    planned = parse_ts(plan["planned_at"])
    seconds = (now - planned).total_seconds()
    if seconds >= 0:
        return f"planned at {when(planned)}, {seconds:,.0f} s ago"
    return (f"planned at {when(planned)} in the stations' time, which runs {-seconds / 60:,.0f} min ahead of "
            "this machine's clock (a simulated fleet)")  # fmt: skip


def evse_rows(site: dict[str, Any], plan: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each EVSE: what it draws now (the site) beside what the controller planned (the plan)."""
    now = {(e["station_id"], str(e["evse_id"])): e for e in site["evses"]}
    planned = {(e["station_id"], str(e["evse_id"])): e for e in (plan or {}).get("evses", ())}
    rows = []
    for key in sorted(now.keys() | planned.keys(), key=lambda k: (k[0], int(k[1]) if k[1].isdigit() else 0)):
        e, p = now.get(key, {}), planned.get(key, {})
        departure = p.get("departure")
        rows.append({
            "station": key[0], "evse": int(key[1]) if key[1].isdigit() else key[1],
            "power_kw": e.get("power_kw"), "plan_kw": p.get("plan_kw"),
            "needs_kwh": p.get("need_kwh"), "min_kwh": p.get("min_kwh"),
            "departure": when(parse_ts(departure)) if departure else None,
            "profile_status": p.get("profile_status") or e.get("profile_status"),
            "why": p.get("why") or (None if plan is None else "not in the last plan (no EV plugged in then)"),
        })  # fmt: skip
    return rows


def schedule(site: dict[str, Any], plan: dict[str, Any], signals: list[dict[str, Any]]) -> pl.DataFrame:
    """The site's planned power (the EVSEs' schedules summed, those that refuse profiles at
    their maximum) and the import limit, at each moment either changes."""
    start = parse_ts(plan["planned_at"])
    model = sites.Site(site["site_id"], site["ean"], site["static_import_limit_kw"], site["static_export_limit_kw"],
                       tuple(site["stations"]))  # fmt: skip
    schedules = [e["schedule"] for e in plan["evses"] if e["schedule"]]
    edges = sorted({0.0, *(float(s) for sched in schedules for s, _ in sched)})
    horizon = edges[-1] + float(plan["step_s"])
    for signal in signals:  # where the limit changes within the plan's horizon
        for interval in signal.get("intervals") or ():
            begins = (parse_ts(interval["start"]) - start).total_seconds()
            edges += [t for t in (begins, begins + float(interval["duration_s"])) if 0 < t < horizon]
    edges = sorted({*edges, horizon})
    rows = []
    for t in edges:
        total = float(plan["fixed_kw"]) + sum(next((k for s, k in reversed(sched) if s <= t), 0.0)
                                              for sched in schedules)  # fmt: skip
        at = start + timedelta(seconds=t)
        rows.append({"time": at, "kW": round(total, 3), "series": "planned"})
        rows.append({"time": at, "kW": sites.limit_at(model, signals, at).import_kw, "series": "import limit"})
    return pl.DataFrame(rows)


def chart(frame: pl.DataFrame) -> None:
    # the plan as an area under the limit's dashed line: a plan at the limit stays visible
    spec = {
        "layer": [
            {
                "transform": [{"filter": "datum.series == 'planned'"}],
                "mark": {"type": "area", "interpolate": "step-after", "opacity": 0.5, "tooltip": True},
            },
            {
                "transform": [{"filter": "datum.series != 'planned'"}],
                "mark": {"type": "line", "interpolate": "step-after", "strokeDash": [6, 4], "tooltip": True},
            },
        ],
        "encoding": {
            "x": {"field": "time", "type": "temporal", "title": "UTC"},
            "y": {"field": "kW", "type": "quantitative", "title": "kW (negative: export)"},
            "color": {"field": "series", "type": "nominal", "title": None},
        },
        "height": 260,
    }
    st.vega_lite_chart(frame.to_pandas(), spec, width="stretch")


def detail(site: dict[str, Any]) -> None:
    st.subheader(f"{site['site_id']}" + (f" · {site['name']}" if site.get("name") else ""))
    st.caption(f"EAN {site['ean']} · stations {', '.join(site['stations'])}")
    plan, problem = data.live(f"/v1/sites/{site['site_id']}/plan")
    now = datetime.now(UTC)
    reference = max(now, parse_ts(plan["planned_at"])) if plan else now  # the worker's own choice of "now"
    said = in_force(site, reference)
    (st.caption if site["limit_source"] == "static" else st.info)(said)
    meters(site)

    st.subheader("Plan per EVSE")
    if plan is None:
        other = "" if "no plan" in str(problem) else f" ({problem})"  # the API's 404 asks the same question
        st.info(f"The controller has not planned {site['site_id']} yet: is `twin controller` running? (`twin up` "
                f"starts it unless `--no-control`.){other}")  # fmt: skip
    else:
        limit = plan["limit"]
        st.caption(f"Plan {plan['status']}, {age(plan, now)}; decided in {plan['decision_ms']:,.1f} ms under "
                   f"import {kw(limit['import_kw'])} ({limit['source']}); profiles sent: "
                   f"{plan.get('profiles_sent', 0)}; planned again at least every {plan['step_s']:g} s of the "
                   "stations' time.")  # fmt: skip
        if now - parse_ts(plan["planned_at"]) > timedelta(seconds=3 * float(plan["step_s"])):
            st.warning("This plan is older than three planning steps: is `twin controller` still running?")
    st.dataframe(pl.DataFrame(evse_rows(site, plan), infer_schema_length=None), hide_index=True, width="stretch",
                 column_config=EVSE_COLUMNS)  # fmt: skip
    signals, _ = data.live(f"/v1/sites/{site['site_id']}/signals")
    if plan is not None and plan["evses"]:
        st.subheader("Planned site power")
        chart(schedule(site, plan, (signals or {}).get("signals", [])))
    history(site["site_id"], (signals or {}).get("signals") if signals is not None else None)


SOURCES = ["openadr", "safe-mode", "operator", "static"]
HISTORY_H = 24
SIGNAL_COLUMNS = ["received_at", "protocol", "program_id", "event_id", "payload_type", "status", "reason", "from",
                  "to", "values"]  # fmt: skip


def signal_rows(signals: list[dict[str, Any]]) -> pl.DataFrame:
    """Signals a row each: when received, whose, what, accepted or why not, and their span."""
    rows = []
    for s in signals:
        spans = [(parse_ts(i["start"]), parse_ts(i["start"]) + timedelta(seconds=min(float(i["duration_s"]), 1e9)))
                 for i in s.get("intervals") or ()]  # fmt: skip
        rows.append({"received_at": s.get("received_at"), "protocol": s.get("protocol"),
                     "program_id": s.get("program_id"), "event_id": s.get("event_id"),
                     "payload_type": s.get("payload_type"), "status": s.get("status"), "reason": s.get("reason"),
                     "from": when(min(a for a, _ in spans)) if spans else None,
                     "to": when(max(b for _, b in spans)) if spans else None,
                     "values": ", ".join(f"{i['value']:g}" for i in (s.get("intervals") or ())[:8])})  # fmt: skip
    return pl.DataFrame(rows, schema=dict.fromkeys(SIGNAL_COLUMNS, pl.String))


def history_frames(rows: list[dict[str, Any]]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """From the grid report's rows of one site: the power series (limits and measured, export
    negative), the bands where each source's limit was in force, and the price steps."""
    power: list[dict[str, Any]] = []
    bands: list[dict[str, Any]] = []
    prices: list[dict[str, Any]] = []
    for r in rows:
        start, end = parse_ts(r["start"]), parse_ts(r["end"])
        for series, kw in (("import limit", r["import_limit_kw"]), ("export limit", -r["export_limit_kw"]),
                           ("import (mean)", r["import_mean_kw"]), ("import (max)", r["import_max_kw"]),
                           ("export (mean)", -r["export_mean_kw"])):  # fmt: skip
            power += [{"time": start, "kW": kw, "series": series}, {"time": end, "kW": kw, "series": series}]
        if bands and bands[-1]["source"] == r["limit_source"] and bands[-1]["event"] == r["event_id"] \
                and bands[-1]["to"] == start:  # fmt: skip
            bands[-1]["to"] = end
        else:
            bands.append({"from": start, "to": end, "source": r["limit_source"], "event": r["event_id"]})
        if r["price"] is not None:
            prices += [{"time": start, "price": r["price"]}, {"time": end, "price": r["price"]}]
    return pl.DataFrame(power), pl.DataFrame(bands), pl.DataFrame(prices)


def history_chart(power: pl.DataFrame, bands: pl.DataFrame) -> None:
    """The limit over time against what the site measured, over bands coloured by where the
    limit in force came from."""
    spec = {
        "layer": [
            {"data": {"values": bands.with_columns(pl.col("from", "to").dt.to_string("%Y-%m-%dT%H:%M:%SZ"))
                      .to_dicts()},
             "mark": {"type": "rect", "opacity": 0.18, "tooltip": True},
             "encoding": {"x": {"field": "from", "type": "temporal"}, "x2": {"field": "to"},
                          "color": {"field": "source", "type": "nominal", "title": "limit from",
                                    "scale": {"domain": SOURCES}}}},
            {"mark": {"type": "line", "interpolate": "linear", "tooltip": True},
             "encoding": {"x": {"field": "time", "type": "temporal", "title": "UTC"},
                          "y": {"field": "kW", "type": "quantitative", "title": "kW (negative: export)"},
                          "color": {"field": "series", "type": "nominal", "title": None}}},
        ],
        "height": 280,
        "resolve": {"scale": {"color": "independent"}},
    }  # fmt: skip
    st.vega_lite_chart(power.to_pandas(), spec, width="stretch")


def history(site_id: str, live_signals: list[dict[str, Any]] | None) -> None:
    """The site's history from the grid report over the archive, and its signals."""
    st.subheader("Limit and measured power over time")
    document = data.report("grid", block=False) if data.has_archive() else None
    if document is None:
        st.caption("The history needs the archive (`twin worker --archive`) and its grid report: "
                   + ("it is being computed and appears here when ready." if data.has_archive()
                      else data.absent(data.source().archive, short=True) + "."))  # fmt: skip
    else:
        rows = [r for r in document["intervals"] if r["site_id"] == site_id]
        if rows:  # the chart: the archive's last day
            since = (parse_ts(rows[-1]["end"]) - timedelta(hours=HISTORY_H)).isoformat()
            rows = [r for r in rows if r["end"] > since.replace("+00:00", "Z")]
        if not rows:
            st.caption(f"The archive has no interval of {site_id} in this window.")
        else:
            power, bands, prices = history_frames(rows)
            mine: dict[str, Any] = next((t for t in document["sites"] if t["site_id"] == site_id), {})
            cells = st.columns(5)
            cells[0].metric("Minutes over the limit", f"{mine.get('minutes_over_limit', 0):,.1f}",
                            help="net import above the import limit, or net export above the export limit")
            cells[1].metric("Imported", f"{mine.get('import_kwh', 0):,.1f} kWh")
            cells[2].metric("Given back (V2G)", f"{mine.get('v2g_discharged_kwh', 0):,.1f} kWh")
            cells[3].metric("Shifted by signals", f"{mine.get('shifted_under_signals_kwh', 0):,.1f} kWh",
                            help="import moved later under a limit or price signal, against each session "
                            "charging from its start at the highest power it measured (twin report grid --help)")
            cost = mine.get("cost")
            cells[4].metric("Cost at the price signals", "—" if cost is None else
                            f"{cost:,.2f} {mine.get('currency') or ''}".strip())  # fmt: skip
            history_chart(power, bands)
            st.caption(f"The archive's last {HISTORY_H} hours ({rows[0]['start']} to {rows[-1]['end']}) in "
                       f"{document['window']['interval_min']}-minute intervals, split where the limit or the price "
                       "changes (`twin report grid`); measured: the EVSEs' power readings. Totals over the whole "
                       "archive; profiles sent: "
                       f"{mine.get('profiles_sent', 0)}, accepted {mine.get('profiles_accepted', 0)}, rejected "
                       f"{mine.get('profiles_rejected', 0)}.")  # fmt: skip
            if not prices.is_empty():
                st.caption("Price in force (per kWh)")
                st.line_chart(prices.to_pandas(), x="time", y="price", height=160)
    signals = live_signals if live_signals is not None else [
        s for s in (document or {}).get("signals", ()) if s.get("site_id") in (site_id, None)]  # fmt: skip
    rejected = [s for s in signals if s.get("status") == "rejected"]
    if rejected:
        st.subheader("Rejected signals")
        st.dataframe(signal_rows(rejected), hide_index=True, width="stretch",
                     column_config={"reason": st.column_config.TextColumn(width="large")})  # fmt: skip
    if signals:
        with st.expander(f"Every signal ({len(signals)})"):
            st.dataframe(signal_rows(signals), hide_index=True, width="stretch")


def static_sites() -> None:
    """Without the worker: the sites as the inventory (or the sites file) defines them."""
    from twin.captures import inventory_path
    from twin.settings import Settings

    sites_file = Settings.load().sites or None
    try:
        known = sites.load(sites_file, inventory_path(data.source().archive))
    except sites.SitesError as exc:
        st.error(f"The sites cannot be read: {exc}")
        return
    if not known:
        st.info(NO_SITES)
        return
    st.dataframe(pl.DataFrame([{"site": s.site_id, "name": s.name, "ean": s.ean, "stations": len(s.stations),
                                "static_import_limit_kw": s.import_limit_kw,
                                "static_export_limit_kw": s.export_limit_kw} for s in known]),
                 hide_index=True, width="stretch")  # fmt: skip
    defined = f"the sites file `{sites_file}`" if sites_file else "the station inventory"
    st.caption(f"The sites as {defined} defines them. The limit in force, what each site draws and the "
               "controller's plans need the live API.")  # fmt: skip
    if data.has_archive():
        ids = [s.site_id for s in known]
        chosen = st.selectbox("Site", ids, key="grid_site_archived")
        history(chosen, None)


@st.fragment(run_every=data.REFRESH)
def grid() -> None:
    if not data.header("Grid & smart charging"):
        static_sites()
        return
    answer, problem = data.live("/v1/sites")
    if answer is None:
        st.warning(f"The worker did not list its sites ({problem}).")
        return
    listed = answer["sites"]
    if not listed:
        st.info(NO_SITES)
        return
    overview(listed)
    ids = [s["site_id"] for s in listed]
    wanted = st.query_params.get("site")
    names = {s["site_id"]: s.get("name") for s in listed}
    chosen = st.selectbox("Site", ids, index=ids.index(wanted) if wanted in ids else 0, key="grid_site",
                          format_func=lambda i: f"{i} · {names[i]}" if names[i] else i)  # fmt: skip
    st.query_params["site"] = chosen
    detail(next(s for s in listed if s["site_id"] == chosen))


grid()
