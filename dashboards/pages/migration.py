"""Migration: stations on OCPP 2.0.1 and 2.1, bidirectional and ISO 15118-20 readiness."""

import polars as pl
import streamlit as st

from dashboards import data

data.header("Migration", live_data=False)
doc = data.report("migration")
assert doc is not None
summary = doc["summary"]
cols = st.columns(5)
cols[0].metric("Stations", summary["stations"])
cols[1].metric("OCPP 2.1", summary.get("ocpp2.1", 0))
cols[2].metric("OCPP 2.0.1", summary.get("ocpp2.0.1", 0))
cols[3].metric("Bidirectional", summary["bidirectional"])
cols[4].metric("ISO 15118-20", summary["iso15118_20"])
rows = doc["stations"]
if rows:
    frame = pl.DataFrame(rows, infer_schema_length=None)
    st.bar_chart(frame.group_by("protocol").len().sort("protocol").to_pandas(), x="protocol", y="len")
    st.dataframe(frame, hide_index=True, width="stretch")
