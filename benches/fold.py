"""Fold throughput. Two ways:

In one process (default): decode (orjson) >= 1,000,000 generated envelopes, then decode and
fold them, in the same run; the ratio is what the fold costs. Passes alternate and medians
are reported (the machine is shared and noisy). The records: stations booting, reporting
status, heartbeating and running metered transactions (V2G on every fourth), about the
traffic mix of DOMAIN.md.

    .venv/bin/python benches/fold.py [--records 1000000] [--stations 1000] [--json]

On a capture, as users run it (``--capture``): the floor (a process reading the file and
``orjson.loads`` of each line), the rebuild called in a process (``fold.fold`` of
``captures.read`` in one process, timed inside) and ``twin rebuild CAPTURE`` as a process (its
start-up and its output included; by default a process per core, :mod:`twin.rebuild`, and
again with ``--processes 1``), each in a fresh process, rounds
alternating; wall and CPU seconds, medians, and each as a multiple of the floor's wall time.
``--simulate`` writes the capture first if it is missing (``twin simulate``, 300 stations, 7
days: 1.7 M records, 670 MB). ``--baseline SRC``: the same, in the same rounds, with another
checkout's ``src`` first on the path (before and after in one run).

    .venv/bin/python benches/fold.py --capture /tmp/week.jsonl --simulate [--rounds 3]
        [--baseline /tmp/before/src] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
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


FLOOR = """
import sys, time, orjson
start, cpu = time.perf_counter(), time.process_time()
n = 0
with open(sys.argv[1], "rb") as f:
    for line in f:
        orjson.loads(line)
        n += 1
print(n, time.perf_counter() - start, time.process_time() - cpu)
"""

CALL = """
import sys, time
from twin import captures, fold
start, cpu = time.perf_counter(), time.process_time()
twins = fold.fold(captures.read(sys.argv[1]))
print(len(twins), time.perf_counter() - start, time.process_time() - cpu)
"""


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(argv: list[str], src: str | None) -> tuple[float, float, str]:
    """Wall and CPU seconds of a process, and what it printed."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    cpu, start = _child_cpu(), time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, _child_cpu() - cpu, done.stdout


def on_capture(args: argparse.Namespace) -> dict[str, object]:
    """Floor, the call and the command on one capture, for this checkout and a baseline."""
    capture = Path(args.capture)
    if not capture.exists():
        if not args.simulate:
            sys.exit(f"no capture at {capture} (--simulate writes one)")
        subprocess.run([sys.executable, "-m", "twin", "simulate", "--stations", str(args.sim_stations),
                        "--days", str(args.days), "--out", str(capture)], check=True)  # fmt: skip
    python, twin = sys.executable, str(Path(sys.executable).with_name("twin"))
    trees = {"now": None} | ({"baseline": args.baseline} if args.baseline else {})
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {
        t: {"floor": [], "call": [], "cli": []} | ({"cli_one_process": []} if t == "now" else {}) for t in trees
    }
    records = 0
    for _ in range(args.rounds):  # alternate everything, so drift in the machine hits all alike
        for tree, src in trees.items():
            wall, cpu, out = _timed([python, "-c", FLOOR, str(capture)], src)
            records = int(out.split()[0])
            runs[tree]["floor"].append((float(out.split()[1]), float(out.split()[2])))
            wall, cpu, out = _timed([python, "-c", CALL, str(capture)], src)
            runs[tree]["call"].append((float(out.split()[1]), float(out.split()[2])))
            wall, cpu, out = _timed([twin, "rebuild", str(capture)], src)
            runs[tree]["cli"].append((wall, cpu))
            if "cli_one_process" in runs[tree]:  # the same in one process, as before twin.rebuild
                wall, cpu, out = _timed([twin, "rebuild", "--processes", "1", str(capture)], src)
                runs[tree]["cli_one_process"].append((wall, cpu))
    result: dict[str, object] = {"capture": str(capture), "records": records, "rounds": args.rounds}
    floors = [f for figures in runs.values() for f in figures["floor"]]  # no twin code: one floor for all trees
    floor, floor_cpu = statistics.median(w for w, _ in floors), statistics.median(c for _, c in floors)
    for tree, figures in runs.items():
        row: dict[str, object] = {}
        for what, values in figures.items():
            wall, cpu = statistics.median(w for w, _ in values), statistics.median(c for _, c in values)
            row[what] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "records_per_s": round(records / wall),
                         "x_floor": round(wall / floor, 2), "x_floor_cpu": round(cpu / floor_cpu, 2),
                         "wall_s_each": [round(w, 2) for w, _ in values]}  # fmt: skip
        result[tree] = row
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="passes of each; medians are reported")
    parser.add_argument("--capture", help="measure on this .jsonl capture instead, in processes (see above)")
    parser.add_argument("--simulate", action="store_true", help="with --capture: write it first if missing")
    parser.add_argument("--sim-stations", type=int, default=300)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--rounds", type=int, default=3, help="with --capture: rounds; medians are reported")
    parser.add_argument("--baseline", help="with --capture: another checkout's src, measured in the same rounds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.capture:
        print(json.dumps(on_capture(args), indent=2))
        return
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
