"""twin's dashboard: ``twin dashboard`` (or ``streamlit run dashboards/app.py``).

Pages read the worker's live API and the archive, through ``dashboards.data``. With a token
store (``twin up`` always has one) it asks for a token before it shows anything, keeps it in
the session, sends it to the API, and shows only what the token's role may do: a viewer
reads; an operator also sends commands; an admin also manages tokens."""

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


PAGES = [
    st.Page("pages/fleet.py", title="Fleet", icon=":material/map:", default=True),
    st.Page("pages/station.py", title="Station", icon=":material/ev_station:"),
    st.Page("pages/energy.py", title="Energy & V2G", icon=":material/bolt:"),
    st.Page("pages/grid.py", title="Grid & smart charging", icon=":material/electric_meter:"),
    st.Page("pages/reservations.py", title="Reservations", icon=":material/event:"),
    st.Page("pages/monitoring.py", title="Monitoring & alerts", icon=":material/notifications:"),
    st.Page("pages/uptime.py", title="Uptime & AFIR", icon=":material/verified:"),
    st.Page("pages/migration.py", title="Migration", icon=":material/swap_horiz:"),
]

if data.guarded():
    me = data.caller()
    if me is None:  # the sign-in form is the only page: every page's URL leads to it
        st.session_state.pop(data.TOKEN, None)
        st.navigation([st.Page(sign_in, title="Sign in", icon=":material/key:")], position="hidden").run()
        st.stop()
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

st.navigation(PAGES).run()
