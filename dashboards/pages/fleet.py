"""Fleet: KPIs, the map of sites, the fleet table with filters (refreshing on its own while live)."""

import polars as pl
import streamlit as st

from dashboards import data

STATES = ["all", "online", "offline", "charging", "discharging", "faulted"]


def energy_today(is_live: bool) -> tuple[str, float | None, float | None]:
    """kWh in and out today (live), or on the archive's last day."""
    if not data.has_archive():
        return "today", None, None
    since = data.today() if is_live else None
    days = data.report("energy", since=since, block=False) or {"days": []}
    last = max((d["day"] for d in days["days"]), default=None)
    if last is None:
        return "today", None, None
    label = "today" if last == data.today() else f"on {last}"
    rows = [d for d in days["days"] if d["day"] == last]
    return label, sum(d["import_kwh"] for d in rows), sum(d["export_kwh"] for d in rows)


def kpis(summary: dict | None, is_live: bool) -> None:
    columns = st.columns(6)
    if summary is not None:
        columns[0].metric("Stations online", f"{summary['online']} / {summary['stations']}")
        columns[1].metric("Charging", summary["charging"])
        columns[2].metric("Discharging (V2G)", summary["discharging"])
        columns[3].metric("Faulted", summary["faulted"])
    else:
        columns[0].metric("Stations (archive)", len(data.station_ids()))
        for column, label in zip(columns[1:4], ("Charging", "Discharging (V2G)", "Faulted"), strict=True):
            column.metric(label, "—", help="needs the live API")
    label, import_kwh, export_kwh = energy_today(is_live)
    columns[4].metric(f"Energy in {label}", "—" if import_kwh is None else f"{import_kwh:,.1f} kWh")
    columns[5].metric(f"Energy out {label}", "—" if export_kwh is None else f"{export_kwh:,.1f} kWh")


def sites(inventory: dict[str, dict]) -> None:
    located = [s for s in inventory.values() if s.get("lat") is not None]
    if not located:
        return
    st.subheader("Sites")
    # a plain scatter of coordinates: it needs no map tiles, so it works offline too
    frame = pl.DataFrame(
        {k: [s.get(k) for s in located] for k in ("station_id", "pool_id", "lat", "lon", "max_kw")}
    ).with_columns(pl.col("max_kw").cast(pl.Float64))
    spec = {
        "mark": {"type": "circle", "tooltip": True},
        "encoding": {
            "x": {"field": "lon", "type": "quantitative", "scale": {"zero": False}, "title": "longitude"},
            "y": {"field": "lat", "type": "quantitative", "scale": {"zero": False}, "title": "latitude"},
            "color": {"field": "pool_id", "type": "nominal", "title": "pool"},
            "size": {"field": "max_kw", "type": "quantitative", "title": "kW"},
        },
        "height": 360,
    }
    st.vega_lite_chart(frame.to_pandas(), spec, width="stretch")


def stations(rows: list[dict], inventory: dict[str, dict]) -> None:
    """The table: live rows, or (archive only) what the log and the inventory say."""

    def listed(row: dict, keys: tuple[str, ...]) -> dict:
        return {**row, **{k: inventory.get(row["station_id"], {}).get(k) for k in keys}}

    if rows:
        table = [listed(r, ("pool_id", "kind", "max_kw")) for r in rows]
    else:
        migration = (data.report("migration", block=False) or {"stations": []})["stations"]
        table = [listed(r, ("pool_id", "kind", "max_kw", "vendor", "model")) for r in migration]
    st.subheader("Stations")
    filters = st.columns(3)
    text = filters[0].text_input("Station, vendor or model contains", key="fleet_text")
    protocols = sorted({str(r.get("protocol")) for r in table})
    chosen = filters[1].multiselect("Protocol", protocols, key="fleet_protocol", placeholder="all")
    state = filters[2].selectbox("State", STATES, key="fleet_state", disabled=not rows)

    def keep(r: dict) -> bool:
        hay = " ".join(str(r.get(k) or "") for k in ("station_id", "vendor", "model")).lower()
        if text and text.lower() not in hay or chosen and str(r.get("protocol")) not in chosen:
            return False
        if state == "all" or not rows:
            return True
        if state in ("online", "offline"):
            return bool(r["online"]) == (state == "online")
        return bool(r[state])

    shown = [r for r in table if keep(r)]
    st.dataframe(pl.DataFrame(shown) if shown else None, hide_index=True, width="stretch")
    st.caption(f"{len(shown)} of {len(table)} stations. Open one on the Station page.")


@st.fragment(run_every=data.REFRESH)
def fleet() -> None:
    is_live = data.header("Fleet")
    summary, _ = data.live("/v1/fleet/summary")
    listing, _ = data.live("/v1/stations") if summary is not None else (None, None)
    inventory = data.inventory()
    kpis(summary, is_live)
    sites(inventory)
    stations(listing["stations"] if listing else [], inventory)


fleet()
