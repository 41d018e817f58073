"""OCPI 2.2.1 Sessions and CDRs from the archive and the live twins.

A session is a transaction: the archive's (``twin.analytics.tariffs.tariffs_report``: one
row per transaction with its energy, the tariff in force and its cost recomputed from it)
and the twins' running ones (``evses.{id}.transaction``), the twin's copy winning for the
same id. A CDR is an ended session. Cost: the station's or the CSMS's reported cost where
the log has one, else recomputed from the tariff in force (excluding tax). Token: the
eMSP's where the transaction is roaming (:func:`roaming`: a START_SESSION of that eMSP
started it, ``COMMAND``; or its id token is a token that eMSP sent us, ``WHITELIST``), else
ours with type ``RFID`` (``AUTH_REQUEST``: it was authorised here).

A Session or CDR belongs to the eMSP of its token (:func:`owner`): that eMSP alone reads it
(GET) and is sent it (push); sessions of our own tokens go to no eMSP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from twin.publish import locations as loc
from twin.publish.party import Party, latest, parse


def _hours(start: str, end: str | None) -> float:
    if not end:
        return 0.0
    return round(max((parse(end) - parse(start)).total_seconds(), 0.0) / 3600, 4)


def rows(archive: Iterable[Mapping[str, Any]], twins: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per transaction: ``transaction_id, station_id, evse_id, started_at, ended_at,
    energy_kwh, cost, currency, id_token, updated_at``, the live twins' over the archive's."""
    out: dict[str, dict[str, Any]] = {}
    for r in archive:
        cost = r.get("reported") if r.get("reported") is not None else r.get("recomputed_excl_tax")
        out[str(r["transaction_id"])] = {
            "transaction_id": str(r["transaction_id"]), "station_id": r["station_id"], "evse_id": r.get("evse_id"),
            "started_at": r["started_at"], "ended_at": r.get("ended_at"), "energy_kwh": r.get("energy_kwh") or 0.0,
            "cost": cost, "currency": r.get("currency") or "EUR", "id_token": None,
            "updated_at": r.get("ended_at") or r["started_at"],
        }  # fmt: skip
    for station_id, twin in twins.items():
        for n, evse in (twin.get("evses") or {}).items():
            tx = evse.get("transaction")
            if not tx or not tx.get("id") or not tx.get("started_at"):
                continue
            cost = tx.get("cost") or {}
            total = cost.get("total_excl_tax") if cost.get("total_excl_tax") is not None else cost.get("total_incl_tax")
            price = ((evse.get("tariff") or {}).get("price_now") or {}).get("energy_per_kwh")
            kwh = round(float(tx.get("import_wh") or 0) / 1000, 4)
            known = out.get(str(tx["id"]), {})
            if total is None:
                total = (
                    known.get("cost")
                    if known.get("cost") is not None
                    else (round(kwh * price, 4) if isinstance(price, int | float) else None)
                )
            ended = tx.get("ended_at") if tx.get("state") == "ended" else None
            out[str(tx["id"])] = {
                "transaction_id": str(tx["id"]), "station_id": station_id, "evse_id": int(n),
                "started_at": tx["started_at"], "ended_at": ended, "energy_kwh": kwh, "cost": total,
                "currency": cost.get("currency") or (evse.get("tariff") or {}).get("currency") or known.get(
                    "currency") or "EUR",
                "id_token": tx.get("id_token"),
                "updated_at": latest(ended, (evse.get("energy") or {}).get("meter_ts"), tx["started_at"],
                                     twin.get("as_of") if not ended else None) or tx["started_at"],
            }  # fmt: skip
    return sorted(out.values(), key=lambda r: (r["started_at"], r["transaction_id"]))


def roaming(rows_: Iterable[Mapping[str, Any]], started: Mapping[str, Mapping[str, Any]],
            tokens: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each roaming transaction's eMSP token, with its ``auth_method``. ``started``: by
    transaction id, the tokens of START_SESSIONs that began them (matched by remoteStartId);
    ``tokens``: by uid, the tokens eMSPs sent with their commands (the latest for a uid)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows_:
        tx = str(r["transaction_id"])
        if tx in started:
            out[tx] = {**started[tx], "auth_method": started[tx].get("auth_method") or "COMMAND"}
        elif r.get("id_token") is not None and str(r["id_token"]) in tokens:
            out[tx] = {**tokens[str(r["id_token"])], "auth_method": "WHITELIST"}
    return out


def owner(obj: Mapping[str, Any]) -> str:
    """``CC*PID`` of the eMSP a Session or CDR belongs to: its token's party."""
    token = obj.get("cdr_token") or {}
    return f"{token.get('country_code')}*{token.get('party_id')}".upper()


def _token(party: Party, row: Mapping[str, Any], roaming: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    started = roaming.get(row["transaction_id"])
    if started:
        return {
            "country_code": started["country_code"],
            "party_id": started["party_id"],
            "uid": started["uid"],
            "type": started.get("type") or "APP_USER",
            "contract_id": started.get("contract_id") or started["uid"],
        }
    uid = str(row.get("id_token") or f"LOCAL-{row['station_id']}")
    return {"country_code": party.country_code, "party_id": party.party_id, "uid": uid[:36], "type": "RFID",
            "contract_id": uid[:36]}  # fmt: skip


def _auth(row: Mapping[str, Any], roaming: Mapping[str, Mapping[str, Any]]) -> str:
    started = roaming.get(row["transaction_id"])
    return str(started.get("auth_method") or "COMMAND") if started else "AUTH_REQUEST"


def _where(refs: Mapping[tuple[str, str], loc.EvseRef], row: Mapping[str, Any]) -> loc.EvseRef | None:
    key = loc.uid(str(row["station_id"]), row.get("evse_id") or 1)
    return next((r for (_, u), r in refs.items() if u == key), None)


def session(party: Party, row: Mapping[str, Any], ref: loc.EvseRef | None,
            roaming: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {
        "country_code": party.country_code,
        "party_id": party.party_id,
        "id": row["transaction_id"],
        "start_date_time": row["started_at"],
        "kwh": float(row["energy_kwh"] or 0.0),
        "cdr_token": _token(party, row, roaming),
        "auth_method": _auth(row, roaming),
        "location_id": ref.location_id if ref else str(row["station_id"]),
        "evse_uid": ref.uid if ref else loc.uid(str(row["station_id"]), row.get("evse_id") or 1),
        "connector_id": "1",
        "currency": row["currency"],
        "status": "COMPLETED" if row["ended_at"] else "ACTIVE",
        "last_updated": row["updated_at"],
    }
    if row["ended_at"]:
        out["end_date_time"] = row["ended_at"]
    if row["cost"] is not None:
        out["total_cost"] = {"excl_vat": round(float(row["cost"]), 4)}
    return out


def sessions(party: Party, rows_: Iterable[Mapping[str, Any]], inventory: Iterable[Mapping[str, Any]],
             roaming: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:  # fmt: skip
    refs = loc.index(inventory)
    return [session(party, r, _where(refs, r), roaming) for r in rows_]


def cdr(party: Party, row: Mapping[str, Any], ref: loc.EvseRef | None,
        roaming: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:  # fmt: skip
    station = (ref.row if ref else {}) or {}
    address = station.get("address") or {}
    connector = loc.connector(station, None, "1", row["ended_at"]) if station else {}
    hours = _hours(row["started_at"], row["ended_at"])
    kwh = float(row["energy_kwh"] or 0.0)
    where: dict[str, Any] = {
        "id": ref.location_id if ref else str(row["station_id"]),
        "name": str(station.get("pool_name") or row["station_id"]),
        "address": str(address.get("street") or "unknown"),
        "city": str(address.get("city") or "unknown"),
        "country": loc.ALPHA3.get(str(address.get("country") or ""), "NLD"),
        "coordinates": loc.coordinates(float(station.get("lat") or 0), float(station.get("lon") or 0)),
        "evse_uid": ref.uid if ref else loc.uid(str(row["station_id"]), row.get("evse_id") or 1),
        "evse_id": loc.evse_id(party, str(row["station_id"]), row.get("evse_id") or 1),
        "connector_id": "1",
        "connector_standard": connector.get("standard", "IEC_62196_T2"),
        "connector_format": connector.get("format", "SOCKET"),
        "connector_power_type": connector.get("power_type", "AC_3_PHASE"),
    }
    if address.get("postal_code"):
        where["postal_code"] = str(address["postal_code"])
    return {
        "country_code": party.country_code,
        "party_id": party.party_id,
        "id": row["transaction_id"],
        "start_date_time": row["started_at"],
        "end_date_time": row["ended_at"],
        "session_id": row["transaction_id"],
        "cdr_token": _token(party, row, roaming),
        "auth_method": _auth(row, roaming),
        "cdr_location": where,
        "currency": row["currency"],
        "charging_periods": [{"start_date_time": row["started_at"],
                              "dimensions": [{"type": "ENERGY", "volume": kwh}, {"type": "TIME", "volume": hours}]}],
        "total_cost": {"excl_vat": round(float(row["cost"] or 0.0), 4)},
        "total_energy": kwh,
        "total_time": hours,
        "last_updated": row["ended_at"],
    }  # fmt: skip


def cdrs(party: Party, rows_: Iterable[Mapping[str, Any]], inventory: Iterable[Mapping[str, Any]],
         roaming: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:  # fmt: skip
    refs = loc.index(inventory)
    return [cdr(party, r, _where(refs, r), roaming) for r in rows_ if r["ended_at"]]
