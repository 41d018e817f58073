"""What the pages read: the live API (asked afresh on every run) and the archive's reports
(cached, and computed again when the archive gains files)."""

from __future__ import annotations

import atexit
import itertools
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import streamlit as st

from dashboards import archive_path
from twin.settings import Settings

TIMEOUT = 2.0
REFRESH = "3s"
"""How often the live parts of a page (the fleet, a station's twin) ask the API again. They
ask while the API is away too, so that a page opened before the worker was ready comes alive."""


@dataclass(frozen=True)
class Source:
    api: str
    archive: str


def source() -> Source:
    settings = Settings.load()
    return Source(settings.api_url, archive_path(os.environ.get("TWIN_ARCHIVE"), settings.archive))


def live(path: str, base: str | None = None) -> tuple[Any, str | None]:
    """The API's answer to ``path`` (or another service's of ours at ``base``, with the same
    token: ``twin ocpi``'s /status), or None and why not."""
    base = base or source().api
    try:
        with urllib.request.urlopen(urllib.request.Request(base + path, headers=token_header()),
                                    timeout=TIMEOUT) as response:  # fmt: skip
            return orjson.loads(response.read()), None
    except urllib.error.HTTPError as exc:
        try:
            return None, str(orjson.loads(exc.read()).get("error", exc.reason))
        except (orjson.JSONDecodeError, AttributeError):
            return None, f"{exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError) as exc:
        return None, f"no answer from {base} ({getattr(exc, 'reason', exc)})"


def has_archive() -> bool:
    """A capture file, or an archive directory with at least one Parquet file (a new
    worker's archive holds only the inventory for its first seconds)."""
    return version(source().archive)[0] > 0


def absent(archive: str, short: bool = False) -> str:
    """Why there is no archive to show: not written yet, or on an object store (the worker
    writes there; reports read a copy on this machine)."""
    from twin.captures import shown

    if "://" in archive:
        said = f"the archive is on an object store (`{shown(archive)}`), and pages read a directory"
        return said if short else f"{said[0].upper()}{said[1:]}: copy it here (`aws s3 sync`) and set TWIN_ARCHIVE."
    said = f"no archive at `{archive}` yet"
    return said if short else f"No archive at `{archive}` yet: the worker writes one as frames arrive."


def version(archive: str) -> tuple[int, float]:
    """Changes when the archive does: its files' count and newest modification time."""
    path = Path(archive)
    if not path.exists():
        return 0, 0.0
    if path.is_file():
        return path.stat().st_size, path.stat().st_mtime
    times = [f.stat().st_mtime for f in path.rglob("*.parquet")]
    return len(times), max(times, default=0.0)


Key = tuple[str, str, str | None, str | None, str]
"""A report asked for: kind, archive, since, until, rule."""


@dataclass
class Computed:
    stamp: tuple[int, float]  # the archive's version it was computed on
    value: dict[str, Any] | None = None
    error: str | None = None
    at: float = 0.0


class Reports:
    """Reports over the archive, computed on one background thread, one at a time (DuckDB
    and Polars use every core already):

    - a page asks; if the report is not ready within a moment it says it is computing, and
      fills in the moment it is;
    - when the archive gains files, the last result is served while the new one computes;
    - as soon as the app first runs, the reports every page shows by default are queued
      behind whatever a page asks for, so a user's next page is usually ready; they start a
      moment after a page's report is done, while the page draws it."""

    DEFAULTS = ("migration", "energy", "uptime", "reservations", "monitoring", "afir", "sessions")
    DRAW = 1.0
    """Seconds the background reports wait after a page's report, while the page draws it
    (at 10 M records the Energy page's first visit drew in 1.2 s beside the next report, 0.8 s
    alone)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: dict[Key, Computed] = {}
        self.queued: dict[Key, tuple[tuple[int, float], int]] = {}  # the version asked for, at what priority
        self.jobs: queue.PriorityQueue[tuple[int, int, Key, tuple[int, float]]] = queue.PriorityQueue()
        self.order = itertools.count()
        self.stopping = False
        self.drawing = 0.0  # until then, background reports leave the cores to the page just answered
        self.thread = threading.Thread(target=self._work, name="twin-reports", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def close(self) -> None:
        """At exit: drop what is queued and let the running report finish (a process that
        ends under a running DuckDB query aborts)."""
        self.stopping = True
        self.jobs.put((-1, -1, ("", "", None, None, ""), (0, 0.0)))  # wake the thread
        self.thread.join(timeout=600)

    def ask(self, key: Key, stamp: tuple[int, float], wait: float, urgent: bool = True) -> Computed | None:
        """The freshest result for ``key`` (perhaps of an older archive version), or None
        while its first computation runs."""
        with self.lock:
            known = self.done.get(key)
            priority = 0 if urgent else 1
            waiting = self.queued.get(key)
            # a page's ask overtakes the same report queued in the background (the older entry
            # then finds it done and is skipped)
            if (known is None or known.stamp != stamp) and (waiting is None or waiting[0] != stamp
                                                              or waiting[1] > priority):  # fmt: skip
                self.queued[key] = (stamp, priority)
                self.jobs.put((priority, next(self.order), key, stamp))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self.lock:
                known = self.done.get(key)
                if known is not None and known.stamp == stamp:
                    return known
            time.sleep(0.05)
        with self.lock:
            return self.done.get(key)

    def prewarm(self, archive: str, stamp: tuple[int, float]) -> None:
        for kind in self.DEFAULTS:
            self.ask((kind, archive, None, None, "nevi"), stamp, wait=0, urgent=False)

    def _work(self) -> None:
        from twin.analytics.reports import report as compute

        while True:
            priority, order, key, stamp = self.jobs.get()
            if self.stopping:
                return
            if priority and time.monotonic() < self.drawing:  # back in its place, behind any new ask
                self.jobs.put((priority, order, key, stamp))
                time.sleep(0.05)
                continue
            with self.lock:
                waiting = self.queued.get(key)
                if waiting is None or waiting[0] != stamp:
                    continue  # superseded by a newer version of the archive, or computed already
            kind, archive, since, until, rule = key
            result = Computed(stamp, at=time.time())
            try:
                result.value = compute(kind, archive, since, until, rule=rule)[0]
            except Exception as exc:  # shown on the page: a bad window, a broken archive
                result.error = f"{type(exc).__name__}: {exc}"
            with self.lock:
                self.done[key] = result
                self.queued.pop(key, None)
            if not priority:
                self.drawing = time.monotonic() + self.DRAW


@st.cache_resource
def reports() -> Reports:
    """One report computer per app process, shared by every session."""
    return Reports()


def report(kind: str, since: str | None = None, until: str | None = None, rule: str = "nevi",
           block: bool = True) -> dict[str, Any] | None:  # fmt: skip
    """A report's document (as ``twin report KIND --json`` gives it).

    Without an archive the page says so and stops there. While the report's first
    computation runs, the page says so and waits for it (``block=False``: None at once, and
    the page goes on without it; :func:`pending` brings it in when it is ready)."""
    archive = source().archive
    stamp = version(archive)
    if not stamp[0]:  # no archive (yet): see has_archive
        if not block:
            return None
        st.info(absent(archive))
        st.stop()
    computer = reports()
    key = (kind, archive, since, until, rule)
    computer.ask(key, stamp, wait=0)  # queued first: ahead of the defaults
    computer.prewarm(archive, stamp)
    result = computer.ask(key, stamp, wait=0.5 if block else 0.0)
    if result is None and not block:
        return None
    if result is None:
        # the page says what it waits for, and goes on the moment the report lands (a sleep
        # and a rerun cost up to a second more); each update of the note lets Streamlit stop
        # the script when the user leaves the page
        note, began = st.empty(), time.monotonic()
        while result is None:
            note.info(f"Computing the {kind} report over `{archive}` ... {time.monotonic() - began:.0f} s")
            result = computer.ask(key, stamp, wait=1.0)
        note.empty()
    if result.error:
        st.error(f"The {kind} report failed: {result.error}")
        if block:
            st.stop()
        return None
    if result.stamp != stamp and block:
        st.caption(f"The {kind} report as of {time.strftime('%H:%M:%S', time.localtime(result.at))}; "
                   "the archive has grown since and it is being computed again.")  # fmt: skip
    return result.value


def pending(kind: str, since: str | None = None, until: str | None = None, rule: str = "nevi") -> None:
    """After ``report(..., block=False)`` gave None: while the report computes, say so and run
    the page again the moment it is done (a fragment looks every second; AppTest runs it
    once). A report that failed is not pending: ``report`` showed why."""
    archive = source().archive
    key, stamp = (kind, archive, since, until, rule), version(archive)
    if reports().ask(key, stamp, wait=0) is not None:
        return

    @st.fragment(run_every=1.0)
    def waiting() -> None:
        if reports().ask(key, stamp, wait=0) is not None:
            st.rerun()
        st.caption(f"Computing the {kind} report ... it appears here when it is ready.")

    waiting()


@st.cache_data(show_spinner=False, max_entries=8)
def _inventory(archive: str, mtime: float) -> dict[str, dict[str, Any]]:  # mtime: a new file, a new answer
    from twin.analytics.migration import inventory_of

    return inventory_of(archive)


def inventory() -> dict[str, dict[str, Any]]:
    """The stations' inventory (pool, coordinates, power) when the archive has one."""
    from twin.captures import inventory_path

    archive = source().archive
    path = inventory_path(archive)
    return _inventory(archive, path.stat().st_mtime) if path.exists() else {}


@st.cache_data(show_spinner="folding the station's records ...", max_entries=32)
def _archived_twin(archive: str, stamp: tuple[int, float], station: str) -> dict[str, Any] | None:
    from twin import captures, fold

    twins = fold.fold(captures.read(archive, stations=[station]))
    return fold.public(twins[station]) if station in twins else None


def twin(station: str) -> tuple[dict[str, Any] | None, str]:
    """The station's twin, live from the API, else folded from the archive; and which."""
    answer, _ = live(f"/v1/stations/{station}")
    if answer is not None:
        return answer, "live"
    archive = source().archive
    stamp = version(archive)
    if not stamp[0]:
        return None, "none"
    return _archived_twin(archive, stamp, station), "archive"


def recent_frames(station: str, limit: int = 50) -> tuple[list[dict[str, Any]], str]:
    answer, _ = live(f"/v1/stations/{station}/frames?limit={limit}")
    if answer is not None:
        return answer["frames"], "live"
    if not has_archive():
        return [], "none"
    from twin.analytics.frames import recent

    return recent(source().archive, station, limit), "archive"


def station_ids() -> list[str]:
    """Every station the live API or the archive knows."""
    rows, _ = live("/v1/stations")
    ids = {r["station_id"] for r in rows["stations"]} if rows else set()
    ids |= set(inventory())
    if not ids and has_archive():
        migration = report("migration", block=False)
        ids = {r["station_id"] for r in (migration or {}).get("stations", [])}
    return sorted(ids)


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def header(title: str, live_data: bool = True) -> bool:
    """The page's title and what it shows; True when the live API answers."""
    st.title(title)
    return status(live_data)


def status(live_data: bool = True) -> bool:
    """What the page shows: live twins, the archive, or the archive alone (and why)."""
    src = source()
    summary, problem = live("/v1/fleet/summary") if live_data else (None, None)
    history = f"history from the archive `{src.archive}`" if has_archive() else absent(src.archive, short=True)
    if not live_data:
        st.caption(history[0].upper() + history[1:] + ".")
    elif summary is not None:
        st.caption(f"Live from {src.api} ({summary['stations']} stations); {history}.")
    else:
        st.warning(f"The live API is not reachable ({problem}). This page shows what the log says, not the "
                   f"stations' state now: {history}.")  # fmt: skip
    return summary is not None


def window() -> tuple[str | None, str | None]:
    """A --from / --to choice in the sidebar (empty: the whole archive)."""
    with st.sidebar:
        since = st.text_input("From (UTC, ISO)", key="since", placeholder="e.g. 2026-03-02")
        until = st.text_input("To (UTC, ISO, exclusive)", key="until", placeholder="e.g. 2026-03-04")
    return since.strip() or None, until.strip() or None


# -- who is looking (a token in the session) ------------------------------------------------------

TOKEN = "twin_token"
"""The session's key for the token its user signed in with."""
DOOR = "twin_door"
"""The session's key for whether the dashboard asks for a token (and since when it knows)."""


def token_header() -> dict[str, str]:
    """The session's token for the API (none outside a session, or before signing in)."""
    try:
        token = st.session_state.get(TOKEN)
    except Exception:  # no script run (a background thread)
        token = None
    return {"Authorization": f"Bearer {token}"} if token else {}


@st.cache_resource
def _store(path: str) -> Any:
    from twin.tokens import TokenStore

    return TokenStore(path)


def token_store() -> Any:
    """The token store the dashboard checks tokens against (``TWIN_API_TOKENS``; ``twin up``
    sets it), read again when it changes; None without one."""
    from twin.tokens import store_path

    path = store_path()
    return _store(str(path)) if path else None


def guarded() -> bool:
    """Whether the dashboard asks for a token before it shows anything: it has a token store,
    or the API it reads wants a token (asked every 10 s until it does; from then on for the
    session's life)."""
    if token_store() is not None:
        return True
    known = st.session_state.get(DOOR)
    if known is not None and (known[0] or time.monotonic() - known[1] < 10):
        return bool(known[0])
    try:
        with urllib.request.urlopen(source().api + "/v1/whoami", timeout=TIMEOUT):
            wanted = False
    except urllib.error.HTTPError as exc:
        wanted = exc.code == 401
    except (urllib.error.URLError, OSError):
        wanted = False
    st.session_state[DOOR] = (wanted, time.monotonic())
    return wanted


def identify(token: str) -> dict[str, str] | None:
    """``{"name", "role"}`` of a token: from the store, else from the API's /v1/whoami."""
    from twin.tokens import TokenError, find

    token = token.strip()
    if not token:
        return None
    store = token_store()
    if store is not None:
        try:
            entry = find(store.entries(), token)
        except TokenError:
            return None
        return {"name": entry.name, "role": entry.role} if entry else None
    request = urllib.request.Request(source().api + "/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            body = orjson.loads(response.read())
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError):
        return None
    return {"name": str(body.get("name")), "role": str(body.get("role"))} if body.get("role") else None


def caller() -> dict[str, str] | None:
    """Who signed in this session (checked again on every run: a revoked token is out at once)."""
    token = st.session_state.get(TOKEN)
    return identify(token) if token else None


def may(role: str) -> bool:
    """Whether the session's user may do what ``role`` may (everyone, at an open door)."""
    from twin.tokens import allows

    if not guarded():
        return True
    me = caller()
    return me is not None and allows(me["role"], role)


def act(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A change through the API with the session's token (a command, a token): its status and
    answer (0 and why when the API did not answer)."""
    data = orjson.dumps(body) if body is not None else None
    headers = {**token_header(), **({"Content-Type": "application/json"} if data else {})}
    request = urllib.request.Request(source().api + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, orjson.loads(exc.read())
        except orjson.JSONDecodeError:
            return exc.code, {"error": f"{exc.code} {exc.reason}"}
    except (urllib.error.URLError, OSError) as exc:
        return 0, {"error": f"no answer from {source().api} ({getattr(exc, 'reason', exc)})"}

