"""A charging station's side of OCPP 2.1 tariffs, as the simulated stations play it: the
tariffs it holds, its answers to SetDefaultTariff, ChangeTransactionTariff, ClearTariffs and
GetTariffs, and the cost it computes locally for TransactionEvent.costDetails with the same
price function as the twin (:func:`twin.cost.session_cost`).

What a station cannot do is part of the play: a station ``simple`` (the simulator makes
every fifth one so) supports no price conditions and answers ConditionNotSupported; each EVSE
holds at most :data:`MAX_TARIFFS`; a tariff id already held with other content is a
DuplicateTariffId; a transaction's tariff keeps its currency (NoCurrencyChange).

Its clock's zone is UTC until the CSMS sets ``ClockCtrlr.TimeZone`` (SetVariables): the
times of day of its tariffs are read in it, as the twin reads them from the same exchange.
A station without local cost keeps what the CSMS tells it: each running total (CostUpdated,
TransactionEventResponse.totalCost) and, for a transaction that has ended, the final one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from twin.cost import Sample, reading, session_cost
from twin.tariffs import CLOCK_ZONE, COMPONENTS, DEFAULT_ZONE, Tariff, TariffError, check, in_force, known_zone

MAX_TARIFFS = 4
"""Default tariffs an EVSE holds (each with its validFrom)."""


def has_conditions(tariff: dict[str, Any]) -> bool:
    return any(p.get("conditions") for name in COMPONENTS for p in (tariff.get(name) or {}).get("prices", ()))


@dataclass
class Session:
    start: datetime
    register_wh: float  # the import register at the start
    tariffs: list[tuple[datetime | None, Tariff]]
    samples: list[Sample] = field(default_factory=list)


@dataclass
class StationTariffs:
    evses: int
    simple: bool = False  # supports no price conditions
    local_cost: bool = True  # False: no costDetails, the CSMS computes the cost (CostUpdated)
    held: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # EVSE (0: all) -> tariffs
    sessions: dict[str, Session] = field(default_factory=dict)  # transaction id -> its session
    time_zone: str = DEFAULT_ZONE  # ClockCtrlr.TimeZone
    running: set[str] = field(default_factory=set)  # transaction ids
    told: dict[str, float] = field(default_factory=dict)  # transaction id -> the CSMS's last total
    final: dict[str, float] = field(default_factory=dict)  # transaction id -> the CSMS's total after it ended

    # -- the CSMS's calls ------------------------------------------------------------------------
    def _refuse(self, tariff: Any) -> tuple[str, str] | None:
        try:
            check(tariff)
        except TariffError as exc:
            return "Rejected", str(exc)[:500]
        if self.simple and has_conditions(tariff):
            return "ConditionNotSupported", "this station prices without conditions"
        return None

    def set_default(self, request: dict[str, Any]) -> dict[str, Any]:
        tariff, evse = request.get("tariff") or {}, int(request.get("evseId", 0))
        refused = self._refuse(tariff)
        if refused is None and not 0 <= evse <= self.evses:
            refused = "Rejected", f"the station has EVSEs 1 to {self.evses}"
        if refused is not None:
            return _status(*refused)
        held = self.held.get(evse, [])
        same = [t for t in held if t.get("tariffId") == tariff.get("tariffId")]
        if same and same[0] != tariff:
            return _status("DuplicateTariffId", f"tariff {tariff.get('tariffId')} is held with other prices")
        kept = [t for t in held if t.get("tariffId") != tariff.get("tariffId")]
        if len(kept) >= MAX_TARIFFS:
            return _status("TooManyElements", f"an EVSE holds at most {MAX_TARIFFS} tariffs")
        self.held[evse] = [*kept, tariff]
        return {"status": "Accepted"}

    def change(self, request: dict[str, Any], at: datetime) -> dict[str, Any]:
        tariff, session = request.get("tariff") or {}, self.sessions.get(str(request.get("transactionId")))
        if session is None:
            return _status("TxNotFound", f"no transaction {request.get('transactionId')} running")
        refused = self._refuse(tariff)
        if refused is not None:
            return _status(*refused)
        if session.tariffs and session.tariffs[-1][1].get("currency") != tariff.get("currency"):
            return _status("NoCurrencyChange", "a transaction's tariff keeps its currency")
        session.tariffs.append((at, tariff))
        return {"status": "Accepted"}

    def clear(self, request: dict[str, Any]) -> dict[str, Any]:
        ids, evse = request.get("tariffIds"), request.get("evseId")
        results = []
        for n in list(self.held):
            if evse is not None and n != evse:
                continue
            for t in list(self.held[n]):
                if ids is None or t.get("tariffId") in ids:
                    self.held[n].remove(t)
                    results.append({"tariffId": t["tariffId"], "status": "Accepted"})
        return {"clearTariffsResult": results or [{"status": "NoTariff"}]}

    def get(self, request: dict[str, Any]) -> dict[str, Any]:
        evse = int(request.get("evseId", 0))
        by_id: dict[str, dict[str, Any]] = {}
        for n, tariffs in sorted(self.held.items()):
            if evse not in (0, n) and n != 0:
                continue
            for t in tariffs:
                a = by_id.setdefault(t["tariffId"], {"tariffId": t["tariffId"], "tariffKind": "DefaultTariff",
                                                     "evseIds": []})  # fmt: skip
                a["evseIds"].append(n)
                if t.get("validFrom"):
                    a["validFrom"] = t["validFrom"]
        for session in self.sessions.values():
            if len(session.tariffs) > 1:
                driver = session.tariffs[-1][1]
                by_id.setdefault(driver["tariffId"], {"tariffId": driver["tariffId"], "tariffKind": "DriverTariff"})
        if not by_id:
            return {"status": "NoTariff"}
        return {"status": "Accepted", "tariffAssignments": list(by_id.values())}

    def set_variables(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """SetVariables of ``ClockCtrlr.TimeZone``: Accepted for a zone the station knows
        (IANA), else Rejected; None when the request sets nothing of the clock's zone."""
        results, mine = [], False
        for d in request.get("setVariableData") or ():
            names = ((d.get("component") or {}).get("name"), (d.get("variable") or {}).get("name"))
            status = "Accepted"
            if names == CLOCK_ZONE and d.get("attributeType", "Actual") == "Actual":
                mine, zone = True, known_zone(d.get("attributeValue"))
                if zone is None:
                    status = "Rejected"
                else:
                    self.time_zone = zone
            result = {"attributeStatus": status, "component": d.get("component"), "variable": d.get("variable")}
            if "attributeType" in d:
                result["attributeType"] = d["attributeType"]
            results.append(result)
        return {"setVariableResult": results} if mine else None

    def told_cost(self, tx: str, total: Any, ended: bool = False) -> bool:
        """The CSMS's total of a transaction (CostUpdated, TransactionEventResponse.totalCost):
        kept, and as its final cost when the transaction has ended. Whether it was final."""
        if not isinstance(total, int | float) or isinstance(total, bool):
            return False
        self.told[tx] = float(total)
        final = ended or tx not in self.running
        if final:
            self.final[tx] = float(total)
        while len(self.told) > 64:
            del self.told[next(iter(self.told))]
        while len(self.final) > 64:
            del self.final[next(iter(self.final))]
        return final

    # -- local cost ------------------------------------------------------------------------------
    def cost(self, evse: int, payload: dict[str, Any]) -> None:
        """Add ``costDetails`` to a TransactionEvent the station is about to send (its meter
        readings are the session's samples: the CSMS can work the same cost out of the log),
        in the station's time zone."""
        tx = str((payload.get("transactionInfo") or {}).get("transactionId"))
        if payload.get("eventType") == "Ended":
            self.running.discard(tx)
        else:
            self.running.add(tx)
        if not self.local_cost:
            return
        at = _instant(payload["timestamp"])
        found = reading(payload)
        register = None if found is None else (found[1], found[2])
        if payload.get("eventType") == "Started":
            tariff = in_force(self.held.get(evse) or self.held.get(0) or [], at)
            if tariff is None:
                return
            self.sessions[tx] = Session(at, register[0] if register else 0.0, [(None, tariff)])
        session = self.sessions.get(tx)
        if session is None:
            return
        if found is not None and register is not None and payload.get("eventType") != "Started":
            session.samples.append(Sample(_instant(found[0]), register[0] - session.register_wh, register[1]))
        cost = session_cost(session.tariffs, session.start, session.samples, end=at, tz=self.time_zone)
        payload["costDetails"] = cost.cost_details()
        if payload.get("eventType") == "Ended":
            del self.sessions[tx]


_REASON = {"Rejected": "InvalidValue", "ConditionNotSupported": "UnsupportedParam"}  # reasonCode: 20 characters


def _status(status: str, why: str) -> dict[str, Any]:
    return {"status": status, "statusInfo": {"reasonCode": _REASON.get(status, status), "additionalInfo": why[:1024]}}


def _instant(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC)
