"""Fold throughput in one process: decode (orjson) a capture of >= 1,000,000 envelopes, then
decode and fold them, in the same run; the ratio is what the fold costs. Passes alternate
and medians are reported (the machine is shared and noisy).

The capture is generated here: stations booting, reporting status, heartbeating and running
metered transactions (V2G on every fourth), about the traffic mix of DOMAIN.md.

    .venv/bin/python benches/fold.py [--records 1000000] [--stations 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import orjson

from twin import envelope, fold, ocpp_j
from twin.runtime import tune_gc


def generate(records: int, stations: int) -> list[bytes]:
    """Envelopes as JSON lines, interleaved across stations as a gateway would log them."""
    lines: list[bytes] = []
    seq = dict.fromkeys(range(stations), 0)
    step = 0
    t0 = 1772352000.0

    def emit(i: int, frame: ocpp_j.Frame, origin: str, ts: float) -> None:
        seq[i] += 1
        e = envelope.of_frame(frame, station_id=f"CS-{i:05d}", origin=origin, protocol="ocpp2.1",
                              conn_id=f"c{i}", seq=seq[i], ts=envelope.iso_ms(ts))  # fmt: skip
        lines.append(envelope.dumps(e))

    def call(i: int, action: str, payload: dict[str, Any], answer: dict[str, Any], ts: float) -> None:
        msg_id = f"{i}-{seq[i]}"
        emit(i, ocpp_j.call(msg_id, action, payload), "cs", ts)
        emit(i, ocpp_j.result(msg_id, action, answer), "csms", ts + 0.01)

    while len(lines) < records:
        ts = t0 + step * 60
        stamp = envelope.iso_ms(ts)
        for i in range(stations):
            phase = (step + i) % 40
            if step == 0:
                boot = {"reason": "PowerUp", "chargingStation": {"vendorName": "Acme", "model": "DC-150"}}
                call(i, "BootNotification", boot, {"currentTime": stamp, "interval": 1800, "status": "Accepted"}, ts)
                call(
                    i,
                    "StatusNotification",
                    {"timestamp": stamp, "connectorStatus": "Available", "evseId": 1, "connectorId": 1},
                    {},
                    ts,
                )
            elif phase < 30:
                kind = "Started" if phase == 0 else "Ended" if phase == 29 else "Updated"
                v2g = i % 4 == 0 and phase > 15
                sampled = [
                    {"value": 1000.0 * (step + phase), "measurand": "Energy.Active.Import.Register"},
                    {"value": 500.0 * phase if v2g else 0.0, "measurand": "Energy.Active.Export.Register"},
                    {"value": 0.0 if v2g else 11000.0, "measurand": "Power.Active.Import"},
                    {"value": 7000.0 if v2g else 0.0, "measurand": "Power.Active.Export"},
                ]
                payload = {
                    "eventType": kind, "timestamp": stamp, "triggerReason": "MeterValuePeriodic", "seqNo": phase,
                    "transactionInfo": {"transactionId": f"T{i}-{step - phase}", "chargingState": "Charging"},
                    "evse": {"id": 1, "connectorId": 1},
                    "meterValue": [{"timestamp": stamp, "sampledValue": sampled}],
                }  # fmt: skip
                call(i, "TransactionEvent", payload, {}, ts)
            else:
                call(i, "Heartbeat", {}, {"currentTime": stamp}, ts)
            if len(lines) >= records:
                break
        step += 1
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="passes of each; medians are reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    lines = generate(args.records, args.stations)
    tune_gc()  # as the worker runs

    decodes, folds = [], []
    for _ in range(args.repeat):  # alternate the two, so drift in the machine hits both
        start = time.perf_counter()
        for line in lines:
            orjson.loads(line)
        decodes.append(time.perf_counter() - start)

        start = time.perf_counter()
        twins: dict[str, fold.Twin] = {}
        for line in lines:
            record = orjson.loads(line)
            station = record["station_id"]
            twins[station] = fold.apply(twins.get(station), record)
        folds.append(time.perf_counter() - start)
    decode_s, fold_s = statistics.median(decodes), statistics.median(folds)

    n = len(lines)
    result = {
        "records": n,
        "stations": len(twins),
        "decode_per_s": round(n / decode_s),
        "decode_and_fold_per_s": round(n / fold_s),
        "decode_and_fold_per_s_each_pass": [round(n / f) for f in folds],
        "fold_alone_per_s": round(n / (fold_s - decode_s)),
        "fold_cost_ratio": round(fold_s / decode_s, 1),
        "fold_us_per_record": round((fold_s - decode_s) / n * 1e6, 2),
        "fold_errors": sum(t["fold_errors"] for t in twins.values()),
    }
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:24} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
