"""One simulated station, day by day: what it and its CSMS say to each other, as the exchanges
a gateway in csms mode would capture.

A day is planned in three layers. First what stops charging (faults, with their repair),
then sessions on each EVSE around them (reservations, ISO 15118 and V2G included), then
station-wide events at idle moments (reboots, firmware updates) and at any moment
(connection outages, monitoring and security events). The exchanges planned go to the
station's ``wire`` (``twin.simulator.wire``), which writes them as the gateway would have:
in time order, one outstanding CALL per direction, outages dropping all but the queued
TransactionEvents.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from twin import envelope
from twin.gateway.responder import minimal
from twin.simulator.fleet import Station
from twin.simulator.wire import Wire

DAY_MS = 86_400_000
WH, W, PERCENT = {"unit": "Wh"}, {"unit": "W"}, {"unit": "Percent"}  # shared: payloads are never changed
MIN_MS = 60_000

# hourly weights of session arrivals (share of the day's arrivals starting in each hour):
# a morning and an evening peak, few at night
AC_HOURS = (1, 0.5, 0.3, 0.3, 0.5, 1, 3, 6, 8, 7, 6, 5, 5, 5, 5, 5, 6, 8, 9, 8, 6, 4, 3, 2)
DC_HOURS = (1, 0.5, 0.5, 0.5, 0.5, 1, 2, 4, 6, 7, 7, 8, 9, 8, 8, 8, 9, 9, 8, 6, 5, 4, 3, 2)


@dataclass(frozen=True)
class Rates:
    """What happens how often. The defaults give a small run (about a dozen stations over two
    days) every kind of event at least once; see datasets/README.md for the calibration."""

    ac_sessions_per_evse_day: float = 2.2
    dc_sessions_per_evse_day: float = 6.0
    ac_kwh_median: float = 9.0
    dc_kwh_median: float = 25.0
    reservation_share: float = 0.15  # sessions that reserved ahead
    iso15118_share: float = 0.4  # sessions with ISO 15118 on capable stations
    v2g_share: float = 0.5  # sessions on bidirectional stations that discharge
    fault_per_day: float = 0.08
    outage_per_day: float = 0.15
    reboot_per_day: float = 0.04
    firmware_per_day: float = 0.02
    monitor_event_per_day: float = 0.3
    security_event_per_day: float = 0.05
    meter_interval_s: int = 60  # TransactionEvent Updated while charging
    clock_interval_s: int = 900  # clock-aligned MeterValues
    heartbeat_s: int = 1800


class StationSim:
    def __init__(self, station: Station, rates: Rates, seed: int, start_ms: int, opening: bool = False) -> None:
        self.s, self.rates = station, rates
        self.opening = opening
        """Live runs: a car arrives at the first EVSE soon after boot, and the showcase session
        comes within the first hour instead of at the evening peak: a demo moves at once."""
        self.rng = random.Random(f"station:{seed}:{station.index}")
        self.start = start_ms
        self.v21 = station.protocol == "ocpp2.1"
        self.outages: list[tuple[int, int]] = []  # [down, up) in ms
        self.faults: dict[int, list[tuple[int, int]]] = {}
        self.busy: dict[int, int] = dict.fromkeys(range(1, station.evses + 1), start_ms)  # evse -> free from
        self.visits: dict[int, list[tuple[int, int]]] = {evse: [] for evse in range(1, station.evses + 1)}
        """Each EVSE's cars, ``[arrived, bay free)`` in ms, in order."""
        self.busy_spans: list[tuple[int, int]] = []
        self.import_wh = dict.fromkeys(range(1, station.evses + 1), float(self.rng.randint(100_000, 9_000_000)))
        self.export_wh = dict.fromkeys(range(1, station.evses + 1), 0.0)
        self.tx_count = 0
        self.reservation_id = 0
        self.request_id = 0
        self.event_id = 0
        self.firmware = station.firmware
        self.showcase: set[str] = set()
        self.wire = Wire(station, self.rng)

    # -- building blocks ----------------------------------------------------------------------
    def cs(self, t: float, action: str, payload: dict[str, Any], answer: dict[str, Any] | None = None) -> None:
        self.wire.add(int(t), "cs", action, payload, answer if answer is not None else self._answer(action))

    def csms(self, t: float, action: str, payload: dict[str, Any], answer: dict[str, Any] | None = None) -> None:
        self.wire.add(int(t), "csms", action, payload, answer if answer is not None else {"status": "Accepted"})

    def _answer(self, action: str) -> dict[str, Any]:
        return _minimal(self.s.protocol, action)

    def iso(self, t: float) -> str:
        return envelope.iso_of_ms(int(t))

    # -- the day's plan -----------------------------------------------------------------------
    def plan_day(self, day: int) -> None:
        t0 = self.start + day * DAY_MS
        if day == 0:
            self.connect(t0 + self.rng.randint(0, 10 * MIN_MS), "PowerUp", first=True)
        for evse in range(1, self.s.evses + 1):
            self.plan_sessions(day, t0, evse)
        self.plan_faults(day, t0)  # after the day's cars: a fault takes a bay when no car is in it
        self.plan_station_events(day, t0)
        self.plan_periodic(t0)

    def connect(self, t: int, reason: str | None, first: bool = False) -> None:
        """A connection; with ``reason``, after a boot: BootNotification and the statuses."""
        self.wire.add(t, "gateway", "Connected", {}, None)
        if reason is None:
            return
        s = self.s
        boot = {
            "reason": reason,
            "chargingStation": {
                "model": s.model,
                "vendorName": s.vendor,
                "serialNumber": s.serial,
                "firmwareVersion": self.firmware,
            },
        }
        accepted = {"currentTime": self.iso(t + 250), "interval": self.rates.heartbeat_s, "status": "Accepted"}
        self.cs(t + 200, "BootNotification", boot, accepted)
        self.cs(t + 400, "SecurityEventNotification", {"type": "StartupOfTheDevice", "timestamp": self.iso(t + 400)})
        for evse in range(1, s.evses + 1):
            status = "Faulted" if self.faulted(evse, t) else "Available"
            payload = {"timestamp": self.iso(t + 500), "connectorStatus": status, "evseId": evse, "connectorId": 1}
            self.cs(t + 500 + evse, "StatusNotification", payload)
        if first:
            self.csms(t + 2_000, "SetMonitoringBase", {"monitoringBase": "All"})
            monitor = {"value": 70, "type": "UpperThreshold", "severity": 4,
                       "component": {"name": "ChargingStation"}, "variable": {"name": "Temperature"}}  # fmt: skip
            result = {k: monitor[k] for k in ("type", "severity", "component", "variable")}
            self.csms(t + 3_000, "SetVariableMonitoring", {"setMonitoringData": [monitor]},
                      {"setMonitoringResult": [{"id": 1, "status": "Accepted", **result}]})  # fmt: skip
            if self.v21:
                tariff = {"tariffId": f"AC-{self.s.max_kw:g}" if self.s.kind == "AC" else f"DC-{self.s.max_kw:g}",
                          "currency": "EUR", "energy": {"prices": [{"priceKwh": self.price()}]}}  # fmt: skip
                for evse in range(1, s.evses + 1):
                    self.csms(t + 4_000 + evse, "SetDefaultTariff", {"evseId": evse, "tariff": tariff})
            if s.iso15118:
                self.certificate_status(t + 6_000)
                csr = {"csr": "-----BEGIN CERTIFICATE REQUEST-----MIIB-----END CERTIFICATE REQUEST-----",
                       "certificateType": "V2GCertificate"}  # fmt: skip
                self.cs(t + 8_000, "SignCertificate", csr, {"status": "Accepted"})
                chain = "-----BEGIN CERTIFICATE-----MIIC-----END CERTIFICATE-----"
                self.csms(t + 40_000, "CertificateSigned", {"certificateChain": chain,
                                                            "certificateType": "V2GCertificate"})  # fmt: skip

    def price(self) -> float:
        return 0.59 if self.s.kind == "DC" else 0.39

    def certificate_status(self, t: int) -> None:
        ocsp = {"hashAlgorithm": "SHA256", "issuerNameHash": "a" * 64, "issuerKeyHash": "b" * 64,
                "serialNumber": "1A2B", "responderURL": "http://ocsp.example.eu"}  # fmt: skip
        self.cs(t, "GetCertificateStatus", {"ocspRequestData": ocsp}, {"status": "Accepted", "ocspResult": "MEQ="})

    def faulted(self, evse: int, t: int) -> bool:
        return any(a <= t < b for a, b in self.faults.get(evse, ()))

    def events(self, rate: float, kind: str, day: int) -> int:
        """How many events of a kind today: Poisson; and one on day 0 at the showcase station."""
        n = _poisson(self.rng, rate)
        if day == 0 and kind in self.showcase:
            n = max(n, 1)
        return n

    def plan_faults(self, day: int, t0: int) -> None:
        """The day's connector faults, each while its bay is empty: one that would come while a
        car is there (or another fault) comes 5 minutes after the bay is free."""
        for _ in range(self.events(self.rates.fault_per_day, "fault", day)):
            evse = self.rng.randint(1, self.s.evses)
            down = t0 + self.rng.randint(6 * 60, 20 * 60) * MIN_MS
            lasts = int(self.rng.uniform(30, 240) * MIN_MS)
            taken = sorted(self.visits[evse] + self.faults.get(evse, []))
            for arrived, free in taken:
                if arrived < down + lasts and down < free:
                    down = free + 5 * MIN_MS
            up = down + lasts
            self.faults.setdefault(evse, []).append((down, up))
            self.busy_spans.append((down, up))
            status = {"timestamp": self.iso(down), "connectorStatus": "Faulted", "evseId": evse, "connectorId": 1}
            self.cs(down, "StatusNotification", status)
            self.notify_event(down + 100, "Connector", "Problem", "true", 1, evse, trigger="Delta")
            status = {**status, "timestamp": self.iso(up), "connectorStatus": "Available"}
            self.cs(up, "StatusNotification", status)

    def notify_event(self, t: int, component: str, variable: str, value: str, severity: int, evse: int | None = None,
                     trigger: str = "Alerting", monitor: int | None = None) -> None:  # fmt: skip
        self.event_id += 1
        data: dict[str, Any] = {"eventId": self.event_id, "timestamp": self.iso(t), "trigger": trigger,
                                "actualValue": value, "eventNotificationType": "HardWiredMonitor",
                                "component": {"name": component}, "variable": {"name": variable}}  # fmt: skip
        if evse is not None:
            data["component"]["evse"] = {"id": evse}
        if self.v21:
            data["severity"] = severity
        if monitor is not None:
            data["eventNotificationType"], data["variableMonitoringId"] = "CustomMonitor", monitor
        self.cs(t, "NotifyEvent", {"generatedAt": self.iso(t), "seqNo": 0, "eventData": [data]})

    # -- sessions -----------------------------------------------------------------------------
    def plan_sessions(self, day: int, t0: int, evse: int) -> None:
        s, r = self.s, self.rates
        rate = r.dc_sessions_per_evse_day if s.kind == "DC" else r.ac_sessions_per_evse_day
        hours = DC_HOURS if s.kind == "DC" else AC_HOURS
        arrivals = sorted(
            t0 + int((h + self.rng.random()) * 3_600_000)
            for h in self.rng.choices(range(24), weights=hours, k=_poisson(self.rng, rate))
        )
        showcase = "v2g" in self.showcase or "reservation" in self.showcase
        special = t0 + (50 * MIN_MS if self.opening else 17 * 3_600_000)  # the evening peak, or at once
        if day == 0 and evse == 1 and showcase:
            arrivals = sorted({*arrivals, special})
        elif day == 0 and evse == 1 and self.opening:
            arrivals = sorted({*arrivals, t0 + self.rng.randint(12, 20) * MIN_MS})
        for arrive in arrivals:
            if arrive < self.busy[evse] or self.faulted(evse, arrive):
                continue  # occupied or out of order: the driver goes elsewhere
            self.busy[evse] = self.session(arrive, evse, showcase and day == 0 and arrive == special)
            self.visits[evse].append((arrive, self.busy[evse]))

    def session(self, arrive: int, evse: int, showcase: bool) -> int:
        """One visit; returns when the bay is free again."""
        s, r, rng = self.s, self.rates, self.rng
        self.tx_count += 1
        tx = f"{s.station_id}-T{self.tx_count}"
        dc = s.kind == "DC"
        kwh = rng.lognormvariate(math.log(r.dc_kwh_median if dc else r.ac_kwh_median), 0.5)
        kwh = min(kwh, 90.0)
        power_kw = min(s.max_kw, rng.choice((50, 100, 150, 200, 250)) if dc else rng.choice((7.4, 11, 11, 22)))
        power_kw *= 0.85 if dc else 0.97  # DC tapers: the average is below the peak
        iso15118 = s.iso15118 and (showcase or rng.random() < r.iso15118_share)
        v2g = s.bidirectional and (showcase and "v2g" in self.showcase or rng.random() < r.v2g_share)
        reserved = showcase and "reservation" in self.showcase or rng.random() < r.reservation_share
        soc = float(rng.randint(10, 50))
        capacity = rng.choice((50, 64, 77, 82))
        t = arrive
        reservation = None
        if reserved:
            reservation = self.reserve(arrive - rng.randint(10, 40) * MIN_MS, evse, "used")
        status = {"timestamp": self.iso(t), "connectorStatus": "Occupied", "evseId": evse, "connectorId": 1}
        self.cs(t, "StatusNotification", status)
        id_token = {"idToken": f"04{rng.getrandbits(48):012X}", "type": "ISO14443"}
        if iso15118:
            id_token = {"idToken": f"EMAID{rng.getrandbits(40):010X}", "type": "eMAID"}
            if rng.random() < 0.1 or showcase:
                schema = "urn:iso:std:iso:15118:-20:DC" if dc else "urn:iso:std:iso:15118:-20:AC"
                cert = {"iso15118SchemaVersion": schema, "action": "Install", "exiRequest": "gAA="}
                self.cs(t + 800, "Get15118EVCertificate", cert, {"status": "Accepted", "exiResponse": "gAA="})
        else:
            self.cs(t + 1_000, "Authorize", {"idToken": id_token}, {"idTokenInfo": {"status": "Accepted"}})
        seq_no = 0
        started = t + 2_000
        info: dict[str, Any] = {"transactionId": tx, "chargingState": "EVConnected"}
        start = {"eventType": "Started", "timestamp": self.iso(started), "triggerReason": "Authorized",
                 "seqNo": seq_no, "transactionInfo": info, "idToken": id_token, "evse": {"id": evse, "connectorId": 1},
                 "meterValue": [self.meter(started, evse, 0.0, soc if iso15118 else None)]}  # fmt: skip
        if reservation is not None:
            start["reservationId"] = reservation
        self.cs(started, "TransactionEvent", start, {"idTokenInfo": {"status": "Accepted"}})
        if iso15118:
            needs: dict[str, Any] = {
                "requestedEnergyTransfer": s.transfer_mode,
                "departureTime": self.iso(started + rng.randint(30, 300) * MIN_MS),
            }
            if self.v21:
                needs["controlMode"] = "DynamicControl" if v2g else "ScheduledControl"
            if v2g and self.v21:
                needs["v2xChargingParameters"] = {
                    "maxChargePower": power_kw * 1000, "maxDischargePower": power_kw * 800,
                    "targetSoC": 80, "evMinV2XEnergyRequest": 5000,
                }  # fmt: skip
            self.cs(started + 500, "NotifyEVChargingNeeds", {"evseId": evse, "chargingNeeds": needs},
                    {"status": "Accepted"})  # fmt: skip
        # the energy curve: charge, (V2G: discharge in the evening window, charge again)
        charge_ms = int(kwh / power_kw * 3_600_000)
        discharge_ms = 0
        discharge_kw = 0.0
        if v2g:
            discharge_ms = rng.randint(30, 90) * MIN_MS
            discharge_kw = round(power_kw * rng.uniform(0.4, 0.8), 1)
            first = max(charge_ms // 2, 5 * MIN_MS)
            profile = {"id": 100 + self.tx_count, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
                       "chargingProfileKind": "Relative", "transactionId": tx,
                       "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [
                           {"startPeriod": 0, "limit": power_kw * 1000, "operationMode": "ChargingOnly"},
                           {"startPeriod": first // 1000, "limit": power_kw * 1000, "setpoint": -discharge_kw * 1000,
                            "dischargeLimit": -discharge_kw * 1000, "operationMode": "CentralSetpoint"},
                           {"startPeriod": (first + discharge_ms) // 1000, "limit": power_kw * 1000,
                            "operationMode": "ChargingOnly"}]}]}  # fmt: skip
            self.csms(started + 60_000, "SetChargingProfile", {"evseId": evse, "chargingProfile": profile})
            phases = [(first, power_kw), (discharge_ms, -discharge_kw), (charge_ms - first, power_kw)]
        else:
            phases = [(charge_ms, power_kw)]
        stream = self.v21 and dc
        if stream:
            self.cs(started + 1_500, "OpenPeriodicEventStream",
                    {"constantStreamData": {"id": self.tx_count, "variableMonitoringId": 1,
                                            "params": {"interval": 60, "values": 5}}},
                    {"status": "Accepted"})  # fmt: skip
        t = started
        interval = r.meter_interval_s * 1000
        delivered = 0.0
        for length, kw in phases:
            end = t + max(length, 0)
            while t + interval <= end:
                t += interval
                wh = kw * interval / 3_600
                if wh >= 0:
                    self.import_wh[evse] += wh
                    delivered += wh
                else:
                    self.export_wh[evse] += -wh
                soc = min(100, soc + wh / 10 / capacity)
                seq_no += 1
                state = {"transactionId": tx, "chargingState": "Charging"}
                if v2g:
                    state["operationMode"] = "CentralSetpoint" if kw < 0 else "ChargingOnly"
                update = {"eventType": "Updated", "timestamp": self.iso(t), "triggerReason": "MeterValuePeriodic",
                          "seqNo": seq_no, "transactionInfo": state,
                          "meterValue": [self.meter(t, evse, kw, soc if iso15118 else None)]}  # fmt: skip
                self.cs(t, "TransactionEvent", update)
                if stream and seq_no % 5 == 0:
                    data = [{"t": i * 60, "v": f"{kw:.1f}"} for i in range(5)]
                    stream_msg = {"id": self.tx_count, "pending": 0, "basetime": self.iso(t - 300_000), "data": data}
                    self.wire.add(t + 300, "cs", "NotifyPeriodicEventStream", stream_msg, None)
        cost = round(delivered / 1000 * self.price(), 2)
        self.csms(t + 20_000, "CostUpdated", {"totalCost": cost, "transactionId": tx}, {})
        # the EV is full: suspended until the driver comes back
        idle_ms = int(rng.expovariate(1 / (8 * MIN_MS if dc else 90 * MIN_MS)))
        seq_no += 1
        suspended = {"eventType": "Updated", "timestamp": self.iso(t + 30_000), "triggerReason": "ChargingStateChanged",
                     "seqNo": seq_no, "transactionInfo": {"transactionId": tx, "chargingState": "SuspendedEV"},
                     "meterValue": [self.meter(t + 30_000, evse, 0.0, None)]}  # fmt: skip
        self.cs(t + 30_000, "TransactionEvent", suspended)
        leave = t + 60_000 + idle_ms
        seq_no += 1
        ended = {"eventType": "Ended", "timestamp": self.iso(leave), "triggerReason": "EVCommunicationLost",
                 "seqNo": seq_no, "transactionInfo": {"transactionId": tx, "chargingState": "Idle",
                                                      "stoppedReason": "EVDisconnected"},
                 "meterValue": [self.meter(leave, evse, 0.0, None)]}  # fmt: skip
        self.cs(leave, "TransactionEvent", ended)
        status = {
            "timestamp": self.iso(leave + 1_000),
            "connectorStatus": "Available",
            "evseId": evse,
            "connectorId": 1,
        }
        self.cs(leave + 1_000, "StatusNotification", status)
        self.busy_spans.append((arrive, leave + 1_000))
        return leave + 1_000

    def meter(self, t: int, evse: int, kw: float, soc: float | None) -> dict[str, Any]:
        values: list[dict[str, Any]] = [
            {"value": round(self.import_wh[evse], 1), "measurand": "Energy.Active.Import.Register",
             "unitOfMeasure": WH},
            {"value": round(kw * 1000, 1) if kw > 0 else 0.0, "measurand": "Power.Active.Import",
             "unitOfMeasure": W},
        ]  # fmt: skip
        if self.s.bidirectional:
            values.append({"value": round(self.export_wh[evse], 1), "measurand": "Energy.Active.Export.Register",
                           "unitOfMeasure": WH})  # fmt: skip
            values.append({"value": round(-kw * 1000, 1) if kw < 0 else 0.0, "measurand": "Power.Active.Export",
                           "unitOfMeasure": W})  # fmt: skip
        if soc is not None:
            values.append({"value": round(soc, 1), "measurand": "SoC", "unitOfMeasure": PERCENT})
        return {"timestamp": self.iso(t), "sampledValue": values}

    def reserve(self, t: int, evse: int, outcome: str) -> int:
        self.reservation_id += 1
        rid = self.s.index * 10_000 + self.reservation_id
        expiry = t + 45 * MIN_MS
        payload = {"id": rid, "expiryDateTime": self.iso(expiry), "evseId": evse,
                   "idToken": {"idToken": f"APP{rid}", "type": "Central"}}  # fmt: skip
        if outcome == "rejected":
            self.csms(t, "ReserveNow", payload, {"status": "Occupied"})
            return rid
        self.csms(t, "ReserveNow", payload)
        if outcome == "expired":
            self.cs(expiry, "ReservationStatusUpdate", {"reservationId": rid, "reservationUpdateStatus": "Expired"})
        elif outcome == "cancelled":
            self.csms(t + self.rng.randint(2, 30) * MIN_MS, "CancelReservation", {"reservationId": rid})
        return rid

    # -- station-wide -------------------------------------------------------------------------
    def idle_at(self, t: int, span: int) -> bool:
        return all(b <= t or a >= t + span for a, b in self.busy_spans) and all(
            b <= t or a >= t + span for a, b in self.outages
        )

    def plan_station_events(self, day: int, t0: int) -> None:
        rng, r = self.rng, self.rates
        for outcome in ("expired", "cancelled", "rejected"):  # reservations nobody used
            for _ in range(self.events(r.ac_sessions_per_evse_day * r.reservation_share / 6, outcome, day)):
                self.reserve(t0 + rng.randint(7 * 60, 21 * 60) * MIN_MS, rng.randint(1, self.s.evses), outcome)
        for _ in range(self.events(r.outage_per_day, "outage", day)):
            down = t0 + rng.randint(0, 23 * 60) * MIN_MS
            up = down + int(rng.uniform(5, 90) * MIN_MS)
            if any(a < up and down < b for a, b in self.outages):
                continue
            self.outages.append((down, up))
            self.wire.add(down, "gateway", "Disconnected", {"code": 1006, "reason": ""}, None)
            self.connect(up, None)
        for _ in range(self.events(r.reboot_per_day, "reboot", day)):
            t = t0 + rng.randint(60, 23 * 60) * MIN_MS
            if self.idle_at(t, 5 * MIN_MS):
                self.reboot(t, rng.choice(("RemoteReset", "Watchdog", "PowerUp")))
        for _ in range(self.events(r.firmware_per_day, "firmware", day)):
            t = t0 + rng.randint(2 * 60, 4 * 60) * MIN_MS
            if self.idle_at(t, 20 * MIN_MS):
                self.firmware_update(t)
        for _ in range(self.events(r.monitor_event_per_day, "monitor", day)):
            t = t0 + rng.randint(11 * 60, 17 * 60) * MIN_MS
            self.notify_event(t, "ChargingStation", "Temperature", str(rng.randint(71, 80)), 4, monitor=1)
        for _ in range(self.events(r.security_event_per_day, "security", day)):
            t = t0 + rng.randint(0, 24 * 60 - 1) * MIN_MS
            kind = rng.choice(("TamperDetectionActivated", "InvalidFirmwareSignature", "SettingSystemTime"))
            self.cs(t, "SecurityEventNotification", {"type": kind, "timestamp": self.iso(t)})
        if self.s.iso15118 and day % 7 == 6:
            self.certificate_status(t0 + rng.randint(0, 24 * 60 - 1) * MIN_MS)

    def reboot(self, t: int, reason: str) -> None:
        self.wire.add(t, "gateway", "Disconnected", {"code": 1000, "reason": "reboot"}, None)
        self.outages.append((t, t + 90_000))
        self.busy_spans.append((t, t + 90_000))
        self.connect(t + 90_000, reason)

    def firmware_update(self, t: int) -> None:
        self.request_id += 1
        rid = self.request_id
        major, minor, patch = (int(x) for x in self.firmware.split("."))
        new = f"{major}.{minor}.{patch + 1}"
        firmware = {"location": f"https://firmware.example.eu/{self.s.vendor}/{new}.bin",
                    "retrieveDateTime": self.iso(t)}  # fmt: skip
        self.csms(t, "UpdateFirmware", {"requestId": rid, "firmware": firmware})
        for i, status in enumerate(("Downloading", "Downloaded", "Installing")):
            self.cs(t + (i + 1) * 120_000, "FirmwareStatusNotification", {"status": status, "requestId": rid})
        self.firmware = new
        self.reboot(t + 8 * MIN_MS, "FirmwareUpdate")
        self.cs(t + 8 * MIN_MS + 95_000, "FirmwareStatusNotification", {"status": "Installed", "requestId": rid})

    def plan_periodic(self, t0: int) -> None:
        r = self.rates
        offset = self.s.index * 7_919 % 60_000  # stations do not beat in step
        for t in range(t0 + offset, t0 + DAY_MS, r.heartbeat_s * 1000):
            self.cs(t, "Heartbeat", {}, {"currentTime": self.iso(t + 20)})
        step = r.clock_interval_s * 1000
        for t in range(t0 + step, t0 + DAY_MS + 1, step):
            values = [{"value": round(sum(self.import_wh.values()), 1), "measurand": "Energy.Active.Import.Register",
                       "context": "Sample.Clock", "unitOfMeasure": WH}]  # fmt: skip
            self.cs(
                t + 5, "MeterValues", {"evseId": 0, "meterValue": [{"timestamp": self.iso(t), "sampledValue": values}]}
            )

_MINIMAL: dict[tuple[str, str], dict[str, Any]] = {}


def _minimal(protocol: str, action: str) -> dict[str, Any]:
    key = (protocol, action)
    if key not in _MINIMAL:
        _MINIMAL[key] = minimal(protocol, action)
    return _MINIMAL[key]


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
