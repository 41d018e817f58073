"""Station: its twin (refreshing on its own while live), EVSEs with energy direction, each
EVSE's price now and next and its session's running cost, the timeline of its recent frames,
its reservations, monitors and alerts."""

import polars as pl
import streamlit as st

from dashboards import data

st.title("Station")
ids = data.station_ids()
if not ids:
    st.info("No stations yet: neither the live API nor the archive knows any.")
    st.stop()
wanted = st.query_params.get("station")
station = st.selectbox("Station", ids, index=ids.index(wanted) if wanted in ids else 0, key="station_pick")
st.query_params["station"] = station


def money(value: float | None, unit: str) -> str:
    return "—" if value is None else f"{value:.2f} {unit}"


def price_line(price: dict | None, currency: str) -> str:
    """A price in force as a driver reads it: per kWh, per minute, idle, fee, where given."""
    if not price:
        return "none"
    parts = [(price.get("energy_per_kwh"), f"{currency}/kWh"), (price.get("time_per_min"), f"{currency}/min"),
             (price.get("idle_per_min"), f"{currency}/min idle"), (price.get("fixed_fee"), f"{currency} per session")]
    return ", ".join(money(v, unit) for v, unit in parts if v is not None) or "free"


def prices(evses: dict, zone: str = "UTC") -> None:
    """Each EVSE's tariff in force (evses.{id}.tariff): its price now and from when the next,
    also in the station's local time (its clock's zone, the tariffs' times of day)."""
    shown = [(k, e) for k, e in sorted(evses.items(), key=lambda kv: int(kv[0])) if e.get("tariff")]
    if not shown:
        return
    st.subheader("Prices")
    cells = st.columns(len(shown))
    rows = []
    for cell, (evse_id, evse) in zip(cells, shown, strict=True):
        t = evse["tariff"]
        currency = t.get("currency") or ""
        now, nxt = t.get("price_now") or {}, t.get("price_next")
        cell.metric(f"EVSE {evse_id} price now", price_line(now, currency), help=f"tariff {t.get('tariff_id')}")
        if t.get("next_change_at"):
            at = t["next_change_at"]
            cell.caption(f"Next: {price_line(nxt, currency)} from {at} ({local(at, zone)})")
        else:
            cell.caption("No change ahead")
        cost = (evse.get("transaction") or {}).get("cost") or {}
        total = cost.get("total_incl_tax") if cost.get("total_incl_tax") is not None else cost.get("total_excl_tax")
        rows.append({"evse": int(evse_id), "tariff": t.get("tariff_id"), "source": t.get("source"),
                     "now": price_line(now, currency), "incl_tax_per_kwh": now.get("energy_per_kwh_incl_tax"),
                     "next_change_at": t.get("next_change_at"), "next": price_line(nxt, currency) if nxt else None,
                     "session_cost": None if total is None else f"{total:.2f} {cost.get('currency') or currency}",
                     "cost_source": cost.get("source"), "cost_final": cost.get("final")})  # fmt: skip
    table(rows)


def local(moment: str, zone: str) -> str:
    """``moment`` (UTC) as the station's local time: ``22:00 Europe/Berlin``."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    at = datetime.fromisoformat(moment.replace("Z", "+00:00")).astimezone(ZoneInfo(zone))
    return f"{at:%H:%M} {zone}"


def table(rows: list[dict]) -> None:
    if rows:
        st.dataframe(pl.DataFrame(rows, infer_schema_length=None), hide_index=True, width="stretch")
    else:
        st.caption("none")


@st.fragment(run_every=data.REFRESH)
def twin_view(station: str) -> None:
    data.status()
    twin, origin = data.twin(station)
    if twin is None:
        st.info(f"{station}: no twin (the API and the archive know nothing of it)")
        return
    connection, identity, security = twin.get("connection", {}), twin.get("identity", {}), twin.get("security", {})
    where = "live" if origin == "live" else "folded from the archive"
    st.caption(f"Twin {where}, as of {twin.get('as_of')} · {twin.get('frames_folded', 0):,} frames folded")
    top = st.columns(5)
    top[0].metric("Connection", "online" if connection.get("online") else "offline",
                  help=f"last seen {connection.get('last_seen')}")  # fmt: skip
    top[1].metric("Protocol", twin.get("protocol") or "—")
    top[2].metric("Vendor / model", f"{identity.get('vendor') or '—'} {identity.get('model') or ''}")
    top[3].metric("Firmware", identity.get("firmware_version") or "—")
    top[4].metric("Security profile", security.get("profile") or "—")

    st.subheader("EVSEs")
    evses = twin.get("evses", {})
    cells = st.columns(max(1, len(evses)))
    lines = []
    for cell, (evse_id, evse) in zip(cells, sorted(evses.items(), key=lambda kv: int(kv[0])), strict=False):
        energy = evse.get("energy") or {}
        direction = energy.get("direction", "idle")
        power = (energy.get("power_w") or 0) / 1000
        cell.metric(f"EVSE {evse_id} · {evse.get('status', '—')}", direction,
                    f"{power:+.1f} kW" if power else None)  # fmt: skip
        tx = evse.get("transaction") or {}
        lines.append({
            "evse": int(evse_id), "status": evse.get("status"), "direction": direction, "power_kw": round(power, 2),
            "import_kwh": round((energy.get("import_wh") or 0) / 1000, 3),
            "export_kwh": round((energy.get("export_wh") or 0) / 1000, 3),
            "transaction": tx.get("id"), "tx_state": tx.get("state"),
            "tx_import_kwh": round((tx.get("import_wh") or 0) / 1000, 3), "since": energy.get("since"),
        })  # fmt: skip
    table(lines)
    from twin.tariffs import station_zone

    prices(evses, station_zone(twin))

    left, right = st.columns(2)
    with left:
        st.subheader("Reservations")
        table([{"reservation_id": k, **v} for k, v in (twin.get("reservations") or {}).items()])
        st.subheader("Monitors")
        monitoring = twin.get("monitoring") or {}
        table([{"monitor_id": k, **v} for k, v in (monitoring.get("monitors") or {}).items()])
    with right:
        st.subheader("Alerts")
        alerts = []
        if monitoring.get("last_event"):
            alerts.append({"kind": "monitoring", **monitoring["last_event"]})
        if security.get("last_event"):
            alerts.append({"kind": "security", **security["last_event"]})
        for evse_id, evse in evses.items():
            if evse.get("status") == "Faulted":
                alerts.append({"kind": "fault", "evse": evse_id, "since": (evse.get("connectors") or {}).get("1", {})
                               .get("since")})  # fmt: skip
        table([{k: str(v) for k, v in a.items()} for a in alerts])

    frames, origin = data.recent_frames(station)
    st.subheader("Recent frames" + ("" if origin == "live" else " (archive)"))
    table(frames)


twin_view(station)

COST_SQL = """
SELECT strftime(ts, '%Y-%m-%dT%H:%M:%S.%g') || 'Z' AS ts, action, CAST(payload AS VARCHAR) AS payload
FROM frames WHERE msg_type = 2 ORDER BY ts, conn_id, seq
"""


@st.cache_data(show_spinner="reading the session's cost from the archive ...", max_entries=16)
def cost_timeline(archive: str, stamp: tuple[int, float], station: str) -> list[dict]:
    """Every cost the log shows for the station's sessions: each CostUpdated (central) and each
    TransactionEvent's costDetails (local), in order."""
    import orjson

    from twin.analytics.frames import query, sql_list

    out = []
    for r in query(archive, ("CostUpdated", "TransactionEvent"), COST_SQL, where=f"station_id = {sql_list([station])}"):
        p = orjson.loads(r["payload"])
        if r["action"] == "CostUpdated":
            out.append({"ts": r["ts"], "transaction": str(p.get("transactionId")), "cost": p.get("totalCost"),
                        "source": "central"})  # fmt: skip
        elif p.get("costDetails"):
            total = (p["costDetails"].get("totalCost") or {}).get("total") or {}
            out.append({"ts": r["ts"], "transaction": str((p.get("transactionInfo") or {}).get("transactionId")),
                        "cost": total.get("inclTax", total.get("exclTax")), "source": "local"})  # fmt: skip
    return out


def session_costs(station: str) -> None:
    """A session's running cost over time, from the archive (on demand: it reads the log)."""
    archive = data.source().archive
    stamp = data.version(archive)
    if not stamp[0] or not st.toggle("Cost timeline of a session (from the archive)", key="cost_timeline"):
        return
    points = cost_timeline(archive, stamp, station)
    if not points:
        st.caption("The archive shows no cost for this station's sessions.")
        return
    sessions = list(dict.fromkeys(p["transaction"] for p in reversed(points)))  # the latest first
    chosen = st.selectbox("Session", sessions, key="cost_session")
    mine = pl.DataFrame([p for p in points if p["transaction"] == chosen], infer_schema_length=None)
    st.line_chart(mine.to_pandas(), x="ts", y="cost")
    table(mine.to_dicts())


session_costs(station)
