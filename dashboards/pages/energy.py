"""Energy & V2G: import and export over time, discharge sessions."""

import polars as pl
import streamlit as st

from dashboards import data

data.header("Energy & V2G", live_data=False)
since, until = data.window()
energy = data.report("energy", since, until)
assert energy is not None
days = pl.DataFrame(energy["days"], infer_schema_length=None)
if days.is_empty():
    st.info("No metered energy in this window.")
    st.stop()
total = st.columns(4)
total[0].metric("Imported", f"{days['import_kwh'].sum():,.1f} kWh")
total[1].metric("Exported (V2G)", f"{days['export_kwh'].sum():,.1f} kWh")
total[2].metric("Discharge hours", f"{days['discharge_hours'].sum():,.1f} h")
peak = max((d["peak_export_kw"] or 0.0 for d in energy["days"]), default=0.0)
total[3].metric("Peak export", f"{peak:,.1f} kW")

st.subheader("By day")
by_day = days.group_by("day").agg(pl.col("import_kwh").sum(), pl.col("export_kwh").sum()).sort("day")
st.bar_chart(by_day.to_pandas(), x="day", y=["import_kwh", "export_kwh"], stack=False)

st.subheader("By station")
st.dataframe(pl.DataFrame(energy["stations"]), hide_index=True, width="stretch")

st.subheader("Discharge sessions")
sessions = data.report("sessions", since, until, block=False)
discharging = [s for s in (sessions or {"sessions": []})["sessions"] if (s.get("export_kwh") or 0) > 0]
if sessions is None:
    data.pending("sessions", since, until)
elif discharging:
    st.dataframe(pl.DataFrame(discharging, infer_schema_length=None), hide_index=True, width="stretch")
else:
    st.caption("No session exported energy in this window.")
