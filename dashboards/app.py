"""twin's dashboard: ``twin dashboard`` (Streamlit runs it through ``dashboards/entry/app.py``).

Pages read the worker's live API and the archive, through ``dashboards.data``. With a token
store (``twin up`` always has one) it asks for a token before it shows anything, keeps it in
the session, sends it to the API, and shows only what the token's role may do: a viewer
reads; an operator also sends commands; an admin also manages tokens."""

from pathlib import Path

import orjson
import streamlit as st

from dashboards import data
from twin.tokens import allows

st.set_page_config(page_title="twin", page_icon=":material/bolt:", layout="wide")


def sign_in() -> None:
    """The form a visitor sees instead of the pages, until a token is let in."""
    st.title("twin")
    st.caption("This dashboard shows a fleet's stations: sign in with a token (`twin token add NAME --role viewer`; "
               "`twin up` prints an admin token when it makes the store).")  # fmt: skip
    with st.form("sign-in"):
        token = st.text_input("Token", type="password", key="sign_in_token")
        if st.form_submit_button("Sign in"):
            if data.identify(token) is not None:
                st.session_state[data.TOKEN] = token.strip()
                st.rerun()
            st.error("Unknown or revoked token.")


def send_command() -> None:
    """An operator's: a CSMS-initiated call, queued through the API under their name."""
    with st.sidebar.expander("Send a command"), st.form("command"):
        station = st.text_input("Station", key="command_station")
        action = st.text_input("Action", placeholder="e.g. Reset", key="command_action")
        payload = st.text_area("Payload (JSON)", value="{}", key="command_payload")
        if st.form_submit_button("Queue it"):
            try:
                body = {"action": action.strip(), "payload": orjson.loads(payload or "{}")}
            except orjson.JSONDecodeError as exc:
                st.error(f"The payload is not JSON: {exc}")
                return
            status, answer = data.act("POST", f"/v1/stations/{station.strip()}/commands", body)
            if status == 202:
                st.success(f"Queued as command {answer['command_id']}.")
            else:
                st.error(answer.get("error", status))


def manage_tokens() -> None:
    """An admin's: the tokens, a new one (shown once), a revocation."""
    with st.sidebar.expander("Tokens"):
        status, answer = data.act("GET", "/v1/tokens")
        if status != 200:
            st.caption(f"The API did not list them: {answer.get('error', status)}")
            return
        st.dataframe(answer["tokens"], hide_index=True)
        with st.form("token-add"):
            name = st.text_input("Name", key="token_name")
            role = st.selectbox("Role", ("viewer", "operator", "admin"), key="token_role")
            if st.form_submit_button("Add"):
                status, made = data.act("POST", "/v1/tokens", {"name": name.strip(), "role": role})
                if status == 201:
                    st.success("Shown this once:")
                    st.code(made["token"], language=None)
                else:
                    st.error(made.get("error", status))
        with st.form("token-revoke"):
            gone = st.selectbox("Revoke", [t["name"] for t in answer["tokens"]], key="token_gone")
            if st.form_submit_button("Revoke") and gone:
                status, said = data.act("DELETE", f"/v1/tokens/{gone}")
                st.success(f"Revoked {gone}.") if status == 200 else st.error(said.get("error", status))


HERE = Path(__file__).resolve().parent
PAGES = [
    st.Page(HERE / "pages/fleet.py", title="Fleet", icon=":material/map:", default=True),
    st.Page(HERE / "pages/station.py", title="Station", icon=":material/ev_station:"),
    st.Page(HERE / "pages/energy.py", title="Energy & V2G", icon=":material/bolt:"),
    st.Page(HERE / "pages/grid.py", title="Grid & smart charging", icon=":material/electric_meter:"),
    st.Page(HERE / "pages/reservations.py", title="Reservations", icon=":material/event:"),
    st.Page(HERE / "pages/monitoring.py", title="Monitoring & alerts", icon=":material/notifications:"),
    st.Page(HERE / "pages/uptime.py", title="Uptime & AFIR", icon=":material/verified:"),
    st.Page(HERE / "pages/feeds.py", title="Feeds: OCPI & DATEX II", icon=":material/rss_feed:"),
    st.Page(HERE / "pages/migration.py", title="Migration", icon=":material/swap_horiz:"),
]

guarded = data.guarded()
me = data.caller() if guarded else None
# the page asked for is resolved first, so that after signing in its URL (and query) is where one lands
pages = st.navigation(PAGES, position="hidden" if guarded and me is None else "sidebar")
if guarded and me is None:  # the sign-in form in the page's place; no page runs
    st.session_state.pop(data.TOKEN, None)
    sign_in()
    st.stop()
if me is not None:
    st.sidebar.caption(f"Signed in as **{me['name']}** ({me['role']})")
    if st.sidebar.button("Sign out", key="sign_out"):
        st.session_state.pop(data.TOKEN, None)
        st.rerun()
    if allows(me["role"], "operator"):
        send_command()
    if allows(me["role"], "admin"):
        manage_tokens()
else:
    st.sidebar.caption("Open: no token store (this machine only).")
pages.run()
