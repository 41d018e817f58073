"""`twin report tariffs` on a capture with known totals, worked by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.scenarios import Script

TOD = {"tariffId": "TOD", "currency": "EUR",
       "energy": {"prices": [{"priceKwh": 0.40, "conditions": {"startTimeOfDay": "07:00", "endTimeOfDay": "22:00"}},
                             {"priceKwh": 0.25}]}}  # fmt: skip


def te(s: Script, kind: str, seq: int, tx: str, imp: float, cost: float | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"eventType": kind, "timestamp": s.now, "seqNo": seq, "triggerReason": "MeterValuePeriodic",
                         "transactionInfo": {"transactionId": tx}, "evse": {"id": 1, "connectorId": 1},
                         "meterValue": [{"timestamp": s.now, "sampledValue": [
                             {"value": imp, "measurand": "Energy.Active.Import.Register"}]}]}  # fmt: skip
    if cost is not None:
        p["costDetails"] = {"totalCost": {"currency": "EUR", "typeOfCost": "NormalCost", "total": {"exclTax": cost}},
                            "totalUsage": {"energy": 0, "chargingTime": 0, "idleTime": 0}}  # fmt: skip
    return p


def capture(path: Path) -> Path:
    s = Script("RP-1").connect().boot().status(1, "Available")
    s.csms("SetDefaultTariff", {"evseId": 0, "tariff": TOD}, {"status": "Accepted"})  # Sunday 08:00
    s.at(13 * 60).cs("TransactionEvent", te(s, "Started", 0, "A", 1000))  # 21:00
    s.at(14 * 60).cs("TransactionEvent", te(s, "Updated", 1, "A", 12_000))  # 22:00: 11 kWh at 0.40
    s.at(15 * 60).cs("TransactionEvent", te(s, "Ended", 2, "A", 23_000, cost=7.15))  # 23:00: 11 kWh at 0.25
    s.at(15 * 60 + 10).cs("TransactionEvent", te(s, "Started", 0, "B", 23_000))
    s.at(15 * 60 + 70).cs("TransactionEvent", te(s, "Ended", 1, "B", 33_000))  # 00:10: 10 kWh at 0.25
    s.csms("CostUpdated", {"transactionId": "B", "totalCost": 3.00}, {})  # the CSMS billed 3.00: 0.50 too much
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in s.records))
    return path


def test_the_tariffs_report_recomputes_each_session_and_sums_revenue(tmp_path: Path) -> None:
    path = capture(tmp_path / "c.jsonl")
    done = subprocess.run([sys.executable, "-m", "twin", "report", "tariffs", "--archive", str(path), "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    a, b = doc["sessions"]
    assert (a["transaction_id"], a["energy_kwh"], a["duration_min"], a["tariff_id"]) == ("A", 22.0, 120.0, "TOD")
    assert a["recomputed_excl_tax"] == pytest.approx(7.15) and a["difference"] == pytest.approx(0.0)
    assert a["reported_source"] == "local"
    assert b["recomputed_excl_tax"] == pytest.approx(2.50) and b["reported"] == 3.00
    assert b["difference"] == pytest.approx(0.50) and b["reported_source"] == "central"
    assert doc["revenue"] == [  # by the day a session ends: B ends past midnight
        {"site_id": "RP-1", "date": "2026-03-01", "sessions": 1, "currency": "EUR", "revenue_excl_tax": 7.15,
         "reported": 7.15},
        {"site_id": "RP-1", "date": "2026-03-02", "sessions": 1, "currency": "EUR", "revenue_excl_tax": 2.5,
         "reported": 3.0}]  # fmt: skip
    day = doc["prices"][0]
    assert (day["station_id"], day["evse_id"], day["date"], day["changes"]) == ("RP-1", "0", "2026-03-01", 1)
    assert [(p["at"], p["energy_per_kwh"]) for p in day["prices"]] == [
        ("2026-03-01T08:00:00.030Z", 0.40), ("2026-03-01T22:00:00.000Z", 0.25)]  # fmt: skip (its Accepted)
