"""Feeds: where `twin ocpi` publishes the fleet (OCPI 2.2.1 for eMSPs and roaming platforms,
DATEX II v3.7 AFIR for national access points), who is registered and in what role, and
when each feed was last served or pushed, with what result. From `twin ocpi`'s `/status`
(``TWIN_OCPI``; `twin up` sets it), asked again while the page is open."""

from __future__ import annotations

from typing import Any

import polars as pl
import streamlit as st

from dashboards import data
from twin.settings import Settings

NOT_RUNNING = (
    "`twin ocpi` is not reachable at {url} ({why}). `twin up` starts it and tells the dashboard where "
    "(TWIN_OCPI); on its own: `twin ocpi --port PORT`, and TWIN_OCPI=http://HOST:PORT for `twin dashboard`."
)
FEED_COLUMNS = {
    "url": st.column_config.LinkColumn("where", width="medium"),
    "last_served": st.column_config.TextColumn("last served (UTC)"),
    "to": st.column_config.TextColumn("to", help="the registered party (OCPI) or the address (DATEX II)"),
    "result": st.column_config.TextColumn(help="objects in the page served of all that matched; a command's answer"),
}


def ocpi_url() -> str:
    return Settings.load().ocpi_url


def feed_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"feed": f["feed"], "url": f["url"], "last_served": when(f.get("last_served")),
             "to": f.get("last_to") or "", "result": f.get("last_result") or ""} for f in status["feeds"]]  # fmt: skip


def when(ts: str | None) -> str:
    """``2026-03-02 10:00:01`` (UTC) of an ISO time, or ``never``."""
    return ts[:19].replace("T", " ") if ts else "never"


def party_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for p in status["parties"]:
        push = p.get("push") or {}
        result = p.get("last_command_result") or {}
        rows.append({
            "party": p["party"], "name": p.get("name"), "role": p.get("role"), "versions": p.get("versions_url"),
            "registered_at": p.get("registered_at"), "receives": ", ".join(p.get("receives") or ()),
            "sessions & CDRs pushed": push.get("sent", 0), "push failures": push.get("failures", 0),
            "waiting": push.get("pending", 0), "last pushed": push.get("last_pushed_at"),
            "last push error": push.get("last_error"),
            "last command result": f"{result['result']} ({result['delivered']}, {result['at']})" if result else None,
        })  # fmt: skip
    return rows


def locations_push(push: dict[str, Any] | None) -> None:
    st.subheader("Locations push")
    if not push:
        st.caption("No locations receiver: `twin ocpi --push URL --push-token T` PUTs every Location on start and "
                   "PATCHes each EVSE status change to an eMSP's or a NAP's receiver.")  # fmt: skip
        return
    cols = st.columns(4)
    cols[0].metric("Pushed", push["sent"])
    cols[1].metric("Failures", push["failures"], help="each retried with backoff; nothing is dropped")
    cols[2].metric("Waiting", push["pending"])
    cols[3].metric("Last pushed", push.get("last_pushed_at") or "never")
    st.caption(f"To {push['url']}" + (f"; last error: {push['last_error']}" if push.get("last_error") else ""))


@st.fragment(run_every=data.REFRESH)
def feeds() -> None:
    st.title("Feeds: OCPI & DATEX II")
    url = ocpi_url()
    status, problem = data.live("/status", base=url)
    if status is None:
        st.warning(NOT_RUNNING.format(url=url, why=problem))
        return
    caught = "" if status.get("caught_up") else " (still reading the twins)"
    st.caption(f"`twin ocpi` at {status['base_url']} as OCPI party {status['party']}; {status['twins']} twins"
               f"{caught}. eMSPs register at the versions endpoint {status['versions_url']} with token A "
               "(`twin up` prints it).")  # fmt: skip
    st.subheader("Where each feed is")
    st.dataframe(pl.DataFrame(feed_rows(status), infer_schema_length=None), hide_index=True, width="stretch",
                 column_config=FEED_COLUMNS)  # fmt: skip
    st.subheader("Registered parties")
    parties = party_rows(status)
    if parties:
        st.dataframe(pl.DataFrame(parties, infer_schema_length=None), hide_index=True, width="stretch",
                     column_config={"versions": st.column_config.LinkColumn()})  # fmt: skip
    else:
        st.caption("No party has registered yet (POST credentials with token A).")
    locations_push(status.get("push"))
    reservations = status.get("reservations") or []
    if reservations:
        st.subheader("Roaming reservations")
        st.dataframe(pl.DataFrame(reservations, infer_schema_length=None), hide_index=True, width="stretch")


feeds()
