"""A charging station's side of OCPP 2.1 tariffs, as the simulated stations play it: the
tariffs it holds, its answers to SetDefaultTariff, ChangeTransactionTariff, ClearTariffs and
GetTariffs, and the cost it computes locally for TransactionEvent.costDetails with the same
price function as the twin (:func:`twin.cost.session_cost`).

What a station cannot do is part of the play: a station ``simple`` (the simulator makes
every fifth one so) supports no price conditions and answers ConditionNotSupported; each EVSE
holds at most :data:`MAX_TARIFFS`; a tariff id already held with other content is a
DuplicateTariffId; a transaction's tariff keeps its currency (NoCurrencyChange).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from twin.cost import Sample, session_cost
from twin.tariffs import COMPONENTS, Tariff, TariffError, check, in_force

MAX_TARIFFS = 4
"""Default tariffs an EVSE holds (each with its validFrom)."""
IMPORT = "Energy.Active.Import.Register"


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

    # -- local cost ------------------------------------------------------------------------------
    def cost(self, evse: int, payload: dict[str, Any]) -> None:
        """Add ``costDetails`` to a TransactionEvent the station is about to send (its meter
        readings are the session's samples: the CSMS can work the same cost out of the log)."""
        if not self.local_cost:
            return
        tx = str((payload.get("transactionInfo") or {}).get("transactionId"))
        at = _instant(payload["timestamp"])
        reading = _reading(payload)
        if payload.get("eventType") == "Started":
            tariff = in_force(self.held.get(evse) or self.held.get(0) or [], at)
            if tariff is None:
                return
            self.sessions[tx] = Session(at, reading[0] if reading else 0.0, [(None, tariff)])
        session = self.sessions.get(tx)
        if session is None:
            return
        if reading is not None and payload.get("eventType") != "Started":
            session.samples.append(Sample(at, reading[0] - session.register_wh, reading[1]))
        cost = session_cost(session.tariffs, session.start, session.samples, end=at)
        payload["costDetails"] = cost.cost_details()
        if payload.get("eventType") == "Ended":
            del self.sessions[tx]


_REASON = {"Rejected": "InvalidValue", "ConditionNotSupported": "UnsupportedParam"}  # reasonCode: 20 characters


def _status(status: str, why: str) -> dict[str, Any]:
    return {"status": status, "statusInfo": {"reasonCode": _REASON.get(status, status), "additionalInfo": why[:1024]}}


def _instant(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC)


def _reading(payload: dict[str, Any]) -> tuple[float, float | None] | None:
    """The import register (Wh) and import power (W) of a TransactionEvent's first meter value."""
    for mv in payload.get("meterValue") or ():
        values = {sv.get("measurand", IMPORT): float(sv["value"]) for sv in mv.get("sampledValue", ())
                  if "phase" not in sv}  # fmt: skip
        if IMPORT in values:
            return values[IMPORT], values.get("Power.Active.Import")
    return None
