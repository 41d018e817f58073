"""Uptime & AFIR: the uptime report under a rule, and the AFIR checks per pool."""

import polars as pl
import streamlit as st

from dashboards import data

RESULT = {"pass": "pass", "fail": "FAIL", "unknown": "unknown"}

data.header("Uptime & AFIR", live_data=False)
since, until = data.window()
rule = st.radio("Uptime rule", ["nevi", "uk"], horizontal=True, key="uptime_rule",
                help="nevi: > 97% per port (23 CFR 680.116(b)); uk: 99% network average for points of 50 kW and "
                "more. What counts as up, down and excluded: twin/analytics/uptime.py.")  # fmt: skip
doc = data.report("uptime", since, until, rule=rule)
assert doc is not None
network = doc["network"]
cols = st.columns(3)
cols[0].metric("Network uptime", "—" if network["uptime_pct"] is None else f"{network['uptime_pct']:.2f} %")
cols[1].metric(f"Target ({rule})", f"{doc['target_pct']} %")
cols[2].metric("Network", RESULT["pass" if network.get("pass") else "fail"])
st.caption(f"From {doc['from']} to {doc['to']}.")
st.subheader("Pools")
st.dataframe(pl.DataFrame(doc["pools"], infer_schema_length=None), hide_index=True, width="stretch")
st.subheader("Ports")
st.dataframe(pl.DataFrame(doc["ports"], infer_schema_length=None), hide_index=True, width="stretch")

st.header("AFIR")
afir = data.report("afir", block=False)
if afir is None:
    data.pending("afir")
for pool in (afir or {"pools": []})["pools"]:
    results = [c["result"] for c in pool["checks"]]
    title = (
        f"{pool['pool_id']}: {pool['total_kw']:g} kW, {pool['points_150kw']} points ≥ 150 kW — "
        f"{results.count('pass')} pass, {results.count('fail')} fail, {results.count('unknown')} unknown"
    )
    with st.expander(title):
        rows = [{"rule": c["rule"], "result": RESULT[c["result"]], "why": c["why"]} for c in pool["checks"]]
        st.dataframe(pl.DataFrame(rows), hide_index=True, width="stretch")
