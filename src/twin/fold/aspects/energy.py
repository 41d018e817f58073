"""Transactions and energy direction (TransactionEvent, MeterValues).

Direction, per DOMAIN.md: export register rising or export power above zero is
discharging (V2G); import register rising or import power above zero is charging; neither
is idle. ``energy`` holds the EVSE's latest register readings; ``transaction`` what this
session moved since it started. Offline events replayed late (``offline: true``, older
timestamps) never move the live readings backwards; gaps in ``seqNo`` are counted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from twin.fold.engine import Change, Event, on
from twin.messages import EXPORT, IMPORT, P_EXPORT, P_IMPORT, SOC

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCALE = {"Wh": 1.0, "kWh": 1000.0, "W": 1.0, "kW": 1000.0}
_KILO = frozenset(unit for unit, scale in _SCALE.items() if scale != 1.0)


def instant(ts: str | None) -> datetime | None:
    """Station timestamps come in several ISO shapes: compare them as instants."""
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def earlier(a: str | None, b: str | None) -> bool:
    """Whether instant ``a`` is before ``b``; ISO strings of one shape compare as text."""
    if not a or not b:
        return False
    if len(a) == len(b) and a[-1] == b[-1] == "Z":
        return a < b
    x, y = instant(a), instant(b)
    return x is not None and y is not None and x < y


def readings(meter_values: list[dict[str, Any]]) -> list[tuple[str, dict[str, float]]]:
    """Per meter value, its time and the whole-EVSE (phase-less) readings in Wh, W, %."""
    out = []
    for mv in meter_values or ():
        values: dict[str, float] = {}
        for sv in mv.get("sampledValue", ()):
            if "phase" in sv:
                continue
            unit = sv.get("unitOfMeasure")
            value = float(sv["value"])
            if unit is not None:
                name, multiplier = unit.get("unit", ""), unit.get("multiplier", 0)
                if multiplier or name in _KILO:  # Wh and W, as most readings are: the value as it is
                    value *= _SCALE.get(name, 1.0) * 10**multiplier
            values[sv.get("measurand", IMPORT)] = value  # Import.Register: the schema's default
        out.append((mv.get("timestamp", ""), values))
    if len(out) > 1:
        out.sort(key=lambda item: instant(item[0]) or _EPOCH)
    return out


def direction_of(values: dict[str, float], energy: dict[str, Any]) -> str:
    exp, imp = values.get(EXPORT), values.get(IMPORT)
    if values.get(P_EXPORT, 0) > 0 or (
        exp is not None and energy.get("export_wh") is not None and exp > energy["export_wh"]
    ):
        return "discharging"
    if values.get(P_IMPORT, 0) > 0 or (
        imp is not None and energy.get("import_wh") is not None and imp > energy["import_wh"]
    ):
        return "charging"
    return "idle"


def meter(change: Change, evse_id: str, samples: list[tuple[str, dict[str, float]]], ts: str) -> None:
    """Fold meter readings into the EVSE's live energy, skipping any older than the last."""
    if samples:
        _meter(change.at("evses", evse_id, "energy"), samples, ts)


def _meter(energy: dict[str, Any], samples: list[tuple[str, dict[str, float]]], ts: str) -> None:
    for at, values in samples:
        when = at or ts
        if earlier(when, energy.get("meter_ts")):
            continue  # replayed late: history, not the present
        direction = direction_of(values, energy)
        if energy.get("direction") != direction:
            energy["since"] = when
        energy["direction"] = direction
        energy["meter_ts"] = when
        if IMPORT in values:
            energy["import_wh"] = values[IMPORT]
        if EXPORT in values:
            energy["export_wh"] = values[EXPORT]
        if P_IMPORT in values or P_EXPORT in values:
            energy["power_w"] = values.get(P_IMPORT, 0.0) - values.get(P_EXPORT, 0.0)
        if SOC in values:
            energy["soc"] = values[SOC]


def _evse_of(change: Change, payload: dict[str, Any], tx_id: str | None) -> str | None:
    evse = payload.get("evse")
    if evse and "id" in evse:
        return str(evse["id"])
    return transaction_of(change.twin, tx_id)[0]  # later events may leave evse out (2.0.1)


def transaction_of(twin: dict[str, Any], tx_id: Any) -> tuple[str | None, dict[str, Any]]:
    """The EVSE whose transaction is ``tx_id``, and that transaction ({} if none)."""
    for key, evse in twin["evses"].items():
        tx = evse.get("transaction")
        if tx and tx.get("id") == tx_id:
            return str(key), tx
    return None, {}


@on("TransactionEvent")
def transaction_event(change: Change, event: Event) -> None:
    p = event.payload
    info = p.get("transactionInfo", {})
    tx_id = info.get("transactionId")
    evse_id = event.evse_id = _evse_of(change, p, tx_id)
    if evse_id is None:
        change.twin["orphan_transaction_events"] = change.twin.get("orphan_transaction_events", 0) + 1
        return
    evse = change.at("evses", evse_id)
    current = evse.get("transaction") or {}
    kind, seq_no = p.get("eventType"), p.get("seqNo", 0)
    if current.get("id") != tx_id:
        current = {"id": tx_id, "state": "started", "started_at": p.get("timestamp"), "ended_at": None,
                   "import_wh": 0.0, "export_wh": 0.0, "reservation_id": None, "seq_no": None,
                   "seq_gaps": 0, "offline_events": 0}  # fmt: skip
    tx = evse["transaction"] = change.own(dict(current))  # the tariffs aspect writes it next
    last_seq = tx.get("seq_no")
    if last_seq is not None and seq_no > last_seq + 1:
        tx["seq_gaps"] += seq_no - last_seq - 1
    if last_seq is None or seq_no > last_seq:
        tx["seq_no"] = seq_no
    if p.get("offline"):
        tx["offline_events"] += 1
    if kind == "Started":
        tx["started_at"] = p.get("timestamp")
    if "chargingState" in info:
        tx["charging_state"] = info["chargingState"]
    if "operationMode" in info:
        tx["operation_mode"] = info["operationMode"]
    if "stoppedReason" in info:
        tx["stopped_reason"] = info["stoppedReason"]
    if "tariffId" in info:
        tx["tariff_id"] = info["tariffId"]
    if "reservationId" in p:
        tx["reservation_id"] = p["reservationId"]
    if p.get("idToken"):
        tx["id_token"] = p["idToken"].get("idToken")
    samples = readings(p.get("meterValue", ()))
    _transaction_energy(tx, samples)
    if samples:
        _meter(change.at_in(evse, "energy"), samples, event.ts)
    if kind == "Ended":
        tx["state"], tx["ended_at"] = "ended", p.get("timestamp")
        energy = change.at_in(evse, "energy")
        if energy.get("direction") != "idle":
            energy["since"] = p.get("timestamp", event.ts)
        energy["direction"], energy["power_w"] = "idle", 0.0
    elif kind == "Updated" or tx["state"] != "started":
        tx["state"] = "updated" if kind == "Updated" else tx["state"]


def _transaction_energy(tx: dict[str, Any], samples: list[tuple[str, dict[str, float]]]) -> None:
    """What the session moved: registers against the first reading of the transaction.
    Registers only rise, so the highest reading seen is the latest, whatever the order."""
    for _, values in samples:
        if IMPORT in values:
            _moved(tx, values[IMPORT], "meter_start_import_wh", "import_wh")
        if EXPORT in values:
            _moved(tx, values[EXPORT], "meter_start_export_wh", "export_wh")


def _moved(tx: dict[str, Any], value: float, start_key: str, moved: str) -> None:
    start = tx.setdefault(start_key, value)
    if value < start:  # an earlier reading replayed late
        tx[moved] += start - value
        tx[start_key] = value
    elif value - start > tx[moved]:
        tx[moved] = value - start


@on("MeterValues")
def meter_values(change: Change, event: Event) -> None:
    evse_id = str(event.payload.get("evseId", 0))
    if evse_id != "0":  # 0 is the grid meter of the whole station
        meter(change, evse_id, readings(event.payload.get("meterValue", ())), event.ts)
