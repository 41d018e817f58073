"""twin's dashboard: ``twin dashboard`` (or ``streamlit run dashboards/app.py``).

Pages read the worker's live API and the archive, through ``dashboards.data``."""

import streamlit as st

st.set_page_config(page_title="twin", page_icon=":material/bolt:", layout="wide")

pages = st.navigation(
    [
        st.Page("pages/fleet.py", title="Fleet", icon=":material/map:", default=True),
        st.Page("pages/station.py", title="Station", icon=":material/ev_station:"),
        st.Page("pages/energy.py", title="Energy & V2G", icon=":material/bolt:"),
        st.Page("pages/grid.py", title="Grid & smart charging", icon=":material/electric_meter:"),
        st.Page("pages/reservations.py", title="Reservations", icon=":material/event:"),
        st.Page("pages/monitoring.py", title="Monitoring & alerts", icon=":material/notifications:"),
        st.Page("pages/uptime.py", title="Uptime & AFIR", icon=":material/verified:"),
        st.Page("pages/migration.py", title="Migration", icon=":material/swap_horiz:"),
    ]
)
pages.run()
