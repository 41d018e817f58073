"""Energy & V2G: import and export over time, revenue (`twin report tariffs`), discharge
sessions."""

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

st.subheader("Revenue")
tariffs = data.report("tariffs", since, until, block=False)
if tariffs is None:
    data.pending("tariffs", since, until)
elif not tariffs["revenue"]:
    st.caption("No session was priced in this window: no tariff in force (`twin tariff set`).")
else:
    revenue = pl.DataFrame(tariffs["revenue"], infer_schema_length=None)
    currency = ", ".join(sorted({str(c) for c in revenue["currency"].drop_nulls()})) or "EUR"
    money = st.columns(4)
    money[0].metric("Revenue (excl. tax)", f"{revenue['revenue_excl_tax'].sum():,.2f} {currency}",
                    help="Each session's cost recomputed from the tariff in force at its start (twin.tariffs)")
    money[1].metric("Reported cost", f"{revenue['reported'].sum():,.2f} {currency}",
                    help="As the stations (costDetails) or the CSMS (CostUpdated, totalCost) reported it")
    money[2].metric("Sessions", f"{revenue['sessions'].sum():,}")
    off = [s for s in tariffs["sessions"] if s["difference"] is not None and abs(s["difference"]) >= 0.01]
    money[3].metric("Billing differences", f"{len(off):,}", help="Sessions whose reported cost differs from the "
                    "recomputed one by a cent or more")  # fmt: skip
    by_day = revenue.group_by("date").agg(pl.col("revenue_excl_tax").sum(), pl.col("reported").sum()).sort("date")
    st.bar_chart(by_day.to_pandas(), x="date", y=["revenue_excl_tax", "reported"], stack=False)
    st.dataframe(revenue, hide_index=True, width="stretch")
    if off:
        with st.expander(f"Sessions billed differently from the tariff ({len(off)})"):
            st.dataframe(pl.DataFrame(off, infer_schema_length=None), hide_index=True, width="stretch")

st.subheader("Discharge sessions")
sessions = data.report("sessions", since, until, block=False)
discharging = [s for s in (sessions or {"sessions": []})["sessions"] if (s.get("export_kwh") or 0) > 0]
if sessions is None:
    data.pending("sessions", since, until)
elif discharging:
    st.dataframe(pl.DataFrame(discharging, infer_schema_length=None), hide_index=True, width="stretch")
else:
    st.caption("No session exported energy in this window.")
