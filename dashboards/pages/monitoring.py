"""Monitoring & alerts: NotifyEvent events by severity and component."""

import polars as pl
import streamlit as st

from dashboards import data

data.header("Monitoring & alerts", live_data=False)
since, until = data.window()
doc = data.report("monitoring", since, until)
assert doc is not None
summary = doc["summary"]
st.metric("Events", summary["events"])
left, right = st.columns(2)
for column, key, title in ((left, "by_severity", "By severity"), (right, "by_component", "By component")):
    with column:
        st.subheader(title)
        counts = summary[key]
        if counts:
            frame = pl.DataFrame({"name": list(counts), "events": list(counts.values())})
            st.bar_chart(frame.to_pandas(), x="name", y="events")
st.subheader("Events")
if doc["events"]:
    st.dataframe(pl.DataFrame(doc["events"], infer_schema_length=None), hide_index=True, width="stretch")
else:
    st.caption("No monitoring events in this window.")
