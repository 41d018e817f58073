"""What a live CSMS knows of each EV plugged in at a site, from the twins alone: its
transaction, what it asked for in NotifyEVChargingNeeds (energy, departure, V2X limits) or,
when it asked nothing, the stated defaults; and whether its EVSE obeys profiles. Never a
future arrival. Pure: the controller and the tests call it with twins and a moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from twin.control.planner import Demand
from twin.envelope import parse_ts
from twin.sites import Site

AC_VOLTS, AC_PHASES = 230.0, 3
NOT_OBEYED = ("Rejected", "Error", "Timeout", "Undelivered")


@dataclass(frozen=True, slots=True)
class Defaults:
    """What the controller assumes of an EV that sent no charging needs."""

    energy_kwh: float = 20.0
    stay_h: float = 4.0
    max_kw: float = 22.0
    """When neither the EV nor the inventory says what an EVSE can give."""


DEFAULTS = Defaults()


@dataclass(frozen=True, slots=True)
class Need:
    """One plugged-in EV as the controller plans it."""

    station_id: str
    evse_id: int
    transaction_id: str
    protocol: str
    demand: Demand
    departure: datetime
    source: str
    """``needs`` (NotifyEVChargingNeeds) or ``default``."""
    obeys: bool
    """False once its EVSE rejected, failed or never answered a profile in this session."""
    profile_status: str | None

    @property
    def key(self) -> str:
        return self.demand.key


def key_of(station_id: str, evse_id: int | str) -> str:
    return f"{station_id}:{evse_id}"


def _watts(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None


def max_charge_kw(needs: Mapping[str, Any] | None, rated_kw: float | None, defaults: Defaults) -> float:
    """The EV's maximum charge power from its needs (V2X, DC or AC parameters), capped by the
    EVSE's rating from the inventory."""
    ev: float | None = None
    if needs:
        v2x, dc, ac = needs.get("v2x") or {}, needs.get("dc") or {}, needs.get("ac") or {}
        watts = _watts(v2x.get("maxChargePower")) or _watts(dc.get("evMaxPower"))
        if watts is None and _watts(ac.get("evMaxCurrent")):
            watts = float(ac["evMaxCurrent"]) * AC_VOLTS * AC_PHASES
        ev = watts / 1000 if watts else None
    limits = [kw for kw in (ev, rated_kw) if kw]
    return min(limits) if limits else defaults.max_kw


def _requested_wh(needs: Mapping[str, Any]) -> float | None:
    for part, key in (("v2x", "evTargetEnergyRequest"), ("dc", "energyAmount"), ("ac", "energyAmount")):
        value = (needs.get(part) or {}).get(key)
        if isinstance(value, int | float) and value >= 0:
            return float(value)
    return None


def plugged(site: Site, twins: Mapping[str, Mapping[str, Any]], now: datetime,
            inventory: Mapping[str, Mapping[str, Any]], defaults: Defaults = DEFAULTS) -> list[Need]:  # fmt: skip
    """Every EV in a running transaction at an online station of the site."""
    out = []
    for station_id in site.stations:
        twin = twins.get(station_id) or {}
        if not (twin.get("connection") or {}).get("online"):
            continue
        listed = inventory.get(station_id) or {}
        protocol = str(twin.get("protocol") or listed.get("protocol") or "ocpp2.1")
        for evse_key, evse in (twin.get("evses") or {}).items():
            tx = evse.get("transaction") or {}
            if not str(evse_key).isdigit() or evse_key == "0" or tx.get("state") not in ("started", "updated"):
                continue
            out.append(_need(station_id, int(evse_key), evse, tx, protocol, listed, now, defaults))
    return out


def _need(station_id: str, evse_id: int, evse: Mapping[str, Any], tx: Mapping[str, Any], protocol: str,
          listed: Mapping[str, Any], now: datetime, defaults: Defaults) -> Need:  # fmt: skip
    started = _time(tx.get("started_at")) or now
    needs = evse.get("charging_needs")
    if needs and needs.get("transaction_id") not in (None, tx.get("id")):
        needs = None  # an earlier session's
    moved_kwh = (float(tx.get("import_wh") or 0) - float(tx.get("export_wh") or 0)) / 1000
    rated = listed.get("max_kw")
    max_kw = max_charge_kw(needs, float(rated) if isinstance(rated, int | float) else None, defaults)
    requested = _requested_wh(needs) if needs else None
    departure = _time((needs or {}).get("departure_time")) or started + timedelta(hours=defaults.stay_h)
    energy = (requested / 1000 if requested is not None else defaults.energy_kwh) - moved_kwh
    v2x = (needs or {}).get("v2x") or {}
    minimum = float(v2x.get("evMinEnergyRequest") or 0) / 1000 - moved_kwh
    discharge = 0.0
    bidirectional = bool((needs or {}).get("bidirectional")) and listed.get("bidirectional", True) is not False
    if protocol == "ocpp2.1" and bidirectional:
        discharge = (_watts(v2x.get("maxDischargePower")) or 0.0) / 1000
    floor = v2x.get("evMinV2XEnergyRequest")
    battery = max(0.0, moved_kwh) + (max(0.0, -float(floor)) / 1000 if isinstance(floor, int | float) else 0.0)
    status = evse.get("profile_status") or {}
    about = status.get("transaction_id")  # the gateway's receive time and the station's clock may differ
    this_session = about == tx.get("id") if about else (_time(status.get("answered_at")) or now) >= started
    obeys = not (status.get("status") in NOT_OBEYED and this_session)
    if about and about != tx.get("id"):
        status = {}  # an earlier session's answer
    key = key_of(station_id, evse_id)
    demand = Demand(key, max(0.0, energy), max(0.0, (departure - now).total_seconds()), max_kw,
                    discharge, max(0.0, min(minimum, energy)), battery)  # fmt: skip
    return Need(station_id, evse_id, str(tx.get("id")), protocol, demand, departure,
                "needs" if needs else "default", obeys, status.get("status"))  # fmt: skip


def _time(text: Any) -> datetime | None:
    """A station's time as an instant (one without a zone is UTC), or None."""
    try:
        moment = parse_ts(str(text)) if text else None
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment
