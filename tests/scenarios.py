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
