"""Scenarios, written once: scripts of frames, as stations and a CSMS would exchange them.

``Script`` writes the envelopes the gateway would record (``conn_id``, ``seq``, answers
correlated), so a scenario can be folded directly, or driven through the live pipeline
and ``twin rebuild`` and compared (issue 3's three-way suite)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from twin import envelope, ocpp_j

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
TRIGGERS = {"Started": "CablePluggedIn", "Ended": "EVCommunicationLost"}


class Script:
    def __init__(self, station: str, protocol: str = "ocpp2.1") -> None:
        self.station, self.protocol = station, protocol
        self.records: list[dict[str, Any]] = []
        self.clock = START
        self.ids = itertools.count(1)
        self.conn: str | None = None
        self.seq = 0

    def at(self, minutes: float) -> Script:
        self.clock = START + timedelta(minutes=minutes)
        return self

    @property
    def now(self) -> str:
        return envelope.iso_ms(self.clock.timestamp())

    def _push(self, record: dict[str, Any]) -> dict[str, Any]:
        self.records.append(record)
        self.clock += timedelta(milliseconds=5)
        return record

    def _frame(self, frame: ocpp_j.Frame, origin: str, error: str | None = None) -> dict[str, Any]:
        assert self.conn is not None, "connect first"
        self.seq += 1
        return self._push(envelope.of_frame(frame, station_id=self.station, origin=origin, protocol=self.protocol,
                                            conn_id=self.conn, seq=self.seq, ts=self.now, error=error))  # fmt: skip

    def lifecycle(self, action: str, payload: dict[str, Any]) -> Script:
        assert self.conn is not None
        self.seq += 1
        self._push(envelope.lifecycle(action, payload, station_id=self.station, protocol=self.protocol,
                                      conn_id=self.conn, seq=self.seq, ts=self.now))  # fmt: skip
        return self

    def connect(self, profile: int | None = None) -> Script:
        self.conn, self.seq = f"{self.station}-c{next(self.ids)}", 0
        return self.lifecycle(
            "Connected",
            {
                "subprotocol": self.protocol,
                "security_profile": profile,
                "remote_address": "127.0.0.1:1",
                "mode": "csms",
            },
        )

    def disconnect(self, code: int = 1006) -> Script:
        return self.lifecycle("Disconnected", {"code": code, "reason": ""})

    def cs(self, action: str, payload: dict[str, Any], answer: dict[str, Any] | None = None) -> Script:
        """A station-initiated CALL and its CALLRESULT."""
        msg_id = f"m{next(self.ids)}"
        self._frame(ocpp_j.call(msg_id, action, payload), "cs")
        self._frame(ocpp_j.result(msg_id, action, answer if answer is not None else {}), "csms")
        return self

    def csms(self, action: str, payload: dict[str, Any], answer: dict[str, Any]) -> Script:
        """A CSMS-initiated CALL and the station's CALLRESULT."""
        msg_id = f"m{next(self.ids)}"
        self._frame(ocpp_j.call(msg_id, action, payload), "csms")
        self._frame(ocpp_j.result(msg_id, action, answer), "cs")
        return self

    def send(self, action: str, payload: dict[str, Any]) -> Script:
        self._frame(ocpp_j.Frame(6, f"m{next(self.ids)}", action, payload), "cs")
        return self

    # -- common station behaviour ---------------------------------------------------------
    def boot(self, vendor: str = "Acme", model: str = "DC-150", reason: str = "PowerUp") -> Script:
        return self.cs("BootNotification",
                       {"reason": reason, "chargingStation": {"vendorName": vendor, "model": model,
                                                              "serialNumber": "SN-1", "firmwareVersion": "1.2.3"}},
                       {"currentTime": self.now, "interval": 1800, "status": "Accepted"})  # fmt: skip

    def status(self, evse: int, state: str, connector: int = 1) -> Script:
        return self.cs(
            "StatusNotification",
            {"timestamp": self.now, "connectorStatus": state, "evseId": evse, "connectorId": connector},
        )

    def tx(self, kind: str, tx_id: str, seq_no: int, evse: int | None = 1, *, imp: float | None = None,
           exp: float | None = None, p_imp: float | None = None, p_exp: float | None = None,
           reservation: int | None = None, offline: bool = False, ts: str | None = None,
           **info: Any) -> Script:  # fmt: skip
        values = [(imp, "Energy.Active.Import.Register"), (exp, "Energy.Active.Export.Register"),
                  (p_imp, "Power.Active.Import"), (p_exp, "Power.Active.Export")]  # fmt: skip
        sampled = [{"value": v, "measurand": m} for v, m in values if v is not None]
        payload: dict[str, Any] = {
            "eventType": kind, "timestamp": ts or self.now, "seqNo": seq_no,
            "triggerReason": TRIGGERS.get(kind, "MeterValuePeriodic"),
            "transactionInfo": {"transactionId": tx_id, **info},
        }  # fmt: skip
        if evse is not None:
            payload["evse"] = {"id": evse, "connectorId": 1}
        if sampled:
            payload["meterValue"] = [{"timestamp": ts or self.now, "sampledValue": sampled}]
        if reservation is not None:
            payload["reservationId"] = reservation
        if offline:
            payload["offline"] = True
        return self.cs("TransactionEvent", payload)


# -- the scenario suite: each a complete script and what its twin must show ------------------
RESERVE = {
    "id": 7,
    "expiryDateTime": "2026-03-01T09:00:00Z",
    "idToken": {"idToken": "TAG1", "type": "ISO14443"},
    "evseId": 1,
}
PROFILE = {
    "evseId": 1,
    "chargingProfile": {
        "id": 3, "stackLevel": 1, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
        "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 11000, "dischargeLimit": -7000, "operationMode": "ExternalLimits"}]}],
    },
}  # fmt: skip
MONITOR = {
    "value": 60,
    "type": "UpperThreshold",
    "severity": 2,
    "component": {"name": "EVSE"},
    "variable": {"name": "Temperature"},
}


def identity(protocol: str) -> Script:
    s = Script(f"SC-ID-{protocol[-3:].replace('.', '')}", protocol).connect().boot()
    return s.status(1, "Available").status(2, "Faulted").cs("Heartbeat", {}, {"currentTime": s.now}).disconnect(1000)


def v2g() -> Script:
    s = Script("SC-V2G").connect().boot().status(1, "Occupied")
    needs = {"requestedEnergyTransfer": "DC_BPT", "controlMode": "DynamicControl",
             "v2xChargingParameters": {"maxDischargePower": 10000, "targetSoC": 80}}  # fmt: skip
    s.cs("NotifyEVChargingNeeds", {"evseId": 1, "chargingNeeds": needs}, {"status": "Accepted"})
    s.tx("Started", "T1", 0, imp=1000, exp=500, p_imp=0, chargingState="EVConnected")
    s.tx("Updated", "T1", 1, imp=1300, exp=500, p_imp=11000, chargingState="Charging")
    s.csms("SetChargingProfile", PROFILE, {"status": "Accepted"})
    s.tx("Updated", "T1", 2, imp=1300, exp=900, p_exp=7000, operationMode="CentralSetpoint")
    return s


def reservations() -> Script:
    s = Script("SC-RES").connect().boot()
    s.csms("ReserveNow", RESERVE, {"status": "Accepted"})
    s.csms("ReserveNow", {**RESERVE, "id": 8}, {"status": "Accepted"})
    s.csms("ReserveNow", {**RESERVE, "id": 9}, {"status": "Occupied"})
    s.csms("ReserveNow", {**RESERVE, "id": 10}, {"status": "Accepted"})
    s.tx("Started", "T7", 0, imp=0, reservation=7)
    s.cs("ReservationStatusUpdate", {"reservationId": 8, "reservationUpdateStatus": "Expired"})
    return s.csms("CancelReservation", {"reservationId": 10}, {"status": "Accepted"})


def monitoring() -> Script:
    s = Script("SC-MON").connect().boot()
    s.csms("SetMonitoringBase", {"monitoringBase": "FactoryDefault"}, {"status": "Accepted"})
    result = {k: MONITOR[k] for k in ("type", "severity", "component", "variable")}
    s.csms(
        "SetVariableMonitoring",
        {"setMonitoringData": [MONITOR]},
        {"setMonitoringResult": [{"id": 4, "status": "Accepted", **result}]},
    )
    event = {
        "eventId": 1, "timestamp": s.now, "trigger": "Alerting", "actualValue": "71",
        "eventNotificationType": "CustomMonitor", "component": {"name": "EVSE"},
        "variable": {"name": "Temperature"}, "severity": 2, "variableMonitoringId": 4,
    }  # fmt: skip
    return s.cs("NotifyEvent", {"generatedAt": s.now, "seqNo": 0, "eventData": [event]})


def operations() -> Script:
    s = Script("SC-OPS").connect().boot()
    certificate = {"iso15118SchemaVersion": "urn:iso:std:iso:15118:-20:AC", "action": "Install", "exiRequest": "AA=="}
    s.cs("Get15118EVCertificate", certificate, {"status": "Accepted", "exiResponse": ""})
    s.cs("SecurityEventNotification", {"type": "InvalidCsmsCertificate", "timestamp": s.now})
    s.cs("FirmwareStatusNotification", {"status": "Installed", "requestId": 3})
    s.csms("SetDefaultTariff", {"evseId": 1, "tariff": {"tariffId": "T-A", "currency": "EUR"}}, {"status": "Accepted"})
    s.send("NotifyPeriodicEventStream", {"id": 1, "pending": 0, "basetime": s.now, "data": [{"t": 0, "v": "11.5"}]})
    return s.cs("NotifyDERAlarm", {"controlType": "FreqDroop", "timestamp": s.now})


def _expect_identity(t: dict[str, Any]) -> None:
    assert t["identity"]["vendor"] == "Acme" and t["identity"]["boot_status"] == "Accepted"
    assert t["evses"]["1"]["status"] == "Available" and t["evses"]["2"]["status"] == "Faulted"
    assert t["connection"]["online"] is False


def _expect_v2g(t: dict[str, Any]) -> None:
    evse = t["evses"]["1"]
    assert evse["energy"]["direction"] == "discharging" and evse["energy"]["power_w"] == -7000
    assert evse["transaction"]["import_wh"] == 300 and evse["transaction"]["export_wh"] == 400
    assert evse["charging_needs"]["bidirectional"] and evse["profiles"]["3"]["discharge"]


def _expect_reservations(t: dict[str, Any]) -> None:
    statuses = {k: v["status"] for k, v in t["reservations"].items()}
    assert statuses == {"7": "used", "8": "expired", "9": "rejected", "10": "cancelled"}


def _expect_monitoring(t: dict[str, Any]) -> None:
    assert t["monitoring"]["base"] == "FactoryDefault" and "4" in t["monitoring"]["monitors"]
    assert t["monitoring"]["last_event"]["severity"] == 2


def _expect_operations(t: dict[str, Any]) -> None:
    assert t["certificates"]["iso15118"]["last_status"] == "Accepted" and t["security"]["events"] == 1
    assert t["firmware"]["status"] == "Installed" and t["tariffs"]["default"]["1"]["currency"] == "EUR"
    assert t["der"]["alarms"] == 1


SCENARIOS = {
    "identity-2.1": (lambda: identity("ocpp2.1"), _expect_identity),
    "identity-2.0.1": (lambda: identity("ocpp2.0.1"), _expect_identity),
    "v2g": (v2g, _expect_v2g),
    "reservations": (reservations, _expect_reservations),
    "monitoring": (monitoring, _expect_monitoring),
    "operations": (operations, _expect_operations),
}

MOMENT_KEYS = frozenset({
    "as_of", "last_seen", "connected_since", "booted_at", "made_at", "updated_at", "set_at", "received_at",
    "requested_at", "checked_at", "installed_at", "answered_at", "conn_id", "remote_address",
})  # fmt: skip
"""What a live run cannot share with a script: when the gateway captured things, and ids."""


def stable(value: Any) -> Any:
    """A twin without capture moments and connection ids: what a script and a live run of it
    must agree on."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in MOMENT_KEYS}
    return value


# -- tariffs and cost (issue 21): flat prices, so the live twin's as_of (now) prices alike ---------
FLAT_TARIFF = {"tariffId": "FLAT", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.35}],
                                                                 "taxRates": [{"type": "VAT", "tax": 20}]},
               "idleTime": {"prices": [{"priceMinute": 0.05}]}}  # fmt: skip


def tariff_costs() -> Script:
    s = Script("SC-TARIFF").connect().boot().status(1, "Available").status(2, "Available")
    clock = {"component": {"name": "ClockCtrlr"}, "variable": {"name": "TimeZone"}}
    s.csms("SetVariables", {"setVariableData": [{**clock, "attributeValue": "Europe/Vienna"}]},
           {"setVariableResult": [{**clock, "attributeStatus": "Accepted"}]})  # fmt: skip
    s.csms("SetDefaultTariff", {"evseId": 0, "tariff": FLAT_TARIFF}, {"status": "Accepted"})
    s.tx("Started", "T9", 0, imp=1000, chargingState="EVConnected")
    s.tx("Updated", "T9", 1, imp=2000)
    cost = {"totalCost": {"currency": "EUR", "typeOfCost": "NormalCost", "total": {"exclTax": 0.7, "inclTax": 0.84}},
            "totalUsage": {"energy": 2000, "chargingTime": 600, "idleTime": 0}}  # fmt: skip
    updated = {"eventType": "Updated", "timestamp": s.now, "seqNo": 2, "triggerReason": "MeterValuePeriodic",
               "transactionInfo": {"transactionId": "T9"}, "evse": {"id": 1, "connectorId": 1},
               "costDetails": cost}  # fmt: skip
    s.cs("TransactionEvent", updated)
    driver = {"tariffId": "DRIVER", "currency": "EUR", "energy": {"prices": [{"priceKwh": 0.2}]}}
    s.csms("ChangeTransactionTariff", {"transactionId": "T9", "tariff": driver}, {"status": "Accepted"})
    return s.csms("CostUpdated", {"transactionId": "T9", "totalCost": 0.9}, {})


def _expect_tariff_costs(t: dict[str, Any]) -> None:
    e1, e2 = t["evses"]["1"], t["evses"]["2"]
    assert e1["tariff"]["source"] == "driver" and e1["tariff"]["price_now"]["energy_per_kwh"] == 0.2
    assert e2["tariff"]["price_now"] == {"energy_per_kwh": 0.35, "energy_per_kwh_incl_tax": 0.42,
                                         "time_per_min": None, "fixed_fee": None, "idle_per_min": 0.05}  # fmt: skip
    assert e1["transaction"]["cost"]["source"] == "central" and e1["transaction"]["cost"]["total_incl_tax"] == 0.9
    assert [x["tariff"]["tariffId"] for x in e1["transaction"]["tariffs"].values()] == ["FLAT", "DRIVER"]
    assert t["tariffs"]["time_zone"] == "Europe/Vienna" and e1["transaction"]["readings"][0][1] == 1000.0


SCENARIOS["tariffs"] = (tariff_costs, _expect_tariff_costs)
