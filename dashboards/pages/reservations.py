"""Reservations: made, used, expired, cancelled; no-show rate; time to plug-in."""

import polars as pl
import streamlit as st

from dashboards import data

data.header("Reservations", live_data=False)
since, until = data.window()
doc = data.report("reservations", since, until)
assert doc is not None
summary = doc["summary"]
cols = st.columns(6)
for col, key in zip(cols, ("made", "used", "expired", "cancelled", "rejected"), strict=False):
    col.metric(key.capitalize(), summary[key])
rate = summary.get("no_show_rate")
cols[5].metric("No-show rate", "—" if rate is None else f"{rate:.0%}",
               help=f"median minutes to plug-in: {summary.get('median_minutes_to_plug_in')}")  # fmt: skip
rows = doc["reservations"]
if rows:
    frame = pl.DataFrame(rows, infer_schema_length=None)
    st.bar_chart(frame.group_by("status").len().sort("status").to_pandas(), x="status", y="len")
    st.dataframe(frame, hide_index=True, width="stretch")
else:
    st.caption("No reservations in this window.")
