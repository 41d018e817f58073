"""What the pages read: the live API (asked afresh on every run) and the archive's reports
(cached, and computed again when the archive gains files)."""

from __future__ import annotations

import os
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


def live(path: str) -> tuple[Any, str | None]:
    """The API's answer to ``path``, or None and why not."""
    url = source().api + path
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return orjson.loads(response.read()), None
    except urllib.error.HTTPError as exc:
        try:
            return None, str(orjson.loads(exc.read()).get("error", exc.reason))
        except (orjson.JSONDecodeError, AttributeError):
            return None, f"{exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError) as exc:
        return None, f"no answer from {source().api} ({getattr(exc, 'reason', exc)})"


def has_archive() -> bool:
    return Path(source().archive).exists()


def version(archive: str) -> tuple[int, float]:
    """Changes when the archive does: its files' count and newest modification time."""
    path = Path(archive)
    if not path.exists():
        return 0, 0.0
    if path.is_file():
        return path.stat().st_size, path.stat().st_mtime
    times = [f.stat().st_mtime for f in path.rglob("*.parquet")]
    return len(times), max(times, default=0.0)


@st.cache_data(show_spinner="computing the report ...", max_entries=64)
def _report(kind: str, archive: str, stamp: tuple[int, float], since: str | None, until: str | None,
            rule: str) -> dict[str, Any]:  # fmt: skip
    from twin.analytics.reports import report as compute

    return compute(kind, archive, since, until, rule=rule)[0]


def report(kind: str, since: str | None = None, until: str | None = None, rule: str = "nevi") -> dict[str, Any] | None:
    """A report's document (as ``twin report KIND --json`` gives it), or None without an archive."""
    archive = source().archive
    if not has_archive():
        return None
    return _report(kind, archive, version(archive), since, until, rule)


@st.cache_data(show_spinner=False, max_entries=8)
def _inventory(archive: str, stamp: tuple[int, float]) -> dict[str, dict[str, Any]]:
    from twin.analytics.migration import inventory_of

    return inventory_of(archive)


def inventory() -> dict[str, dict[str, Any]]:
    """The stations' inventory (pool, coordinates, power) when the archive has one."""
    archive = source().archive
    return _inventory(archive, version(archive)) if has_archive() else {}


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
    if not has_archive():
        return None, "none"
    return _archived_twin(archive, version(archive), station), "archive"


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
        migration = report("migration")
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
    where = f"archive `{src.archive}`" if has_archive() else f"no archive at `{src.archive}` yet"
    if not live_data:
        st.caption(f"From the {where}.")
    elif summary is not None:
        st.caption(f"Live from {src.api} ({summary['stations']} stations); history from the {where}.")
    else:
        st.warning(f"The live API is not reachable ({problem}). This page shows the {where} only: "
                   "what the log says, not the stations' state now.")  # fmt: skip
    return summary is not None


def window() -> tuple[str | None, str | None]:
    """A --from / --to choice in the sidebar (empty: the whole archive)."""
    with st.sidebar:
        since = st.text_input("From (UTC, ISO)", key="since", placeholder="e.g. 2026-03-02")
        until = st.text_input("To (UTC, ISO, exclusive)", key="until", placeholder="e.g. 2026-03-04")
    return since.strip() or None, until.strip() or None
