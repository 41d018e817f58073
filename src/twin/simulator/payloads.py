"""What a live simulated station says: the payloads of its StatusNotifications,
TransactionEvents, meter values and ISO 15118 charging needs, built from its EVSEs' state.
Pure, but for :func:`updated`, which numbers the event it builds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twin import envelope
from twin.simulator import ev as physics
from twin.simulator.ev import EV, FREE, EVState, Setting
from twin.simulator.fleet import Station
from twin.simulator.sessions import Visit

WH, W, PERCENT = {"unit": "Wh"}, {"unit": "W"}, {"unit": "Percent"}


def iso(t: float) -> str:
    return envelope.iso_of_ms(int(t * 1000))


@dataclass
class Evse:
    n: int
    import_wh: float  # the registers before the session in progress
    export_wh: float = 0.0
    status: str = "Available"
    visit: Visit | None = None
    ev: EV | None = None
    state: EVState | None = None
    setting: Setting = FREE
    tx_id: str | None = None
    tx_start: float | None = None
    seq_no: int = 0
    last_t: float = 0.0  # the EV's state is worked out up to here
    reported: str = ""  # the chargingState last sent
    queued: dict[str, Any] | None = None  # the last periodic TransactionEvent posted



def updated(station: Station, e: Evse, t: float) -> dict[str, Any]:
    assert e.state is not None
    e.seq_no += 1
    state = physics.charging_state(e.state)
    trigger = "MeterValuePeriodic" if state == e.reported else "ChargingStateChanged"
    e.reported = state
    info: dict[str, Any] = {"transactionId": e.tx_id, "chargingState": state}
    if station.protocol == "ocpp2.1" and station.bidirectional:
        info["operationMode"] = e.setting.mode
    return {"eventType": "Updated", "timestamp": iso(t), "triggerReason": trigger, "seqNo": e.seq_no,
            "transactionInfo": info, "meterValue": [meter(station, e, t)]}  # fmt: skip

def meter(station: Station, e: Evse, t: float, ended: bool = False) -> dict[str, Any]:
    st = e.state
    power = 0.0 if st is None or ended else st.power_w  # max(0.0, ...) below: never -0.0
    imported = e.import_wh + (st.imported_wh if st else 0.0)
    values: list[dict[str, Any]] = [
        {"value": round(imported, 1), "measurand": "Energy.Active.Import.Register", "unitOfMeasure": WH},
        {"value": round(max(0.0, power), 1), "measurand": "Power.Active.Import", "unitOfMeasure": W},
    ]
    if station.bidirectional:
        exported = e.export_wh + (st.exported_wh if st else 0.0)
        values += [
            {"value": round(exported, 1), "measurand": "Energy.Active.Export.Register", "unitOfMeasure": WH},
            {"value": round(max(0.0, -power), 1), "measurand": "Power.Active.Export", "unitOfMeasure": W},
        ]
    if st is not None and e.ev is not None:
        values.append({"value": round(st.soc(e.ev), 1), "measurand": "SoC", "unitOfMeasure": PERCENT})
    return {"timestamp": iso(t), "sampledValue": values}

def needs(station: Station, e: Evse, visit: Visit) -> dict[str, Any]:
    """ISO 15118's charging needs: the energy (Wh), the EV's limits and departure; V2X
    parameters from an EV that can discharge on a station that can take it."""
    assert e.ev is not None and e.state is not None
    ev, st, s = e.ev, e.state, station
    v2x = ev.max_discharge_w > 0
    mode = s.transfer_mode if v2x else ("DC" if s.kind == "DC" else "AC_three_phase")
    out: dict[str, Any] = {"requestedEnergyTransfer": mode, "departureTime": iso(visit.departure)}
    energy = round(st.need_wh)  # integers: OCPP 2.0.1 asks for them (2.1 takes any number)
    if s.kind == "AC":
        amps = round(ev.max_charge_w / physics.AC_VOLTS / physics.AC_PHASES)
        out["acChargingParameters"] = {"energyAmount": energy, "evMinCurrent": 6, "evMaxCurrent": amps,
                                         "evMaxVoltage": 400}  # fmt: skip
    else:
        out["dcChargingParameters"] = {
            "evMaxCurrent": round(ev.max_charge_w / physics.DC_VOLTS), "evMaxVoltage": 500,
            "evMaxPower": round(ev.max_charge_w), "energyAmount": energy,
            "stateOfCharge": min(100, max(0, round(st.soc(ev)))), "evEnergyCapacity": round(ev.battery_wh),
            "fullSoC": 100, "bulkSoC": 80}  # fmt: skip
    if s.protocol == "ocpp2.1":
        out["controlMode"] = "DynamicControl" if v2x else "ScheduledControl"
        if v2x:
            out["v2xChargingParameters"] = {
                "maxChargePower": ev.max_charge_w, "maxDischargePower": ev.max_discharge_w,
                "evMinEnergyRequest": round(energy / 2), "evTargetEnergyRequest": energy,
                "evMaxEnergyRequest": round(ev.battery_wh - st.stored_wh),
                "targetSoC": round(100 * st.target_wh / ev.battery_wh)}  # fmt: skip
    return out

def status(e: Evse, t: float) -> dict[str, Any]:
    return {"timestamp": iso(t), "connectorStatus": e.status,
            "evseId": e.n, "connectorId": 1}  # fmt: skip
