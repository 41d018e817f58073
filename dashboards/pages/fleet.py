"""Fleet: KPIs, the map of sites, the fleet table with filters."""

import polars as pl
import streamlit as st

from dashboards import data

is_live = data.header("Fleet")
inventory = data.inventory()

summary, _ = data.live("/v1/fleet/summary") if is_live else (None, None)
listing, _ = data.live("/v1/stations") if is_live else (None, None)
rows = listing["stations"] if listing else []

# energy in and out today (live), or on the archive's last day
energy_label, import_kwh, export_kwh = "today", None, None
if data.has_archive():
    days = (data.report("energy", since=data.today()) if is_live else data.report("energy")) or {"days": []}
    last = max((d["day"] for d in days["days"]), default=None)
    if last is not None:
        energy_label = "today" if last == data.today() else f"on {last}"
        import_kwh = sum(d["import_kwh"] for d in days["days"] if d["day"] == last)
        export_kwh = sum(d["export_kwh"] for d in days["days"] if d["day"] == last)

kpis = st.columns(6)
if summary is not None:
    kpis[0].metric("Stations online", f"{summary['online']} / {summary['stations']}")
    kpis[1].metric("Charging", summary["charging"])
    kpis[2].metric("Discharging (V2G)", summary["discharging"])
    kpis[3].metric("Faulted", summary["faulted"])
else:
    kpis[0].metric("Stations (archive)", len(data.station_ids()))
    for column, label in zip(kpis[1:4], ("Charging", "Discharging (V2G)", "Faulted"), strict=True):
        column.metric(label, "—", help="needs the live API")
kpis[4].metric(f"Energy in {energy_label}", "—" if import_kwh is None else f"{import_kwh:,.1f} kWh")
kpis[5].metric(f"Energy out {energy_label}", "—" if export_kwh is None else f"{export_kwh:,.1f} kWh")


def listed(row: dict, keys: tuple[str, ...]) -> dict:
    """A table row: the station's live or archived line, and what the inventory adds."""
    return {**row, **{k: inventory.get(row["station_id"], {}).get(k) for k in keys}}


if rows:
    table = [listed(r, ("pool_id", "kind", "max_kw")) for r in rows]
else:  # archive only: what the log and the inventory say about each station
    migration = (data.report("migration") or {"stations": []})["stations"]
    table = [listed(r, ("pool_id", "kind", "max_kw", "vendor", "model")) for r in migration]

sites = [s for s in inventory.values() if s.get("lat") is not None]
if sites:
    st.subheader("Sites")
    # a plain scatter of coordinates: it needs no map tiles, so it works offline too
    frame = pl.DataFrame(
        {k: [s.get(k) for s in sites] for k in ("station_id", "pool_id", "lat", "lon", "max_kw")}
    ).with_columns(pl.col("max_kw").cast(pl.Float64))
    st.scatter_chart(frame.to_pandas(), x="lon", y="lat", color="pool_id", size="max_kw", height=360)

st.subheader("Stations")
filters = st.columns([2, 2, 2])
text = filters[0].text_input("Station, vendor or model contains", key="fleet_text")
protocols = sorted({str(r.get("protocol")) for r in table})
chosen = filters[1].multiselect("Protocol", protocols, default=protocols, key="fleet_protocol")
state = filters[2].selectbox("State", ["all", "online", "offline", "charging", "discharging", "faulted"],
                             key="fleet_state", disabled=not rows)  # fmt: skip


def keep(r: dict) -> bool:
    hay = " ".join(str(r.get(k) or "") for k in ("station_id", "vendor", "model")).lower()
    if text and text.lower() not in hay or str(r.get("protocol")) not in chosen:
        return False
    if state == "all" or not rows:
        return True
    if state in ("online", "offline"):
        return bool(r["online"]) == (state == "online")
    return bool(r[state])


shown = [r for r in table if keep(r)]
st.dataframe(pl.DataFrame(shown) if shown else None, hide_index=True, width="stretch")
st.caption(f"{len(shown)} of {len(table)} stations. Open one on the Station page.")
