"""Safe mode: the limit in force while the VTN cannot be reached, as records the VEN writes
to ``grid.signals`` (so that :func:`twin.sites.limit_at` stays the one function that says
which limit is in force, live, rebuilt and in the reports).

The last accepted schedule holds until it ends; after it, the program's safe-mode limit
(GAC: its safe-mode event), else the site's static limit. So on an outage the VEN writes,
for each site with a safe-mode limit, an accepted ``IMPORT_CAPACITY_LIMIT`` record of
protocol ``safe-mode`` starting where the site's last accepted OpenADR limit ends (now, if
it had none), until further notice; when the VTN answers again it cancels it. A site without
a safe-mode limit needs no record: its static limit follows by itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from twin import envelope
from twin.grid.openadr import FOREVER_S, PROTOCOL, SAFE_MODE
from twin.sites import IMPORT_LIMIT, Site, latest

SAFE_PROTOCOL = "safe-mode"
HOLD_S = 365 * 86400.0
"""A safe-mode limit holds until the VTN answers again (then it is cancelled)."""


def _ts(moment: datetime) -> str:
    return envelope.iso_ms(moment.timestamp())


def safe_limit_kw(site: Site, signals: Sequence[Mapping[str, Any]]) -> float | None:
    """The site's safe-mode limit: the first interval of the newest accepted safe-mode event
    of its programs, if any."""
    mine = latest(x for x in signals if x.get("site_id") == site.site_id).values()
    found = [s for s in mine if s.get("payload_type") == SAFE_MODE and s.get("status") == "accepted"
             and s.get("intervals")]  # fmt: skip
    if not found:
        return None
    newest = max(found, key=lambda s: str(s.get("received_at") or ""))
    return float(newest["intervals"][0]["value"])


def schedule_end(site: Site, signals: Sequence[Mapping[str, Any]], now: datetime) -> datetime:
    """Where the site's accepted OpenADR import limits end; ``now`` without any. The end is
    taken in the schedule's own clock, not compared with ours: a simulated fleet's clock (and
    the VTN's events, in it) may run behind or ahead of the wall clock."""
    end: datetime | None = None
    for s in latest(x for x in signals if x.get("site_id") == site.site_id).values():
        if s.get("protocol") != PROTOCOL or s.get("status") != "accepted" or s.get("payload_type") != IMPORT_LIMIT:
            continue
        for interval in s.get("intervals") or ():
            start = datetime.fromisoformat(str(interval["start"]).replace("Z", "+00:00"))
            finish = start + timedelta(seconds=min(float(interval["duration_s"]), FOREVER_S))
            end = finish if end is None else max(end, finish)
    return end or now


def enter(site: Site, signals: Sequence[Mapping[str, Any]], now: datetime, reason: str) -> dict[str, Any] | None:
    """The safe-mode record for ``site`` as the VTN goes away at ``now``, or None where the
    static limit follows (no safe-mode limit known)."""
    kw = safe_limit_kw(site, signals)
    if kw is None:
        return None
    start = schedule_end(site, signals, now)
    return {
        "site_id": site.site_id, "ean": site.ean, "protocol": SAFE_PROTOCOL, "program_id": SAFE_PROTOCOL,
        "event_id": f"safe-mode-{int(now.timestamp() * 1000)}", "modification_number": 0,
        "payload_type": IMPORT_LIMIT, "unit": "KW", "currency": None,
        "intervals": [{"start": _ts(start), "duration_s": HOLD_S, "value": kw}],
        "received_at": _ts(now), "status": "accepted", "reason": reason,
    }  # fmt: skip


def leave(entered: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The VTN answers again: the safe-mode record, one version on, cancelled."""
    return {**entered, "modification_number": int(entered.get("modification_number") or 0) + 1,
            "received_at": _ts(now), "status": "cancelled", "reason": "the VTN answers again"}  # fmt: skip
